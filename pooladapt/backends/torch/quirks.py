"""torch behaviours the translation works around, one small function each.

Each docstring names what torch does (measured with torch 2.13 on the CPU) and the test that
pins it; ``tests/torch/test_framework_notes.py`` and ``tests/torch/test_backend.py`` run the
raw torch op where it matters, so a torch release that changes the behaviour is noticed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pooladapt import family, lowering
from pooladapt.backends.torch.compile import PerPlan
from pooladapt.plan import AdaptivePlan, PoolPlan

_WIDER = {torch.uint16: torch.int32, torch.uint32: torch.int64}
_SIGNED = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}
_INT64_MIN = -(2**63)
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}

Restore = Callable[[torch.Tensor], torch.Tensor]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def widen_unsigned(x: torch.Tensor) -> tuple[torch.Tensor, Restore | None, float | int]:
    """torch's pools and ``max(dim)`` take no uint16/uint32/uint64: they are pooled as the
    next wider signed type, uint64 as int64 with its top bit flipped (which maps uint64 order
    onto int64 order). Returns the working tensor, the function that restores the dtype (None:
    unchanged) and the working value of the dtype's lowest. Pinned by
    ``test_integer_max_is_exact_with_indices`` (tests/torch/test_backend.py)."""
    dtype = x.dtype
    if dtype in _WIDER:
        return x.to(_WIDER[dtype]), lambda y: y.to(dtype), 0
    if dtype == torch.uint64:
        return (x.view(torch.int64) ^ _INT64_MIN,
                lambda y: (y ^ _INT64_MIN).view(torch.uint64), _INT64_MIN)
    return x, None, lowering.lowest(dtype_name(dtype))


def scatter_view(dtype: torch.dtype) -> torch.dtype | None:
    """torch's ``scatter`` takes no uint16/uint32/uint64: their bits move as the signed type
    of the same size (``test_integer_max_is_exact_with_indices`` unpools them)."""
    return _SIGNED.get(dtype)


def no_channels(xc: torch.Tensor, out_size: tuple[int, ...], indices: bool):
    """torch's pools reject an input with zero channels; the result is empty anyway, so it is
    made without them (``test_empty_batch_and_zero_channels``). None when there are channels."""
    if xc.shape[1]:
        return None
    y = xc.new_zeros((*xc.shape[:2], *out_size))
    return (y, y.long()) if indices else y


def nan_positions(x: torch.Tensor) -> torch.Tensor:
    """torch's max pools (and adaptive max pools) give the index of the *last* NaN of a
    window (``test_nan_index_is_the_first_nan_where_torch_reports_the_last``). Pooled with the
    same geometry, this tensor (-flat position at NaN cells, -inf elsewhere) has the index of
    the window's *first* NaN."""
    plane = x.shape[2:]
    dtype = torch.float32 if math.prod(plane) < 2**24 else torch.float64
    neg_pos = -torch.arange(math.prod(plane), dtype=dtype, device=x.device).view(plane)
    return torch.where(torch.isnan(x), neg_pos, torch.full((), -math.inf, dtype=dtype,
                                                           device=x.device))


def lowest_max_index(y: torch.Tensor, idx: torch.Tensor, lowest: float | int,
                     first_real: torch.Tensor) -> torch.Tensor:
    """A window's maximum equal to the dtype's lowest value ties with every padded cell, and
    torch's index for it is unreliable (its channels_last 3-D kernel drops the depth term):
    the window's first real cell (``first_real``, -1 for none) takes it
    (``test_all_minus_inf_window_index_is_its_first_real_cell_in_3d``)."""
    return torch.where(y == lowest, first_real, idx)


def int8_pool_input(t: torch.Tensor, tracing: bool) -> torch.Tensor:
    """torch's channels_last int8 max pool kernels index a plane with int8 and fail above 127
    cells (``test_int8_channels_last_planes_above_127_cells``): such input is pooled from a
    contiguous copy (always while tracing, where the layout is not known)."""
    if t.dtype not in (torch.int8, torch.uint8) or t.dim() < 4:
        return t
    fmt = _CHANNELS_LAST[t.dim()]
    if tracing or (t.numel() > 127 and (t.is_contiguous(memory_format=fmt)
                                        or not t.is_contiguous())):
        return t.clone(memory_format=torch.contiguous_format)
    return t


