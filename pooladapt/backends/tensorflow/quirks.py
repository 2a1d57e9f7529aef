"""TensorFlow behaviours the translation works around, one small function each.

Each docstring names the behaviour (FRAMEWORK-NOTES.md's entry, or what was measured with
TensorFlow 2.21 on x86 CPUs) and the test that pins it. ``tests/tensorflow/test_framework_notes.py``
runs the raw TF op next to pooladapt's answer, so a TF release that changes one is noticed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any

import ml_dtypes
import numpy as np
import tensorflow as tf

from pooladapt.backends.tensorflow.compile import batch_size, in_portable, in_xla, may_record
from pooladapt.plan import PoolPlan

Pool = Callable[..., tf.Tensor]  # pool(x, window, stride, padding, dilation) of channels-last x

# ---------------------------------------------------------------------------- op arguments


def unsigned_as_signed(x: tf.Tensor, pool: Pool, *args: Any) -> tf.Tensor:
    """MaxPool has no uint32/uint64 kernel: pooled bitcast to the signed type with the sign bit
    flipped, which maps unsigned order onto signed order (``test_every_dtype_keeps_its_dtype_
    and_is_exact_for_max``, tests/tensorflow/test_backend.py)."""
    signed = tf.int32 if x.dtype == tf.uint32 else tf.int64
    flip = tf.constant(signed.min, signed)
    y = pool(tf.bitwise.bitwise_xor(tf.bitcast(x, signed), flip), *args)
    return tf.bitcast(tf.bitwise.bitwise_xor(y, flip), x.dtype)


def pool3d_as_2d(x: tf.Tensor, pool: Pool, window, stride, padding, dilation) -> tf.Tensor:
    """MaxPool3D's gradient goes to *every* tied maximum (``test_d10_max_pool_3d_gradient_goes_
    to_every_tied_maximum``) and its kernels lack float16, float64 and integers: a 3-D pool
    runs as two 2-D pools, (H, W) then D, which keeps the first-maximum rule and every dtype."""
    n, (d, h, w, c) = batch_size(x), x.shape[1:]
    explicit = not isinstance(padding, str)
    y = pool(tf.reshape(x, [n * d, h, w, c]), window[1:], stride[1:],
             padding[1:] if explicit else padding, dilation[1:])
    ho, wo = y.shape[1:3]
    y = pool(tf.reshape(y, [n, d, ho * wo, c]), (window[0], 1), (stride[0], 1),
             (padding[0], (0, 0)) if explicit else padding, (dilation[0], 1))
    return tf.reshape(y, [n, y.shape[1], ho, wo, c])


def dilated_with_unit_stride(x: tf.Tensor, pool: Pool, window, stride, padding,
                             dilation) -> tf.Tensor:
    """``tf.nn.pool`` dilates only with stride 1 (FRAMEWORK-NOTES §1a): strided dilated pooling
    runs with stride 1 and keeps every stride-th window (``max-dilated-strided`` in
    tests/tensorflow/test_backend.py)."""
    y = pool(x, window, (1,) * len(window), padding, dilation)
    return y[(slice(None), *(slice(None, None, s) for s in stride))]


def op_workaround(ndim: int, stride: tuple[int, ...], dilation: tuple[int, ...],
                  dtype_name: str) -> Callable[..., tf.Tensor] | None:
    """The workaround a TF pool of these arguments needs, or None: TF's op takes them."""
    if dtype_name in ("uint32", "uint64"):
        return unsigned_as_signed
    if ndim == 3:
        return pool3d_as_2d
    if any(r > 1 for r in dilation) and any(s > 1 for s in stride):
        return dilated_with_unit_stride
    return None


@lru_cache(maxsize=256)
def _explicit_fits(plan: PoolPlan) -> bool:
    spec = plan.spec
    return all(r == 1 and hi < k for r, k, (_, hi) in
               zip(spec.dilation, spec.window, plan.total_pads))


def explicit_max_padding(plan: PoolPlan) -> bool:
    """MaxPool's own explicit padding (pads of -inf, no padded copy) takes the plan: no
    dilation, each high pad shorter than the window, and not under XLA, which has none
    (D1: ``test_d1_explicit_padding_exists_for_max_only``; AvgPool has none either), nor in
    a graph traced for TFLite (``compile.portable``: ``test_tflite_converts_with_builtin_ops_
    only``, tests/tensorflow/test_export.py)."""
    return _explicit_fits(plan) and not in_xla() and not in_portable()


