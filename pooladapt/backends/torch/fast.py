"""The torch backend's speed routes: the same plan computed faster on the CPU.

Each route has a name in ``BACKEND.speed_routes`` and is asked for with the call's setting
(``config.take_route``'s, read once per eager call) only where it is exact, with its
:data:`TUNING` answer as ``auto`` (docs/benchmarks.md). translate.py calls them at its marked
hooks, and only in eager calls (``routes`` None while torch.compile traces: a compiler picks
its own kernels, and a decision traced into a graph would outlive the switch). Nothing cached
holds a decision. ``pa.speed_routes("off")`` leaves the plain translation.

* ``torch.separable_max``: a max without indices or a recorded gradient as one max over
  window taps per spatial dim (``lowering.dim_taps``), each tap a strided slice combined by
  ``torch.maximum`` (no copy, no padding; several times faster than torch's NCHW kernel).
  ``torch.maximum`` would split a tie's gradient, hence no autograd.
* ``torch.unfold_max``: in that max, a dim whose windows lie inside the input reduces them in
  one ``unfold`` + ``amax`` (far fewer thread-pool rounds for many taps).
* ``torch.channels_last_max``: a max of an NC* tensor in contiguous format pooled in
  channels_last memory format, converted back (torch's CPU kernel vectorises over channels).
* ``torch.unit_channel_view``: a one-channel channels_last input viewed with NCHW strides
  (torch reads the permuted view as channels_last, whose kernel starts worker threads).
* ``torch.lift_1d_max``: a 1-D max pooled as 2-D with a unit height (torch's 1-D max pool
  copies strided input, its 2-D one reads it in place).
* ``torch.index_fixup_check``: one reduction over the pooled values says whether the index
  fix-ups (NaN, lowest value) can apply; they are skipped where not (a sync off the CPU).

Besides the routes, ``auto`` answers a small float max that torch expresses in one call with
that call alone (:func:`one_call_max`): every route's tuning declines such input, and a tiny
call pays for each step it skips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pooladapt import config, lowering
from pooladapt.plan import PoolPlan

SEPARABLE = "torch.separable_max"
UNFOLD = "torch.unfold_max"
CHANNELS_LAST = "torch.channels_last_max"
UNIT_CHANNEL = "torch.unit_channel_view"
LIFT_1D = "torch.lift_1d_max"
FIXUP_CHECK = "torch.index_fixup_check"
ROUTES = (SEPARABLE, UNFOLD, CHANNELS_LAST, UNIT_CHANNEL, LIFT_1D, FIXUP_CHECK)

Routes = config.SpeedRoutes | None  # an eager call's setting; None while torch.compile traces

_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
_MAX_OP = {1: torch.max_pool1d, 2: torch.max_pool2d, 3: torch.max_pool3d}  # no Python wrapper


@dataclass(frozen=True)
class Tuning:
    """Where the speed routes pay on the CPU (docs/benchmarks.md); ``auto`` reads these."""

    separable_min: int = 1 << 15  # cells from which the separable max beats torch's max pool
    vector_channels: int = 4  # channels innermost and this many: torch's kernel vectorises
    unfold_taps: int = 4  # taps of a dim from which unfolding beats a maximum per tap
    channels_last_min: int = 1 << 16  # cells from which a memory-format change pays...
    channels_last_channels: int = 8  # ...given this many channels


TUNING = Tuning()
_SMALL = min(TUNING.separable_min, TUNING.channels_last_min)


# ---------------------------------------------------------------------------- per-plan constants


class RouteConstants:
    """What the routes read from one plan, built with the translation's constants ``lw``
    (translate.Lowered)."""

    def __init__(self, lw: Any) -> None:
        plan, spec = lw.plan, lw.spec
        # a max without indices torch expresses in one call (1-D: see lift_1d)
        one_call = (spec.mode == "max" and lw.native and lw.crop is None and spec.ndim > 1
                    and not spec.return_indices)
        self.one_call = (_MAX_OP[spec.ndim], (*lw.max_args, lw.ceil)) if one_call else None
        self.unit_channel = (1, *plan.in_size)
        self.separable = _separable_taps(plan) if spec.mode == "max" else None


def _separable_taps(plan: PoolPlan) -> tuple:
    """Per spatial dim of an NC* tensor: (axis, output size, up to two taps that reach every
    output, the other taps as (source index, output index), unfold arguments or None, number
    of taps). A tap is one strided slice; the outputs it would read in padding or past the
    input are left out, so no padding is made and a window of padding only keeps the initial
    lowest value. A dim whose taps all reach every output lies inside the input: it may unfold."""
    spec = plan.spec
    dims = []
    for d, m in enumerate(plan.out_size):
        axis, s, taps = 2 + d, spec.stride[d], lowering.dim_taps(plan, d)
        full: list[tuple] = []
        rest: list[tuple] = []
        for tap in taps:
            if tap.first == tap.last:
                continue
            start = tap.first * s + tap.offset
            src = (slice(None),) * axis + (slice(start, start + (tap.last - tap.first - 1) * s
                                                 + 1, s),)
            if tap.reaches_all(m) and len(full) < 2:
                full.append(src)
            else:
                rest.append((src, (slice(None),) * axis + (slice(tap.first, tap.last),)))
        inside = all(tap.reaches_all(m) for tap in taps)
        extent = spec.extent[d]
        unfold = ((m - 1) * s + extent, extent, s, spec.dilation[d]) if inside else None
        dims.append((axis, m, tuple(full), tuple(rest), unfold, len(taps)))
    return tuple(dims)


# ---------------------------------------------------------------------------- the routes


def one_call_max(x: torch.Tensor, lw: Any, routes: Routes) -> torch.Tensor | None:
    """``auto``'s answer for a float max torch expresses in one call, below every route's
    threshold: that call on an NC* view (one channel: the unit-channel view), without the
    translation's other steps. None where it does not apply."""
    fast, perms = lw.fast, lw.perms
    if (routes is None or fast.one_call is None or routes.mode != "auto"
            or not 0 < x.numel() < _SMALL or not x.is_floating_point()):
        return None
    fn, args = fast.one_call
    if perms is None:
        return fn(x, *args)
    if x.shape[-1] == 1:
        return fn(x.view(x.shape[0], *fast.unit_channel), *args).permute(perms[1])
    return fn(x.permute(perms[0]), *args).permute(perms[1])


