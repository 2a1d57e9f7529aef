"""The NumPy primitives translate.py and fast.py are written with: one spatial dim's window
taps as strided slices (from ``lowering.dim_taps``), a pass that reduces a source over them
(a sum or max; a first maximum with its index), lp's ``|x| ** p``, an adaptive dim's bins,
index tuples on one axis, cached per-dtype constants, and reusable scratch buffers for a
block's intermediates; the family's primitives (``UNPOOL``, ``BIN_MAX``: pooladapt.family)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from pooladapt import family, lowering
from pooladapt.plan import AdaptivePlan, PoolPlan


def at(axis: int, sl: Any) -> tuple[Any, ...]:
    """An index tuple that applies ``sl`` on ``axis`` (and takes everything before it)."""
    return (slice(None),) * axis + (sl,)


class TapSlice(NamedTuple):
    """One window tap along one spatial dim, for the outputs ``[o0, o1)`` of a block."""

    src: slice  # the cells it reads, in the pass's source
    dst: slice  # the outputs it reaches, relative to o0
    full: bool  # reaches every output of the block
    src_ix: tuple[slice, ...]  # src and dst as index tuples on the dim's axis
    dst_ix: tuple[slice, ...]
    flat: np.ndarray  # per reached output: its input coordinate times the plane stride,
    # shaped to broadcast along the axis (the index contribution of this dim)


class DimPass(NamedTuple):
    """The taps of one spatial dim in window order, and how a reduction over them starts."""

    axis: int
    stride: int
    taps: tuple[TapSlice, ...]
    init: tuple[TapSlice, ...]  # up to two full taps: the first op writes every output
    rest: tuple[TapSlice, ...]  # the others, combined in place


def dim_pass(plan: PoolPlan, d: int, o0: int, o1: int, base: int = 0) -> DimPass:
    """Dim ``d``'s taps (``lowering.dim_taps``) for the outputs ``[o0, o1)``, as slices of a
    source that starts at input cell ``base``."""
    spec = plan.spec
    s, axis = spec.stride[d], spec.spatial_axes[d]
    plane_stride = lowering.plane_strides(plan.in_size)[d]
    trailing = (1,) * (spec.ndim + 1 - axis)
    taps = []
    for tap in lowering.dim_taps(plan, d):
        first, last = max(tap.first, o0), min(tap.last, o1)
        if first < last:
            start = first * s + tap.offset
            src = slice(start - base, start - base + (last - first - 1) * s + 1, s)
            dst = slice(first - o0, last - o0)
            flat = np.arange(start, start + (last - first) * s, s, dtype=np.int64) * plane_stride
            taps.append(TapSlice(src, dst, first == o0 and last == o1, at(axis, src),
                                 at(axis, dst), flat.reshape((-1, *trailing))))
    init = tuple(t for t in taps if t.full)[:2]
    return DimPass(axis, s, tuple(taps), init, tuple(t for t in taps if t not in init))


@lru_cache(maxsize=256)
def plan_passes(plan: PoolPlan) -> tuple[DimPass, ...]:
    """Every dim's taps over its whole output range (the plan is hashable and resolved once)."""
    return tuple(dim_pass(plan, d, 0, plan.out_size[d]) for d in range(plan.spec.ndim))


@lru_cache(maxsize=64)
def lowest(dtype: np.dtype) -> float | int:
    """``lowering.lowest`` of a NumPy dtype (cached: a tiny call's bookkeeping counts)."""
    return lowering.lowest(dtype.name)


@lru_cache(maxsize=64)
def accumulator(dtype: np.dtype) -> np.dtype:
    """``lowering.accumulator`` of a NumPy dtype, as a dtype."""
    return np.dtype(lowering.accumulator(dtype.name))


@lru_cache(maxsize=256)
def divisor_map(plan: PoolPlan, dtype: np.dtype) -> np.ndarray:
    """The plan's divisor map in ``dtype``."""
    return plan.divisor_map.astype(dtype)