def same_max_misroutes_ties() -> bool:
    """Under XLA, MaxPool's gradient with SAME padding (and its NCHW form) sends a tie to the
    wrong cell (``test_d10_xla_same_max_pool_gradient_misplaces_a_tie``): max avoids them
    there."""
    return in_xla()


# ---------------------------------------------------------------------------- NCHW (D8)


def to_last(x: tf.Tensor, move: bool = True) -> tf.Tensor:
    """Channels-first ``x`` as channels-last (unchanged unless ``move``): TF's CPU pooling
    kernels are channels-last only, but for oneDNN's forward (D8,
    ``test_d8_nchw_pooling_on_cpu_needs_onednn_and_has_no_gradient``)."""
    return tf.transpose(x, [0, *range(2, x.shape.rank), 1]) if move else x


def to_first(x: tf.Tensor, move: bool = True) -> tf.Tensor:
    """Channels-last ``x`` as channels-first (unchanged unless ``move``)."""
    return tf.transpose(x, [0, x.shape.rank - 1, *range(1, x.shape.rank - 1)]) if move else x


@cache
def nchw_kernel(kind: str, dtype: tf.DType) -> bool:
    """True when TF has a channels-first CPU kernel for this pool and dtype (D8). Only oneDNN
    has one (on by default on CPUs with AVX-512 VNNI/BF16 or AMX, off with
    ``TF_ENABLE_ONEDNN_OPTS=0``); float32 only, as its float16 and bfloat16 kernels depend on
    CPU features TF does not report. Read from TF's build and kernel registry, never tried: a
    refused kernel logs an error into the user's output
    (``test_d8_nchw_pooling_on_cpu_needs_onednn_and_has_no_gradient``,
    ``test_channels_first_pooling_logs_no_refused_kernel``)."""
    return dtype == tf.float32 and _onednn_kernel(f"_MklNative{kind.title()}Pool")


@cache
def _onednn_kernel(op: str) -> bool:
    """oneDNN is on and registers a float32 CPU kernel for ``op``."""
    try:
        from tensorflow.python.framework import kernels
        from tensorflow.python.util import _pywrap_util_port

        if not _pywrap_util_port.IsMklEnabled():
            return False
        registered = kernels.get_registered_kernels_for_op(op)
    except (ImportError, AttributeError, tf.errors.OpError):  # pragma: no cover - other TFs
        return False
    return any(k.device_type == "CPU" and all(
        tf.float32.as_datatype_enum in c.allowed_values.list.type for c in k.constraint)
        for k in registered.kernel)


def nchw_gradient_kernel(kind: str) -> bool:
    """True where TF's own gradient of an NCHW pool is right and runs on the CPU (D8): oneDNN's
    AvgPoolGrad eagerly and in graphs, its MaxPoolGrad only in a graph (oneDNN's rewrite of
    eager ops leaves MaxPoolGrad to TF's NHWC-only kernel;
    ``test_d8_nchw_gradient_runs_on_onednn_except_an_eager_max``); under XLA the avg's (XLA's
    NCHW MaxPool gradient with SAME padding misplaces ties)."""
    if in_xla():
        return kind == "AVG"
    return _onednn_kernel(f"_MklNative{kind.title()}PoolGrad") and (
        kind == "AVG" or not tf.executing_eagerly())


def _raw_pool(kind: str, x: tf.Tensor, **args: Any) -> tf.Tensor:
    if kind == "MAX":
        return tf.raw_ops.MaxPool(input=x, **args)
    return tf.raw_ops.AvgPool(value=x, **args)


