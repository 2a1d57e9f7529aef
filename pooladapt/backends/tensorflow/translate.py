"""The plan mapped onto TensorFlow's pooling ops. Read this file first.

One rank-generic path for 1-D, 2-D and 3-D. TF pools channels-last: channels-first input is
transposed once in and once out, unless TF's NCHW kernel takes it (a speed route). How each
plan feature is realised:

* **windows**: a plan without padding is one VALID pool. With padding, one native call where
  TF's padding gives the plan's windows (:func:`native_padding`: SAME, or MaxPool's explicit
  pairs); elsewhere the input is padded by ``plan.total_pads`` (with ``lowering.lowest`` for
  max, zeros for sums) and pooled VALID.
* **max**: MaxPool, whose gradient goes to the first maximum. It drops NaN (D5): where the
  input holds a NaN or -inf the pool is redone exactly, eagerly and under XLA on integer
  order keys, in a plain graph with builtin ops only, which TFLite and tf2onnx convert
  (quirks.py; ``compile.portable`` also drops MaxPool's explicit padding, which TFLite lacks).
* **avg**: AvgPool in ``lowering.accumulator``'s dtype; the mean of a padded copy, over
  whole windows, is rescaled by the plan's divisor map where a window counts fewer cells.
* **lp** (``lowering.lp_steps``): the window sums of ``|x| ** p``, then the root; a zero sum
  passes no gradient.
* **indices**, **adaptive max**: every window's (bin's) cells gathered from the plane
  (``lowering.window_cells``/``bin_cells``), the first maximum picked by order key and the
  value gathered at its index, so the gradient is exact.
* **global**: max is a pool whose window is the whole plane (``GlobalSpec.pool_spec``), avg
  and lp TF reductions; **adaptive avg** (``family.bin_means``): a masked gather and mean per
  dim over the plan's bins; **unpool** (``family.max_unpool``): a scatter into the plane.
* dilation, 3-D and uint32/uint64 reach TF's ops through ``quirks.op_workaround``.

Speed routes (fast.py) are asked at the hooks marked ``# route``; compile.py holds what
``tf.function`` and XLA need.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial
from typing import Any

import numpy as np
import tensorflow as tf

from pooladapt import family, lowering
from pooladapt.backends.tensorflow import fast, ops, quirks
from pooladapt.backends.tensorflow.compile import batch_size, branch, builtin_graph, static_plane
from pooladapt.backends.tensorflow.quirks import to_first, to_last
from pooladapt.plan import AdaptivePlan, Pads, PoolPlan, resolve_plan
from pooladapt.spec import GlobalSpec


def pool(x: tf.Tensor, plan: PoolPlan) -> Any:
    """Pool ``x`` (in the spec's layout) by the plan."""
    spec = plan.spec
    if spec.return_indices:
        return max_with_indices(x, plan)
    nchw = spec.channels_first and fast.nchw_route(x, plan)  # route: TF's NCHW kernel
    move = spec.channels_first and not nchw
    y = (max_pool if spec.mode == "max" else sum_pool)(to_last(x, move), plan, nchw)
    return to_first(y, move)


def max_pool(x: tf.Tensor, plan: PoolPlan, nchw: bool) -> tf.Tensor:
    """MaxPool of the channels-last (or ``nchw``) ``x``, made exact where it drops NaN (D5)
    and where a window holds padding only."""
    padding = native_padding(plan)
    y = window_pool(x, plan, nchw, padding)
    if not x.dtype.is_floating:
        return y
    if builtin_graph():  # builtin ops only: TFLite and tf2onnx convert the graph
        exact = partial(quirks.max_of_builtins, x, y, lambda t: window_pool(
            t, plan, nchw, padding))
    else:  # the gradient reaches x through y alone: no zeros from tf.cond's other branch
        def exact() -> tf.Tensor:  # built only where taken: an eager op costs tens of µs
            return quirks.max_of_keys(tf.stop_gradient(x), y, lambda keys, fill:
                                      window_pool(keys, plan, nchw, padding, fill))
    # route: a small CPU tensor checked for NaN on the host
    y = branch(quirks.may_drop_nan(x, fast.nan_check_on_host(x)), exact, lambda: y)
    return quirks.minus_inf_where_empty(y, plane_constant(
        plan.empty_windows, tf.bool, nchw)) if plan.all_padding_windows else y


def sum_pool(x: tf.Tensor, plan: PoolPlan, nchw: bool) -> tf.Tensor:
    """Avg or lp of the channels-last (or ``nchw``) ``x`` in the accumulator dtype: TF's mean
    (VALID, or SAME, which excludes the padding), or a padded copy's mean over whole windows
    rescaled to the plan's divisors (or the ``depthwise_sum`` route's sums)."""
    spec, padding = plan.spec, native_padding(plan)
    t = tf.cast(x, lowering.accumulator(x.dtype.name))
    t = lp_power(t, spec.p) if spec.mode == "lp" else t
    sums = None if nchw or padding is not None else fast.depthwise_sum(t, plan)  # route
    if spec.mode == "lp":
        sums = window_pool(t, plan, nchw, padding) * plan.window_size if sums is None else sums
        return tf.cast(lp_root(sums, spec.p), x.dtype)
    if sums is not None:
        return tf.cast(sums / plane_constant(plan.divisor_map, t.dtype, False), x.dtype)
    y = window_pool(t, plan, nchw, padding)
    if padding is None and plan.uniform_divisor != plan.window_size:  # a mean of whole windows
        with np.errstate(divide="ignore"):
            y = y * plane_constant(plan.window_size / plan.divisor_map, t.dtype, nchw)
    return tf.cast(y, x.dtype)


def max_with_indices(x: tf.Tensor, plan: PoolPlan) -> tuple[tf.Tensor, ...]:
    """Max and the per-plane index of each window's first maximum: every window's cells
    gathered (:func:`gather_first_max`), or the ``indices_taps`` route."""
    gather = partial(gather_first_max, x, plan.spec.channels_first,
                     *lowering.window_cells(plan), plan.out_size)
    if fast.taps_route(x, plan):  # route: the native max, then the first tap equal to it
        return fast.max_by_taps(x, plan, lambda xl: window_pool(
            xl, plan, False, native_padding(plan)), gather)
    return gather()


def window_pool(x: tf.Tensor, plan: PoolPlan, nchw: bool, padding: str | Pads | None,
                fill: Any = None) -> tf.Tensor:
    """Max (mode max) or mean (avg, lp) of every window over ``x``, channels-last or (``nchw``)
    on TF's NCHW kernel; padded cells hold ``fill`` (default: ``lowering.lowest`` for max, 0).
    The mean divides by the whole window, except SAME's, which excludes the padding."""
    spec = plan.spec
    kind = "MAX" if spec.mode == "max" else "AVG"
    if nchw and not quirks.nchw_kernel(kind, x.dtype):  # the exact max's integer keys
        return to_first(window_pool(to_last(x), plan, False, padding, fill))
    if padding is None or (nchw and not isinstance(padding, str)):  # NCHW: no explicit pads
        fill = (lowering.lowest(x.dtype.name) if kind == "MAX" else 0) if fill is None else fill
        pads = [(0, 0), (0, 0), *plan.total_pads] if nchw else [(0, 0), *plan.total_pads, (0, 0)]
        x, padding = tf.pad(x, pads, constant_values=fill), "VALID"
    return (quirks.nchw_pool(x, kind, spec.window, spec.stride, padding) if nchw
            else tf_pool(x, spec.window, spec.stride, padding, spec.dilation, kind))


def native_padding(plan: PoolPlan) -> str | Pads | None:
    """TF's padding that gives the plan's windows in one pool: "VALID" (no padding), "SAME",
    MaxPool's explicit pairs; None: pad a copy and pool it VALID."""
    if not plan.has_padding:
        return "VALID"
    if fast.same_route(plan):  # route: TF's SAME windows are the plan's
        return "SAME"
    max_pads = plan.spec.mode == "max" and quirks.explicit_max_padding(plan)
    return plan.total_pads if max_pads else None


def tf_pool(x: tf.Tensor, window, stride, padding: str | Pads, dilation, kind: str) -> tf.Tensor:
    """One TF pool (``kind`` "MAX" or "AVG") of the channels-last ``x``, or the workaround TF
    needs for these arguments; ``padding`` is "SAME", "VALID" or MaxPool's explicit pairs."""
    workaround = quirks.op_workaround(len(window), stride, dilation, x.dtype.name)
    if workaround is not None:
        return workaround(x, partial(tf_pool, kind=kind), window, stride, padding, dilation)
    if any(r > 1 for r in dilation):  # stride 1 here
        return tf.nn.pool(x, window, kind, strides=stride, padding=padding, dilations=dilation)
    y = fast.raw_pool(x, kind, window, stride, padding)  # route: the raw op, cached attributes
    pool = tf.nn.max_pool if kind == "MAX" else tf.nn.avg_pool
    return y if y is not None else pool(
        x, window, stride, padding if isinstance(padding, str) else [(0, 0), *padding, (0, 0)])


def gather_first_max(x: tf.Tensor, cf: bool, table: np.ndarray, valid: np.ndarray,
                     out_size: tuple[int, ...]) -> tuple[tf.Tensor, ...]:
    """Max of every window listed by ``table`` (per-plane cells, ``valid`` where real) and the
    index of its first maximum (the first NaN if any; -1 and the lowest value where no cell
    is valid); the value is gathered at that index, so its gradient is exact. ``cf``: ``x`` is
    channels-first (else channels-last), as both results are."""
    xc = to_first(x, not cf)
    n, channels, plane = batch_size(xc), xc.shape[1], math.prod(xc.shape[2:])
    xc = tf.reshape(xc, [n, channels, plane])
    cells = tf.gather(xc, table, axis=2)  # (N, C, windows, cells)
    keys = quirks.order_key(cells) if x.dtype.is_floating else cells  # a NaN is the top key
    keys = tf.where(valid, keys, keys.dtype.min)
    winners = (keys == tf.reduce_max(keys, axis=-1, keepdims=True)) & valid
    # cells are listed in row-major order: the first maximum has the smallest index
    first = tf.reduce_min(tf.where(winners, table, plane), axis=-1)
    idx = tf.where(first < plane, first, -1)
    y = tf.where(idx >= 0, tf.gather(xc, tf.maximum(idx, 0), batch_dims=2),
                 lowering.lowest(x.dtype.name))
    return tuple(to_last(tf.reshape(t, [n, channels, *out_size]), not cf) for t in (y, idx))


@lru_cache(maxsize=256)
def whole_plane(spec: GlobalSpec, plane: tuple[int, ...]) -> PoolPlan:
    return resolve_plan(spec.pool_spec(plane), plane)


def global_pool(x: tf.Tensor, spec: GlobalSpec) -> tf.Tensor:
    """Max: a pool whose window is the whole plane; avg and lp: TF reductions (which take
    spatial sizes unknown while a graph is traced)."""
    axes = list(spec.spatial_axes)
    if spec.mode == "max":
        y = pool(x, whole_plane(spec, static_plane(x, spec.spatial_axes)))
        return y if spec.keepdims else tf.squeeze(y, axes)
    t = tf.cast(x, lowering.accumulator(x.dtype.name))
    y = tf.reduce_mean(t, axes, spec.keepdims) if spec.mode == "avg" else lp_root(
        tf.reduce_sum(lp_power(t, spec.p), axes, spec.keepdims), spec.p)
    return tf.cast(y, x.dtype)


def adaptive_pool(x: tf.Tensor, plan: AdaptivePlan) -> Any:
    """Max: every bin's cells gathered (:func:`gather_first_max`); avg: ``family.bin_means``."""
    spec = plan.spec
    if spec.mode == "max":
        y, idx = gather_first_max(x, spec.data_format == "channels_first",
                                  *lowering.bin_cells(plan), plan.out_size)
        return (y, idx) if spec.return_indices else y
    return family.bin_means(ops.MEANS, x, plan)


max_unpool = partial(family.max_unpool, ops.UNPOOL)  # one scatter with row offsets


def plane_constant(a: np.ndarray, dtype: tf.DType, channels_first: bool) -> tf.Tensor:
    """A constant over the output plane that broadcasts against the pooled tensor."""
    return tf.constant(a[None, None] if channels_first else a[None, ..., None], dtype)


def lp_power(x: tf.Tensor, p: float) -> tf.Tensor:
    """``|x| ** p`` (a square for 2, ``abs`` for 1)."""
    power = lowering.lp_steps(p).power
    return tf.square(x) if power == 2 else tf.abs(x) if power == 1 else tf.pow(tf.abs(x), power)


def lp_root(s: tf.Tensor, p: float) -> tf.Tensor:
    """``s ** (1/p)``; 0 with no gradient where ``s`` is 0."""
    root = lowering.lp_steps(p).root
    if root is None:
        return s
    safe = tf.where(zero := tf.equal(s, 0), tf.ones_like(s), s)
    return tf.where(zero, tf.zeros_like(s), tf.sqrt(safe) if root == 0.5 else tf.pow(safe, root))
