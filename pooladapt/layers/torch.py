"""PyTorch drop-in pooling layers: ``torch.nn.Module``s named and built like ``torch.nn``'s.

``MaxPool1d/2d/3d``, ``AvgPool1d/2d/3d``, ``LPPool1d/2d/3d``, ``AdaptiveAvgPool1d/2d/3d``,
``AdaptiveMaxPool1d/2d/3d``, ``MaxUnpool1d/2d/3d`` and ``FractionalMaxPool2d/3d`` have the
native class's exact signature (its parameters, order, names and defaults), its attributes,
``repr``, ``state_dict``, unbatched input, output memory format and error classes, raised
when torch raises them: an argument torch checks only when the layer is called is checked
then, and an error is both pooladapt's documented ``ValueError``/``TypeError`` and torch's
``RuntimeError`` (:class:`ValueRuntimeError`, :class:`TypeRuntimeError`). Swapping
``torch.nn.MaxPool2d`` for ``pooladapt.layers.torch.MaxPool2d`` changes nothing where torch
already agrees with pooladapt's canonical meaning.

Keyword-only extras after torch's parameters add what torch lacks: ``padding="same"``,
``"same_lower"``, ``"valid"`` or ``(low, high)`` pairs per dim (and any padding smaller than
the window), ``dilation`` for avg and lp, ``padding`` for lp, and
``data_format="channels_last"`` (checked when the layer is built).

    >>> import torch
    >>> from pooladapt.layers.torch import MaxPool2d
    >>> MaxPool2d(3, stride=2, padding="same")(torch.arange(16.0).view(1, 1, 4, 4)).shape
    torch.Size([1, 1, 2, 2])

The deliberate differences from torch (docs/frameworks/torch.md lists each with the test
that pins it): ``LPPool`` computes ``(sum |x|**p) ** (1/p)`` where torch keeps the sign of
``sum x**p`` (FRAMEWORK-NOTES D11), and sums the cells it has where torch's ``ceil_mode``
scales a partial window; integer max pooling works wherever torch lacks the kernel
(``MaxPool1d``, adaptive and fractional max) and integer avg/lp raise; a ``MaxUnpool`` index
-1 (a window of padding only) is skipped.

Each layer builds its spec once and pools through ``pooladapt``'s public API, so the layers
work under ``torch.compile`` (``fullgraph=True``), ``torch.export``, autograd, ``state_dict``
(only ``FractionalMaxPool``'s ``_random_samples`` buffer, as torch's) and pickling.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pooladapt.layers import require

require("torch", "torch")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch._prims_common import suggest_memory_format  # noqa: E402

from pooladapt import api, dispatch  # noqa: E402
from pooladapt.spec import (  # noqa: E402
    AdaptiveSpec,
    FractionalSpec,
    check_fractional_target,
    make_adaptive_spec,
    make_fractional_spec,
    make_unpool_spec,
    normalize_data_format,
)

__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "FractionalMaxPool2d", "FractionalMaxPool3d", "LPPool1d", "LPPool2d", "LPPool3d",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "MaxUnpool1d", "MaxUnpool2d", "MaxUnpool3d",
    "TypeRuntimeError", "ValueRuntimeError",
]

_FIRST = "channels_first"

# torch.compile cannot trace the backend's first import (importlib): load it with this module
dispatch.load("torch")
api.fractional_backend("torch")

T = TypeVar("T")


class ValueRuntimeError(ValueError, RuntimeError):
    """A bad argument or input: pooladapt's documented ``ValueError`` and the ``RuntimeError``
    torch raises for it, so ``except ValueError`` and ``except RuntimeError`` both catch it."""


class TypeRuntimeError(TypeError, NotImplementedError):
    """A bad type or dtype: pooladapt's documented ``TypeError`` and the
    ``NotImplementedError`` (a ``RuntimeError``) torch raises for a dtype it has no kernel for."""


def _as_torch_error(err: Exception) -> Exception:
    if isinstance(err, (ValueRuntimeError, TypeRuntimeError)):
        return err
    kind = ValueRuntimeError if isinstance(err, ValueError) else TypeRuntimeError
    return kind(*err.args).with_traceback(err.__traceback__)


def _ntuple(value: Any, n: int) -> Any:
    """torch's ``_single``/``_pair``/``_triple``: a scalar repeated, a sequence as a tuple."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


