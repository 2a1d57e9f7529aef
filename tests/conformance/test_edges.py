"""Edge values, empty and tiny inputs, huge planes and memory layouts on every backend.

Every expected value is computed by hand (or by the oracle for the layout tests); inputs go
to the backend as its own tensor (``from_numpy``), as the conformance runner does, and also
as NumPy arrays with ``backend=``. Feature tags match the conformance grid's, so a backend's
``known_deviations`` turn the matching tests into strict xfails.
"""

from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import pooladapt as pa
from pooladapt import dispatch, oracle
from pooladapt.conformance import INT_DTYPES, available_dtypes, np_dtype
from pooladapt.spec import make_adaptive_spec, make_spec

FLOATS = [d for d in available_dtypes() if d.startswith(("float", "bfloat"))]
INTS = list(INT_DTYPES)  # int8 to uint64
# the smallest positive subnormal of each float dtype
TINY = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149, "float64": 2.0**-1074}


@pytest.fixture
def deviation(known_deviation):
    """``deviation(backend, *tags)``: strict xfail if the backend lists one of the tags."""
    return lambda backend, *tags: known_deviation(SimpleNamespace(features=tags), backend)


def call(backend: str, fn: str, x: np.ndarray, *args, **kw):
    """``pa.<fn>`` on the backend's own tensors of ``x`` (and of array ``args``: unpool's
    indices); NumPy result(s)."""
    be = dispatch.load(backend).BACKEND
    args = tuple(be.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args)
    out = getattr(pa, fn)(be.from_numpy(x), *args, **kw)
    if isinstance(out, tuple):
        return tuple(be.to_numpy(o) for o in out)
    return be.to_numpy(out)


def numpy_of(backend: str, out):
    """NumPy result(s): a framework tensor converted, a NumPy array as it is."""
    if isinstance(out, tuple):
        return tuple(numpy_of(backend, o) for o in out)
    return out if isinstance(out, np.ndarray) else dispatch.load(backend).BACKEND.to_numpy(out)


def ncw(values, dtype) -> np.ndarray:
    """A (1, 1, n) channels-first input; floats given exactly as Python numbers."""
    if dtype in INTS:
        return np.array(values, dtype=dtype).reshape(1, 1, -1)
    return np.array(values, dtype=np.float64).astype(np_dtype(dtype)).reshape(1, 1, -1)


def assert_values(got: np.ndarray, want, dtype: str) -> None:
    """Exact comparison with ``want`` (float64 or ints) rounded to ``dtype``; NaN == NaN and
    -0.0 == 0.0 (the sign of a zero result is not specified)."""
    assert isinstance(got, np.ndarray) and str(got.dtype) == dtype, (type(got), got.dtype)
    if dtype in INTS:
        np.testing.assert_array_equal(got, np.array(want, dtype=dtype))
    else:
        want = np.array(want, dtype=np.float64).astype(np_dtype(dtype)).astype(np.float64)
        np.testing.assert_array_equal(got.astype(np.float64), want)


def assert_indices(got: np.ndarray, want) -> None:
    assert isinstance(got, np.ndarray) and got.dtype == np.int64, (type(got), got.dtype)
    np.testing.assert_array_equal(got, np.array(want, dtype=np.int64))


# ------------------------------------------------------------------ float16 / bfloat16 sums


@pytest.mark.parametrize("dtype", [d for d in FLOATS if d in ("float16", "bfloat16")])
def test_half_precision_average_accumulates_in_float32(backend, deviation, dtype):
    deviation(backend, f"dtype:{dtype}")
    big = float(np.array(60000.0).astype(np_dtype(dtype)))  # 60000 (float16), 59904 (bf16)
    x = np.full((1, 1, 4, 4), big).astype(np_dtype(dtype))
    cf = dict(data_format="channels_first")
    assert_values(call(backend, "pool2d", x, "avg", 2, **cf), np.full((1, 1, 2, 2), big), dtype)
    # non-uniform divisors (4, 6, 9): still the mean of equal values
    assert_values(call(backend, "pool2d", x, "avg", 3, 1, 1, **cf),
                  np.full((1, 1, 4, 4), big), dtype)
    with_pad = call(backend, "pool2d", x, "avg", 3, 2, 1, count_include_pad=True, **cf)
    assert_values(with_pad, np.array([[4, 6], [6, 9]]).reshape(1, 1, 2, 2) * big / 9, dtype)
    assert_values(call(backend, "global_pool2d", x, "avg", **cf), np.full((1, 1), big), dtype)
    assert_values(call(backend, "adaptive_pool2d", x, "avg", 3, **cf),
                  np.full((1, 1, 3, 3), big), dtype)
    # lp: the squares (9e8) overflow float16 but not float32; sqrt(4 * 30000**2) = 60000
    half = float(np.array(30000.0).astype(np_dtype(dtype)))
    y = np.full((1, 1, 4, 4), half).astype(np_dtype(dtype))
    assert_values(call(backend, "pool2d", y, "lp", 2, p=2, **cf),
                  np.full((1, 1, 2, 2), 2 * half), dtype)
    assert_values(call(backend, "global_pool2d", y[..., :2, :2], "lp", p=2, **cf),
                  np.full((1, 1), 2 * half), dtype)


