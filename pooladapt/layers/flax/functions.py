"""Flax's pooling functions with pooladapt's meaning: ``max_pool``, ``avg_pool``, ``min_pool``
and ``pool(inputs, init, reduce_fn, ...)``, with the signatures of ``flax.linen.max_pool``,
``avg_pool``, ``flax.linen.pooling.min_pool`` and ``pool`` (the same functions are
``flax.nnx``'s), pooladapt's extras keyword-only after them.

Flax's layout and defaults are kept: the input is ``(batch..., spatial..., features)`` with
any number of leading batch dims, none included; ``strides=None`` is stride 1 in every dim;
``avg_pool(count_include_pad=True)``. The padding is pooladapt's (API.md §1): ``'SAME'``
is ``same_upper`` (Flax's), ``'VALID'``, ``(low, high)`` pairs, and the extras
``'same_lower'``, an int or one int per dim; a pad at least as large as the window raises.

* ``max_pool``: padding never wins (acts as -inf, the integer minimum for integers); NaN
  propagates; the gradient goes to the first maximum.
* ``min_pool``: the exact minimum, as ``max_pool`` of the order-reversed input (``-x`` for
  floats, ``~x`` for integers, both exact): padding never wins, NaN propagates, the gradient
  goes to the first minimum.
* ``avg_pool``: pooladapt's average (``count_include_pad`` as API.md §1: padding cells count,
  cells past the padded input that ``ceil_mode`` reaches never do).
* ``pool``: ``lax.max`` with the identity init (-inf; for integers the minimum or below) is
  ``max_pool``, ``lax.min`` with +inf (the maximum or above) ``min_pool`` (``jnp.maximum``
  and ``jnp.minimum`` likewise); ``lax.add`` (``jnp.add``, ``operator.add``) with init 0 is a
  window sum accumulated as pooladapt's averages are (float32 for 16-bit floats). Any other
  reducer, or another init, runs ``lax.reduce_window(inputs, init, reduce_fn, ...)`` on the
  plan's padding (pooladapt's pads, plus the cells ``ceil_mode`` reaches, all holding
  ``init`` as Flax pads them), its window, strides and dilation: Flax's meaning for the
  reducer, pooladapt's for the geometry. Such a reducer differentiates as JAX does (JAX
  differentiates ``reduce_window`` only for its own monoids).

>>> import jax.numpy as jnp
>>> from pooladapt.layers.flax import max_pool, min_pool
>>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
>>> max_pool(x, (2, 2), (2, 2)).ravel()
Array([ 5.,  7., 13., 15.], dtype=float32)
>>> min_pool(-x, (3, 3), (2, 2), padding=1).ravel()
Array([ -5.,  -7., -13., -15.], dtype=float32)
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pooladapt import lowering
from pooladapt.layers.flax.calls import Padding, _batched, _pool, _spec

__all__ = ["avg_pool", "max_pool", "min_pool", "pool"]


def _attrs(window_shape: Any, strides: Any, padding: Any, dilation: Any, ceil_mode: bool,
           data_format: str, count_include_pad: bool = False) -> SimpleNamespace:
    """A function call's arguments as the attributes a module has (``calls._spec``)."""
    return SimpleNamespace(window_shape=window_shape, strides=strides, padding=padding,
                           dilation=dilation, ceil_mode=ceil_mode, data_format=data_format,
                           count_include_pad=count_include_pad)


def max_pool(inputs: Any, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: Padding = "VALID", *, dilation: int | Sequence[int] = 1,
             ceil_mode: bool = False, data_format: str = "channels_last") -> jax.Array:
    """Max pooling as ``flax.linen.max_pool``: padding never wins, NaN propagates, the
    gradient goes to the first maximum."""
    attrs = _attrs(window_shape, strides, padding, dilation, ceil_mode, data_format)
    return _pool("max", attrs, inputs)


def avg_pool(inputs: Any, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: Padding = "VALID", count_include_pad: bool = True, *,
             dilation: int | Sequence[int] = 1, ceil_mode: bool = False,
             data_format: str = "channels_last") -> jax.Array:
    """Average pooling as ``flax.linen.avg_pool`` (``count_include_pad=True`` by default,
    also for ``'SAME'``)."""
    attrs = _attrs(window_shape, strides, padding, dilation, ceil_mode, data_format,
                   count_include_pad)
    return _pool("avg", attrs, inputs)


