"""Fractional max pooling on MXNet: ``mx.nd`` and ``mx.np`` arrays in and out, indices that
``max_unpool`` inverts, the gradient recorded in training and predict mode, MXNet's own
``argmax`` not trusted with NaN, samples drawn from MXNet's generator in the input's dtype,
and bfloat16 refused as everywhere on MXNet. tests/conformance/test_fractional.py checks
values, indices and gradients against the oracle in every dtype."""

from __future__ import annotations

import ml_dtypes
import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

import pooladapt as pa
from pooladapt import oracle
from pooladapt.backends.mxnet import BACKEND, fractional, quirks
from pooladapt.spec import make_fractional_spec

RNG = np.random.default_rng(9)
SPEC = make_fractional_spec(2, (4, 5), None, True, ndim=2, data_format="channels_first")


def _input(dtype="float32"):
    return (np.round(RNG.standard_normal((2, 3, 9, 8)) * 4) / 4).astype(dtype)


def test_nd_and_np_arrays_in_and_out_and_unpool_inverts_the_indices():
    x = _input()
    samples = RNG.random((2, 3, 2)).astype(np.float32)
    want_y, want_idx = oracle.fractional_max_pool(x, SPEC, samples)
    for kind, arr in ((nd.NDArray, nd.array), (mx.np.ndarray, mx.np.array)):
        y, idx = pa.fractional_max_pool2d(arr(x), 2, (4, 5), None, True, arr(samples),
                                          data_format="channels_first")
        assert isinstance(y, kind) and isinstance(idx, kind)
        assert idx.dtype == np.int64 and y.dtype == np.float32
        np.testing.assert_array_equal(BACKEND.to_numpy(idx), want_idx)
        np.testing.assert_array_equal(BACKEND.to_numpy(y), want_y)
    y, idx = pa.fractional_max_pool2d(nd.array(x), 2, (4, 5), None, True, nd.array(samples),
                                      data_format="channels_first")
    up = pa.max_unpool2d(y, idx, data_format="channels_first")  # the plane remembered
    assert up.shape == x.shape
    want = np.zeros((2, 3, 72), np.float32)
    np.put_along_axis(want, want_idx.reshape(2, 3, -1), want_y.reshape(2, 3, -1), -1)
    np.testing.assert_array_equal(up.asnumpy(), want.reshape(x.shape))


def test_mxnet_argmax_is_not_trusted_with_nan():
    """What MXNet's own argmax and max give a window of NaN and -inf is not documented; the
    winner is decided from ``x != x`` and a max with NaN masked (the first NaN wins)."""
    window = np.array([[[[-np.inf, 1.0, np.nan, 2.0, np.nan, -np.inf]]]], np.float32)
    y, idx = pa.fractional_max_pool2d(nd.array(window), (1, 3), (1, 4), None, True,
                                      nd.array(np.zeros((1, 1, 2), np.float32)),
                                      data_format="channels_first")
    np.testing.assert_array_equal(idx.asnumpy(), [[[[2, 2, 2, 4]]]])
    assert np.isnan(y.asnumpy()).all()
    minus_inf = np.full((1, 1, 1, 4), -np.inf, np.float32)
    y, idx = pa.fractional_max_pool2d(nd.array(minus_inf), (1, 2), (1, 3), None, True,
                                      nd.array(np.zeros((1, 1, 2), np.float32)),
                                      data_format="channels_first")
    np.testing.assert_array_equal(idx.asnumpy(), [[[[0, 1, 2]]]])  # each window's first cell
    assert np.isneginf(y.asnumpy()).all()


@pytest.mark.parametrize("training", [True, False], ids=["train", "predict"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_gradient_goes_to_the_winner_in_either_mode(dtype, training):
    x = _input(dtype)
    samples = RNG.random((2, 3, 2)).astype(dtype)
    g = (RNG.integers(-4, 5, (2, 3, 4, 5)) / 4).astype(dtype)
    xt = nd.array(x, dtype=dtype)
    xt.attach_grad()
    with mx.autograd.record(train_mode=training):
        y = pa.fractional_max_pool2d(xt, 2, (4, 5), random_samples=nd.array(samples,
                                                                            dtype=dtype),
                                     data_format="channels_first")
    y.backward(nd.array(g, dtype=dtype))
    want = oracle.fractional_vjp(x, SPEC, samples, g)
    np.testing.assert_array_equal(xt.grad.asnumpy().astype(np.float64), want)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int32", "uint8"])
def test_samples_are_drawn_from_mxnets_generator_in_the_inputs_dtype(dtype):
    x = nd.array(np.zeros((3, 4, 9, 8)), dtype=dtype)
    drawn = fractional.draw_samples(x, (3, 4, 2))
    assert drawn.dtype == np.dtype(dtype if dtype.startswith("float") else "float64")
    u = drawn.asnumpy().astype(np.float64)
    assert drawn.shape == (3, 4, 2) and (u >= 0).all() and (u < 1).all()
    assert len(np.unique(u)) > 1
    mx.random.seed(5)
    first = fractional.draw_samples(x, (3, 4, 2)).asnumpy()
    mx.random.seed(5)
    np.testing.assert_array_equal(first, fractional.draw_samples(x, (3, 4, 2)).asnumpy())
    mx.random.seed(5)  # the public call draws the same samples
    y, idx = pa.fractional_max_pool2d(nd.array(_input(), dtype="float32"), 2, (4, 5),
                                      return_indices=True, data_format="channels_first")
    assert idx.shape == (2, 3, 4, 5)


def test_bfloat16_raises_type_error_as_everywhere_on_mxnet():
    x = np.zeros((1, 1, 4, 4), ml_dtypes.bfloat16)
    with pytest.raises(TypeError, match="bfloat16"):
        pa.fractional_max_pool2d(x, 2, (2, 2), backend="mxnet")
    assert "bfloat16" in quirks.BFLOAT16_REASON
