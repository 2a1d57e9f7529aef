"""The torch backend's speed routes: the same plan computed faster on the CPU.

Each route has a name in ``BACKEND.speed_routes`` and is asked for with the call's setting
(``config.take_route``'s, read once per eager call) only where it is exact, with its
:func:`tuning` answer as ``auto`` (docs/benchmarks.md). translate.py calls them at its marked
hooks, and only in eager calls (``routes`` None while torch.compile traces: a compiler picks
its own kernels, and a decision traced into a graph would outlive the switch). Nothing cached
holds a decision. ``pa.speed_routes("off")`` leaves the plain translation.

* ``torch.separable_max``: a max without indices or a recorded gradient as one max over
  window taps per spatial dim (``lowering.dim_taps``), each tap a strided slice combined by
  ``torch.maximum`` (no copy, no padding; several times faster than torch's NCHW kernel).
  ``torch.maximum`` would split a tie's gradient, hence no autograd.
* ``torch.separable_max_grad``: that max where a gradient is recorded, as one autograd
  function: the forward reduces the innermost dim first and records, per output of each dim,
  its winning tap (uint8; ties to the earlier tap, NaN first), so the pieces compose to the
  first maximum in row-major window order; the backward passes the gradient back through each
  dim's taps, outermost first, as products with 0/1 masks (no scatter). A batch item or a few
  at a time (buffers that stay in cache, reused); a stride-2 innermost dim reads and writes
  its even and odd cells apart (contiguous rows, no strided vector op). Many small steps,
  each waiting for every thread: more threads need more cells (docs/benchmarks.md).
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

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch
from torch.autograd import forward_ad

from pooladapt import config, lowering
from pooladapt.plan import PoolPlan

SEPARABLE = "torch.separable_max"
UNFOLD = "torch.unfold_max"
CHANNELS_LAST = "torch.channels_last_max"
UNIT_CHANNEL = "torch.unit_channel_view"
LIFT_1D = "torch.lift_1d_max"
FIXUP_CHECK = "torch.index_fixup_check"
SEPARABLE_GRAD = "torch.separable_max_grad"
ROUTES = (SEPARABLE, SEPARABLE_GRAD, UNFOLD, CHANNELS_LAST, UNIT_CHANNEL, LIFT_1D, FIXUP_CHECK)

Routes = config.SpeedRoutes | None  # an eager call's setting; None while torch.compile traces

_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
_MAX_OP = {1: torch.max_pool1d, 2: torch.max_pool2d, 3: torch.max_pool3d}  # no Python wrapper


@dataclass(frozen=True)
class Tuning(config.Tuning):
    """Where the speed routes pay on the CPU (docs/benchmarks.md); ``auto`` reads these."""

    separable_min: int = 1 << 15  # cells from which the separable max beats torch's max pool
    vector_channels: int = 4  # channels innermost and this many: torch's kernel vectorises
    unfold_taps: int = 4  # taps of a dim from which unfolding beats a maximum per tap
    channels_last_min: int = 1 << 16  # cells from which a memory-format change pays...
    channels_last_channels: int = 8  # ...given this many channels
    grad_min: int = 1 << 19  # cells from which the recorded-tap max beats torch's max pool
    grad_threads: int = 2  # torch threads up to which it does (none measured beyond)...
    grad_threaded_min: int = 1 << 21  # ...from these cells with more than one thread
    grad_chunk: int = 1 << 20  # cells of the input the recorded-tap max pools at a time


TUNING = config.TuningSlot("torch", Tuning())
tuning = TUNING.get
"""The torch backend's thresholds here and now."""
tuned = TUNING.tuned
"""Change some thresholds inside a ``with`` block: ``with tuned(grad_chunk=1): ...``."""


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
        self.grad = _grad_stages(plan) if spec.mode == "max" else None


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


def _small() -> int:
    """Cells below every size-dependent route's threshold."""
    t = tuning()
    return min(t.separable_min, t.channels_last_min)


