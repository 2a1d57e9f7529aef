"""The array primitives the translation is written with, on ``F`` (``mx.nd`` or ``mx.sym``),
any rank and layout: ``Pooling``'s arguments, padding the spatial axes with a value, one
strided slice per window tap, per-position constants that broadcast against the layout, and
each window's first tap equal to its max (indices), the first maximum over a list of arrays
(:func:`max_over`), and the family's primitives (``UNPOOL``, ``BIN_MAX``: pooladapt.family)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import mxnet as mx
import numpy as np

from pooladapt import family
from pooladapt.lowering import Cover, is_integer, tap_index_maps, tap_offsets
from pooladapt.plan import Pads, PoolPlan
from pooladapt.spec import PoolSpec

nd = mx.nd


@functools.lru_cache(maxsize=64)
def dtype_name(dtype: Any) -> str:
    """NumPy's name of an array's dtype (``np.float32`` -> ``"float32"``), cached: NumPy 1.23
    takes microseconds to name one, as long as a tiny pooling's own bookkeeping."""
    return np.dtype(dtype).name


def pooling_args(pool_type: str, ceil: bool, pads: tuple[int, ...]) -> dict[str, Any]:
    """``Pooling``'s arguments for a symmetric ``pads`` and the ``'full'`` convention where
    ``ceil``, defaults left out (each costs a tiny call some time)."""
    kw: dict[str, Any] = dict(pool_type=pool_type)
    if ceil:
        kw["pooling_convention"] = "full"
    if any(pads):
        kw["pad"] = pads
    return kw


def valid_cover(plan: PoolPlan) -> Cover:
    """The native call on an input padded by ``plan.total_pads``: no pads, VALID, no crop."""
    zeros = (0,) * plan.spec.ndim
    return Cover(zeros, False, plan.out_size, zeros, False)


def _fill(F: Any, x: Any, axis: int, count: int, value: float) -> Any:
    edge = F.slice_axis(x, axis=axis, begin=0, end=1)
    # MXNet rounds large scalars (1e300 == 1e300 is false there); +-inf and the integer
    # minima (powers of two) survive exactly
    fill = F.zeros_like(edge) if value == 0 else F.ones_like(edge) * value
    return F.repeat(fill, repeats=count, axis=axis)


def pad(F: Any, x: Any, spec: PoolSpec, pads: Pads, value: float) -> Any:
    """x padded on the spatial axes by ``(low, high)`` cells of ``value``."""
    for axis, (lo, hi) in zip(spec.spatial_axes, pads):
        if lo or hi:
            parts = [_fill(F, x, axis, lo, value)] if lo else []
            parts.append(x)
            if hi:
                parts.append(_fill(F, x, axis, hi, value))
            x = F.concat(*parts, dim=axis)
    return x


def tap_slices(F: Any, padded: Any, plan: PoolPlan) -> Iterator[Any]:
    """One strided slice of the input padded by ``plan.total_pads`` per window tap, in
    row-major tap order: tap t of every window."""
    spec = plan.spec
    rank = spec.ndim + 2
    for offsets in tap_offsets(plan):
        begin, end, step = [None] * rank, [None] * rank, [None] * rank
        for d, axis in enumerate(spec.spatial_axes):
            begin[axis] = offsets[d]
            end[axis] = offsets[d] + (plan.out_size[d] - 1) * spec.stride[d] + 1
            step[axis] = spec.stride[d]
        yield F.slice(padded, begin=tuple(begin), end=tuple(end), step=tuple(step))


@functools.lru_cache(maxsize=256)
def index_maps(plan: PoolPlan) -> np.ndarray:
    """``lowering.tap_index_maps`` in int32, whose ops MXNet runs fastest here."""
    return tap_index_maps(plan).astype(np.int32)


def constant(values: np.ndarray, spec: Any, like: Any, dtype: str) -> Any:
    """A per-spatial-position array (shape = the spatial size) on ``like``'s context, shaped to
    broadcast against the layout of ``spec`` (any spec)."""
    first = spec.data_format == "channels_first"
    shape = (1, 1, *values.shape) if first else (1, *values.shape, 1)
    return mx.nd.array(values.reshape(shape), ctx=like.context, dtype=dtype)


