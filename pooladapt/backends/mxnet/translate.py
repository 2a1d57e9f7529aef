"""The plan mapped onto MXNet's ops. Read this first.

Graph code takes the op namespace ``F``: ``mx.nd``, or ``mx.sym`` in a hybridized Gluon block
(compile.py), and x in the spec's own layout, any rank.

* The one question (:func:`native_cover`): float input without dilation runs ``Pooling``, whose
  symmetric pads (the plan's low pads, grown by whole strides where they fall short) and
  ``'full'`` convention give the plan's windows, then cropped to them
  (``lowering.symmetric_cover``, ``quirks.crop_to_plan``); where no pad fits, x is padded
  explicitly (-inf for max, 0 for sums) and pooled VALID.
* max: that ``Pooling``. MXNet skips NaN and gives a window of -inf the lowest finite value:
  the batch rows holding a NaN or an infinity are restored (quirks.py), from the taps where
  a gradient is recorded; a graph, which holds no values to check, always restores (the
  gradient of such a window is 0 there, as MXNet's own). Indices: each window's first tap
  equal to its max. Integers and dilation, which ``Pooling`` lacks: the taps (strided
  slices) of the input padded with the dtype's lowest value, a NaN or a strictly greater
  value winning, a window's first real cell beating its padding.
* avg: the window sums (``Pooling`` 'sum'; the taps' sum with dilation) divided by the plan's
  divisor, one number or its divisor map. lp: ``Pooling`` 'lp' of ``|x|`` for p of 1 and 3
  (MXNet keeps the sign), of x for 2, else the window sums of ``|x| ** p`` and their root, a
  zero sum giving 0 (``lowering.lp_steps``). Both in float32 (float64 for float64).
* global: the pool whose window is the whole plane (``GlobalSpec.pool_spec``, __init__.py).
* adaptive, non-uniform bins (the core routes uniform ones to the pool): avg by
  ``contrib.AdaptiveAvgPooling2D``, one dim at a time unless 2-D channels first (a box's mean
  is the mean of its rows' means); max ``family.bin_first_max`` (``plan.gather``).
* unpool: ``family.max_unpool``, ``scatter_nd`` of each plane into zeros, negative indices
  into a spare cell.

Speed routes (fast.py) are asked at the lines marked ``# speed route``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import mxnet as mx
import numpy as np

from pooladapt import family, lowering
from pooladapt.backends.mxnet import compile, fast, ops, quirks
from pooladapt.lowering import Cover
from pooladapt.plan import AdaptivePlan, PoolPlan

nd = mx.nd
CHANNELS_LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}  # channels first is Pooling's default


def takes_taps(plan: PoolPlan, dtype: str) -> bool:
    """Integers and dilation, which ``Pooling`` lacks, are computed from the window's taps."""
    return dtype not in quirks.POOLING_DTYPES or max(plan.spec.dilation) > 1


@functools.lru_cache(maxsize=512)
def native_cover(plan: PoolPlan) -> Cover | None:
    """The symmetric pads and convention (MXNet takes pads < window) that make ``Pooling``
    give the plan's windows; None: x is padded explicitly."""
    return lowering.symmetric_cover(plan, "full", tuple(k - 1 for k in plan.spec.window),
                                    skip_windows=True)


def lowers_natively(plan: PoolPlan, dtype: str) -> bool:
    """Whether :func:`pool_graph` computes the plan as one ``Pooling`` call (a crop and max's
    NaN repair aside), not taps, explicit padding, a divisor map, powers or indices."""
    spec = plan.spec
    if takes_taps(plan, dtype) or native_cover(plan) is None or spec.return_indices:
        return False
    return (spec.mode == "max" or spec.mode == "avg" and plan.uniform_divisor is not None
            or spec.mode == "lp" and spec.p in quirks.NATIVE_LP)


def pool_graph(F: Any, x: Any, plan: PoolPlan, dtype: str) -> Any:
    """The pooling of ``plan`` on ``x`` (an ``F`` array or symbol of dtype ``dtype``), with
    int64 per-plane indices where ``plan.spec.return_indices`` (``mx.nd`` only)."""
    if plan.spec.mode != "max":
        return _avg_or_lp(F, x, plan, dtype)
    if takes_taps(plan, dtype):
        return _tap_max(F, x, plan, dtype)
    return _pooling_max(F, x, plan, dtype)


def _pooling(F: Any, x: Any, plan: PoolPlan, pool_type: str, padded: bool = False,
             **kw: Any) -> Any:
    """``Pooling`` of x giving the plan's windows (``padded``: x is padded by
    ``plan.total_pads`` already, pooled VALID)."""
    spec = plan.spec
    cover = ops.valid_cover(plan) if padded else native_cover(plan)
    if cover is None:
        x = ops.pad(F, x, spec, plan.total_pads, -math.inf if pool_type == "max" else 0)
        return _pooling(F, x, plan, pool_type, True, **kw)
    y = fast.max_view(F, x, plan, cover) if pool_type == "max" else None  # speed route
    if y is None:
        if not spec.channels_first:
            kw["layout"] = CHANNELS_LAST[spec.ndim]
        y = F.Pooling(x, kernel=spec.window, stride=spec.stride,
                      **ops.pooling_args(pool_type, cover.ceil, cover.pads), **kw)
    return quirks.crop_to_plan(F, y, plan, cover)