@pytest.mark.parametrize("dtype", [d for d in FLOATS if d in ("float16", "bfloat16")])
def test_half_precision_sum_does_not_lose_small_terms(backend, deviation, dtype):
    deviation(backend, f"dtype:{dtype}")
    # float16: 2048 + 1 rounds back to 2048 (bfloat16: 256 + 1 to 256); in float32 it does not
    top = 2048.0 if dtype == "float16" else 256.0
    x = ncw([top, 1, 1, 1], dtype)
    want = (top + 3) / 4  # rounded to the dtype once, at the end
    assert_values(call(backend, "pool1d", x, "avg", 4, data_format="NCW"), [[[want]]], dtype)
    assert_values(call(backend, "global_pool1d", x, "avg", data_format="NCW"), [[want]], dtype)
    assert_values(call(backend, "adaptive_pool1d", x, "avg", 1, data_format="NCW"),
                  [[[want]]], dtype)


def test_float16_overflow_of_the_result_is_inf(backend, deviation):
    deviation(backend, "dtype:float16")
    x = ncw([60000, 60000], "float16")  # the 1-norm, 120000, is past float16's largest value
    for fn, args in (("pool1d", (2,)), ("global_pool1d", ())):
        assert_values(call(backend, fn, x, "lp", *args, p=1, data_format="NCW"),
                      np.full((1, 1, 1) if args else (1, 1), math.inf), "float16")
        assert_values(call(backend, fn, x, "avg", *args, data_format="NCW"),
                      np.full((1, 1, 1) if args else (1, 1), 60000.0), "float16")


# ------------------------------------------------------------------ infinities, zeros, tiny


@pytest.mark.parametrize("dtype", FLOATS)
def test_infinities(backend, deviation, dtype):
    deviation(backend, "edge_values", f"dtype:{dtype}")
    x = ncw([1, math.inf, -math.inf, -math.inf, 2, -math.inf, math.inf, -math.inf], dtype)
    y, idx = call(backend, "pool1d", x, "max", 2, data_format="NCW", return_indices=True)
    assert_values(y, [[[math.inf, -math.inf, 2, math.inf]]], dtype)
    assert_indices(idx, [[[1, 2, 4, 6]]])
    assert_values(call(backend, "pool1d", x, "avg", 2, data_format="NCW"),
                  [[[math.inf, -math.inf, -math.inf, math.nan]]], dtype)  # inf - inf is NaN
    for p in (1, 2):
        assert_values(call(backend, "pool1d", x, "lp", 2, p=p, data_format="NCW"),
                      [[[math.inf] * 4]], dtype)
    assert_values(call(backend, "global_pool1d", x[..., 2:4], "max", data_format="NCW"),
                  [[-math.inf]], dtype)
    assert_values(call(backend, "global_pool1d", x, "avg", data_format="NCW"),
                  [[math.nan]], dtype)
    # uneven bins [0,2) [1,4) [3,5) (a masked gather-sum must not make inf * 0 = NaN)
    z = ncw([math.inf, 1, 2, -math.inf, 4], dtype)
    assert_values(call(backend, "adaptive_pool1d", z, "avg", 3, data_format="NCW"),
                  [[[math.inf, -math.inf, -math.inf]]], dtype)
    y, idx = call(backend, "adaptive_pool1d", z, "max", 3, data_format="NCW",
                  return_indices=True)
    assert_values(y, [[[math.inf, 2, 4]]], dtype)
    assert_indices(idx, [[[0, 2, 4]]])


@pytest.mark.parametrize("dtype", FLOATS)
def test_minus_infinity_beats_padding(backend, deviation, dtype):
    deviation(backend, "edge_values", f"dtype:{dtype}")
    x = ncw([-math.inf] * 3, dtype)
    y, idx = call(backend, "pool1d", x, "max", 3, 1, 1, data_format="NCW", return_indices=True)
    assert_values(y, [[[-math.inf] * 3]], dtype)
    assert_indices(idx, [[[0, 0, 1]]])  # the first real cell of each window, never -1
    y, idx = call(backend, "pool1d", x, "max", 2, 2, "same_lower", ceil_mode=True,
                  data_format="NCW", return_indices=True)
    assert_indices(idx, [[[0, 1]]])


@pytest.mark.parametrize("dtype", FLOATS)
def test_signed_zeros(backend, deviation, dtype):
    deviation(backend, "edge_values", f"dtype:{dtype}")
    x = ncw([-0.0, 0.0, 0.0, -0.0, -1.0, -0.0], dtype)
    y, idx = call(backend, "pool1d", x, "max", 2, data_format="NCW", return_indices=True)
    assert_values(y, [[[0.0, 0.0, 0.0]]], dtype)
    assert_indices(idx, [[[0, 2, 5]]])  # -0.0 == 0.0: a tie, the first one wins
    avg = call(backend, "pool1d", x, "avg", 2, data_format="NCW")
    assert_values(avg, [[[0.0, 0.0, -0.5]]], dtype)
    assert_values(call(backend, "pool1d", x, "lp", 2, p=2, data_format="NCW"),
                  [[[0.0, 0.0, 1.0]]], dtype)


@pytest.mark.autograd
def test_signed_zero_tie_sends_the_gradient_to_the_first(backend, deviation):
    deviation(backend, "edge_values", "gradient")
    be = dispatch.load(backend).BACKEND
    x = ncw([0.0, -0.0, -0.0, 0.0], "float64")
    g = np.array([[[3.0, 5.0]]])
    dx = be.vjp(lambda t: pa.pool1d(t, "max", 2, data_format="NCW"), be.from_numpy(x),
                be.from_numpy(g))
    np.testing.assert_array_equal(be.to_numpy(dx), [[[3.0, 0.0, 5.0, 0.0]]])


