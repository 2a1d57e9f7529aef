"""The conformance runner: one case on one backend (or a user's function) against the oracle.

The runner feeds the input to a backend *as that backend's own tensor* (the native path) or as
NumPy with ``backend=``, converts the answer back to NumPy and compares it with the oracle:
max, indices and integer results must be bit-exact, the rest within the tolerance of the
dtype. Gradient cases compare the backend's autograd, in the case's dtype, with the oracle's
vector-Jacobian product within :func:`gradient_tolerance`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pooladapt as pa
from pooladapt import dispatch, oracle
from pooladapt.conformance.cases import (
    EPS,
    INT_DTYPES,
    TINY,
    TOLERANCE,
    Case,
    np_dtype,
)
from pooladapt.spec import make_adaptive_spec, make_global_spec, make_spec, make_unpool_spec


@dataclass
class Result:
    case: Case
    backend: str
    passed: bool
    error: float = 0.0
    message: str = ""


def entry(case: Case) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """The public function a pool, global or adaptive ``case`` calls, with its positional and
    keyword arguments: ``fn(x, *positional, **keywords)``."""
    kw = case.kwargs
    if case.kind == "pool":
        mode = kw.pop("mode")
        return getattr(pa, f"pool{case.ndim}d"), (mode,), kw
    if case.kind == "global":
        mode = kw.pop("mode")
        return getattr(pa, f"global_pool{case.ndim}d"), (mode,), kw
    if case.kind == "adaptive":
        mode, size = kw.pop("mode"), kw.pop("output_size")
        return getattr(pa, f"adaptive_pool{case.ndim}d"), (mode, size), kw
    raise ValueError(case.kind)


def expected(case: Case, x: np.ndarray):
    """The oracle's answer for ``case`` on input ``x``."""
    kw = case.kwargs
    if case.kind == "pool":
        return oracle.pool(x, make_spec(**kw, ndim=case.ndim))
    if case.kind == "global":
        return oracle.global_pool(x, make_global_spec(**kw, ndim=case.ndim))
    if case.kind == "adaptive":
        return oracle.adaptive_pool(x, make_adaptive_spec(**kw, ndim=case.ndim))
    spec = make_spec("max", **kw, return_indices=True, ndim=case.ndim)
    y, idx = oracle.pool(x, spec)
    plane = spec.plan(x.shape).in_size
    return oracle.max_unpool(y.astype(x.dtype), idx,
                             make_unpool_spec(plane, ndim=case.ndim,
                                              data_format=kw["data_format"]), plane)


def actual(case: Case, x: np.ndarray, backend: str, native: bool = True):
    """The backend's answer for ``case`` as NumPy, computed on the backend's own tensor type
    (``native``) or on the NumPy array with ``backend=``. A dtype the framework has no tensor
    of (``from_numpy`` raises TypeError: MXNet has no int16) goes the only way a user has,
    NumPy input with ``backend=``."""
    be = dispatch.load(backend).BACKEND
    if native:
        try:
            probe = be.from_numpy(np.zeros(0, x.dtype))
        except TypeError:
            native = False
        else:  # NumPy-array backends (numpy, onnxruntime) are reached only with backend=
            native = dispatch.owner_of(probe) is not None
    put = be.from_numpy if native else (lambda a: a)
    choose = {} if native else {"backend": backend}
    if case.kind == "unpool":
        kw = case.kwargs
        fmt = kw.pop("data_format")
        spec = make_spec("max", **kw, return_indices=True, data_format=fmt, ndim=case.ndim)
        y, idx = oracle.pool(x, spec)
        plane = spec.plan(x.shape).in_size
        fn = getattr(pa, f"max_unpool{case.ndim}d")
        out = fn(put(y.astype(x.dtype)), put(idx), plane, data_format=fmt, **choose)
    else:
        fn, pos, kw = entry(case)
        out = fn(put(x), *pos, **kw, **choose)
    if not native:
        return out
    if isinstance(out, tuple):
        return tuple(be.to_numpy(o) for o in out)
    return be.to_numpy(out)


def _exact(case: Case) -> bool:
    mode = case.kwargs.get("mode", "max")
    return case.kind == "unpool" or mode == "max" or case.dtype in INT_DTYPES


