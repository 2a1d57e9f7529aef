"""The TensorFlow backend: ``tf.nn`` pooling, exact emulation where TF falls short.

The plain translation: a plan MaxPool/AvgPool expresses is one native call (``valid``; for
max, MaxPool's explicit padding, except under XLA, which lacks it); elsewhere the input is
padded (-inf or the dtype minimum for max, zeros for sums) and pooled VALID, and an avg whose
windows count fewer cells than the window is rescaled by the plan's constant divisor map.
Channels-first input is transposed in and out. Quirks closed here:

* MaxPool drops NaN and starts from the lowest finite value (an all-NaN or all -inf window
  gives -3.4e38 eager): when the input holds a NaN or -inf (one reduction tells: eagerly its
  minimum; in graphs its sum, as XLA's min drops NaN), the max is redone on integer order
  keys of the floats, which is exact. That one read of the input is the backend's whole cost
  over MaxPool on large inputs.
* XLA's SAME MaxPool gradient sends ties to the wrong cell: under XLA, max never uses SAME.
* TF's CPU kernels and casts (XLA included) treat subnormals as zero where the CPU flushes
  them (x86): a known deviation for each dtype where a probe finds it (float16 runs in
  float32, where its subnormals are normal). Detecting them would cost more than the pool.
* MaxPool3D's gradient goes to *every* tied maximum and its kernels lack float16, float64
  and integers: 3-D pooling runs as two 2-D pools, (H, W) then D, which keeps the first-
  maximum gradient rule and every dtype.
* Dilation is native only with stride 1 (``tf.nn.pool``): strided dilated pooling runs with
  stride 1 and keeps every stride-th window.
* MaxPool has no uint32/uint64 kernel: those are bitcast to the signed type with the sign
  bit flipped, which preserves order.
* Indices (and adaptive max) gather every window's cells and pick the first maximum in
  row-major order by order key; values are then gathered at that index, so the gradient is
  exact. (``max_pool_with_argmax`` is 2-D only, NHWC only, NaN-order dependent.)

Speed routes (``BACKEND.speed_routes``; ``pa.speed_routes`` turns them off or forces them on
wherever they apply; ``TUNING`` holds the thresholds ``auto`` uses):

* ``tensorflow.nchw_kernel``: 2-D channels-first input on TF's NCHW kernel instead of two
  transposes, with 8+ channels or a small tensor. On CPU only oneDNN has one (float32; off
  with ``TF_ENABLE_ONEDNN_OPTS=0``): the route is listed only where TF has it. Its CPU
  gradient is NHWC only, so where a gradient may be asked for (a tape, a graph) a
  ``tf.custom_gradient`` computes it there.
* ``tensorflow.native_same``: a plan whose windows are TF's SAME windows (``same_upper``, or
  e.g. padding 1 of a 3/2 window over an odd size) is one SAME call, whose avg excludes the
  padding as canonical avg does (no divisor map, no padded copy).
* ``tensorflow.depthwise_sum``: a padded 2-D channels-last avg or lp sums its windows with
  one depthwise convolution of ones, which pads by itself (AvgPool takes no explicit
  padding: a padded copy).
* ``tensorflow.raw_op``: 2-D pools call the raw op with cached attributes (``tf.nn``'s
  wrapper re-validates its arguments on every call).
* ``tensorflow.indices_taps``: max with indices takes the native max, then, tap by tap, which
  cells equal it, instead of gathering every window's cells.
* ``tensorflow.host_nan_check``: the eager NaN/-inf check of a small CPU tensor reads it
  with NumPy instead of a TF reduction.

Routes are chosen when a call runs eagerly, or when a ``tf.function`` is traced: a traced
graph keeps the routes of its tracing (trace under the setting you mean).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import numpy as np
import tensorflow as tf

from pooladapt import config, lowering
from pooladapt.backends.base import EMULATED, FEATURES, NATIVE, Backend
from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan, UnpoolSpec

_LOW_PRECISION = (tf.float16, tf.bfloat16)
_EMULATED = ("lp", "symmetric_padding", "asymmetric_padding", "ceil_mode", "dilation",
             "count_include_pad", "indices", "channels_first", "nan", "adaptive", "unpool")


def _to_last(x: tf.Tensor, channels_first: bool) -> tf.Tensor:
    if not channels_first:
        return x
    rank = len(x.shape)
    return tf.transpose(x, [0, *range(2, rank), 1])


def _from_last(x: tf.Tensor, channels_first: bool) -> tf.Tensor:
    if not channels_first:
        return x
    rank = len(x.shape)
    return tf.transpose(x, [0, rank - 1, *range(1, rank - 1)])


def _batch(x: tf.Tensor) -> tf.Tensor:
    """The (possibly dynamic) batch size; int64, as a plane may hold 2**31 cells."""
    return tf.shape(x, out_type=tf.int64)[0]


def _lowest(dtype: tf.DType):
    return dtype.min if dtype.is_integer else -np.inf


def _spatial_const(a: np.ndarray, dtype: tf.DType, channels_first: bool = False) -> tf.Tensor:
    """A constant over the output plane, shaped to broadcast against NHWC (or NCHW)."""
    return tf.constant(a[None, None] if channels_first else a[None, ..., None], dtype=dtype)


def _pad(x: tf.Tensor, pads, fill, channels_first: bool) -> tf.Tensor:
    pads = [(0, 0), (0, 0), *pads] if channels_first else [(0, 0), *pads, (0, 0)]
    return tf.pad(x, pads, constant_values=fill)


def _in_xla() -> bool:
    """True while tracing for XLA (``jit_compile``), which lacks explicit pooling padding.

    Known only at trace time: a plain ``tf.function`` traced outside XLA and later called
    inside a ``jit_compile`` one keeps its explicit-padding MaxPool, which XLA rejects (an
    error, never a wrong value)."""
    if tf.executing_eagerly():
        return False
    enclosing = getattr(tf.__internal__, "get_enclosing_xla_context", None)
    return enclosing is None or enclosing() is not None


def _raw_pool(kind: str, x: tf.Tensor, **args) -> tf.Tensor:
    if kind == "MAX":
        return tf.raw_ops.MaxPool(input=x, **args)
    return tf.raw_ops.AvgPool(value=x, **args)


# ---------------------------------------------------------------------------- speed routes


@dataclass(frozen=True)
class Tuning:
    """Where the size-dependent routes pay under ``auto`` (measured on x86 CPUs)."""

    nchw_channels: int = 8  # NCHW kernel from this many channels (oneDNN's NCHW pooling of
    nchw_small: int = 1 << 16  # a few large planes is 5-20x slower than two transposes), or
    # up to this many cells, where it beats two transposes at any shape
    host_check: int = 1 << 14  # cells: up to here a NumPy read of a CPU tensor beats a TF op


TUNING = Tuning()

NCHW_KERNEL = "tensorflow.nchw_kernel"
NATIVE_SAME = "tensorflow.native_same"
DEPTHWISE_SUM = "tensorflow.depthwise_sum"
RAW_OP = "tensorflow.raw_op"
INDICES_TAPS = "tensorflow.indices_taps"
HOST_NAN_CHECK = "tensorflow.host_nan_check"


@cache
def _nchw_kernel(kind: str, dtype: tf.DType) -> bool:
    """True when TF has a channels-first CPU kernel for this pool and dtype. Only oneDNN has
    one (on by default on CPUs with AVX-512 VNNI/BF16 or AMX, off with
    ``TF_ENABLE_ONEDNN_OPTS=0``); float32 only, as its float16 and bfloat16 kernels depend on
    CPU features TF does not report. Read from TF's build and kernel registry, never tried:
    a refused kernel logs an error into the user's output."""
    if dtype != tf.float32:
        return False
    try:
        from tensorflow.python.framework import kernels
        from tensorflow.python.util import _pywrap_util_port

        if not _pywrap_util_port.IsMklEnabled():
            return False
        registered = kernels.get_registered_kernels_for_op(
            "_MklNativeMaxPool" if kind == "MAX" else "_MklNativeAvgPool")
    except (ImportError, AttributeError, tf.errors.OpError):  # pragma: no cover - other TFs
        return False
    return any(k.device_type == "CPU" and all(
        tf.float32.as_datatype_enum in c.allowed_values.list.type for c in k.constraint)
        for k in registered.kernel)


