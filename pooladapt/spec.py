"""Pooling specs and plans: every semantic rule of pooladapt lives in this module.

A *spec* holds what the user asked for, validated and normalised once when it is built.
A *plan* is the spec resolved against one input's spatial shape: explicit ``(low, high)``
pads, the extra high-side cells that ceil mode adds, the output size and the average
divisor. Backends, the oracle and the output-shape function all read the same plan; no
backend parses an argument or re-derives a padding rule.

The rules, in one place:

* ``same`` / ``same_upper`` / ``same_lower`` (ONNX ``auto_pad``): output = ceil(in / stride);
  total padding = max((out - 1) * stride + extent - in, 0) where extent = dilation*(window-1)+1;
  the odd cell goes to the end (``upper``) or to the start (``lower``).
* output size: floor((in + low + high - extent) / stride) + 1; with ``ceil_mode`` ceil instead
  of floor, then a last window that would start in the high-side padding (start >= in + low)
  is dropped (the ONNX/PyTorch rule). Cells that ceil mode reaches past the padded input are
  *extra* cells: they never win a max and no divisor counts them.
* average divisor: with ``count_include_pad`` the window cells inside the padded input,
  otherwise the window cells inside the unpadded input. Always separable per dimension.
* padded cells never win a max (they act as -inf, or the dtype minimum for integers); they
  add 0 to sums (avg and lp).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Literal

import numpy as np

from pooladapt import config
from pooladapt.layouts import SPATIAL_LETTERS, DataFormat, parse_data_format

Mode = Literal["max", "avg", "lp"]
PaddingRule = Literal["valid", "same_upper", "same_lower"]
Pads = tuple[tuple[int, int], ...]

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


def check_spatial(spatial: tuple[int, ...]) -> None:
    """Raise ValueError for an empty spatial dim (an empty batch or channel dim is fine)."""
    if any(n < 1 for n in spatial):
        raise ValueError(f"pooling needs a non-empty spatial input, got spatial size "
                         f"{tuple(spatial)!r}")


def make_spec(
    mode: str,
    window: int | tuple[int, ...],
    stride: int | tuple[int, ...] | None = None,
    padding: str | int | tuple = "valid",
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


@dataclass(frozen=True)
class PoolPlan:
    """A spec resolved against one spatial input size. Everything a backend needs, explicit.

    ``pads`` are the real padding (explicit or from ``same``); ``ceil_extra`` are cells past the
    padded input that ceil mode reaches (never counted, never a max). Running a VALID pool on
    the input padded by :attr:`total_pads` gives exactly ``out_size`` windows.
    """

    spec: PoolSpec
    in_size: tuple[int, ...]
    pads: Pads
    ceil_extra: tuple[int, ...]
    out_size: tuple[int, ...]
    counts: tuple[tuple[int, ...], ...] = field(repr=False)
    real_counts: tuple[tuple[int, ...], ...] = field(repr=False)

    @property
    def total_pads(self) -> Pads:
        """Pads to apply before a VALID pool: ``(low, high + ceil_extra)`` per dim."""
        return tuple((lo, hi + e) for (lo, hi), e in zip(self.pads, self.ceil_extra))

    @property
    def has_padding(self) -> bool:
        return any(lo or hi for lo, hi in self.total_pads)

    @property
    def symmetric_pads(self) -> bool:
        """True when the real pads are equal on both sides of every dim."""
        return all(lo == hi for lo, hi in self.pads)

    @property
    def window_size(self) -> int:
        return math.prod(self.spec.window)

    @cached_property
    def uniform_divisor(self) -> int | None:
        """The avg divisor if every window has the same one, else None."""
        if all(len(set(dim)) == 1 for dim in self.counts):
            return math.prod(dim[0] for dim in self.counts)
        return None

    @cached_property
    def divisor_map(self) -> np.ndarray:
        """Float64 array of shape ``out_size``: the avg divisor of every output cell."""
        out = np.ones((), dtype=np.float64)
        for dim_counts in self.counts:
            out = np.multiply.outer(out, np.asarray(dim_counts, dtype=np.float64))
        return out

    @property
    def all_padding_windows(self) -> bool:
        """True when some window holds no cell of the unpadded input (possible with dilation)."""
        return any(0 in dim for dim in self.real_counts)

    @cached_property
    def empty_windows(self) -> np.ndarray:
        """Bool array of shape ``out_size``: True where the window holds no cell of the
        unpadded input. Such a window is -inf (max, no index), 0 (lp) or NaN (avg without
        padding: 0 / 0), and passes no gradient."""
        out = np.zeros((), dtype=bool)
        for dim_counts in self.real_counts:
            out = np.logical_or.outer(out, np.asarray(dim_counts) == 0)
        return out

    def window_starts(self, dim: int) -> range:
        """Input coordinate of the first tap of every window along ``dim`` (may be negative)."""
        lo = self.pads[dim][0]
        s = self.spec.stride[dim]
        return range(-lo, -lo + s * self.out_size[dim], s)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = list(in_shape)
        for axis, size in zip(self.spec.spatial_axes, self.out_size):
            shape[axis] = size
        return tuple(shape)


def same_pads(in_size: int, k_extent: int, stride: int, lower: bool) -> tuple[int, int]:
    """The ``same`` rule: pad so that ``ceil(in_size / stride)`` windows fit; the odd cell goes
    to the high side (``same_upper``, TF/Keras) or the low side (``lower``, ONNX SAME_LOWER)."""
    out = -(-in_size // stride)
    total = max((out - 1) * stride + k_extent - in_size, 0)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def _out_size(in_size: int, lo: int, hi: int, extent: int, stride: int, ceil: bool) -> int:
    span = in_size + lo + hi - extent
    if span < 0:
        return 0
    if not ceil:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= in_size + lo:
        out -= 1
    return out


def _window_counts(spec: PoolSpec, in_size, pads, out_size, real_only: bool):
    counts = []
    for d in range(spec.ndim):
        lo, hi = pads[d]
        first, last = (0, in_size[d]) if real_only else (-lo, in_size[d] + hi)
        k, dil, s = spec.window[d], spec.dilation[d], spec.stride[d]
        dim_counts = []
        for o in range(out_size[d]):
            start = o * s - lo
            dim_counts.append(sum(1 for t in range(k) if first <= start + t * dil < last))
        counts.append(tuple(dim_counts))
    return tuple(counts)


@lru_cache(maxsize=1024)
def resolve_plan(spec: PoolSpec, in_size: tuple[int, ...]) -> PoolPlan:
    """Resolve padding, ceil mode, output size and avg divisors for one spatial size."""
    pads: list[tuple[int, int]] = []
    extras, outs = [], []
    check_spatial(in_size)
    for d in range(spec.ndim):
        n, k_ext, s = in_size[d], spec.extent[d], spec.stride[d]
        if isinstance(spec.padding, str):
            lo, hi = (0, 0) if spec.padding == "valid" else same_pads(
                n, k_ext, s, spec.padding == "same_lower")
        else:
            lo, hi = spec.padding[d]
        if k_ext > n + lo + hi:
            raise ValueError(
                f"window {spec.window!r} (dilation {spec.dilation!r}, extent {spec.extent!r}) is "
                f"larger than the padded input: spatial size {in_size!r} with padding "
                f"{spec.padding!r} gives {n + lo + hi} in dim {d}"
            )
        out = _out_size(n, lo, hi, k_ext, s, spec.ceil_mode)
        pads.append((lo, hi))
        outs.append(out)
        extras.append(max((out - 1) * s + k_ext - (n + lo + hi), 0))
    real = _window_counts(spec, in_size, pads, outs, real_only=True)
    counts = _window_counts(spec, in_size, pads, outs, real_only=False) if (
        spec.count_include_pad) else real
    return PoolPlan(spec, tuple(in_size), tuple(pads), tuple(extras), tuple(outs), counts, real)


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
class AdaptivePlan:
    """Bins per spatial dim: ``starts[d][i]`` to ``ends[d][i]`` (exclusive)."""

    spec: AdaptiveSpec
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]
    ends: tuple[tuple[int, ...], ...]

    @property
    def uniform(self) -> bool:
        """True when every bin is a regular window (in % out == 0): a plain pool does it."""
        return all(i % o == 0 for i, o in zip(self.in_size, self.out_size))

    def as_pool_spec(self) -> PoolSpec:
        """The equivalent regular pooling spec when :attr:`uniform` holds."""
        win = tuple(i // o for i, o in zip(self.in_size, self.out_size))
        return make_spec(self.spec.mode, win, win, data_format=self.spec.data_format,
                         return_indices=self.spec.return_indices, ndim=self.spec.ndim)

    @cached_property
    def max_bin(self) -> tuple[int, ...]:
        return tuple(max(e - s for s, e in zip(st, en)) for st, en in zip(self.starts, self.ends))

    def gather(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """``(index, valid)`` arrays of shape (out, max_bin) for a gather-and-reduce along dim.

        Invalid slots repeat the bin's first index (harmless for max) and are False in valid.
        """
        st, en, width = self.starts[dim], self.ends[dim], self.max_bin[dim]
        offs = np.arange(width)
        idx = np.asarray(st)[:, None] + offs[None, :]
        valid = idx < np.asarray(en)[:, None]
        idx = np.where(valid, idx, np.asarray(st)[:, None])
        return idx.astype(np.int64), valid

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = list(in_shape)
        for axis, size in zip(self.spec.spatial_axes, self.out_size):
            shape[axis] = size
        return tuple(shape)


@lru_cache(maxsize=1024)
def resolve_adaptive(spec: AdaptiveSpec, in_size: tuple[int, ...]) -> AdaptivePlan:
    out = tuple(i if o is None else o for i, o in zip(in_size, spec.output_size))
    if any(i < 1 for i in in_size):
        raise ValueError(f"adaptive pooling needs a non-empty spatial input, got {in_size!r}")
    starts = tuple(tuple((j * i) // o for j in range(o)) for i, o in zip(in_size, out))
    ends = tuple(tuple(-(-((j + 1) * i) // o) for j in range(o)) for i, o in zip(in_size, out))
    return AdaptivePlan(spec, tuple(in_size), out, starts, ends)


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

