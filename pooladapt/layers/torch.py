"""PyTorch drop-in pooling layers: ``torch.nn.Module``s named and configured like ``torch.nn``'s.

``MaxPool1d/2d/3d``, ``AvgPool1d/2d/3d``, ``LPPool1d/2d/3d``, ``AdaptiveAvgPool1d/2d/3d``,
``AdaptiveMaxPool1d/2d/3d`` and ``MaxUnpool1d/2d/3d`` take PyTorch's own arguments in PyTorch's
order with PyTorch's defaults (``count_include_pad=True`` for avg, ``norm_type`` first for
LPPool), accept unbatched input like torch, and default to ``data_format="channels_first"``:
swapping ``torch.nn.MaxPool2d`` for ``pooladapt.layers.torch.MaxPool2d`` changes nothing.
Keyword-only extras add what torch lacks: ``padding="same"``/``"same_lower"``/``"valid"`` or
``(low, high)`` pairs per dim (and any padding smaller than the window), ``dilation`` for avg
and lp, ``padding`` for lp, and ``data_format="channels_last"``.

    >>> import torch
    >>> from pooladapt.layers.torch import MaxPool2d
    >>> MaxPool2d(3, stride=2, padding="same")(torch.arange(16.0).view(1, 1, 4, 4)).shape
    torch.Size([1, 1, 2, 2])

Two torch behaviours are not reproduced, because pooladapt's canonical meaning (API.md §1)
differs: ``LPPool`` computes ``(sum |x|**p) ** (1/p)`` where torch keeps the sign of
``sum x**p`` (FRAMEWORK-NOTES D11; NaN for a fractional p on negatives), and where torch's
``LPPool`` with ``ceil_mode`` scales a partial last window by ``window / cells`` pooladapt sums
the cells it has. On non-negative input without partial windows they agree.

Each layer builds its spec once (a ``pa.Pool1D/2D/3D`` for the pools) and pools through
``pooladapt``'s public API, so the layers work under ``torch.compile`` (``fullgraph=True``),
``torch.export``, with ``state_dict`` (they hold no state) and pickling.
"""

from __future__ import annotations

from typing import Any

from pooladapt.layers import require

require("torch", "torch")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from pooladapt import api, dispatch  # noqa: E402
from pooladapt.spec import (  # noqa: E402
    AdaptiveSpec,
    PoolSpec,
    make_adaptive_spec,
    make_spec,
    make_unpool_spec,
)

__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "LPPool1d",
    "LPPool2d", "LPPool3d", "MaxPool1d", "MaxPool2d", "MaxPool3d", "MaxUnpool1d", "MaxUnpool2d",
    "MaxUnpool3d",
]

_FIRST = "channels_first"

# torch.compile cannot trace the backend's first import (importlib): load it with this module
dispatch.load("torch")


