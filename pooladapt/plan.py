"""Pooling plans: a spec resolved against one input's spatial size. The geometry lives here.

A *plan* holds everything a backend needs, explicit: ``(low, high)`` pads per dim (explicit or
from ``same``), the extra high-side cells that ceil mode adds, the output size, the average
divisors and the windows made only of padding. Backends, the oracle and the output-shape
function all read the same plan; no backend re-derives a padding rule. Plans are cached by
``(spec, spatial size)`` and hashable, so under a compiler they are trace-time constants.

The rules, in one place:

* ``same`` / ``same_upper`` / ``same_lower`` (ONNX ``auto_pad``): output = ceil(in / stride);
  total padding = max((out - 1) * stride + extent - in, 0) where extent = dilation*(window-1)+1;
  the odd cell goes to the end (``upper``) or to the start (``lower``): :func:`same_pads`.
* output size: floor((in + low + high - extent) / stride) + 1; with ``ceil_mode`` ceil instead
  of floor, then a last window that would start in the high-side padding (start >= in + low)
  is dropped (the ONNX/PyTorch rule): :func:`output_size`. Cells that ceil mode reaches past
  the padded input are *extra* cells: they never win a max and no divisor counts them.
* average divisor: with ``count_include_pad`` the window cells inside the padded input,
  otherwise the window cells inside the unpadded input. Always separable per dimension.
* padded cells never win a max (they act as -inf, or the dtype minimum for integers); they
  add 0 to sums (avg and lp).
* adaptive bins (PyTorch's): bin i spans floor(i*in/out) to ceil((i+1)*in/out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # types only: spec imports this module
    from pooladapt.spec import AdaptiveSpec, FractionalSpec, PoolSpec

Pads = tuple[tuple[int, int], ...]


def check_spatial(spatial: tuple[int, ...]) -> None:
    """Raise ValueError for an empty spatial dim (an empty batch or channel dim is fine)."""
    if any(n < 1 for n in spatial):
        raise ValueError(f"pooling needs a non-empty spatial input, got spatial size "
                         f"{tuple(spatial)!r}")


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


def output_size(in_size: int, lo: int, hi: int, extent: int, stride: int, ceil: bool,
                drop: bool = True) -> int:
    """Windows along one dim: floor (or ceil) of ``(in + lo + hi - extent) / stride``, plus
    one; with ceil, a last window that would start in the high-side padding is dropped
    (``drop``, the ONNX/PyTorch rule; MXNet's ``'full'`` convention keeps it)."""
    span = in_size + lo + hi - extent
    if span < 0:
        return 0
    if not ceil:
        return span // stride + 1
    out = -(-span // stride) + 1
    if drop and (out - 1) * stride >= in_size + lo:
        out -= 1
    return out


def _window_counts(spec: PoolSpec, in_size: tuple[int, ...], pads: Pads,
                   out_size: tuple[int, ...], real_only: bool) -> tuple[tuple[int, ...], ...]:
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
        out = output_size(n, lo, hi, k_ext, s, spec.ceil_mode)
        pads.append((lo, hi))
        outs.append(out)
        extras.append(max((out - 1) * s + k_ext - (n + lo + hi), 0))
    resolved, sizes = tuple(pads), tuple(outs)
    real = _window_counts(spec, in_size, resolved, sizes, real_only=True)
    counts = _window_counts(spec, in_size, resolved, sizes, real_only=False) if (
        spec.count_include_pad) else real
    return PoolPlan(spec, tuple(in_size), resolved, tuple(extras), sizes, counts, real)


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
        return self.spec.uniform_pool_spec(self)

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


# ------------------------------------------------------------------------ fractional max pooling
# PyTorch's rule (ATen's generate_intervals, checked against torch on thousands of samples by
# tests/torch/test_fractional.py): along a spatial dim of ``n`` cells pooled by a window of
# ``k`` into ``out`` windows, with the sample ``u`` in [0, 1) of that batch item, channel and
# dim, window ``i < out - 1`` starts at ``int((i + u) * alpha) - int(u * alpha)`` where
# ``alpha = (n - k) / (out - 1)``, and the last at ``n - k``. The arithmetic is the samples'
# own dtype, every operation rounded to it (float32 samples: float32; float16: float16...).

FRACTIONAL_SAMPLE_DIMS: dict[int, tuple[int, ...]] = {2: (1, 0), 3: (0, 1, 2)}
"""ndim -> the spatial dim each of the ``ndim`` samples of a plane drives, in sample order:
torch's order (2-D: the first sample drives the width, the second the height; 3-D: depth,
height, width)."""


def fractional_starts(sample: np.floating, in_size: int, out_size: int, window: int) -> list[int]:
    """Window starts along one dim for one sample (a NumPy scalar: its type is the precision)."""
    if out_size == 1:
        return [in_size - window]
    kind = type(sample)
    alpha = kind(in_size - window) / kind(out_size - 1)
    return [int((kind(i) + sample) * alpha) - int(sample * alpha)
            for i in range(out_size - 1)] + [in_size - window]


def fractional_output_size(in_size: int, ratio: float) -> int:
    """Windows along a dim pooled by ``output_ratio``: ``int(in_size * ratio)`` (torch's)."""
    return int(in_size * ratio)


@dataclass(frozen=True)
class FractionalPlan:
    """A fractional spec resolved against one spatial size: ``out_size`` windows of the spec's
    window per dim; their starts depend on the random samples (:meth:`starts`)."""

    spec: FractionalSpec
    in_size: tuple[int, ...]
    out_size: tuple[int, ...]

    def alpha(self, dim: int, dtype: np.dtype) -> np.floating | None:
        """``(n - k) / (out - 1)`` along ``dim`` in ``dtype``; None for a single window."""
        n, k, out = self.in_size[dim], self.spec.window[dim], self.out_size[dim]
        kind = np.dtype(dtype).type
        return None if out == 1 else kind(n - k) / kind(out - 1)

    def starts(self, samples: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per spatial dim, int64 window starts of shape (N, C, out) from samples (N, C, ndim)
        (vectorised :func:`fractional_starts`, in the samples' dtype)."""
        samples = np.asarray(samples)
        out = []
        for d in range(self.spec.ndim):
            u = samples[..., FRACTIONAL_SAMPLE_DIMS[self.spec.ndim].index(d)]
            last = np.full(u.shape + (1,), self.in_size[d] - self.spec.window[d], np.int64)
            alpha = self.alpha(d, samples.dtype)
            if alpha is None:
                out.append(last)
                continue
            i = np.arange(self.out_size[d] - 1, dtype=samples.dtype)
            first = ((i + u[..., None]) * alpha).astype(np.int64) - (
                (u * alpha).astype(np.int64)[..., None])
            out.append(np.concatenate([first, last], axis=-1))
        return tuple(out)

    def output_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = list(in_shape)
        for axis, size in zip(self.spec.spatial_axes, self.out_size):
            shape[axis] = size
        return tuple(shape)


@lru_cache(maxsize=1024)
def resolve_fractional(spec: FractionalSpec, in_size: tuple[int, ...]) -> FractionalPlan:
    """Output size (given, or ``int(in * ratio)``) and the check that the windows fit."""
    check_spatial(in_size)
    if spec.output_size is not None:
        out = spec.output_size
    else:
        out = tuple(fractional_output_size(n, r) for n, r in zip(in_size, spec.output_ratio or ()))
    for d, (n, k, o) in enumerate(zip(in_size, spec.window, out)):
        if o < 1 or o + k - 1 > n:
            raise ValueError(
                f"fractional max pooling needs 1 <= output size and output size + window - 1 "
                f"<= input size in every dim; dim {d} has input {n}, window {k}, output {o} "
                f"(spatial size {in_size!r}, output {out!r})")
    return FractionalPlan(spec, tuple(in_size), tuple(out))
