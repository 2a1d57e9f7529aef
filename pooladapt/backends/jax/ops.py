"""The array primitives the translation is written with, any rank and layout: per-spatial-dim
values spread over every axis of the layout (``reduce_window``'s arguments), padding the
spatial axes with a value, one strided slice per window tap, constants over the plane that
broadcast against it, per-plane flat indices (their dtype, the index of every cell), the
gather at them and the scatter to them."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pooladapt import family, lowering
from pooladapt.backends.jax.quirks import divide, x64_scope
from pooladapt.plan import PoolPlan


def full(channels_first: bool, spatial: tuple, fill: Any) -> tuple:
    """Per-spatial-dim values as a tuple over every axis of the layout."""
    return (fill, fill, *spatial) if channels_first else (fill, *spatial, fill)


def spatial_const(a: np.ndarray, channels_first: bool, dtype: Any) -> jax.Array:
    """A constant over the spatial dims, shaped to broadcast against the layout."""
    return jnp.asarray(a.reshape(full(channels_first, a.shape, 1)), dtype)


def lowest(dtype: Any) -> np.ndarray:
    """``lowering.lowest`` as a scalar of ``dtype``: the max identity, which reduce_window
    also pads with (-inf, or the integer minimum)."""
    return np.array(lowering.lowest(np.dtype(dtype).name), dtype)


def index_type(in_size: tuple[int, ...]) -> np.dtype:
    """int32 indices, int64 for a plane of 2**31 cells or more (inside an x64 scope)."""
    return np.dtype(np.int64 if math.prod(in_size) >= np.iinfo(np.int32).max else np.int32)


def planes(a: jax.Array, channels_first: bool) -> jax.Array:
    """``a`` as (N, C, cells) or (N, cells, C) (sizes spelled out: N or C may be 0)."""
    if channels_first:
        return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))
    return a.reshape(a.shape[0], math.prod(a.shape[1:-1]), a.shape[-1])


def plane_index(channels_first: bool, in_size: tuple[int, ...], shape: tuple, dtype: Any):
    """Per-plane flat index of every cell of an input of ``shape``."""
    first = 2 if channels_first else 1
    flat = jnp.zeros(shape, dtype)
    for d, stride in enumerate(lowering.plane_strides(in_size)):
        flat = flat + lax.broadcasted_iota(dtype, shape, first + d) * stride
    return flat


def take(v: jax.Array, idx: jax.Array, channels_first: bool, fill: Any) -> jax.Array:
    """``v``'s value at each per-plane flat index (``fill`` where the index is -1): one gather
    along the planes' cells with batch and channel as batching dims (its transpose, the max
    gradient, is one batched scatter-add), so a batch or channel sharding stays as it is (a
    gather from the flattened ``v`` made every device hold the whole batch:
    tests/jax/test_distributed.py)."""
    i, cells = planes(idx, channels_first), math.prod(v.shape[2:] if channels_first
                                                      else v.shape[1:-1])
    itype = index_type((cells,))
    with x64_scope(itype):
        i = jnp.maximum(i, 0).astype(itype)
        out = jnp.take_along_axis(planes(v, channels_first), i, axis=2 if channels_first else 1,
                                  mode="promise_in_bounds")
    return jnp.where(idx >= 0, out.reshape(idx.shape), fill)


def put(shape: tuple[int, ...], idx: jax.Array, values: jax.Array,
        channels_first: bool) -> jax.Array:
    """Zeros of ``shape`` ((N, C, cells) or (N, cells, C)) with ``values`` set at the per-plane
    indices ``idx`` (same shape as ``values``); indices past the plane are dropped. One scatter
    along the cells with batch and channel as batching dims, in the layout as it is (no
    transpose), so a batch or channel sharding stays as it is (a scatter into the flattened
    output made every device hold the whole batch: tests/jax/test_distributed.py)."""
    cells, other = (2, 1) if channels_first else (1, 2)
    dnums = lax.ScatterDimensionNumbers(
        update_window_dims=(), inserted_window_dims=(cells,),
        scatter_dims_to_operand_dims=(cells,), operand_batching_dims=(0, other),
        scatter_indices_batching_dims=(0, other))
    return lax.scatter(jnp.zeros(shape, values.dtype), idx[..., None], values, dnums,
                       mode=lax.GatherScatterMode.FILL_OR_DROP)


def window_args(plan: PoolPlan) -> dict[str, Any]:
    """``reduce_window``'s window, strides, pads and dilation over every axis of the layout."""
    spec, cf = plan.spec, plan.spec.channels_first
    return dict(window_dimensions=full(cf, spec.window, 1),
                window_strides=full(cf, spec.stride, 1),
                padding=full(cf, plan.total_pads, (0, 0)),
                window_dilation=full(cf, spec.dilation, 1))


