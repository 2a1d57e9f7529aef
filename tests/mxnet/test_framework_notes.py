"""MXNet's own pooling ops against FRAMEWORK-NOTES.md, next to pooladapt's canonical answer.

Each test runs the raw MXNet op and asserts the documented native value (hand-computed from
the notes), so a change in MXNet is noticed, then asserts what pooladapt gives instead.
"""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd

import pooladapt as pa
from pooladapt import oracle
from pooladapt.backends.mxnet import quirks
from pooladapt.layers import mxnet as layers
from pooladapt.spec import make_spec

LOWEST32 = float(np.finfo(np.float32).min)  # -3.4028235e38


def _row(values, dtype="float32"):
    return nd.array(np.array(values, dtype=dtype).reshape(1, 1, -1), dtype=dtype)


def test_d3_count_include_pad_defaults_to_true_in_mxnet():
    ones = nd.ones((1, 1, 3, 3))
    native = nd.Pooling(ones, kernel=(3, 3), stride=(1, 1), pad=(1, 1), pool_type="avg")
    gluon_out = gluon.nn.AvgPool2D(3, 1, 1)(ones)
    first_row = [4 / 9, 6 / 9, 4 / 9]
    np.testing.assert_allclose(native.asnumpy()[0, 0, 0], first_row, rtol=1e-6)
    np.testing.assert_allclose(gluon_out.asnumpy()[0, 0, 0], first_row, rtol=1e-6)
    # pooladapt: padding excluded by default (ONNX); the Gluon layer keeps Gluon's default
    canonical = pa.pool2d(ones, "avg", 3, 1, 1, data_format="channels_first")
    np.testing.assert_array_equal(canonical.asnumpy(), np.ones((1, 1, 3, 3)))
    np.testing.assert_allclose(layers.AvgPool2D(3, 1, 1)(ones).asnumpy()[0, 0, 0], first_row,
                               rtol=1e-6)


def test_d3_asymmetric_same_padding_is_excluded_from_the_divisor():
    x = nd.array([[[[1.0, 2.0, 3.0, 4.0]]]])
    y = pa.pool2d(x, "avg", (1, 3), (1, 2), "same", data_format="channels_first")
    np.testing.assert_allclose(y.asnumpy().ravel(), [2.0, 3.5])


def test_d4_full_convention_keeps_a_window_of_padding_only():
    x = _row([1, 2, 3, 4, 5])
    kw = dict(kernel=(2,), stride=(2,), pad=(1,), pooling_convention="full")
    native_max = nd.Pooling(x, pool_type="max", **kw).asnumpy().ravel()
    native_avg = nd.Pooling(x, pool_type="avg", **kw).asnumpy().ravel()
    assert native_max.tolist() == [1.0, 3.0, 5.0, LOWEST32]
    assert native_avg.tolist() == [0.5, 2.5, 4.5, 0.0]
    gluon_max = gluon.nn.MaxPool1D(2, 2, 1, ceil_mode=True)(x).asnumpy().ravel()
    assert gluon_max.tolist() == [1.0, 3.0, 5.0, LOWEST32]
    # pooladapt: the window that starts in the right padding is dropped (ONNX/PyTorch)
    y = pa.pool1d(x, "max", 2, 2, 1, ceil_mode=True, data_format="channels_first")
    assert y.asnumpy().ravel().tolist() == [1.0, 3.0, 5.0]
    y = pa.pool1d(x, "avg", 2, 2, 1, ceil_mode=True, count_include_pad=True,
                  data_format="channels_first")
    assert y.asnumpy().ravel().tolist() == [0.5, 2.5, 4.5]
    assert layers.MaxPool1D(2, 2, 1, ceil_mode=True)(x).asnumpy().ravel().tolist() == [1, 3, 5]


def test_d4_partial_window_divisor_with_ceil_and_count_include_pad():
    x = nd.array(np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4))
    native = nd.Pooling(x, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="avg",
                        pooling_convention="full", count_include_pad=True)
    y = pa.pool2d(x, "avg", 3, 2, 1, ceil_mode=True, count_include_pad=True,
                  data_format="channels_first")
    # torch and the ONNX reference: [1.556, 3.333, 2.0] on the first row (9 + 8 + 6 cells)
    want = [(1 + 2 + 5 + 6) / 9, (2 + 3 + 4 + 6 + 7 + 8) / 9, (4 + 8) / 6]
    np.testing.assert_allclose(native.asnumpy()[0, 0, 0], want, rtol=1e-6)
    np.testing.assert_allclose(y.asnumpy()[0, 0, 0], want, rtol=1e-6)


