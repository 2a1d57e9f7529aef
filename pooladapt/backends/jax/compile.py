"""``jax.jit``: each translation body compiled once per plan, and the bound on the programs kept.

The bodies (translate.py's pool, global pool, adaptive pool and unpool) are jitted per plan
(a static, hashable argument): an eager call reuses the compiled program, and inside the
caller's jit they are inlined. A tracer (:func:`tracing`) is a value known only when the
caller's program runs: no data-dependent check is made on it (the unpool range), and no
program is dropped while one is being traced (the caller's program may use it).

Each compiled CPU program holds a few MB and about ten memory maps for as long as its jit
cache keeps it (thousands): an eager fuzz run over thousands of shapes reaches
vm.max_map_count (65530), where XLA's compiler crashes (LLVM "Cannot allocate memory", then
a segfault). Past :class:`Tuning` ``max_programs`` traces, eager calls drop them
(test_eager_calls_drop_the_compiled_programs_past_the_bound).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax

from pooladapt import config
from pooladapt.backends.jax import translate


@dataclasses.dataclass(frozen=True)
class Tuning(config.Tuning):
    """The JAX backend's one knob: ``max_programs``, how many traces of its bodies (programs
    compiled, or inlined into a caller's jit) eager calls let accumulate before they drop the
    bodies' compiled programs (each holds MBs of memory maps; thousands crashed XLA)."""

    max_programs: int = 256


TUNING = config.TuningSlot("jax", Tuning())
DEFAULT_TUNING = TUNING.default
tuning = TUNING.get
"""The JAX backend's tuning here and now (``DEFAULT_TUNING`` unless changed)."""
tuned = TUNING.tuned
"""Change :class:`Tuning` inside a ``with`` block (per thread and asyncio task); unknown
names raise TypeError, bad values TypeError or ValueError: ``with tuned(max_programs=16):``
keeps fewer programs in a loop over many shapes."""


def tracing(x: Any) -> bool:
    """True where ``x`` is a tracer: the call is being traced into the caller's program."""
    return isinstance(x, jax.core.Tracer)


_programs = 0


def traced_programs() -> int:
    """Traces of the bodies since eager calls last dropped their compiled programs."""
    return _programs


def _jitted(body: Callable[..., Any], static_argnums: tuple[int, ...]) -> Any:
    """``body`` jitted with its plan (``static_argnums``) static; each trace (a cache miss: a
    program compiled, or inlined) is counted."""

    @functools.wraps(body)
    def counted(*args: Any) -> Any:
        global _programs
        _programs += 1
        return body(*args)

    return jax.jit(counted, static_argnums=static_argnums)


pool = _jitted(translate.pool, (1,))
global_pool = _jitted(translate.global_pool, (1,))
adaptive_pool = _jitted(translate.adaptive_pool, (1,))
max_unpool = _jitted(translate.max_unpool, (2, 3))
BODIES = (pool, global_pool, adaptive_pool, max_unpool)


def bound_programs(x: Any) -> None:
    """After an eager call on ``x``: drop the bodies' compiled programs once more than
    ``max_programs`` were traced (never while tracing: the caller's program may use them)."""
    global _programs
    if _programs > tuning().max_programs and not tracing(x):
        _programs = 0
        for body in BODIES:
            body.clear_cache()
