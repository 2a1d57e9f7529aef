"""Differential fuzzing: every backend against the oracle on random specs and random inputs.

Hypothesis draws the spec and the input (``pooladapt.testing.strategies.inputs``: a seeded base with
a few cells set to NaN, +-inf, +-0.0, subnormals, large values or integer extremes), so a
failure shrinks to a small spec and the special cells that matter. The default test run draws
a quarter of the ``ci`` profile's examples (30 per test); ``nox -s fuzz`` runs the ``fuzz``
profile (10,000 examples per test and backend). A failure prints the shrunk example as a
ready-to-paste regression test: paste it at the end of this module, where the helpers it
calls live.

Max, indices, integers and unpooling must be bit-exact. avg and lp may differ from the exact
answer by their rounding error when accumulated in float32 (float64 for float64 input):
a bound of a few ulps of the output plus ``4 * taps * eps * mean(|x|)`` (avg) or
``4 * (taps + 2) * eps * |y|`` (lp, plus the float32 underflow of ``|x|**p``). A float16
accumulation, a wrong divisor or a padded cell counted breaks the bound by orders of magnitude.
"""

from __future__ import annotations

import math
import os
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st

import pooladapt as pa
from pooladapt import dispatch
from pooladapt.conformance import (
    INT_DTYPES,
    Case,
    actual,
    available_dtypes,
    cotangent,
    expected,
    expected_vjp,
    features_of,
    gradient_tolerance,
    np_dtype,
    taps,
)
from pooladapt.testing.strategies import (
    adaptive_cases,
    cases_with_inputs,
    global_cases,
    pool_cases,
    seeds,
    unpool_cases,
)

nan, inf = math.nan, math.inf  # pasted regression tests write NaN and infinity this way

_FORMAT = {"float16": (10, -14), "bfloat16": (7, -126), "float32": (23, -126),
           "float64": (52, -1022)}  # explicit mantissa bits, minimum normal exponent
_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38,
        "float32": float(np.finfo(np.float32).max), "float64": float(np.finfo(np.float64).max)}
_ENTRY = {"pool": "pool{}d", "global": "global_pool{}d", "adaptive": "adaptive_pool{}d",
          "unpool": "max_unpool{}d"}