@pytest.mark.parametrize("row, native_want, canonical_want", [
    ([np.nan, 1, 2, 3], [1.0, 3.0], [np.nan, 3.0]),
    ([1, np.nan, 2, 3], [1.0, 3.0], [np.nan, 3.0]),
    ([np.nan, np.nan, 2, 3], [LOWEST32, 3.0], [np.nan, 3.0]),
])
def test_d5_max_pooling_suppresses_nan(row, native_want, canonical_want):
    x = _row(row)
    native = nd.Pooling(x, kernel=(2,), stride=(2,), pool_type="max").asnumpy().ravel()
    np.testing.assert_array_equal(native, native_want)
    gluon_out = gluon.nn.MaxPool1D(2)(x).asnumpy().ravel()
    np.testing.assert_array_equal(gluon_out, native_want)
    y = pa.pool1d(x, "max", 2, data_format="channels_first").asnumpy().ravel()
    np.testing.assert_array_equal(y, canonical_want)
    np.testing.assert_array_equal(layers.MaxPool1D(2)(x).asnumpy().ravel(), canonical_want)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_all_minus_inf_window_gives_the_lowest_finite_value(dtype):
    # not in the notes' table: MXNet's max starts from the dtype's lowest finite value
    x = _row([-np.inf, -np.inf, 2, 3], dtype)
    native = nd.Pooling(x, kernel=(2,), stride=(2,), pool_type="max").asnumpy().ravel()
    assert native.tolist() == [float(np.finfo(dtype).min), 3.0]
    y = pa.pool1d(x, "max", 2, data_format="channels_first").asnumpy().ravel()
    assert y.tolist() == [-np.inf, 3.0]


def test_d10_max_gradient_goes_to_the_first_maximum():
    def grad(fn, values, shape):
        x = nd.array(np.array(values, dtype=np.float64).reshape(shape), dtype="float64")
        x.attach_grad()
        with mx.autograd.record():
            y = fn(x)
        y.backward(nd.ones_like(y))
        return x.grad.asnumpy().ravel().tolist()

    for fn in (lambda t: nd.Pooling(t, kernel=(2, 2), pool_type="max"),
               lambda t: pa.pool2d(t, "max", 2, data_format="channels_first")):
        assert grad(fn, [1, 1, 1, 1], (1, 1, 2, 2)) == [1, 0, 0, 0]
        assert grad(fn, [1, 3, 3, 2], (1, 1, 2, 2)) == [0, 1, 0, 0]
    for fn in (lambda t: nd.Pooling(t, kernel=(2,), stride=(1,), pool_type="max"),
               lambda t: pa.pool1d(t, "max", 2, 1, data_format="channels_first")):
        assert grad(fn, [1, 2, 2, 1], (1, 1, 4)) == [0, 2, 1, 0]


def test_d11_lp_keeps_the_sign():
    x = _row([-1, -2, -3, -4])
    native = nd.Pooling(x, kernel=(4,), pool_type="lp", p_value=1).asnumpy().ravel()
    assert native.tolist() == [-10.0]
    y = pa.pool1d(x, "lp", 4, p=1, data_format="channels_first").asnumpy().ravel()
    assert y.tolist() == [10.0]


def test_integers_and_dilation_are_not_native():
    with pytest.raises(mx.base.MXNetError, match="floating point"):
        nd.Pooling(nd.ones((1, 1, 4), dtype="int32"), kernel=(2,), pool_type="max").asnumpy()
    with pytest.raises(mx.base.MXNetError, match="dilate"):
        nd.Pooling(nd.ones((1, 1, 4)), kernel=(2,), pool_type="max", dilate=(2,))
    x = nd.array([[[1, 7, 3, 5, 2]]], dtype="int32")
    y = pa.pool1d(x, "max", 2, 1, dilation=2, data_format="channels_first")
    assert y.dtype == np.int32 and y.asnumpy().ravel().tolist() == [3, 7, 3]


def test_lp_supports_only_p_1_2_3_natively():
    with pytest.raises(mx.base.MXNetError):
        nd.Pooling(_row([1, 2]), kernel=(2,), pool_type="lp", p_value=4).asnumpy()
    y = pa.pool1d(_row([1, 2]), "lp", 2, p=4, data_format="channels_first")
    np.testing.assert_allclose(y.asnumpy().ravel(), [17 ** 0.25], rtol=1e-6)


