"""The JAX backend: JAX arrays in, JAX arrays out, ``jax.jit``, ``grad`` and ``jvp`` intact.

translate.py maps a plan onto ``lax.reduce_window`` and a few ``jnp`` ops (read it first);
ops.py holds its array primitives, quirks.py XLA's deviations and their workarounds,
compile.py the jitted bodies and the bound on their programs. JAX has no speed routes: every
plan takes its one translation, whatever its size. This module is the backend object:
conversions, dtype names, autograd, what it reports, and each call in its x64 scope.

64-bit data: JAX truncates float64/int64 to 32 bits unless ``jax_enable_x64`` is set. NumPy
input of a 64-bit dtype is converted, pooled and differentiated inside a scoped
``jax.enable_x64`` context (``quirks.x64_scope``), so results stay exact without flipping the
global flag. JAX arrays are whatever the caller's x64 setting made them; a 64-bit one pools
exactly with x64 off too, eager or under the caller's jit, but its gradient through a gather
(max, adaptive) needs x64 on: JAX builds the backward pass outside the backend, and with x64
off its scatter gets a 32-bit operand (a JAX TypeError, not a wrong value). Indices are int64
whatever the setting (with x64 off, JAX truncates them to int32 with a warning if they are
used in arithmetic; ``max_unpool`` takes them as they are).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from typing import Any

import jax
import numpy as np

from pooladapt import lowering
from pooladapt.backends.base import Backend
from pooladapt.backends.jax import compile, ops, quirks, translate
from pooladapt.backends.jax.compile import (
    DEFAULT_TUNING,
    Tuning,
    traced_programs,
    tuned,
    tuning,
)
from pooladapt.plan import AdaptivePlan, PoolPlan
from pooladapt.spec import GlobalSpec, UnpoolSpec


class JaxBackend(Backend):
    name = "jax"
    framework = "jax"
    supports_autograd = True
    speed_routes = ()  # one translation of every plan (nothing chosen by size or shape)
    native_features = frozenset({"nan", "global", "autograd", "compile"})
    # adaptive pooling is gathers per dim over the bins; unpool is one scatter
    emulated_features = frozenset({"adaptive", "unpool"})

    @cached_property
    def known_deviations(self) -> dict[str, str]:  # type: ignore[override]
        """Subnormals, for each dtype whose subnormals XLA flushes here."""
        return quirks.subnormal_deviations(compile.pool)

    def tracing(self, x: Any = None) -> bool:
        """True where ``x`` is a tracer (``jax.jit``, ``grad``, ``vmap``): JAX tells a trace by
        its tensors."""
        return x is not None and compile.tracing(x)

    def version(self) -> str:
        return jax.__version__

    def lowers_natively(self, plan: PoolPlan, dtype_name: str) -> bool | None:
        """The translation's own choice (``translate.lowers_natively``)."""
        return translate.lowers_natively(plan, dtype_name)

    def from_numpy(self, a: np.ndarray) -> jax.Array:
        a = np.asarray(a)
        with quirks.x64_scope(a.dtype):
            return jax.device_put(a)  # (jnp.asarray compiles a program per shape and dtype)

    def to_numpy(self, x: jax.Array) -> np.ndarray:
        return np.asarray(x)

    def dtype_name(self, x: Any) -> str:
        return str(np.dtype(x.dtype))

    def vjp(self, fn: Callable[[Any], Any], x: jax.Array, g: jax.Array) -> jax.Array:
        # One program for the forward and backward pass: an eager jax.vjp compiles several
        # per shape, into JAX's caches (which compile.bound_programs does not reach).
        with quirks.x64_scope(x.dtype):
            return jax.jit(lambda t, c: jax.vjp(fn, t)[1](c)[0])(x, g)

    # ------------------------------------------------------------------------ pooling

    def pool(self, x: jax.Array, plan: PoolPlan) -> Any:
        with quirks.x64_scope(x.dtype, ops.index_type(plan.in_size)):
            out = compile.pool(x, plan)
        compile.bound_programs(x)
        return out

    def global_pool(self, x: jax.Array, spec: GlobalSpec) -> Any:
        cells = math.prod(x.shape[a] for a in spec.spatial_axes)
        with quirks.x64_scope(x.dtype, ops.index_type((cells,))):
            out = compile.global_pool(x, spec)
        compile.bound_programs(x)
        return out

    def adaptive_pool(self, x: jax.Array, plan: AdaptivePlan) -> Any:
        with quirks.x64_scope(x.dtype, ops.index_type(plan.in_size)):
            out = compile.adaptive_pool(x, plan)
        compile.bound_programs(x)
        return out

    def max_unpool(self, y: jax.Array, indices: jax.Array, spec: UnpoolSpec,
                   out_size: tuple[int, ...]) -> Any:
        cf = spec.data_format == "channels_first"
        planes = y.shape[0] * y.shape[1 if cf else -1]
        with quirks.x64_scope(y.dtype, indices.dtype,
                              ops.index_type((planes * math.prod(out_size),))):
            out, top = compile.max_unpool(y, indices, cf, out_size)
        compile.bound_programs(top)
        # Range check on concrete indices only: under jit it would need a host round-trip
        # (there, out-of-range indices are dropped, as by every JAX scatter).
        if not compile.tracing(top):
            lowering.check_unpool_index(int(top), out_size)
        return out


BACKEND = JaxBackend()

__all__ = ["BACKEND", "DEFAULT_TUNING", "JaxBackend", "Tuning", "traced_programs", "tuned",
           "tuning"]