@pytest.mark.parametrize("dtype", FLOATS)
def test_subnormals_are_not_flushed(backend, deviation, dtype):
    deviation(backend, "edge_values", "subnormals", f"subnormals:{dtype}", f"dtype:{dtype}")
    t = TINY[dtype]
    x = ncw([2 * t, 4 * t, 0.0, t, 6 * t, 8 * t], dtype)
    y, idx = call(backend, "pool1d", x, "max", 2, data_format="NCW", return_indices=True)
    assert_values(y, [[[4 * t, t, 8 * t]]], dtype)
    assert_indices(idx, [[[1, 3, 5]]])
    assert_values(call(backend, "pool1d", x, "avg", 2, data_format="NCW"),
                  [[[3 * t, 0.0, 7 * t]]], dtype)  # 1 * t / 2 rounds to even: 0
    assert_values(call(backend, "pool1d", x, "lp", 2, p=1, data_format="NCW"),
                  [[[6 * t, t, 14 * t]]], dtype)
    assert_values(call(backend, "global_pool1d", x, "max", data_format="NCW"), [[8 * t]], dtype)


# ------------------------------------------------------------------ NaN


@pytest.mark.parametrize("dtype", FLOATS)
def test_nan_anywhere_in_the_window(backend, deviation, dtype):
    deviation(backend, "nan", f"dtype:{dtype}")
    base = np.array([[1.0, -2.0, 3.0], [0.5, 4.0, -1.0]])
    for pos in range(6):  # one window of 2 x 3 (plus padding), NaN at each cell in turn
        x = base.copy()
        x.flat[pos] = math.nan
        x = x.reshape(1, 1, 2, 3).astype(np_dtype(dtype))
        for padding in (0, 1):
            window = (2 + 2 * padding, 3 + 2 * padding)
            y, idx = call(backend, "pool2d", x, "max", window, padding=padding,
                          data_format="NCHW", return_indices=True)
            assert_values(y, [[[[math.nan]]]], dtype)
            assert_indices(idx, [[[[pos]]]])
            for mode in ("avg", "lp"):
                out = call(backend, "pool2d", x, mode, window, padding=padding,
                           data_format="NCHW")
                assert_values(out, [[[[math.nan]]]], dtype)
        assert_values(call(backend, "global_pool2d", x, "max", data_format="NCHW"),
                      [[math.nan]], dtype)
        y, idx = call(backend, "adaptive_pool2d", x, "max", (1, 2), data_format="NCHW",
                      return_indices=True)
        # column bins [0, 2) and [1, 3); without the NaN both maxima are the 4 at cell 4
        held = [pos % 3 <= 1, pos % 3 >= 1]
        assert_values(y, [[[[math.nan if h else 4.0 for h in held]]]], dtype)
        assert_indices(idx, [[[[pos if h else 4 for h in held]]]])


@pytest.mark.parametrize("dtype", FLOATS)
def test_nan_reaches_exactly_the_windows_that_hold_it(backend, deviation, dtype):
    deviation(backend, "nan", f"dtype:{dtype}")
    for k in range(5):
        values = [0.0, 1.0, 2.0, 3.0, 4.0]
        values[k] = math.nan
        x = ncw(values, dtype)
        y, idx = call(backend, "pool1d", x, "max", 3, 1, data_format="NCW", return_indices=True)
        # window o holds cells o..o+2; its max is o + 2 unless the NaN is there
        assert_values(y, [[[math.nan if o <= k <= o + 2 else o + 2 for o in range(3)]]], dtype)
        assert_indices(idx, [[[k if o <= k <= o + 2 else o + 2 for o in range(3)]]])
    two = ncw([1.0, math.nan, math.inf, math.nan], dtype)  # the first NaN is the index
    y, idx = call(backend, "pool1d", two, "max", 4, data_format="NCW", return_indices=True)
    assert_values(y, [[[math.nan]]], dtype)
    assert_indices(idx, [[[1]]])


# ------------------------------------------------------------------ integers


def _extremes(dtype: str) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def call_on(backend: str, path: str, fn: str, x: np.ndarray, *args, **kw):
    """``pa.<fn>`` on the backend's own tensors (``native``) or on NumPy arrays with
    ``backend=`` (``numpy``); NumPy result(s)."""
    if path == "native":
        return call(backend, fn, x, *args, **kw)
    out = getattr(pa, fn)(x, *args, backend=backend, **kw)
    assert isinstance(out[0] if isinstance(out, tuple) else out, np.ndarray)
    return out


def native_dtype_or_type_error(backend: str, x: np.ndarray) -> bool:
    """True if the framework has tensors of x's dtype; else its conversion must raise the
    documented TypeError naming the dtype (MXNet has no int16 arrays, say)."""
    try:
        dispatch.load(backend).BACKEND.from_numpy(x)
    except TypeError as err:
        assert str(x.dtype) in str(err), err
        return False
    return True