def nchw_pool(x: tf.Tensor, kind: str, window, stride, padding: str) -> tf.Tensor:
    """A 2-D pool of a channels-first ``x`` on TF's NCHW kernel. Its gradient is TF's own
    where oneDNN runs it (:func:`nchw_gradient_kernel`), else computed in NHWC
    (``tf.custom_gradient``; ``test_nchw_kernel_without_a_tape_runs_no_custom_gradient``)."""
    args = dict(ksize=[1, 1, *window], strides=[1, 1, *stride], padding=padding,
                data_format="NCHW")
    if not may_record() or nchw_gradient_kernel(kind):
        return _raw_pool(kind, x, **args)
    @tf.custom_gradient
    def pool(t):
        y = _raw_pool(kind, t, **args)

        def grad(dy):
            attrs = dict(ksize=[1, *window, 1], strides=[1, *stride, 1], padding=padding)
            if kind == "MAX":
                g = tf.raw_ops.MaxPoolGrad(orig_input=to_last(t), orig_output=to_last(y),
                                           grad=to_last(dy), **attrs)
            else:
                g = tf.raw_ops.AvgPoolGrad(orig_input_shape=tf.gather(tf.shape(t), [0, 2, 3, 1]),
                                           grad=to_last(dy), **attrs)
            return to_first(g)

        return y, grad

    return pool(x)


# ---------------------------------------------------------------------------- NaN in max (D5)


def may_drop_nan(x: tf.Tensor, known: bool | None = None) -> Any:
    """Whether MaxPool may get the float ``x`` wrong (D5: it drops NaN and starts from the
    lowest finite value, so an all-NaN or all -inf window gives -3.4e38): ``x`` holds a NaN
    or -inf. ``known`` if not None (read by a speed route); else from one sum, which reads
    the input faster than TF's min and propagates NaN where XLA's min and max drop it
    (``test_d5_reduce_max_propagates_nan_eagerly_but_not_under_xla``). Eagerly a Python bool:
    NaN or -inf sums hold one, a +inf sum (+inf cells, or an overflow) asks TF's eager
    reduce_min, which propagates NaN; float16, whose sums overflow easily, asks it at once.
    In a graph a boolean tensor: the sum not finite (an overflow or +inf only costs the exact
    path; float16 checks its cells). "Not finite" is
    ``s != s or s == inf or s == -inf``: builtin ops that TFLite and ONNX have (TFLite has
    no IsFinite; never ``not |s| < inf``, which grappler rewrites to ``|s| >= inf``, False
    for NaN)."""
    if known is not None:
        return known
    if tf.executing_eagerly():
        if not x.shape.num_elements():
            return False
        s = math.inf if x.dtype == tf.float16 else float(tf.reduce_sum(x))
        if s == math.inf:  # +inf cells or an overflow: the minimum tells
            return not bool(tf.reduce_min(x) > -np.inf)
        return s != s or s == -math.inf
    if x.dtype == tf.float16:
        return tf.reduce_any(_not_finite(x))
    return _not_finite(tf.reduce_sum(x))


def _not_finite(t: tf.Tensor) -> tf.Tensor:
    return tf.logical_or(tf.not_equal(t, t),
                         tf.logical_or(tf.equal(t, np.inf), tf.equal(t, -np.inf)))


_BITS = {2: tf.int16, 4: tf.int32, 8: tf.int64}


def order_key(t: tf.Tensor) -> tf.Tensor:
    """Integers ordered as the floats ``t``: -0.0 == 0.0, and every NaN (one key) above +inf.
    Comparing keys is exact where TF's kernels drop NaN (D5) or read subnormals as zero."""
    bits = tf.bitcast(t, _BITS[t.dtype.size])
    if t.dtype.size == 2:
        bits = tf.cast(bits, tf.int32)
    top = tf.constant((1 << (8 * t.dtype.size - 1)) - 1, bits.dtype)  # also a NaN's bits
    magnitude = tf.bitwise.bitwise_and(bits, top)
    return tf.where(tf.math.is_nan(t), top, tf.where(bits < 0, -magnitude, magnitude))


