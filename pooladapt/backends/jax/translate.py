"""The plan mapped onto ``lax.reduce_window`` and a few ``jnp`` ops. Read this file first.

One rank-generic path for 1-D, 2-D and 3-D, in the input's own layout: no transpose and no
explicit pad. ``reduce_window`` takes a window, stride, dilation and explicit ``(low, high)``
pads per axis of any layout and pads with its init value, so feeding it ``plan.total_pads``
realises every padding form and ceil mode in one native call. How each plan feature is
realised:

* **max**: one ``reduce_window`` max, padded with ``lowering.lowest`` (-inf, or the integer
  minimum); NaN propagates. Its gradient goes to the first maximum, gathered at
  :func:`first_max`'s index (``quirks.first_max_gradient``).
* **indices**: :func:`first_max`, a loop over the window's taps (``lowering.tap_offsets``) in
  row-major order, each one strided slice of the input's integer order keys
  (``quirks.order_key``: XLA flushes subnormals in float comparisons), padded once; strictly
  greater wins, so ties keep the first.
* **avg**: the window sums in ``lowering.accumulator``'s dtype, divided by the plan's divisor
  (a constant, or the divisor map) across an optimization barrier (``quirks.divide``).
* **lp** (``lowering.lp_steps``): the window sums of ``|x| ** p``, then the root; a zero sum
  passes no gradient.
* **global**: max is the first maximum of each plane's order keys, the value gathered there;
  avg and lp ``jnp.sum``. **adaptive** and **unpool**: pooladapt.family's algorithms on
  ops.py's primitives (adaptive max on the integer keys; unpool one scatter per plane, batch
  and channel its batching dims: a sharding stays).

Indices are found on integer keys and the value gathered at them (``ops.take``), so a max's
gradient is one scatter-add. compile.py jits each function here once per plan; quirks.py
holds XLA's deviations.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pooladapt import family, lowering
from pooladapt.backends.jax import ops, quirks
from pooladapt.plan import AdaptivePlan, PoolPlan
from pooladapt.spec import GlobalSpec


def lowers_natively(plan: PoolPlan, dtype_name: str) -> bool:
    """One ``reduce_window`` as JAX means it: max without indices, or an avg of windows
    without padding (with padding the divisor is the plan's, which the op does not know); lp
    (a root) and indices (the taps) are emulated. Every dtype runs."""
    spec = plan.spec
    return not spec.return_indices and (
        spec.mode == "max" or (spec.mode == "avg" and not plan.has_padding))


def pool(x: jax.Array, plan: PoolPlan) -> Any:
    """Pool ``x`` (in the spec's layout) by the plan."""
    spec = plan.spec
    if spec.mode == "max" and spec.return_indices:
        value, idx = max_and_index(x, plan)
        return value, quirks.int64(idx)
    if spec.mode == "max":
        return max_pool(x, plan)
    acc = np.dtype(lowering.accumulator(x.dtype.name))
    xs = lp_power(x.astype(acc), spec.p) if spec.mode == "lp" else x.astype(acc)
    s = lax.reduce_window(xs, np.array(0, acc), lax.add, **ops.window_args(plan))
    if plan.all_padding_windows:
        s = quirks.zero_empty_windows(s, ops.spatial_const(plan.empty_windows,
                                                           spec.channels_first, bool))
    if spec.mode == "lp":
        return lp_root(s, spec.p).astype(x.dtype)
    divisor = plan.uniform_divisor
    if divisor is None:
        divisor = ops.spatial_const(plan.divisor_map, spec.channels_first, acc)
    return quirks.divide(s, divisor).astype(x.dtype)




def native_max(x: jax.Array, plan: PoolPlan) -> jax.Array:
    return lax.reduce_window(x, ops.lowest(x.dtype), lax.max, **ops.window_args(plan))


def first_max(x: jax.Array, plan: PoolPlan) -> tuple[jax.Array, jax.Array]:
    """Every window's max and the per-plane flat index of its first maximum (first NaN if
    any); the dtype's lowest value and index -1 for an all-padding window.

    Each tap's keys are compared with the best so far: XLA fuses the loop into one pass over
    output-sized arrays. It keeps the winning tap's offset in the plane, added to the
    window's first cell, and the winning key, decoded into the value (bit-exact: no float op
    touches it). Float keys never reach their type's minimum, which pads; integer keys may,
    so a mask of the real cells keeps padding out. (A variadic reduce_window is 6-10x slower
    and needs an input-sized index array; gathering the values costs more than decoding.)"""
    spec, itype = plan.spec, ops.index_type(plan.in_size)
    strides = lowering.plane_strides(plan.in_size)
    with quirks.x64_scope(itype):
        x = lax.stop_gradient(x)
        floating = not jnp.issubdtype(x.dtype, jnp.integer)
        key = quirks.order_key(x)
        low = np.iinfo(key.dtype).min
        keys = ops.pad(key, plan, low)
        real = None if floating or not plan.has_padding else ops.pad(
            jnp.ones(x.shape, bool), plan, False)
        shape = plan.output_shape(x.shape)
        first = 0  # the flat index of each window's first cell (padding included)
        for d, axis in enumerate(spec.spatial_axes):
            o = lax.broadcasted_iota(itype, shape, axis) * spec.stride[d] - plan.pads[d][0]
            first = first + o * strides[d]
        best, idx = jnp.full(shape, low, key.dtype), jnp.full(shape, -1, itype)
        for n, offsets in enumerate(lowering.tap_offsets(plan)):
            k = ops.tap(keys, plan, offsets)
            if n == 0 and not plan.has_padding:  # the first tap is real in every window
                best, idx = k, first
                continue
            win = k > best
            if not floating:  # the first real tap wins even at the integer minimum
                win = win | ((idx < 0) if real is None
                             else (idx < 0) & ops.tap(real, plan, offsets))
            shift = sum(o * s for o, s in zip(offsets, strides))
            best, idx = jnp.where(win, k, best), jnp.where(win, first + shift, idx)
        if not floating:
            return best, idx  # the key is the value; an all-padding window keeps the minimum
        value = lax.bitcast_convert_type(quirks.order_key_inverse(best), x.dtype)
        return jnp.where(idx < 0, ops.lowest(x.dtype), value), idx


max_pool = quirks.first_max_gradient(native_max, first_max, ops.take)
max_and_index = quirks.first_max_gradient(first_max, first_max, ops.take)






def global_pool(x: jax.Array, spec: GlobalSpec) -> jax.Array:
    """Max: the first maximum (or NaN) of each plane's integer keys, then a gather, where the
    value and the gradient go (``jnp.max`` would split the gradient between ties; not
    ``jnp.argmax``: its lowering makes 32-bit constants for 64-bit keys when the caller's jit
    has x64 off). Avg and lp: sums over the plane."""
    axes = spec.spatial_axes
    if spec.mode == "max":
        cf = spec.data_format == "channels_first"
        keys = quirks.order_key(lax.stop_gradient(ops.planes(x, cf)))
        axis, cells = (2 if cf else 1), keys.shape[2 if cf else 1]
        top = jnp.expand_dims(lax.reduce_max(keys, (axis,)), axis)
        cell = lax.broadcasted_iota(ops.index_type((cells,)), keys.shape, axis)
        i = lax.reduce_min(jnp.where(keys == top, cell, cells), (axis,))
        out = ops.take(x, jnp.expand_dims(i, axis), cf, 0)
        out = out.reshape([1 if a in axes else n for a, n in enumerate(x.shape)])
        return out if spec.keepdims else out.squeeze(axes)
    acc = np.dtype(lowering.accumulator(x.dtype.name))
    if spec.mode == "avg":
        s = jnp.sum(x, axis=axes, dtype=acc, keepdims=spec.keepdims)
        return quirks.divide(s, math.prod(x.shape[a] for a in axes)).astype(x.dtype)
    s = jnp.sum(lp_power(x.astype(acc), spec.p), axis=axes, keepdims=spec.keepdims)
    return lp_root(s, spec.p).astype(x.dtype)


def adaptive_pool(x: jax.Array, plan: AdaptivePlan) -> Any:
    """Avg: ``family.bin_means``. Max: ``family.bin_first_max`` of the integer keys, so the
    surviving index is the row-major first max; the value is gathered once at it
    (bit-exact), so the gradient is one scatter-add."""
    spec = plan.spec
    if spec.mode == "avg":
        return family.bin_means(ops.MEANS, x, plan)
    cf, itype = spec.data_format == "channels_first", ops.index_type(plan.in_size)
    with quirks.x64_scope(itype):
        flat = ops.plane_index(cf, plan.in_size, x.shape, itype)
        _, flat = family.bin_first_max(ops.BIN_MAX, quirks.order_key(lax.stop_gradient(x)),
                                       flat, family.plan_bins(plan))
    out = ops.take(x, flat, cf, 0)
    return (out, quirks.int64(flat)) if spec.return_indices else out


def max_unpool(y: jax.Array, indices: jax.Array, channels_first: bool,
               out_size: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """``family.unpool_rows``: the unpooled tensor and the largest index, which the backend
    checks where it is concrete. One scatter per plane (``ops.put``: batch and channel are its
    batching dims, so a sharded batch stays sharded); negative and out-of-range indices point
    past the plane's end and are dropped."""
    return family.unpool_rows(ops.UNPOOL, y, indices, channels_first, out_size)


def lp_power(x: jax.Array, p: float) -> jax.Array:
    """``|x| ** p``, |x| as x*sign(x): its derivative at 0 is 0 (jnp.abs has 1 there), as in
    the oracle; a square for 2."""
    power = lowering.lp_steps(p).power
    if power == 2.0:
        return jnp.square(x)
    ax = x * jnp.sign(x)
    return ax if power == 1.0 else ax**power


def lp_root(s: jax.Array, p: float) -> jax.Array:
    """``s ** (1/p)``; 0 with a zero (not NaN) gradient where ``s == 0``."""
    root = lowering.lp_steps(p).root
    if root is None:
        return s
    pos = s > 0
    safe = jnp.where(pos, s, 1)
    return jnp.where(pos, jnp.sqrt(safe) if root == 0.5 else safe**root, s * 0)