def _nchw_route(x: tf.Tensor, plan: PoolPlan, kind: str) -> bool:
    """Pool the channels-first ``x`` on TF's NCHW kernel? It applies to a 2-D plan without
    dilation with a kernel for the dtype, not under XLA (whose NCHW MaxPool gradient with
    SAME padding misplaces ties)."""
    spec = plan.spec
    if not (spec.ndim == 2 and all(r == 1 for r in spec.dilation)
            and _nchw_kernel(kind, x.dtype)) or _in_xla():
        return False
    cells = x.shape.num_elements()
    return config.take_route(NCHW_KERNEL, (x.shape[1] or 0) >= TUNING.nchw_channels
                             or (cells is not None and cells <= TUNING.nchw_small))


def _same_route(plan: PoolPlan, kind: str) -> bool:
    """One native SAME call? It applies where TF's SAME gives the plan's windows; for max not
    under XLA, whose SAME MaxPool gradient sends ties to the wrong cell. (Avg callers ask only
    where padding is not counted: SAME avg excludes it.)"""
    spec = plan.spec
    if not (plan.has_padding and all(r == 1 for r in spec.dilation)
            and _same_windows(plan)) or (kind == "MAX" and _in_xla()):
        return False
    return config.take_route(NATIVE_SAME, True)


