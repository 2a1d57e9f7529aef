"""The MXNet backend (1.9.1): ``mx.nd`` arrays and ``mx.np`` ndarrays, autograd, ``hybridize``.

The plain translation: ``nd.Pooling`` wherever it expresses the plan (float input, no
dilation; lp: p of 1, 2 or 3, on ``|x|``), in the spec's own layout. Max takes asymmetric,
'same' and ceil-mode windows from native pads, the ``'full'`` convention and a crop (MXNet has
no drop rule). MXNet max pooling suppresses NaN and turns -inf into the dtype's lowest finite
value: a global average pooling finds the batch rows holding a NaN or an infinity, and only
those are restored from a pooled code map (the taps under autograd, for the gradient); a
hybridized graph cannot be checked and always restores. Indices are each window's first tap
equal to the native max. avg is a window sum divided by the count. Everything else is
emulated: explicit padding (-inf or the integer minimum for max, 0 for sums), a VALID native
pool, the plan's divisor, and a loop over the window's taps (strided slices) for dilation
and integers. NumPy input of an integer dtype MXNet has no arrays of (int16, uint16, uint32,
uint64) pools as a wider dtype in the same order (:class:`StandIn`).

Speed routes (``BACKEND.speed_routes``; thresholds in ``TUNING``; ``pa.speed_routes`` turns
them off or forces them) compute the same plan faster: max in views that MXNet's own kernel
takes faster than oneDNN's (channels in the batch, 1-d as 2-d, channels last as channels
first), separable channels-last windows, float16 through float32, NaN/inf checks read on the
host, and oneDNN's avg kernel, which divides (MXNet's own one is an ulp off).

All graph code takes the op namespace ``F`` (``mx.nd`` or ``mx.sym``), so the same code runs
inside a hybridized Gluon block (``pooladapt.layers.mxnet``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mxnet as mx
import numpy as np

from pooladapt.backends.base import EMULATED, NATIVE, Backend
from pooladapt.config import take_route
from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan, UnpoolSpec, make_spec

nd = mx.nd

_LAYOUTS = {(1, True): "NCW", (2, True): "NCHW", (3, True): "NCDHW",
            (1, False): "NWC", (2, False): "NHWC", (3, False): "NDHWC"}
_NATIVE_LP = (1.0, 2.0, 3.0)
_BF16_REASON = ("MXNet 1.9.1 has no bfloat16 arrays (NumPy bfloat16 input raises TypeError); "
                "cast to float32")
# NumPy dtypes MXNet 1.9.1 has arrays of; the integers it lacks pool through a wider one
_MX_DTYPES = frozenset(("float16", "float32", "float64", "uint8", "int8", "int32", "int64",
                        "bool"))
_WIDER = {"int16": "int32", "uint16": "int32", "uint32": "int64", "uint64": "int64"}

FEW_CHANNELS = "mxnet.few_channels"
FLAT_1D = "mxnet.flat_1d"
CHANNELS_LAST_VIEW = "mxnet.channels_last_view"
SEPARABLE = "mxnet.separable"
HALF_AS_FLOAT = "mxnet.float16_as_float32"
PYTHON_CHECK = "mxnet.python_check"
HOST_CHECK = "mxnet.host_check"
ONEDNN_AVG = "mxnet.onednn_avg"
ROUTES = (FEW_CHANNELS, FLAT_1D, CHANNELS_LAST_VIEW, SEPARABLE, HALF_AS_FLOAT, PYTHON_CHECK,
          HOST_CHECK, ONEDNN_AVG)


@dataclass
class Tuning:
    """Where each speed route pays on a CPU (``auto``). The views pay only where oneDNN runs
    the plain call (MXNet's own kernels are as fast on the plain layout)."""

    few_channels: int = 8  # channels-first max below this many channels: (N*C, 1, ...)
    separable_cells: int = 16  # channels-last 2-d max windows of this many cells: two passes
    host_check: int = 1 << 20  # elements up to which reading x beats a pooling as NaN check
    python_check: int = 256  # elements up to which that read is summed in Python


TUNING = Tuning()


@functools.lru_cache(maxsize=1)
def onednn_pools() -> bool:
    """Whether oneDNN runs float32 channels-first pooling in this process (the build has it
    and ``MXNET_MKLDNN_ENABLED`` is not 0), told by what it computes: an average of integers
    whose sum is exact in any order, which oneDNN divides once and MXNet's own kernel sums
    cell by cell as x / count, off by an ulp."""
    probe = nd.array(np.array([85, 63, 51, 26, 30, 4, 7, 1, 17], np.float32).reshape(1, 1, 3, 3))
    with mx.autograd.pause():
        got = nd.Pooling(probe, kernel=(3, 3), pool_type="avg").asnumpy().item()
    return got == float(np.float32(284) / np.float32(9))


def _shallow(cls: type, a: Any) -> Any:
    """A new handle to a's array as an instance of ``cls`` (an ``nd.NDArray`` subclass)."""
    handle = mx.base.NDArrayHandle()
    mx.base.check_call(mx.base._LIB.MXShallowCopyNDArray(a.handle, ctypes.byref(handle)))
    return cls(handle=handle, writable=a.writable)


class IndexNDArray(nd.NDArray):
    """An ``mx.nd.NDArray`` of indices that accepts weak references (a plain one does not),
    so that ``max_unpool`` can default to the plane these indices came from."""


def _weakrefable(a: Any) -> IndexNDArray:
    return _shallow(IndexNDArray, a)


_TOP = np.uint64(1 << 63)


class StandIn(nd.NDArray):
    """NumPy input of an integer dtype MXNet has no arrays of (int16, uint16, uint32, uint64)
    given with ``backend="mxnet"``: its values in a wider dtype MXNet has, in the same order
    (uint64 as int64 with the top bit flipped), for max pooling, indices and unpool.
    ``to_numpy`` gives the original dtype back (padding's minimum becomes the dtype's)."""

    source: np.dtype
    encoding: str  # "widened"; uint64: "flipped" (order kept) or "bits" (unpool: 0 kept)

    @classmethod
    def encode(cls, a: np.ndarray, encoding: str | None = None) -> StandIn:
        encoding = encoding or ("flipped" if a.dtype == np.uint64 else "widened")
        if encoding == "flipped":
            values = (a ^ _TOP).view(np.int64)
        elif encoding == "bits":
            values = np.ascontiguousarray(a).view(np.int64)
        else:
            values = a.astype(_WIDER[a.dtype.name])
        return cls._of(nd.array(values, dtype=values.dtype), a.dtype, encoding)

    @classmethod
    def _of(cls, values: Any, source: np.dtype, encoding: str) -> StandIn:
        out = _shallow(cls, values)
        out.source, out.encoding = source, encoding
        return out

    def like(self, values: Any) -> StandIn:
        """``values`` (computed from this one, same encoding) as a stand-in."""
        return StandIn._of(values, self.source, self.encoding)

    def decode(self) -> np.ndarray:
        v = self.asnumpy()
        if self.encoding == "flipped":
            return v.view(np.uint64) ^ _TOP
        if self.encoding == "bits":
            return v.view(np.uint64)
        info = np.iinfo(self.source)
        return np.clip(v, info.min, info.max).astype(self.source)


def _is_int(dtype: np.dtype) -> bool:
    return dtype.kind in "iu"


def _lowest(dtype: np.dtype) -> float:
    """Value of a padded cell for max: never wins."""
    return int(np.iinfo(dtype).min) if _is_int(dtype) else -math.inf


def _acc_dtype(dtype: np.dtype) -> str:
    return "float64" if dtype == np.float64 else "float32"


def _is_symbol(F: Any) -> bool:
    return F is mx.sym


def _bcast_shape(spec, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of a per-spatial-position constant that broadcasts against the spec's layout."""
    return (1, 1, *sizes) if spec.data_format == "channels_first" else (1, *sizes, 1)


def _fill(F: Any, x: Any, axis: int, count: int, value: float) -> Any:
    edge = F.slice_axis(x, axis=axis, begin=0, end=1)
    # MXNet rounds large scalars (1e300 == 1e300 is false there); +-inf and the integer
    # minima (powers of two) survive exactly
    fill = F.zeros_like(edge) if value == 0 else F.ones_like(edge) * value
    return F.repeat(fill, repeats=count, axis=axis)


def _pad(F: Any, x: Any, spec, pads, value: float) -> Any:
    """Pad the spatial axes by ``(low, high)`` cells of ``value``, any rank and layout."""
    for axis, (lo, hi) in zip(spec.spatial_axes, pads):
        if lo or hi:
            parts = [_fill(F, x, axis, lo, value)] if lo else []
            parts.append(x)
            if hi:
                parts.append(_fill(F, x, axis, hi, value))
            x = F.concat(*parts, dim=axis)
    return x


def _native(F: Any, x: Any, plan: PoolPlan, pool_type: str, explicit: bool, **kw) -> Any:
    """``Pooling`` of x; ``explicit``: x is already padded by ``plan.total_pads`` (VALID)."""
    spec = plan.spec
    ceil = any(plan.ceil_extra) and not explicit
    y = F.Pooling(x, kernel=spec.window, stride=spec.stride, pool_type=pool_type,
                  pad=(0,) * spec.ndim if explicit else tuple(lo for lo, _ in plan.pads),
                  pooling_convention="full" if ceil else "valid",
                  layout=_LAYOUTS[spec.ndim, spec.channels_first], **kw)
    if not ceil or (not _is_symbol(F) and tuple(y.shape[a] for a in spec.spatial_axes)
                    == plan.out_size):
        return y
    # 'full' has no drop rule: crop the windows that would start in the high-side padding.
    end = [None] * (spec.ndim + 2)
    for axis, size in zip(spec.spatial_axes, plan.out_size):
        end[axis] = size
    return F.slice(y, begin=(None,) * len(end), end=tuple(end))


def _tap_slices(F: Any, xp: Any, plan: PoolPlan):
    """One strided slice of the fully padded input per window tap, in row-major tap order."""
    spec = plan.spec
    rank = spec.ndim + 2
    offsets = [[t * spec.dilation[d] for t in range(spec.window[d])] for d in range(spec.ndim)]
    for offs in itertools.product(*offsets):
        begin, end, step = [None] * rank, [None] * rank, [None] * rank
        for d, axis in enumerate(spec.spatial_axes):
            begin[axis] = offs[d]
            end[axis] = offs[d] + (plan.out_size[d] - 1) * spec.stride[d] + 1
            step[axis] = spec.stride[d]
        yield F.slice(xp, begin=tuple(begin), end=tuple(end), step=tuple(step))


@functools.lru_cache(maxsize=256)
def _tap_index_maps(plan: PoolPlan) -> np.ndarray:
    """Per tap, the per-plane flat input index every window reads there (-1 in padding);
    read-only (cached)."""
    spec = plan.spec
    coords = []
    for d in range(spec.ndim):
        o = np.arange(plan.out_size[d]) * spec.stride[d] - plan.pads[d][0]
        coords.append([o + t * spec.dilation[d] for t in range(spec.window[d])])
    maps = []
    for per_dim in itertools.product(*coords):
        grids = np.meshgrid(*per_dim, indexing="ij")
        inside = np.all([(g >= 0) & (g < n) for g, n in zip(grids, plan.in_size)], axis=0)
        flat = np.ravel_multi_index(tuple(np.clip(g, 0, n - 1) for g, n in
                                          zip(grids, plan.in_size)), plan.in_size)
        maps.append(np.where(inside, flat, -1).reshape(_bcast_shape(spec, plan.out_size)))
    maps = np.stack(maps).astype(np.float64)
    maps.flags.writeable = False
    return maps


def _better(F: Any, cand: Any, best: Any, floating: bool) -> Any:
    """1 where ``cand`` replaces ``best``: strictly greater (ties keep the first), first NaN."""
    win = cand > best
    return win + (cand != cand) * (best == best) if floating else win


@functools.lru_cache(maxsize=256)
def _first_real_maps(plan: PoolPlan) -> np.ndarray:
    """Per tap, 1 where it is the window's first cell of the unpadded input."""
    real = _tap_index_maps(plan) >= 0
    seen = np.logical_or.accumulate(real, axis=0)
    return real & ~np.concatenate([np.zeros_like(seen[:1]), seen[:-1]])


def _first_real(F: Any, x: Any, plan: PoolPlan) -> list[Any]:
    """``_first_real_maps`` as arrays of x's dtype broadcastable against a tap (a symbol
    builds them from a padded plane of ones)."""
    if not _is_symbol(F):
        return [nd.array(m, ctx=x.context, dtype=x.dtype) for m in _first_real_maps(plan)]
    spec = plan.spec
    one = x
    for axis in (0, 1 if spec.channels_first else spec.ndim + 1):
        one = F.slice_axis(one, axis=axis, begin=0, end=1)
    seen, out = None, []
    for real in _tap_slices(F, _pad(F, F.ones_like(one), spec, plan.total_pads, 0), plan):
        out.append(real if seen is None else real * (1 - seen))
        seen = real if seen is None else F.maximum(seen, real)
    return out


def _tap_max(F: Any, x: Any, plan: PoolPlan, dtype: np.dtype, with_indices: bool):
    """Max over the taps of the -inf padded input; optionally per-plane flat indices. A
    window's first real cell beats the padding before it even when equal (-inf, integer
    minimum): it gets the index and the gradient."""
    floating = not _is_int(dtype)
    xp = _pad(F, x, plan.spec, plan.total_pads, _lowest(dtype))
    if with_indices:
        if _is_symbol(F):
            raise NotImplementedError("return_indices needs concrete mx.nd arrays")
        maps = [nd.array(m, ctx=x.context, dtype="float64") for m in _tap_index_maps(plan)]
    first = _first_real(F, x, plan) if plan.has_padding else None
    best = idx = None
    for t, cand in enumerate(_tap_slices(F, xp, plan)):
        if best is None:
            best = cand
            idx = F.broadcast_like(maps[0], cand) if with_indices else None
            continue
        win = _better(F, cand, best, floating)
        if first is not None:
            win = F.broadcast_add(win, first[t])
        if with_indices:
            idx = F.where(win, F.broadcast_like(maps[t], best), idx)
        best = F.where(win, cand, best)
    return (best, F.cast(idx, "int64")) if with_indices else best


@functools.lru_cache(maxsize=512)
def _max_route(plan: PoolPlan) -> tuple:
    """How ``Pooling`` gives the plan's max windows with no padded copy of the input.

    Per dim, a symmetric native pad ``p = lo + m * stride`` (``p < window``) puts a native
    window start on every plan window start; the first ``m`` native windows and any past
    ``out_size`` are cropped. Native windows keep only their real cells (MXNet clips them),
    which is the max of the plan's -inf padded window: each plan window holds a real cell.
    Returns ``(pads, convention, highs, sizes, crop)``: ``highs`` are -inf cells to
    concatenate where no native pad fits, ``sizes`` the native output size, ``crop`` the
    ``(begin, end)`` to keep per dim (None: all of it).
    """
    spec = plan.spec

    def solve(d: int, convention: str) -> tuple[int, int, int] | None:
        k, s, n = spec.window[d], spec.stride[d], plan.in_size[d]
        for p in range(plan.pads[d][0], k, s):
            span = n + 2 * p - k
            count = (span // s if convention == "valid" else -(-span // s)) + 1
            if span >= 0 and count - (p - plan.pads[d][0]) // s >= plan.out_size[d]:
                return p, (p - plan.pads[d][0]) // s, count
        return None

    for convention in ("valid", "full"):
        found = [solve(d, convention) for d in range(spec.ndim)]
        if all(found):
            break
    else:  # pad the high side by hand where no native pad reaches (pads (0, 2), stride 1)
        convention, found = "valid", []
        for d in range(spec.ndim):
            (lo, hi), k, s = plan.total_pads[d], spec.window[d], spec.stride[d]
            span = plan.in_size[d] + hi + 2 * lo - k
            found.append(solve(d, convention) or (lo, 0, span // s + 1))
    highs = tuple(0 if solve(d, convention) else plan.total_pads[d][1]
                  for d in range(spec.ndim))
    pads, begins, sizes = (tuple(f[i] for f in found) for i in range(3))
    crop = None
    if any(begins) or sizes != plan.out_size:
        crop = tuple((b, b + n) for b, n in zip(begins, plan.out_size))
    return pads, convention, highs, sizes, crop


def _max_kw(convention: str, pad: tuple[int, ...]) -> dict[str, Any]:
    """``Pooling``'s max arguments, defaults left out (each one costs a tiny call time)."""
    kw: dict[str, Any] = dict(pool_type="max")
    if convention == "full":
        kw["pooling_convention"] = "full"
    if any(pad):
        kw["pad"] = pad
    return kw


def _max_pool(F: Any, x: Any, spec, kernel, stride, pad, convention: str,
              sizes: tuple[int, ...]) -> Any:
    """Max ``Pooling`` of x with symmetric native pads: a speed route's view, else one call
    in the spec's layout."""
    y = _routed_max_pool(F, x, spec, kernel, stride, pad, convention, sizes)
    if y is not None:
        return y
    kw = _max_kw(convention, pad)
    if not spec.channels_first:
        kw["layout"] = _LAYOUTS[spec.ndim, False]
    return F.Pooling(x, kernel=kernel, stride=stride, **kw)


def _max_windows(F: Any, x: Any, plan: PoolPlan) -> Any:
    """The plan's max windows of x as MXNet computes max (NaN skipped, from the lowest
    finite value): exact for finite input."""
    spec = plan.spec
    pads, convention, highs, sizes, crop = _max_route(plan)
    if any(highs):
        x = _pad(F, x, spec, tuple((0, e) for e in highs), -math.inf)
    y = _max_pool(F, x, spec, spec.window, spec.stride, pads, convention, sizes)
    if crop is None:
        return y
    begin, end = [None] * (spec.ndim + 2), [None] * (spec.ndim + 2)
    for axis, (b, e) in zip(spec.spatial_axes, crop):
        begin[axis], end[axis] = b, e
    return F.slice(y, begin=tuple(begin), end=tuple(end))


@contextlib.contextmanager
def recorded_input(x: Any, copy: bool = True):
    """x ready for max ``Pooling`` whose gradient is recorded. oneDNN's max backward reads the
    argmax its forward stored, but that forward stores none outside training mode, and a
    view (a reshape or slice of another array) makes the forward run MXNet's own kernel,
    which stores none either: wrong cells got the gradient. So the forward runs in training
    mode, and float32 input, which oneDNN pools, is copied (``copy``: it may reach oneDNN)."""
    if not mx.autograd.is_recording():
        yield x
        return
    if copy and x.dtype == np.float32 and onednn_pools():
        x = x.copy()
    if mx.autograd.is_training():
        yield x
        return
    with mx.autograd.train_mode():
        yield x


def _nonfinite_rows(x: Any) -> np.ndarray | None:
    """The batch rows of x holding a NaN or an infinity, None when none does: read on the
    host (speed routes) or found by one global average pooling, where a NaN or an infinity
    makes its plane's mean non-finite (a float32 overflow flags a row too, which only costs
    the exact path)."""
    s = x.shape
    values = _host_check(x)
    if values is None:
        return None
    if values is False:
        view = x if len(s) == 4 else x.reshape((s[0], s[1], math.prod(s[2:-1]), s[-1]))
        with mx.autograd.pause():
            values = nd.Pooling(view, kernel=(1, 1), global_pool=True,
                                pool_type="avg").asnumpy()
    if np.isfinite(values).all():
        return None
    return np.flatnonzero(~np.isfinite(values.reshape(s[0], -1)).all(axis=1))


def _restore(F: Any, x: Any, y: Any, plan: PoolPlan) -> Any:
    """MXNet's max y made canonical: code 1 = a NaN in the window (answer NaN), -1 = only
    -inf (answer -inf, where MXNet gives the lowest finite value), 0 = y is right;
    sqrt(-code) * -inf maps 1 and -1. Under autograd the taps instead, so that the gradient
    of those windows reaches their first NaN or first real -inf cell (a symbol cannot
    tell: its gradient there is 0)."""
    if not _is_symbol(F) and mx.autograd.is_recording():
        return _tap_max(F, x, plan, np.dtype(x.dtype), False)
    code = _max_windows(F, (x != x) - (x == -math.inf), plan)
    return F.where(code, F.sqrt(-code) * -math.inf, y)


def _native_max(F: Any, x: Any, plan: PoolPlan, dtype: np.dtype) -> Any:
    half = dtype == np.float16 and _half_as_float()
    if half:
        x = F.cast(x, "float32")
    if _is_symbol(F):  # a symbol cannot be checked
        y = _restore(F, x, _max_windows(F, x, plan), plan)
        return F.cast(y, "float16") if half else y
    rows = _nonfinite_rows(x)
    if rows is not None and len(rows) == x.shape[0]:  # recorded: the taps, no native max
        y = _restore(F, x, None if mx.autograd.is_recording() else _max_windows(F, x, plan),
                     plan)
    else:
        with recorded_input(x, plan.spec.channels_first) as xr:
            y = _max_windows(F, xr, plan)
        if rows is not None:  # the code map only for the batch rows with a NaN or infinity
            rows = nd.array(rows, ctx=x.context, dtype="int64")
            fixed = _restore(F, nd.take(x, rows), nd.take(y, rows), plan)
            y = nd.contrib.index_copy(y, rows, fixed)
    return F.cast(y, "float16") if half else y


def _native_max_indices(x: Any, plan: PoolPlan, dtype: np.dtype) -> tuple[Any, Any]:
    """Native max, then each window's index: its first tap equal to the max (taps checked
    last to first, a hit overwriting). Exact where x is finite (padding, -inf, never equals
    a finite max); batch rows with a NaN or an infinity take the taps."""
    xf = nd.cast(x, "float32") if dtype == np.float16 and _half_as_float() else x
    rows = _nonfinite_rows(xf)
    if rows is not None and len(rows) == x.shape[0]:
        return _tap_max(nd, x, plan, dtype, True)
    with recorded_input(xf, plan.spec.channels_first) as xr:
        y = _max_windows(nd, xr, plan)
    with mx.autograd.pause():
        xp = _pad(nd, xf, plan.spec, plan.total_pads, -math.inf) if plan.has_padding else xf
        maps = _tap_index_maps(plan).astype(np.int32)  # int32 ops are MXNet's fastest here
        taps = list(_tap_slices(nd, xp, plan))[:-1]  # the last tap is the default

        def tap_map(t: int) -> Any:
            return nd.broadcast_like(nd.array(maps[t], ctx=x.context, dtype="int32"), y)

        idx = tap_map(-1)
        for t in reversed(range(len(taps))):
            idx = nd.where(taps[t] == y, tap_map(t), idx)
        idx = nd.cast(idx, "int64")
    if xf is not x:
        y = nd.cast(y, dtype.name)
    if rows is not None:
        rows = nd.array(rows, ctx=x.context, dtype="int64")
        fixed, fixed_idx = _tap_max(nd, nd.take(x, rows), plan, dtype, True)
        y = nd.contrib.index_copy(y, rows, fixed)
        idx = nd.contrib.index_copy(idx, rows, fixed_idx)
    return y, idx


def _sum_pool(F: Any, xp: Any, plan: PoolPlan) -> Any:
    """Window sums of an input already padded by ``plan.total_pads``."""
    if all(d == 1 for d in plan.spec.dilation):
        return _native(F, xp, plan, "sum", explicit=True)
    return F.add_n(*_tap_slices(F, xp, plan))


def _window_sums(F: Any, x: Any, plan: PoolPlan, native: bool) -> Any:
    """Window sums, padding adding 0: native padding where it is symmetric, else explicit."""
    if native:
        return _native(F, x, plan, "sum", False)
    return _sum_pool(F, _pad(F, x, plan.spec, plan.total_pads, 0), plan)


def _divisor(F: Any, x: Any, plan: PoolPlan, acc: str) -> Any:
    """The plan's non-uniform divisor map, broadcastable against the output."""
    spec = plan.spec
    if not _is_symbol(F):
        return nd.array(plan.divisor_map.reshape(_bcast_shape(spec, plan.out_size)),
                        ctx=x.context, dtype=acc)
    # A symbol cannot hold a constant array: count the counted cells of one plane instead.
    one = x
    for axis in (0, 1 if spec.channels_first else spec.ndim + 1):
        one = F.slice_axis(one, axis=axis, begin=0, end=1)
    one = F.ones_like(one)
    if spec.count_include_pad:
        one = _pad(F, one, spec, plan.pads, 1)
        one = _pad(F, one, spec, tuple((0, e) for e in plan.ceil_extra), 0)
    else:
        one = _pad(F, one, spec, plan.total_pads, 0)
    return _sum_pool(F, one, plan)


def _sums(F: Any, x: Any, plan: PoolPlan, dtype: np.dtype) -> Any:
    """avg and lp (float input, computed in float32 or float64)."""
    spec = plan.spec
    acc = _acc_dtype(dtype)
    if np.dtype(acc) != dtype:
        x = F.cast(x, acc)
    native = plan.symmetric_pads and all(d == 1 for d in spec.dilation)
    if spec.mode == "avg":
        if native and _onednn_avg(plan, acc):
            y = _native(F, x, plan, "avg", False, count_include_pad=spec.count_include_pad)
        else:
            s = _window_sums(F, x, plan, native)
            div = plan.uniform_divisor  # 0 (all-padding windows only) gives 0 / 0 = NaN
            y = F.broadcast_div(s, _divisor(F, x, plan, acc)) if div is None else s / div
    elif native and spec.p in _NATIVE_LP:
        y = _native(F, F.abs(x), plan, "lp", False, p_value=int(spec.p))
    else:
        a = F.abs(x) if spec.p == 1 else F.square(x) if spec.p == 2 else F.power(F.abs(x), spec.p)
        s = _window_sums(F, a, plan, native)
        if spec.p == 1:
            y = s
        else:  # no root of a zero sum: its gradient is 0 there, not NaN
            zero = s == 0
            y = F.where(zero, F.zeros_like(s),
                        F.power(F.where(zero, F.ones_like(s), s), 1.0 / spec.p))
    return y if np.dtype(acc) == dtype else F.cast(y, dtype.name)


# ---------------------------------------------------------------------------- speed routes
# Each asks take_route(name, auto) only where it applies; off, the plain translation above runs.


def _routed_max_pool(F: Any, x: Any, spec, kernel, stride, pad, convention: str,
                     sizes: tuple[int, ...]) -> Any:
    """Max ``Pooling`` in a view MXNet's own kernel takes fast, or in two separable passes;
    None where no route is taken. oneDNN's pooling, which runs the plain channels-first
    call, is slow with few channels and in 1-d, and takes no view (MXNet's own kernel runs
    it). A view's recorded gradient is wrong (see ``recorded_input``): views only where nothing
    is recorded, and in symbols (a hybridized graph's reshape is no view)."""
    views = _is_symbol(F) or not mx.autograd.is_recording()
    kw = _max_kw(convention, (0,))
    if spec.channels_first:
        if not views:
            return None
        c = None if _is_symbol(F) else x.shape[1]
        if c is not None and c > 1 and take_route(
                FEW_CHANNELS, c < TUNING.few_channels and onednn_pools()):
            n = x.shape[0]
            y = _max_pool(F, x.reshape((n * c, 1, *x.shape[2:])), spec, kernel, stride, pad,
                          convention, sizes)
            return y.reshape((n, c, *y.shape[2:]))
        if spec.ndim == 1 and take_route(FLAT_1D, onednn_pools()):
            y = F.Pooling(x.reshape((0, 0, 1, -1)), kernel=(1, *kernel), stride=(1, *stride),
                          pad=(0, *pad), **kw)
            return y.reshape((0, 0, -1))
        return None
    two = spec.ndim == 2 and math.prod(kernel) >= TUNING.separable_cells
    if views and take_route(CHANNELS_LAST_VIEW, onednn_pools()):
        # the batch as the channels of a channels-first view, the channels a window-1 dim
        if spec.ndim == 3:  # H and W with D as the channels, then D with the batch as channels
            y = F.Pooling(x, kernel=(*kernel[1:], 1), stride=(*stride[1:], 1),
                          pad=(*pad[1:], 0), **kw)
            y = F.Pooling(y.reshape((-4, 1, -1, 0, -3, 0)), kernel=(kernel[0], 1, 1),
                          stride=(stride[0], 1, 1), pad=(pad[0], 0, 0), **kw)
            return y.reshape((-3, 0, -4, sizes[1], -1, 0))
        if spec.ndim == 2 and take_route(SEPARABLE, two):  # W with H as the channels, then H
            y = F.Pooling(x, kernel=(kernel[1], 1), stride=(stride[1], 1), pad=(pad[1], 0),
                          **kw)
            y = F.Pooling(y.reshape((-4, 1, -1, 0, -3)), kernel=(kernel[0], 1),
                          stride=(stride[0], 1), pad=(pad[0], 0), **kw)
            return y.reshape((-3, 0, -4, sizes[1], -1))
        y = F.Pooling(x.reshape((-4, 1, -1, *(0,) * (spec.ndim + 1))), kernel=(*kernel, 1),
                      stride=(*stride, 1), pad=(*pad, 0), **kw)
        return y.reshape((-3, *(0,) * (spec.ndim + 1)))
    if spec.ndim == 2 and take_route(SEPARABLE, two):  # a max is separable: W, then H
        y = F.Pooling(x, kernel=(1, kernel[1]), stride=(1, stride[1]), pad=(0, pad[1]),
                      layout="NHWC", **kw)
        return F.Pooling(y, kernel=(kernel[0], 1), stride=(stride[0], 1), pad=(pad[0], 0),
                         layout="NHWC", **kw)
    return None


def _half_as_float() -> bool:
    """float16 max pooled in float32 (exact): MXNet's float16 pooling has no oneDNN kernel."""
    return take_route(HALF_AS_FLOAT, onednn_pools())


def _host_bytes(x: Any) -> bytes:
    """A copy of a dense CPU array's memory once its writers are done, without the engine's
    copy (that queues behind every op already pushed, reads of x included)."""
    x.wait_to_read()  # returns at once when no write to x is pending
    ptr = ctypes.c_void_p()  # MXNDArrayGetData reorders a oneDNN-layout array to default
    mx.base.check_call(mx.base._LIB.MXNDArrayGetData(x.handle, ctypes.byref(ptr)))
    return ctypes.string_at(ptr.value, math.prod(x.shape) * np.dtype(x.dtype).itemsize)


def _host_check(x: Any) -> np.ndarray | None | bool:
    """x's values read on the host for the NaN/inf check (a dense CPU array): summed in
    Python when tiny (on a 1x1x4x4 call any NumPy call between two MXNet ops costs about as
    much as the pooling itself; None: all finite), else into NumPy. False: no route taken."""
    if type(x) is not nd.NDArray or x.context.device_type != "cpu":
        return False
    size = math.prod(x.shape)
    dtype = np.dtype(x.dtype)
    if dtype.char in "fd" and take_route(PYTHON_CHECK, size <= TUNING.python_check):
        raw = _host_bytes(x)
        total = sum(memoryview(raw).cast(dtype.char))  # float64: no overflow from float32
        return None if total - total == 0 else np.frombuffer(raw, dtype=dtype)
    if take_route(HOST_CHECK, size <= TUNING.host_check):
        return np.frombuffer(_host_bytes(x), dtype=dtype)
    return False


def _onednn_avg(plan: PoolPlan, acc: str) -> bool:
    """avg as one native ``Pooling`` where oneDNN computes it (float32, channels first, no
    ceil cells), which divides the sum; MXNet's own avg kernel is an ulp off."""
    applies = acc == "float32" and plan.spec.channels_first and not any(plan.ceil_extra)
    return applies and onednn_pools() and take_route(ONEDNN_AVG, True)


# ---------------------------------------------------------------------------- the entry points


def pool_graph(F: Any, x: Any, plan: PoolPlan, dtype: Any) -> Any:
    """The pooling of ``plan`` on ``x`` (an ``F`` array or symbol of ``dtype``)."""
    dtype = np.dtype(dtype)
    spec = plan.spec
    if spec.mode != "max":
        return _sums(F, x, plan, dtype)
    if _is_int(dtype) or any(d > 1 for d in spec.dilation) or (
            spec.return_indices and _is_symbol(F)):
        return _tap_max(F, x, plan, dtype, spec.return_indices)
    if spec.return_indices:
        return _native_max_indices(x, plan, dtype)
    return _native_max(F, x, plan, dtype)


def global_plan(spec: GlobalSpec, shape: tuple[int, ...]) -> PoolPlan:
    """Global pooling as the plan of a pool whose window is the whole plane."""
    size = tuple(int(shape[a]) for a in spec.spatial_axes)
    full = make_spec(spec.mode, size, p=spec.p if spec.mode == "lp" else None,
                     data_format=spec.data_format, ndim=spec.ndim)
    return full.plan(tuple(shape))


def global_graph(F: Any, x: Any, spec: GlobalSpec, plan: PoolPlan, dtype: Any) -> Any:
    y = pool_graph(F, x, plan, dtype)
    return y if spec.keepdims else F.squeeze(y, axis=spec.spatial_axes)


class MXNetBackend(Backend):
    name = "mxnet"
    framework = "mxnet"
    supports_autograd = True
    known_deviations = {
        "dtype:bfloat16": _BF16_REASON,
        "int64_indices": "the MXNet 1.9.1 wheels are built without USE_INT64_TENSOR_SIZE: "
                         "no array can hold 2**31 elements, so no plane needs int64 indices",
    }

    def version(self) -> str:
        return mx.__version__

    def capabilities(self) -> dict[str, str]:
        native = ("max", "avg", "lp", "symmetric_padding", "count_include_pad",
                  "channels_first", "channels_last", "float16", "global", "autograd", "compile")
        emulated = ("asymmetric_padding", "same", "ceil_mode", "dilation", "indices",
                    "integers", "nan", "adaptive", "unpool")
        return {**dict.fromkeys(native, NATIVE), **dict.fromkeys(emulated, EMULATED)}

    @property
    def speed_routes(self) -> tuple[str, ...]:  # type: ignore[override]
        """The routes; oneDNN's avg kernel only where oneDNN runs (the build and
        ``MXNET_MKLDNN_ENABLED``)."""
        return ROUTES if onednn_pools() else tuple(r for r in ROUTES if r != ONEDNN_AVG)

    def from_numpy(self, a: np.ndarray) -> Any:
        a = np.asarray(a)
        name = a.dtype.name
        if name == "bfloat16":
            raise TypeError(_BF16_REASON)
        if name not in _MX_DTYPES:
            fix = (f"cast it to {_WIDER[name]}, or pool the NumPy array with backend='mxnet' "
                   f"(max maps it exactly)" if name in _WIDER else "cast it")
            raise TypeError(f"MXNet 1.9.1 has no {name} arrays (it has "
                            f"{', '.join(sorted(_MX_DTYPES))}); {fix}")
        return nd.array(a, dtype=a.dtype)

    def from_numpy_input(self, a: np.ndarray) -> Any:
        a = np.asarray(a)
        return StandIn.encode(a) if a.dtype.name in _WIDER else self.from_numpy(a)

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, StandIn):
            return x.decode()
        return x if isinstance(x, np.ndarray) else x.asnumpy()

    def dtype_name(self, x: Any) -> str:
        return x.source.name if isinstance(x, StandIn) else np.dtype(x.dtype).name

    @staticmethod
    def _run(fn: Callable[[Any], Any], x: Any, empty: list[tuple[tuple[int, ...], Any]]) -> Any:
        """``fn`` of the ``mx.nd`` view of x; ``mx.np`` input gets ``mx.np`` output.

        ``empty`` lists the (shape, dtype) of each output: with a zero-size batch or channel
        dim MXNet's ops cannot run (0 in their shapes means unknown), the outputs are made
        directly.
        """
        is_np = isinstance(x, mx.np.ndarray)
        if x.size == 0:
            out = tuple(nd.array(np.zeros(shape, dtype), ctx=x.context, dtype=dtype)
                        for shape, dtype in empty)
        else:
            out = fn(x.as_nd_ndarray() if is_np else x)
            out = out if isinstance(out, tuple) else (out,)
        if is_np:
            out = tuple(o.as_np_ndarray() for o in out)
        if isinstance(x, StandIn):
            out = (x.like(out[0]), *out[1:])
        if not is_np and len(out) == 2:  # a plain NDArray takes no weak reference (unpool)
            out = (out[0], _weakrefable(out[1]))
        return out if len(out) == 2 else out[0]

    @staticmethod
    def _outputs(x: Any, shape: tuple[int, ...], indices: bool):
        return [(shape, x.dtype)] + ([(shape, np.int64)] if indices else [])

    def pool(self, x: Any, plan: PoolPlan) -> Any:
        if type(x) is nd.NDArray and not plan.spec.return_indices and 0 not in x.shape:
            return pool_graph(nd, x, plan, x.dtype)  # the common call, without _run's work
        shape = plan.output_shape(tuple(x.shape))
        return self._run(lambda t: pool_graph(nd, t, plan, t.dtype), x,
                         self._outputs(x, shape, plan.spec.return_indices))

    def global_pool(self, x: Any, spec: GlobalSpec) -> Any:
        plan = global_plan(spec, tuple(x.shape))
        shape = tuple(n for a, n in enumerate(plan.output_shape(tuple(x.shape)))
                      if spec.keepdims or a not in spec.spatial_axes)
        return self._run(lambda t: global_graph(nd, t, spec, plan, t.dtype), x,
                         self._outputs(x, shape, False))

    def adaptive_pool(self, x: Any, plan: AdaptivePlan) -> Any:
        if plan.uniform:
            return self.pool(x, plan.as_pool_spec().plan(tuple(x.shape)))
        shape = plan.output_shape(tuple(x.shape))
        return self._run(lambda t: _adaptive(t, plan), x,
                         self._outputs(x, shape, plan.spec.return_indices))

    def max_unpool(self, y: Any, indices: Any, spec: UnpoolSpec,
                   out_size: tuple[int, ...]) -> Any:
        if isinstance(indices, mx.np.ndarray):
            indices = indices.as_nd_ndarray()
        elif not isinstance(indices, nd.NDArray):
            indices = nd.array(np.asarray(indices), ctx=y.context, dtype="int64")
        if isinstance(y, StandIn) and y.encoding == "flipped":  # the empty cells must be 0
            y = StandIn.encode(y.decode(), "bits")
        shape = list(y.shape)
        for axis, size in zip(spec.spatial_axes, out_size):
            shape[axis] = size
        return self._run(lambda t: _unpool(t, indices, spec, out_size), y,
                         self._outputs(y, tuple(shape), False))

    def vjp(self, fn: Callable[[Any], Any], x: Any, g: Any) -> Any:
        if x.size == 0:  # MXNet cannot attach a gradient to an empty array; it is empty
            fn(x)
            return nd.array(np.zeros(x.shape, x.dtype), ctx=x.context, dtype=x.dtype)
        x = x.copy()
        x.attach_grad()
        with mx.autograd.record():
            y = fn(x)
        y.backward(g)
        return x.grad


def _adaptive(x: Any, plan: AdaptivePlan) -> Any:
    """Non-uniform bins: a gather-and-reduce per spatial dim (last dim first for max)."""
    spec = plan.spec
    dtype = np.dtype(x.dtype)
    ctx = x.context

    def take(a, index, axis, width):
        taken = nd.take(a, nd.array(index.ravel(), ctx=ctx, dtype="int64"), axis=axis)
        shape = list(taken.shape)
        shape[axis:axis + 1] = [index.shape[0], width] if width else [index.shape[0]]
        return taken.reshape(shape)

    def along(values: np.ndarray, axis: int, rank: int, dtype_) -> Any:
        shape = [1] * rank
        shape[axis:axis + values.ndim] = values.shape
        return nd.array(values.reshape(shape), ctx=ctx, dtype=dtype_)

    if spec.mode == "avg":
        acc = _acc_dtype(dtype)
        out = x.astype(acc) if np.dtype(acc) != dtype else x
        if spec.ndim == 2 and spec.data_format == "channels_first":
            out = nd.contrib.AdaptiveAvgPooling2D(out, output_size=plan.out_size)
        else:  # a mean over a box is the mean of its rows' means: one dim at a time, each
            # in a (1, cells before, dim, cells after) view (no transpose)
            for d in reversed(range(spec.ndim)):
                axis, shape = spec.spatial_axes[d], out.shape
                rest = math.prod(shape[axis + 1:])
                view = out.reshape((1, math.prod(shape[:axis]), shape[axis], rest))
                out = nd.contrib.AdaptiveAvgPooling2D(view, output_size=(plan.out_size[d], rest))
                out = out.reshape((*shape[:axis], plan.out_size[d], *shape[axis + 1:]))
        return out.astype(dtype.name) if np.dtype(acc) != dtype else out
    floating = not _is_int(dtype)
    flat = nd.array(np.arange(math.prod(plan.in_size), dtype=np.float64).reshape(
        _bcast_shape(spec, plan.in_size)), ctx=ctx, dtype="float64")
    out = x
    for d in reversed(range(spec.ndim)):
        axis = spec.spatial_axes[d]
        index, valid = plan.gather(d)
        best = best_i = None
        for j in range(index.shape[1]):
            cand = take(out, index[:, j], axis, 0)
            cand_i = nd.broadcast_like(take(flat, index[:, j], axis, 0), cand)
            if best is None:
                best, best_i = cand, cand_i
                continue
            win = _better(nd, cand, best, floating) * along(valid[:, j], axis, x.ndim,
                                                            dtype.name)
            best, best_i = nd.where(win, cand, best), nd.where(win, cand_i, best_i)
        out, flat = best, best_i
    return (out, flat.astype("int64")) if spec.return_indices else out


def _unpool(y: Any, indices: Any, spec: UnpoolSpec, out_size: tuple[int, ...]) -> Any:
    cf = spec.data_format == "channels_first"
    rank = spec.ndim + 2
    to_cf = (0, rank - 1, *range(1, rank - 1))
    yc = y if cf else nd.transpose(y, axes=to_cf)
    ic = (indices if cf else nd.transpose(indices, axes=to_cf)).astype("int64")
    n, c = yc.shape[:2]
    size = math.prod(out_size)
    ic = ic.reshape((n * c, -1))
    if ic.size and int(ic.max().asscalar()) >= size:
        raise ValueError(f"an index ({int(ic.max().asscalar())}) is outside the output plane "
                         f"{out_size!r}")
    # negative indices go to a spare cell past each plane, cut off below
    ic = nd.where(ic < 0, nd.full(ic.shape, size, ctx=ic.context, dtype="int64"), ic)
    rows = nd.arange(n * c, ctx=ic.context, dtype="int64").reshape((-1, 1)) * (size + 1)
    flat = nd.broadcast_add(ic, rows).reshape((1, -1))
    out = nd.scatter_nd(yc.reshape((-1,)), flat, shape=(n * c * (size + 1),))
    out = out.reshape((n * c, size + 1))[:, :size].reshape((n, c, *out_size))
    return out if cf else nd.transpose(out, axes=(0, *range(2, rank), 1))


BACKEND = MXNetBackend()
