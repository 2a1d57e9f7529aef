"""Keras 3 drop-in pooling layers: one canonical meaning on every Keras backend.

``MaxPooling1D/2D/3D``, ``AveragePooling1D/2D/3D``, ``GlobalMaxPooling*``,
``GlobalAveragePooling*``, ``AdaptiveMaxPooling*`` and ``AdaptiveAveragePooling*`` have
``keras.layers``' own signatures: the same parameters in the same order with the same
defaults (``pool_size=(2, 2)`` for ``MaxPooling2D``, required for average;
``strides=None`` means ``pool_size``; ``padding="valid"``; ``data_format=None`` means
``keras.config.image_data_format()``; then ``name``), so swapping
``keras.layers.MaxPooling2D(...)`` for ``pooladapt.layers.keras.MaxPooling2D(...)``, positional
calls and saved configs included, changes nothing where Keras is already canonical. Like
Keras's, the windowed and global layers are built when they are made, and ``get_config``
writes Keras's keys with Keras's spellings. The windowed layers add the canonical extras
(API.md §1) as keyword-only parameters after Keras's: ``padding`` may also be
``"same_lower"``, an int, one int per dim or ``(low, high)`` pairs; ``dilation``;
``ceil_mode``; ``count_include_pad`` for average pooling; ``return_indices`` for max pooling
(the layer then returns ``(outputs, indices)``, int64 flat indices into each input plane as
PyTorch's). ``get_config`` writes an extra only when it is set away from its default.

A layer pools the Keras backend's own tensors (jax array, tf tensor, torch tensor) with
pooladapt's backend for that framework, so the numbers are the same on every Keras backend,
also under ``jit_compile`` and in gradients. Every layer is registered for deserialisation
(package ``"pooladapt"``): a model saved as ``.keras`` loads back with these layers.

>>> from pooladapt.layers.keras import MaxPooling2D
>>> pool = MaxPooling2D(3, strides=2, padding=1, ceil_mode=True)  # torch.nn.MaxPool2d's
>>> tuple(pool.compute_output_shape((None, 6, 6, 8)))
(None, 4, 4, 8)
"""

from __future__ import annotations

from typing import Any

from pooladapt.layers import require

require("keras", "keras")

import keras  # noqa: E402

from pooladapt import api  # noqa: E402
from pooladapt.spec import make_adaptive_spec, make_global_spec, make_spec  # noqa: E402

_PACKAGE = "pooladapt"
_register = keras.saving.register_keras_serializable(package=_PACKAGE)

def _data_format(value: str | None) -> str:
    return keras.config.image_data_format() if value is None else value


def _static(inputs, spec, layer: keras.layers.Layer):
    """``inputs``, after checking that its spatial sizes are known (the pooling plan needs
    them; a tf.function traced from ``keras.Input(shape=(None, None, C))`` has none)."""
    shape = tuple(inputs.shape)
    if len(shape) == spec.ndim + 2 and any(shape[a] is None for a in spec.spatial_axes):
        raise ValueError(
            f"{type(layer).__name__} needs static spatial sizes, got input shape {shape}: give "
            "keras.Input the full shape, or compile the model with run_eagerly=True")
    return inputs


def _replace_spatial(shape: tuple, axes: tuple[int, ...], sizes) -> tuple:
    out = list(shape)
    for axis, size in zip(axes, sizes):
        out[axis] = size
    return tuple(out)


