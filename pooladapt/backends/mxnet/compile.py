"""Hybridized graphs (``F`` is ``mx.sym``): what a symbol needs that an eager array does not.

A symbol holds no constant array, so the plan's per-position constants (the avg divisor map,
each tap's first-real-cell map), eager arrays of lowering's tables, are computed inside a
graph from a plane of ones, padded, then pooled or sliced like the input. Where the
translation itself differs for a symbol (no values to check for NaN: a max is always
repaired; no indices), it says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mxnet as mx

from pooladapt import lowering
from pooladapt.backends.mxnet import ops
from pooladapt.plan import PoolPlan


def divisor_map(F: Any, x: Any, plan: PoolPlan, dtype: str,
                window_sums: Callable[[Any], Any]) -> Any:
    """The plan's avg divisors, broadcastable against the output; in a graph the window sums
    (``window_sums`` of a padded input) of a plane of ones, its padding ones where
    ``count_include_pad`` (never the ceil cells)."""
    spec = plan.spec
    if F is not mx.sym:
        return ops.constant(plan.divisor_map, spec, x, dtype)
    one = ops.one_plane(F, x, spec)
    if spec.count_include_pad:
        one = ops.pad(F, one, spec, plan.pads, 1)
        one = ops.pad(F, one, spec, tuple((0, e) for e in plan.ceil_extra), 0)
    else:
        one = ops.pad(F, one, spec, plan.total_pads, 0)
    return window_sums(one)


def first_real_taps(F: Any, x: Any, plan: PoolPlan, dtype: str) -> list[Any]:
    """``lowering.first_real_taps`` per tap, broadcastable against a tap's slice."""
    if F is not mx.sym:
        return [ops.constant(m, plan.spec, x, dtype) for m in lowering.first_real_taps(plan)]
    padded = ops.pad(F, ops.one_plane(F, x, plan.spec), plan.spec, plan.total_pads, 0)
    seen, out = None, []
    for real in ops.tap_slices(F, padded, plan):
        out.append(real if seen is None else real * (1 - seen))
        seen = real if seen is None else F.maximum(seen, real)
    return out
