"""The family's algorithms written once, against a few primitives a backend binds.

Each algorithm takes a frozen dataclass of a backend's primitives first; a backend binds it
in one line (``max_unpool = functools.partial(family.max_unpool, UNPOOL)``). The checks are
the core's (``lowering.check_unpool_index``); the mechanism of a primitive is the backend's
(its scatter, its first-maximum comparison). Never imports a framework.

* :func:`max_unpool`: the per-plane index rows, the eager range check, negative (and, in
  graphs, out-of-range) indices sent to a spare slot, one scatter of the rows into zeros.
* :func:`bin_means`: adaptive avg by gather, one dim at a time over ``plan.gather``.
* :func:`bin_first_max`: adaptive max by gather, the last dim first, each bin keeping its
  first maximum and that cell's flat index: the survivor is the bin's row-major first max.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pooladapt import lowering
from pooladapt.plan import AdaptivePlan
from pooladapt.spec import UnpoolSpec

Tensor = Any  # a framework's tensor; the primitives know which


@dataclass(frozen=True)
class UnpoolOps:
    """A backend's primitives for :func:`max_unpool`.

    ``to_first``/``to_last`` move channels-last tensors to channels-first and back (None: the
    rows stay in the caller's layout, as (N, cells, C) where channels-last). ``shape`` is a
    tensor's sizes (the batch may be a tensor in a graph). ``as_index`` casts index rows to
    the index dtype. ``top`` is the largest index for the range check: an int, None where
    there is nothing to check (empty, traced), or a tensor the caller checks (JAX, jitted).
    ``where(cond, i, fill)`` keeps ``i`` where ``cond``, else the int ``fill``.
    ``scatter(values, index, size, channels_first)`` scatters rows into zeros of ``size``
    cells per plane, index ``size`` (the spare slot) dropped; an update, not a sum (windows
    that overlap may repeat an index, with the same value)."""

    to_first: Callable[[Tensor], Tensor] | None
    to_last: Callable[[Tensor], Tensor] | None
    shape: Callable[[Tensor], tuple[Any, ...]]
    reshape: Callable[[Tensor, tuple[Any, ...]], Tensor]
    as_index: Callable[[Tensor], Tensor]
    top: Callable[[Tensor], Any]
    where: Callable[[Tensor, Tensor, int], Tensor]
    scatter: Callable[[Tensor, Tensor, int, bool], Tensor]


def unpool_rows(ops: UnpoolOps, y: Tensor, indices: Tensor, channels_first: bool,
                out_size: tuple[int, ...]) -> tuple[Tensor, Any]:
    """Zeros of spatial ``out_size`` with ``y`` scattered to its per-plane ``indices``, and
    ``ops.top`` of the indices (unchecked). Negative indices (windows of padding only) and
    indices past the plane go to the spare slot, so nothing is written for them."""
    size = math.prod(out_size)
    move = not channels_first and ops.to_first is not None
    first = channels_first or move  # the rows' layout
    if move:
        assert ops.to_first is not None
        y, indices = ops.to_first(y), ops.to_first(indices)
    shape = ops.shape(y)
    n, c = shape[0], shape[1 if first else -1]
    plane = math.prod(shape[2:] if first else shape[1:-1])
    rows = (n, c, plane) if first else (n, plane, c)
    i = ops.as_index(ops.reshape(indices, rows))
    top = ops.top(i)
    i = ops.where(i >= 0, ops.where(i < size, i, size), size)
    out = ops.scatter(ops.reshape(y, rows), i, size, first)
    out = ops.reshape(out, (n, c, *out_size) if first else (n, *out_size, c))
    if move:
        assert ops.to_last is not None
        out = ops.to_last(out)
    return out, top


def max_unpool(ops: UnpoolOps, y: Tensor, indices: Tensor, spec: UnpoolSpec,
               out_size: tuple[int, ...]) -> Tensor:
    """:func:`unpool_rows`, the range of its indices checked where ``ops.top`` gives an int
    (ValueError: ``lowering.check_unpool_index``)."""
    out, top = unpool_rows(ops, y, indices, spec.data_format == "channels_first", out_size)
    if isinstance(top, int):
        lowering.check_unpool_index(top, out_size)
    return out


@dataclass(frozen=True)
class MeanOps:
    """A backend's primitives for :func:`bin_means`: ``cast(t, dtype)`` (a dtype name or the
    input's dtype), ``take(t, index, axis)`` (gather along ``axis`` by an integer table,
    whose dims replace ``axis``), ``where(mask, t, 0)`` (``mask`` a NumPy bool array that
    broadcasts), ``sum(t, axis)`` and ``divide(t, counts)`` (``counts`` a NumPy int array
    that broadcasts; rounded as one division)."""

    cast: Callable[[Tensor, Any], Tensor]
    take: Callable[[Tensor, Any, int], Tensor]
    where: Callable[[Any, Tensor, int], Tensor]
    sum: Callable[[Tensor, int], Tensor]
    divide: Callable[[Tensor, Any], Tensor]


def bin_means(ops: MeanOps, x: Tensor, plan: AdaptivePlan) -> Tensor:
    """Adaptive avg of ``x`` (in the spec's layout): per spatial dim, each bin's cells
    gathered (``plan.gather``: the short bins' padding slots masked), summed and divided by
    the bin's count, in ``lowering.accumulator``'s dtype; cast back to ``x``'s dtype."""
    out = ops.cast(x, lowering.accumulator(str(x.dtype.name)))
    rank = len(x.shape)
    for d, axis in enumerate(plan.spec.spatial_axes):
        index, valid = plan.gather(d)  # (out, width)
        trailing = (1,) * (rank - axis - 1)
        taken = ops.where(valid.reshape(valid.shape + trailing), ops.take(out, index, axis), 0)
        out = ops.divide(ops.sum(taken, axis + 1), valid.sum(axis=1).reshape((-1, *trailing)))
    return ops.cast(out, x.dtype)


@dataclass(frozen=True)
class MaxOps:
    """A backend's primitives for :func:`bin_first_max`: ``take(t, index, axis)`` as in
    :class:`MeanOps` (``index`` a table of the bins given to it; the result only ever reaches
    ``first_max``), and
    ``first_max(keys, flats, valid, axis)``: over ``axis`` (the bin's slots, in order) each
    bin's first maximum key and the flat index beside it, by the backend's own exact
    comparison (NaN greatest); ``valid`` marks the real slots (a padding slot repeats the
    bin's first cell, so a comparison may ignore it)."""

    take: Callable[[Tensor, Any, int], Any]
    first_max: Callable[[Any, Any, Any, int], tuple[Tensor, Tensor]]


def plan_bins(plan: AdaptivePlan) -> tuple[tuple[int, Any, Any], ...]:
    """Per spatial dim in order: its axis in the spec's layout and ``plan.gather``'s table and
    mask, what :func:`bin_first_max` walks."""
    return tuple((axis, *plan.gather(d)) for d, axis in enumerate(plan.spec.spatial_axes))


def bin_first_max(ops: MaxOps, keys: Tensor, flat: Tensor,
                  bins: Sequence[tuple[int, Any, Any]]) -> tuple[Tensor, Tensor]:
    """Adaptive max over ``keys`` (the values, or keys ordered as them) with ``flat``, every
    cell's per-plane flat index: per spatial dim, the last first, each bin's cells gathered
    and its first maximum kept with its index, so the surviving index is the row-major first
    maximum of the whole bin. ``bins``: per spatial dim, its axis, gather table (``index``
    of :class:`MaxOps`) and mask (:func:`plan_bins`, or a backend's own constants of them).
    Returns the bins' keys and indices."""
    for axis, index, valid in reversed(bins):
        keys, flat = ops.first_max(ops.take(keys, index, axis), ops.take(flat, index, axis),
                                   valid, axis + 1)
    return keys, flat
