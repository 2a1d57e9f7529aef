"""TensorFlow's own pooling ops against FRAMEWORK-NOTES.md, next to pooladapt's answer.

Each test runs the raw TF op (or Keras-on-TF layer) and asserts the documented native value,
hand-computed from the notes, so a change in TensorFlow is noticed; then it asserts the
canonical value pooladapt gives for the same input.
"""

from __future__ import annotations

from functools import partial

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import pooladapt as pa
from pooladapt.backends.tensorflow import BACKEND, quirks
from pooladapt.indices import from_tf_argmax

LOWEST32 = float(np.finfo(np.float32).min)  # -3.4028235e38


def _row(values, dtype=tf.float32) -> tf.Tensor:
    """A 1-row NHWC image: shape (1, 1, W, 1)."""
    return tf.reshape(tf.constant(values, dtype), (1, 1, -1, 1))


def _flat(t) -> list:
    return np.asarray(t).ravel().tolist()


# ------------------------------------------------------------------ D1: SAME vs padding=k//2


def test_d1_same_pads_the_extra_cell_at_the_end():
    x = _row([1.0, 2.0, 3.0, 4.0])
    assert _flat(tf.nn.max_pool2d(x, (1, 3), (1, 2), "SAME")) == [3.0, 4.0]
    assert _flat(tf.nn.avg_pool2d(x, (1, 3), (1, 2), "SAME")) == [2.0, 3.5]
    # pooladapt "same" is TF's rule; torch's padding=1 is a different, explicit padding
    assert _flat(pa.pool2d(x, "max", (1, 3), (1, 2), "same")) == [3.0, 4.0]
    assert _flat(pa.pool2d(x, "avg", (1, 3), (1, 2), "same")) == [2.0, 3.5]
    assert _flat(pa.pool2d(x, "max", (1, 3), (1, 2), (0, 1))) == [2.0, 4.0]
    assert _flat(pa.pool2d(x, "avg", (1, 3), (1, 2), (0, 1))) == [1.5, 3.0]
    assert _flat(pa.pool2d(x, "avg", (1, 3), (1, 2), (0, 1), count_include_pad=True)) == [
        1.0, 3.0]


def test_d1_explicit_padding_exists_for_max_only():
    x = _row([1.0, 2.0, 3.0, 4.0])
    pads = [[0, 0], [0, 0], [1, 1], [0, 0]]
    assert _flat(tf.nn.max_pool2d(x, (1, 3), (1, 2), pads)) == [2.0, 4.0]
    with pytest.raises((TypeError, ValueError)):
        tf.nn.avg_pool2d(x, (1, 3), (1, 2), pads)


# ------------------------------------------------------------------ D2: zero-padded max


def _d2l_pool(x: tf.Tensor) -> tf.Tensor:
    """The d2l book's TF cell: pad top and left with zeros, then a VALID 3x3/2 max pool."""
    padded = tf.pad(x, [[0, 0], [1, 0], [1, 0], [0, 0]])
    return tf.nn.max_pool2d(padded, 3, 2, "VALID")


def test_d2_zero_padding_agrees_only_on_non_negative_input():
    x = tf.reshape(tf.range(16, dtype=tf.float32), (1, 4, 4, 1))
    assert _flat(_d2l_pool(x)) == [5.0, 7.0, 13.0, 15.0]
    assert _flat(pa.pool2d(x, "max", 3, 2, ((1, 0), (1, 0)))) == [5.0, 7.0, 13.0, 15.0]
    negative = -(x + 1)
    assert _flat(_d2l_pool(negative)) == [0.0, 0.0, 0.0, -6.0]
    assert _flat(pa.pool2d(negative, "max", 3, 2, ((1, 0), (1, 0)))) == [-1.0, -2.0, -5.0, -6.0]


def test_d2_native_same_and_explicit_padding_pad_max_with_minus_infinity():
    x = -tf.reshape(tf.range(1, 10, dtype=tf.float32), (1, 3, 3, 1))  # all negative
    assert _flat(tf.nn.max_pool2d(x, 3, 1, "SAME"))[0] == -1.0
    assert _flat(tf.nn.max_pool2d(x, 3, 1, [[0, 0], [1, 1], [1, 1], [0, 0]]))[0] == -1.0
    assert _flat(tf.nn.max_pool2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 1,
                                  "VALID"))[0] == 0.0
    assert _flat(pa.pool2d(x, "max", 3, 1, 1))[0] == -1.0


