"""The JAX backend: ``lax.reduce_window`` runs every pooling plan in one native call.

``reduce_window`` takes a window, stride, dilation and explicit ``(low, high)`` pads per axis of
any layout, and pads with its init value: ``-inf`` (the dtype minimum for integers) for max and
0 for sums. Feeding it ``plan.total_pads`` therefore realises every padding form and ceil mode
natively, with no transpose and no explicit pad. What JAX lacks is emulated exactly:

* indices: a loop over the window's taps (strided slices, strictly greater wins: the first
  maximum in row-major window order), on integer order keys of the values (NaN greatest), as
  XLA on CPU flushes subnormals to zero in float comparisons (its pooled values do the same
  where it does: a known deviation detected on the machine, see ``_FTZ``);
* the max gradient: JAX sends it to the *last* NaN and has no VJP for dilated max, so max pooling
  is a ``custom_jvp`` whose tangent is gathered at those indices (computed only when
  differentiating);
* avg divisors (``count_include_pad``, ceil mode, ``same``): the plan's divisor (a constant, or
  the divisor map), divided across an optimization barrier so XLA keeps a real division.

Each body is jitted once per plan (a static argument), so an eager call costs one dispatch.
The backend has no speed routes: every plan takes the one translation above, whatever its size.
Its one tuning knob, :class:`Tuning` ``max_programs``, bounds the compiled programs eager calls
keep (changed in a ``with tuned(...)`` block).

64-bit data: JAX truncates float64/int64 to 32 bits unless ``jax_enable_x64`` is set. NumPy input
of a 64-bit dtype is converted, pooled and differentiated inside a scoped ``jax.enable_x64``
context, so results stay exact without flipping the global flag. JAX arrays are whatever the
caller's x64 setting made them; a 64-bit one pools exactly with x64 off too, eager or under the
caller's jit, but its gradient through a gather (max, adaptive) needs x64 on: JAX builds the
backward pass outside the backend, and with x64 off its scatter gets a 32-bit operand (a JAX
TypeError, not a wrong value). Indices are int64 whatever the setting (with x64 off, JAX
truncates them to int32 with a warning if they are used in arithmetic; ``max_unpool`` takes
them as they are).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pooladapt.backends.base import EMULATED, FEATURES, NATIVE, Backend
from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan, UnpoolSpec, make_spec


def _x64_scope(*dtypes: Any) -> contextlib.AbstractContextManager:
    """``jax.enable_x64`` for the duration of a call on 64-bit data, else nothing."""
    if not jax.config.jax_enable_x64 and any(np.dtype(d).itemsize == 8 for d in dtypes):
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def _int64(i: jax.Array) -> jax.Array:
    """Indices are int64 (API.md), made in an x64 scope when the caller has x64 off."""
    with jax.enable_x64(True):
        return i.astype(jnp.int64)


def _acc_dtype(dtype: Any) -> Any:
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _lowest(dtype: Any) -> np.ndarray:
    """The max identity, which reduce_window also pads with: -inf, or the integer minimum."""
    if jnp.issubdtype(dtype, jnp.integer):
        return np.array(jnp.iinfo(dtype).min, dtype)
    return np.array(-np.inf, dtype)


def _full(channels_first: bool, spatial: tuple, fill: Any) -> tuple:
    """Per-spatial-dim values as a tuple over every axis of the layout."""
    return (fill, fill, *spatial) if channels_first else (fill, *spatial, fill)


def _window(plan: PoolPlan) -> dict[str, Any]:
    spec, cf = plan.spec, plan.spec.channels_first
    return dict(window_dimensions=_full(cf, spec.window, 1),
                window_strides=_full(cf, spec.stride, 1),
                padding=_full(cf, plan.total_pads, (0, 0)),
                window_dilation=_full(cf, spec.dilation, 1))


def _spatial_const(a: np.ndarray, channels_first: bool, dtype: Any) -> jax.Array:
    """A constant over the spatial dims, shaped to broadcast against the layout."""
    return jnp.asarray(a.reshape(_full(channels_first, a.shape, 1)), dtype)


def _order_key(x: jax.Array) -> jax.Array:
    """Integers ordered as the values, NaN greatest, -0.0 equal to 0.0. XLA on CPU flushes
    subnormals to zero in every float operation; comparing these keys keeps them exact."""
    if jnp.issubdtype(x.dtype, jnp.integer):
        return x
    itype = np.dtype(f"int{np.dtype(x.dtype).itemsize * 8}")
    k = lax.bitcast_convert_type(x, itype)
    k = k ^ ((k >> (itype.itemsize * 8 - 1)) & np.iinfo(itype).max)  # negatives: reversed
    k = jnp.where(k == -1, 0, k)  # -0.0
    return jnp.where(x != x, np.iinfo(itype).max, k)


def _order_key_inverse(k: jax.Array) -> jax.Array:
    """The float bits of an order key (the map is its own inverse; NaN keys give a NaN)."""
    bits = k.dtype.itemsize * 8
    return k ^ ((k >> (bits - 1)) & np.iinfo(k.dtype).max)


def _plane_index(channels_first: bool, in_size: tuple[int, ...], shape: tuple, dtype: Any):
    """Per-plane flat index of every cell of an input of ``shape``."""
    first = 2 if channels_first else 1
    flat = jnp.zeros(shape, dtype)
    for d in range(len(in_size)):
        flat = flat + lax.broadcasted_iota(dtype, shape, first + d) * math.prod(in_size[d + 1:])
    return flat


def _index_type(in_size: tuple[int, ...]) -> np.dtype:
    """int32 indices, int64 for a plane of 2**31 cells or more (inside an x64 scope)."""
    return np.dtype(np.int64 if math.prod(in_size) >= np.iinfo(np.int32).max else np.int32)


def _tap(a: jax.Array, plan: PoolPlan, taps: tuple[int, ...]) -> jax.Array:
    """The cells of ``a`` (the input padded by ``plan.total_pads``) that window tap ``taps``
    (one tap number per spatial dim) reads for every output: one strided slice."""
    spec = plan.spec
    start, limit, strides = [0] * a.ndim, list(a.shape), [1] * a.ndim
    for d, axis in enumerate(spec.spatial_axes):
        start[axis] = taps[d] * spec.dilation[d]
        limit[axis] = start[axis] + (plan.out_size[d] - 1) * spec.stride[d] + 1
        strides[axis] = spec.stride[d]
    return lax.slice(a, start, limit, strides)


def _pad(a: jax.Array, plan: PoolPlan, fill: Any) -> jax.Array:
    if not plan.has_padding:
        return a
    pads = _full(plan.spec.channels_first, plan.total_pads, (0, 0))
    return lax.pad(a, np.array(fill, a.dtype), [(lo, hi, 0) for lo, hi in pads])


def _first_max(x: jax.Array, plan: PoolPlan) -> tuple[jax.Array, jax.Array]:
    """Every window's max and the per-plane flat index of its first maximum (first NaN if
    any); the dtype's lowest value and index -1 for an all-padding window.

    A loop over the window's taps in row-major order, each a strided slice of the input's
    integer order keys, padded once, compared with the best so far (strictly greater wins, so
    ties keep the first): XLA fuses it into one pass over output-sized arrays. It keeps the
    winning tap's offset in the plane, added to the window's first cell at the end, and the
    winning key, decoded into the value (bit-exact: no float op touches it). Float keys never
    reach their type's minimum, which pads; integer keys may, so a mask of the real cells keeps
    padding out. (A variadic reduce_window is 6-10x slower and needs an input-sized index
    array; gathering the values at the indices costs more than decoding them.)"""
    spec, itype = plan.spec, _index_type(plan.in_size)
    with _x64_scope(itype):
        x = lax.stop_gradient(x)
        floating = not jnp.issubdtype(x.dtype, jnp.integer)
        key = _order_key(x)
        low = np.iinfo(key.dtype).min
        keys = _pad(key, plan, low)
        real = None if floating or not plan.has_padding else _pad(
            jnp.ones(x.shape, bool), plan, False)
        shape = plan.output_shape(x.shape)
        first = 0  # the flat index of each window's first cell (padding included)
        for d, axis in enumerate(spec.spatial_axes):
            o = lax.broadcasted_iota(itype, shape, axis) * spec.stride[d] - plan.pads[d][0]
            first = first + o * math.prod(plan.in_size[d + 1:])
        best, idx = jnp.full(shape, low, key.dtype), jnp.full(shape, -1, itype)
        for n, taps in enumerate(itertools.product(*map(range, spec.window))):
            k = _tap(keys, plan, taps)
            if n == 0 and not plan.has_padding:  # the first tap is real in every window
                best, idx = k, first
                continue
            win = k > best
            if not floating:  # the first real tap wins even at the integer minimum
                win = win | ((idx < 0) if real is None else (idx < 0) & _tap(real, plan, taps))
            shift = sum(t * spec.dilation[d] * math.prod(plan.in_size[d + 1:])
                        for d, t in enumerate(taps))
            best, idx = jnp.where(win, k, best), jnp.where(win, first + shift, idx)
        if not floating:
            return best, idx  # the key is the value; an all-padding window keeps the minimum
        value = lax.bitcast_convert_type(_order_key_inverse(best), x.dtype)
        return jnp.where(idx < 0, _lowest(x.dtype), value), idx


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_and_index(x: jax.Array, plan: PoolPlan) -> tuple[jax.Array, jax.Array]:
    return _first_max(x, plan)


@_max_and_index.defjvp
def _max_and_index_jvp(plan: PoolPlan, primals, tangents):
    (x,), (t,) = primals, tangents
    value, idx = _first_max(x, plan)
    no_tangent = np.zeros(idx.shape, jax.dtypes.float0)  # integer outputs have none
    return (value, idx), (_take(t, idx, plan.spec.channels_first, 0), no_tangent)


def _planes(a: jax.Array, channels_first: bool) -> jax.Array:
    """``a`` as (N, C, cells) or (N, cells, C) (sizes spelled out: N or C may be 0)."""
    if channels_first:
        return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))
    return a.reshape(a.shape[0], math.prod(a.shape[1:-1]), a.shape[-1])


def _take(v: jax.Array, idx: jax.Array, channels_first: bool, fill: Any) -> jax.Array:
    """``v``'s value at each per-plane flat index (``fill`` where the index is -1): one gather
    from the flattened ``v`` (its transpose, the max gradient, is one flat scatter-add)."""
    i = _planes(idx, channels_first)
    cells = math.prod(v.shape[2:] if channels_first else v.shape[1:-1])
    itype = _index_type((v.size,))
    with _x64_scope(itype):
        i = jnp.maximum(i, 0).astype(itype)
        n = lax.broadcasted_iota(itype, i.shape, 0)
        if channels_first:  # (n, c, cell) -> (n * C + c) * cells + cell
            flat = (n * v.shape[1] + lax.broadcasted_iota(itype, i.shape, 1)) * cells + i
        else:  # (n, cell, c) -> (n * cells + cell) * C + c
            flat = (n * cells + i) * v.shape[-1] + lax.broadcasted_iota(itype, i.shape, 2)
        out = v.reshape(-1).at[flat.reshape(-1)].get(mode="promise_in_bounds")
    return jnp.where(idx >= 0, out.reshape(idx.shape), fill)


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, plan: PoolPlan) -> jax.Array:
    return lax.reduce_window(x, _lowest(x.dtype), lax.max, **_window(plan))


@_max_pool.defjvp
def _max_pool_jvp(plan: PoolPlan, primals, tangents):
    (x,), (t,) = primals, tangents
    _, idx = _first_max(x, plan)
    return _max_pool(x, plan), _take(t, idx, plan.spec.channels_first, 0)


def _divide(s: jax.Array, divisor: Any) -> jax.Array:
    """``s / divisor``, correctly rounded: XLA rewrites a division by a constant into a
    multiplication by its reciprocal (6 / 5 -> 1.2000000000000002), not across a barrier."""
    return s / lax.optimization_barrier(jnp.asarray(divisor, s.dtype))


def _abs_pow(x: jax.Array, p: float) -> jax.Array:
    # |x| as x*sign(x): its derivative at 0 is 0 (jnp.abs has 1 there), as in the oracle.
    if p == 2.0:
        return jnp.square(x)
    ax = x * jnp.sign(x)
    return ax if p == 1.0 else ax**p


def _root(s: jax.Array, p: float) -> jax.Array:
    """``s ** (1/p)`` with a zero (not NaN) gradient where ``s == 0``."""
    if p == 1.0:
        return s
    pos = s > 0
    safe = jnp.where(pos, s, 1)
    return jnp.where(pos, jnp.sqrt(safe) if p == 2.0 else safe ** (1.0 / p), s * 0)


# The bodies, jitted per plan (a static, hashable argument): an eager call reuses the compiled
# program; inside the caller's jit they are inlined. Each compiled CPU program holds a few MB
# and about ten memory maps for as long as its jit cache keeps it (thousands): an eager fuzz run
# over thousands of shapes reaches vm.max_map_count (65530), where XLA's compiler crashes (LLVM
# "Cannot allocate memory", then a segfault). Past Tuning.max_programs traces, eager calls
# drop them.


@dataclass(frozen=True)
class Tuning:
    """The JAX backend's one knob: ``max_programs``, how many traces of its bodies (programs
    compiled, or inlined into a caller's jit) eager calls let accumulate before they drop the
    bodies' compiled programs (each holds MBs of memory maps; thousands crashed XLA)."""

    max_programs: int = 256

    def __post_init__(self) -> None:
        value = self.max_programs
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Tuning.max_programs must be an int, got {type(value).__name__} "
                            f"{value!r}")
        if value < 0:
            raise ValueError(f"Tuning.max_programs must be >= 0, got {value}")


