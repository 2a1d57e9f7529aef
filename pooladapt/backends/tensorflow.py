"""The TensorFlow backend: ``tf.nn`` pooling, exact emulation where TF falls short.

A plan that MaxPool/AvgPool can express is one native call: ``valid``, TF's own ``SAME``
(= ``same_upper``, which for avg excludes padding as canonical avg does) and, for max,
MaxPool's explicit padding (not under XLA, which lacks it: there the input is padded).
Channels-first 2-D input runs on TF's NCHW kernel (oneDNN's on CPU) when it has one and
8+ channels or a small tensor; its CPU gradient exists only in NHWC, so where a gradient
may be asked for (a tape, a graph) a ``tf.custom_gradient`` computes it there. Other
channels-first input is transposed in and out. A padded avg or lp sums its windows with a
depthwise convolution of ones (which pads by itself) and divides by the plan's constant
divisor map; elsewhere the input is padded (-inf or the dtype minimum for max, zeros for
sums) and pooled VALID. Quirks closed here:

* MaxPool drops NaN and starts from the lowest finite value (an all-NaN or all -inf window
  gives -3.4e38 eager): when the input holds a NaN or -inf (one reduction tells: eagerly its
  minimum, read by NumPy for a tiny CPU tensor; in graphs its sum, as XLA's min drops NaN),
  the max is redone on integer order keys of the floats, which is exact. That one read of
  the input is the backend's whole cost over MaxPool on large inputs.
* XLA's SAME MaxPool gradient sends ties to the wrong cell: under XLA, SAME max is padded.
* Every TF CPU kernel and cast (XLA included) treats subnormals as zero: a known deviation
  for bfloat16, float32 and float64 (float16 runs in float32, where its subnormals are
  normal). Detecting them would cost more than the pool: TF itself never makes one on CPU.
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
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import cache, lru_cache
from typing import Any

import numpy as np
import tensorflow as tf

from pooladapt.backends.base import EMULATED, FEATURES, NATIVE, Backend
from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan, UnpoolSpec, same_pads

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


@cache
def _nchw_kernel(kind: str, dtype: tf.DType) -> bool:
    """True when TF has a channels-first forward kernel for this pool and dtype here (CPU:
    oneDNN's, float32 and bfloat16, none with ``TF_ENABLE_ONEDNN_OPTS=0``); tried once."""
    with tf.init_scope():
        try:
            _raw_pool(kind, tf.zeros([1, 1, 2, 2], dtype), ksize=[1, 1, 2, 2],
                      strides=[1, 1, 1, 1], padding="VALID", data_format="NCHW")
            return True
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError,
                tf.errors.NotFoundError):
            return False


def _raw_pool(kind: str, x: tf.Tensor, **args) -> tf.Tensor:
    if kind == "MAX":
        return tf.raw_ops.MaxPool(input=x, **args)
    return tf.raw_ops.AvgPool(value=x, **args)


_NCHW_SMALL = 1 << 16  # cells: below this TF's NCHW kernel beats two transposes at any shape


def _nchw_route(x: tf.Tensor, plan: PoolPlan, kind: str) -> bool:
    """True when the channels-first ``x`` is pooled on TF's NCHW kernel, not transposed: a
    2-D plan without dilation, a kernel for the dtype, not under XLA (whose NCHW MaxPool
    gradient with SAME padding misplaces ties), and 8 or more channels or a small tensor
    (oneDNN's NCHW pooling of a few large planes is 5-20x slower than two transposes)."""
    spec = plan.spec
    if not (spec.ndim == 2 and all(r == 1 for r in spec.dilation)
            and _nchw_kernel(kind, x.dtype)) or _in_xla():
        return False
    cells = x.shape.num_elements()
    return (x.shape[1] or 0) >= 8 or (cells is not None and cells <= _NCHW_SMALL)


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
    if len(window) == 2:  # the raw op: tf.nn's wrapper re-validates its arguments per call
        return _raw_pool(kind, x, **_nhwc_args(window, stride, padding))
    if not isinstance(padding, str):
        padding = [(0, 0), *padding, (0, 0)]
    pool = tf.nn.max_pool if kind == "MAX" else tf.nn.avg_pool
    return pool(x, window, stride, padding)


@lru_cache(maxsize=256)
def _nhwc_args(window, stride, padding) -> dict[str, Any]:
    """Attributes of a 2-D NHWC MaxPool/AvgPool; explicit ``padding`` (MaxPool only) as
    ``(low, high)`` pairs."""
    args = dict(ksize=[1, *window, 1], strides=[1, *stride, 1], padding=padding)
    if not isinstance(padding, str):
        pads = [0, 0, *(p for pair in padding for p in pair), 0, 0]
        args.update(padding="EXPLICIT", explicit_paddings=pads)
    return args


