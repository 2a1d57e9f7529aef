"""JAX's and XLA's deviations from the canonical meaning, each with its workaround.

Each docstring names the behaviour (FRAMEWORK-NOTES.md's entry, or what was measured with
JAX 0.10 on x86 CPUs) and the test that pins it: ``tests/jax/test_framework_notes.py`` runs
the raw JAX op next to pooladapt's answer, ``tests/jax/test_backend.py`` pooladapt's side, so
a JAX release that changes one is noticed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pooladapt.plan import PoolPlan
from pooladapt.spec import make_spec

# ---------------------------------------------------------------------------- 64-bit data


def x64_scope(*dtypes: Any) -> contextlib.AbstractContextManager:
    """``jax.enable_x64`` for the duration of a call on 64-bit data, else nothing. JAX
    truncates float64/int64 to 32 bits unless ``jax_enable_x64`` is set (FRAMEWORK-NOTES §1a,
    integer dtypes: "int64/f64 need x64"); pooladapt pools 64-bit NumPy input in this scope,
    without flipping the global flag (test_numpy_float64_and_int64_are_exact_without_enabling_x64,
    test_64_bit_integer_jax_arrays_are_exact_with_x64_off)."""
    if not jax.config.jax_enable_x64 and any(np.dtype(d).itemsize == 8 for d in dtypes):
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def int64(i: jax.Array) -> jax.Array:
    """Indices are int64 (API.md), made in an x64 scope when the caller has x64 off (with x64
    off, JAX truncates them to int32 with a warning if they are used in arithmetic)."""
    with jax.enable_x64(True):
        return i.astype(jnp.int64)


# ---------------------------------------------------------------------------- subnormals


def order_key(x: jax.Array) -> jax.Array:
    """Integers ordered as the values, NaN greatest, -0.0 equal to 0.0. XLA on CPU flushes
    subnormals to zero in every float operation, comparisons included (jax#16200, "working as
    intended"); comparing these keys keeps indices exact
    (test_xla_flushes_subnormals_where_it_does_and_pooladapt_indices_never,
    test_subnormal_indices_and_global_max_are_exact_under_jit)."""
    if jnp.issubdtype(x.dtype, jnp.integer):
        return x
    itype = np.dtype(f"int{np.dtype(x.dtype).itemsize * 8}")
    k = lax.bitcast_convert_type(x, itype)
    k = k ^ ((k >> (itype.itemsize * 8 - 1)) & np.iinfo(itype).max)  # negatives: reversed
    k = jnp.where(k == -1, 0, k)  # -0.0
    return jnp.where(x != x, np.iinfo(itype).max, k)


def order_key_inverse(k: jax.Array) -> jax.Array:
    """The float bits of an order key (the map is its own inverse; NaN keys give a NaN)."""
    bits = k.dtype.itemsize * 8
    return k ^ ((k >> (bits - 1)) & np.iinfo(k.dtype).max)


FLUSHED = ("XLA flushes subnormal floats to zero in every float op here (on CPU: max and "
           "comparisons included, jax#16200, 'working as intended'): pooled subnormals read as "
           "zero, as everywhere in JAX on this machine; indices stay exact (integer keys); a "
           "check-and-redo costs as much as the pool (measured 90%)")


@lru_cache(maxsize=1)
def flushed_dtypes(pool: Callable[[jax.Array, PoolPlan], jax.Array]) -> tuple[str, ...]:
    """The float dtypes whose subnormals this machine's XLA flushes in a pooled max or average
    (``pool``: the backend's jitted pool; float16 computes in float32, where its subnormals
    are normal: exact on CPU). A known deviation, derived here, never written down
    (test_subnormal_deviations_are_the_dtypes_xla_flushes_here)."""
    flushed = []
    for name in ("float16", "bfloat16", "float32", "float64"):
        dtype = np.dtype(jnp.dtype(name))
        tiny = np.array(jnp.finfo(dtype).smallest_subnormal, dtype)
        with x64_scope(dtype):
            x = jax.device_put(np.full((1, 1, 2), tiny, dtype))
            got = [np.asarray(pool(x, make_spec(mode, 2, data_format="NCW", ndim=1).plan(
                x.shape))).item() for mode in ("max", "avg")]
        if got != [tiny.item()] * 2:
            flushed.append(name)
    return tuple(flushed)


def subnormal_deviations(pool: Callable[[jax.Array, PoolPlan], jax.Array]) -> dict[str, str]:
    """Conformance's known deviation for each dtype whose subnormals XLA flushes here."""
    return {f"subnormals:{d}": FLUSHED for d in flushed_dtypes(pool)}


# ---------------------------------------------------------------------------- division


def divide(s: jax.Array, divisor: Any) -> jax.Array:
    """``s / divisor``, correctly rounded: XLA rewrites a division by a constant into a
    multiplication by its reciprocal (6 / 5 -> 1.2000000000000002), not across an
    optimization barrier (test_jit_divides_by_a_constant_through_its_reciprocal)."""
    return s / lax.optimization_barrier(jnp.asarray(divisor, s.dtype))


# ---------------------------------------------------------------------------- gradients


def zero_empty_windows(s: jax.Array, empty: jax.Array) -> jax.Array:
    """A padded ``reduce_window`` sum with the windows of padding only (``empty``, broadcast
    against ``s``) cut off: XLA's compiled gradient of such a sum sends the cotangent of a
    window of padding only to the input, and an explicit pad gets folded into the same bug
    (test_jit_gradient_of_a_padded_window_sum_reaches_a_cell_outside_it). Their sum is 0 (an
    avg of them 0 / 0 = NaN), and the ``where`` passes them no gradient."""
    return jnp.where(empty, 0, s)


def first_max_gradient(fn: Callable[[jax.Array, PoolPlan], Any],
                       first_max: Callable[[jax.Array, PoolPlan], tuple[jax.Array, jax.Array]],
                       take: Callable[..., jax.Array]) -> Any:
    """``fn(x, plan)`` (a max, or a max and its indices) differentiated as the canonical max:
    the tangent gathered (``take``) at ``first_max``'s index (computed only when
    differentiating). JAX's own max gradient goes to the *last* NaN
    (test_jax_max_gradient_goes_to_the_last_nan) and it has no VJP for dilated max
    (test_jax_has_no_vjp_for_dilated_max); a ``custom_jvp`` also gives forward mode
    (test_forward_mode_jvp_of_max_pooling)."""
    wrapped = jax.custom_jvp(fn, nondiff_argnums=(1,))

    def jvp(plan: PoolPlan, primals: tuple, tangents: tuple) -> tuple:
        (x,), (t,) = primals, tangents
        out = fn(x, plan)
        idx = out[1] if isinstance(out, tuple) else first_max(x, plan)[1]
        dv = take(t, idx, plan.spec.channels_first, 0)
        if not isinstance(out, tuple):
            return out, dv
        return out, (dv, np.zeros(idx.shape, jax.dtypes.float0))  # integer outputs have none

    wrapped.defjvp(jvp)
    return wrapped