DEFAULT_TUNING = Tuning()
_tuning: contextvars.ContextVar[Tuning] = contextvars.ContextVar(
    "pooladapt_jax_tuning", default=DEFAULT_TUNING)


def tuning() -> Tuning:
    """The JAX backend's tuning here and now (``DEFAULT_TUNING`` unless changed)."""
    return _tuning.get()


@contextlib.contextmanager
def tuned(**changes: int) -> Iterator[Tuning]:
    """Change :class:`Tuning` inside a ``with`` block (per thread and asyncio task); unknown
    names raise TypeError, bad values ValueError.

    >>> with tuned(max_programs=16):  # a loop over many shapes keeps fewer programs
    ...     tuning().max_programs
    16
    """
    token = _tuning.set(dataclasses.replace(_tuning.get(), **changes))
    try:
        yield _tuning.get()
    finally:
        _tuning.reset(token)


_programs = 0


def traced_programs() -> int:
    """Traces of the bodies since eager calls last dropped their compiled programs."""
    return _programs


def _traced() -> None:
    """Count a trace of one of the bodies (a cache miss: a program compiled, or inlined)."""
    global _programs
    _programs += 1


def _bound_programs(x: Any) -> None:
    """After an eager call on ``x``: drop the bodies' compiled programs once more than
    ``max_programs`` were traced (never while tracing: the caller's program may use them)."""
    global _programs
    if _programs > tuning().max_programs and not isinstance(x, jax.core.Tracer):
        _programs = 0
        for body in (_pool, _global_pool, _adaptive_pool, _max_unpool):
            body.clear_cache()


