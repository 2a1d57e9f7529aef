"""torch.compile and torch.export: how the translation traces into one graph.

Dynamo traces the core's code too: ``pa.pool2d`` builds its spec and plan while it traces
(it ignores ``functools.lru_cache`` and runs the wrapped function), so the plan a backend
receives there is an object dynamo made itself, which it cannot hand to host code (a frozen
dataclass built in the trace reaches a function marked ``assume_constant_result`` as an
empty shell: ``test_a_plan_built_while_tracing_reaches_host_code_empty``). The translation's
per-plan constants are therefore built on the host from the plan's plain values
(``lowering.plan_values``: the spec's fields and the spatial sizes, which specialises them)
and enter the graph as a constant. While compiling, the translation takes no speed route and
makes no data-dependent check (the index fix-ups always run; the unpool range is not checked).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import torch

from pooladapt import lowering

compiling = torch.compiler.is_compiling  # (no wrapper: a tiny eager call pays for each call)

T = TypeVar("T")
_LIMIT = 4096  # plans per cache before it starts afresh


class PerPlan(Generic[T]):
    """``build(plan)``, once per plan. Eagerly (:meth:`eager`) cached by the plan (the core
    caches plans, so the same shape finds the same object); while compiling, built on the host
    from the plan's plain values and embedded in the graph as a constant."""

    def __init__(self, build: Callable[[Any], T]) -> None:
        self.build = build
        self.built: dict[int, tuple[Any, T]] = {}
        # runs on the host while dynamo traces: its result is a constant of the graph
        self.from_values = torch.compiler.assume_constant_result(
            lambda values: self.eager(lowering.plan_from_values(values)))

    def __call__(self, plan: Any) -> T:
        if compiling():
            return self.from_values(_constants(lowering.plan_values(plan)))
        return self.eager(plan)

    def eager(self, plan: Any) -> T:
        entry = self.built.get(id(plan))
        if entry is None or entry[0] is not plan:
            if len(self.built) >= _LIMIT:
                self.built.clear()
            entry = self.built[id(plan)] = (plan, self.build(plan))
        return entry[1]


def _constants(value: Any) -> Any:
    """``value`` (plain values, nested in tuples) as constants dynamo hands to host code. It
    defers a constant attribute of an object (a ``LazyConstantVariable``, which it cannot hand
    over) until its type is asked, and under ``dynamic=True`` traces a float attribute as a
    symbol, which ``__float__`` specialises (``test_layers_compile_fullgraph``, dynamic)."""
    if isinstance(value, tuple):
        return tuple(_constants(v) for v in value)
    return value.__float__() if isinstance(value, float) else value


def plane_tensor(holder: Any, name: str, like: torch.Tensor, dtype: torch.dtype,
                 product: bool) -> torch.Tensor:
    """``holder.<name>`` (a small tuple per spatial dim) as a tensor over the output plane on
    ``like``'s device: the dims' product, or their sum clamped at -1. Built in the graph while
    compiling (from the tuples: a constant there), else once per device and dtype."""
    key = (name, like.device, dtype)
    if not compiling() and key in holder.tensors:
        return holder.tensors[key]
    per_dim, out = getattr(holder, name), None
    for d, values in enumerate(per_dim):
        v = torch.tensor(values, device=like.device, dtype=dtype).view(
            [-1 if i == d else 1 for i in range(len(per_dim))])
        out = v if out is None else (out * v if product else out + v)
    out = out if product else out.clamp(min=-1)
    if not compiling():
        holder.tensors[key] = out
    return out