def compare(case: Case, want: np.ndarray, got: np.ndarray, what: str = "values",
            tolerance: np.ndarray | None = None):
    """(passed, worst error, message) for one output array. ``tolerance``: the allowed
    ``|got - want|`` per element (gradients: :func:`gradient_tolerance`)."""
    want = np.asarray(want)
    got = np.asarray(got)
    if got.shape != want.shape:
        return False, np.inf, f"{what}: shape {got.shape}, expected {want.shape}"
    if what == "indices":
        bad = got != want
        return (not bad.any(), float(bad.sum()),
                f"indices differ at {int(bad.sum())} positions" if bad.any() else "")
    if case.dtype in INT_DTYPES:
        if str(got.dtype) != case.dtype:
            return False, np.inf, f"{what}: dtype {got.dtype}, expected {case.dtype}"
        bad = got != want.astype(got.dtype)
        message = f"{int(bad.sum())} values differ" if bad.any() else ""
        return not bad.any(), float(bad.sum()), message
    if str(got.dtype) != case.dtype:
        return False, np.inf, f"{what}: dtype {got.dtype}, expected {case.dtype}"
    w = want.astype(np.float64)
    if not case.gradient:
        w = w.astype(np_dtype(case.dtype)).astype(np.float64)  # the exact answer, rounded
    g = got.astype(np.float64)
    nan_w, nan_g = np.isnan(w), np.isnan(g)
    if (nan_w != nan_g).any():
        return False, np.inf, f"{what}: NaN at {int((nan_w != nan_g).sum())} wrong positions"
    fin = ~nan_w
    if _exact(case) and not case.gradient:
        bad = w[fin] != g[fin]  # -0.0 == 0.0: the sign of a zero maximum is not specified
        if not bad.any():
            return True, 0.0, ""
        err = float(np.max(np.abs(np.nan_to_num(w[fin][bad] - g[fin][bad]))))  # no inf - inf
        return False, err, f"{what}: {int(bad.sum())} values not bit-exact"
    inf_mismatch = np.isinf(w[fin]) != np.isinf(g[fin])
    with np.errstate(invalid="ignore"):
        diff = np.abs(w[fin] - g[fin])
        diff = np.where(np.isinf(w[fin]) & (w[fin] == g[fin]), 0.0, diff)
    if tolerance is not None:
        limit = np.broadcast_to(tolerance, w.shape)[fin]
    else:
        rtol, atol = TOLERANCE[case.dtype]
        limit = atol + rtol * np.abs(np.where(np.isinf(w[fin]), 0.0, w[fin]))
    bad = (diff > limit) | inf_mismatch
    err = float(np.max(np.nan_to_num(diff, posinf=np.inf), initial=0.0))
    return not bad.any(), err, (f"{what}: {int(bad.sum())} values off, worst {err:.3g}"
                                if bad.any() else "")


def taps(case: Case, shape: tuple[int, ...]) -> int:
    """Input cells one output reads at most (the window, the plane, the largest bin)."""
    kw = case.kwargs
    if case.kind in ("pool", "unpool"):
        return math.prod(make_spec(**{"mode": "max", **kw}, ndim=case.ndim).window)
    if case.kind == "global":
        return math.prod(case.spatial)
    return math.prod(make_adaptive_spec(**kw, ndim=case.ndim).plan(shape).max_bin)


def cotangent(case: Case, shape: tuple[int, ...], seed: int = 7) -> np.ndarray:
    """A cotangent of the case's dtype: multiples of 1/4 in [-2, 2], exact in every float
    dtype, so the oracle and the backend start from the same numbers."""
    g = np.random.default_rng(seed).integers(-8, 9, size=shape) / 4.0
    return g.astype(np_dtype(case.dtype))