@partial(jax.jit, static_argnums=1)
def _pool(x: jax.Array, plan: PoolPlan):
    _traced()
    spec = plan.spec
    if spec.mode == "max" and spec.return_indices:
        value, idx = _max_and_index(x, plan)
        return value, _int64(idx)
    if spec.mode == "max":
        return _max_pool(x, plan)
    acc = _acc_dtype(x.dtype)
    xs = x.astype(acc)
    if spec.mode == "lp":
        xs = _abs_pow(xs, spec.p)
    s = lax.reduce_window(xs, np.array(0, acc), lax.add, **_window(plan))
    if plan.all_padding_windows:
        # XLA's compiled gradient of a padded reduce_window sum sends the cotangent of a window
        # of padding only to the input (jax 0.10, tests/jax/test_framework_notes.py), and an
        # explicit pad gets folded into the same bug: cut such windows off (their sum is 0, an
        # avg of them 0 / 0 = NaN, and the where passes them no gradient)
        s = jnp.where(_spatial_const(plan.empty_windows, spec.channels_first, bool), 0, s)
    if spec.mode == "lp":
        return _root(s, spec.p).astype(x.dtype)
    if plan.uniform_divisor is not None:
        return _divide(s, plan.uniform_divisor).astype(x.dtype)
    return _divide(s, _spatial_const(plan.divisor_map, spec.channels_first, acc)).astype(x.dtype)