def pad(a: jax.Array, plan: PoolPlan, fill: Any) -> jax.Array:
    """``a`` padded by ``plan.total_pads`` with ``fill`` (``a`` itself without padding)."""
    if not plan.has_padding:
        return a
    pads = full(plan.spec.channels_first, plan.total_pads, (0, 0))
    return lax.pad(a, np.array(fill, a.dtype), [(lo, hi, 0) for lo, hi in pads])


def tap(a: jax.Array, plan: PoolPlan, offsets: tuple[int, ...]) -> jax.Array:
    """The cells of ``a`` (the input padded by ``plan.total_pads``) that the window tap at
    ``offsets`` (per dim, from the window's first cell) reads for every output: one slice."""
    spec = plan.spec
    start, limit, strides = [0] * a.ndim, list(a.shape), [1] * a.ndim
    for d, axis in enumerate(spec.spatial_axes):
        start[axis] = offsets[d]
        limit[axis] = offsets[d] + (plan.out_size[d] - 1) * spec.stride[d] + 1
        strides[axis] = spec.stride[d]
    return lax.slice(a, start, limit, strides)


# ------------------------------------------------------------------ the family's primitives


def _scatter(values: jax.Array, idx: jax.Array, size: int, channels_first: bool) -> jax.Array:
    """:func:`put` of the rows (index ``size`` is past the plane: dropped, no spare cell)."""
    n, c = values.shape[0], values.shape[1 if channels_first else 2]
    shape = (n, c, size) if channels_first else (n, size, c)
    return put(shape, idx.astype(index_type((size,))), values, channels_first)


def _take(a: jax.Array, index: np.ndarray, axis: int) -> jax.Array:
    return jnp.take(a, index, axis=axis)


def _first_max(keys: jax.Array, flats: jax.Array, valid: np.ndarray,
               axis: int) -> tuple[jax.Array, jax.Array]:
    """The first maximum of integer keys over ``axis``: strictly greater wins, ties keep the
    first (a padding slot repeats the bin's first cell: it never wins)."""
    key, flat = lax.index_in_dim(keys, 0, axis, False), lax.index_in_dim(flats, 0, axis, False)
    for t in range(1, keys.shape[axis]):
        k = lax.index_in_dim(keys, t, axis, False)
        win = k > key
        key = jnp.where(win, k, key)
        flat = jnp.where(win, lax.index_in_dim(flats, t, axis, False), flat)
    return key, flat


# rows in the caller's layout (batch and channel the scatter's batching dims: a sharding
# stays); the largest index is returned to the caller, which checks it where it is concrete
UNPOOL = family.UnpoolOps(
    to_first=None, to_last=None, shape=lambda a: a.shape, reshape=jnp.reshape,
    as_index=lambda i: i, top=lambda i: jnp.max(i, initial=-1), where=jnp.where,
    scatter=_scatter)
MEANS = family.MeanOps(cast=lambda t, dtype: t.astype(dtype), take=_take, where=jnp.where,
                       sum=lambda t, axis: t.sum(axis=axis), divide=divide)
BIN_MAX = family.MaxOps(take=_take, first_max=_first_max)