@pytest.mark.parametrize("path", ["native", "numpy"])
@pytest.mark.parametrize("dtype", INTS)
def test_integer_extremes_are_exact(backend, deviation, dtype, path):
    deviation(backend, f"dtype:{dtype}")
    lo, hi = _extremes(dtype)
    x = ncw([lo, hi, lo, lo, hi - 1, hi, lo + 1, lo], dtype)
    if path == "native" and not native_dtype_or_type_error(backend, x):
        return
    x.flags.writeable = False  # read-only input (a frozen NumPy buffer) is fine too
    y, idx = call_on(backend, path, "pool1d", x, "max", 2, data_format="NCW",
                     return_indices=True)
    assert_values(y, [[[hi, lo, hi, lo + 1]]], dtype)
    assert_indices(idx, [[[1, 2, 5, 6]]])
    assert_values(call_on(backend, path, "pool1d", x, "max", 3, 2, "same", data_format="NCW"),
                  [[[hi, hi - 1, hi, lo + 1]]], dtype)
    assert_values(call_on(backend, path, "global_pool1d", x, "max", data_format="NCW"), [[hi]],
                  dtype)
    y, idx = call_on(backend, path, "adaptive_pool1d", x, "max", 3, data_format="NCW",
                     return_indices=True)  # bins [0,3) [2,6) [5,8)
    assert_values(y, [[[hi, hi, hi]]], dtype)
    assert_indices(idx, [[[1, 5, 5]]])
    assert_values(call_on(backend, path, "max_unpool1d", y, idx, 8, data_format="NCW"),
                  [[[0, hi, 0, 0, 0, hi, 0, 0]]], dtype)
    # padding acts as the dtype minimum and still never wins a tie with a real minimum
    m = ncw([lo, lo, lo], dtype)
    y, idx = call_on(backend, path, "pool1d", m, "max", 3, 1, 1, data_format="NCW",
                     return_indices=True)
    assert_values(y, [[[lo, lo, lo]]], dtype)
    assert_indices(idx, [[[0, 0, 1]]])
    for fn, args in (("pool1d", ("avg", 2)), ("pool1d", ("lp", 2)),
                     ("global_pool1d", ("avg",)), ("adaptive_pool1d", ("avg", 3))):
        with pytest.raises(TypeError, match=f"{dtype}.*cast"):
            call_on(backend, path, fn, x, *args, data_format="NCW")


def test_int64_beyond_float64_precision(backend, deviation):
    deviation(backend, "dtype:int64")
    big = 2**53
    x = ncw([big, big + 1, 2**63 - 1, 2**63 - 2, -(2**63), -(2**63) + 1], "int64")
    y, idx = call(backend, "pool1d", x, "max", 2, data_format="NCW", return_indices=True)
    assert_values(y, [[[big + 1, 2**63 - 1, -(2**63) + 1]]], "int64")
    assert_indices(idx, [[[1, 2, 5]]])
    assert_values(call(backend, "global_pool1d", x[..., :2], "max", data_format="NCW"),
                  [[big + 1]], "int64")
    got = call(backend, "max_unpool1d", y, idx, 6, data_format="NCW")
    assert_values(got, [[[0, big + 1, 2**63 - 1, 0, 0, -(2**63) + 1]]], "int64")


@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
def test_avg_and_lp_refuse_integers_and_bools(backend, dtype):  # on the framework's tensors
    be = dispatch.load(backend).BACKEND
    x = be.from_numpy(np.ones((1, 1, 4), dtype=dtype))
    for mode in ("avg", "lp"):
        with pytest.raises(TypeError, match=dtype):
            pa.pool1d(x, mode, 2, data_format="NCW")
    if dtype == "bool":
        with pytest.raises(TypeError, match="bool"):
            pa.pool1d(x, "max", 2, data_format="NCW")


# ------------------------------------------------------------------ degenerate geometry


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_all_padding_windows(backend, deviation, dtype):
    deviation(backend, "all_padding", f"dtype:{dtype}")
    lowest = _extremes(dtype)[0] if dtype in INTS else -math.inf
    # size 2, window 2, dilation 3, padding 1: the only window's taps (-1 and 2) are padding
    geo = dict(window=2, stride=1, padding=1, dilation=3, data_format="NCW")
    x = ncw([3, -5], dtype)
    y, idx = call(backend, "pool1d", x, "max", **geo, return_indices=True)
    assert_values(y, [[[lowest]]], dtype)
    assert_indices(idx, [[[-1]]])
    assert_values(call(backend, "max_unpool1d", y, idx, 2, data_format="NCW"), [[[0, 0]]], dtype)
    assert_values(call(backend, "pool1d", x, "max", **geo), [[[lowest]]], dtype)  # no indices
    if dtype in INTS:
        return
    assert_values(call(backend, "pool1d", x, "avg", **geo), [[[math.nan]]], dtype)  # 0 / 0
    assert_values(call(backend, "pool1d", x, "avg", **geo, count_include_pad=True),
                  [[[0.0]]], dtype)
    assert_values(call(backend, "pool1d", x, "lp", **geo), [[[0.0]]], dtype)
    # 2-D: one all-padding window per plane
    x2 = np.full((1, 1, 2, 2), -7.0, dtype=dtype)
    y, idx = call(backend, "pool2d", x2, "max", **{**geo, "data_format": "NCHW"},
                  return_indices=True)
    assert_values(y, [[[[lowest]]]], dtype)
    assert_indices(idx, [[[[-1]]]])
    # same padding puts one window of a single cell entirely in the padding
    got = call(backend, "pool1d", ncw([2.875], dtype), "max", 2, padding="same", dilation=2,
               data_format="NCW")
    assert_values(got, [[[-math.inf]]], dtype)


