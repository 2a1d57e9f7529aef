"""Fractional max pooling on every backend that has it, against the oracle: values, indices and
gradients for the same random samples in every dtype, framework tensors and NumPy input with
``backend=`` (PyTorch's meaning; tests/core/test_fractional.py checks the oracle by hand). A
backend without fractional pooling raises NotImplementedError naming the backends that have
it, and its cases are skipped; a dtype the backend lists as a known deviation (MXNet's
bfloat16, which raises TypeError) is a strict xfail.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import pooladapt as pa
from pooladapt import api, dispatch, oracle
from pooladapt.conformance import INT_DTYPES, available_dtypes, np_dtype
from pooladapt.spec import make_fractional_spec

FLOATS = [d for d in available_dtypes() if d.startswith(("float", "bfloat"))]


@pytest.fixture
def be(backend):
    try:
        api.fractional_backend(backend)
    except NotImplementedError as err:
        assert "numpy" in str(err) and "torch" in str(err)  # it names who has it
        pytest.skip(f"{backend}: no fractional max pooling yet")
    return dispatch.load(backend).BACKEND


CASES = [  # (ndim, shape (N, C, spatial...), kernel, output_size, output_ratio, data_format)
    pytest.param(2, (2, 3, 9, 8), 2, (4, 5), None, "channels_first", id="2d-size"),
    pytest.param(2, (1, 2, 7, 11), (2, 3), None, 0.5, "channels_first", id="2d-ratio"),
    pytest.param(2, (2, 9, 8, 3), 3, (6, 5), None, "channels_last", id="2d-last"),
    pytest.param(2, (1, 1, 6, 6), 1, (6, 6), None, "channels_first", id="2d-k1-identity"),
    pytest.param(2, (1, 2, 12, 5), 2, (4, 1), None, "channels_first", id="2d-one-window"),
    pytest.param(3, (2, 2, 6, 5, 7), 2, (3, 4, 3), None, "channels_first", id="3d-size"),
    pytest.param(3, (1, 5, 6, 7, 2), (2, 1, 3), None, 0.6, "channels_last", id="3d-last-ratio"),
]


def _input(shape, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype.startswith(("int", "uint")):
        return rng.integers(0, 50, shape).astype(dtype)  # small values: ties happen
    x = np.round(rng.standard_normal(shape) * 4) / 4  # quarters: exact in every float, ties
    return x.astype(np_dtype(dtype))


def _call(be, x, samples, ndim, kernel, size, ratio, fmt, indices=False, native=True):
    """The call on framework tensors (``native``) or on NumPy arrays with ``backend=``
    (the way in for dtypes a framework has no tensors of: MXNet's int16)."""
    fn = getattr(pa, f"fractional_max_pool{ndim}d")
    if not native:
        out = fn(x, kernel, size, ratio, indices, samples, data_format=fmt, backend=be.name)
        assert all(isinstance(o, np.ndarray) for o in (out if indices else (out,)))
        return out
    out = fn(be.from_numpy(x), kernel, size, ratio, indices, be.from_numpy(samples),
             data_format=fmt)
    return tuple(be.to_numpy(o) for o in out) if indices else be.to_numpy(out)


@pytest.fixture
def deviation(be, known_deviation):
    """``deviation(dtype)``: a strict xfail where the backend lists the dtype as a deviation."""
    return lambda dtype: known_deviation(SimpleNamespace(features=(f"dtype:{dtype}",)), be.name)


def _samples(x, ndim, fmt, dtype, seed=1):
    batch, chans = x.shape[0], x.shape[1 if fmt == "channels_first" else -1]
    return np.random.default_rng(seed).random((batch, chans, ndim)).astype(np_dtype(dtype))


@pytest.mark.parametrize("dtype", [*FLOATS, "int32", "uint8"])
@pytest.mark.parametrize(("ndim", "shape", "kernel", "size", "ratio", "fmt"), CASES)
def test_forward_and_indices_equal_the_oracle(be, deviation, ndim, shape, kernel, size, ratio,
                                              fmt, dtype):
    deviation(dtype)
    x = _input(shape, dtype)
    samples = _samples(x, ndim, fmt, dtype if dtype in FLOATS else "float64")
    spec = make_fractional_spec(kernel, size, ratio, True, ndim=ndim, data_format=fmt)
    want_y, want_idx = oracle.fractional_max_pool(x, spec, samples)
    y, idx = _call(be, x, samples, ndim, kernel, size, ratio, fmt, indices=True)
    assert y.dtype == x.dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(y.astype(np.float64), want_y.astype(np.float64))


@pytest.mark.parametrize("native", [True, False], ids=["tensors", "numpy-input"])
@pytest.mark.parametrize("dtype", [*FLOATS, *INT_DTYPES])
def test_every_dtype_pools_as_the_oracle(be, deviation, request, dtype, native):
    """Every dtype, framework tensors where the framework has them (NumPy input with
    ``backend=`` always): 2-D channels-first and 3-D channels-last, samples of the input's
    dtype (float64 for integers), overlapping windows."""
    deviation(dtype)
    if be.name == "torch" and dtype in ("uint16", "uint32", "uint64"):
        request.applymarker(pytest.mark.xfail(raises=NotImplementedError, strict=True, reason=(
            "torch's gather (pooladapt/backends/torch/family.py) has no CPU kernel for "
            "uint16/uint32/uint64: 'scatter_gather_tensor_cpu' not implemented")))
    for ndim, shape, kernel, size, fmt in ((2, (2, 3, 9, 8), 3, (6, 5), "channels_first"),
                                           (3, (1, 5, 6, 4, 2), 2, (4, 3, 3), "channels_last")):
        x = _input(shape, dtype, seed=ndim)
        samples = _samples(x, ndim, fmt, dtype if dtype in FLOATS else "float64", seed=ndim)
        if native:
            try:
                be.from_numpy(x)
            except TypeError:  # no tensors of this dtype (MXNet: int16): NumPy input only
                pytest.skip(f"{be.name} has no {dtype} tensors")
        spec = make_fractional_spec(kernel, size, None, True, ndim=ndim, data_format=fmt)
        want_y, want_idx = oracle.fractional_max_pool(x, spec, samples)
        y, idx = _call(be, x, samples, ndim, kernel, size, None, fmt, indices=True,
                       native=native)
        assert y.dtype == x.dtype and idx.dtype == np.int64
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(y, want_y.astype(x.dtype))
        y = _call(be, x, samples, ndim, kernel, size, None, fmt, native=native)
        np.testing.assert_array_equal(y, want_y.astype(x.dtype))


def _edge_input(dtype: str) -> np.ndarray:
    x = _input((2, 2, 8, 8), dtype)
    x[0, 0, :4, :4] = np.nan  # whole windows of NaN, and windows with some NaN
    x[1, 1, 5, 2] = np.nan
    x[0, 1, :5, :5] = -np.inf  # whole windows of -inf, and -inf beside larger values
    x[0, 1, 1, 1] = np.nan  # NaN among -inf
    x[1, 0, 4:, 4:] = -np.inf
    x[1, 0, 6, 6] = 0.0
    x[1, 0, 7, 7] = -0.0  # a signed-zero tie: the first zero wins
    return x


@pytest.mark.parametrize("dtype", FLOATS)
def test_nan_wins_and_its_index_is_the_first_nan(be, deviation, dtype):
    """The first NaN of a window wins; a window of -inf gives -inf at its first cell."""
    deviation(dtype)
    x = _edge_input(dtype)
    for fmt in ("channels_first", "channels_last"):
        xf = x if fmt == "channels_first" else np.moveaxis(x, 1, -1)
        samples = _samples(xf, 2, fmt, dtype)
        spec = make_fractional_spec(3, (4, 4), None, True, ndim=2, data_format=fmt)
        want_y, want_idx = oracle.fractional_max_pool(xf, spec, samples)
        assert np.isnan(want_y).any() and np.isneginf(want_y).any()
        y, idx = _call(be, xf, samples, 2, 3, (4, 4), None, fmt, indices=True)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(y.astype(np.float64), want_y)


@pytest.mark.autograd
@pytest.mark.parametrize("dtype", FLOATS)
def test_gradient_of_nan_and_minus_inf_windows_goes_to_the_winner(be, deviation, dtype):
    deviation(dtype)
    x = _edge_input(dtype)
    samples = _samples(x, 2, "channels_first", dtype)
    spec = make_fractional_spec(3, (4, 4), None, ndim=2, data_format="channels_first")
    g = _cotangent(spec.output_shape(x.shape), dtype)
    s = be.from_numpy(samples)
    dx = be.to_numpy(be.vjp(lambda t: pa.fractional_max_pool2d(
        t, 3, (4, 4), None, False, s, data_format="channels_first"), be.from_numpy(x),
        be.from_numpy(g)))
    assert dx.dtype == x.dtype
    np.testing.assert_array_equal(dx.astype(np.float64),
                                  oracle.fractional_vjp(x, spec, samples, g))


def test_samples_in_float32_and_float64_place_windows_as_their_dtype_computes(be):
    # tests/core/test_fractional.py: n=12, k=2, out=4, u=0.1 starts window 2 at 7 in float64,
    # at 6 in float32 (the width here; the height has one window)
    x = np.arange(12.0).reshape(1, 1, 1, 12)
    for dtype, start in (("float64", 7), ("float32", 6)):
        samples = np.array([[[0.1, 0.5]]], dtype=dtype)
        _, idx = _call(be, x, samples, 2, (1, 2), (1, 4), None, "channels_first", indices=True)
        assert idx[0, 0, 0, 2] == start + 1  # the window's larger cell


def test_drawn_samples_give_valid_windows_and_bad_samples_raise(be):
    x = _input((2, 3, 9, 8), "float32")
    y = be.to_numpy(pa.fractional_max_pool2d(be.from_numpy(x), 2, output_ratio=0.5,
                                             data_format="channels_first"))
    assert y.shape == (2, 3, 4, 4)
    windows = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(2, 3))
    assert np.isin(y, windows.max(axis=(-1, -2))).all()  # every value a 2x2 window's max
    for bad, error in ((np.full((2, 3, 2), 1.0), ValueError), (np.zeros((1, 3, 2)), ValueError),
                       (np.zeros((2, 3, 2), dtype=np.int32), TypeError)):
        with pytest.raises(error, match="random_samples"):
            pa.fractional_max_pool2d(be.from_numpy(x), 2, (4, 4), random_samples=be.from_numpy(
                bad), data_format="channels_first")