def one_call_max(x: torch.Tensor, lw: Any, routes: Routes) -> torch.Tensor | None:
    """``auto``'s answer for a float max torch expresses in one call, below every route's
    threshold: that call on an NC* view (one channel: the unit-channel view), without the
    translation's other steps. None where it does not apply."""
    fast, perms = lw.fast, lw.perms
    if (routes is None or fast.one_call is None or routes.mode != "auto"
            or not 0 < x.numel() < _small() or not x.is_floating_point()):
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
    over channels there, from ``tuning().channels_last_channels`` on that pays for both
    conversions (the caller converts the result back), unless a gradient is recorded."""
    if (routes is None or t.dim() < 4 or t.dtype in (torch.int8, torch.uint8)
            or t.is_contiguous(memory_format=_CHANNELS_LAST[t.dim()])):
        return t, False
    tn = tuning()
    if routes.take(CHANNELS_LAST, (  # not under autograd: the gradient converts both ways
            t.is_cpu and t.dtype.is_floating_point and t.is_contiguous()
            and not (t.requires_grad and torch.is_grad_enabled())
            and t.numel() >= tn.channels_last_min
            and t.shape[1] >= tn.channels_last_channels)):
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
    the CPU from ``tuning().separable_min`` cells, unless torch's channels_last kernel can
    vectorise over the channels; unfolding pays for a dim of ``tuning().unfold_taps`` taps,
    unless the channels are innermost (the taps are faster). Where a gradient is recorded:
    :func:`recorded_max`. None where not taken."""
    if routes is None:
        return None
    if t.requires_grad and torch.is_grad_enabled():
        return recorded_max(t, lw, lowest, routes)
    fast, tn = lw.fast, tuning()
    auto = (t.is_cpu and t.numel() >= tn.separable_min and not (
        t.stride(1) == 1 and t.shape[1] >= tn.vector_channels and not t.is_contiguous()))
    separable = routes.take(SEPARABLE, auto)
    unfold_auto = auto and (t.stride(1) != 1 or t.shape[1] == 1)
    unfold = tuple(dim[4] is not None and routes.take(
        UNFOLD, unfold_auto and dim[5] >= tn.unfold_taps) for dim in fast.separable)
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


# ---------------------------------------------------------------------------- the recorded-tap max

NO_TAP = 255  # the code of an output no tap takes (a window of padding only); taps: fewer
_COMPLEX = (torch.float32, torch.float64)  # torch.complex interleaves these


class _Stage(NamedTuple):
    """One spatial dim of the recorded-tap max: its NC* axis, output size, taps in window
    order as (tap, source index, output index), and how many of the last taps reach every
    output and start it (2: their maximum; 1: a copy of the last; 0: the lowest value and
    NO_TAP, kept by an output no tap reaches or, in the pass that does not take NaN over, one
    whose taps are all NaN: no tap's gradient goes there). The backward's taps as (tap,
    source, output, whether it writes its cells: none before it reaches them), those that
    write first, whether the input gradient starts at zero (some cell no write reaches), and
    whether its input cells pair up, two per output (stride 2, input twice the output)."""

    axis: int
    out_size: int
    taps: tuple[tuple[int, tuple, tuple], ...]
    start: int
    back: tuple[tuple[int, tuple, tuple, bool], ...]
    zero: bool
    pairs: bool