def _plain(value: Any) -> Any:
    """``value`` with lists made tuples, at every depth (a config read back from JSON has
    lists where the layer was given tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value



def _built_as_keras_builds(layer: keras.layers.Layer) -> None:
    """Built at ``__init__`` where the installed Keras builds its stateless pooling layers
    there (``_build_at_init``: Keras 3.10 has it, 3.3.3 not); unbuilt until called on older
    Keras, as its own are."""
    build_at_init = getattr(layer, "_build_at_init", None)
    if build_at_init is not None:
        build_at_init()


class _Pooling(keras.layers.Layer):
    """Windowed max/avg pooling with pooladapt's semantics.

    Each public class has ``keras.layers``' own ``__init__`` signature (its parameters, order
    and defaults) followed by pooladapt's keyword-only extras; all of them land here.
    """

    mode = ""
    ndim = 0

    def __init__(
        self,
        pool_size: int | tuple[int, ...],
        strides: int | tuple[int, ...] | None,
        padding: str | int | tuple,
        data_format: str | None,
        name: str | None,
        *,
        dilation: int | tuple[int, ...] = 1,
        ceil_mode: bool = False,
        count_include_pad: bool = False,
        return_indices: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.spec = make_spec(self.mode, _plain(pool_size), _plain(strides), _plain(padding),
                              _plain(dilation), ceil_mode, count_include_pad,
                              data_format=_data_format(data_format),
                              return_indices=return_indices, ndim=self.ndim)
        self.pool_size, self.strides = self.spec.window, self.spec.stride
        # as given, like Keras ("SAME" stays "SAME"; Keras reads it case-insensitively)
        self.padding = _plain(padding)
        self.data_format = self.spec.data_format
        self.dilation, self.ceil_mode = self.spec.dilation, self.spec.ceil_mode
        self.input_spec = keras.layers.InputSpec(ndim=self.ndim + 2)
        _built_as_keras_builds(self)

    def call(self, inputs):
        return api.run_pool(_static(inputs, self.spec, self), self.spec)

    def compute_output_shape(self, input_shape) -> tuple:
        shape = tuple(input_shape)
        axes = self.spec.spatial_axes
        # a dim's output size depends on that dim alone: plan the known ones with each
        # unknown one set to the window's extent, then give the unknown ones back as None
        probe = _replace_spatial(shape, axes, [
            e if shape[a] is None else shape[a] for a, e in zip(axes, self.spec.extent)])
        out = self.spec.plan(probe).output_shape(probe)
        out = _replace_spatial(out, axes, [None if shape[a] is None else out[a] for a in axes])
        return (out, out) if self.spec.return_indices else out

    def compute_output_spec(self, inputs):
        out = super().compute_output_spec(inputs)
        if not self.spec.return_indices:
            return out
        return out[0], keras.KerasTensor(out[1].shape, dtype="int64")  # API.md §1

    def get_config(self) -> dict[str, Any]:
        """Keras's keys with Keras's spellings, then the extras set away from their
        defaults (a config without them is Keras's own, and loads into either class)."""
        config = super().get_config()
        config.update(pool_size=self.pool_size, padding=self.padding, strides=self.strides,
                      data_format=self.data_format)
        if self.dilation != (1,) * self.ndim:
            config["dilation"] = self.dilation
        if self.ceil_mode:
            config["ceil_mode"] = True
        if self.spec.count_include_pad:
            config["count_include_pad"] = True
        if self.spec.return_indices:
            config["return_indices"] = True
        return config


class _MaxPooling(_Pooling):
    mode = "max"


class _AveragePooling(_Pooling):
    mode = "avg"

    def __init__(self, pool_size, strides, padding, data_format, name, *, dilation=1,
                 ceil_mode=False, count_include_pad=False, **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, data_format, name, dilation=dilation,
                         ceil_mode=ceil_mode, count_include_pad=count_include_pad, **kwargs)
        self.count_include_pad = self.spec.count_include_pad


class _GlobalPooling(keras.layers.Layer):
    mode = ""
    ndim = 0

    def __init__(self, data_format: str | None = None, keepdims: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = make_global_spec(self.mode, ndim=self.ndim, keepdims=keepdims,
                                     data_format=_data_format(data_format))
        self.data_format, self.keepdims = self.spec.data_format, self.spec.keepdims
        self.input_spec = keras.layers.InputSpec(ndim=self.ndim + 2)
        _built_as_keras_builds(self)

    def call(self, inputs):
        if self.mode == "max":  # a whole-plane max pool: its window is the spatial size
            inputs = _static(inputs, self.spec, self)
        return api.run_global(inputs, self.spec)

    def compute_output_shape(self, input_shape) -> tuple:
        shape = tuple(input_shape)
        axes = self.spec.spatial_axes
        if self.keepdims:
            return _replace_spatial(shape, axes, (1,) * self.ndim)
        return tuple(s for i, s in enumerate(shape) if i not in axes)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "data_format": self.data_format,
                "keepdims": self.keepdims}


class _AdaptivePooling(keras.layers.Layer):
    """Adaptive pooling. Keras's own adaptive layers are not built at ``__init__``; these
    are not either (a drop-in keeps the built state)."""

    mode = ""
    ndim = 0

    def __init__(self, output_size: int | tuple[int | None, ...], data_format: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = make_adaptive_spec(self.mode, _plain(output_size), ndim=self.ndim,
                                       data_format=_data_format(data_format))
        self.output_size, self.data_format = self.spec.output_size, self.spec.data_format
        # no input_spec, as Keras's: the rank is checked when the layer is called

    def call(self, inputs):
        return api.run_adaptive(_static(inputs, self.spec, self), self.spec)

    def compute_output_shape(self, input_shape) -> tuple:
        shape = tuple(input_shape)
        axes = self.spec.spatial_axes
        sizes = [shape[a] if o is None else o for a, o in zip(axes, self.output_size)]
        return _replace_spatial(shape, axes, sizes)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output_size": self.output_size,
                "data_format": self.data_format}


# ----------------------------------------------------------------------- the layers


@_register
class MaxPooling1D(_MaxPooling):
    """1-D max pooling, a drop-in for ``keras.layers.MaxPooling1D`` (see the module doc)."""

    ndim = 1

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None,
                 name=None, *, dilation=1, ceil_mode=False, return_indices=False,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, data_format, name, dilation=dilation,
                         ceil_mode=ceil_mode, return_indices=return_indices, **kwargs)