def _reversed_order(x: jax.Array) -> jax.Array:
    """An exact order-reversing bijection: ``-x`` for floats (NaN stays NaN), ``~x`` for
    integers (``-x`` overflows at the minimum and wraps for unsigned)."""
    return jnp.invert(x) if jnp.issubdtype(x.dtype, jnp.integer) else -x


def min_pool(inputs: Any, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: Padding = "VALID", *, dilation: int | Sequence[int] = 1,
             ceil_mode: bool = False, data_format: str = "channels_last") -> jax.Array:
    """Min pooling as ``flax.nnx.min_pool``, exactly: the max of the order-reversed input,
    reversed back (padding never wins, NaN propagates, the gradient goes to the first
    minimum)."""
    x = jnp.asarray(inputs)
    attrs = _attrs(window_shape, strides, padding, dilation, ceil_mode, data_format)
    return _reversed_order(_pool("max", attrs, _reversed_order(x)))


_MAX = (lax.max, jnp.maximum)
_MIN = (lax.min, jnp.minimum)
_ADD = (lax.add, jnp.add, operator.add)


def _route(init: Any, reduce_fn: Callable[..., Any], dtype: np.dtype) -> str | None:
    """``max``, ``min`` or ``sum`` where the reducer and a concrete init are one of
    pooladapt's pools (the init its identity); None for anything else."""
    if not any(reduce_fn is f for f in (*_MAX, *_MIN, *_ADD)):
        return None
    try:
        value = np.asarray(init)
    except (TypeError, jax.errors.JAXTypeError):  # a traced init: no route can be decided
        return None
    if value.ndim or value.dtype.kind not in "biuf":
        return None
    v = value.item()
    integer = jnp.issubdtype(dtype, jnp.integer)
    info = jnp.iinfo(dtype) if integer else None
    if any(reduce_fn is f for f in _MAX):
        return "max" if (v <= info.min if info else v == -np.inf) else None
    if any(reduce_fn is f for f in _MIN):
        return "min" if (v >= info.max if info else v == np.inf) else None
    return "sum" if v == 0 and not integer else None


def _reduce_window(x: jax.Array, init: Any, reduce_fn: Callable[..., Any], attrs: Any) -> Any:
    """``lax.reduce_window`` over the plan's windows (its pads and ceil cells hold ``init``)."""
    spec = _spec("max", attrs)  # the geometry only; "max" takes every argument a reducer can

    def run(t: jax.Array) -> jax.Array:
        plan = spec.plan(tuple(t.shape))
        dims, strides, dilation = [1] * t.ndim, [1] * t.ndim, [1] * t.ndim
        pads = [(0, 0)] * t.ndim
        for d, axis in enumerate(spec.spatial_axes):
            dims[axis], strides[axis] = spec.window[d], spec.stride[d]
            dilation[axis], pads[axis] = spec.dilation[d], plan.total_pads[d]
        return lax.reduce_window(t, init, reduce_fn, tuple(dims), tuple(strides), tuple(pads),
                                 window_dilation=tuple(dilation))

    return _batched(x, spec.ndim, run)


def pool(inputs: Any, init: Any, reduce_fn: Callable[[Any, Any], Any],
         window_shape: Sequence[int], strides: Sequence[int] | None, padding: Padding, *,
         dilation: int | Sequence[int] = 1, ceil_mode: bool = False,
         data_format: str = "channels_last") -> Any:
    """``flax.linen.pool`` with pooladapt's padding: ``lax.max``/``lax.min`` with their
    identity init are :func:`max_pool`/:func:`min_pool`, ``lax.add`` with 0 a window sum in
    the accumulator dtype; any other reducer (or init) reduces the plan's windows with
    ``lax.reduce_window``, padded cells holding ``init`` as in Flax.

    >>> import jax.numpy as jnp
    >>> from jax import lax
    >>> pool(jnp.full((1, 3, 3, 1), 2.0), 1.0, lax.mul, (2, 2), (1, 1), "VALID").ravel()
    Array([16., 16., 16., 16.], dtype=float32)
    """
    x = jnp.asarray(inputs)
    attrs = _attrs(window_shape, strides, padding, dilation, ceil_mode, data_format)
    route = _route(init, reduce_fn, x.dtype)
    if route == "max":
        return _pool("max", attrs, x)
    if route == "min":
        return _reversed_order(_pool("max", attrs, _reversed_order(x)))
    if route == "sum":
        acc = np.dtype(lowering.accumulator(x.dtype.name))
        return _reduce_window(x.astype(acc), np.array(0, acc), lax.add, attrs).astype(x.dtype)
    return _reduce_window(x, init, reduce_fn, attrs)