def one_plane(F: Any, x: Any, spec: PoolSpec) -> Any:
    """Ones of x's first batch row and channel (a plane that broadcasts against x)."""
    for axis in (0, 1 if spec.channels_first else spec.ndim + 1):
        x = F.slice_axis(x, axis=axis, begin=0, end=1)
    return F.ones_like(x)


def first_equal_tap(x: Any, y: Any, plan: PoolPlan) -> Any:
    """int64 per-plane index of each window's first tap of ``x`` equal to its value in ``y``
    (a window's last tap where none is), unrecorded."""
    with mx.autograd.pause():
        taps = list(tap_slices(mx.nd, pad(mx.nd, x, plan.spec, plan.total_pads, -math.inf), plan))
        maps = index_maps(plan)
        idx = mx.nd.broadcast_like(constant(maps[-1], plan.spec, x, "int32"), y)
        for t in reversed(range(len(taps) - 1)):
            idx = mx.nd.where(taps[t] == y, mx.nd.broadcast_like(
                constant(maps[t], plan.spec, x, "int32"), y), idx)
        return mx.nd.cast(idx, "int64")


def max_over(F: Any, values: Any, indices: list[Any] | None, dtype: str,
              keep: list[Any] | None = None, force: list[Any] | None = None) -> tuple[Any, Any]:
    """The first maximum over ``values`` (in order) and its entry of ``indices``: a value wins
    where it is strictly greater than the best so far or its first NaN, and ``keep`` (inside
    an adaptive bin), or where ``force`` (a window's first real cell)."""
    best = idx = None
    for i, value in enumerate(values):
        if best is None:
            best, idx = value, None if indices is None else F.broadcast_like(indices[0], value)
            continue
        win = value > best
        if not is_integer(dtype):
            win = win + (value != value) * (best == best)
        if keep is not None:
            win = win * keep[i]
        if force is not None:
            win = F.broadcast_add(win, force[i])
        if indices is not None:
            idx = F.where(win, F.broadcast_like(indices[i], best), idx)
        best = F.where(win, value, best)
    return best, idx


# ------------------------------------------------------------------ the family's primitives


def _scatter(values: Any, index: Any, size: int, first: bool) -> Any:
    """``scatter_nd`` of (N, C, cells) rows into one flat zeros where row r's ``size + 1``
    slots start at r * (size + 1), the spare last slot of each cut off."""
    n, c = values.shape[:2]
    rows = nd.arange(n * c, ctx=index.context, dtype="int64").reshape((n, c, 1)) * (size + 1)
    flat = nd.broadcast_add(index, rows).reshape((1, -1))
    out = nd.scatter_nd(values.reshape((-1,)), flat, shape=(n * c * (size + 1),))
    return nd.slice_axis(out.reshape((n, c, size + 1)), axis=2, begin=0, end=size)


def _where(cond: Any, i: Any, fill: int) -> Any:
    return nd.where(cond, i, nd.full(i.shape, fill, ctx=i.context, dtype=i.dtype))


def _take(a: Any, index: np.ndarray, axis: int) -> list[Any]:
    """One take along ``axis`` per slot of the bins (a column of ``index``)."""
    return [nd.take(a, nd.array(col, ctx=a.context, dtype="int64"), axis=axis) for col in index.T]


def _first_max(values: list[Any], flats: list[Any], valid: np.ndarray,
               axis: int) -> tuple[Any, Any]:
    """:func:`max_over` the slots (the bin axis ``axis`` is a list here), a padding slot kept
    out by ``valid``."""
    shape = [-1 if a == axis - 1 else 1 for a in range(values[0].ndim)]
    dtype = dtype_name(values[0].dtype)
    inside = [nd.array(v.reshape(shape), ctx=values[0].context, dtype=dtype) for v in valid.T]
    return max_over(nd, values, flats, dtype, keep=inside)


UNPOOL = family.UnpoolOps(
    to_first=lambda a: nd.moveaxis(a, -1, 1), to_last=lambda a: nd.moveaxis(a, 1, -1),
    shape=lambda a: a.shape, reshape=lambda a, shape: a.reshape(shape),
    as_index=lambda i: i.astype("int64"), top=lambda i: int(i.max().asscalar()),
    where=_where, scatter=_scatter)
BIN_MAX = family.MaxOps(take=_take, first_max=_first_max)