@pytest.mark.autograd
@pytest.mark.parametrize("mode", ["max", "avg", "lp"])
def test_all_padding_windows_pass_no_gradient(backend, deviation, mode):
    deviation(backend, "all_padding", "gradient")
    be = dispatch.load(backend).BACKEND
    # 'same' over 2 rows with window 2, dilation 3: pads (1, 2), so the first output row's
    # taps (-1 and 2) are padding only; the second row's (0 and 3) hold row 0
    kw = dict(window=(2, 2), stride=1, padding="same", dilation=(3, 1), data_format="NCHW")
    x = np.array([[[[1.5, 2.0, -1.0], [-2.0, 4.0, 0.5]]]])
    g = np.array([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])
    dx = be.to_numpy(be.vjp(lambda t: pa.pool2d(t, mode, **kw), be.from_numpy(x),
                            be.from_numpy(g)))
    # row 0's cells get only the second output row's cotangents (by hand: avg divides by 2, 2, 1;
    # max sends each window to its larger cell; lp 2 by x / norm); row 1 gets nothing
    a, b, c = 1.5, 2.0, -1.0
    want = {
        "avg": [4 / 2, 4 / 2 + 5 / 2, 5 / 2 + 6 / 1],
        "max": [0.0, 4 + 5, 6.0],
        "lp": [4 * a / math.hypot(a, b), 4 * b / math.hypot(a, b) + 5 * b / math.hypot(b, c),
               5 * c / math.hypot(b, c) + 6 * c / abs(c)],
    }[mode]
    np.testing.assert_allclose(dx, [[[want, [0.0, 0.0, 0.0]]]], rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_windows_with_a_single_real_tap(backend, deviation, dtype):
    deviation(backend, "dilation", f"dtype:{dtype}")
    # size 3, window 2, dilation 3, padding 1: taps {-1, 2} and {0, 3}: one real cell each
    geo = dict(window=2, stride=1, padding=1, dilation=3, data_format="NCW")
    x = ncw([-6, 1, -2], dtype)
    y, idx = call(backend, "pool1d", x, "max", **geo, return_indices=True)
    assert_values(y, [[[-2, -6]]], dtype)
    assert_indices(idx, [[[2, 0]]])
    if dtype in INTS:
        return
    assert_values(call(backend, "pool1d", x, "avg", **geo), [[[-2, -6]]], dtype)
    assert_values(call(backend, "pool1d", x, "avg", **geo, count_include_pad=True),
                  [[[-1, -3]]], dtype)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_window_equal_to_the_padded_input(backend, deviation, ceil_mode):
    deviation(backend, "window=padded_input")
    cf = dict(padding=1, ceil_mode=ceil_mode, data_format="NCW")
    x = ncw([1, 2, 3], "float64")
    y, idx = call(backend, "pool1d", x, "max", 5, **cf, return_indices=True)
    assert_values(y, [[[3]]], "float64")
    assert_indices(idx, [[[2]]])
    assert_values(call(backend, "pool1d", x, "avg", 5, **cf), [[[2.0]]], "float64")
    assert_values(call(backend, "pool1d", x, "avg", 5, **cf, count_include_pad=True),
                  [[[1.2]]], "float64")
    assert_values(call(backend, "pool1d", x, "lp", 5, p=1, **cf), [[[6.0]]], "float64")
    got = call(backend, "pool1d", x, "lp", 5, p=2, **cf)
    np.testing.assert_allclose(got, [[[math.sqrt(14)]]], rtol=1e-15)
    x2 = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    cf2 = {**cf, "data_format": "NCHW"}
    y, idx = call(backend, "pool2d", x2, "max", 4, **cf2, return_indices=True)
    assert_values(y, [[[[4.0]]]], "float64")
    assert_indices(idx, [[[[3]]]])
    assert_values(call(backend, "pool2d", x2, "avg", 4, **cf2), [[[[2.5]]]], "float64")
    assert_values(call(backend, "pool2d", x2, "avg", 4, **cf2, count_include_pad=True),
                  [[[[0.625]]]], "float64")


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_one_element_inputs(backend, ndim):
    x = np.full((1, 1) + (1,) * ndim, 7.0, dtype=np.float32)
    cf = dict(data_format="channels_first")
    one = (1, 1) + (1,) * ndim
    pool, glob, adapt, unpool = (f"{name}{ndim}d" for name in (
        "pool", "global_pool", "adaptive_pool", "max_unpool"))
    y, idx = call(backend, pool, x, "max", 1, **cf, return_indices=True)
    assert_values(y, np.full(one, 7.0), "float32")
    assert_indices(idx, np.zeros(one))
    assert_values(call(backend, unpool, y, idx, (1,) * ndim, **cf), x, "float32")
    for mode in ("avg", "lp"):
        assert_values(call(backend, pool, x, mode, 1, **cf), np.full(one, 7.0), "float32")
    # window 2, padding 1: two windows, each holding the cell once per dim
    two = (1, 1) + (2,) * ndim
    y, idx = call(backend, pool, x, "max", 2, 1, 1, **cf, return_indices=True)
    assert_values(y, np.full(two, 7.0), "float32")
    assert_indices(idx, np.zeros(two))
    assert_values(call(backend, pool, x, "avg", 2, 1, 1, **cf), np.full(two, 7.0), "float32")
    assert_values(call(backend, pool, x, "avg", 2, 1, 1, count_include_pad=True, **cf),
                  np.full(two, 7.0 / 2**ndim), "float32")
    assert_values(call(backend, glob, x, "lp", **cf), np.full((1, 1), 7.0), "float32")
    y, idx = call(backend, adapt, x, "max", 3, **cf, return_indices=True)
    three = (1, 1) + (3,) * ndim
    assert_values(y, np.full(three, 7.0), "float32")
    assert_indices(idx, np.zeros(three))
    assert_values(call(backend, adapt, x, "avg", 2, **cf), np.full(two, 7.0), "float32")


# ------------------------------------------------------------------ empty batch and channels


EMPTY = [
    # (input shape, data format, window, stride, padding, pooled spatial, adaptive 3 -> 3)
    ((0, 3, 5, 4), "channels_first", 2, None, 0, (2, 2)),
    ((2, 0, 5, 4), "channels_first", 3, 2, "same", (3, 2)),
    ((0, 5, 4, 3), "channels_last", 3, 1, 1, (5, 4)),
    ((2, 5, 4, 0), "channels_last", 2, 1, "valid", (4, 3)),
]


@pytest.mark.parametrize(("shape", "fmt", "window", "stride", "padding", "pooled"), EMPTY)
def test_empty_batch_or_channels_give_empty_results(backend, deviation, shape, fmt, window,
                                                     stride, padding, pooled):
    deviation(backend, "empty")
    x = np.zeros(shape, dtype=np.float32)
    cf = fmt == "channels_first"
    n, c = (shape[0], shape[1]) if cf else (shape[0], shape[-1])

    def full(spatial):
        return (n, c, *spatial) if cf else (n, *spatial, c)

    kw = dict(data_format=fmt)
    y, idx = call(backend, "pool2d", x, "max", window, stride, padding, **kw,
                  return_indices=True)
    assert y.shape == idx.shape == full(pooled)
    assert str(y.dtype) == "float32" and idx.dtype == np.int64
    for mode in ("avg", "lp"):
        out = call(backend, "pool2d", x, mode, window, stride, padding, **kw)
        assert out.shape == full(pooled) and out.dtype == np.float32
    unpooled = call(backend, "max_unpool2d", y, idx, (5, 4), **kw)
    assert unpooled.shape == full((5, 4)) and unpooled.dtype == np.float32
    for mode in ("max", "avg", "lp"):
        assert call(backend, "global_pool2d", x, mode, **kw).shape == (n, c)
        assert call(backend, "global_pool2d", x, mode, True, **kw).shape == full((1, 1))
    y, idx = call(backend, "adaptive_pool2d", x, "max", 3, **kw, return_indices=True)
    assert y.shape == idx.shape == full((3, 3)) and idx.dtype == np.int64
    assert call(backend, "adaptive_pool2d", x, "avg", (2, None), **kw).shape == full((2, 4))
    ints = call(backend, "pool2d", x.astype(np.int8), "max", window, stride, padding, **kw)
    assert ints.shape == full(pooled) and ints.dtype == np.int8


@pytest.mark.autograd
def test_empty_batch_gradient(backend, deviation):
    deviation(backend, "empty", "gradient")
    be = dispatch.load(backend).BACKEND
    x = np.zeros((0, 2, 5), dtype=np.float64)
    for mode in ("max", "avg", "lp"):
        dx = be.vjp(lambda t, m=mode: pa.pool1d(t, m, 2, 1, 1, data_format="NCW"),
                    be.from_numpy(x), be.from_numpy(np.zeros((0, 2, 6))))
        assert be.to_numpy(dx).shape == (0, 2, 5)


@pytest.mark.parametrize("shape", [(1, 1, 0, 4), (0, 0, 3, 0)])
def test_empty_spatial_dims_raise(backend, shape):
    x = dispatch.load(backend).BACKEND.from_numpy(np.zeros(shape, dtype=np.float32))
    kw = dict(data_format="NCHW")
    with pytest.raises(ValueError, match="spatial") as info:
        pa.pool2d(x, "max", 2, padding=1, **kw)  # padding would make room for a window
    assert str(shape) in str(info.value) or str(shape[2:]) in str(info.value)
    for fn in (lambda: pa.global_pool2d(x, "avg", **kw),
               lambda: pa.global_pool2d(x, "max", **kw),
               lambda: pa.adaptive_pool2d(x, "max", 2, **kw)):
        with pytest.raises(ValueError, match="spatial"):
            fn()


# ------------------------------------------------------------------ int64 indices


@pytest.mark.parametrize("fn", ["pool1d", "adaptive_pool1d"])
def test_indices_are_int64(backend, fn):
    x = np.arange(12, dtype=np.float32).reshape(1, 2, 6)
    args = ("max", 2) if fn == "pool1d" else ("max", 3)
    _, idx = call(backend, fn, x, *args, data_format="NCW", return_indices=True)
    assert idx.dtype == np.int64


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


BIG = 2**31 + 2  # cells in one plane: the flat index of the last ones does not fit int32


def test_indices_past_int32(backend, deviation):
    """A 2 GiB int8 plane. NumPy's zeros are lazily allocated (only touched pages are real),
    so the NumPy backend needs little memory; a framework that copies the input needs 2 GiB
    per copy, hence the check of the memory available."""
    deviation(backend, "int64_indices")
    copies = 1 if backend == "numpy" else 4
    if sys.maxsize < 2**40 or _available_memory() < copies * BIG + 2**31:
        pytest.skip(f"needs about {copies * 2 + 2} GiB of free memory for a 2 GiB plane")
    x = np.zeros((1, 1, BIG), dtype=np.int8)
    x[0, 0, 1] = 1
    x[0, 0, 2**31 + 1] = 5  # in the third window (cells 2**31 and 2**31 + 1)
    y, idx = call(backend, "pool1d", x, "max", 2, 2**30, data_format="NCW",
                  return_indices=True)
    assert_values(y, [[[1, 0, 5]]], "int8")
    assert_indices(idx, [[[1, 2**30, 2**31 + 1]]])


# ------------------------------------------------------------------ memory layouts


def _layouts(base: np.ndarray) -> dict[str, np.ndarray]:
    """Views of ``base``'s values in odd memory layouts, each (1, 2, 5, 6) channels first."""
    big = np.zeros((2, 4, 10, 13), dtype=base.dtype)
    big[1, 1::2, ::2, 1::2] = base[0]
    flipped = np.ascontiguousarray(base[..., ::-1, ::-1])[..., ::-1, ::-1]
    readonly = base.copy()
    readonly.setflags(write=False)
    return {
        "negative_strides": flipped,
        "sliced": big[1:, 1::2, ::2, 1::2],
        "fortran": np.asfortranarray(base),
        "transposed": np.ascontiguousarray(base.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
        "readonly": readonly,
        "broadcast": np.broadcast_to(base[:, :1], base.shape),
    }


LAYOUT_CALLS = [
    ("max", dict(window=3, stride=2, padding=1, return_indices=True)),
    ("avg", dict(window=(2, 3), stride=1, padding=((0, 1), (1, 1)), count_include_pad=True)),
    ("lp", dict(window=2, dilation=2, ceil_mode=True)),
]


@pytest.mark.parametrize("layout", list(_layouts(np.zeros((1, 2, 5, 6)))))
@pytest.mark.parametrize("path", ["native", "numpy"])
def test_strided_and_readonly_inputs(backend, deviation, layout, path):
    deviation(backend, "layout:" + layout)
    be = dispatch.load(backend).BACKEND
    rng = np.random.default_rng(3)
    base = rng.integers(-8, 9, size=(1, 2, 5, 6)).astype(np.float64) / 4
    x = _layouts(base)[layout]
    want_x = np.ascontiguousarray(x)
    for mode, kw in LAYOUT_CALLS:
        spec = make_spec(mode, **kw, data_format="NCHW", ndim=2)
        want = oracle.pool(want_x, spec)
        arg = be.from_numpy(x) if path == "native" else x
        got = pa.pool2d(arg, mode, **kw, data_format="NCHW",
                        **({} if path == "native" else {"backend": backend}))
        assert path == "native" or isinstance(got[0] if mode == "max" else got, np.ndarray)
        got = numpy_of(backend, got)
        if mode == "max":
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        else:
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    arg = be.from_numpy(x) if path == "native" else x
    kw = {} if path == "native" else {"backend": backend}
    got = numpy_of(backend, pa.global_pool2d(arg, "avg", data_format="NCHW", **kw))
    np.testing.assert_allclose(got, want_x.mean(axis=(2, 3)), rtol=1e-13)
    got = numpy_of(backend, pa.adaptive_pool2d(arg, "max", 4, data_format="NCHW", **kw))
    want = oracle.adaptive_pool(want_x, make_adaptive_spec("max", 4, data_format="NCHW", ndim=2))
    np.testing.assert_array_equal(got, want)


def test_framework_views(backend, deviation):
    """Transposed and strided views of the framework's own tensors."""
    deviation(backend, "layout:views")
    be = dispatch.load(backend).BACKEND
    base = np.arange(2 * 6 * 7 * 3, dtype=np.float32).reshape(2, 6, 7, 3) % 11 - 5
    nhwc = be.from_numpy(base)
    views = {"transposed": (_transpose(backend, nhwc, (0, 3, 1, 2)),
                            base.transpose(0, 3, 1, 2)),
             "sliced": (_slice(backend, nhwc), base[:, ::2, 1:, :])}
    for name, (view, values) in views.items():
        fmt = "NCHW" if name == "transposed" else "NHWC"
        y, idx = pa.pool2d(view, "max", 2, 1, 1, data_format=fmt, return_indices=True)
        spec = make_spec("max", 2, 1, 1, data_format=fmt, return_indices=True, ndim=2)
        want, want_idx = oracle.pool(np.ascontiguousarray(values), spec)
        np.testing.assert_array_equal(be.to_numpy(y), want, err_msg=name)
        np.testing.assert_array_equal(be.to_numpy(idx), want_idx, err_msg=name)
        got = be.to_numpy(pa.pool2d(view, "avg", 3, 2, 1, data_format=fmt))
        want = oracle.pool(np.ascontiguousarray(values),
                           make_spec("avg", 3, 2, 1, data_format=fmt, ndim=2))
        np.testing.assert_allclose(got, want, rtol=2e-6, err_msg=name)


def _transpose(backend: str, t, axes):
    if backend == "torch":
        return t.permute(*axes)  # a strided view, not a copy
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.transpose(t, axes)
    if backend == "jax":
        return t.transpose(axes)
    if backend == "mxnet":
        return t.transpose(axes=axes)
    return t.transpose(axes)


def _slice(backend: str, t):
    if backend == "mxnet":  # NDArray basic indexing takes no step
        import mxnet as mx

        return mx.nd.slice(t, begin=(None, None, 1, None), end=(None, None, None, None),
                           step=(1, 2, 1, 1))
    return t[:, ::2, 1:, :]


# ------------------------------------------------------------------ inputs are never modified


def _calls(ndim_input: np.ndarray):
    fmt = dict(data_format="NCHW")
    yield "pool max", lambda t: pa.pool2d(t, "max", 3, 1, 1, return_indices=True, **fmt)
    yield "pool max dilated", lambda t: pa.pool2d(t, "max", 2, 1, 1, 2, True, **fmt)
    yield "pool avg", lambda t: pa.pool2d(t, "avg", 3, 2, "same", count_include_pad=True, **fmt)
    yield "pool avg ceil", lambda t: pa.pool2d(t, "avg", 2, 2, 1, ceil_mode=True, **fmt)
    yield "pool lp", lambda t: pa.pool2d(t, "lp", 2, 1, ((0, 1), (1, 0)), p=3.0, **fmt)
    yield "global", lambda t: pa.global_pool2d(t, "lp", **fmt)
    yield "adaptive", lambda t: pa.adaptive_pool2d(t, "max", (3, 5), return_indices=True, **fmt)
    yield "adaptive avg", lambda t: pa.adaptive_pool2d(t, "avg", 3, **fmt)


@pytest.mark.parametrize("path", ["native", "numpy"])
def test_inputs_are_never_modified(backend, path):
    be = dispatch.load(backend).BACKEND
    x = np.arange(2 * 3 * 5 * 4, dtype=np.float32).reshape(2, 3, 5, 4) / 7 - 3
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    x[1, 2, 4, 3] = -0.0
    before = x.copy()
    arg = be.from_numpy(x) if path == "native" else x
    kw = {} if path == "native" else {"backend": backend}
    for name, fn in _calls(x):
        with pa.use_backend(backend):
            out = fn(arg) if path == "native" else fn(x)
        assert x.tobytes() == before.tobytes(), f"{name} modified the NumPy input"
        if path == "native":
            assert be.to_numpy(arg).tobytes() == before.tobytes(), f"{name} modified the tensor"
        if name == "pool max":
            y, idx = out
            y_before, idx_before = numpy_of(backend, (y, idx))
            y_before, idx_before = y_before.copy(), idx_before.copy()
            pa.max_unpool2d(y, idx, data_format="NCHW", **kw)
            y_after, idx_after = numpy_of(backend, (y, idx))
            assert y_after.tobytes() == y_before.tobytes(), "unpool modified y"
            assert idx_after.tobytes() == idx_before.tobytes(), "unpool modified indices"


@pytest.mark.autograd
def test_gradients_never_modify_inputs(backend):
    be = dispatch.load(backend).BACKEND
    x = np.arange(2 * 3 * 5 * 4, dtype=np.float64).reshape(2, 3, 5, 4) / 7 - 3
    before = x.copy()
    for name, fn in _calls(x):
        if "adaptive" in name and "avg" not in name:
            continue  # returns indices: not differentiable as a whole
        if name == "pool max":
            def fn(t):
                return pa.pool2d(t, "max", 3, 1, 1, data_format="NCHW")
        t = be.from_numpy(x)
        out_shape = be.to_numpy(fn(t)).shape
        g = np.ones(out_shape)
        g_t = be.from_numpy(g)
        be.vjp(fn, t, g_t)
        assert be.to_numpy(t).tobytes() == before.tobytes(), f"{name}: input modified"
        assert be.to_numpy(g_t).tobytes() == g.tobytes(), f"{name}: cotangent modified"
        assert x.tobytes() == before.tobytes(), f"{name}: NumPy input modified"


# platform aliases: the same dtype under another scalar type (NumPy 1 makes int64 results of
# np.where longlong; C int is intc)
ALIASES = [("longlong", "int64"), ("intc", "int32"), ("ulonglong", "uint64"), ("uintc", "uint32")]


@pytest.mark.parametrize(("alias", "dtype"), ALIASES, ids=[a for a, _ in ALIASES])
def test_a_platform_alias_of_an_integer_dtype_pools_as_that_dtype(backend, alias, dtype):
    x = np.array([3, 9, 4, 1, 7, 7], dtype=np.dtype(getattr(np, alias))).reshape(1, 1, -1)
    if x.dtype != np.dtype(dtype):
        pytest.skip(f"{alias} is not {dtype} on this platform")
    want = [[[9, 4, 7]]]  # each pair's max, by hand
    results = [numpy_of(backend, pa.pool1d(x, "max", 2, data_format="channels_first",
                                           backend=backend))]
    try:
        results.append(call(backend, "pool1d", x, "max", 2, data_format="channels_first"))
    except TypeError as err:  # a framework without tensors of the dtype says so (MXNet)
        assert dtype in str(err)
    for got in results:
        assert got.dtype == np.dtype(dtype) and got.tolist() == want
