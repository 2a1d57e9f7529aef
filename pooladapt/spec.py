"""Pooling specs: what the user asked for, validated and normalised once, when it is built.

``make_spec`` (and ``make_global_spec``, ``make_adaptive_spec``, ``make_unpool_spec``) check
every argument and raise ``ValueError``/``TypeError`` naming the argument, what was expected
and what was given. A spec is immutable and hashable; resolving it against an input's spatial
size gives its plan (``pooladapt.plan``: padding, ceil mode, output size, divisors).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pooladapt import config
from pooladapt.layouts import SPATIAL_LETTERS, DataFormat, parse_data_format
from pooladapt.plan import (  # noqa: F401  (PoolPlan, AdaptivePlan, same_pads: also read here)
    AdaptivePlan,
    FractionalPlan,
    Pads,
    PoolPlan,
    check_spatial,
    resolve_adaptive,
    resolve_fractional,
    resolve_plan,
    same_pads,
)

Mode = Literal["max", "avg", "lp"]
PaddingRule = Literal["valid", "same_upper", "same_lower"]
Padding = str | int | tuple[int, ...] | tuple[tuple[int, int], ...]
"""What ``padding=`` takes: a rule name, one int, one int per dim, or ``(low, high)`` pairs."""
MODES: tuple[str, ...] = ("max", "avg", "lp")
ADAPTIVE_MODES: tuple[str, ...] = ("max", "avg")


def normalize_data_format(value: object, ndim: int, argname: str = "data_format") -> DataFormat:
    """Map ``channels_first``/``channels_last`` or layout letters (``NCHW``...) to the API name.

    ``None`` means the configured default: ``set_data_format``, else ``POOLADAPT_DATA_FORMAT``,
    else ``channels_last``.
    """
    return parse_data_format(config.default_data_format() if value is None else value, ndim,
                             argname)


def _as_int(value: object, argname: str) -> int:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]  # a 0-d array is its scalar
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argname} must be an integer, got {type(value).__name__} {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    raise TypeError(f"{argname} must be an integer, got {type(value).__name__} {value!r}")


def _int_tuple(value: object, ndim: int, argname: str, minimum: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        if len(value) != ndim:
            raise ValueError(
                f"{argname} must be an int or a tuple of {ndim} ints (one per spatial dim), "
                f"got {len(value)} values {tuple(value)!r}"
            )
        out = tuple(_as_int(v, argname) for v in value)
    elif isinstance(value, np.ndarray) and value.ndim == 1:
        return _int_tuple(value.tolist(), ndim, argname, minimum)
    else:
        out = (_as_int(value, argname),) * ndim
    for v in out:
        if v < minimum:
            raise ValueError(f"{argname} must be >= {minimum} in every dim, got {out!r}")
    return out


def _normalize_padding(value: object, ndim: int) -> PaddingRule | Pads:
    if isinstance(value, str):
        key = value.strip().lower()
        rule = {"valid": "valid", "same": "same_upper", "same_upper": "same_upper",
                "same_lower": "same_lower"}.get(key)
        if rule is None:
            raise ValueError(
                "padding must be 'valid', 'same', 'same_upper', 'same_lower', an int, a tuple "
                f"of ints or a tuple of (low, high) pairs, got {value!r}"
            )
        return rule  # type: ignore[return-value]
    if isinstance(value, (list, tuple)):
        items = list(value)
        if len(items) != ndim:
            hint = " (for asymmetric 1-D padding write ((low, high),))" if ndim == 1 else ""
            raise ValueError(
                f"padding must have one entry per spatial dim ({ndim}), got {len(items)}: "
                f"{tuple(value)!r}{hint}"
            )
        pads = []
        for item in items:
            if isinstance(item, (list, tuple)):
                if len(item) != 2:
                    raise ValueError(f"each padding pair must be (low, high), got {tuple(item)!r}")
                pads.append((_as_int(item[0], "padding"), _as_int(item[1], "padding")))
            else:
                v = _as_int(item, "padding")
                pads.append((v, v))
    else:
        v = _as_int(value, "padding")
        pads = [(v, v)] * ndim
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise ValueError(f"padding must be non-negative, got {tuple(pads)!r}")
    return tuple(pads)


@dataclass(frozen=True)
class PoolSpec:
    """A validated, immutable pooling request. Build it with :func:`make_spec`."""

    mode: Mode
    ndim: int
    window: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: PaddingRule | Pads
    ceil_mode: bool
    count_include_pad: bool
    p: float
    data_format: DataFormat
    return_indices: bool

    @property
    def channels_first(self) -> bool:
        return self.data_format == "channels_first"

    @property
    def extent(self) -> tuple[int, ...]:
        """Span of the (dilated) window in input cells, per spatial dim."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.window, self.dilation))

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        """Axes of the spatial dims in an input of this spec's data format."""
        start = 2 if self.channels_first else 1
        return tuple(range(start, start + self.ndim))

    def spatial_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Validate an input shape and return its spatial part."""
        check_rank(shape, self.ndim, self.data_format)
        return tuple(int(shape[a]) for a in self.spatial_axes)

    def plan(self, shape: tuple[int, ...]) -> PoolPlan:
        """The resolved plan for an input of this full shape (validated; cached by shape)."""
        return resolve_plan(self, self.spatial_shape(tuple(shape)))

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Full output shape for an input of this full shape."""
        plan = self.plan(shape)
        return plan.output_shape(tuple(int(s) for s in shape))


