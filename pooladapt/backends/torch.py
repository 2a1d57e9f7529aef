"""The PyTorch backend: ``F.*pool*d`` wherever it expresses the plan, exact emulation elsewhere.

The plain translation. Every op runs on a channels-first *view* of the input (``permute``, no
copy): a channels_last tensor becomes an NC* tensor in torch's channels_last memory format,
which torch's CPU kernels pool directly. torch pads symmetrically, at most half the window;
padding it on both sides by the plan's low pads (with its ceil mode, cropping extra windows)
gives the plan's windows for max, and for avg whenever the padding is not counted or is
symmetric, so ``same`` is native there. Elsewhere: avg/lp sum with
``avg_pool(divisor_override=...)`` (on an explicitly zero-padded input where needed) and divide
by the plan's divisor map; max pads explicitly with the dtype's lowest value; avg/lp dilation
sums strided slices. Per-plan constants live in a cached :class:`_Route`, a compile-time
constant under ``torch.compile`` (``fullgraph=True`` works, dynamic sizes are specialised).
Indices are fixed where torch's differ from the contract (the first NaN of a window, not the
last; the first real cell of a window whose maximum is the lowest value). Gradients are
torch's: they equal the canonical ones except in those two degenerate cases (a window with
several NaNs, and an all -inf window in torch's channels_last 3-D kernel).

Speed routes (``BACKEND.speed_routes``, fenced at the end of the module; thresholds in
:data:`TUNING`, docs/benchmarks.md) compute the same plan faster on the CPU. Each is asked for
with ``config.take_route`` only where it is exact, and only in eager calls (a compiler picks
its own kernels, and a decision traced into a graph would outlive the switch); nothing cached
holds a decision. ``pa.speed_routes("off")`` leaves the plain translation.

* ``torch.separable_max``: a max without indices or a recorded gradient as one max over
  window taps per spatial dim, each tap a strided slice combined by ``torch.maximum`` (no
  copy, no padding; several times faster than torch's NCHW kernel). ``torch.maximum`` would
  split a tie's gradient, hence no autograd.
* ``torch.unfold_max``: in that max, a dim whose windows lie inside the input reduces them in
  one ``unfold`` + ``amax`` (far fewer thread-pool rounds for many taps).
* ``torch.channels_last_max``: a max of an NC* tensor in contiguous format pooled in
  channels_last memory format, converted back (torch's CPU kernel vectorises over channels).
* ``torch.unit_channel_view``: a one-channel channels_last input viewed with NCHW strides
  (torch reads the permuted view as channels_last, whose kernel starts worker threads).
* ``torch.lift_1d_max``: a 1-D max pooled as 2-D with a unit height (torch's 1-D max pool
  copies strided input, its 2-D one reads it in place).
* ``torch.index_fixup_check``: one reduction over the pooled values says whether the index
  fix-ups (NaN, lowest value) can apply; they are skipped where not (a sync off the CPU).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pooladapt import config
from pooladapt.backends.base import EMULATED, FEATURES, NATIVE, Backend
from pooladapt.spec import (
    AdaptivePlan,
    AdaptiveSpec,
    GlobalSpec,
    PoolPlan,
    PoolSpec,
    UnpoolSpec,
    resolve_adaptive,
    resolve_plan,
)

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_MAX_OP = {1: torch.max_pool1d, 2: torch.max_pool2d, 3: torch.max_pool3d}  # no Python wrapper
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_ADAPTIVE = {("max", 1): F.adaptive_max_pool1d, ("max", 2): F.adaptive_max_pool2d,
             ("max", 3): F.adaptive_max_pool3d, ("avg", 1): F.adaptive_avg_pool1d,
             ("avg", 2): F.adaptive_avg_pool2d, ("avg", 3): F.adaptive_avg_pool3d}
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
_HALF = (torch.float16, torch.bfloat16)
_INT8 = (torch.int8, torch.uint8)
# torch pools none of these: widen to a signed type that holds every value, order kept.
_UNSIGNED_WIDE = {torch.uint16: torch.int32, torch.uint32: torch.int64}
_SAME_SIZE_SIGNED = {torch.uint16: torch.int16, torch.uint32: torch.int32,
                     torch.uint64: torch.int64}
_INT64_MIN = -(2**63)
_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)

SEPARABLE = "torch.separable_max"
UNFOLD = "torch.unfold_max"
CHANNELS_LAST = "torch.channels_last_max"
UNIT_CHANNEL = "torch.unit_channel_view"
LIFT_1D = "torch.lift_1d_max"
FIXUP_CHECK = "torch.index_fixup_check"


@dataclass(frozen=True)
class Tuning:
    """Where the speed routes pay on the CPU (docs/benchmarks.md); ``auto`` reads these."""

    separable_min: int = 1 << 15  # cells from which the separable max beats torch's max pool
    vector_channels: int = 4  # channels innermost and this many: torch's kernel vectorises
    unfold_taps: int = 4  # taps of a dim from which unfolding beats a maximum per tap
    channels_last_min: int = 1 << 16  # cells from which a memory-format change pays...
    channels_last_channels: int = 8  # ...given this many channels


TUNING = Tuning()
Routes = config.SpeedRoutes | None  # an eager call's setting; None while torch.compile traces


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


_compiling = torch.compiler.is_compiling  # (no wrapper: a tiny eager call pays for each call)


def _torch_pads(pads: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    return tuple(v for lo, hi in reversed(pads) for v in (lo, hi))


class _Route:
    """What one plan needs from torch, decided once: native call or emulation, and constants
    (built eagerly on the CPU, so a compiled graph only reads them). No speed-route decision
    is kept here: the switch may change between calls."""

    def __init__(self, plan: PoolPlan) -> None:
        spec = plan.spec
        self.plan = plan
        # torch pads symmetrically, at most half the window: with the plan's low pads on both
        # sides (and torch's ceil mode where needed) its windows start where the plan's do and
        # hold the same input cells; extra windows at the end are cropped
        lows = tuple(lo for lo, _ in plan.pads)
        half_window = all(lo <= k // 2 for lo, k in zip(lows, spec.window))
        ceil, crop = _torch_windows(plan, lows) if (
            half_window and not plan.all_padding_windows) else (None, False)
        implicit = ceil is not None
        # avg_pool3d rejects a window larger than the unpadded input, whatever the padding
        fits = all(k <= n for k, n in zip(spec.window, plan.in_size))
        self.undilated = all(d == 1 for d in spec.dilation)
        # torch's count_include_pad counts the padding it adds itself: both sides alike
        same_divisor = not spec.count_include_pad or plan.symmetric_pads
        self.native = implicit and (spec.mode == "max" or (
            spec.mode == "avg" and self.undilated and fits and same_divisor))
        # lp and other avg sum with avg_pool(divisor_override=...) and implicit zero padding
        # where it serves, else on explicitly padded input; dilation sums by strided slices
        self.implicit_sum = implicit and fits
        self.padding = lows if implicit else (0,) * spec.ndim
        self.ceil = bool(ceil)
        self.crop = ((slice(None),) * 2 + tuple(slice(0, o) for o in plan.out_size)
                     if implicit and crop else None)
        self.max_args = (spec.window, spec.stride, self.padding if self.native else
                         (0,) * spec.ndim, spec.dilation, self.ceil and self.native)
        self.max_args_2d = tuple((f, *a) for f, a in zip((1, 1, 0, 1), self.max_args[:4])) + (
            self.max_args[4],)
        # plain copies of plan properties (torch.compile reads fields, not properties)
        self.total_pads = plan.total_pads
        self.torch_pads = _torch_pads(plan.total_pads)
        self.channels_first = spec.channels_first
        self.uniform_divisor = plan.uniform_divisor
        # constants, separable per spatial dim (small tuples a compiled graph can embed)
        self.divisor = plan.counts if spec.mode == "avg" and not plan.uniform_divisor else None
        self.first_real = _first_real(plan) if spec.return_indices else None
        self.indices = spec.return_indices
        self.separable = _separable_taps(plan) if spec.mode == "max" else None
        nd = spec.ndim
        # NC* <-> the caller's channels_last layout (permute is cheaper than movedim)
        self.perms = None if spec.channels_first else (
            (0, nd + 1, *range(1, nd + 1)), (0, *range(2, nd + 2), 1))
        self.unit_channel = (1, *plan.in_size)
        # a float max torch expresses in one call (see _auto_small_max)
        self.fast = (_MAX_OP[nd], self.max_args) if (
            spec.mode == "max" and self.native and not self.indices and self.crop is None
            and nd > 1) else None
        self.built: dict[Any, torch.Tensor] = {}


def _torch_windows(plan: PoolPlan, lows: tuple[int, ...]) -> tuple[bool | None, bool]:
    """(torch ceil_mode, crop) with which torch's pool padded by ``lows`` on both sides
    computes at least the plan's windows; (None, False) if it cannot."""
    spec = plan.spec
    for ceil in (False, True):
        counts = []
        for n, lo, ext, s in zip(plan.in_size, lows, spec.extent, spec.stride):
            span = n + 2 * lo - ext
            if span < 0:
                return None, False
            out = (-(-span // s) if ceil else span // s) + 1
            if ceil and (out - 1) * s >= n + lo:
                out -= 1
            counts.append(out)
        if all(c >= o for c, o in zip(counts, plan.out_size)):
            return ceil, counts != list(plan.out_size)
    return None, False


def _const(route: _Route, name: str, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Route constant ``name`` as a tensor of the output's spatial shape on ``like``'s device
    (a function, not a method: torch.compile cannot call methods of a constant object)."""
    per_dim = getattr(route, name)
    if _compiling():
        return _outer(per_dim, like.device, dtype, name == "divisor")
    key = (name, like.device, dtype)
    t = route.built.get(key)
    if t is None:
        t = route.built[key] = _outer(per_dim, like.device, dtype, name == "divisor")
    return t


def _outer(per_dim: tuple[tuple[int, ...], ...], device: torch.device, dtype: torch.dtype,
           product: bool) -> torch.Tensor:
    """Broadcast one small vector per spatial dim into a full spatial map: their product
    (divisors) or their sum clamped at -1 (flat indices, negative meaning none)."""
    out = None
    ndim = len(per_dim)
    for d, values in enumerate(per_dim):
        v = torch.tensor(values, device=device, dtype=dtype).view(
            [-1 if i == d else 1 for i in range(ndim)])
        out = v if out is None else (out * v if product else out + v)
    return out if product else out.clamp(min=-1)


def _first_real(plan: PoolPlan) -> tuple[tuple[int, ...], ...]:
    """Per dim and output cell: the flat-index term of the window's first real cell (its
    coordinate times the dim's plane stride), or a large negative number where there is none;
    summed over dims this is the first real cell's flat index, negative for all padding."""
    spec = plan.spec
    none = -math.prod(plan.in_size) - 1
    per_dim = []
    for d, n in enumerate(plan.in_size):
        stride = math.prod(plan.in_size[d + 1:])
        terms = []
        for start in plan.window_starts(d):
            taps = [start + t * spec.dilation[d] for t in range(spec.window[d])]
            first = next((c for c in taps if 0 <= c < n), None)
            terms.append(none if first is None else first * stride)
        per_dim.append(tuple(terms))
    return tuple(per_dim)


_ROUTES: dict[int, _Route] = {}
_SPEC_ROUTES: dict[tuple[int, torch.Size], _Route] = {}


@torch.compiler.assume_constant_result
def _route(plan: PoolPlan) -> _Route:
    """The cached route of a plan (plans are cached by the spec module, so identity holds);
    a compile-time constant for torch.compile."""
    route = _ROUTES.get(id(plan))
    if route is None or route.plan is not plan:
        if len(_ROUTES) > 4096:
            _ROUTES.clear()
        route = _ROUTES[id(plan)] = _Route(plan)
    return route


@torch.compiler.assume_constant_result
def _route_for(spec: PoolSpec, shape: tuple[int, ...]) -> _Route:
    return _route(spec.plan(shape))


# torch.compile cannot pass a plan it built while tracing to a constant-result function:
# such calls pass the spec's fields and the spatial size, and rebuild (cached) eagerly.
def _fields(spec: Any) -> tuple:
    return tuple(getattr(spec, name) for name in spec.__dataclass_fields__)


@torch.compiler.assume_constant_result
def _route_by_fields(fields: tuple, in_size: tuple[int, ...]) -> _Route:
    return _route(resolve_plan(PoolSpec(*fields), in_size))


@torch.compiler.assume_constant_result
def _gather_by_fields(fields: tuple, in_size: tuple[int, ...]):
    """Per spatial dim: flat gather indices and their (out, max_bin) shape (constants)."""
    plan = resolve_adaptive(AdaptiveSpec(*fields), in_size)
    return tuple((index.ravel().tolist(), index.shape) for index, _ in
                 (plan.gather(d) for d in range(plan.spec.ndim)))


def static_shape(x: torch.Tensor, spatial_axes: tuple[int, ...]) -> tuple[int, ...]:
    """``x``'s shape for a plan: concrete spatial sizes (operator.index makes torch.compile
    specialise a dynamic one), 1 for batch and channels, which no plan depends on (so they
    may stay dynamic)."""
    return tuple(operator.index(s) if a in spatial_axes else 1 for a, s in enumerate(x.shape))


def _lift(x: torch.Tensor, *params: tuple[int, ...], fill: tuple[int, ...]):
    """1-D -> 2-D with a unit height (torch has no 1-D int max pool or divisor_override)."""
    return (x.unsqueeze(2),) + tuple((f,) + p for p, f in zip(params, fill))


class TorchBackend(Backend):
    name = "torch"
    framework = "torch"
    supports_autograd = True
    known_deviations: dict[str, str] = {}
    speed_routes = (SEPARABLE, UNFOLD, CHANNELS_LAST, UNIT_CHANNEL, LIFT_1D, FIXUP_CHECK)

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

    def pool(self, x: torch.Tensor, plan: PoolPlan):
        if _compiling():
            return _run_pool(x, _route_by_fields(_fields(plan.spec), plan.in_size), None)
        route = _ROUTES.get(id(plan))
        if route is None or route.plan is not plan:
            route = _route(plan)
        return _eager(x, route, config.get_speed_routes())

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
        if xc.shape[1] == 0:  # torch's pools reject zero channels: nothing to compute
            y = xc.new_zeros((*xc.shape[:2], *plan.out_size))
            idx = y.long()
        elif spec.mode == "avg":
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
                routes = None if _compiling() else config.get_speed_routes()
                if not _fixup_check(y, routes) or bool(torch.isnan(y).any()):
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
        flat_i = ic.reshape(n, c, math.prod(yc.shape[2:])).long()
        if not _compiling() and flat_i.numel() and int(flat_i.max()) >= size:
            raise ValueError(f"an index ({int(flat_i.max())}) is outside the output plane "
                             f"{out_size!r}")
        # negative indices (all-padding windows) land in a spare slot that is cut off
        flat_i = torch.where(flat_i < 0, size, flat_i)
        signed = _SAME_SIZE_SIGNED.get(yc.dtype)  # torch scatters no uint16/32/64: move bits
        src = yc.reshape(flat_i.shape)
        src = src if signed is None else src.view(signed)
        out = src.new_zeros((n, c, size + 1)).scatter(2, flat_i, src)
        out = out[:, :, :size].reshape(n, c, *out_size)
        if signed is not None:
            out = out.view(yc.dtype)
        return out if cf else out.movedim(1, -1)


def pool_with_spec(x: torch.Tensor, spec: PoolSpec):
    """Pool a torch tensor with a built spec (the layers' path: one cached lookup, no dispatch).

    The shape is validated by the spec the first time it is seen."""
    if _compiling():
        return _run_pool(x, _route_for(spec, static_shape(x, spec.spatial_axes)), None)
    key = (id(spec), x.shape)
    route = _SPEC_ROUTES.get(key)
    if route is None or route.plan.spec is not spec:
        if len(_SPEC_ROUTES) > 4096:
            _SPEC_ROUTES.clear()
        route = _SPEC_ROUTES[key] = _route(spec.plan(tuple(x.shape)))
    return _eager(x, route, config.get_speed_routes())


# ---------------------------------------------------------------------------- the translation
# ``routes``: the speed-route setting of an eager call, None while torch.compile traces.


def _eager(x: torch.Tensor, route: _Route, routes: config.SpeedRoutes):
    if (route.fast is not None and routes.mode == "auto" and 0 < x.numel() < _SMALL
            and x.is_floating_point()):
        return _auto_small_max(x, route)
    return _run_pool(x, route, routes)


def _run_pool(x: torch.Tensor, route: _Route, routes: Routes):
    spec = route.plan.spec
    if x.dtype in _UNSIGNED:
        x, restore, lowest = _widen(x)
    else:
        restore, lowest = None, _lowest(x.dtype)
    xc = x if route.perms is None else _nc_view(x, route, routes)
    if xc.shape[1] == 0:  # torch's pools reject zero channels: nothing to compute
        y = xc.new_zeros((*xc.shape[:2], *route.plan.out_size))
        idx = y.long() if spec.return_indices else None
    elif spec.mode == "max":
        y, idx = _max_pool(xc, route, lowest, routes)
    else:
        y, idx = _sum_pool(xc, route), None
    if restore is not None:
        y = restore(y)
    if route.perms is not None:
        y = y.permute(route.perms[1])
        idx = None if idx is None else idx.permute(route.perms[1])
    return (y, idx) if spec.return_indices else y


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
    if p < 1.0 and x.requires_grad:  # d|x|**p at 0 is inf * 0: the canonical gradient is 0
        a = x.abs()
        zero = a == 0
        return torch.where(zero, torch.zeros_like(a), torch.where(zero, 1.0, a) ** p)
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


def _max_pool(xc: torch.Tensor, route: _Route, lowest: float | int, routes: Routes):
    if not route.indices:
        unfold = _separable_dims(xc, route, routes)
        if unfold is not None:
            return _separable_max(xc, route, lowest, unfold), None
        return _max_call(xc, route, False, lowest, routes), None
    y, idx = _max_call(xc, route, True, lowest, routes)
    if not route.native:
        idx = _unpad_index(idx, route)
    check = _fixup_check(y, routes)
    if check and (y.numel() == 0 or bool(y.amin() > lowest)):  # NaN propagates: no skip
        return y, idx
    # A maximum equal to the lowest value ties with every cell (padding included) and torch's
    # index for it is unreliable (3-D kernels drop the depth term): the first real cell wins.
    idx = torch.where(y == lowest, _const(route, "first_real", idx, torch.int64), idx)
    if xc.dtype.is_floating_point and (not check or bool(torch.isnan(y).any())):
        _, nan_idx = _max_call(_nan_positions(xc), route, True, lowest, routes)
        if not route.native:
            nan_idx = _unpad_index(nan_idx, route)
        idx = torch.where(torch.isnan(y), nan_idx, idx)
    return y, idx


def _max_call(t: torch.Tensor, route: _Route, want_idx: bool, lowest: float | int,
              routes: Routes):
    """One torch max pool of the route's geometry on ``t`` (NC*), padded explicitly where the
    plan needs it."""
    if not route.native:
        t = F.pad(t, route.torch_pads, value=lowest)
    args = route.max_args
    # torch's 1-D max pool takes no integers
    lifted = t.dim() == 3 and (not t.dtype.is_floating_point or _lift_1d(t, routes))
    if lifted:
        t, args = t.unsqueeze(2), route.max_args_2d
    back = False
    if t.dim() > 3:
        fmt = _CHANNELS_LAST[t.dim()]
        if t.dtype in _INT8:
            if routes is None or (t.numel() > 127 and (
                    t.is_contiguous(memory_format=fmt) or not t.is_contiguous())):
                # torch's channels_last int8 kernels index planes with int8: above 127 cells
                # they fail
                t = t.clone(memory_format=torch.contiguous_format)
        elif _channels_last(t, routes):
            t, back = t.contiguous(memory_format=fmt), True
    crop = route.crop if route.native else None
    if want_idx:
        out = _MAX[t.dim() - 2](t, *args[:4], ceil_mode=args[4], return_indices=True)
        if back:
            out = tuple(o.contiguous() for o in out)
        if lifted:
            out = tuple(o.squeeze(2) for o in out)
        return out if crop is None else tuple(o[crop] for o in out)
    out = _MAX_OP[t.dim() - 2](t, *args)
    if back:
        out = out.contiguous()
    if lifted:
        out = out.squeeze(2)
    return out if crop is None else out[crop]


def _unpad_index(idx: torch.Tensor, route: _Route) -> torch.Tensor:
    """Flat index into the explicitly padded plane -> flat index into the input plane (a cell
    in the padding is clamped to the border; such maxima are overwritten by the caller)."""
    out = torch.zeros_like(idx)
    stride = 1
    for d in reversed(range(route.plan.spec.ndim)):
        (lo, hi), n = route.total_pads[d], route.plan.in_size[d]
        idx, coord = idx.div(n + lo + hi, rounding_mode="floor"), idx % (n + lo + hi)
        out = out + (coord - lo).clamp(0, n - 1) * stride
        stride *= n
    return out


def _sum_pool(xc: torch.Tensor, route: _Route) -> torch.Tensor:
    plan, spec = route.plan, route.plan.spec
    # float16/bfloat16 sum in float32 (torch's CPU avg_pool3d has no kernel for them at all)
    t = xc.to(torch.float32) if xc.dtype in _HALF and (
        not route.native or (spec.ndim == 3 and xc.device.type == "cpu")) else xc
    if route.native:  # avg, divisor rule included
        y = _AVG[spec.ndim](t, spec.window, spec.stride, route.padding, ceil_mode=route.ceil,
                            count_include_pad=spec.count_include_pad)
        y = y if route.crop is None else y[route.crop]
        return y.to(xc.dtype)
    if spec.mode == "lp":
        t = _power(t, spec.p)
    # avg divides by one number (torch's divisor_override, or after the slice sums) or,
    # where windows differ or are empty (0 / 0 is NaN), by the plan's divisor map
    uniform = route.uniform_divisor if spec.mode == "avg" else 1
    if route.undilated:
        k, s = spec.window, spec.stride
        pad, ceil, crop = route.padding, route.ceil, route.crop
        if not route.implicit_sum:
            t = F.pad(t, route.torch_pads)
            pad, ceil, crop = (0,) * spec.ndim, False, None
        if spec.ndim == 1:
            t, k, s, pad = _lift(t, k, s, pad, fill=(1, 1, 0))
        total = _AVG[t.dim() - 2](t, k, s, pad, ceil_mode=ceil, count_include_pad=True,
                                  divisor_override=uniform or 1)
        if spec.ndim == 1:
            total = total.squeeze(2)
        if crop is not None:
            total = total[crop]
    else:
        total = _strided_sum(F.pad(t, route.torch_pads), plan)
        if uniform and uniform != 1:
            total = total / uniform
    if spec.mode == "lp":
        y = _root(total, spec.p)
    elif not uniform:
        y = total / _const(route, "divisor", total, total.dtype)
    else:
        y = total
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
    # invalid slots repeat the bin's first cell: harmless for max
    gathers = _gather_by_fields(_fields(spec), plan.in_size)
    for d in reversed(range(spec.ndim)):
        axis = 2 + d
        index, shape = gathers[d]
        flat = torch.tensor(index, device=xc.device)
        taken = out.index_select(axis, flat).unflatten(axis, shape)
        taken_pos = pos.index_select(axis, flat).unflatten(axis, shape)
        out, pick = taken.max(dim=axis + 1)
        pos = taken_pos.gather(axis + 1, pick.unsqueeze(axis + 1)).squeeze(axis + 1)
    return out, pos


# ---------------------------------------------------------------------------- speed routes
# Each asks the setting (config.take_route's, read once per call) where the route is exact,
# with the tuning's answer as ``auto``; none runs while torch.compile traces (``routes`` None).


def _auto_small_max(x: torch.Tensor, route: _Route):
    """``auto``'s answer for a float max torch expresses in one call, below the separable and
    channels_last thresholds (``_SMALL``): that call on an NC* view (one channel: the
    unit-channel view), without :func:`_run_pool`'s other steps (a tiny call pays for each)."""
    fn, args = route.fast
    perms = route.perms
    if perms is None:
        return fn(x, *args)
    if x.shape[-1] == 1:
        return fn(x.view(x.shape[0], *route.unit_channel), *args).permute(perms[1])
    return fn(x.permute(perms[0]), *args).permute(perms[1])


_SMALL = min(TUNING.separable_min, TUNING.channels_last_min)


def _nc_view(x: torch.Tensor, route: _Route, routes: Routes) -> torch.Tensor:
    """A channels_last tensor as an NC* view (permuted: torch's channels_last format)."""
    if routes is not None and x.shape[-1] == 1 and routes.take(UNIT_CHANNEL, True):
        # torch reads a one-channel permuted view as channels_last and that kernel starts
        # worker threads even for a few cells: NCHW strides pick its plain kernel
        return x.view(x.shape[0], *route.unit_channel)
    return x.permute(route.perms[0])


def _lift_1d(t: torch.Tensor, routes: Routes) -> bool:
    """Pool this 1-D float NC* tensor as 2-D? (torch's 1-D max pool copies strided input)"""
    return routes is not None and routes.take(LIFT_1D, not t.is_contiguous())


def _channels_last(t: torch.Tensor, routes: Routes) -> bool:
    """Max-pool this NC* tensor (2-D/3-D, not int8, whose channels_last kernels fail) in
    channels_last memory format? torch's CPU kernel vectorises over channels there: from
    ``TUNING.channels_last_channels`` on that pays for both conversions."""
    if routes is None or t.is_contiguous(memory_format=_CHANNELS_LAST[t.dim()]):
        return False
    return routes.take(CHANNELS_LAST, (
        t.is_cpu and t.dtype.is_floating_point and t.is_contiguous()
        and t.numel() >= TUNING.channels_last_min
        and t.shape[1] >= TUNING.channels_last_channels))


def _fixup_check(y: torch.Tensor, routes: Routes) -> bool:
    """May a data check of the pooled values skip the index fix-ups? (off the CPU it syncs)"""
    return routes is not None and routes.take(FIXUP_CHECK, y.is_cpu)


def _separable_dims(t: torch.Tensor, route: _Route, routes: Routes) -> tuple[bool, ...] | None:
    """None: torch's max pool; else the separable max of :func:`_separable_max`, with per dim
    whether it unfolds. Only where no gradient is recorded: ``torch.maximum`` and ``amax``
    split a tie's gradient. It pays on the CPU from ``TUNING.separable_min`` cells, unless
    torch's channels_last kernel can vectorise over the channels; unfolding pays for a dim of
    ``TUNING.unfold_taps`` taps, unless the channels are innermost (the taps are faster)."""
    if routes is None or (t.requires_grad and torch.is_grad_enabled()):
        return None
    auto = (t.is_cpu and t.numel() >= TUNING.separable_min and not (
        t.stride(1) == 1 and t.shape[1] >= TUNING.vector_channels and not t.is_contiguous()))
    separable = routes.take(SEPARABLE, auto)
    unfold_auto = auto and (t.stride(1) != 1 or t.shape[1] == 1)
    unfold = tuple(dim[4] is not None and routes.take(
        UNFOLD, unfold_auto and dim[5] >= TUNING.unfold_taps) for dim in route.separable)
    return unfold if separable or any(unfold) else None


def _separable_taps(plan: PoolPlan) -> tuple:
    """Per spatial dim of an NC* tensor: (axis, output size, up to two taps that reach every
    output, the other taps as (source index, output index), unfold arguments or None, number
    of taps). A tap is one strided slice; the outputs it would read in padding or past the
    input are left out, so no padding is made and a window of padding only keeps the initial
    lowest value. A dim whose taps all stay inside (no padding) may instead unfold."""
    spec = plan.spec
    dims = []
    for d, (n, m) in enumerate(zip(plan.in_size, plan.out_size)):
        axis, s, lo = 2 + d, spec.stride[d], plan.pads[d][0]
        full, rest = [], []
        for j in range(spec.window[d]):
            offset = j * spec.dilation[d] - lo
            first = max(0, -(offset // s))
            last = min(m, (n - 1 - offset) // s + 1)
            if first >= last:
                continue
            start = first * s + offset
            src = (slice(None),) * axis + (slice(start, start + (last - first - 1) * s + 1, s),)
            if first == 0 and last == m and len(full) < 2:
                full.append(src)
            else:
                rest.append((src, (slice(None),) * axis + (slice(first, last),)))
        inside = lo == 0 and len(full) + len(rest) == spec.window[d] and all(
            dst == (slice(None),) * axis + (slice(0, m),) for _, dst in rest)
        unfold = ((m - 1) * s + spec.extent[d], spec.extent[d], s, spec.dilation[d]) if (
            inside) else None
        dims.append((axis, m, tuple(full), tuple(rest), unfold, spec.window[d]))
    return tuple(dims)


def _separable_max(t: torch.Tensor, route: _Route, lowest: float | int,
                   unfold: tuple[bool, ...]) -> torch.Tensor:
    """Max pool as one max over window taps per spatial dim, outermost first (a window is a
    product, so the max is separable): each tap a strided slice combined by
    ``torch.maximum``, which propagates NaN and keeps its first argument on a tie, or where
    ``unfold[d]``, the dim's windows unfolded and reduced by ``amax``. No layout copy."""
    last = len(route.separable) - 1
    for d, (axis, size, full, rest, unfold_args, _) in enumerate(route.separable):
        if unfold[d]:
            span, extent, s, dil = unfold_args
            windows = t.narrow(axis, 0, span).unfold(axis, extent, s)
            t = torch.amax(windows if dil == 1 else windows[..., ::dil], -1,
                           out=_new_like(t, axis, size))
            continue
        if len(full) == 2:
            out = torch.maximum(t[full[0]], t[full[1]])
        elif full:  # a view if nothing writes into it and a later pass makes the output
            out = t[full[0]].clone() if rest or d == last else t[full[0]]
        else:  # some outputs see no tap: they keep the lowest value
            out = _new_like(t, axis, size).fill_(lowest)
        for src, dst in rest:
            view = out[dst]
            torch.maximum(view, t[src], out=view)
        t = out
    return t



def _new_like(t: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """An empty tensor of ``t``'s shape but ``size`` along ``axis``, in ``t``'s dim order (a
    reduction would make it contiguous: channels_last input must give channels_last output)."""
    order = sorted(range(t.dim()), key=t.stride, reverse=True)
    shape = [size if i == axis else t.shape[i] for i in order]
    return t.new_empty(shape).permute([order.index(i) for i in range(t.dim())])


BACKEND = TorchBackend()