# ------------------------------------------------------------------ D3: count_include_pad


def test_d3_tf_and_keras_always_exclude_padding():
    import keras

    ones = tf.ones((1, 3, 3, 1))
    assert _flat(tf.nn.avg_pool2d(ones, 3, 1, "SAME")) == [1.0] * 9
    keras_out = keras.layers.AveragePooling2D(3, 1, "same")(ones)
    assert _flat(keras_out) == [1.0] * 9
    # pooladapt: excluded by default too; count_include_pad=True gives torch's default
    assert _flat(pa.pool2d(ones, "avg", 3, 1, 1)) == [1.0] * 9
    first_row = _flat(pa.pool2d(ones, "avg", 3, 1, 1, count_include_pad=True))[:3]
    np.testing.assert_allclose(first_row, [4 / 9, 6 / 9, 4 / 9], rtol=1e-6)


def test_d3_asymmetric_same_padding():
    import keras

    x = _row([1.0, 2.0, 3.0, 4.0])
    assert _flat(tf.nn.avg_pool2d(x, (1, 3), (1, 2), "SAME")) == [2.0, 3.5]
    assert _flat(keras.layers.AveragePooling2D((1, 3), (1, 2), "same")(x)) == [2.0, 3.5]
    assert _flat(pa.pool2d(x, "avg", (1, 3), (1, 2), "same")) == [2.0, 3.5]
    # Flax's default and timm's zero-padding: the padded cell counted
    np.testing.assert_allclose(
        _flat(pa.pool2d(x, "avg", (1, 3), (1, 2), "same", count_include_pad=True)),
        [2.0, 7 / 3], rtol=1e-6)


# ------------------------------------------------------------------ D5: NaN in max pooling


@pytest.mark.parametrize("row, native_want, canonical_want", [
    ([np.nan, 1, 2, 3], [1.0, 3.0], [np.nan, 3.0]),
    ([1, np.nan, 2, 3], [1.0, 3.0], [np.nan, 3.0]),
    ([np.nan, np.nan, 2, 3], [LOWEST32, 3.0], [np.nan, 3.0]),
])
def test_d5_max_pool_suppresses_nan(row, native_want, canonical_want):
    import keras

    x = _row(row)
    np.testing.assert_array_equal(_flat(tf.nn.max_pool2d(x, (1, 2), (1, 2), "VALID")),
                                  native_want)
    np.testing.assert_array_equal(_flat(keras.layers.MaxPooling2D((1, 2))(x)), native_want)
    assert np.isnan(_flat(tf.reduce_max(x[..., :2, :])))  # reduce_max propagates: the outlier
    np.testing.assert_array_equal(_flat(pa.pool2d(x, "max", (1, 2))), canonical_want)


def test_d5_all_nan_window_under_xla_gives_minus_infinity():
    x = _row([np.nan, np.nan])
    jitted = tf.function(lambda t: tf.nn.max_pool2d(t, (1, 2), (1, 2), "VALID"),
                         jit_compile=True)
    assert _flat(jitted(x)) == [-np.inf]
    canonical = tf.function(lambda t: pa.pool2d(t, "max", (1, 2)), jit_compile=True)
    assert np.isnan(_flat(canonical(x))).all()


def test_d5_reduce_max_propagates_nan_eagerly_but_not_under_xla():
    """Not in the notes: XLA's reduce_max drops NaN, so it cannot detect one."""
    x = tf.constant([1.0, np.nan, 2.0])
    assert np.isnan(tf.reduce_max(x).numpy())
    assert tf.function(tf.reduce_max, jit_compile=True)(x).numpy() == 2.0