def _shown(value: Any) -> str:
    """A value as torch's ``extra_repr`` shows it (str); strings, pooladapt's extras, quoted."""
    return repr(value) if isinstance(value, str) else str(value)


_LETTERS = {1: "L", 2: "H, W", 3: "D, H, W"}


class _Layer(nn.Module):
    """What every layer shares: an argument error kept for the call (torch checks its
    arguments then), unbatched input, torch's error classes and torch's output memory format."""

    ndim = 0
    keeps_channels_last = False  # torch's output follows a channels_last input's memory format
    empty_rule = "pool"  # which dims of the input must be non-empty, as torch checks them
    data_format: str = _FIRST
    _deferred: Exception | None = None

    def _defer(self, build: Callable[[], T]) -> T | None:
        """``build()``, or None with its ValueError/TypeError kept for the first call."""
        try:
            return build()
        except (ValueError, TypeError) as err:
            self._deferred = _as_torch_error(err)
            return None

    def _layout(self, batched: bool) -> str:
        dims = _LETTERS[self.ndim]
        inner = f"C, {dims}" if self.data_format == _FIRST else f"{dims}, C"
        return f"({'N, ' if batched else ''}{inner})"

    def _batched(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if x.dim() == self.ndim + 2:
            out, unbatched = x, False
        elif x.dim() == self.ndim + 1:
            out, unbatched = x.unsqueeze(0), True
        else:
            raise ValueRuntimeError(
                f"non-empty {self.ndim + 1}D or {self.ndim + 2}D (batch mode) tensor expected "
                f"for input, got shape {tuple(x.shape)}: {type(self).__name__} takes "
                f"{self._layout(False)} or {self._layout(True)}")
        checked = {"pool": out.shape[1:], "adaptive": x.shape[1:],
                   "spatial": x.shape[-self.ndim:] if self.data_format == _FIRST else
                   x.shape[-self.ndim - 1:-1]}[self.empty_rule]
        if 0 in checked:
            raise ValueRuntimeError(
                f"{type(self).__name__}: expected input's non-batch dimensions to have positive "
                f"length, but input has a shape of {tuple(x.shape)}")
        return out, unbatched

    def _run(self, x: torch.Tensor, compute: Callable[[torch.Tensor], Any]) -> Any:
        """``compute`` on the batched input; its result unbatched, in torch's memory format,
        and its errors of torch's classes."""
        try:
            if self._deferred is not None:
                raise type(self._deferred)(*self._deferred.args)
            xb, unbatched = self._batched(x)
            out = compute(xb)
        except (ValueError, TypeError) as err:
            raise _as_torch_error(err) from None
        outs = list(out) if isinstance(out, tuple) else [out]
        if unbatched:
            outs = [o.squeeze(0) for o in outs]
        if self.data_format == _FIRST:  # (jit.trace traces sizes as tensors: not asked)
            fmt = suggest_memory_format(x) if (
                self.keeps_channels_last and x.dim() == self.ndim + 2
                and not torch.jit.is_tracing()) else torch.contiguous_format
            outs = [o.contiguous(memory_format=fmt) for o in outs]
        if outs[0].numel() == 0 and x.requires_grad and not outs[0].requires_grad and (
                torch.is_grad_enabled()):
            outs[0] = outs[0] + x.sum()  # an empty result stays in the graph, as torch's does
        return tuple(outs) if isinstance(out, tuple) else outs[0]

    def _extras(self, **values: tuple[Any, Any]) -> str:
        """``, name=value`` for each pooladapt extra (value, default) not at its default."""
        text = "".join(f", {k}={_shown(v)}" for k, (v, default) in values.items()
                       if v != default)
        return text + ("" if self.data_format == _FIRST else f", data_format={self.data_format!r}")


_POOLS = {1: api.Pool1D, 2: api.Pool2D, 3: api.Pool3D}


class _MaxPoolNd(_Layer):
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
        self.data_format = normalize_data_format(data_format, self.ndim)
        self.pool = self._defer(lambda: _POOLS[self.ndim](
            "max", kernel_size, stride, padding, dilation, ceil_mode,
            data_format=self.data_format, return_indices=return_indices))
        self.spec = None if self.pool is None else self.pool.spec

    def forward(self, input: torch.Tensor) -> Any:
        return self._run(input, lambda x: self.pool(x))  # type: ignore[misc]

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={_shown(self.padding)}, dilation={self.dilation}, "
                f"ceil_mode={self.ceil_mode}{self._extras()}")