def _pooling_max(F: Any, x: Any, plan: PoolPlan, dtype: str) -> Any:
    """``Pooling``'s max, the batch rows holding a NaN or an infinity restored (exactly: from
    the taps where indices or a gradient are asked for); indices: each window's first tap
    equal to its max (padding and -inf never equal a finite max)."""
    spec = plan.spec
    if dtype == "float16" and fast.half_as_float():  # speed route
        out = _pooling_max(F, F.cast(x, "float32"), plan, "float32")
        return (F.cast(out[0], dtype), out[1]) if spec.return_indices else F.cast(out, dtype)

    def pool(t: Any) -> Any:
        return _pooling(F, t, plan, "max")

    def native(t: Any) -> Any:
        with quirks.recorded_input(t, copy=spec.channels_first) as recorded:
            y = pool(recorded)
        return (y, ops.first_equal_tap(t, y, plan)) if spec.return_indices else y

    def exact(t: Any) -> Any:
        if spec.return_indices or mx.autograd.is_recording():
            return _tap_max(F, t, plan, dtype)
        return quirks.restore_max(F, t, pool(t), pool)

    if F is mx.sym:  # a graph holds no values to check
        return quirks.restore_max(F, x, pool(x), pool)
    rows = quirks.nonfinite_rows(x, fast.host_values(x))  # speed route
    return quirks.with_rows_fixed(x, rows, native, exact)


def _tap_max(F: Any, x: Any, plan: PoolPlan, dtype: str) -> Any:
    """The max over the taps of x padded with the dtype's lowest value; a window's first real
    cell beats the padding before it even when equal: it gets the index and the gradient."""
    spec = plan.spec
    padded = ops.pad(F, x, spec, plan.total_pads, lowering.lowest(dtype))
    maps = [ops.constant(m, spec, x, "float64") for m in lowering.tap_index_maps(plan)] if (
        spec.return_indices) else None
    first = compile.first_real_taps(F, x, plan, dtype) if plan.has_padding else None
    best, idx = ops.max_over(F, ops.tap_slices(F, padded, plan), maps, dtype, force=first)
    return (best, F.cast(idx, "int64")) if spec.return_indices else best


def _window_sums(F: Any, x: Any, plan: PoolPlan, taps: bool, padded: bool = False) -> Any:
    """Window sums, padding adding 0 (``padded``: x is padded by ``plan.total_pads``)."""
    if not taps:
        return _pooling(F, x, plan, "sum", padded)
    xp = x if padded else ops.pad(F, x, plan.spec, plan.total_pads, 0)
    return F.add_n(*ops.tap_slices(F, xp, plan))


def _avg_or_lp(F: Any, x: Any, plan: PoolPlan, dtype: str) -> Any:
    """avg and lp (float input), computed in float32 or float64."""
    spec = plan.spec
    acc = lowering.accumulator(dtype)
    x = F.cast(x, acc) if acc != dtype else x
    taps = takes_taps(plan, dtype)
    if spec.mode == "avg" and fast.onednn_avg(plan, acc):  # speed route
        y = _pooling(F, x, plan, "avg", count_include_pad=spec.count_include_pad)
    elif spec.mode == "avg":
        s = _window_sums(F, x, plan, taps)
        div = plan.uniform_divisor  # 0 (windows of padding only) gives 0 / 0 = NaN
        y = s / div if div is not None else F.broadcast_div(s, compile.divisor_map(
            F, x, plan, acc, lambda ones: _window_sums(F, ones, plan, taps, padded=True)))
    elif not taps and spec.p in quirks.NATIVE_LP:
        even = spec.p == 2.0  # x * x is |x| * |x|, and x / y its gradient, bit for bit
        y = _pooling(F, x if even else F.abs(x), plan, "lp", p_value=int(spec.p))
    else:
        steps = lowering.lp_steps(spec.p)
        y = _window_sums(F, F.abs(x) if steps.power == 1 else F.square(x) if steps.power == 2
                         else F.power(F.abs(x), steps.power), plan, taps)
        if steps.root is not None:  # no root of a zero sum: 0, and no NaN gradient there
            zero = y == 0
            y = F.where(zero, F.zeros_like(y), F.power(F.where(zero, F.ones_like(y), y),
                                                       steps.root))
    return F.cast(y, dtype) if acc != dtype else y


def adaptive(x: Any, plan: AdaptivePlan) -> Any:
    """Non-uniform adaptive bins of an ``mx.nd`` array, with indices for max where asked: avg
    ``quirks.adaptive_avg``, max ``family.bin_first_max`` (by ``ops.max_over``)."""
    spec, dtype = plan.spec, ops.dtype_name(x.dtype)
    if spec.mode == "avg":
        acc = lowering.accumulator(dtype)
        out = quirks.adaptive_avg(x.astype(acc) if acc != dtype else x, plan)
        return out.astype(dtype) if acc != dtype else out
    flat = ops.constant(np.arange(math.prod(plan.in_size)).reshape(plan.in_size), spec, x,
                        "float64")
    out, flat = family.bin_first_max(ops.BIN_MAX, x, flat, family.plan_bins(plan))
    return (out, nd.cast(flat, "int64")) if spec.return_indices else out


unpool = functools.partial(family.max_unpool, ops.UNPOOL)  # scatter_nd with a spare cell