def test_d5_argmax_nan_handling_depends_on_position():
    values, _ = tf.nn.max_pool_with_argmax(_row([np.nan, 1.0, 1.0, np.nan]), (1, 2), (1, 2),
                                           "VALID")
    got = _flat(values)
    assert np.isnan(got[0]) and got[1] == 1.0
    y, idx = pa.pool2d(_row([np.nan, 1.0, 1.0, np.nan]), "max", (1, 2), return_indices=True)
    assert np.isnan(_flat(y)).all() and _flat(idx) == [0, 3]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_subnormals_read_as_zero_where_tf_flushes_them(dtype):
    """Not in the notes: on x86 TF's CPU kernels (XLA too) read subnormals as zero; float16
    runs in float32, where its subnormals are normal. Detected here, not assumed: the
    backend lists the known deviation for a dtype exactly where TF flushes, and its max then
    gives what MaxPool gives."""
    dt = tf.as_dtype(dtype)
    tiny = float(ml_dtypes.finfo(dt.as_numpy_dtype).smallest_subnormal)
    flushed = float(tf.constant(tiny, dt) + tf.zeros([], dt)) == 0.0
    assert (f"subnormals:{dtype}" in BACKEND.known_deviations) is flushed
    x = _row([tiny, 3 * tiny, 2 * tiny, 0.0], dt)
    native = _flat(tf.nn.max_pool2d(x, (1, 2), (1, 2), "VALID"))
    if flushed:
        # every cell reads as 0, so each window ties: the kernel gives one of its cells or
        # the 0 it read (oneDNN's float32 MaxPool here keeps the first cell, Eigen gives 0)
        assert native[0] in (tiny, 3 * tiny, 0.0) and native[1] in (2 * tiny, 0.0)
        assert _flat(pa.pool2d(x, "max", (1, 2))) == native
    else:
        assert native == [3 * tiny, 2 * tiny]
        assert _flat(pa.pool2d(x, "max", (1, 2))) == [3 * tiny, 2 * tiny]
        assert _flat(pa.pool2d(x, "avg", (1, 2))) == [2 * tiny, tiny]


# ------------------------------------------------------------------ D7: integer dtypes


def test_d7_tf_average_rejects_integers_and_max_accepts_them():
    x = tf.reshape(tf.range(-8, 8, dtype=tf.int32), (1, 4, 4, 1))
    assert _flat(tf.nn.max_pool2d(x, 2, 2, "VALID")) == [-3, -1, 5, 7]
    with pytest.raises((tf.errors.InvalidArgumentError, tf.errors.NotFoundError, TypeError)):
        tf.nn.avg_pool2d(x, 2, 2, "VALID")
    y = pa.pool2d(x, "max", 2, padding=1)
    assert y.dtype == tf.int32 and _flat(y)[0] == -8  # padding is the int32 minimum, not 0
    with pytest.raises(TypeError, match="cast"):
        pa.pool2d(x, "avg", 2)


# ------------------------------------------------------------------ D8: NCHW on CPU


def test_d8_nchw_pooling_on_cpu_needs_onednn_and_has_no_gradient():
    x = tf.reshape(tf.range(16, dtype=tf.float32), (1, 1, 4, 4))  # NCHW
    with tf.GradientTape() as tape:
        tape.watch(x)
        try:  # the forward pass needs oneDNN (on by default on x86 CPUs with AVX-512 VNNI)
            y = tf.nn.max_pool2d(x, 2, 2, "VALID", data_format="NCHW")
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            y = None
    # the backend reads whether the kernel exists from TF's build and kernel registry,
    # without running it (a refused kernel logs an error): it lists the route exactly here
    assert ("tensorflow.nchw_kernel" in BACKEND.speed_routes) is (y is not None)
    if y is not None:
        assert _flat(y) == [5.0, 7.0, 13.0, 15.0]
        with pytest.raises((tf.errors.InvalidArgumentError, tf.errors.UnimplementedError),
                           match="NHWC"):
            tape.gradient(y, x)
    # pooladapt: channels_first forward and gradient, computed in NHWC internally
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = pa.pool2d(x, "max", 2, data_format="channels_first")
    assert _flat(y) == [5.0, 7.0, 13.0, 15.0]
    want = np.zeros(16)
    want[[5, 7, 13, 15]] = 1
    assert _flat(tape.gradient(y, x)) == want.tolist()


def test_d8_nchw_gradient_runs_on_onednn_except_an_eager_max():
    # TF's own gradient of an NCHW pool: oneDNN's AvgPoolGrad eagerly and in graphs, its
    # MaxPoolGrad in a graph only (the eager MaxPoolGrad is TF's NHWC-only kernel); the
    # backend reads it from the registry (quirks.nchw_gradient_kernel) and uses it there
    x = tf.constant(np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4) % 7)  # ties
    want = {}
    for kind in ("MAX", "AVG"):  # NHWC reference gradients
        with tf.GradientTape() as tape:
            xl = tf.transpose(x, [0, 2, 3, 1])
            tape.watch(xl)
            pool = tf.nn.max_pool2d if kind == "MAX" else tf.nn.avg_pool2d
            y = pool(xl, 3, 2, "SAME")
        want[kind] = tf.transpose(tape.gradient(y, xl), [0, 3, 1, 2]).numpy()

    def grad(kind):
        with tf.GradientTape() as tape:
            tape.watch(x)
            pool = tf.nn.max_pool2d if kind == "MAX" else tf.nn.avg_pool2d
            y = pool(x, 3, 2, "SAME", data_format="NCHW")
        return tape.gradient(y, x)

    def runs(fn, kind: str) -> bool:
        try:
            got = fn().numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False
        np.testing.assert_array_equal(got, want[kind])
        return True

    for kind in ("MAX", "AVG"):
        eager = runs(partial(grad, kind), kind)
        graph = runs(tf.function(partial(grad, kind)), kind)
        assert eager is quirks.nchw_gradient_kernel(kind), (kind, "eager")
        listed = tf.function(lambda k: tf.constant(quirks.nchw_gradient_kernel(k)))
        assert graph is bool(listed(kind)), (kind, "graph")
    assert not quirks.nchw_gradient_kernel("MAX")  # eagerly