def gradient_tolerance(case: Case, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The allowed ``|got - exact|`` of each input cell's gradient in the case's dtype.

    A cell's gradient is a sum of up to ``taps`` cotangents times local slopes, each product
    and each partial sum rounded in the input dtype: the bound scales with the sum of their
    magnitudes (the vector-Jacobian product of ``|g|``, on ``|x|`` for lp, whose slope has
    the sign of x), not with the result, which may cancel to 0. A gradient sent to a wrong
    cell, a wrong divisor or a cotangent lost breaks it: there the magnitude is 0 or the
    error is a whole term.
    """
    mode = case.kwargs.get("mode")
    xs = np.abs(x.astype(np.float64)) if mode == "lp" else x
    magnitude = expected_vjp(case, xs, np.abs(g.astype(np.float64)))
    n = taps(case, x.shape)
    p = float(case.kwargs.get("p", 2.0)) if mode == "lp" else 1.0
    return 4 * (n + 2) * max(1.0, p) * EPS[case.dtype] * magnitude + n * TINY[case.dtype]


def expected_vjp(case: Case, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The oracle's vector-Jacobian product for ``case`` at ``x`` with cotangent ``g``."""
    kw = case.kwargs
    kw.pop("return_indices", None)
    if case.kind == "pool":
        return oracle.pool_vjp(x, make_spec(**kw, ndim=case.ndim), g)
    if case.kind == "adaptive":
        return oracle.adaptive_vjp(x, make_adaptive_spec(**kw, ndim=case.ndim), g)
    spec = make_global_spec(**kw, ndim=case.ndim)
    # global pooling is a pool whose window is the whole plane
    full = make_spec(spec.mode, case.spatial, p=spec.p if spec.mode == "lp" else None,
                     data_format=spec.data_format, ndim=case.ndim)
    if not spec.keepdims:
        g = np.expand_dims(g, axis=spec.spatial_axes)
    return oracle.pool_vjp(x, full, g)


def run_case(case: Case, backend: str, seed: int = 0) -> Result:
    """Run one case on one backend and compare it with the oracle."""
    try:
        x = case.make_input(seed)
        if case.gradient:
            return _run_gradient(case, backend, x)
        want = expected(case, x)
        got = actual(case, x, backend)
    except Exception as err:  # a crash is a failure, reported with its message
        return Result(case, backend, False, np.inf, f"{type(err).__name__}: {err}")
    if isinstance(want, tuple):
        if not isinstance(got, tuple) or len(got) != 2:
            return Result(case, backend, False, np.inf, "expected (values, indices)")
        ok1, e1, m1 = compare(case, want[0], got[0])
        ok2, e2, m2 = compare(case, want[1], got[1], "indices")
        return Result(case, backend, ok1 and ok2, max(e1, e2), "; ".join(m for m in (m1, m2) if m))
    ok, err, msg = compare(case, want, got)
    return Result(case, backend, ok, err, msg)


def _run_gradient(case: Case, backend: str, x: np.ndarray) -> Result:
    be = dispatch.load(backend).BACKEND
    if not be.supports_autograd:
        return Result(case, backend, False, np.inf, f"{backend} has no autograd")
    values_only = Case(case.kind, case.ndim,
                       tuple((k, v) for k, v in case.args if k != "return_indices"),
                       case.spatial, case.dtype, case.values, case.batch)
    fn, pos, kw = entry(values_only)
    g = cotangent(case, np.shape(expected(values_only, x)))
    dx = be.vjp(lambda t: fn(t, *pos, **kw), be.from_numpy(x), be.from_numpy(g))
    want = expected_vjp(case, x, g)
    ok, err, msg = compare(case, want, be.to_numpy(dx), "gradient",
                           gradient_tolerance(case, x, g))
    return Result(case, backend, ok, err, msg)


def reproducer(case: Case, backend: str) -> str:
    """A command that re-runs one case."""
    return (f"python -c \"from pooladapt import conformance as c; "
            f"print(c.run_case(c.case_by_id({case.id!r}), {backend!r}))\"")


# ---------------------------------------------------------------------------- a user's function


def load_function(target: str) -> Callable[..., Any]:
    """``module:function`` (a module name or a path to a .py file) -> the function."""
    module_name, sep, func_name = target.rpartition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"--against expects module:function (e.g. mykernels:maxpool or "
                         f"path/to/file.py:maxpool), got {target!r}")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"--against: no such file {module_name!r}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # as `python -m` would
        module = importlib.import_module(module_name)
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ValueError(f"--against: {module_name!r} has no function {func_name!r}")
    return fn


def run_against(case: Case, fn: Callable[..., Any]) -> Result | None:
    """Run one case on a user function (calling convention in the module docstring);
    None when the case does not apply or the function raised NotImplementedError."""
    if case.kind != "pool" or case.gradient:
        return None
    x = case.make_input()
    spec = make_spec(**case.kwargs, ndim=case.ndim)
    want = expected(case, x)
    try:
        got = fn(x.copy(), spec)
    except NotImplementedError:
        return None
    except Exception as err:  # a crash is a failure, reported with its message
        return Result(case, "", False, math.inf, f"{type(err).__name__}: {err}")
    if spec.return_indices and not isinstance(got, tuple):
        # values only: check them, and do not count the case as an indices check
        case = dataclasses.replace(case, features=tuple(
            f for f in case.features if f != "indices"))
        want = want[0]
    elif spec.return_indices:
        if len(got) != 2:
            return Result(case, "", False, math.inf,
                          "return_indices is set: expected values or (values, indices)")
        with np.errstate(all="ignore"):
            ok1, e1, m1 = compare(case, want[0], got[0])
            ok2, e2, m2 = compare(case, want[1], got[1], "indices")
        return Result(case, "", ok1 and ok2, max(e1, e2), "; ".join(m for m in (m1, m2) if m))
    with np.errstate(all="ignore"):
        ok, err, msg = compare(case, want, got)
    return Result(case, "", ok, err, msg)