def avg_pool_fits(window: tuple[int, ...], in_size: tuple[int, ...]) -> bool:
    """torch's ``avg_pool3d`` rejects a window larger than the unpadded input, whatever the
    padding ("input image smaller than kernel size"; ``avg_pool1d``/``2d`` take it):
    ``test_avg_pool3d_rejects_a_window_larger_than_the_input``."""
    return len(window) != 3 or all(k <= n for k, n in zip(window, in_size))


def half_sums_on(t: torch.Tensor, ndim: int, adaptive: bool) -> bool:
    """float16/bfloat16 averages torch computes badly on the CPU: ``avg_pool3d`` has no kernel
    for them, ``adaptive_avg_pool3d`` sums in float16 and overflows (60000s average to inf):
    they are computed in float32 (``test_half_precision_avg_sums_in_float32``)."""
    return t.dtype in (torch.float16, torch.bfloat16) and t.device.type == "cpu" and (
        ndim == 3 or adaptive)


def first_real_terms(plan: PoolPlan) -> tuple[tuple[int, ...], ...]:
    """For :func:`lowest_max_index`: per dim and output, the flat-index term of its window's
    first tap inside the input (``lowering.dim_taps``), a large negative number where none is;
    summed over the dims (clamped at -1), the window's first real cell."""
    none, s = -math.prod(plan.in_size) - 1, plan.spec.stride
    return tuple(tuple(next(((o * s[d] + t.offset) * step for t in lowering.dim_taps(plan, d)
                             if t.first <= o < t.last), none) for o in range(m))
                 for d, (m, step) in enumerate(zip(plan.out_size,
                                                   lowering.plane_strides(plan.in_size))))


