"""The plan mapped onto torch's pooling ops. Read this file first.

One rank-generic path for 1-D, 2-D and 3-D. Every op runs on a channels-first *view* of the
input (``permute``, no copy): a channels_last tensor becomes an NC* tensor in torch's
channels_last memory format, which torch's CPU kernels pool directly. How each plan feature
is realised:

* **windows**: torch pads both sides alike, at most half the window. Where padding the
  plan's low pads on both sides (with torch's ceil mode, extra windows cropped) gives the
  plan's windows (``lowering.symmetric_cover``), one ``F.*pool*d`` call computes them;
  elsewhere the input is padded explicitly by ``plan.total_pads`` and pooled VALID.
* **max**: explicit padding takes the dtype's lowest value (``lowering.lowest``), so padding
  never wins; NaN propagates in torch's kernels. Indices into an explicitly padded plane are
  mapped back to the input plane; where torch's index is not the contract's (the first NaN
  of a window; the first real cell of a window whose maximum is the lowest value) quirks.py
  fixes it.
* **avg**: ``F.avg_pool*d`` where its divisor is the plan's (padding not counted, or counted
  and symmetric); else the window sums in ``lowering.accumulator``'s dtype (``avg_pool`` with
  ``divisor_override=1``; with dilation, each dim's windows unfolded and every dilation-th
  cell summed), divided by the plan's divisor map.
* **lp**: the window sums of ``|x| ** p``, then the root (``lowering.lp_steps``); a zero sum
  passes no gradient.
* **global**: torch's reductions over the plane; **adaptive**: torch's adaptive pools (integer
  max: gather and reduce per dim over the plan's bins); **unpool** (family.py): a scatter into
  the plane.
* **dtypes and layouts** torch lacks a kernel for (unsigned integers, int8 in channels_last,
  float16 averages in 3-D, zero channels): quirks.py, one function each.

The per-plan constants (:class:`Lowered`) are built once per plan; compile.py makes them a
constant of a ``torch.compile`` graph. Speed routes (fast.py) are asked at the hooks marked
``# route``, in eager calls only. While ``torch.onnx.export`` traces, export.py first gives
the plan's one ONNX node where ONNX has it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pooladapt import config, lowering
from pooladapt.backends.torch import export, fast, quirks
from pooladapt.backends.torch.compile import PerPlan, compiling, plane_tensor
from pooladapt.layouts import FROM_NC, TO_NC
from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan


class Lowered:
    """One plan as torch call arguments and constants, decided once."""

    def __init__(self, plan: PoolPlan) -> None:
        spec = self.spec = plan.spec
        self.plan, nd = plan, spec.ndim
        # torch pads at most half the window (not its dilated extent), both sides alike
        cover = None if plan.all_padding_windows else lowering.symmetric_cover(
            plan, "drop", tuple(k // 2 for k in spec.window))
        fits = quirks.avg_pool_fits(spec.window, plan.in_size)
        self.undilated = all(d == 1 for d in spec.dilation)
        # torch's count_include_pad counts the padding it adds itself: both sides alike
        self.native = cover is not None and (spec.mode == "max" or (
            spec.mode == "avg" and self.undilated and fits
            and (not spec.count_include_pad or plan.symmetric_pads)))
        self.implicit_sum = cover is not None and fits  # avg_pool's own zero padding sums
        self.padding, self.ceil = (cover.pads, cover.ceil) if cover else ((0,) * nd, False)
        self.crop = (..., *(slice(0, o) for o in plan.out_size)) if cover and cover.crop else None
        self.max_args = (spec.window, spec.stride, self.padding, spec.dilation)
        self.total_pads, self.extent = plan.total_pads, spec.extent  # (dynamo reads no property)
        self.torch_pads = tuple(v for lo, hi in reversed(plan.total_pads) for v in (lo, hi))
        self.perms = None if spec.channels_first else (TO_NC[nd + 2], FROM_NC[nd + 2])
        self.divisors = plan.counts if spec.mode == "avg" and not self.native else None
        self.first_real = quirks.first_real_terms(plan) if spec.return_indices else None
        self.tensors: dict[tuple, torch.Tensor] = {}  # plane_tensor's, per device and dtype
        self.fast = fast.RouteConstants(self)


lowered = PerPlan(Lowered)


def pool(x: torch.Tensor, plan: PoolPlan):
    routes = None if compiling() or torch.jit.is_tracing() else config.get_speed_routes()
    if routes is None and torch.onnx.is_in_onnx_export():  # the plan's ONNX node, if any
        y = export.pool(x, plan, lambda t: _pool(t, plan, None))
        if y is not None:
            return y
    return _pool(x, plan, routes)


def _pool(x: torch.Tensor, plan: PoolPlan, routes: fast.Routes):
    lw = lowered(plan) if routes is None else lowered.eager(plan)
    y = fast.one_call_max(x, lw, routes)  # route: auto's one torch call for a small max
    return y if y is not None else _on_nc(
        x, lw.perms, lw.plan.out_size, lw.spec.return_indices, lambda xc, low: (
            _max_pool(xc, lw, low, routes) if lw.spec.mode == "max" else _sum_pool(xc, lw)),
        lw.fast, routes)


def _on_nc(x, perms, out_size, indices: bool, compute, fast_view=None, routes=None):
    """``compute(xc, lowest)`` on an NC* view of ``x`` (``perms``: to it and back, None for
    NC* input) in a dtype torch pools; its result back in ``x``'s dtype and layout."""
    x, restore, lowest = quirks.widen_unsigned(x)
    xc = x if perms is None else fast.nc_view(x, perms[0], fast_view, routes)  # route
    out = quirks.no_channels(xc, out_size, indices)
    out = compute(xc, lowest) if out is None else out
    out = list(out) if indices else [out]
    out[0] = out[0] if restore is None else restore(out[0])
    out = out if perms is None else [o.permute(perms[1]) for o in out]
    return tuple(out) if indices else out[0]