class Scratch:
    """Reusable buffers for the intermediates of a block, by slot (passes ping-pong)."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[Any, np.dtype], np.ndarray] = {}

    def get(self, slot: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        size = math.prod(shape)
        buf = self.buffers.get((slot, dtype))
        if buf is None or buf.size < size:
            buf = self.buffers[(slot, dtype)] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


# ---------------------------------------------------------------------------- passes


def reduce_dim(src: np.ndarray, dst: np.ndarray, dim: DimPass, op: Any, identity: Any,
               transform: Callable[..., np.ndarray] | None = None) -> None:
    """``dst`` = the ``op`` reduction of ``src`` over the taps of ``dim`` (in dst's dtype)."""
    dtype = None if src.dtype == dst.dtype else dst.dtype
    rest = dim.rest
    if transform is not None:
        dst.fill(identity)
        rest = dim.taps
    elif len(dim.init) == 2:
        op(src[dim.init[0].src_ix], src[dim.init[1].src_ix], out=dst, dtype=dtype)
    elif dim.init:
        np.copyto(dst, src[dim.init[0].src_ix], casting="unsafe")
    else:
        dst.fill(identity)
    for t in rest:
        view = dst[t.dst_ix]
        tap = src[t.src_ix]
        op(view, tap if transform is None else transform(tap), out=view, dtype=dtype)

def lp_power(p: float, acc: np.dtype) -> Callable[..., np.ndarray]:
    """``|v| ** p`` in ``acc`` (``abs`` for 1, a square for 2), into ``out`` when given."""
    power = lowering.lp_steps(p).power
    if power == 1.0:
        return lambda v, out=None: np.abs(v, out=out, dtype=acc)
    if power == 2.0:
        return lambda v, out=None: np.square(v, out=out, dtype=acc)

    def powered(v: np.ndarray, out: np.ndarray | None = None) -> Any:
        a = np.abs(v, out=out, dtype=acc)
        return np.power(a, acc.type(power), out=a)

    return powered

def first_max_dim(src: np.ndarray, src_idx: np.ndarray | None, dst: np.ndarray,
                  dst_idx: np.ndarray, dim: DimPass) -> None:
    """Max over the taps of ``dim`` keeping the first maximum (or first NaN) in tap order and
    its per-plane flat index: the tap's coordinate term plus the source's partial index."""
    floating = not np.issubdtype(dst.dtype, np.integer)
    fresh = not dim.init or dim.init[0] is not dim.taps[0]
    if fresh:
        dst.fill(lowest(dst.dtype))
        dst_idx.fill(-1)
    for i, t in enumerate(dim.taps):
        tap = src[t.src_ix]
        cand = t.flat if src_idx is None else t.flat + src_idx[t.src_ix]
        view, view_idx = dst[t.dst_ix], dst_idx[t.dst_ix]
        if i == 0 and not fresh:
            np.copyto(view, tap)
            np.copyto(view_idx, cand)
            continue
        win = tap > view
        if fresh:
            win |= view_idx < 0
        if floating:
            win |= np.isnan(tap) & ~np.isnan(view)
        np.copyto(view, tap, where=win)
        np.copyto(view_idx, np.broadcast_to(cand, view_idx.shape), where=win)

def bins(a: np.ndarray, plan: AdaptivePlan, d: int, axis: int, op: Any,
         acc: np.dtype) -> np.ndarray:
    """``op`` over the cells of every bin of dim ``d`` (on ``axis``), in ``acc``."""
    starts = np.asarray(plan.starts[d])
    widths = np.asarray(plan.ends[d]) - starts
    out = np.take(a, starts, axis=axis).astype(acc, copy=False)
    for t in range(1, int(widths.max())):
        tapped = np.flatnonzero(widths > t)
        cells = np.take(a, starts[tapped] + t, axis=axis)
        if len(tapped) == len(starts):
            op(out, cells, out=out)
        else:
            ix = at(axis, tapped)
            out[ix] = op(out[ix], cells)
    return out

def flat_index(shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
    """Every cell's per-plane flat index, shaped to broadcast against an array of ``shape``."""
    sizes = [shape[a] for a in axes]
    flat = np.arange(math.prod(sizes), dtype=np.int64).reshape(sizes)
    view = [1] * len(shape)
    for a, s in zip(axes, sizes):
        view[a] = s
    return flat.reshape(view)


# ------------------------------------------------------------------ the family's primitives


def _scatter(values: np.ndarray, index: np.ndarray, size: int, first: bool) -> np.ndarray:
    """``put_along_axis`` of (N, C, cells) rows into zeros with a spare last cell, cut off."""
    out = np.zeros((*values.shape[:2], size + 1), dtype=values.dtype)
    np.put_along_axis(out, index, values, axis=2)
    return out[:, :, :size]


def _first_max(taken: np.ndarray, flats: np.ndarray, valid: np.ndarray,
               axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``argmax`` over ``axis``: the first maximum, or the first NaN."""
    pick = np.expand_dims(np.argmax(taken, axis=axis), axis)
    return (np.take_along_axis(taken, pick, axis=axis).squeeze(axis),
            np.take_along_axis(np.broadcast_to(flats, taken.shape), pick,
                               axis=axis).squeeze(axis))


def _take(a: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    return np.take(a, index, axis=axis)


UNPOOL = family.UnpoolOps(
    to_first=lambda a: np.moveaxis(a, -1, 1), to_last=lambda a: np.moveaxis(a, 1, -1),
    shape=np.shape, reshape=np.reshape, as_index=lambda i: i.astype(np.int64),
    top=lambda i: int(i.max()) if i.size else None, where=np.where, scatter=_scatter)
BIN_MAX = family.MaxOps(take=_take, first_max=_first_max)
