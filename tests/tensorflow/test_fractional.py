"""Fractional max pooling on TensorFlow inside ``tf.function`` and XLA (``jit_compile``): the
window rule in every float dtype (XLA keeps float16/bfloat16's rounding of each operation),
NaN, -inf, integers and the gradient as the oracle has them, and the samples drawn from TF's
random ops in the input's dtype. tests/conformance/test_fractional.py checks eager calls.

Given samples are checked by the public call eagerly; in a graph (the backend says it is
tracing) their values are not read, and a graph's unknown batch draws its samples at run
time."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import pooladapt as pa
from pooladapt import oracle
from pooladapt.backends.tensorflow import fractional
from pooladapt.conformance import INT_DTYPES
from pooladapt.spec import make_fractional_spec


def _pool(ndim, kernel, out, fmt, indices=True):
    """The backend's pooling with given samples, as the public call runs it (which eagerly
    also checks the samples' values)."""
    spec = make_fractional_spec(kernel, out, None, indices, ndim=ndim, data_format=fmt)
    return lambda t, s: fractional.fractional_max_pool(t, spec.plan(tuple(t.shape)), s)

FLOATS = ["float16", "bfloat16", "float32", "float64"]
MODES = ["eager", "function", "xla"]


def _compiled(fn, mode: str):
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=mode == "xla")


def _np_dtype(name: str):
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


GEOMETRIES = [  # (spatial size, kernel, output size): alpha far from round in every dtype
    ((13, 11), (2, 3), (7, 4)),
    ((16, 9), (1, 2), (9, 6)),
    ((30, 7), (3, 1), (11, 7)),
    ((8, 7, 9), (2, 1, 3), (5, 4, 3)),
    ((9, 5, 6), (1, 2, 2), (6, 3, 5)),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_xla_places_windows_as_the_oracle(dtype, mode):
    """An increasing plane's windows show in the indices (each window's maximum is its last
    cell): 256 samples per geometry, computed in the samples' dtype, give the windows of the
    NumPy backend (the oracle's: tests/conformance/test_fractional.py) eagerly, in a
    tf.function and under XLA, channels-first and channels-last."""
    rng = np.random.default_rng(7)
    for size, kernel, out in GEOMETRIES:
        ndim = len(size)
        x = np.broadcast_to(np.arange(np.prod(size), dtype=np.float64).reshape(size),
                            (8, 32, *size)).astype(_np_dtype(dtype))
        samples = (rng.random((8, 32, ndim)) * 0.99).astype(_np_dtype(dtype))  # below 1
        for fmt in ("channels_first", "channels_last"):
            xf = x if fmt == "channels_first" else np.moveaxis(x, 1, -1)
            y, idx = _compiled(_pool(ndim, kernel, out, fmt), mode)(tf.constant(xf),
                                                                    tf.constant(samples))
            want_y, want_idx = getattr(pa, f"fractional_max_pool{ndim}d")(
                xf, kernel, out, None, True, samples, data_format=fmt, backend="numpy")
            np.testing.assert_array_equal(idx.numpy(), want_idx, err_msg=f"{size} {fmt}")
            np.testing.assert_array_equal(y.numpy(), want_y)


def _edge_input(dtype: str) -> np.ndarray:
    x = (np.round(np.random.default_rng(2).standard_normal((2, 3, 9, 8)) * 4) / 4)
    x[0, 0, :4, :4] = np.nan
    x[1, 1, 5, 2] = np.nan
    x[0, 1, :5, :5] = -np.inf
    x[0, 1, 1, 1] = np.nan
    x[1, 2, 4:, 4:] = -np.inf
    return x.astype(_np_dtype(dtype))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_nan_minus_inf_and_gradient_as_the_oracle_in_graphs(dtype, mode):
    """XLA's max drops NaN; the winner compares order keys, so the first NaN of a window
    wins, and the gradient (taken inside the compiled function) goes to the winner only."""
    x = _edge_input(dtype)
    samples = np.random.default_rng(4).random((2, 3, 2)).astype(_np_dtype(dtype))
    g = (np.random.default_rng(5).integers(-4, 5, (2, 3, 5, 4)) / 4).astype(x.dtype)

    def run(t, s, cot):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y, idx = _pool(2, 3, (5, 4), "channels_first")(t, s)
        return y, idx, tape.gradient(y, t, output_gradients=cot)

    y, idx, dx = _compiled(run, mode)(tf.constant(x), tf.constant(samples), tf.constant(g))
    spec = make_fractional_spec(3, (5, 4), None, True, ndim=2, data_format="channels_first")
    want_y, want_idx = oracle.fractional_max_pool(x, spec, samples)
    assert np.isnan(want_y).any() and np.isneginf(want_y).any()
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    np.testing.assert_array_equal(y.numpy().astype(np.float64), want_y)
    assert dx.dtype.name == dtype
    np.testing.assert_array_equal(dx.numpy().astype(np.float64),
                                  oracle.fractional_vjp(x, spec, samples, g))


@pytest.mark.parametrize("mode", ["function", "xla"])
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_integers_pool_exactly_in_graphs(dtype, mode):
    info = np.iinfo(dtype)
    x = np.random.default_rng(3).integers(info.min, info.max, (2, 4, 6, 5, 7), dtype=dtype,
                                          endpoint=True)
    x[0, 0] = info.min  # a window of the lowest value: its first cell
    samples = np.random.default_rng(8).random((2, 7, 3))
    y, idx = _compiled(_pool(3, 2, (3, 4, 3), "channels_last"), mode)(
        tf.constant(x), tf.constant(samples))
    spec = make_fractional_spec(2, (3, 4, 3), None, True, ndim=3, data_format="channels_last")
    want_y, want_idx = oracle.fractional_max_pool(x, spec, samples)
    assert y.dtype.name == dtype
    np.testing.assert_array_equal(y.numpy(), want_y)
    np.testing.assert_array_equal(idx.numpy(), want_idx)


@pytest.mark.parametrize("dtype", [*FLOATS, "int32"])
def test_samples_are_drawn_from_tf_random_in_the_inputs_dtype(dtype):
    x = tf.zeros((3, 4, 9, 8), dtype)
    drawn = fractional.draw_samples(x, (3, 4, 2))
    assert drawn.dtype.name == (dtype if dtype in FLOATS else "float64")
    assert drawn.shape == (3, 4, 2)
    u = drawn.numpy().astype(np.float64)
    assert (u >= 0).all() and (u < 1).all() and len(np.unique(u)) > 1
    tf.random.set_seed(11)
    first = fractional.draw_samples(x, (3, 4, 2))
    tf.random.set_seed(11)
    np.testing.assert_array_equal(first.numpy(), fractional.draw_samples(x, (3, 4, 2)).numpy())


@pytest.mark.parametrize("mode", MODES)
def test_drawn_samples_give_valid_windows_in_graphs(mode):
    x = np.random.default_rng(6).standard_normal((2, 9, 8, 3)).astype(np.float32)
    fn = _compiled(lambda t: pa.fractional_max_pool2d(t, 2, output_ratio=0.5,
                                                      return_indices=True), mode)
    y, idx = fn(tf.constant(x))
    assert y.shape == idx.shape == (2, 4, 4, 3)
    windows = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(1, 2))
    assert np.isin(y.numpy(), windows.max(axis=(-1, -2))).all()  # each a 2x2 window's max
    planes = np.moveaxis(x, -1, 1).reshape(2, 3, -1)
    got = np.take_along_axis(planes, np.moveaxis(idx.numpy(), -1, 1).reshape(2, 3, -1), -1)
    np.testing.assert_array_equal(got, np.moveaxis(y.numpy(), -1, 1).reshape(2, 3, -1))