def test_adaptive_avg_pooling_is_2d_channels_first():
    """``contrib.AdaptiveAvgPooling2D`` takes PyTorch's bins on the last two axes of an NCHW
    input only (a 3-D input raises); pooladapt pools any rank and layout with it."""
    x = np.arange(1, 9, dtype=np.float32)
    native = nd.contrib.AdaptiveAvgPooling2D(nd.array(x.reshape(1, 1, 1, 8)), output_size=(1, 3))
    assert native.asnumpy().ravel().tolist() == [2.0, 4.5, 7.0]  # bins [0, 3), [2, 6), [5, 8)
    with pytest.raises(mx.base.MXNetError):
        nd.contrib.AdaptiveAvgPooling2D(nd.array(x.reshape(1, 1, 8)), output_size=(1, 3))
    y = pa.adaptive_pool1d(nd.array(x.reshape(1, 8, 1)), "avg", 3, data_format="channels_last")
    assert y.asnumpy().ravel().tolist() == [2.0, 4.5, 7.0]


# ------------------------------------------------------------------ oneDNN, detected here
# MXNet runs float32 channels-first pooling on oneDNN where its build has it and
# MXNET_MKLDNN_ENABLED is not 0, else on its own kernels; what each native op gives is
# derived from that detection (the probe below), never assumed.

PROBE = np.array([85, 63, 51, 26, 30, 4, 7, 1, 17], np.float32)  # sum 284, exact in any order


def test_avg_kernels_divide_or_sum_quotients():
    """oneDNN divides the window sum by the count; MXNet's own kernel sums x / count cell by
    cell, an ulp off here. Channels last always runs MXNet's own kernel."""
    divided = float(np.float32(284) / np.float32(9))
    first = nd.Pooling(nd.array(PROBE.reshape(1, 1, 3, 3)), kernel=(3, 3), pool_type="avg")
    last = nd.Pooling(nd.array(PROBE.reshape(1, 3, 3, 1)), kernel=(3, 3), pool_type="avg",
                      layout="NHWC")
    assert last.asnumpy().item() != divided
    assert (first.asnumpy().item() == divided) is quirks.onednn_pools()
    for fmt, x in (("NCHW", PROBE.reshape(1, 1, 3, 3)), ("NHWC", PROBE.reshape(1, 3, 3, 1))):
        y = pa.pool2d(nd.array(x), "avg", 3, data_format=fmt)
        assert y.asnumpy().item() == divided


def _max_grad(x_np, w_np, pool, *, view=False, train_mode=True):
    base = nd.array(x_np.reshape(2, -1, *x_np.shape[2:]) if view else x_np)
    base.attach_grad()
    with mx.autograd.record(train_mode=train_mode):
        y = pool(base.reshape(x_np.shape) if view else base)
        loss = (y * nd.array(w_np)).sum()
    loss.backward()
    return base.grad.asnumpy().reshape(x_np.shape)


@pytest.mark.parametrize("how", ["a view", "train_mode=False"])
def test_onednn_max_gradient_needs_a_training_forward_of_a_plain_array(how):
    """oneDNN's max backward reads the argmax its forward stored: a view's forward runs
    MXNet's own kernel and stores none, and so does a forward outside training mode; the
    gradient goes to wrong cells (with MXNet's own kernels both ways it is right). pooladapt
    is exact either way."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 16, 9, 9)).astype(np.float32)
    spec = make_spec("max", 3, 2, 1, data_format="channels_first", ndim=2)
    w = rng.integers(-8, 9, size=spec.output_shape(x.shape)) / 4.0
    want = oracle.pool_vjp(x.astype(np.float64), spec, w)
    kw = dict(view=how == "a view", train_mode=how != "train_mode=False")
    native = _max_grad(x, w, lambda t: nd.Pooling(t, kernel=(3, 3), stride=(2, 2), pad=(1, 1),
                                                  pool_type="max"), **kw)
    assert (not np.array_equal(native, want)) is quirks.onednn_pools()
    ours = _max_grad(x, w, lambda t: pa.pool2d(t, "max", 3, 2, 1, data_format="NCHW"), **kw)
    np.testing.assert_array_equal(ours, want)


def test_a_hybridized_parent_outside_training_mode_loses_the_argmax():
    """A hybridized parent's graph runs as a whole in the recording's mode: outside training
    mode oneDNN's forward stores no argmax, for Gluon's MaxPool2D and for pooladapt's layer
    alike (the layers module docstring names this limit); right with MXNet's own kernels."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 16, 9, 9)).astype(np.float32)
    spec = make_spec("max", 3, 2, 1, data_format="channels_first", ndim=2)
    w = rng.integers(-8, 9, size=spec.output_shape(x.shape)) / 4.0
    want = oracle.pool_vjp(x.astype(np.float64), spec, w)
    for block in (gluon.nn.MaxPool2D(3, 2, 1), layers.MaxPool2D(3, 2, 1)):
        parent = gluon.nn.HybridSequential()
        parent.add(block)
        parent.hybridize()
        got = _max_grad(x, w, parent, train_mode=False)
        assert (not np.array_equal(got, want)) is quirks.onednn_pools(), type(block)