def _with_batch(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """torch's layers also take unbatched input (channels + spatial dims)."""
    if x.dim() == layer.ndim + 1:
        return x.unsqueeze(0), True
    return x, False


def _unbatch(out: Any, unbatched: bool) -> Any:
    if not unbatched:
        return out
    return tuple(o.squeeze(0) for o in out) if isinstance(out, tuple) else out.squeeze(0)


def _single(value: Any) -> Any:
    return (value,) if isinstance(value, int) else value


def _repr_extras(spec: PoolSpec | AdaptiveSpec) -> str:
    return "" if spec.data_format == _FIRST else f", data_format={spec.data_format!r}"


_POOLS = {1: api.Pool1D, 2: api.Pool2D, 3: api.Pool3D}


class _Pool(nn.Module):
    """A pooling layer over a ``pa.Pool1D/2D/3D`` built once in ``__init__``."""

    ndim = 0
    spec: PoolSpec

    def _build(self, *args: Any, **kwargs: Any) -> None:
        self.pool = _POOLS[self.ndim](*args, **kwargs)
        self.spec = self.pool.spec

    def forward(self, x: torch.Tensor) -> Any:
        x, unbatched = _with_batch(self, x)
        return _unbatch(self.pool(x), unbatched)


class _MaxPoolNd(_Pool):
    def __init__(
        self,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: int | tuple | str = 0,
        dilation: int | tuple[int, ...] = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
        *,
        data_format: str = _FIRST,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode
        self._build("max", kernel_size, stride, padding, dilation, ceil_mode,
                    data_format=data_format, return_indices=return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding!r}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
                f"{', return_indices=True' if self.return_indices else ''}"
                f"{_repr_extras(self.spec)}")


class _AvgPoolNd(_Pool):
    def __init__(
        self,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: int | tuple | str = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        *,
        dilation: int | tuple[int, ...] = 1,
        data_format: str = _FIRST,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        if self.ndim == 1:  # torch's AvgPool1d keeps these as 1-tuples
            self.kernel_size, self.stride = _single(self.kernel_size), _single(self.stride)
            self.padding = _single(padding) if isinstance(padding, int) else padding
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override
        self.dilation = dilation
        self._build("avg", kernel_size, stride, padding, dilation, ceil_mode, count_include_pad,
                    data_format=data_format)
        if divisor_override is not None:
            self._check_divisor_override()

    def _check_divisor_override(self) -> None:
        spec = self.spec
        if self.ndim == 1:
            raise TypeError("AvgPool1d takes no divisor_override (torch's neither)")
        if isinstance(self.divisor_override, bool) or not isinstance(
                self.divisor_override, int) or self.divisor_override == 0:
            raise ValueError(f"divisor_override must be a non-zero int, got "
                             f"{self.divisor_override!r}")
        # torch's own argument, computed by torch's own op: with torch's own arguments only
        # (torch itself rejects a padding over half the window when it is called)
        if isinstance(spec.padding, str) or any(lo != hi for lo, hi in spec.padding) or any(
                d != 1 for d in spec.dilation):
            raise ValueError(
                "divisor_override works with torch's own arguments only: symmetric int padding "
                f"and no dilation; got padding={self.padding!r}, dilation={self.dilation!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.divisor_override is None:
            return super().forward(x)
        x, unbatched = _with_batch(self, x)
        spec = self.spec
        xc = x if spec.channels_first else x.movedim(-1, 1)
        fn = torch.nn.functional.avg_pool2d if self.ndim == 2 else torch.nn.functional.avg_pool3d
        y = fn(xc, spec.window, spec.stride, tuple(lo for lo, _ in spec.padding), spec.ceil_mode,
               spec.count_include_pad, self.divisor_override)
        return _unbatch(y if spec.channels_first else y.movedim(1, -1), unbatched)

    def extra_repr(self) -> str:
        text = (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}")
        if self.ceil_mode:
            text += ", ceil_mode=True"
        if not self.count_include_pad:
            text += ", count_include_pad=False"
        if self.divisor_override is not None:
            text += f", divisor_override={self.divisor_override}"
        if self.dilation != 1:
            text += f", dilation={self.dilation}"
        return text + _repr_extras(self.spec)


class _LPPoolNd(_Pool):
    def __init__(
        self,
        norm_type: float,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        ceil_mode: bool = False,
        *,
        padding: int | tuple | str = 0,
        dilation: int | tuple[int, ...] = 1,
        data_format: str = _FIRST,
    ) -> None:
        super().__init__()
        self.norm_type, self.kernel_size, self.stride = norm_type, kernel_size, stride
        self.ceil_mode, self.padding, self.dilation = ceil_mode, padding, dilation
        self._build("lp", kernel_size, stride, padding, dilation, ceil_mode, p=norm_type,
                    data_format=data_format)

    def extra_repr(self) -> str:
        text = (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, ceil_mode={self.ceil_mode}")
        if self.padding != 0:
            text += f", padding={self.padding!r}"
        if self.dilation != 1:
            text += f", dilation={self.dilation}"
        return text + _repr_extras(self.spec)


class _AdaptivePoolNd(nn.Module):
    ndim = 0
    mode = ""

    def __init__(self, output_size: int | tuple[int | None, ...] | None,
                 return_indices: bool = False, *, data_format: str = _FIRST) -> None:
        super().__init__()
        self.output_size, self.return_indices = output_size, return_indices
        if output_size is None:  # torch: None keeps the input size
            output_size = (None,) * self.ndim
        self.spec = make_adaptive_spec(self.mode, output_size, ndim=self.ndim,
                                       data_format=data_format, return_indices=return_indices)

    def forward(self, x: torch.Tensor) -> Any:
        x, unbatched = _with_batch(self, x)
        return _unbatch(api.run_adaptive(x, self.spec), unbatched)

    def extra_repr(self) -> str:
        text = f"output_size={self.output_size}"
        if self.return_indices:
            text += ", return_indices=True"
        return text + _repr_extras(self.spec)


class _AdaptiveAvgPoolNd(_AdaptivePoolNd):
    mode = "avg"

    def __init__(self, output_size: int | tuple[int | None, ...] | None, *,
                 data_format: str = _FIRST) -> None:
        super().__init__(output_size, False, data_format=data_format)


class _AdaptiveMaxPoolNd(_AdaptivePoolNd):
    mode = "max"


class _MaxUnpoolNd(nn.Module):
    ndim = 0

    def __init__(self, kernel_size: int | tuple[int, ...],
                 stride: int | tuple[int, ...] | None = None,
                 padding: int | tuple[int, ...] = 0, *, data_format: str = _FIRST) -> None:
        super().__init__()
        geometry = make_spec("max", kernel_size, stride, padding, ndim=self.ndim,
                             data_format=data_format)
        self.kernel_size, self.stride = geometry.window, geometry.stride
        self.padding = tuple(lo for lo, _ in geometry.padding)
        self.spec = make_unpool_spec(None, ndim=self.ndim, data_format=data_format)

    def forward(self, input: torch.Tensor, indices: torch.Tensor,
                output_size: list[int] | tuple[int, ...] | None = None) -> torch.Tensor:
        y, unbatched = _with_batch(self, input)
        idx = indices.unsqueeze(0) if unbatched else indices
        if output_size is None:  # torch's default: the size this geometry pooled from
            sizes: tuple[int, ...] = tuple(
                (y.shape[a] - 1) * s - 2 * p + k for a, s, p, k in
                zip(self.spec.spatial_axes, self.stride, self.padding, self.kernel_size))
        else:  # torch accepts the spatial sizes, or the full shape
            sizes = tuple(output_size)
            sizes = sizes[-self.ndim:] if len(sizes) != self.ndim + 2 else sizes
        spec = make_unpool_spec(sizes, ndim=self.ndim, data_format=self.spec.data_format)
        return _unbatch(api.run_unpool(y, idx, spec), unbatched)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                f"{_repr_extras(self.spec)}")


class MaxPool1d(_MaxPoolNd):
    """Drop-in for ``torch.nn.MaxPool1d``: padded cells never win, NaN wins, ties: first max."""

    ndim = 1


class MaxPool2d(_MaxPoolNd):
    """Drop-in for ``torch.nn.MaxPool2d``: padded cells never win, NaN wins, ties: first max."""

    ndim = 2


class MaxPool3d(_MaxPoolNd):
    """Drop-in for ``torch.nn.MaxPool3d``: padded cells never win, NaN wins, ties: first max."""

    ndim = 3


class AvgPool1d(_AvgPoolNd):
    """Drop-in for ``torch.nn.AvgPool1d``: ``count_include_pad=True`` by default."""

    ndim = 1


class AvgPool2d(_AvgPoolNd):
    """Drop-in for ``torch.nn.AvgPool2d``: ``count_include_pad=True`` by default."""

    ndim = 2


class AvgPool3d(_AvgPoolNd):
    """Drop-in for ``torch.nn.AvgPool3d``: ``count_include_pad=True`` by default."""

    ndim = 3


class LPPool1d(_LPPoolNd):
    """Drop-in for ``torch.nn.LPPool1d``: ``(sum |x|**p) ** (1/p)``."""

    ndim = 1


class LPPool2d(_LPPoolNd):
    """Drop-in for ``torch.nn.LPPool2d``: ``(sum |x|**p) ** (1/p)``."""

    ndim = 2


class LPPool3d(_LPPoolNd):
    """Drop-in for ``torch.nn.LPPool3d``: ``(sum |x|**p) ** (1/p)``."""

    ndim = 3


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """Drop-in for ``torch.nn.AdaptiveAvgPool1d``: adaptive average pooling with torch's bins."""

    ndim = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """Drop-in for ``torch.nn.AdaptiveAvgPool2d``: adaptive average pooling with torch's bins."""

    ndim = 2


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """Drop-in for ``torch.nn.AdaptiveAvgPool3d``: adaptive average pooling with torch's bins."""

    ndim = 3


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """Drop-in for ``torch.nn.AdaptiveMaxPool1d``: adaptive max pooling with torch's bins."""

    ndim = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """Drop-in for ``torch.nn.AdaptiveMaxPool2d``: adaptive max pooling with torch's bins."""

    ndim = 2


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """Drop-in for ``torch.nn.AdaptiveMaxPool3d``: adaptive max pooling with torch's bins."""

    ndim = 3


class MaxUnpool1d(_MaxUnpoolNd):
    """Drop-in for ``torch.nn.MaxUnpool1d``: maxima back at their indices."""

    ndim = 1


class MaxUnpool2d(_MaxUnpoolNd):
    """Drop-in for ``torch.nn.MaxUnpool2d``: maxima back at their indices."""

    ndim = 2


class MaxUnpool3d(_MaxUnpoolNd):
    """Drop-in for ``torch.nn.MaxUnpool3d``: maxima back at their indices."""

    ndim = 3