def nc_view(x: torch.Tensor, perm: tuple[int, ...], fast: RouteConstants | None,
            routes: Routes) -> torch.Tensor:
    """A channels_last tensor as an NC* view: permuted (torch's channels_last memory format),
    or for one channel (``torch.unit_channel_view``) viewed with NCHW strides: torch reads the
    permuted view as channels_last, and that kernel starts worker threads even for a few
    cells. ``fast`` None: no route applies (only the pools' constants hold the view)."""
    if (fast is not None and routes is not None and x.shape[-1] == 1
            and routes.take(UNIT_CHANNEL, True)):
        return x.view(x.shape[0], *fast.unit_channel)
    return x.permute(perm)


def lift_1d(t: torch.Tensor, routes: Routes) -> bool:
    """Pool this 1-D float NC* tensor as 2-D? (torch's 1-D max pool copies strided input)"""
    return routes is not None and routes.take(LIFT_1D, not t.is_contiguous())


def channels_last(t: torch.Tensor, routes: Routes) -> tuple[torch.Tensor, bool]:
    """This NC* tensor to max-pool, and whether it was converted to channels_last memory
    format (2-D/3-D, not int8, whose channels_last kernels fail): torch's CPU kernel vectorises
    over channels there, from ``TUNING.channels_last_channels`` on that pays for both
    conversions (the caller converts the result back)."""
    if (routes is None or t.dim() < 4 or t.dtype in (torch.int8, torch.uint8)
            or t.is_contiguous(memory_format=_CHANNELS_LAST[t.dim()])):
        return t, False
    if routes.take(CHANNELS_LAST, (
            t.is_cpu and t.dtype.is_floating_point and t.is_contiguous()
            and t.numel() >= TUNING.channels_last_min
            and t.shape[1] >= TUNING.channels_last_channels)):
        return t.contiguous(memory_format=_CHANNELS_LAST[t.dim()]), True
    return t, False