@pytest.mark.parametrize("mode", ["function", "xla"])
def test_given_samples_through_the_public_call_in_graphs(mode):
    x = np.random.default_rng(6).standard_normal((2, 3, 9, 8)).astype(np.float32)
    samples = np.random.default_rng(7).random((2, 3, 2)).astype(np.float32)
    y = _compiled(lambda t, s: pa.fractional_max_pool2d(t, 2, (4, 4), random_samples=s,
                                                        data_format="channels_first"), mode)(
        tf.constant(x), tf.constant(samples))
    spec = make_fractional_spec(2, (4, 4), None, ndim=2, data_format="channels_first")
    np.testing.assert_array_equal(y.numpy(), oracle.fractional_max_pool(x, spec, samples))


@pytest.mark.parametrize("mode", ["function", "xla"])
def test_unknown_batch_in_a_graph_draws_samples_at_run_time(mode):
    fn = tf.function(lambda t: pa.fractional_max_pool2d(t, 2, (4, 4), return_indices=True),
                     input_signature=[tf.TensorSpec([None, 9, 8, 3], tf.float32)],
                     jit_compile=mode == "xla")
    x = np.random.default_rng(8).standard_normal((5, 9, 8, 3)).astype(np.float32)
    y, idx = fn(tf.constant(x))
    assert y.shape == idx.shape == (5, 4, 4, 3)
    planes = np.moveaxis(x, -1, 1).reshape(5, 3, -1)
    got = np.take_along_axis(planes, np.moveaxis(idx.numpy(), -1, 1).reshape(5, 3, -1), -1)
    np.testing.assert_array_equal(got, np.moveaxis(y.numpy(), -1, 1).reshape(5, 3, -1))
    windows = np.lib.stride_tricks.sliding_window_view(x, (2, 2), axis=(1, 2))
    assert np.isin(y.numpy(), windows.max(axis=(-1, -2))).all()  # each a 2x2 window's max