@lru_cache(maxsize=256)
def _same_windows(plan: PoolPlan) -> bool:
    return lowering.same_windows(plan)


def _depthwise_route(x: tf.Tensor, plan: PoolPlan) -> bool:
    """Sum the windows with a depthwise convolution? It applies to a padded 2-D channels-last
    plan without dilation with equal strides and a static channel count."""
    spec = plan.spec
    if not (plan.has_padding and spec.ndim == 2 and not spec.channels_first
            and spec.stride[0] == spec.stride[1] and all(r == 1 for r in spec.dilation)
            and x.shape[-1] is not None):
        return False
    return config.take_route(DEPTHWISE_SUM, True)


def _window_sum(x: tf.Tensor, plan: PoolPlan) -> tf.Tensor:
    """Sum of every window over a channels-last float ``x`` (padding counting 0)."""
    spec = plan.spec
    ones = tf.ones([*spec.window, x.shape[-1], 1], x.dtype)
    return tf.nn.depthwise_conv2d(x, ones, [1, *spec.stride, 1],
                                  [(0, 0), *plan.total_pads, (0, 0)])


@lru_cache(maxsize=256)
def _nhwc_args(window, stride, padding) -> dict[str, Any]:
    """Attributes of a 2-D NHWC MaxPool/AvgPool; explicit ``padding`` (MaxPool only) as
    ``(low, high)`` pairs."""
    args = dict(ksize=[1, *window, 1], strides=[1, *stride, 1], padding=padding)
    if not isinstance(padding, str):
        pads = [0, 0, *(p for pair in padding for p in pair), 0, 0]
        args.update(padding="EXPLICIT", explicit_paddings=pads)
    return args


def _could_record() -> bool:
    """False when no gradient tape is active (eager), so no gradient can be asked for."""
    return _tape_active is None or _tape_active()


try:  # TF's own test for "some tape or accumulator is recording"
    from tensorflow.python.eager.record import could_possibly_record as _tape_active
except ImportError:  # pragma: no cover - a TF without it: assume a tape
    _tape_active = None


def _pool_nchw(x: tf.Tensor, kind: str, window, stride, padding: str) -> tf.Tensor:
    """A 2-D pool of a channels-first ``x`` on TF's NCHW kernel. Its CPU gradient is NHWC
    only, so where a gradient may be asked for it goes through NHWC (tf.custom_gradient)."""
    args = dict(ksize=[1, 1, *window], strides=[1, 1, *stride], padding=padding,
                data_format="NCHW")
    if tf.executing_eagerly() and not _could_record():
        return _raw_pool(kind, x, **args)

    @tf.custom_gradient
    def pool(t):
        y = _raw_pool(kind, t, **args)

        def grad(dy):
            nhwc = dict(ksize=[1, *window, 1], strides=[1, *stride, 1], padding=padding)
            if kind == "MAX":
                g = tf.raw_ops.MaxPoolGrad(orig_input=_to_last(t, True),
                                           orig_output=_to_last(y, True),
                                           grad=_to_last(dy, True), **nhwc)
            else:
                g = tf.raw_ops.AvgPoolGrad(orig_input_shape=tf.gather(tf.shape(t), [0, 2, 3, 1]),
                                           grad=_to_last(dy, True), **nhwc)
            return _from_last(g, True)

        return y, grad

    return pool(x)


def _host_check(x: tf.Tensor, cells: int) -> bool:
    """Read the eager ``x`` with NumPy for the NaN check? It applies to a CPU tensor."""
    return x.device.endswith("CPU:0") and config.take_route(HOST_NAN_CHECK,
                                                            cells <= TUNING.host_check)


