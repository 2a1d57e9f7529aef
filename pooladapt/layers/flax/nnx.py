"""Flax nnx pooling modules: the modules of ``pooladapt.layers.flax`` as ``flax.nnx.Module``
classes, with ``flax.nnx.max_pool``/``avg_pool``'s arguments (the same as linen's), and the
functions ``max_pool``, ``avg_pool``, ``min_pool`` and ``pool`` as ``flax.nnx`` re-exports
linen's (``pooladapt.layers.flax.functions``).

>>> import jax.numpy as jnp
>>> from pooladapt.layers.flax.nnx import MaxPool
>>> MaxPool((2, 2), strides=(2, 2))(jnp.arange(16.0).reshape(1, 4, 4, 1)).ravel()
Array([ 5.,  7., 13., 15.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from pooladapt.layers.flax.calls import Padding, _adaptive, _freeze, _global, _pool, _spec
from pooladapt.layers.flax.functions import avg_pool, max_pool, min_pool, pool


class _Pool(nnx.Module):
    _mode = ""

    def __init__(self, window_shape: Sequence[int], strides: Sequence[int] | None = None,
                 padding: Padding = "VALID", *, dilation: int | Sequence[int] = 1,
                 ceil_mode: bool = False, data_format: str = "channels_last") -> None:
        self.window_shape, self.strides = _freeze(window_shape), _freeze(strides)
        self.padding, self.dilation = _freeze(padding), _freeze(dilation)
        self.ceil_mode, self.data_format = ceil_mode, data_format
        _spec(self._mode, self)  # validate now

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return _pool(self._mode, self, inputs)


class MaxPool(_Pool):
    """nnx max pooling as ``flax.nnx.max_pool``; see the linen
    :class:`pooladapt.layers.flax.MaxPool`."""

    _mode = "max"


class AvgPool(_Pool):
    """nnx average pooling as ``flax.nnx.avg_pool`` (``count_include_pad=True``)."""

    _mode = "avg"

    def __init__(self, window_shape: Sequence[int], strides: Sequence[int] | None = None,
                 padding: Padding = "VALID", count_include_pad: bool = True, **extras: Any):
        self.count_include_pad = count_include_pad
        super().__init__(window_shape, strides, padding, **extras)


class LpPool(_Pool):
    """nnx power-average pooling; see the linen
    :class:`pooladapt.layers.flax.LpPool`."""

    _mode = "lp"

    def __init__(self, window_shape: Sequence[int], strides: Sequence[int] | None = None,
                 padding: Padding = "VALID", p: float = 2.0, **extras: Any):
        self.p = p
        super().__init__(window_shape, strides, padding, **extras)


class _Adaptive(nnx.Module):
    _mode = ""

    def __init__(self, output_size: int | Sequence[int | None], *,
                 data_format: str = "channels_last") -> None:
        self.output_size, self.data_format = _freeze(output_size), data_format

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return _adaptive(self._mode, self, inputs)


class AdaptiveAvgPool(_Adaptive):
    """nnx adaptive average pooling; see the linen
    :class:`pooladapt.layers.flax.AdaptiveAvgPool`."""

    _mode = "avg"


class AdaptiveMaxPool(_Adaptive):
    """nnx adaptive max pooling; see the linen
    :class:`pooladapt.layers.flax.AdaptiveMaxPool`."""

    _mode = "max"


class _Global(nnx.Module):
    _mode = ""

    def __init__(self, keepdims: bool = False, *, data_format: str = "channels_last") -> None:
        self.keepdims, self.data_format = keepdims, data_format

    def __call__(self, inputs: jax.Array) -> jax.Array:
        return _global(self._mode, self, inputs)


class GlobalAvgPool(_Global):
    """nnx global average pooling."""

    _mode = "avg"


class GlobalMaxPool(_Global):
    """nnx global max pooling."""

    _mode = "max"


__all__ = ["AdaptiveAvgPool", "AdaptiveMaxPool", "AvgPool", "GlobalAvgPool", "GlobalMaxPool",
           "LpPool", "MaxPool", "avg_pool", "max_pool", "min_pool", "pool"]