def check_rank(shape: tuple[int, ...], ndim: int, data_format: str) -> None:
    """Raise ValueError unless shape is batch + channels + ``ndim`` spatial dims."""
    if len(shape) != ndim + 2:
        letters = SPATIAL_LETTERS[ndim][0]
        layout = "NC" + letters if data_format == "channels_first" else "N" + letters + "C"
        raise ValueError(
            f"expected a {ndim + 2}-D input ({layout}: batch, channels and {ndim} spatial "
            f"dim(s)), got shape {tuple(shape)!r}"
        )


def make_spec(
    mode: str,
    window: int | tuple[int, ...],
    stride: int | tuple[int, ...] | None = None,
    padding: Padding = "valid",
    dilation: int | tuple[int, ...] = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = False,
    p: float | None = None,
    data_format: str | None = None,
    return_indices: bool = False,
    *,
    ndim: int,
) -> PoolSpec:
    """Validate and normalise pooling arguments (API.md §1) into a :class:`PoolSpec`."""
    if ndim not in (1, 2, 3):
        raise ValueError(f"pooling supports 1, 2 or 3 spatial dims, got {ndim}")
    if not isinstance(mode, str):
        raise TypeError(f"mode must be one of {MODES}, got {type(mode).__name__} {mode!r}")
    mode_key = mode.strip().lower()
    if mode_key not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    win = _int_tuple(window, ndim, "window", 1)
    strd = win if stride is None else _int_tuple(stride, ndim, "stride", 1)
    dil = _int_tuple(dilation, ndim, "dilation", 1)
    pad = _normalize_padding(padding, ndim)
    if not isinstance(pad, str):
        for (lo, hi), k in zip(pad, win):
            if lo >= k or hi >= k:
                raise ValueError(
                    f"padding must be smaller than the window in every dim, got padding "
                    f"{pad!r} for window {win!r}"
                )
    for name, flag in (("ceil_mode", ceil_mode), ("count_include_pad", count_include_pad),
                       ("return_indices", return_indices)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__} {flag!r}")
    if count_include_pad and mode_key != "avg":
        raise ValueError(f"count_include_pad applies to mode 'avg' only, got mode {mode_key!r}")
    if return_indices and mode_key != "max":
        raise ValueError(f"return_indices applies to mode 'max' only, got mode {mode_key!r}")
    if p is not None and mode_key != "lp":
        raise ValueError(f"p applies to mode 'lp' only, got mode {mode_key!r} with p={p!r}")
    p_val = 2.0 if p is None else _positive_p(p)
    return PoolSpec(
        mode=mode_key,  # type: ignore[arg-type]
        ndim=ndim,
        window=win,
        stride=strd,
        dilation=dil,
        padding=pad,
        ceil_mode=bool(ceil_mode),
        count_include_pad=bool(count_include_pad),
        p=p_val,
        data_format=normalize_data_format(data_format, ndim),
        return_indices=bool(return_indices),
    )