def _grad_stages(plan: PoolPlan) -> tuple[_Stage, ...] | None:
    """The stages, innermost dim first (so the taps compose to row-major window order); None
    where a dim has too many taps for a uint8 code."""
    spec, stages = plan.spec, []
    for d in reversed(range(spec.ndim)):
        axis, s, m = 2 + d, spec.stride[d], plan.out_size[d]
        taps = [t for t in lowering.dim_taps(plan, d) if t.first < t.last]
        if len(taps) >= NO_TAP or spec.window[d] >= NO_TAP:
            return None
        entries = tuple((t.tap, (slice(None),) * axis + (slice(
            t.first * s + t.offset, (t.last - 1) * s + t.offset + 1, s),),
            (slice(None),) * axis + (slice(t.first, t.last),)) for t in taps)
        start = 2 if len(taps) >= 2 and all(t.reaches_all(m) for t in taps[-2:]) else int(
            bool(taps) and taps[-1].reaches_all(m))
        cells = [set(range(t.first * s + t.offset, (t.last - 1) * s + t.offset + 1, s))
                 for t in taps]
        written: set[int] = set()  # the biggest taps first write, where they are disjoint
        writes = [j for j in sorted(range(len(taps)), key=lambda j: -len(cells[j]))
                  if not (cells[j] & written) and not written.update(cells[j])]
        back = tuple((*entries[j], True) for j in writes) + tuple(
            (*entries[j], False) for j in range(len(taps)) if j not in writes)
        stages.append(_Stage(axis, m, entries, start, back,
                             len(written) < plan.in_size[d], s == 2 and plan.in_size[d] == 2 * m))
    return tuple(stages)


def recorded_max(t: torch.Tensor, lw: Any, lowest: float | int,
                 routes: config.SpeedRoutes) -> torch.Tensor | None:
    """``torch.separable_max_grad``: the separable max of NC* ``t`` whose gradient is
    recorded, through :class:`_RecordedMax`. It pays on the CPU in contiguous format from
    ``tuning().grad_min`` cells with one torch thread, from ``grad_threaded_min`` with up to
    ``grad_threads``: its many small steps each wait for every thread (on a machine
    whose cores are all busy, each such wait is long: there it loses; docs/benchmarks.md).
    None where not taken."""
    stages = lw.fast.grad
    if (stages is None or not t.is_floating_point()
            or torch._C._are_functorch_transforms_active()  # torch.func: no rule for these
            or forward_ad.unpack_dual(t).tangent is not None):
        return None
    threads, tn = torch.get_num_threads(), tuning()
    auto = (t.is_cpu and t.is_contiguous() and threads <= tn.grad_threads
            and t.numel() >= (tn.grad_min if threads == 1 else tn.grad_threaded_min))
    if not routes.take(SEPARABLE_GRAD, auto):
        return None
    return _RecordedMax.apply(t, stages, lowest)