class _AvgPoolNd(_Layer):
    def _setup(self, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
               count_include_pad: bool, divisor_override: int | None, dilation: Any,
               data_format: str) -> None:
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override, self.dilation = divisor_override, dilation
        self.data_format = normalize_data_format(data_format, self.ndim)
        self.pool = self._defer(lambda: self._build(kernel_size, stride, padding))
        self.spec = None if self.pool is None else self.pool.spec

    def _build(self, kernel_size: Any, stride: Any, padding: Any) -> api.Pool1D:
        pool = _POOLS[self.ndim]("avg", kernel_size, stride, padding, self.dilation,
                                 self.ceil_mode, self.count_include_pad,
                                 data_format=self.data_format)
        spec, divisor = pool.spec, self.divisor_override
        if divisor is None:
            return pool
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor == 0:
            raise ValueError(f"divisor_override must be a non-zero int, got {divisor!r}")
        # torch's own argument, computed by torch's own op: with torch's own arguments only
        if isinstance(spec.padding, str) or any(lo != hi for lo, hi in spec.padding) or any(
                d != 1 for d in spec.dilation):
            raise ValueError(
                "divisor_override works with torch's own arguments only: symmetric int padding "
                f"and no dilation; got padding={padding!r}, dilation={self.dilation!r}")
        return pool

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._run(input, self._pool)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        assert self.pool is not None
        if self.divisor_override is None:
            return self.pool(x)
        spec = self.pool.spec
        xc = x if spec.channels_first else x.movedim(-1, 1)
        fn = torch.nn.functional.avg_pool2d if self.ndim == 2 else torch.nn.functional.avg_pool3d
        y = fn(xc, spec.window, spec.stride, tuple(lo for lo, _ in spec.padding), spec.ceil_mode,
               spec.count_include_pad, self.divisor_override)
        return y if spec.channels_first else y.movedim(1, -1)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={_shown(self.padding)}{self._extras(dilation=(self.dilation, 1))}")


class _LPPoolNd(_Layer):
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
        self.data_format = normalize_data_format(data_format, self.ndim)
        self.pool = self._defer(lambda: _POOLS[self.ndim](
            "lp", kernel_size, stride, padding, dilation, ceil_mode, p=norm_type,
            data_format=self.data_format))
        self.spec = None if self.pool is None else self.pool.spec

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._run(input, lambda x: self.pool(x))  # type: ignore[misc]

    def extra_repr(self) -> str:
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, ceil_mode={self.ceil_mode}"
                f"{self._extras(padding=(self.padding, 0), dilation=(self.dilation, 1))}")


class _AdaptivePoolNd(_Layer):
    mode = ""
    empty_rule = "adaptive"

    def _setup(self, output_size: Any, return_indices: bool, data_format: str) -> None:
        self.output_size, self.return_indices = output_size, return_indices
        self.data_format = normalize_data_format(data_format, self.ndim)
        sizes = (None,) * self.ndim if output_size is None else output_size  # None keeps a dim
        self.spec: AdaptiveSpec | None = self._defer(lambda: make_adaptive_spec(
            self.mode, sizes, ndim=self.ndim, data_format=self.data_format,
            return_indices=return_indices))

    def forward(self, input: torch.Tensor) -> Any:
        return self._run(input, lambda x: api.run_adaptive(x, self.spec))  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}{self._extras()}"


class _AdaptiveAvgPoolNd(_AdaptivePoolNd):
    mode = "avg"

    def __init__(self, output_size: int | tuple[int | None, ...] | None, *,
                 data_format: str = _FIRST) -> None:
        super().__init__()
        self._setup(output_size, False, data_format)


class _AdaptiveMaxPoolNd(_AdaptivePoolNd):
    mode = "max"

    def __init__(self, output_size: int | tuple[int | None, ...] | None,
                 return_indices: bool = False, *, data_format: str = _FIRST) -> None:
        super().__init__()
        self._setup(output_size, return_indices, data_format)