# ------------------------------------------------------------------ D9: index formats


def test_d9_argmax_indices_are_flat_over_hwc():
    x = np.zeros((2, 2, 2, 2), np.float32)  # NHWC, every plane's max at (h=1, w=0)
    x[:, 1, 0, :] = 1.0
    _, argmax = tf.nn.max_pool_with_argmax(x, 2, 2, "VALID")
    assert _flat(argmax) == [4, 5, 4, 5]
    _, with_batch = tf.nn.max_pool_with_argmax(x, 2, 2, "VALID", include_batch_in_index=True)
    assert _flat(with_batch) == [4, 5, 12, 13]
    _, idx = pa.pool2d(tf.constant(x), "max", 2, return_indices=True)
    assert _flat(idx) == [2, 2, 2, 2]
    assert _flat(from_tf_argmax(argmax.numpy(), x.shape)) == [2, 2, 2, 2]


def test_d9_argmax_rejects_nchw():
    x = tf.zeros((1, 1, 2, 2))
    with pytest.raises((tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                        ValueError)):
        tf.nn.max_pool_with_argmax(x, 2, 2, "VALID", data_format="NCHW")
    _, idx = pa.pool2d(x, "max", 2, return_indices=True, data_format="channels_first")
    assert _flat(idx) == [0]


# ------------------------------------------------------------------ D10: gradients at ties


@pytest.mark.parametrize("row, stride, want", [
    ([1.0, 1.0, 1.0, 1.0], 2, [1.0, 0.0, 1.0, 0.0]),
    ([1.0, 3.0, 3.0, 2.0], 2, [0.0, 1.0, 1.0, 0.0]),
    ([1.0, 2.0, 2.0, 1.0], 1, [0.0, 2.0, 1.0, 0.0]),
])
def test_d10_max_pool_2d_gradient_goes_to_the_first_maximum(row, stride, want):
    x = _row(row)
    for fn in (lambda t: tf.nn.max_pool2d(t, (1, 2), (1, stride), "VALID"),
               lambda t: pa.pool2d(t, "max", (1, 2), (1, stride))):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        assert _flat(tape.gradient(y, x)) == want


def test_d10_max_pool_3d_gradient_goes_to_every_tied_maximum():
    """Not in the notes: MaxPool3D's gradient is not first-maximum."""
    x = tf.ones((1, 2, 2, 2, 1))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        native = tf.nn.max_pool3d(x, 2, 2, "VALID")
        canonical = pa.pool3d(x, "max", 2)
    assert _flat(tape.gradient(native, x)) == [1.0] * 8
    assert _flat(tape.gradient(canonical, x)) == [1.0] + [0.0] * 7


def test_d10_xla_same_max_pool_gradient_misplaces_a_tie():
    """Not in the notes: under XLA, MaxPool with SAME padding (pads (0, 1) here) sends the
    gradient of window (0, 0) to its tied cell (1, 1), not to the first maximum (0, 2)."""
    x = tf.constant([[0, 0, 1, 0], [0, 1, 0, 1], [0, 1, 1, 0], [0, 1, 1, 1]], tf.float32)
    x = tf.reshape(x, (1, 4, 4, 1))

    def grad(fn):
        def run(t):
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = fn(t)
            return tape.gradient(y, t)
        return tf.function(run, jit_compile=True)(x).numpy()[0, ..., 0].tolist()

    first_max = [[0, 0, 2, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert grad(lambda t: tf.nn.max_pool2d(t, 3, 2, "SAME")) == [
        [0, 0, 1, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert grad(lambda t: pa.pool2d(t, "max", 3, 2, "same")) == first_max
