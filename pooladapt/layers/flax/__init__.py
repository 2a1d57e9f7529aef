"""Flax drop-in pooling modules: linen here, nnx in ``pooladapt.layers.flax.nnx``.

Flax pools with functions (``flax.linen.max_pool``/``avg_pool``, the same functions in nnx);
these modules take those functions' arguments with Flax's defaults, so
``MaxPool(window_shape=(2, 2), strides=(2, 2))(x)`` equals
``flax.linen.max_pool(x, (2, 2), (2, 2))``:

* ``window_shape``; ``strides=None`` means stride 1 in every dim (**Flax's** default, not the
  window as in PyTorch/Keras); ``padding='VALID'``, ``'SAME'`` or ``(low, high)`` pairs;
* ``AvgPool(count_include_pad=True)``: Flax counts padding in the divisor by default, also
  for ``'SAME'`` (pooladapt's functional API excludes it by default, like TF and ONNX);
* input ``(batch..., spatial..., features)``, any number of leading batch dims, none included.

Extras with pooladapt's meaning (API.md §1): ``padding='same_lower'``, an int or one int per
dim; ``ceil_mode``; ``dilation``; ``data_format='channels_first'`` (``(batch..., C,
spatial...)``); ``LpPool`` (``p``); adaptive and global pooling. Every module works under
``jax.jit`` and ``jax.grad`` (ties send the gradient to the first maximum).

>>> import jax.numpy as jnp
>>> from pooladapt.layers.flax import MaxPool
>>> MaxPool((2, 2), strides=(2, 2)).apply({}, jnp.arange(16.0).reshape(1, 4, 4, 1)).ravel()
Array([ 5.,  7., 13., 15.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from pooladapt.layers import require

require("flax", "flax", "jax")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from pooladapt import api  # noqa: E402
from pooladapt.spec import (  # noqa: E402
    PoolSpec,
    make_adaptive_spec,
    make_global_spec,
    make_spec,
)

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


# ---------------------------------------------------------------------------- linen


class _LinenPool(nn.Module):
    _mode = ""

    def __post_init__(self) -> None:
        _spec(self._mode, self)  # validated when built
        super().__post_init__()

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return _pool(self._mode, self, inputs)


class MaxPool(_LinenPool):
    """Max pooling as ``flax.linen.max_pool``; padding never wins (acts as -inf)."""

    _mode = "max"
    window_shape: Sequence[int]
    strides: Sequence[int] | None = None
    padding: Padding = "VALID"
    dilation: int | Sequence[int] = 1
    ceil_mode: bool = False
    data_format: str = "channels_last"


class AvgPool(_LinenPool):
    """Average pooling as ``flax.linen.avg_pool`` (``count_include_pad=True`` by default)."""

    _mode = "avg"
    window_shape: Sequence[int]
    strides: Sequence[int] | None = None
    padding: Padding = "VALID"
    count_include_pad: bool = True
    dilation: int | Sequence[int] = 1
    ceil_mode: bool = False
    data_format: str = "channels_last"


class LpPool(_LinenPool):
    """Power-average pooling ``(sum |x|**p) ** (1/p)`` (ONNX LpPool); Flax has none."""

    _mode = "lp"
    window_shape: Sequence[int]
    strides: Sequence[int] | None = None
    padding: Padding = "VALID"
    p: float = 2.0
    dilation: int | Sequence[int] = 1
    ceil_mode: bool = False
    data_format: str = "channels_last"


class AdaptiveAvgPool(nn.Module):
    """Average over PyTorch's adaptive bins to ``output_size`` (an int: every spatial dim of a
    (batch, spatial..., features) input; ``None`` in a tuple keeps that dim)."""

    output_size: int | Sequence[int | None]
    data_format: str = "channels_last"

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return _adaptive("avg", self, inputs)


class AdaptiveMaxPool(nn.Module):
    """Max over PyTorch's adaptive bins to ``output_size`` (see :class:`AdaptiveAvgPool`)."""

    output_size: int | Sequence[int | None]
    data_format: str = "channels_last"

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return _adaptive("max", self, inputs)


class GlobalAvgPool(nn.Module):
    """Mean over every spatial dim of a (batch, spatial..., features) input."""

    keepdims: bool = False
    data_format: str = "channels_last"

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return _global("avg", self, inputs)


class GlobalMaxPool(nn.Module):
    """Max over every spatial dim of a (batch, spatial..., features) input."""

    keepdims: bool = False
    data_format: str = "channels_last"

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return _global("max", self, inputs)


from pooladapt.layers.flax import nnx  # noqa: E402  (the same modules as flax.nnx classes)

__all__ = ["AdaptiveAvgPool", "AdaptiveMaxPool", "AvgPool", "GlobalAvgPool", "GlobalMaxPool",
           "LpPool", "MaxPool", "nnx"]