def _max_pool(xc: torch.Tensor, lw: Lowered, lowest: float | int, routes: fast.Routes):
    if not lw.spec.return_indices:
        y = fast.separable_max(xc, lw, lowest, routes)  # route
        return _max_call(xc, lw, False, lowest, routes) if y is None else y
    y, idx = _max_call(xc, lw, True, lowest, routes)
    checked = fast.fixup_check(y, routes)  # route: may a check of the values skip the fix-ups?
    if checked and fast.nothing_to_fix(y, lowest):
        return y, idx
    idx = quirks.lowest_max_index(y, idx, lowest, plane_tensor(lw, "first_real", idx,
                                                               torch.int64, product=False))
    return y, quirks.first_nan_index(y, idx, xc, checked, lambda t: _max_call(
        t, lw, True, -math.inf, routes)[1])


def _max_call(t: torch.Tensor, lw: Lowered, indices: bool, lowest, routes: fast.Routes):
    """One torch max pool of the plan on NC* ``t`` (padded explicitly where torch cannot)."""
    t, args = t if lw.native else F.pad(t, lw.torch_pads, value=lowest), lw.max_args
    lift = t.dim() == 3 and (not t.is_floating_point() or fast.lift_1d(t, routes))  # route
    t, *args = quirks.lift_1d(t, *args) if lift else (t, *args)
    t = quirks.int8_pool_input(t, routes is None)
    t, back = fast.channels_last(t, routes)  # route: pooled in channels_last memory format
    out = (getattr(F, f"max_pool{t.dim() - 2}d_with_indices")(t, *args, ceil_mode=lw.ceil)
           if indices else (getattr(torch, f"max_pool{t.dim() - 2}d")(t, *args, lw.ceil),))
    out = [(o.contiguous() if back else o)[lw.crop or ...] for o in out]
    out = [o.squeeze(2) for o in out] if lift else out
    return (out[0], out[1] if lw.native else _unpad_index(out[1], lw)) if indices else out[0]


def _unpad_index(idx: torch.Tensor, lw: Lowered) -> torch.Tensor:
    """Flat index into the explicitly padded plane -> flat index into the input plane (a cell
    in the padding is clamped to the border; quirks.lowest_max_index overwrites it)."""
    out, step = torch.zeros_like(idx), 1
    for (lo, hi), n in reversed(tuple(zip(lw.total_pads, lw.plan.in_size))):
        idx, coord = idx.div(n + lo + hi, rounding_mode="floor"), idx % (n + lo + hi)
        out, step = out + (coord - lo).clamp(0, n - 1) * step, step * n
    return out