def _positive_p(p: object) -> float:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a positive real number, got {type(p).__name__} {p!r}")
    value = float(p)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"p must be a finite number > 0, got {p!r}")
    return value


# ---------------------------------------------------------------------------- the family


@dataclass(frozen=True)
class GlobalSpec:
    """Global pooling over every spatial dim."""

    mode: Mode
    ndim: int
    keepdims: bool
    p: float
    data_format: DataFormat

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        start = 2 if self.data_format == "channels_first" else 1
        return tuple(range(start, start + self.ndim))

    def pool_spec(self, spatial: tuple[int, ...]) -> PoolSpec:
        """Global pooling as a pool whose window is the whole ``spatial`` plane (keeps the
        spatial dims as size 1)."""
        return make_spec(self.mode, spatial, p=self.p if self.mode == "lp" else None,
                         data_format=self.data_format, ndim=self.ndim)


def make_global_spec(
    mode: str, *, ndim: int, keepdims: bool = False, p: float | None = None,
    data_format: str | None = None,
) -> GlobalSpec:
    """Validate global-pooling arguments."""
    base = make_spec(mode, 1, p=p, data_format=data_format, ndim=ndim)
    if not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"keepdims must be a bool, got {type(keepdims).__name__} {keepdims!r}")
    return GlobalSpec(base.mode, ndim, bool(keepdims), base.p, base.data_format)