def arr(values: list, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A regression test's input: flat values, exact as float64 (floats) or Python ints."""
    if dtype in INT_DTYPES:
        return np.array(values, dtype=dtype).reshape(shape)
    return np.array(values, dtype=np.float64).astype(np_dtype(dtype)).reshape(shape)


# ------------------------------------------------------------------ running one example


def _ulp(w: np.ndarray, dtype: str) -> np.ndarray:
    mantissa, min_exp = _FORMAT[dtype]
    _, e = np.frexp(np.abs(np.where(np.isfinite(w), w, 0.0)))
    return np.ldexp(1.0, np.maximum(e - 1, min_exp) - mantissa)


def _tolerance(case: Case, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Allowed |got - exact| per output of avg/lp (see the module docstring)."""
    eps = 2.0**-53 if case.dtype == "float64" else 2.0**-24
    n = taps(case, x.shape)
    tol = 2 * _ulp(w, case.dtype)
    if case.kwargs["mode"] == "avg":
        with np.errstate(invalid="ignore"):
            scale = np.asarray(expected(case, np.abs(x.astype(np.float64))), dtype=np.float64)
        return tol + 4 * n * eps * np.nan_to_num(scale, nan=0.0, posinf=0.0)
    p = case.kwargs.get("p", 2.0)
    tol = tol + 4 * (n + 2) * eps * max(1.0, 1.0 / p) * np.abs(w)
    if p >= 1:  # |x|**p below the smallest normal may be flushed: (n * tiny) ** (1/p) lost
        tol = tol + (n * 2.0 ** (-1022 if case.dtype == "float64" else -126)) ** (1.0 / p)
    return tol


def _where(mask: np.ndarray, w: np.ndarray, g: np.ndarray) -> str:
    at = np.argwhere(mask)[:4]
    return "; ".join(f"at {tuple(int(i) for i in a)}: got {g[tuple(a)]!r}, expected "
                     f"{w[tuple(a)]!r}" for a in at)


def _check_values(case: Case, x: np.ndarray, want, got) -> None:
    want = np.asarray(want)
    assert isinstance(got, np.ndarray), f"got {type(got).__name__}, expected a NumPy array"
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    assert str(got.dtype) == case.dtype, f"dtype {got.dtype}, expected {case.dtype}"
    if case.dtype in INT_DTYPES:
        bad = got != want.astype(got.dtype)
        assert not bad.any(), f"{int(bad.sum())} values differ: {_where(bad, want, got)}"
        return
    w, g = want.astype(np.float64), got.astype(np.float64)
    nan_w, nan_g = np.isnan(w), np.isnan(g)
    assert (nan_w == nan_g).all(), f"NaN mismatch: {_where(nan_w != nan_g, w, g)}"
    fin = ~nan_w
    if case.kind == "unpool" or case.kwargs["mode"] == "max":
        bad = fin & (w != g)  # max selects an input value: bit-exact (-0.0 == 0.0)
        assert not bad.any(), f"{int(bad.sum())} values not exact: {_where(bad, w, g)}"
        return
    inf_w = np.isinf(w)
    bad = fin & inf_w & (g != w)
    assert not bad.any(), f"infinity mismatch: {_where(bad, w, g)}"
    tol = _tolerance(case, x, w)
    finite = fin & ~inf_w
    overflow = finite & np.isinf(g)  # only where the exact answer rounds to infinity
    bad = overflow & ((np.sign(g) != np.sign(w)) | (np.abs(w) + tol < _MAX[case.dtype]))
    assert not bad.any(), f"overflow to infinity: {_where(bad, w, g)}"
    with np.errstate(invalid="ignore"):
        bad = finite & ~overflow & ~(np.abs(g - w) <= tol)
    assert not bad.any(), (f"{int(bad.sum())} values beyond the rounding bound: "
                           f"{_where(bad, w, g)}")


def check_forward(case: Case, x: np.ndarray, backend: str, native: bool = True) -> None:
    """Assert that the backend computes the oracle's answer for ``case`` on ``x``."""
    want = expected(case, x)
    got = actual(case, x, backend, native)
    if not isinstance(want, tuple):
        return _check_values(case, x, want, got)
    assert isinstance(got, tuple) and len(got) == 2, "expected (values, indices)"
    _check_values(case, x, want[0], got[0])
    idx = got[1]
    assert isinstance(idx, np.ndarray) and idx.dtype == np.int64, (
        f"indices: {type(idx).__name__} of dtype {getattr(idx, 'dtype', None)}, expected int64")
    assert idx.shape == want[1].shape, f"indices shape {idx.shape}, expected {want[1].shape}"
    bad = idx != want[1]
    assert not bad.any(), f"indices differ: {_where(bad, want[1], idx)}"


def check_unpool_roundtrip(case: Case, x: np.ndarray, backend: str) -> None:
    """The backend's own max pool with indices, then its unpool with the remembered plane,
    equals the oracle's pool + unpool."""
    be = dispatch.load(backend).BACKEND
    kw = case.kwargs
    fmt = kw.pop("data_format")
    try:
        xt, choose = be.from_numpy(x), {}
    except TypeError:  # no tensor of x's dtype (MXNet: int16): NumPy input with backend=
        xt, choose = x, {"backend": backend}
    y, idx = getattr(pa, f"pool{case.ndim}d")(xt, "max", **kw, data_format=fmt,
                                              return_indices=True, **choose)
    got = getattr(pa, f"max_unpool{case.ndim}d")(y, idx, data_format=fmt, **choose)
    got = got if isinstance(got, np.ndarray) else be.to_numpy(got)
    _check_values(case, x, expected(case, x), got)


def check_gradient(case: Case, x: np.ndarray, backend: str, seed: int = 0) -> None:
    """Assert that the backend's autograd equals the oracle's vector-Jacobian product, in the
    case's dtype, within :func:`pooladapt.conformance.gradient_tolerance`."""
    be = dispatch.load(backend).BACKEND
    kw = {k: v for k, v in case.args if k != "return_indices"}
    fn = getattr(pa, _ENTRY[case.kind].format(case.ndim))
    out_shape = np.shape(expected(Case(case.kind, case.ndim, tuple(kw.items()), case.spatial,
                                       case.dtype, batch=case.batch), x))
    g = cotangent(case, out_shape, seed)
    dx = be.to_numpy(be.vjp(lambda t: fn(t, **kw), be.from_numpy(x), be.from_numpy(g)))
    want = expected_vjp(case, x, g)
    assert dx.shape == want.shape, f"gradient shape {dx.shape}, expected {want.shape}"
    assert str(dx.dtype) == case.dtype, f"gradient dtype {dx.dtype}, expected {case.dtype}"
    tol = gradient_tolerance(case, x, g)
    bad = ~(np.abs(dx.astype(np.float64) - want) <= tol)
    assert not bad.any(), f"gradient: {int(bad.sum())} values off: {_where(bad, want, dx)}"


# ------------------------------------------------------------------ reporting


def _literal(x: np.ndarray) -> str:
    flat = x.ravel().tolist() if x.dtype.kind in "iu" else x.astype(np.float64).ravel().tolist()
    return "[" + ", ".join(repr(v) for v in flat) + "]"


def regression(case: Case, x: np.ndarray, backend: str, check: str = "check_forward",
               extra: str = "") -> str:
    """A ready-to-paste regression test for one failing example (plus the plain call)."""
    digest = zlib.crc32(repr((case, x.dtype.str, x.tobytes())).encode())
    args = ", ".join(f"{k}={v!r}" for k, v in case.args)
    call = f"pa.{_ENTRY[case.kind].format(case.ndim)}(x, {args}, backend={backend!r})"
    if case.kind == "unpool":
        call = f"unpool the oracle's max pool (return_indices=True, {args}) of x on {backend!r}"
    return (f"\n# failing example, paste into tests/conformance/test_fuzz.py:\n"
            f"# {call}  with x of shape {x.shape}, {case.dtype}\n"
            f"def test_regression_{case.kind}_{digest:08x}(backend, known_deviation):\n"
            f"    case = {case!r}\n"
            f"    x = arr({_literal(x)}, {case.dtype!r}, {x.shape!r})\n"
            f"    known_deviation(tagged(case, x), backend)\n"
            f"    {check}(case, x, backend{extra})\n")


def tagged(case: Case, x: np.ndarray) -> SimpleNamespace:
    """The example as the ``known_deviation`` fixture takes it (an object with features)."""
    return SimpleNamespace(features=tuple(sorted(features_of(case, x))))


def _run(check, case: Case, x: np.ndarray, backend: str, *args, extra: str = "") -> None:
    deviations = dispatch.load(backend).BACKEND.known_deviations
    assume(not features_of(case, x) & set(deviations))  # listed: a strict xfail in the grid
    try:
        check(case, x, backend, *args)
    except Exception:
        note(regression(case, x, backend, check.__name__, extra))
        raise


# ------------------------------------------------------------------ the fuzz tests

# Outside ``nox -s fuzz`` these tests take a quarter of the profile's examples: JAX compiles
# every new shape, so the bounded run would otherwise add minutes to a backend's test session.
FULL = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
FLOATS = tuple(d for d in available_dtypes() if "float" in d)  # gradients in every float dtype
bounded = settings(max_examples=settings().max_examples if FULL
                   else max(10, settings().max_examples // 4))



@bounded
@given(example=cases_with_inputs(pool_cases()), native=st.booleans())
def test_pool_matches_oracle(backend, example, native):
    case, x = example
    _run(check_forward, case, x, backend, native, extra=f", native={native}")


@bounded
@given(example=cases_with_inputs(global_cases()), native=st.booleans())
def test_global_matches_oracle(backend, example, native):
    case, x = example
    _run(check_forward, case, x, backend, native, extra=f", native={native}")


@bounded
@given(example=cases_with_inputs(adaptive_cases()), native=st.booleans())
def test_adaptive_matches_oracle(backend, example, native):
    case, x = example
    _run(check_forward, case, x, backend, native, extra=f", native={native}")


@bounded
@given(example=cases_with_inputs(unpool_cases()), native=st.booleans(), own=st.booleans())
def test_unpool_matches_oracle(backend, example, native, own):
    case, x = example
    if own:  # the backend's own indices and its remembered plane
        _run(check_unpool_roundtrip, case, x, backend)
    else:
        _run(check_forward, case, x, backend, native, extra=f", native={native}")


@pytest.mark.autograd
@bounded
@given(example=cases_with_inputs(pool_cases(dtypes=FLOATS, gradient=True)),
       seed=seeds())
def test_pool_gradient_matches_oracle(backend, example, seed):
    case, x = example
    _run(check_gradient, case, x, backend, seed, extra=f", seed={seed}")


@pytest.mark.autograd
@bounded
@given(example=cases_with_inputs(global_cases(dtypes=FLOATS, gradient=True)
                                 | adaptive_cases(dtypes=FLOATS, gradient=True)),
       seed=seeds())
def test_family_gradient_matches_oracle(backend, example, seed):
    case, x = example
    _run(check_gradient, case, x, backend, seed, extra=f", seed={seed}")


# ------------------------------------------------------------------ regressions found by fuzzing


# pa.adaptive_pool3d(x, mode='avg', output_size=(3, None, None), ...): bins [0, 1) [0, 2) [1, 2)
# of two infinities; the NumPy backend's masked sum made inf * 0 = NaN
def test_regression_adaptive_92401e2c(backend, known_deviation):
    case = Case(kind='adaptive', ndim=3, args=(('mode', 'avg'), ('output_size', (3, None, None)),
                ('data_format', 'channels_first')), spatial=(2, 1, 1), dtype='float16',
                values='normal', batch=(1, 1), gradient=False, features=('hypothesis',))
    x = arr([inf, inf], 'float16', (1, 1, 2, 1, 1))
    known_deviation(tagged(case, x), backend)
    check_forward(case, x, backend, native=False)


# found by nox -s fuzz on jax: the gradient of an avg window of padding only (divisor 0) was
# inf (1/0 on the backward pass); x does not reach that window, so it is 0
@pytest.mark.autograd
def test_regression_pool_40228a57(backend, known_deviation):
    case = Case(kind='pool', ndim=1, args=(('mode', 'avg'), ('window', (2,)), ('stride', None),
                ('padding', 'same'), ('dilation', (2,)), ('ceil_mode', False),
                ('data_format', 'channels_first'), ('count_include_pad', False)), spatial=(1,),
                dtype='float64', values='normal', batch=(1, 1), gradient=True,
                features=('hypothesis',))
    x = arr([2.875], 'float64', (1, 1, 1))
    known_deviation(tagged(case, x), backend)
    check_gradient(case, x, backend, seed=0)


# found by nox -s fuzz on jax: the same window of padding only, summed by lp (p=1): XLA's
# compiled gradient of the padded window sum sent the cotangent to the cell
@pytest.mark.autograd
def test_regression_pool_d0bed1e0(backend, known_deviation):
    case = Case(kind='pool', ndim=1, args=(('mode', 'lp'), ('window', (2,)), ('stride', None),
                ('padding', 'same'), ('dilation', (2,)), ('ceil_mode', False),
                ('data_format', 'channels_first'), ('p', 1.0)), spatial=(1,), dtype='float64',
                values='normal', batch=(1, 1), gradient=True, features=('hypothesis',))
    x = arr([2.875], 'float64', (1, 1, 1))
    known_deviation(tagged(case, x), backend)
    check_gradient(case, x, backend, seed=0)


# found by nox -s fuzz on jax: an explicit zero pad before the window sum (a first fix of the
# above) was folded by XLA into the same bug, now in the value: lp gave the cell, not 0
def test_regression_pool_f582b0dc(backend, known_deviation):
    case = Case(kind='pool', ndim=1, args=(('mode', 'lp'), ('window', (2,)), ('stride', (1,)),
                ('padding', 'same'), ('dilation', (2,)), ('ceil_mode', False),
                ('data_format', 'channels_first'), ('p', 1.0)), spatial=(1,), dtype='float16',
                values='normal', batch=(1, 1), gradient=False, features=('hypothesis',))
    x = arr([2.875], 'float16', (1, 1, 1))
    known_deviation(tagged(case, x), backend)
    check_forward(case, x, backend, native=False)