def _taps_route(x: tf.Tensor, plan: PoolPlan) -> bool:
    """Max with indices from the native max and a tap-by-tap match? It applies to floats (its
    phase grid is padded with -inf) where every window holds a real cell, on planes under
    2**30 cells."""
    if not x.dtype.is_floating or plan.all_padding_windows or math.prod(plan.in_size) >= 2**30:
        return False
    return config.take_route(INDICES_TAPS, True)


# ---------------------------------------------------------------------------- the translation


def _native(x: tf.Tensor, kind: str, window, stride, padding, dilation) -> tf.Tensor:
    """tf.nn pooling of a channels-last tensor; ``kind`` is "MAX" or "AVG"; ``padding`` is
    "SAME", "VALID" or, for max without dilation, explicit ``(low, high)`` pairs."""
    if x.dtype in (tf.uint32, tf.uint64):
        signed = tf.int32 if x.dtype == tf.uint32 else tf.int64
        flip = tf.constant(signed.min, signed)
        y = _native(tf.bitwise.bitwise_xor(tf.bitcast(x, signed), flip), kind, window, stride,
                    padding, dilation)
        return tf.bitcast(tf.bitwise.bitwise_xor(y, flip), x.dtype)
    if len(window) == 3:
        n, (d, h, w, c) = _batch(x), x.shape[1:]
        explicit = not isinstance(padding, str)
        y = _native(tf.reshape(x, [n * d, h, w, c]), kind, window[1:], stride[1:],
                    padding[1:] if explicit else padding, dilation[1:])
        ho, wo = y.shape[1:3]
        y = _native(tf.reshape(y, [n, d, ho * wo, c]), kind, (window[0], 1), (stride[0], 1),
                    (padding[0], (0, 0)) if explicit else padding, (dilation[0], 1))
        return tf.reshape(y, [n, y.shape[1], ho, wo, c])
    if any(r > 1 for r in dilation):
        y = tf.nn.pool(x, window, kind, strides=[1] * len(window), padding=padding,
                       dilations=dilation)
        return y[(slice(None), *(slice(None, None, s) for s in stride))]
    if len(window) == 2 and config.take_route(RAW_OP, True):
        return _raw_pool(kind, x, **_nhwc_args(window, stride, padding))
    if not isinstance(padding, str):
        padding = [(0, 0), *padding, (0, 0)]
    pool = tf.nn.max_pool if kind == "MAX" else tf.nn.avg_pool
    return pool(x, window, stride, padding)


@lru_cache(maxsize=256)
def _explicit_ok(plan: PoolPlan) -> bool:
    """True when MaxPool's explicit padding expresses the plan (no dilation, and each high
    pad shorter than the window, as MaxPool requires)."""
    spec = plan.spec
    return all(r == 1 and hi < k for r, k, (_, hi) in
               zip(spec.dilation, spec.window, plan.total_pads))


def _reduce(x: tf.Tensor, plan: PoolPlan, kind: str, same: bool, fill=None) -> tf.Tensor:
    """Max or mean of every window of the plan over ``x`` (in the spec's layout); padded
    cells hold ``fill`` (default: the dtype's lowest value for max, 0 for the mean). With
    ``same`` (:func:`_same_route` said so), TF's SAME: its mean excludes the padding;
    otherwise the mean divides by the whole window."""
    spec = plan.spec
    if fill is None:
        fill = _lowest(x.dtype) if kind == "MAX" else 0
    if not spec.channels_first:
        return _reduce_last(x, plan, kind, same, fill)
    if not _nchw_route(x, plan, kind):
        return _from_last(_reduce_last(_to_last(x, True), plan, kind, same, fill), True)
    if same:
        return _pool_nchw(x, kind, spec.window, spec.stride, "SAME")
    if plan.has_padding:  # the NCHW kernels take no explicit padding
        x = _pad(x, plan.total_pads, fill, True)
    return _pool_nchw(x, kind, spec.window, spec.stride, "VALID")


def _reduce_last(x: tf.Tensor, plan: PoolPlan, kind: str, same: bool, fill) -> tf.Tensor:
    """:func:`_reduce` of a channels-last ``x``."""
    spec = plan.spec
    if same:
        return _native(x, kind, spec.window, spec.stride, "SAME", spec.dilation)
    if kind == "MAX" and plan.has_padding and _explicit_ok(plan) and not _in_xla():
        # MaxPool's own explicit padding (no copy); XLA has none
        return _native(x, kind, spec.window, spec.stride, plan.total_pads, spec.dilation)
    if plan.has_padding:
        x = _pad(x, plan.total_pads, fill, False)
    return _native(x, kind, spec.window, spec.stride, "VALID", spec.dilation)