def from_order_key(key: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    sign = tf.constant(-(1 << (8 * dtype.size - 1)), key.dtype)
    bits = tf.where(key < 0, -key + sign, key)
    return tf.bitcast(tf.cast(bits, _BITS[dtype.size]), dtype)


def max_of_keys(x: tf.Tensor, y: tf.Tensor, pool_keys: Callable[..., tf.Tensor]) -> tf.Tensor:
    """MaxPool's result ``y`` of the float ``x`` made exact (D5: ``test_d5_max_pool_suppresses_
    nan``): the pool redone on order keys (``pool_keys(keys, fill)``), where it differs; the
    windows it corrects carry no gradient, the others keep MaxPool's."""
    keys = pool_keys(order_key(x), order_key(tf.constant(-np.inf, x.dtype)))
    exact = tf.stop_gradient(from_order_key(keys, x.dtype))
    return tf.where(tf.equal(keys, order_key(y)), y, exact)


def max_of_builtins(x: tf.Tensor, y: tf.Tensor,
                    pool: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """MaxPool's result ``y`` of the float ``x`` made exact (D5) with builtin ops only, for
    graphs that TFLite and tf2onnx convert (no bit casts or bitwise ops;
    ``compile.builtin_graph``): one MaxPool (``pool``) of a flag per cell (2: NaN, 1: above
    -inf, 0: -inf); a window whose flag is 2 is NaN, 0 -inf (MaxPool starts from the lowest
    finite value, and a runtime's kernel may drop or keep NaN: neither reaches the result),
    1 MaxPool's value and gradient (the first maximum, NaN-free there); NaN and -inf windows
    carry no gradient, as in :func:`max_of_keys`. The flags come from comparisons of ``x``
    only, so the gradient reaches ``x`` through ``y`` alone: under ``tf.cond`` no zeros of
    the other branch are added to it, and oneDNN's MaxPool/MaxPoolGrad pair stays fused
    (``test_tflite_converts_with_builtin_ops_only``, tests/tensorflow/test_export.py)."""
    x = tf.stop_gradient(x)
    flags = tf.where(tf.not_equal(x, x), tf.constant(2, x.dtype),
                     tf.cast(x > tf.constant(-np.inf, x.dtype), x.dtype))
    flag = pool(flags)
    return tf.where(flag > 1, tf.constant(np.nan, x.dtype), tf.where(flag > 0, y, _minus_inf(y)))


def _minus_inf(y: tf.Tensor) -> tf.Tensor:
    """-inf where MaxPool's ``y`` is -inf or the lowest finite value (and no gradient), for a
    ``tf.where`` that converters keep: ``y * inf``, not a constant -inf, which the TFLite
    converter stores as the lowest finite value (its inf, stored as the largest finite value,
    still overflows the product to -inf), and tf2onnx keeps the select as an ONNX Where beside
    a product with an infinite constant (elsewhere it rewrites a select of two tensors as
    ``c * a + (1 - c) * b``, NaN wherever a or b is infinite)."""
    return tf.stop_gradient(y) * tf.constant(np.inf, y.dtype)


def minus_inf_where_empty(y: tf.Tensor, empty: tf.Tensor) -> tf.Tensor:
    """MaxPool starts from the lowest finite value: a window of padding only (``empty``, the
    plan's ``empty_windows`` shaped like ``y``; dilation makes them) comes out as -3.4e38
    instead of -inf (``test_all_padding_windows``, tests/conformance/test_edges.py); the -inf
    is made as converters keep it (:func:`_minus_inf`)."""
    return tf.where(empty, _minus_inf(y), y)


# ---------------------------------------------------------------------------- subnormals


@cache
def flushes_subnormals(dtype: tf.DType) -> bool:
    """True when TF's CPU kernels here read a subnormal of ``dtype`` as zero (x86 CPUs, where
    TF sets the flush-to-zero and denormals-are-zero modes; float16 runs in float32, where its
    subnormals are normal): ``test_subnormals_read_as_zero_where_tf_flushes_them``. Detecting
    them in the input would cost more than the pool: a known deviation instead."""
    tiny = ml_dtypes.finfo(dtype.as_numpy_dtype).smallest_subnormal  # bfloat16's with NumPy 1
    with tf.init_scope(), tf.device("/CPU:0"):
        return bool(tf.equal(tf.constant(tiny, dtype), tf.zeros([], dtype)))


def subnormal_deviations() -> dict[str, str]:
    """Conformance's known deviation for each dtype whose subnormals TF flushes here."""
    return {f"subnormals:{d}": (
        f"TensorFlow's CPU kernels and casts (XLA included) here treat {d} subnormals as "
        "zero: an average or lp result below the smallest normal number comes out 0, and a "
        "max compares a subnormal equal to 0 (so [0, tiny] may give 0, index 0), unless the "
        "input also holds a NaN or -inf and the call runs eagerly or under XLA, where that "
        "takes the exact path on integer keys (a plain tf.function's exact path is builtin "
        "ops, for TFLite and ONNX, and flushes as MaxPool does)")
        for d in ("bfloat16", "float32", "float64") if flushes_subnormals(tf.as_dtype(d))}