class _MaxUnpoolNd(_Layer):
    empty_rule = "none"

    def __init__(self, kernel_size: int | tuple[int, ...],
                 stride: int | tuple[int, ...] | None = None,
                 padding: int | tuple[int, ...] = 0, *, data_format: str = _FIRST) -> None:
        super().__init__()
        self.kernel_size = _ntuple(kernel_size, self.ndim)
        self.stride = _ntuple(stride if stride is not None else kernel_size, self.ndim)
        self.padding = _ntuple(padding, self.ndim)
        self.data_format = normalize_data_format(data_format, self.ndim)
        self.spec = make_unpool_spec(None, ndim=self.ndim, data_format=self.data_format)

    def _batched(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        if x.dim() == self.ndim + 1:
            return x.unsqueeze(0), True
        return x, False  # the API says what rank it expected

    def forward(self, input: torch.Tensor, indices: torch.Tensor,
                output_size: list[int] | tuple[int, ...] | None = None) -> torch.Tensor:
        unbatched = input.dim() == self.ndim + 1
        idx = indices.unsqueeze(0) if unbatched and indices.dim() == self.ndim + 1 else indices
        return self._run(input, lambda y: api.run_unpool(y, idx, make_unpool_spec(
            self._plane(y, output_size), ndim=self.ndim, data_format=self.data_format)))

    def _plane(self, y: torch.Tensor, output_size: Any) -> tuple[int, ...]:
        """torch's output size rule (``F._unpool_output_size``): by default the size this
        geometry pools from; a given size (spatial, or the full shape) must lie within one
        stride of it."""
        first = 2 if self.data_format == _FIRST else 1
        default = tuple((int(y.shape[first + d]) - 1) * s - 2 * p + k for d, (s, p, k) in
                        enumerate(zip(self.stride, self.padding, self.kernel_size)))
        if output_size is None:
            return default
        sizes = tuple(output_size)
        if len(sizes) == self.ndim + 2:
            sizes = sizes[first:first + self.ndim]
        if len(sizes) != self.ndim:
            raise ValueError(f"output_size should be a sequence containing {self.ndim} or "
                             f"{self.ndim + 2} elements, but it has a length of "
                             f"'{len(tuple(output_size))}'")
        for d, (size, s) in enumerate(zip(sizes, self.stride)):
            if not default[d] - s < size < default[d] + s:
                raise ValueError(f'invalid output_size "{tuple(output_size)}" (dim {d} must be '
                                 f"between {default[d] - s} and {default[d] + s})")
        return tuple(int(v) for v in sizes)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}{self._extras()}")


class _FractionalMaxPoolNd(_Layer):
    def __init__(
        self,
        kernel_size: int | tuple[int, ...],
        output_size: int | tuple[int, ...] | None = None,
        output_ratio: float | tuple[float, ...] | None = None,
        return_indices: bool = False,
        _random_samples: torch.Tensor | None = None,
        *,
        data_format: str = _FIRST,
    ) -> None:
        super().__init__()
        self.kernel_size = _ntuple(kernel_size, self.ndim)
        self.return_indices = return_indices
        self.register_buffer("_random_samples", _random_samples)
        self.output_size = None if output_size is None else _ntuple(output_size, self.ndim)
        self.output_ratio = None if output_ratio is None else _ntuple(output_ratio, self.ndim)
        self.data_format = normalize_data_format(data_format, self.ndim)
        check_fractional_target(output_size, output_ratio, self.ndim)  # torch checks these now
        self.spec: FractionalSpec | None = self._defer(lambda: make_fractional_spec(
            kernel_size, output_size, output_ratio, return_indices, ndim=self.ndim,
            data_format=self.data_format))

    def forward(self, input: torch.Tensor) -> Any:
        return self._run(input, lambda x: api.run_fractional(
            x, self.spec, self._random_samples))  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return self._extras().removeprefix(", ")


class MaxPool1d(_MaxPoolNd):
    """Drop-in for ``torch.nn.MaxPool1d``: padded cells never win, NaN wins, ties: first max."""

    ndim = 1


class MaxPool2d(_MaxPoolNd):
    """Drop-in for ``torch.nn.MaxPool2d``: padded cells never win, NaN wins, ties: first max."""

    ndim = 2
    keeps_channels_last = True