@lru_cache(maxsize=256)
def _is_tf_same(plan: PoolPlan) -> bool:
    """True when TF's own SAME padding gives the plan's windows: same first window and count
    in every dim (``same_upper``, and e.g. padding 1 of a 3/2 window over an odd size)."""
    spec = plan.spec
    if not plan.has_padding or any(r != 1 for r in spec.dilation):
        return False
    return all(out == -(-n // s) and lo == same_pads(n, k, s, lower=False)[0]
               for n, k, s, out, (lo, _) in zip(plan.in_size, spec.window, spec.stride,
                                                plan.out_size, plan.pads))


@lru_cache(maxsize=256)
def _explicit_ok(plan: PoolPlan) -> bool:
    """True when MaxPool's explicit padding expresses the plan (no dilation, and each high
    pad shorter than the window, as MaxPool requires)."""
    spec = plan.spec
    return all(r == 1 and hi < k for r, k, (_, hi) in
               zip(spec.dilation, spec.window, plan.total_pads))


def _in_xla() -> bool:
    """True while tracing for XLA (``jit_compile``), which lacks explicit pooling padding.

    Known only at trace time: a plain ``tf.function`` traced outside XLA and later called
    inside a ``jit_compile`` one keeps its explicit-padding MaxPool, which XLA rejects (an
    error, never a wrong value)."""
    if tf.executing_eagerly():
        return False
    enclosing = getattr(tf.__internal__, "get_enclosing_xla_context", None)
    return enclosing is None or enclosing() is not None


def _reduce(x: tf.Tensor, plan: PoolPlan, kind: str, same: bool, fill=None) -> tf.Tensor:
    """Max or mean of every window of the plan over ``x`` (in the spec's layout); padded
    cells hold ``fill`` (default: the dtype's lowest value for max, 0 for the mean). With
    ``same`` (only when :func:`_is_tf_same`), TF's SAME: its mean excludes the padding;
    otherwise the mean divides by the whole window. Channels-first input runs on TF's NCHW
    kernel where there is one (2-D, no dilation), else transposed around the NHWC pool."""
    spec = plan.spec
    if fill is None:
        fill = _lowest(x.dtype) if kind == "MAX" else 0
    if spec.channels_first:
        if not _nchw_route(x, plan, kind):
            return _from_last(_reduce_last(_to_last(x, True), plan, kind, same, fill), True)
        if same:
            return _pool_nchw(x, kind, spec.window, spec.stride, "SAME")
        if plan.has_padding:  # the NCHW kernels take no explicit padding
            x = _pad(x, plan.total_pads, fill, True)
        return _pool_nchw(x, kind, spec.window, spec.stride, "VALID")
    return _reduce_last(x, plan, kind, same, fill)


def _reduce_last(x: tf.Tensor, plan: PoolPlan, kind: str, same: bool, fill) -> tf.Tensor:
    """:func:`_reduce` of a channels-last ``x``."""
    spec = plan.spec
    xla = _in_xla()
    if same and not (xla and kind == "MAX"):
        return _native(x, kind, spec.window, spec.stride, "SAME", spec.dilation)
    # XLA's SAME MaxPool gradient sends ties to the wrong cell: padded VALID there
    if kind == "MAX" and plan.has_padding and _explicit_ok(plan) and not xla:
        # MaxPool's own explicit padding (no copy); XLA has none
        return _native(x, kind, spec.window, spec.stride, plan.total_pads, spec.dilation)
    if plan.has_padding:
        x = _pad(x, plan.total_pads, fill, False)
    return _native(x, kind, spec.window, spec.stride, "VALID", spec.dilation)


def _window_sum(x: tf.Tensor, plan: PoolPlan) -> tf.Tensor | None:
    """Sum of every window of a padded 2-D plan over a channels-last float ``x`` (padding
    counting 0) as one depthwise convolution with a filter of ones, which pads by itself
    (AvgPool takes no explicit padding: a padded copy); None where it does not apply (its
    strides must be equal; channels first it would transpose)."""
    spec = plan.spec
    if not (plan.has_padding and spec.ndim == 2 and not spec.channels_first
            and spec.stride[0] == spec.stride[1] and all(r == 1 for r in spec.dilation)
            and x.shape[-1] is not None):
        return None
    ones = tf.ones([*spec.window, x.shape[-1], 1], x.dtype)
    return tf.nn.depthwise_conv2d(x, ones, [1, *spec.stride, 1],
                                  [(0, 0), *plan.total_pads, (0, 0)])


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


_HOST_CHECK = 1 << 14  # cells: below this a NumPy read of a CPU tensor beats a TF op


def _suspect_now(x: tf.Tensor) -> bool:
    """:func:`_suspect` for an eager float tensor: its minimum is NaN or -inf. TF's eager
    reduce_min propagates NaN (only XLA's drops it) and never overflows."""
    n = x.shape.num_elements()
    if not n:
        return False
    if n <= _HOST_CHECK and x.device.endswith("CPU:0"):
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


def _window_table(index, valid, in_size) -> tuple[np.ndarray, np.ndarray]:
    """Flat plane index and validity of every window cell, shaped (windows, cells), from
    per-dim (out, width) coordinate and validity tables; invalid cells point at 0."""
    flat, ok = np.zeros((), np.int64), np.ones((), bool)
    for d, (idx, val) in enumerate(zip(index, valid)):
        flat = np.add.outer(flat, idx * math.prod(in_size[d + 1:]))
        ok = np.logical_and.outer(ok, val)
    nd = len(index)
    order = [*range(0, 2 * nd, 2), *range(1, 2 * nd, 2)]
    n_out = math.prod(idx.shape[0] for idx in index)
    flat = flat.transpose(order).reshape(n_out, -1)
    ok = ok.transpose(order).reshape(n_out, -1)
    return np.where(ok, flat, 0), ok


@lru_cache(maxsize=256)
def _pool_table(plan: PoolPlan) -> tuple[np.ndarray, np.ndarray]:
    spec = plan.spec
    index, valid = [], []
    for d in range(spec.ndim):
        starts = np.asarray(plan.window_starts(d), dtype=np.int64)
        coords = starts[:, None] + spec.dilation[d] * np.arange(spec.window[d])[None, :]
        index.append(coords)
        valid.append((coords >= 0) & (coords < plan.in_size[d]))
    return _window_table(index, valid, plan.in_size)


@lru_cache(maxsize=256)
def _adaptive_table(plan: AdaptivePlan) -> tuple[np.ndarray, np.ndarray]:
    pairs = [plan.gather(d) for d in range(plan.spec.ndim)]
    return _window_table([p[0] for p in pairs], [p[1] for p in pairs], plan.in_size)


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


_FLUSHED = ("TensorFlow's CPU kernels and casts (XLA included) treat subnormals as zero: an "
            "average or lp result below the smallest normal float comes out 0, and a max "
            "compares a subnormal equal to 0 (so [0, 1e-40] gives 0, index 0), unless the "
            "input also holds a NaN or -inf, which takes the exact path")


def _max_with_indices(x: tf.Tensor, plan: PoolPlan) -> tuple[tf.Tensor, tf.Tensor]:
    """Max pooling with per-plane indices of the first maximum. Fast path: the native max,
    then, tap by tap, which cells equal it; the first maximum is the one nearest the window's
    start. Exact when every window holds a real cell and :func:`_suspect` finds nothing;
    otherwise the gather path (:func:`_first_max`)."""
    spec = plan.spec
    cf = spec.channels_first

    def gather():
        table, valid = _pool_table(plan)
        return _first_max(x, cf, table, valid, plan.out_size)

    if not x.dtype.is_floating or plan.all_padding_windows or math.prod(plan.in_size) >= 2**30:
        return gather()

    same = _is_tf_same(plan)

    def window_max(t: tf.Tensor, fill) -> tf.Tensor:
        return _reduce_last(t, plan, "MAX", same, _lowest(t.dtype) if fill is None else fill)

    xl = _to_last(x, cf)
    y = window_max(xl, None)

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
        base = tf.constant(_window_base(plan)[None, ..., None])
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


@lru_cache(maxsize=256)
def _window_base(plan: PoolPlan) -> np.ndarray:
    """Per-plane flat index of every window's first tap (negative inside the padding)."""
    base = np.zeros((), np.int64)
    for d in range(plan.spec.ndim):
        starts = np.asarray(plan.window_starts(d), np.int64)
        base = np.add.outer(base, starts * math.prod(plan.in_size[d + 1:]))
    return base


class TensorflowBackend(Backend):
    name = "tensorflow"
    framework = "tensorflow"
    supports_autograd = True
    known_deviations = {f"subnormals:{d}": _FLUSHED for d in ("bfloat16", "float32", "float64")}

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
            same = _is_tf_same(plan)
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
            s = _window_sum(xw, plan)
            if s is None:
                s = _reduce(xw, plan, "AVG", same=False) * plan.window_size
            return tf.cast(_root(s, spec.p), x.dtype)
        if (_is_tf_same(plan) and not spec.count_include_pad) or not plan.has_padding:
            return tf.cast(_reduce(xw, plan, "AVG", same=plan.has_padding), x.dtype)
        s = _window_sum(xw, plan)
        if s is not None:
            y = s / _spatial_const(plan.divisor_map, work, cf)
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
        if plan.uniform:
            return self.pool(x, plan.as_pool_spec().plan(tuple(x.shape)))
        if spec.mode == "max":
            table, valid = _adaptive_table(plan)
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
            top = int(tf.reduce_max(flat))
            if top >= size:
                raise ValueError(f"an index ({top}) is outside the output plane {out_size!r}")
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
