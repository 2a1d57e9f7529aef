"""Flax drop-in pooling modules: linen here, nnx in ``pooladapt.layers.flax.nnx``.

Flax pools with functions (``flax.linen.max_pool``/``avg_pool``/``pool``, the same functions
in nnx, which adds ``min_pool``); pooladapt has them too, with Flax's signatures and
pooladapt's padding (``max_pool``, ``avg_pool``, ``min_pool``, ``pool`` here and in
``pooladapt.layers.flax.nnx``; see ``pooladapt.layers.flax.functions``). These modules take
those functions' arguments with Flax's defaults, so
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

from collections.abc import Sequence

from pooladapt.layers import require

require("flax", "flax", "jax")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402

from pooladapt.layers.flax.calls import (  # noqa: E402
    Padding,
    _adaptive,
    _global,
    _pool,
    _spec,
)
from pooladapt.layers.flax.functions import avg_pool, max_pool, min_pool, pool  # noqa: E402

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
           "LpPool", "MaxPool", "avg_pool", "max_pool", "min_pool", "nnx", "pool"]