def _exact_max(x: tf.Tensor, window_max: Callable[..., tf.Tensor]) -> tf.Tensor:
    """``window_max(t, fill)`` (a max pool whose padding holds ``fill``), NaN-exact for floats.

    TF's MaxPool drops NaN and starts from the lowest finite value (an all-NaN or all -inf
    window gives -3.4e38; -inf under XLA). Only when :func:`_suspect` says so is the pool
    redone on the floats' order keys (integers, exact); the windows it corrects carry no
    gradient, the others keep the native one.
    """
    y = window_max(x, None)
    if not x.dtype.is_floating:
        return y

    def exact():
        keys = window_max(_order_key(x), _order_key(tf.constant(-np.inf, x.dtype)))
        z = tf.stop_gradient(_from_key(keys, x.dtype))
        return tf.where(tf.equal(keys, _order_key(y)), y, z)

    if tf.executing_eagerly():
        return exact() if _suspect_now(x) else y
    return tf.cond(_suspect(x), exact, lambda: y)


def _suspect_now(x: tf.Tensor) -> bool:
    """:func:`_suspect` for an eager float tensor: its minimum is NaN or -inf. TF's eager
    reduce_min propagates NaN (only XLA's drops it) and never overflows."""
    n = x.shape.num_elements()
    if not n:
        return False
    if _host_check(x, n):
        with np.errstate(invalid="ignore"):
            return not np.min(x.numpy()) > -np.inf
    return not bool(tf.reduce_min(x) > -np.inf)


def _suspect(x: tf.Tensor) -> tf.Tensor:
    """True if MaxPool may get the float ``x`` wrong: it holds a NaN (dropped) or -inf (an all
    -inf window comes out as the lowest finite value). One reduction: the sum is then not
    finite (nor when it overflows, which only costs the exact path; float16, whose sums
    overflow easily, checks its cells). Not reduce_max/min: under XLA (``jit_compile`` or
    auto-clustering of a graph) they drop NaN."""
    if x.dtype == tf.float16:
        return tf.reduce_any(~tf.math.is_finite(x))
    return ~tf.math.is_finite(tf.reduce_sum(x))


def _root(s: tf.Tensor, p: float) -> tf.Tensor:
    """``s ** (1/p)`` with a zero gradient where ``s == 0``."""
    if p == 1.0:
        return s
    zero = tf.equal(s, 0)
    safe = tf.where(zero, tf.ones_like(s), s)
    root = tf.sqrt(safe) if p == 2.0 else tf.pow(safe, 1.0 / p)
    return tf.where(zero, tf.zeros_like(s), root)


def _power(x: tf.Tensor, p: float) -> tf.Tensor:
    if p == 2.0:
        return tf.square(x)
    return tf.abs(x) if p == 1.0 else tf.pow(tf.abs(x), p)


_BITS = {2: tf.int16, 4: tf.int32, 8: tf.int64}


def _order_key(t: tf.Tensor) -> tf.Tensor:
    """Integers ordered as the floats ``t``: -0.0 == 0.0, and every NaN (one key) above +inf.
    Comparing keys is exact where TF's CPU kernels would flush subnormals to zero."""
    bits = tf.bitcast(t, _BITS[t.dtype.size])
    if t.dtype.size == 2:
        bits = tf.cast(bits, tf.int32)
    top = tf.constant((1 << (8 * t.dtype.size - 1)) - 1, bits.dtype)  # also a NaN's bits
    magnitude = tf.bitwise.bitwise_and(bits, top)
    return tf.where(tf.math.is_nan(t), top, tf.where(bits < 0, -magnitude, magnitude))