def fixup_check(y: torch.Tensor, routes: Routes) -> bool:
    """May a data check of the pooled values skip the index fix-ups? (off the CPU it syncs)"""
    return routes is not None and routes.take(FIXUP_CHECK, y.is_cpu)


def nothing_to_fix(y: torch.Tensor, lowest: float | int) -> bool:
    """No NaN and no maximum at the lowest value: torch's indices need no fix-up."""
    return y.numel() == 0 or bool(y.amin() > lowest)  # NaN propagates to amin: False


def separable_max(t: torch.Tensor, lw: Any, lowest: float | int,
                  routes: Routes) -> torch.Tensor | None:
    """Max pool as one max over window taps per spatial dim, outermost first (a window is a
    product, so the max is separable): each tap a strided slice combined by
    ``torch.maximum``, which propagates NaN and keeps its first argument on a tie, or where a
    dim unfolds, its windows unfolded and reduced by ``amax``. No layout copy. Only where no
    gradient is recorded (``torch.maximum`` and ``amax`` split a tie's gradient). It pays on
    the CPU from ``TUNING.separable_min`` cells, unless torch's channels_last kernel can
    vectorise over the channels; unfolding pays for a dim of ``TUNING.unfold_taps`` taps,
    unless the channels are innermost (the taps are faster). None where not taken."""
    if routes is None or (t.requires_grad and torch.is_grad_enabled()):
        return None
    fast = lw.fast
    auto = (t.is_cpu and t.numel() >= TUNING.separable_min and not (
        t.stride(1) == 1 and t.shape[1] >= TUNING.vector_channels and not t.is_contiguous()))
    separable = routes.take(SEPARABLE, auto)
    unfold_auto = auto and (t.stride(1) != 1 or t.shape[1] == 1)
    unfold = tuple(dim[4] is not None and routes.take(
        UNFOLD, unfold_auto and dim[5] >= TUNING.unfold_taps) for dim in fast.separable)
    if not (separable or any(unfold)):
        return None
    last = len(fast.separable) - 1
    for d, (axis, size, full, rest, unfold_args, _) in enumerate(fast.separable):
        if unfold[d]:
            span, extent, s, dil = unfold_args
            windows = t.narrow(axis, 0, span).unfold(axis, extent, s)
            t = torch.amax(windows if dil == 1 else windows[..., ::dil], -1,
                           out=_new_like(t, axis, size))
            continue
        if len(full) == 2:
            out = torch.maximum(t[full[0]], t[full[1]])
        elif full:  # a view if nothing writes into it and a later pass makes the output
            out = t[full[0]].clone() if rest or d == last else t[full[0]]
        else:  # some outputs see no tap: they keep the lowest value
            out = _new_like(t, axis, size).fill_(lowest)
        for src, dst in rest:
            view = out[dst]
            torch.maximum(view, t[src], out=view)
        t = out
    return t


def _new_like(t: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """An empty tensor of ``t``'s shape but ``size`` along ``axis``, in ``t``'s dim order (a
    reduction would make it contiguous: channels_last input must give channels_last output)."""
    order = sorted(range(t.dim()), key=t.stride, reverse=True)
    shape = [size if i == axis else t.shape[i] for i in order]
    return t.new_empty(shape).permute([order.index(i) for i in range(t.dim())])

