"""The PyTorch backend: ``F.*pool*d`` wherever it expresses the plan, exact emulation elsewhere.

Every op runs on a channels-first *view* of the input (``movedim``, no copy): a channels_last
tensor becomes an NC* tensor in torch's channels_last memory format, which torch's CPU kernels
pool directly. The native path covers symmetric padding up to half the window, ceil mode,
``count_include_pad``, max dilation and indices. Elsewhere the input is padded explicitly
(the dtype's lowest value for max, zeros for sums), pooled VALID and divided by the plan's
divisor map; avg/lp dilation sums strided slices, one dim at a time. Per-plan decisions and
constants are cached (:class:`_Route`), so a call costs one dict lookup before the native op.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pooladapt.backends.base import EMULATED, FEATURES, NATIVE, Backend
from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan, UnpoolSpec

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_ADAPTIVE = {("max", 1): F.adaptive_max_pool1d, ("max", 2): F.adaptive_max_pool2d,
             ("max", 3): F.adaptive_max_pool3d, ("avg", 1): F.adaptive_avg_pool1d,
             ("avg", 2): F.adaptive_avg_pool2d, ("avg", 3): F.adaptive_avg_pool3d}
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
_HALF = (torch.float16, torch.bfloat16)
# torch pools none of these: widen to a signed type that holds every value, order kept.
_UNSIGNED_WIDE = {torch.uint16: torch.int32, torch.uint32: torch.int64}
_SAME_SIZE_SIGNED = {torch.uint16: torch.int16, torch.uint32: torch.int32,
                     torch.uint64: torch.int64}
_INT64_MIN = -(2**63)


def _lowest(dtype: torch.dtype) -> float | int:
    if dtype.is_floating_point:
        return -math.inf
    return torch.iinfo(dtype).min


def _widen(x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor] | None,
                                     float | int]:
    """(working tensor, restore function or None, lowest value of the *original* dtype)."""
    dtype = x.dtype
    if dtype in _UNSIGNED_WIDE:
        return x.to(_UNSIGNED_WIDE[dtype]), lambda y: y.to(dtype), 0
    if dtype == torch.uint64:  # flipping the top bit maps uint64 order onto int64 order
        return (x.view(torch.int64) ^ _INT64_MIN,
                lambda y: (y ^ _INT64_MIN).view(torch.uint64), _INT64_MIN)
    return x, None, _lowest(dtype)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _has_nan(y: torch.Tensor) -> bool:
    """Whether a NaN fix-up may be needed; always True where asking would sync or break a graph."""
    if y.device.type == "cpu" and not _compiling():
        return bool(torch.isnan(y).any())
    return True


def _torch_pads(pads: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    return tuple(v for lo, hi in reversed(pads) for v in (lo, hi))


class _Route:
    """What one plan needs from torch, decided once: native call or emulation, and constants."""

    def __init__(self, plan: PoolPlan) -> None:
        spec = plan.spec
        self.plan = plan
        half_window = all(lo <= k // 2 for (lo, _), k in zip(plan.pads, spec.window))
        implicit = plan.symmetric_pads and half_window and not plan.all_padding_windows
        # avg_pool3d rejects a window larger than the unpadded input, whatever the padding
        fits = all(k <= n for k, n in zip(spec.window, plan.in_size))
        self.undilated = all(d == 1 for d in spec.dilation)
        self.native = implicit and (spec.mode == "max" or (
            spec.mode == "avg" and self.undilated and fits))
        # lp and emulated avg sum with avg_pool(divisor_override), whose implicit zero padding
        # serves when it is symmetric and at most half the window; dilation sums by slices
        self.implicit_sum = implicit and fits
        self.padding = tuple(lo for lo, _ in plan.pads)
        self.torch_pads = _torch_pads(plan.total_pads)
        self._consts: dict[Any, torch.Tensor] = {}

    def const(self, name: str, make: Callable[[], np.ndarray], like: torch.Tensor,
              dtype: torch.dtype | None = None) -> torch.Tensor:
        """A per-plan constant on ``like``'s device, built once (inside a compiled graph: fresh)."""
        key = (name, like.device, dtype)
        t = self._consts.get(key)
        if t is None:
            t = torch.tensor(make().tolist(), dtype=dtype, device=like.device)
            if not _compiling():
                self._consts[key] = t
        return t

    def remap(self) -> np.ndarray:
        """Flat index in the explicitly padded plane -> flat index in the input plane, or -1."""
        plan = self.plan
        grids = np.meshgrid(*(np.arange(-lo, n + hi) for n, (lo, hi) in
                              zip(plan.in_size, plan.total_pads)), indexing="ij")
        inside = np.logical_and.reduce([(g >= 0) & (g < n) for g, n in zip(grids, plan.in_size)])
        flat = np.ravel_multi_index([np.clip(g, 0, n - 1) for g, n in zip(grids, plan.in_size)],
                                    plan.in_size)
        return np.where(inside, flat, -1).ravel()

    def first_real(self) -> np.ndarray:
        """Per output cell: flat index of the window's first real cell, -1 for all padding."""
        plan, spec = self.plan, self.plan.spec
        per_dim = []
        for d, n in enumerate(plan.in_size):
            taps = [s + t * spec.dilation[d] for s in plan.window_starts(d)
                    for t in range(spec.window[d])]
            taps = np.asarray(taps).reshape(plan.out_size[d], spec.window[d])
            real = (taps >= 0) & (taps < n)
            first = np.where(real.any(1), taps[np.arange(len(taps)), real.argmax(1)], -1)
            per_dim.append(first)
        grids = np.meshgrid(*per_dim, indexing="ij")
        valid = np.logical_and.reduce([g >= 0 for g in grids])
        flat = np.ravel_multi_index([np.maximum(g, 0) for g in grids], plan.in_size)
        return np.where(valid, flat, -1)