@_register
class MaxPooling2D(_MaxPooling):
    """2-D max pooling, a drop-in for ``keras.layers.MaxPooling2D`` (see the module doc)."""

    ndim = 2

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None,
                 name=None, *, dilation=1, ceil_mode=False, return_indices=False,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, data_format, name, dilation=dilation,
                         ceil_mode=ceil_mode, return_indices=return_indices, **kwargs)


@_register
class MaxPooling3D(_MaxPooling):
    """3-D max pooling, a drop-in for ``keras.layers.MaxPooling3D`` (see the module doc)."""

    ndim = 3

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None,
                 name=None, *, dilation=1, ceil_mode=False, return_indices=False,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, data_format, name, dilation=dilation,
                         ceil_mode=ceil_mode, return_indices=return_indices, **kwargs)


@_register
class AveragePooling1D(_AveragePooling):
    """1-D average pooling, a drop-in for ``keras.layers.AveragePooling1D``; padding is not
    counted unless ``count_include_pad=True``."""

    ndim = 1

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, name=None,
                 *, dilation=1, ceil_mode=False, count_include_pad=False,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, data_format, name, dilation=dilation,
                         ceil_mode=ceil_mode, count_include_pad=count_include_pad, **kwargs)


@_register
class AveragePooling2D(_AveragePooling):
    """2-D average pooling, a drop-in for ``keras.layers.AveragePooling2D``; padding is not
    counted unless ``count_include_pad=True``."""

    ndim = 2

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, name=None,
                 *, dilation=1, ceil_mode=False, count_include_pad=False,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, data_format, name, dilation=dilation,
                         ceil_mode=ceil_mode, count_include_pad=count_include_pad, **kwargs)


@_register
class AveragePooling3D(_AveragePooling):
    """3-D average pooling, a drop-in for ``keras.layers.AveragePooling3D``; padding is not
    counted unless ``count_include_pad=True``."""

    ndim = 3

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, name=None,
                 *, dilation=1, ceil_mode=False, count_include_pad=False,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, data_format, name, dilation=dilation,
                         ceil_mode=ceil_mode, count_include_pad=count_include_pad, **kwargs)