@dataclass(frozen=True)
class AdaptiveSpec:
    """Adaptive pooling to a fixed output size with PyTorch's bin rule."""

    mode: Mode
    ndim: int
    output_size: tuple[int | None, ...]
    data_format: DataFormat
    return_indices: bool

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        start = 2 if self.data_format == "channels_first" else 1
        return tuple(range(start, start + self.ndim))

    def plan(self, shape: tuple[int, ...]) -> AdaptivePlan:
        check_rank(tuple(shape), self.ndim, self.data_format)
        return resolve_adaptive(self, tuple(int(shape[a]) for a in self.spatial_axes))

    def uniform_pool_spec(self, plan: AdaptivePlan) -> PoolSpec:
        """The regular pooling spec whose windows are this plan's bins (``plan.uniform``)."""
        win = tuple(i // o for i, o in zip(plan.in_size, plan.out_size))
        return make_spec(self.mode, win, win, data_format=self.data_format,
                         return_indices=self.return_indices, ndim=self.ndim)


def make_adaptive_spec(
    mode: str, output_size: int | tuple[int | None, ...], *, ndim: int,
    data_format: str | None = None, return_indices: bool = False,
) -> AdaptiveSpec:
    """Validate adaptive-pooling arguments (``None`` in ``output_size`` keeps that dim)."""
    if not isinstance(mode, str) or mode.strip().lower() not in ADAPTIVE_MODES:
        raise ValueError(f"adaptive pooling mode must be one of {ADAPTIVE_MODES}, got {mode!r}")
    mode_key = mode.strip().lower()
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != ndim:
            raise ValueError(
                f"output_size must be an int or a tuple of {ndim} ints, got {tuple(output_size)!r}"
            )
        sizes = tuple(None if v is None else _as_int(v, "output_size") for v in output_size)
    else:
        sizes = (_as_int(output_size, "output_size"),) * ndim
    if any(v is not None and v < 1 for v in sizes):
        raise ValueError(f"output_size must be >= 1 in every dim, got {sizes!r}")
    if return_indices and mode_key != "max":
        raise ValueError(f"return_indices applies to mode 'max' only, got mode {mode_key!r}")
    return AdaptiveSpec(mode_key, ndim, sizes,  # type: ignore[arg-type]
                        normalize_data_format(data_format, ndim), bool(return_indices))


@dataclass(frozen=True)
class UnpoolSpec:
    """Max unpooling: scatter pooled values to their per-plane flat indices."""

    ndim: int
    output_size: tuple[int, ...] | None
    data_format: DataFormat

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        start = 2 if self.data_format == "channels_first" else 1
        return tuple(range(start, start + self.ndim))


def make_unpool_spec(
    output_size: int | tuple[int, ...] | None, *, ndim: int, data_format: str | None = None,
) -> UnpoolSpec:
    """Validate unpooling arguments; ``output_size`` may include batch and channels."""
    sizes = None
    if output_size is not None:
        if isinstance(output_size, (list, tuple)) and len(output_size) == ndim + 2:
            fmt = normalize_data_format(data_format, ndim)
            start = 2 if fmt == "channels_first" else 1
            output_size = tuple(output_size)[start:start + ndim]
        sizes = _int_tuple(output_size, ndim, "output_size", 1)
    return UnpoolSpec(ndim, sizes, normalize_data_format(data_format, ndim))



# ------------------------------------------------------------------------ fractional max pooling


@dataclass(frozen=True)
class FractionalSpec:
    """Fractional max pooling (PyTorch's ``fractional_max_pool2d/3d``): ``window`` cells pooled
    into ``output_size`` windows per dim (or ``output_ratio`` of the input), the windows placed
    by one random sample in [0, 1) per batch item, channel and dim (``pooladapt.plan``)."""

    ndim: int
    window: tuple[int, ...]
    output_size: tuple[int, ...] | None
    output_ratio: tuple[float, ...] | None
    data_format: DataFormat
    return_indices: bool

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        start = 2 if self.data_format == "channels_first" else 1
        return tuple(range(start, start + self.ndim))

    @property
    def channel_axis(self) -> int:
        return 1 if self.data_format == "channels_first" else self.ndim + 1

    def plan(self, shape: tuple[int, ...]) -> FractionalPlan:
        """The resolved plan for an input of this full shape (validated; cached by shape)."""
        check_rank(tuple(shape), self.ndim, self.data_format)
        return resolve_fractional(self, tuple(int(shape[a]) for a in self.spatial_axes))

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.plan(shape).output_shape(tuple(int(s) for s in shape))


def _ratio_tuple(value: object, ndim: int) -> tuple[float, ...]:
    items = list(value) if isinstance(value, (list, tuple)) else [value] * ndim
    if len(items) != ndim:
        raise ValueError(f"output_ratio must be a number or a tuple of {ndim} numbers, got "
                         f"{tuple(items)!r}")
    out = []
    for r in items:
        if isinstance(r, (bool, np.bool_)) or not isinstance(r, numbers.Real):
            raise TypeError(f"output_ratio must be a number in (0, 1), got "
                            f"{type(r).__name__} {r!r}")
        if not 0 < float(r) < 1:
            raise ValueError(f"output_ratio must be between 0 and 1 (exclusive), got {value!r}")
        out.append(float(r))
    return tuple(out)


def check_fractional_target(output_size: object, output_ratio: object,
                            ndim: int) -> tuple[float, ...] | None:
    """Exactly one of ``output_size`` and ``output_ratio``, the ratio in (0, 1): the checks
    torch's ``FractionalMaxPool*d`` makes when it is built. Returns the ratios."""
    if (output_size is None) == (output_ratio is None):
        raise ValueError("fractional max pooling needs exactly one of output_size and "
                         f"output_ratio, got output_size={output_size!r}, "
                         f"output_ratio={output_ratio!r}")
    return None if output_ratio is None else _ratio_tuple(output_ratio, ndim)


def make_fractional_spec(
    window: int | tuple[int, ...],
    output_size: int | tuple[int, ...] | None = None,
    output_ratio: float | tuple[float, ...] | None = None,
    return_indices: bool = False,
    *,
    ndim: int,
    data_format: str | None = None,
) -> FractionalSpec:
    """Validate fractional max pooling arguments: exactly one of ``output_size`` and
    ``output_ratio``; 2 or 3 spatial dims."""
    if ndim not in (2, 3):
        raise ValueError(f"fractional max pooling supports 2 or 3 spatial dims, got {ndim}")
    win = _int_tuple(window, ndim, "kernel_size", 1)
    ratios = check_fractional_target(output_size, output_ratio, ndim)
    sizes = None if output_size is None else _int_tuple(output_size, ndim, "output_size", 1)
    if not isinstance(return_indices, (bool, np.bool_)):
        raise TypeError(f"return_indices must be a bool, got {type(return_indices).__name__} "
                        f"{return_indices!r}")
    return FractionalSpec(ndim, win, sizes, ratios, normalize_data_format(data_format, ndim),
                          bool(return_indices))