def _sum_pool(xc: torch.Tensor, lw: Lowered) -> torch.Tensor:
    spec = lw.spec
    if lw.native:  # avg, and torch's divisor rule is the plan's
        t = xc.float() if quirks.half_sums_on(xc, spec.ndim, adaptive=False) else xc
        y = getattr(F, f"avg_pool{spec.ndim}d")(t, spec.window, spec.stride, lw.padding,
                                                 lw.ceil, spec.count_include_pad)
        return (y if lw.crop is None else y[lw.crop]).to(xc.dtype)
    t = xc.to(getattr(torch, lowering.accumulator(quirks.dtype_name(xc.dtype))))
    steps = lowering.lp_steps(spec.p) if spec.mode == "lp" else None
    t = t if steps is None else quirks.lp_power(t, steps.power)
    if lw.undilated and torch.onnx.is_in_onnx_export():  # no divisor_override in ONNX
        total = quirks.exported_window_sum(F.pad(t, lw.torch_pads), spec.window, spec.stride)
    elif lw.undilated:  # avg_pool's window sums, where torch cannot pad on zero-padded input
        total = _window_sum(t if lw.implicit_sum else F.pad(t, lw.torch_pads), lw)
    else:  # dilation: each dim's windows unfolded, every dilation-th cell summed
        total, exporting = F.pad(t, lw.torch_pads), torch.onnx.is_in_onnx_export()
        for d, (e, s, dil) in enumerate(zip(lw.extent, spec.stride, spec.dilation)):
            total = quirks.exported_tap_sum(total, 2 + d, spec.window[d], s, dil) if (
                exporting) else total.unfold(2 + d, e, s)[..., ::dil].sum(-1)
    if steps is not None:
        return quirks.lp_root(total, steps.root).to(xc.dtype)
    return (total / plane_tensor(lw, "divisors", total, total.dtype, product=True)).to(xc.dtype)


def _window_sum(t: torch.Tensor, lw: Lowered) -> torch.Tensor:
    implicit, lift = lw.implicit_sum, t.dim() == 3  # 1-D as 2-D: see quirks.lift_1d
    args = (lw.spec.window, lw.spec.stride, lw.padding if implicit else (0,) * lw.spec.ndim)
    t, *args = quirks.lift_1d(t, *args) if lift else (t, *args)
    total = getattr(F, f"avg_pool{t.dim() - 2}d")(t, *args, implicit and lw.ceil, True,
                                                   divisor_override=1)
    total = total[lw.crop] if implicit and lw.crop else total
    return total.squeeze(2) if lift else total


@export.node_first(export.global_pool)  # while torch.onnx.export traces: the ONNX node
def global_pool(x: torch.Tensor, spec: GlobalSpec) -> torch.Tensor:
    axes, keep = spec.spatial_axes, spec.keepdims
    acc = getattr(torch, lowering.accumulator(quirks.dtype_name(x.dtype)))
    if spec.mode == "avg":
        return x.mean(dim=axes, keepdim=keep, dtype=acc).to(x.dtype)
    if spec.mode == "lp":
        power, root = lowering.lp_steps(spec.p)
        return quirks.lp_root(quirks.lp_power(x.to(acc), power).sum(dim=axes, keepdim=keep),
                              root).to(x.dtype)
    xw, restore, _ = quirks.widen_unsigned(x)  # max(dim): the first maximum's gradient
    y = xw.flatten(axes[0], axes[-1]).max(dim=axes[0], keepdim=keep).values
    y = y if restore is None else restore(y)
    return y.unflatten(axes[0], (1,) * len(axes)) if keep else y


@export.node_first(export.adaptive_pool)  # regular bins: the pool's ONNX node
def adaptive_pool(x: torch.Tensor, plan: AdaptivePlan):
    spec, size = plan.spec, plan.out_size
    fn = getattr(F, f"adaptive_{spec.mode}_pool{spec.ndim}d")

    exported = not plan.uniform and export.exporting()  # see quirks.exported_adaptive

    def compute(xc: torch.Tensor, _):
        if spec.mode == "avg" and exported:
            return quirks.exported_adaptive_avg(xc, plan)
        if spec.mode == "avg":
            return fn(xc.float() if quirks.half_sums_on(xc, spec.ndim, adaptive=True) else xc,
                      size).to(xc.dtype)
        if not xc.is_floating_point() or exported:  # adaptive max pools take floats only
            return quirks.integer_adaptive_max(xc, plan, spec.return_indices)
        if not spec.return_indices:
            return fn(xc, size)
        y, idx = fn(xc, size, return_indices=True)
        checked = fast.fixup_check(y, None if compiling() else config.get_speed_routes())  # route
        return y, quirks.first_nan_index(y, idx, xc, checked, lambda t: fn(t, size, True)[1])

    perms = None if spec.data_format == "channels_first" else (TO_NC[x.dim()], FROM_NC[x.dim()])
    return _on_nc(x, perms, size, spec.return_indices, compute)