def _cotangent(shape, dtype: str) -> np.ndarray:
    """Quarters in [-1, 1]: a cell that wins several windows sums them exactly in every dtype,
    so the gradient compares exactly."""
    return (np.random.default_rng(3).integers(-4, 5, shape) / 4).astype(np_dtype(dtype))


@pytest.mark.autograd
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("ndim", "shape", "kernel", "size", "ratio", "fmt"), CASES)
def test_gradient_equals_the_oracle(be, deviation, ndim, shape, kernel, size, ratio, fmt,
                                    dtype):
    deviation(dtype)
    x = _input(shape, dtype, seed=2)
    samples = _samples(x, ndim, fmt, dtype)
    spec = make_fractional_spec(kernel, size, ratio, ndim=ndim, data_format=fmt)
    g = _cotangent(spec.output_shape(x.shape), dtype)
    fn = getattr(pa, f"fractional_max_pool{ndim}d")
    s = be.from_numpy(samples)
    dx = be.to_numpy(be.vjp(lambda t: fn(t, kernel, size, ratio, False, s, data_format=fmt),
                            be.from_numpy(x), be.from_numpy(g)))
    assert dx.dtype == x.dtype
    want = oracle.fractional_vjp(x, spec, samples, g)
    np.testing.assert_array_equal(dx.astype(np.float64), want)


@pytest.mark.parametrize("shape", [(0, 3, 9, 8), (2, 0, 9, 8)], ids=["no-batch", "no-channels"])
def test_empty_batch_or_channels_give_empty_results(be, shape):
    x = np.zeros(shape, np.float32)
    y, idx = pa.fractional_max_pool2d(x, 2, (4, 4), return_indices=True,
                                      data_format="channels_first", backend=be.name)
    assert y.shape == idx.shape == (*shape[:2], 4, 4)
    assert y.dtype == np.float32 and idx.dtype == np.int64