def _lift(x: torch.Tensor, *params: tuple[int, ...], fill: tuple[int, ...]):
    """1-D -> 2-D with a unit height (torch has no 1-D int max pool or divisor_override)."""
    return (x.unsqueeze(2),) + tuple((f,) + p for p, f in zip(params, fill))


class TorchBackend(Backend):
    name = "torch"
    framework = "torch"
    supports_autograd = True
    known_deviations: dict[str, str] = {}

    def __init__(self) -> None:
        self._routes: dict[int, _Route] = {}

    def version(self) -> str:
        return torch.__version__

    def capabilities(self) -> dict[str, str]:
        emulated = {"lp", "asymmetric_padding", "same", "dilation"}
        return {f: EMULATED if f in emulated else NATIVE for f in FEATURES}

    def from_numpy(self, a: np.ndarray) -> torch.Tensor:
        a = np.asarray(a)
        if not a.flags.writeable or any(s < 0 for s in a.strides):
            a = a.copy()
        if a.dtype.name == "bfloat16":  # ml_dtypes.bfloat16: same bits as torch.bfloat16
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(a)

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        x = x.detach().cpu().resolve_conj()
        if x.dtype == torch.bfloat16:
            import ml_dtypes

            return x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return x.numpy()

    def dtype_name(self, x: torch.Tensor) -> str:
        return str(x.dtype).removeprefix("torch.")

    def vjp(self, fn: Callable[[Any], Any], x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        (dx,) = torch.autograd.grad(fn(x), x, g)
        return dx

    # ------------------------------------------------------------------------- pooling

    def _route(self, plan: PoolPlan) -> _Route:
        route = self._routes.get(id(plan))
        if route is None or route.plan is not plan:
            if len(self._routes) > 4096:
                self._routes.clear()
            route = self._routes[id(plan)] = _Route(plan)
        return route

    def pool(self, x: torch.Tensor, plan: PoolPlan):
        spec = plan.spec
        route = self._route(plan)
        cf = spec.channels_first
        xw, restore, lowest = _widen(x)
        xc = xw if cf else xw.movedim(-1, 1)
        if spec.mode == "max":
            y, idx = _max_pool(xc, route, lowest)
        else:
            y, idx = _sum_pool(xc, route), None
        if restore is not None:
            y = restore(y)
        if not cf:
            y = y.movedim(1, -1)
            idx = None if idx is None else idx.movedim(1, -1)
        return (y, idx) if spec.return_indices else y

    def global_pool(self, x: torch.Tensor, spec: GlobalSpec) -> torch.Tensor:
        axes = spec.spatial_axes
        if spec.mode == "max":
            xw, restore, _ = _widen(x)
            # max(dim) sends the gradient to the first maximum (amax would split ties)
            flat = xw.flatten(axes[0], axes[-1])
            y = flat.max(dim=axes[0]).values
            y = y if restore is None else restore(y)
            return _keep(y, axes, spec.keepdims)
        acc = torch.float32 if x.dtype in _HALF else None
        if spec.mode == "avg":
            y = x.mean(dim=axes, keepdim=spec.keepdims, dtype=acc)
        else:
            y = _root(_power(x if acc is None else x.to(acc), spec.p).sum(
                dim=axes, keepdim=spec.keepdims), spec.p)
        return y.to(x.dtype)

    def adaptive_pool(self, x: torch.Tensor, plan: AdaptivePlan):
        spec = plan.spec
        cf = spec.data_format == "channels_first"
        xw, restore, _ = _widen(x)
        xc = xw if cf else xw.movedim(-1, 1)
        idx = None
        if spec.mode == "avg":
            # torch's CPU adaptive_avg_pool3d sums float16 in float16 (overflows): widen
            wide = xc.dtype in _HALF and xc.device.type == "cpu"
            y = _ADAPTIVE["avg", spec.ndim](xc.float() if wide else xc, plan.out_size)
            y = y.to(xc.dtype) if wide else y
        elif xc.dtype.is_floating_point:
            fn = _ADAPTIVE["max", spec.ndim]
            if not spec.return_indices:
                y = fn(xc, plan.out_size)
            else:
                y, idx = fn(xc, plan.out_size, return_indices=True)
                if _has_nan(y):
                    _, nan_idx = fn(_nan_positions(xc), plan.out_size, return_indices=True)
                    idx = torch.where(torch.isnan(y), nan_idx, idx)
        else:
            y, idx = _adaptive_gather_max(xc, plan)
        if restore is not None:
            y = restore(y)
        if not cf:
            y = y.movedim(1, -1)
            idx = None if idx is None else idx.movedim(1, -1)
        return (y, idx) if spec.return_indices else y

    def max_unpool(self, y: torch.Tensor, indices: torch.Tensor, spec: UnpoolSpec,
                   out_size: tuple[int, ...]) -> torch.Tensor:
        cf = spec.data_format == "channels_first"
        yc = y if cf else y.movedim(-1, 1)
        ic = indices if cf else indices.movedim(-1, 1)
        n, c = yc.shape[:2]
        size = math.prod(out_size)
        flat_i = ic.reshape(n, c, -1).long()
        if not _compiling() and flat_i.numel() and int(flat_i.max()) >= size:
            raise ValueError(f"an index ({int(flat_i.max())}) is outside the output plane "
                             f"{out_size!r}")
        # negative indices (all-padding windows) land in a spare slot that is cut off
        flat_i = torch.where(flat_i < 0, size, flat_i)
        signed = _SAME_SIZE_SIGNED.get(yc.dtype)  # torch scatters no uint16/32/64: move bits
        src = yc.reshape(n, c, -1) if signed is None else yc.reshape(n, c, -1).view(signed)
        out = src.new_zeros((n, c, size + 1)).scatter(2, flat_i, src)
        out = out[:, :, :size].reshape(n, c, *out_size)
        if signed is not None:
            out = out.view(yc.dtype)
        return out if cf else out.movedim(1, -1)


def _keep(y: torch.Tensor, axes: tuple[int, ...], keepdims: bool) -> torch.Tensor:
    if not keepdims:
        return y
    for a in axes:
        y = y.unsqueeze(a)
    return y


def _power(x: torch.Tensor, p: float) -> torch.Tensor:
    if p == 1.0:
        return x.abs()
    if p == 2.0:
        return x * x
    return x.abs() ** p


def _root(s: torch.Tensor, p: float) -> torch.Tensor:
    if p == 1.0:
        return s
    if s.requires_grad:  # d(s ** (1/p)) at s == 0 is inf * 0: the canonical gradient there is 0
        zero = s == 0
        s = torch.where(zero, torch.ones_like(s), s)
        root = s.sqrt() if p == 2.0 else s ** (1.0 / p)
        return torch.where(zero, torch.zeros_like(s), root)
    return s.sqrt() if p == 2.0 else s ** (1.0 / p)


def _nan_positions(x: torch.Tensor) -> torch.Tensor:
    """-flat position at NaN cells, -inf elsewhere: its max is the first NaN in row-major order
    (torch's max pools report the *last* NaN of a window)."""
    plane = x.shape[2:]
    dtype = torch.float32 if math.prod(plane) < 2**24 else torch.float64
    neg_pos = -torch.arange(math.prod(plane), dtype=dtype, device=x.device).view(plane)
    return torch.where(torch.isnan(x), neg_pos, torch.tensor(-math.inf, dtype=dtype,
                                                             device=x.device))


def _max_pool(xc: torch.Tensor, route: _Route, lowest: float | int):
    spec = route.plan.spec
    want_idx = spec.return_indices
    k, s, d = spec.window, spec.stride, spec.dilation
    pad = route.padding if route.native else (0,) * spec.ndim
    ceil = spec.ceil_mode and route.native

    def run(t: torch.Tensor):
        if not route.native:
            t = F.pad(t, route.torch_pads, value=lowest)
        kk, ss, pp, dd = k, s, pad, d
        lifted = spec.ndim == 1 and (not t.dtype.is_floating_point or not t.is_contiguous())
        if lifted:
            t, kk, ss, pp, dd = _lift(t, k, s, pad, d, fill=(1, 1, 0, 1))
        fmt = _CHANNELS_LAST.get(t.dim())
        back = None
        if t.dtype in (torch.int8, torch.uint8) and fmt is not None and (
                t.is_contiguous(memory_format=fmt) or not t.is_contiguous()):
            # torch's channels_last int8 kernels index planes with int8 (fail above 127 cells)
            t = t.clone(memory_format=torch.contiguous_format)
        elif fmt is not None and t.device.type == "cpu" and t.is_contiguous() and (
                t.dtype.is_floating_point and not t.is_contiguous(memory_format=fmt)):
            # torch's CPU max pool is several times faster in channels_last memory format,
            # conversion included; the result goes back to the caller's format
            t, back = t.contiguous(memory_format=fmt), torch.contiguous_format
        out = _MAX[t.dim() - 2](t, kk, ss, pp, dd, ceil_mode=ceil, return_indices=want_idx)
        if back is not None:
            out = tuple(o.contiguous() for o in out) if want_idx else out.contiguous()
        if lifted:
            out = tuple(o.squeeze(2) for o in out) if want_idx else out.squeeze(2)
        return out

    if not want_idx:
        return run(xc), None
    y, idx = run(xc)
    if not route.native:
        idx = route.const("remap", route.remap, idx, torch.int64)[idx]
    # A maximum equal to the lowest value ties with every cell (padding included) and torch's
    # index for it is unreliable (3-D kernels drop the depth term): the first real cell wins.
    first = route.const("first_real", route.first_real, idx, torch.int64)
    idx = torch.where(y == lowest, first, idx)
    if xc.dtype.is_floating_point and _has_nan(y):
        _, nan_idx = run(_nan_positions(xc))
        if not route.native:
            nan_idx = route.const("remap", route.remap, idx, torch.int64)[nan_idx]
        idx = torch.where(torch.isnan(y), nan_idx, idx)
    return y, idx


def _sum_pool(xc: torch.Tensor, route: _Route) -> torch.Tensor:
    plan, spec = route.plan, route.plan.spec
    half = xc.dtype in _HALF
    if route.native and not (half and spec.ndim == 3 and xc.device.type == "cpu"):
        # avg, divisor rule included (torch's CPU avg_pool3d has no float16/bfloat16 kernel)
        return _AVG[spec.ndim](xc, spec.window, spec.stride, route.padding,
                               ceil_mode=spec.ceil_mode, count_include_pad=spec.count_include_pad)
    t = xc.to(torch.float32) if half else xc
    if route.native:
        y = _AVG[spec.ndim](t, spec.window, spec.stride, route.padding,
                            ceil_mode=spec.ceil_mode, count_include_pad=spec.count_include_pad)
        return y.to(xc.dtype)
    if spec.mode == "lp":
        t = _power(t, spec.p)
    divisor = plan.uniform_divisor if spec.mode == "avg" else 1
    if route.undilated:
        k, s = spec.window, spec.stride
        pad = route.padding if route.implicit_sum else (0,) * spec.ndim
        ceil = spec.ceil_mode and route.implicit_sum
        if not route.implicit_sum:
            t = F.pad(t, route.torch_pads)
        if spec.ndim == 1:
            t, k, s, pad = _lift(t, k, s, pad, fill=(1, 1, 0))
        total = _AVG[t.dim() - 2](t, k, s, pad, ceil_mode=ceil, count_include_pad=True,
                                  divisor_override=divisor or 1)
        if spec.ndim == 1:
            total = total.squeeze(2)
        if divisor:
            divisor = 1
    else:
        total = _strided_sum(F.pad(t, route.torch_pads), plan)
    if spec.mode == "lp":
        y = _root(total, spec.p)
    elif divisor == 1:
        y = total
    elif divisor:
        y = total / divisor
    else:  # windows differ (or are empty: 0 / 0 is NaN, as the contract says)
        y = total / route.const("divisor", lambda: plan.divisor_map, total, total.dtype)
    return y.to(xc.dtype)


def _strided_sum(t: torch.Tensor, plan: PoolPlan) -> torch.Tensor:
    """Sum over dilated windows of an explicitly padded input: one strided slice per tap,
    one spatial dim at a time (a window is a product, so the sum is separable)."""
    spec = plan.spec
    for d in range(spec.ndim):
        axis, s, dil, n_out = 2 + d, spec.stride[d], spec.dilation[d], plan.out_size[d]
        taps = [t.narrow(axis, j * dil, (n_out - 1) * s + 1) for j in range(spec.window[d])]
        if s > 1:
            index = [slice(None)] * t.dim()
            index[axis] = slice(None, None, s)
            taps = [tap[tuple(index)] for tap in taps]
        total = taps[0]
        for tap in taps[1:]:
            total = total + tap
        t = total
    return t


def _adaptive_gather_max(xc: torch.Tensor, plan: AdaptivePlan):
    """Adaptive max by gather-and-reduce (torch's adaptive max pools take floats only).

    The last spatial dim is reduced first, so the surviving index is the first maximum of the
    whole bin in row-major order."""
    spec = plan.spec
    plane = plan.in_size
    pos = torch.arange(math.prod(plane), device=xc.device).view(plane).expand(xc.shape)
    out = xc
    for d in reversed(range(spec.ndim)):
        axis = 2 + d
        index, _ = plan.gather(d)  # invalid slots repeat the bin's first cell: harmless for max
        flat = torch.as_tensor(index.ravel(), device=xc.device)
        taken = out.index_select(axis, flat).unflatten(axis, index.shape)
        taken_pos = pos.index_select(axis, flat).unflatten(axis, index.shape)
        out, pick = taken.max(dim=axis + 1)
        pos = taken_pos.gather(axis + 1, pick.unsqueeze(axis + 1)).squeeze(axis + 1)
    return out, pos


BACKEND = TorchBackend()