def _from_key(key: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    sign = tf.constant(-(1 << (8 * dtype.size - 1)), key.dtype)
    bits = tf.where(key < 0, -key + sign, key)
    return tf.bitcast(tf.cast(bits, _BITS[dtype.size]), dtype)


def _first_max(x: tf.Tensor, channels_first: bool, table: np.ndarray, valid: np.ndarray,
               out_size: tuple[int, ...]) -> tuple[tf.Tensor, tf.Tensor]:
    """Max of every window listed by ``table`` and the per-plane index of its first maximum
    (first NaN if any; -1 and the dtype's lowest value for a window with no valid cell); the
    value is gathered at that index, so its gradient is exact."""
    nd = len(out_size)
    xc = x if channels_first else tf.transpose(x, [0, nd + 1, *range(1, nd + 1)])
    n, channels, plane = _batch(xc), xc.shape[1], math.prod(xc.shape[2:])
    xc = tf.reshape(xc, [n, channels, plane])
    taps = tf.gather(xc, tf.constant(table), axis=2)  # (N, C, windows, cells)
    ok = tf.constant(valid)
    keys = _order_key(taps) if x.dtype.is_floating else taps  # a NaN is the top key
    masked = tf.where(ok, keys, tf.constant(keys.dtype.min, keys.dtype))
    cand = ok & (masked == tf.reduce_max(masked, axis=-1, keepdims=True))
    # cells are listed in row-major order, so the first maximum has the smallest flat index
    first = tf.reduce_min(tf.where(cand, tf.constant(table), plane), axis=-1)
    idx = tf.where(first == plane, tf.constant(-1, tf.int64), first)
    y = tf.gather(xc, tf.maximum(idx, 0), batch_dims=2)
    y = tf.where(idx < 0, tf.constant(_lowest(x.dtype), x.dtype), y)
    shape = [n, channels, *out_size]
    y, idx = tf.reshape(y, shape), tf.reshape(idx, shape)
    if not channels_first:
        perm = [0, *range(2, nd + 2), 1]
        y, idx = tf.transpose(y, perm), tf.transpose(idx, perm)
    return y, idx


def _max_with_indices(x: tf.Tensor, plan: PoolPlan) -> tuple[tf.Tensor, tf.Tensor]:
    """Max pooling with per-plane indices of the first maximum: every window's cells gathered
    (:func:`_first_max`), or the ``indices_taps`` route: the native max, then, tap by tap,
    which cells equal it; the first maximum is the one nearest the window's start. That is
    exact when :func:`_suspect` finds nothing; otherwise the gather runs."""
    spec = plan.spec
    cf = spec.channels_first

    def gather():
        table, valid = lowering.window_cells(plan)
        return _first_max(x, cf, table, valid, plan.out_size)

    if not _taps_route(x, plan):
        return gather()
    xl = _to_last(x, cf)
    y = _reduce_last(xl, plan, "MAX", _same_route(plan, "MAX"), _lowest(x.dtype))

    def taps():
        pads, lengths, taps = _tap_views(plan)
        # padded so that every dim splits into (length / stride, stride): a tap's cells are
        # then a plain slice at one phase, not a (slow) strided slice
        grid = tf.pad(xl, [(0, 0), *pads, (0, 0)], constant_values=-np.inf)
        grid = grid[(slice(None), *(slice(0, n) for n in lengths))]
        grid = tf.reshape(grid, [_batch(xl), *(v for n, s in zip(lengths, spec.stride)
                                               for v in (n // s, s)), xl.shape[-1]])
        # the first maximum has the smallest offset: keep the largest (top - offset) that matches
        top = max(offset for _, offset in taps) + 1
        best = tf.zeros_like(y, tf.int32)
        for view, offset in taps:
            best = tf.maximum(best, tf.cast(tf.equal(grid[view], y), tf.int32) * (top - offset))
        base = tf.constant(lowering.window_origins(plan)[None, ..., None])
        idx = base + tf.cast(top - best, tf.int64)
        return _from_last(y, cf), _from_last(idx, cf)

    if tf.executing_eagerly():
        return gather() if _suspect_now(xl) else taps()
    return tf.cond(_suspect(xl), gather, taps)


@lru_cache(maxsize=256)
def _tap_views(plan: PoolPlan):
    """Pads and lengths of the phase grid of :func:`_max_with_indices`, and for every tap in
    row-major window order: (its cells as an index into the grid, its offset in the plane
    from the window's first cell, which grows with the tap)."""
    spec = plan.spec
    pads, lengths, per_dim = [], [], []
    for d in range(spec.ndim):
        k, r, s, o = spec.window[d], spec.dilation[d], spec.stride[d], plan.out_size[d]
        lo, hi = plan.total_pads[d]
        length = s * ((k - 1) * r // s + o)
        pads.append((lo, hi + max(0, length - (plan.in_size[d] + lo + hi))))
        lengths.append(length)
        per_dim.append([((slice(t * r // s, t * r // s + o), t * r % s),
                         t * r * math.prod(plan.in_size[d + 1:])) for t in range(k)])
    taps = [((slice(None), *(i for part, _ in combo for i in part), slice(None)),
             sum(offset for _, offset in combo)) for combo in itertools.product(*per_dim)]
    return tuple(pads), tuple(lengths), taps


# ---------------------------------------------------------------------------- subnormals


@cache
def _flushes_subnormals(dtype: tf.DType) -> bool:
    """True when TF's CPU kernels here read a subnormal of ``dtype`` as zero (x86 CPUs, where
    TF sets the flush-to-zero and denormals-are-zero modes)."""
    tiny = np.finfo(dtype.as_numpy_dtype).smallest_subnormal
    with tf.init_scope(), tf.device("/CPU:0"):
        return bool(tf.equal(tf.constant(tiny, dtype), tf.zeros([], dtype)))


def _flushed(dtype: str) -> str:
    return (f"TensorFlow's CPU kernels and casts (XLA included) here treat {dtype} subnormals "
            "as zero: an average or lp result below the smallest normal number comes out 0, "
            "and a max compares a subnormal equal to 0 (so [0, tiny] may give 0, index 0), "
            "unless the input also holds a NaN or -inf, which takes the exact path")


# ---------------------------------------------------------------------------- the backend


class TensorflowBackend(Backend):
    name = "tensorflow"
    framework = "tensorflow"
    supports_autograd = True
    speed_routes = tuple(r for r in (NCHW_KERNEL, NATIVE_SAME, DEPTHWISE_SUM, RAW_OP,
                                     INDICES_TAPS, HOST_NAN_CHECK)
                         if r != NCHW_KERNEL or _nchw_kernel("MAX", tf.float32)
                         or _nchw_kernel("AVG", tf.float32))

    @property
    def known_deviations(self) -> dict[str, str]:  # type: ignore[override]
        """Subnormals, for each dtype whose subnormals TF's CPU kernels flush here."""
        return {f"subnormals:{d}": _flushed(d) for d in ("bfloat16", "float32", "float64")
                if _flushes_subnormals(tf.as_dtype(d))}

    def version(self) -> str:
        return tf.__version__

    def capabilities(self) -> dict[str, str]:
        return {f: EMULATED if f in _EMULATED else NATIVE for f in FEATURES}

    def from_numpy(self, a: np.ndarray) -> tf.Tensor:
        return tf.convert_to_tensor(a)  # ml_dtypes.bfloat16 arrays map to tf.bfloat16

    def to_numpy(self, x: tf.Tensor) -> np.ndarray:
        return np.asarray(x.numpy())

    def dtype_name(self, x: Any) -> str:
        return x.dtype.name

    def pool(self, x: tf.Tensor, plan: PoolPlan):
        spec = plan.spec
        cf = spec.channels_first
        if spec.return_indices:
            return _max_with_indices(x, plan)
        if spec.mode == "max":
            same = _same_route(plan, "MAX")
            y = _exact_max(x, lambda t, fill: _reduce(t, plan, "MAX", same, fill))
            if plan.all_padding_windows and x.dtype.is_floating:
                # MaxPool starts from the lowest finite value: a window of padding only
                # (dilation) comes out as -3.4e38 instead of -inf
                empty = _spatial_const(plan.empty_windows, tf.bool, cf)
                y = tf.where(empty, tf.constant(-np.inf, y.dtype), y)
            return y
        work = tf.float32 if x.dtype in _LOW_PRECISION else x.dtype
        xw = tf.cast(x, work)
        if spec.mode == "lp":
            xw = _power(xw, spec.p)
            if _depthwise_route(xw, plan):
                s = _window_sum(xw, plan)
            else:
                s = _reduce(xw, plan, "AVG", same=False) * plan.window_size
            return tf.cast(_root(s, spec.p), x.dtype)
        if not plan.has_padding:
            return tf.cast(_reduce(xw, plan, "AVG", same=False), x.dtype)
        if not spec.count_include_pad and _same_route(plan, "AVG"):
            return tf.cast(_reduce(xw, plan, "AVG", same=True), x.dtype)
        if _depthwise_route(xw, plan):
            y = _window_sum(xw, plan) / _spatial_const(plan.divisor_map, work, cf)
        else:  # the mean over whole windows, rescaled where a window counts fewer cells
            y = _reduce(xw, plan, "AVG", same=False)
            if plan.uniform_divisor != plan.window_size:
                with np.errstate(divide="ignore"):
                    scale = plan.window_size / plan.divisor_map
                y = y * _spatial_const(scale, work, cf)
        return tf.cast(y, x.dtype)

    def global_pool(self, x: tf.Tensor, spec: GlobalSpec) -> tf.Tensor:
        axes = list(spec.spatial_axes)
        cf = spec.data_format == "channels_first"
        if spec.mode == "max":
            xl = _to_last(x, cf)
            plane = tuple(xl.shape[1:-1])
            if None in plane:
                raise ValueError(f"global max pooling on TensorFlow needs static spatial "
                                 f"sizes (it is a max pool over the whole plane), got {plane}")
            ones = (1,) * spec.ndim

            y = _from_last(_exact_max(
                xl, lambda t, _fill: _native(t, "MAX", plane, plane, "VALID", ones)), cf)
            return y if spec.keepdims else tf.squeeze(y, axes)
        work = tf.float32 if x.dtype in _LOW_PRECISION else x.dtype
        xw = tf.cast(x, work)
        if spec.mode == "avg":
            y = tf.reduce_mean(xw, axis=axes, keepdims=spec.keepdims)
        else:
            y = _root(tf.reduce_sum(_power(xw, spec.p), axis=axes, keepdims=spec.keepdims),
                      spec.p)
        return tf.cast(y, x.dtype)

    def adaptive_pool(self, x: tf.Tensor, plan: AdaptivePlan):
        spec = plan.spec
        if spec.mode == "max":
            table, valid = lowering.bin_cells(plan)
            y, idx = _first_max(x, spec.data_format == "channels_first", table, valid,
                                plan.out_size)
            return (y, idx) if spec.return_indices else y
        work = tf.float32 if x.dtype in _LOW_PRECISION else x.dtype
        y = tf.cast(x, work)
        for d, axis in enumerate(spec.spatial_axes):
            index, valid = plan.gather(d)
            taken = tf.gather(y, tf.constant(index), axis=axis)  # (..., out, width, ...)
            trailing = (1,) * (len(x.shape) - axis - 1)
            mask = tf.constant(valid.reshape(valid.shape + trailing))
            count = valid.sum(axis=1).reshape((-1,) + trailing).astype(np.float64)
            y = tf.reduce_sum(tf.where(mask, taken, tf.zeros_like(taken)), axis=axis + 1)
            y = y / tf.constant(count, work)
        return tf.cast(y, x.dtype)

    def max_unpool(self, y: tf.Tensor, indices: tf.Tensor, spec: UnpoolSpec,
                   out_size: tuple[int, ...]) -> tf.Tensor:
        cf = spec.data_format == "channels_first"
        nd = spec.ndim
        yc = y if cf else tf.transpose(y, [0, nd + 1, *range(1, nd + 1)])
        ic = indices if cf else tf.transpose(indices, [0, nd + 1, *range(1, nd + 1)])
        n, channels, size = _batch(yc), yc.shape[1], math.prod(out_size)
        rows = tf.reshape(yc, [n * channels, math.prod(yc.shape[2:])])
        flat = tf.reshape(tf.cast(ic, tf.int64), tf.shape(rows, out_type=tf.int64))
        if tf.executing_eagerly() and flat.shape.num_elements():
            lowering.check_unpool_index(int(tf.reduce_max(flat)), out_size)
        # negative (all-padding) and, in graphs, out-of-range indices go to a dropped slot
        flat = tf.where((flat < 0) | (flat >= size), tf.constant(size, tf.int64), flat)
        n_rows = tf.shape(flat, tf.int64)[0]
        row_id = tf.broadcast_to(tf.range(n_rows)[:, None], tf.shape(flat, tf.int64))
        # an update, not a sum: overlapping windows may repeat an index (with the same value)
        out = tf.tensor_scatter_nd_update(tf.zeros(tf.stack([n_rows, size + 1]), rows.dtype),
                                          tf.stack([row_id, flat], axis=-1), rows)
        out = tf.reshape(out[:, :size], [n, channels, *out_size])
        return out if cf else tf.transpose(out, [0, *range(2, nd + 2), 1])

    def vjp(self, fn: Callable[[Any], Any], x: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        dx = tape.gradient(y, x, output_gradients=tf.cast(g, y.dtype))
        return tf.zeros_like(x) if dx is None else dx


BACKEND = TensorflowBackend()