@_register
class GlobalMaxPooling1D(_GlobalPooling):
    """Global max over the steps, a drop-in for ``keras.layers.GlobalMaxPooling1D``."""

    mode, ndim = "max", 1


@_register
class GlobalMaxPooling2D(_GlobalPooling):
    """Global max over H and W, a drop-in for ``keras.layers.GlobalMaxPooling2D``."""

    mode, ndim = "max", 2


@_register
class GlobalMaxPooling3D(_GlobalPooling):
    """Global max over D, H and W, a drop-in for ``keras.layers.GlobalMaxPooling3D``."""

    mode, ndim = "max", 3


@_register
class GlobalAveragePooling1D(_GlobalPooling):
    """Global mean over the steps, a drop-in for ``keras.layers.GlobalAveragePooling1D``
    (with its ``mask`` support: masked steps are left out of the mean)."""

    mode, ndim = "avg", 1

    def __init__(self, data_format: str | None = None, keepdims: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(data_format, keepdims, **kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return super().call(inputs)
        ops = keras.ops
        steps = self.spec.spatial_axes[0]
        keep = ops.cast(ops.expand_dims(mask, 2 if steps == 1 else 1), "bool")
        total = ops.sum(ops.where(keep, inputs, 0), axis=steps, keepdims=self.keepdims)
        return total / ops.sum(ops.cast(keep, inputs.dtype), axis=steps, keepdims=self.keepdims)

    def compute_mask(self, inputs, mask=None):
        return None


@_register
class GlobalAveragePooling2D(_GlobalPooling):
    """Global mean over H and W, a drop-in for ``keras.layers.GlobalAveragePooling2D``."""

    mode, ndim = "avg", 2


@_register
class GlobalAveragePooling3D(_GlobalPooling):
    """Global mean over D, H and W, a drop-in for ``keras.layers.GlobalAveragePooling3D``."""

    mode, ndim = "avg", 3


@_register
class AdaptiveMaxPooling1D(_AdaptivePooling):
    """1-D adaptive max pooling to ``output_size`` (PyTorch's bins)."""

    mode, ndim = "max", 1


@_register
class AdaptiveMaxPooling2D(_AdaptivePooling):
    """2-D adaptive max pooling to ``output_size`` (PyTorch's bins)."""

    mode, ndim = "max", 2


@_register
class AdaptiveMaxPooling3D(_AdaptivePooling):
    """3-D adaptive max pooling to ``output_size`` (PyTorch's bins)."""

    mode, ndim = "max", 3


@_register
class AdaptiveAveragePooling1D(_AdaptivePooling):
    """1-D adaptive average pooling to ``output_size`` (PyTorch's bins)."""

    mode, ndim = "avg", 1


@_register
class AdaptiveAveragePooling2D(_AdaptivePooling):
    """2-D adaptive average pooling to ``output_size`` (PyTorch's bins)."""

    mode, ndim = "avg", 2


@_register
class AdaptiveAveragePooling3D(_AdaptivePooling):
    """3-D adaptive average pooling to ``output_size`` (PyTorch's bins)."""

    mode, ndim = "avg", 3


# Keras's own short aliases
MaxPool1D, MaxPool2D, MaxPool3D = MaxPooling1D, MaxPooling2D, MaxPooling3D
AvgPool1D, AvgPool2D, AvgPool3D = AveragePooling1D, AveragePooling2D, AveragePooling3D
GlobalMaxPool1D, GlobalMaxPool2D, GlobalMaxPool3D = (
    GlobalMaxPooling1D, GlobalMaxPooling2D, GlobalMaxPooling3D)
GlobalAvgPool1D, GlobalAvgPool2D, GlobalAvgPool3D = (
    GlobalAveragePooling1D, GlobalAveragePooling2D, GlobalAveragePooling3D)
