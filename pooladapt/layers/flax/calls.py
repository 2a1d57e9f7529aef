"""What the linen and nnx modules (and Flax-style calls) share: a module's attributes to a
cached pooling spec, Flax's leading batch dims merged and restored, and the pooladapt call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp

from pooladapt import api
from pooladapt.spec import PoolSpec, make_adaptive_spec, make_global_spec, make_spec

Padding = str | int | Sequence[int] | Sequence[tuple[int, int]]


def _freeze(value: Any) -> Any:
    """Lists (as Flax users write them) to tuples, so specs can be cached."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@lru_cache(maxsize=256)
def _pool_spec(mode: str, window_shape: tuple, strides: Any, padding: Any, dilation: Any,
               ceil_mode: bool, count_include_pad: bool, p: float | None,
               data_format: str) -> PoolSpec:
    ndim = len(window_shape)
    return make_spec(mode, window_shape, (1,) * ndim if strides is None else strides, padding,
                     dilation, ceil_mode, count_include_pad, p, data_format, ndim=ndim)


def _spec(mode: str, m: Any) -> PoolSpec:
    if isinstance(m.window_shape, int) or not isinstance(m.window_shape, (list, tuple)):
        raise TypeError(f"window_shape must be a tuple of ints, one per spatial dim (as in "
                        f"flax.linen.max_pool), got {m.window_shape!r}")
    return _pool_spec(mode, _freeze(m.window_shape), _freeze(m.strides), _freeze(m.padding),
                      _freeze(m.dilation), m.ceil_mode, getattr(m, "count_include_pad", False),
                      getattr(m, "p", None), m.data_format)


def _batched(x: Any, ndim: int, fn: Callable[[jax.Array], Any]) -> Any:
    """``fn`` on ``x`` seen as (one batch dim, channels, spatial dims): the leading batch dims,
    none or many, are merged and restored as ``flax.linen.pool`` does."""
    x = jnp.asarray(x)
    if x.ndim < ndim + 1:
        raise ValueError(f"expected an input of {ndim + 1} dims or more ((batch...,) "
                         f"{ndim} spatial dims and features), got shape {tuple(x.shape)!r}")
    lead = x.shape[:x.ndim - ndim - 1]
    y = fn(x.reshape((-1, *x.shape[len(lead):])))
    return y.reshape((*lead, *y.shape[1:]))


def _pool(mode: str, m: Any, x: Any) -> jax.Array:
    spec = _spec(mode, m)
    return _batched(x, spec.ndim, lambda t: api.run_pool(t, spec))


def _ndim(output_size: Any, x: Any) -> int:
    if isinstance(output_size, (list, tuple)):
        return len(output_size)
    return jnp.ndim(x) - 2  # an int output_size: (batch, spatial..., features)


def _adaptive(mode: str, m: Any, x: Any) -> jax.Array:
    ndim = _ndim(m.output_size, x)
    spec = make_adaptive_spec(mode, _freeze(m.output_size), ndim=ndim,
                              data_format=m.data_format)
    return _batched(x, ndim, lambda t: api.run_adaptive(t, spec))


def _global(mode: str, m: Any, x: Any) -> jax.Array:
    ndim = jnp.ndim(x) - 2
    if ndim < 1:
        raise ValueError(f"expected an input (batch, spatial..., features), got shape "
                         f"{tuple(jnp.shape(x))!r}")
    spec = make_global_spec(mode, ndim=ndim, keepdims=m.keepdims, data_format=m.data_format)
    return api.run_global(jnp.asarray(x), spec)