@partial(jax.jit, static_argnums=1)
def _global_pool(x: jax.Array, spec: GlobalSpec):
    _traced()
    axes = spec.spatial_axes
    if spec.mode == "max":
        cf = spec.data_format == "channels_first"
        # the first max (or NaN) of the integer keys, then a gather: the value and the gradient
        # go there (jnp.max would split the gradient between ties). Not jnp.argmax: its
        # lowering makes 32-bit constants for 64-bit keys when the caller's jit has x64 off.
        keys = _order_key(lax.stop_gradient(_planes(x, cf)))
        axis, cells = (2 if cf else 1), keys.shape[2 if cf else 1]
        top = jnp.expand_dims(lax.reduce_max(keys, (axis,)), axis)
        cell = lax.broadcasted_iota(_index_type((cells,)), keys.shape, axis)
        i = lax.reduce_min(jnp.where(keys == top, cell, cells), (axis,))
        out = _take(x, jnp.expand_dims(i, axis), cf, 0)
        out = out.reshape([1 if a in axes else n for a, n in enumerate(x.shape)])
        return out if spec.keepdims else out.squeeze(axes)
    acc = _acc_dtype(x.dtype)
    if spec.mode == "avg":
        s = jnp.sum(x, axis=axes, dtype=acc, keepdims=spec.keepdims)
        return _divide(s, math.prod(x.shape[a] for a in axes)).astype(x.dtype)
    s = jnp.sum(_abs_pow(x.astype(acc), spec.p), axis=axes, keepdims=spec.keepdims)
    return _root(s, spec.p).astype(x.dtype)