class MaxPool3d(_MaxPoolNd):
    """Drop-in for ``torch.nn.MaxPool3d``: padded cells never win, NaN wins, ties: first max."""

    ndim = 3
    keeps_channels_last = True


class AvgPool1d(_AvgPoolNd):
    """Drop-in for ``torch.nn.AvgPool1d``: ``count_include_pad=True`` by default."""

    ndim = 1

    def __init__(
        self,
        kernel_size: int | tuple[int],
        stride: int | tuple[int] | None = None,
        padding: int | tuple[int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        *,
        dilation: int | tuple[int] = 1,
        data_format: str = _FIRST,
    ) -> None:
        super().__init__()
        self.kernel_size = _ntuple(kernel_size, 1)  # torch keeps these as 1-tuples
        self.stride = _ntuple(stride if stride is not None else kernel_size, 1)
        self.padding = _ntuple(padding, 1) if not isinstance(padding, str) else padding
        self._setup(kernel_size, stride, padding, ceil_mode, count_include_pad, None, dilation,
                    data_format)


class _AvgPool23d(_AvgPoolNd):
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
        self.padding = padding
        self._setup(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                    dilation, data_format)


class AvgPool2d(_AvgPool23d):
    """Drop-in for ``torch.nn.AvgPool2d``: ``count_include_pad=True`` by default."""

    ndim = 2
    keeps_channels_last = True


class AvgPool3d(_AvgPool23d):
    """Drop-in for ``torch.nn.AvgPool3d``: ``count_include_pad=True`` by default."""

    ndim = 3


class LPPool1d(_LPPoolNd):
    """Drop-in for ``torch.nn.LPPool1d``: ``(sum |x|**p) ** (1/p)``."""

    ndim = 1


class LPPool2d(_LPPoolNd):
    """Drop-in for ``torch.nn.LPPool2d``: ``(sum |x|**p) ** (1/p)``."""

    ndim = 2
    keeps_channels_last = True


class LPPool3d(_LPPoolNd):
    """Drop-in for ``torch.nn.LPPool3d``: ``(sum |x|**p) ** (1/p)``."""

    ndim = 3


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """Drop-in for ``torch.nn.AdaptiveAvgPool1d``: adaptive average pooling with torch's bins."""

    ndim = 1
    empty_rule = "spatial"  # torch's 1-D and 2-D adaptive averages take zero channels


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """Drop-in for ``torch.nn.AdaptiveAvgPool2d``: adaptive average pooling with torch's bins."""

    ndim = 2
    keeps_channels_last = True
    empty_rule = "spatial"


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    """Drop-in for ``torch.nn.AdaptiveAvgPool3d``: adaptive average pooling with torch's bins."""

    ndim = 3


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """Drop-in for ``torch.nn.AdaptiveMaxPool1d``: adaptive max pooling with torch's bins."""

    ndim = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """Drop-in for ``torch.nn.AdaptiveMaxPool2d``: adaptive max pooling with torch's bins."""

    ndim = 2
    keeps_channels_last = True


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """Drop-in for ``torch.nn.AdaptiveMaxPool3d``: adaptive max pooling with torch's bins."""

    ndim = 3


class MaxUnpool1d(_MaxUnpoolNd):
    """Drop-in for ``torch.nn.MaxUnpool1d``: maxima back at their indices."""

    ndim = 1


class MaxUnpool2d(_MaxUnpoolNd):
    """Drop-in for ``torch.nn.MaxUnpool2d``: maxima back at their indices."""

    ndim = 2
    keeps_channels_last = True


class MaxUnpool3d(_MaxUnpoolNd):
    """Drop-in for ``torch.nn.MaxUnpool3d``: maxima back at their indices."""

    ndim = 3


class FractionalMaxPool2d(_FractionalMaxPoolNd):
    """Drop-in for ``torch.nn.FractionalMaxPool2d``: torch's windows for the same samples
    (``_random_samples``, else drawn as torch draws them), NaN wins (the first NaN's index)."""

    ndim = 2


class FractionalMaxPool3d(_FractionalMaxPoolNd):
    """Drop-in for ``torch.nn.FractionalMaxPool3d``: torch's windows for the same samples
    (``_random_samples``, else drawn as torch draws them), NaN wins (the first NaN's index)."""

    ndim = 3