def first_nan_index(y: torch.Tensor, idx: torch.Tensor, xc: torch.Tensor, checked: bool,
                    pool_indices: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Where the maximum ``y`` of NC* ``xc`` is NaN, the index of the window's first NaN
    (``pool_indices`` of :func:`nan_positions`) replaces torch's, the last one. ``checked``:
    the values were checked (fast.fixup_check), so a ``y`` without NaN skips this."""
    if not xc.is_floating_point() or (checked and not bool(torch.isnan(y).any())):
        return idx
    return torch.where(torch.isnan(y), pool_indices(nan_positions(xc)), idx)


def lift_1d(t: torch.Tensor, *params: tuple[int, ...]) -> tuple:
    """A 1-D NC* tensor and its pool arguments (window, stride, padding, dilation...) as 2-D
    with a unit height: torch's 1-D max pool takes no integers and ``avg_pool1d`` no
    ``divisor_override`` (``test_int64_beyond_float_precision_stays_exact``; the lp cases of
    the conformance grid)."""
    return (t.unsqueeze(2), *((1 if i != 2 else 0, *p) for i, p in enumerate(params)))


def exported_window_sum(t: torch.Tensor, window: tuple[int, ...],
                        stride: tuple[int, ...]) -> torch.Tensor:
    """The window sums of an explicitly zero-padded NC* ``t`` while ``torch.onnx.export``
    traces. Both exporters translate ``avg_pool*d(..., divisor_override=1)`` to an ONNX
    AveragePool that divides by the window's cells anyway (ONNX has no divisor override): an
    exported ``LPPool2d(2, 3)`` gave its eager result times 1/3 (issue 18). Every VALID window
    of ``t`` is full, so the sum is the average times the window's cells
    (``test_lp_fallback_sums_its_windows``, tests/torch/test_export.py)."""
    avg = getattr(F, f"avg_pool{t.dim() - 2}d")(t, window, stride, 0, False, True)
    return avg * math.prod(window)


def lp_power(x: torch.Tensor, p: float) -> torch.Tensor:
    """``|x| ** p``. torch differentiates ``|x| ** p`` (p < 1) at 0 as inf * 0 = NaN; the
    canonical gradient there is 0 (``test_lp_gradient_at_zero_is_zero_not_nan``)."""
    if p == 2.0:
        return x * x
    if p >= 1.0 or not x.requires_grad:
        return x.abs() if p == 1.0 else x.abs() ** p
    a = x.abs()
    zero = a == 0
    return torch.where(zero, torch.zeros_like(a), torch.where(zero, 1.0, a) ** p)


def lp_root(s: torch.Tensor, root: float | None) -> torch.Tensor:
    """``s ** root`` (None: ``s``). torch differentiates it at 0 as inf * 0 = NaN; the
    canonical gradient there is 0 (``test_lp_gradient_at_zero_is_zero_not_nan``)."""
    if root is None:
        return s
    if not s.requires_grad:
        return s.sqrt() if root == 0.5 else s ** root
    zero = s == 0
    t = torch.where(zero, torch.ones_like(s), s)
    return torch.where(zero, torch.zeros_like(s), t.sqrt() if root == 0.5 else t ** root)


def exported_tap_sum(t: torch.Tensor, axis: int, window: int, stride: int,
                     dilation: int) -> torch.Tensor:
    """The dilated window sums along ``axis`` of a padded ``t`` while ``torch.onnx.export``
    traces: the TorchScript exporter has no ``unfold`` below opset 20; one strided slice per
    tap, added (``test_a_dilated_average_below_opset_19_traces_the_translation``)."""
    m = (t.shape[axis] - (window - 1) * dilation - 1) // stride + 1
    head = (slice(None),) * axis
    taps = [t[(*head, slice(k * dilation, k * dilation + (m - 1) * stride + 1, stride))]
            for k in range(window)]
    total = taps[0]
    for tap in taps[1:]:
        total = total + tap
    return total


def exported_adaptive_avg(xc: torch.Tensor, plan: AdaptivePlan) -> torch.Tensor:
    """An adaptive average with bins of unequal size while ``torch.onnx.export`` traces: the
    TorchScript exporter refuses ``adaptive_avg_pool*d`` there ("output size that are not
    factor of input size"), and the dynamo exporter has no ``adaptive_max_pool*d`` at all
    (:func:`integer_adaptive_max` gathers that one). The average is separable: per dim, a
    product with the bins' averaging matrix (``test_adaptive_exports``, test_export.py)."""
    t = xc.to(getattr(torch, lowering.accumulator(dtype_name(xc.dtype))))
    for d, (starts, ends, n) in enumerate(zip(plan.starts, plan.ends, plan.in_size)):
        weights = [[1.0 / (e - s) if s <= i < e else 0.0 for i in range(n)]
                   for s, e in zip(starts, ends)]
        last = t.dim() - 1  # (the TorchScript exporter writes a negative dim into a perm)
        t = (t.transpose(2 + d, last) @ torch.tensor(weights, dtype=t.dtype,
                                                     device=t.device).T).transpose(2 + d, last)
    return t.to(xc.dtype)


class _Bins:
    """An adaptive plan's bins on the NC* view, as ``family.plan_bins``: per dim its axis, its
    gather table (``plan.gather``: a flat index list and its (out, widest bin) shape: host
    constants, which torch.compile embeds) and no mask (a padding slot repeats the bin's
    first cell: harmless for max)."""

    def __init__(self, plan: AdaptivePlan) -> None:
        self.in_size = plan.in_size
        self.dims = tuple((2 + d, (tuple(index.ravel().tolist()), index.shape), None)
                          for d, (index, _) in enumerate(
                              plan.gather(d) for d in range(plan.spec.ndim)))


_bins = PerPlan(_Bins)


def _take(t: torch.Tensor, table: tuple, axis: int) -> torch.Tensor:
    index, shape = table
    return t.index_select(axis, torch.tensor(index, device=t.device)).unflatten(axis, shape)


def _first_max(values: torch.Tensor, flats: torch.Tensor, valid: None, axis: int):
    out, pick = values.max(dim=axis)  # the first maximum
    return out, flats.gather(axis, pick.unsqueeze(axis)).squeeze(axis)


BIN_MAX = family.MaxOps(take=_take, first_max=_first_max)


def integer_adaptive_max(xc: torch.Tensor, plan: AdaptivePlan, indices: bool):
    """torch's adaptive max pools take floats only: integers (and bins while exporting) are
    ``family.bin_first_max`` (``test_int64_beyond_float_precision_stays_exact``): the
    surviving index is the first maximum of the whole bin in row-major order. With
    ``indices``, values and indices."""
    bins = _bins(plan)
    pos = torch.arange(math.prod(bins.in_size), device=xc.device).view(bins.in_size)
    out, pos = family.bin_first_max(BIN_MAX, xc, pos.expand(xc.shape), bins.dims)
    return (out, pos) if indices else out