@partial(jax.jit, static_argnums=1)
def _adaptive_pool(x: jax.Array, plan: AdaptivePlan):
    _traced()
    spec = plan.spec
    axes = spec.spatial_axes
    if spec.mode == "avg":
        out = x.astype(_acc_dtype(x.dtype))
        for d, axis in enumerate(axes):
            index, valid = plan.gather(d)
            trailing = (1,) * (x.ndim - axis - 1)
            taken = jnp.take(out, index, axis=axis)  # (..., out, width, ...)
            taken = jnp.where(valid.reshape(valid.shape + trailing), taken, 0)
            out = _divide(taken.sum(axis=axis + 1), valid.sum(axis=1).reshape((-1, *trailing)))
        return out.astype(x.dtype)
    cf = spec.data_format == "channels_first"
    with _x64_scope(_index_type(plan.in_size)):
        flat = _plane_index(cf, plan.in_size, x.shape, _index_type(plan.in_size))
        key = _order_key(lax.stop_gradient(x))
        # The last spatial dim first: the surviving index is the row-major first max. Only
        # integer keys and indices go through the bins; the value is gathered once at the
        # index (bit-exact), so the gradient is one scatter-add.
        for d in reversed(range(spec.ndim)):
            axis = axes[d]
            index, _ = plan.gather(d)  # (out, width): a bin's slots, the short bins' repeated
            keys, flats = jnp.take(key, index, axis=axis), jnp.take(flat, index, axis=axis)
            key, flat = lax.index_in_dim(keys, 0, axis + 1, False), lax.index_in_dim(
                flats, 0, axis + 1, False)
            for t in range(1, index.shape[1]):  # strictly greater wins: ties keep the first
                k = lax.index_in_dim(keys, t, axis + 1, False)
                win = k > key
                key = jnp.where(win, k, key)
                flat = jnp.where(win, lax.index_in_dim(flats, t, axis + 1, False), flat)
    out = _take(x, flat, cf, 0)
    return (out, _int64(flat)) if spec.return_indices else out