class _RecordedMax(torch.autograd.Function):
    """The max whose forward records each dim's winning tap (uint8 codes, saved for the
    backward: a quarter of torch's int64 indices for 2-D) and whose backward passes the
    gradient back through them, tap by tap: each window's gradient goes to its first maximum
    in row-major order, NaN first; a window of padding only passes none."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, stages: tuple[_Stage, ...], lowest: float | int):
        y, codes = _recorded_forward(t, stages, lowest, nan_first=False)
        if y.numel() and bool(torch.isnan(y.amax())):  # NaN never wins a comparison: again,
            y, codes = _recorded_forward(t, stages, lowest, nan_first=True)  # taking it over
        ctx.save_for_backward(*codes)
        ctx.stages, ctx.shape, ctx.order = stages, t.shape, _order(t)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        if torch.is_grad_enabled():  # create_graph: the gradient's own graph, out of place
            return _recorded_backward_graph(g, ctx.saved_tensors, ctx.stages, ctx.shape,
                                            ctx.order), None, None
        return _recorded_backward(g, ctx.saved_tensors, ctx.stages, ctx.shape,
                                  ctx.order), None, None


def _order(t: torch.Tensor) -> list[int]:
    return sorted(range(t.dim()), key=t.stride, reverse=True)


def _alloc(order: list[int], shape: list[int], like: torch.Tensor,
           dtype: torch.dtype | None = None) -> torch.Tensor:
    """An empty tensor of ``shape`` laid out in ``order`` (``t``'s dim order)."""
    return like.new_empty([shape[i] for i in order], dtype=dtype).permute(
        [order.index(i) for i in range(len(order))])


def _shapes(shape: torch.Size, stages: tuple[_Stage, ...]) -> list[list[int]]:
    """The shape after each stage."""
    out, cur = [], list(shape)
    for st in stages:
        cur = cur[:st.axis] + [st.out_size] + cur[st.axis + 1:]
        out.append(cur)
    return out


def _chunk(shape: torch.Size) -> int:
    return max(1, min(shape[0], tuning().grad_chunk // max(1, math.prod(shape[1:]))))


def _recorded_forward(t: torch.Tensor, stages: tuple[_Stage, ...], lowest: float | int,
                      nan_first: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The pooled values and each stage's codes, a chunk of the batch at a time. The codes
    change only in whole-buffer uint8 ops (vectorised; on a tap's strided view they are not):
    each tap after the start compares into its own mask, False outside the outputs it reaches
    (the last mask: the start's)."""
    order, shapes, per = _order(t), _shapes(t.shape, stages), _chunk(t.shape)
    codes = [_alloc(order, s, t, torch.uint8) for s in shapes]
    y = _alloc(order, shapes[-1], t)
    values = [_alloc(order, [per, *s[1:]], t) for s in shapes[:-1]]
    masks = [[_alloc(order, [per, *s[1:]], t, torch.bool).fill_(False)
              for _ in range(len(st.taps) - st.start + 1)] for s, st in zip(shapes, stages)]
    pairs = [t.new_empty([per, *t.shape[1:-1], 2, stages[0].out_size])  # the innermost dim
             if stages[0].pairs and t.stride(-1) == 1 else None]
    for n in range(0, t.shape[0], per):
        cur = t[n:n + per]
        rows = cur.shape[0]
        for i, st in enumerate(stages):
            v = y[n:n + per] if i == len(stages) - 1 else values[i][:rows]
            _stage_forward(_pair_reader(cur, pairs[0][:rows]) if i == 0 and pairs[0] is not None
                           else cur.__getitem__, v, codes[i][n:n + per],
                           [m[:rows] for m in masks[i]], st, lowest, nan_first)
            cur = v
    return y, codes


def _pair_reader(t: torch.Tensor, buf: torch.Tensor):
    """The taps of an innermost dim whose cells pair up, read from ``buf``: its even and odd
    cells apart (one strided copy; each tap then reads contiguous rows)."""
    buf.copy_(t.unflatten(-1, (buf.shape[-1], 2)).transpose(-1, -2))
    return partial(_paired, buf.unbind(-2))


def _paired(halves, src: tuple) -> torch.Tensor:
    """A tap's cells (``src``: a stride-2 slice of the innermost dim) in the even or odd
    ``halves`` of that dim."""
    return halves[src[-1].start % 2][..., src[-1].start // 2:(src[-1].stop + 1) // 2]


def _stage_forward(read, v, k, masks, st: _Stage, lowest, nan_first: bool) -> None:
    """``v``: the max over this dim's taps (``read(source index)``: a tap's input), ``k``: the
    winning tap's number. The taps go last to first, each taking over on ``>=`` (and NaN),
    so the earliest maximum stays."""
    taps = st.taps[::-1]
    if st.start == 2:  # the last two taps reach every output: they start it
        (b, src_b, _), (a, src_a, _) = taps[0], taps[1]
        torch.maximum(read(src_a), read(src_b), out=v)
        _takes_over(read(src_a), read(src_b), masks[-1], nan_first)
        torch.mul(masks[-1].view(torch.uint8), (a - b) % 256, out=k).add_(b)  # a or b
    elif st.start == 1:  # the last tap reaches every output
        v.copy_(read(taps[0][1]))
        k.fill_(taps[0][0])
    else:
        v.fill_(lowest)
        k.fill_(NO_TAP)
    for (tap, src, dst), mask in zip(taps[st.start:], masks):
        new, vd = read(src), v[dst]
        _takes_over(new, vd, mask[dst], nan_first)
        torch.maximum(vd, new, out=vd)
        took = mask.view(torch.uint8)  # 1 where it takes over, 0 elsewhere (and outside dst)
        k.sub_(torch.mul(k, took) if tap == 0 else torch.sub(k, tap).mul_(took))


def _takes_over(new, cur, out, nan_first: bool) -> None:
    torch.ge(new, cur, out=out)
    if nan_first:
        out.logical_or_(torch.isnan(new))


def _recorded_backward(g: torch.Tensor, codes, stages: tuple[_Stage, ...], shape: torch.Size,
                       order: list[int]) -> torch.Tensor:
    """Outermost stage first, each tap's outputs that it won pass their gradient to its
    cells: ``g * (code == tap)`` written or added in (a product with the 0/1 mask, vectorised;
    where the gradient holds an infinity or NaN, ``where``: a product would spread it to the
    losers)."""
    per = _chunk(shape)
    dx = _alloc(order, list(shape), g)
    if not g.numel():
        return dx.zero_()
    lo, hi = torch.aminmax(g)
    finite = bool(lo.isfinite() & hi.isfinite())
    ins = [list(shape)] + _shapes(shape, stages)[:-1]  # each stage's input shape
    sums = [_alloc(order, [per, *s[1:]], g) if i else None for i, s in enumerate(ins)]
    masks = [_alloc(order, [per, *k.shape[1:]], g, g.dtype if finite else torch.bool)
             for k in codes]
    zero = g.new_zeros(())
    pairs = [finite and st.pairs and g.dtype in _COMPLEX and st.axis == g.dim() - 1
             and dx.stride(st.axis) == 1 and masks[i].stride(st.axis) == 1
             for i, st in enumerate(stages)]
    halves = [[_alloc(order, [per, *k.shape[1:]], g) for _ in range(2)] if pair else None
              for k, pair in zip(codes, pairs)]
    for n in range(0, shape[0], per):
        cur = g[n:n + per]
        rows = cur.shape[0]
        for i in reversed(range(len(stages))):
            st = stages[i]
            out = dx[n:n + per] if i == 0 else sums[i][:rows]
            if pairs[i]:  # even and odd cells apart (contiguous), interleaved in one pass
                half = [h[:rows] for h in halves[i]]
                target = partial(_paired, half)
            else:
                target = out.__getitem__
            if st.zero:
                out.zero_() if not pairs[i] else [h.zero_() for h in half]
            k, m = codes[i][n:n + per], masks[i][:rows]
            for tap, src, dst, write in st.back:
                torch.eq(k, tap, out=m)
                if finite and write:
                    torch.mul(cur[dst], m[dst], out=target(src))
                elif finite:
                    target(src).addcmul_(cur[dst], m[dst])
                elif write:
                    torch.where(m[dst], cur[dst], zero, out=out[src])
                else:
                    out[src].add_(torch.where(m[dst], cur[dst], zero))
            if pairs[i]:
                torch.complex(*half, out=torch.view_as_complex(
                    out.unflatten(st.axis, (st.out_size, 2))))
            cur = out
    return dx


def _recorded_backward_graph(g: torch.Tensor, codes, stages: tuple[_Stage, ...],
                             shape: torch.Size, order: list[int]) -> torch.Tensor:
    """The input gradient as differentiable ops of ``g`` (a gradient of the gradient: each
    tap's won outputs passed to its cells, as in the backward, whole and out of place)."""
    cur, ins = g, [list(shape)] + _shapes(shape, stages)[:-1]
    zero = g.new_zeros(())
    for i in reversed(range(len(stages))):
        out = _alloc(order, ins[i], g).zero_()
        for tap, src, dst, _ in stages[i].back:
            out[src] = out[src] + torch.where(codes[i][dst] == tap, cur[dst], zero)
        cur = out
    return cur