@partial(jax.jit, static_argnums=(2, 3))
def _max_unpool(y: jax.Array, indices: jax.Array, channels_first: bool,
                out_size: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """The unpooled tensor and the largest index (for the eager range check).

    One scatter into the flat output, one index per value (no spare cell to slice off):
    negative and out-of-range indices point past its end and are dropped."""
    _traced()
    cf, size = channels_first, math.prod(out_size)
    n, c = y.shape[0], y.shape[1 if cf else -1]
    total = n * c * size
    i = _planes(indices, cf)
    itype = _index_type((total,))
    valid = (i >= 0) & (i < size)
    top = jnp.max(i, initial=-1)
    i = i.astype(itype)
    plane = lax.broadcasted_iota(itype, i.shape, 0) * c
    if cf:  # (n, c, cell) -> (n * c + c) * size + cell
        flat = (plane + lax.broadcasted_iota(itype, i.shape, 1)) * size + i
    else:  # (n, cell, c) -> (n * size + cell) * c + c
        flat = plane * size + i * c + lax.broadcasted_iota(itype, i.shape, 2)
    flat = jnp.where(valid, flat, total).reshape(-1)
    out = jnp.zeros((total,), y.dtype).at[flat].set(y.reshape(-1), mode="drop")
    return out.reshape((n, c, *out_size) if cf else (n, *out_size, c)), top


_FTZ = ("XLA flushes subnormal floats to zero in every float op here (on CPU: max and "
        "comparisons included, jax#16200, 'working as intended'): pooled subnormals read as "
        "zero, as everywhere in JAX on this machine; indices stay exact (integer keys); a "
        "check-and-redo costs as much as the pool (measured 90%)")


@lru_cache(maxsize=1)
def _flushed_dtypes() -> tuple[str, ...]:
    """The float dtypes whose subnormals this machine's XLA flushes in a pooled max or average
    (float16 computes in float32, where its subnormals are normal: exact on CPU)."""
    flushed = []
    for name in ("float16", "bfloat16", "float32", "float64"):
        dtype = np.dtype(jnp.dtype(name))
        tiny = np.array(jnp.finfo(dtype).smallest_subnormal, dtype)
        with _x64_scope(dtype):
            x = jax.device_put(np.full((1, 1, 2), tiny, dtype))
            got = [np.asarray(_pool(x, make_spec(mode, 2, data_format="NCW", ndim=1).plan(
                x.shape))).item() for mode in ("max", "avg")]
        if got != [tiny.item()] * 2:
            flushed.append(name)
    return tuple(flushed)


class JaxBackend(Backend):
    name = "jax"
    framework = "jax"
    supports_autograd = True
    speed_routes = ()  # one translation of every plan (nothing chosen by size or shape)

    @cached_property
    def known_deviations(self) -> dict[str, str]:  # type: ignore[override]
        return {f"subnormals:{d}": _FTZ for d in _flushed_dtypes()}

    def version(self) -> str:
        return jax.__version__

    def capabilities(self) -> dict[str, str]:
        emulated = {"lp", "count_include_pad", "indices", "adaptive", "unpool"}
        return {f: EMULATED if f in emulated else NATIVE for f in FEATURES}

    def from_numpy(self, a: np.ndarray) -> jax.Array:
        a = np.asarray(a)
        with _x64_scope(a.dtype):
            return jax.device_put(a)  # (jnp.asarray compiles a program per shape and dtype)

    def to_numpy(self, x: jax.Array) -> np.ndarray:
        return np.asarray(x)

    def dtype_name(self, x: Any) -> str:
        return str(np.dtype(x.dtype))

    def vjp(self, fn: Callable[[Any], Any], x: jax.Array, g: jax.Array) -> jax.Array:
        # One program for the forward and backward pass: an eager jax.vjp compiles several
        # per shape, into JAX's caches (which _bound_programs does not reach).
        with _x64_scope(x.dtype):
            return jax.jit(lambda t, c: jax.vjp(fn, t)[1](c)[0])(x, g)

    # ------------------------------------------------------------------------ pooling

    def pool(self, x: jax.Array, plan: PoolPlan):
        with _x64_scope(x.dtype, _index_type(plan.in_size)):
            out = _pool(x, plan)
        _bound_programs(x)
        return out

    def global_pool(self, x: jax.Array, spec: GlobalSpec):
        cells = math.prod(x.shape[a] for a in spec.spatial_axes)
        with _x64_scope(x.dtype, _index_type((cells,))):
            out = _global_pool(x, spec)
        _bound_programs(x)
        return out

    def adaptive_pool(self, x: jax.Array, plan: AdaptivePlan):
        with _x64_scope(x.dtype, _index_type(plan.in_size)):
            out = _adaptive_pool(x, plan)
        _bound_programs(x)
        return out

    def max_unpool(self, y: jax.Array, indices: jax.Array, spec: UnpoolSpec,
                   out_size: tuple[int, ...]):
        cf = spec.data_format == "channels_first"
        planes = y.shape[0] * y.shape[1 if cf else -1]
        with _x64_scope(y.dtype, indices.dtype, _index_type((planes * math.prod(out_size),))):
            out, top = _max_unpool(y, indices, cf, out_size)
        _bound_programs(top)
        # Range check on concrete indices only: under jit it would need a host round-trip
        # (there, out-of-range indices are dropped, as by every JAX scatter).
        if not isinstance(top, jax.core.Tracer) and int(top) >= math.prod(out_size):
            raise ValueError(f"an index ({int(top)}) is outside the output plane {out_size!r}")
        return out


BACKEND = JaxBackend()
