"""The NumPy backend, the embedded default: vectorised, no framework needed.

Pooling is separable: a window reduction equals one reduction per spatial dim (max and sum
directly; for indices, the first maximum of each row, then the first row holding the
maximum, which is the first maximum in row-major window order, NaN included). A pass over
one dim loops over that dim's taps, never over output cells: each tap is one strided slice
of the pass's source combined in place into its destination, so a k x k window costs 2k
slice operations instead of k*k. Taps that land in padding are simply not read, so no padded
copy is made and padding can never win a max.

The work runs in blocks of batch items and rows of the outermost spatial dim, sized so that
the intermediate of a block (about ``_BLOCK_BYTES``) stays in cache: peak memory is the
output plus a block, and the passes run from cache instead of main memory.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from pooladapt.backends.base import FEATURES, NATIVE, Backend
from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan, UnpoolSpec

_BLOCK_BYTES = 1 << 20  # a block's largest intermediate; about one core's L2 cache


def _acc_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _lowest(dtype: np.dtype):
    if np.issubdtype(dtype, np.integer):
        return np.iinfo(dtype).min
    return -np.inf


def _tap_range(o_count: int, stride: int, offset: int, in_size: int) -> tuple[int, int]:
    """Outputs ``[first, last)`` whose tap at input ``o*stride + offset`` is inside the input."""
    first = max(0, -(offset // stride))
    last = min(o_count, (in_size - 1 - offset) // stride + 1)
    return first, max(first, last)


class _Tap(NamedTuple):
    """One window tap along one dim, for outputs ``[first, last)`` of a block."""

    src: slice  # the cells it reads, in the pass's source
    dst: slice  # the outputs it reaches, relative to the block's first output
    full: bool  # reaches every output of the block
    coords: np.ndarray  # the input coordinate it reads for each reached output


def _dim_taps(plan: PoolPlan, d: int, o0: int, o1: int, base: int = 0) -> tuple[_Tap, ...]:
    """Taps of spatial dim ``d`` in window order for outputs ``[o0, o1)``; the pass's source
    starts at input coordinate ``base`` along ``d``."""
    spec = plan.spec
    s, lo = spec.stride[d], plan.pads[d][0]
    taps = []
    for t in range(spec.window[d]):
        offset = t * spec.dilation[d] - lo
        first, last = _tap_range(plan.out_size[d], s, offset, plan.in_size[d])
        first, last = max(first, o0), min(last, o1)
        if first < last:
            start = first * s + offset
            taps.append(_Tap(slice(start - base, start - base + (last - first - 1) * s + 1, s),
                             slice(first - o0, last - o0), first == o0 and last == o1,
                             np.arange(start, start + (last - first) * s, s, dtype=np.int64)))
    return tuple(taps)


@lru_cache(maxsize=256)
def _plan_taps(plan: PoolPlan) -> tuple[tuple[_Tap, ...], ...]:
    """Every dim's taps over its whole output range (the plan is hashable and resolved once)."""
    return tuple(_dim_taps(plan, d, 0, plan.out_size[d]) for d in range(plan.spec.ndim))


def _block_shape(plan: PoolPlan, shape: tuple[int, ...], itemsize: int) -> tuple[int, int]:
    """(batch items, outer-dim output rows) per block: the block's first intermediate (outer
    dim reduced, the others not) takes about ``_BLOCK_BYTES``."""
    axis = plan.spec.spatial_axes[0]
    row = itemsize * math.prod(shape[1:]) // max(shape[axis], 1)
    item = row * plan.out_size[0]
    if item >= _BLOCK_BYTES:
        return 1, max(1, _BLOCK_BYTES // max(row, 1))
    return max(1, _BLOCK_BYTES // max(item, 1)), plan.out_size[0]


def _at(axis: int, sl: slice) -> tuple[slice, ...]:
    return (slice(None),) * axis + (sl,)


class _Scratch:
    """Reusable buffers for the intermediates of a block, by slot (passes ping-pong)."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[int, np.dtype], np.ndarray] = {}

    def get(self, slot: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        size = math.prod(shape)
        buf = self.buffers.get((slot, dtype))
        if buf is None or buf.size < size:
            buf = self.buffers[(slot, dtype)] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


def _reduce(src: np.ndarray, dst: np.ndarray, axis: int, taps, op, identity,
            transform=None) -> None:
    """``dst = op-reduction over taps of src`` along ``axis`` (dst's dtype accumulates)."""
    dtype = dst.dtype
    rest = list(taps)
    full = [t for t in taps if t.full] if transform is None else []
    if len(full) >= 2:
        op(src[_at(axis, full[0].src)], src[_at(axis, full[1].src)], out=dst, dtype=dtype)
        rest.remove(full[0])
        rest.remove(full[1])
    elif full:
        np.copyto(dst, src[_at(axis, full[0].src)], casting="unsafe")
        rest.remove(full[0])
    else:
        dst.fill(identity)
    for t in rest:
        view = dst[_at(axis, t.dst)]
        tap = src[_at(axis, t.src)]
        op(view, tap if transform is None else transform(tap), out=view, dtype=dtype)


def _argmax_pass(src, src_idx, dst, dst_idx, axis: int, taps, plane_stride: int,
                 trailing: int) -> None:
    """Max along ``axis`` keeping the first maximum (or first NaN) in tap order, with its
    per-plane flat index: ``coordinate * plane_stride`` plus the source's partial index."""
    floating = not np.issubdtype(dst.dtype, np.integer)
    fresh = not (taps and taps[0].full)
    if fresh:
        dst.fill(_lowest(dst.dtype))
        dst_idx.fill(-1)
    for i, t in enumerate(taps):
        tap = src[_at(axis, t.src)]
        cand = (t.coords * plane_stride).reshape((-1,) + (1,) * trailing)
        if src_idx is not None:
            cand = cand + src_idx[_at(axis, t.src)]
        view, view_idx = dst[_at(axis, t.dst)], dst_idx[_at(axis, t.dst)]
        if i == 0 and not fresh:
            np.copyto(view, tap)
            np.copyto(view_idx, cand)
            continue
        win = tap > view
        if fresh:
            win |= view_idx < 0
        if floating:
            win |= np.isnan(tap) & ~np.isnan(view)
        np.copyto(view, tap, where=win)
        np.copyto(view_idx, np.broadcast_to(cand, view_idx.shape), where=win)


class NumpyBackend(Backend):
    name = "numpy"
    framework = "numpy"

    def version(self) -> str:
        return np.__version__

    def capabilities(self) -> dict[str, str]:
        return {f: NATIVE for f in FEATURES if f not in ("autograd", "compile")}

    def from_numpy(self, a: np.ndarray) -> np.ndarray:
        return a

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def dtype_name(self, x: Any) -> str:
        return str(np.asarray(x).dtype)

    def pool(self, x: np.ndarray, plan: PoolPlan):
        spec = plan.spec
        out = np.empty(plan.output_shape(x.shape), dtype=x.dtype)
        if spec.return_indices:
            idx = np.empty(out.shape, dtype=np.int64)
            if out.size:
                self._max_indices(x, plan, out, idx)
            return out, idx
        if out.size:
            if spec.mode == "max":
                self._separable(x, plan, out)
            else:
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    self._separable(x, plan, out)
        return out

    def _blocks(self, plan: PoolPlan, x: np.ndarray, itemsize: int):
        """Yield (batch slice, outer-dim output range) per block."""
        batch, rows = _block_shape(plan, x.shape, itemsize)
        for b0 in range(0, x.shape[0], batch):
            for o0 in range(0, plan.out_size[0], rows):
                yield slice(b0, b0 + batch), o0, min(o0 + rows, plan.out_size[0])

    def _separable(self, x: np.ndarray, plan: PoolPlan, out: np.ndarray) -> None:
        """Max, avg or lp (no indices): one pass per spatial dim, outermost first."""
        spec = plan.spec
        axes, ndim = spec.spatial_axes, spec.ndim
        is_max = spec.mode == "max"
        acc = out.dtype if is_max else _acc_dtype(x.dtype)
        op, identity = (np.maximum, _lowest(acc)) if is_max else (np.add, 0)
        transform = None if spec.mode != "lp" else self._lp_transform(spec.p, acc)
        all_taps = _plan_taps(plan)
        scratch = _Scratch()
        for batch, o0, o1 in self._blocks(plan, x, acc.itemsize):
            src, block_out = x[batch], out[batch][_at(axes[0], slice(o0, o1))]
            for d in range(ndim):
                taps = all_taps[d] if o1 - o0 == plan.out_size[0] or d else _dim_taps(
                    plan, 0, o0, o1)
                shape = list(src.shape)
                shape[axes[d]] = block_out.shape[axes[d]]
                if d == ndim - 1 and acc == out.dtype:
                    dst = block_out
                else:
                    dst = scratch.get(d % 2, tuple(shape), acc)
                _reduce(src, dst, axes[d], taps, op, identity, transform if d == 0 else None)
                src = dst
            if not is_max:
                self._finish(src, plan, o0, o1)
                if src is not block_out:
                    np.copyto(block_out, src, casting="unsafe")

    @staticmethod
    def _lp_transform(p: float, acc: np.dtype):
        if p == 1.0:
            return lambda v: np.abs(v, dtype=acc)
        if p == 2.0:
            return lambda v: np.square(v, dtype=acc)
        return lambda v: np.power(np.abs(v, dtype=acc), acc.type(p))

    def _finish(self, a: np.ndarray, plan: PoolPlan, o0: int, o1: int) -> None:
        """Divide sums by the plan's divisors (avg) or take the p-th root (lp), in place."""
        spec = plan.spec
        if spec.mode == "avg":
            divisor = plan.uniform_divisor
            if divisor is not None:
                a /= divisor if divisor else np.nan
            else:
                a /= self._spatial_view(_divisor_map(plan, a.dtype)[o0:o1], spec)
        elif spec.p == 2.0:
            np.sqrt(a, out=a)
        elif spec.p != 1.0:
            np.power(a, a.dtype.type(1.0 / spec.p), out=a)

    @staticmethod
    def _spatial_view(a: np.ndarray, spec) -> np.ndarray:
        return a[None, None] if spec.channels_first else a[None, ..., None]

    def _max_indices(self, x: np.ndarray, plan: PoolPlan, out: np.ndarray,
                     idx: np.ndarray) -> None:
        """Max with indices: one pass per spatial dim, innermost first."""
        spec = plan.spec
        axes, ndim = spec.spatial_axes, spec.ndim
        plane_strides = [math.prod(plan.in_size[d + 1:]) for d in range(ndim)]
        all_taps = _plan_taps(plan)
        scratch = _Scratch()
        s0, lo0, ext0 = spec.stride[0], plan.pads[0][0], spec.extent[0]
        for batch, o0, o1 in self._blocks(plan, x, x.dtype.itemsize + 8):
            r0 = max(0, o0 * s0 - lo0)
            r1 = min(plan.in_size[0], (o1 - 1) * s0 - lo0 + ext0)
            src, src_idx = x[batch][_at(axes[0], slice(r0, r1))], None
            block_out = out[batch][_at(axes[0], slice(o0, o1))]
            block_idx = idx[batch][_at(axes[0], slice(o0, o1))]
            for d in reversed(range(ndim)):
                taps = all_taps[d] if d or (o0, o1) == (0, plan.out_size[0]) else _dim_taps(
                    plan, 0, o0, o1, base=r0)
                if d == 0:
                    dst, dst_idx = block_out, block_idx
                else:
                    shape = list(src.shape)
                    shape[axes[d]] = plan.out_size[d]
                    dst = scratch.get(d % 2, tuple(shape), x.dtype)
                    dst_idx = scratch.get(2 + d % 2, tuple(shape), np.dtype(np.int64))
                _argmax_pass(src, src_idx, dst, dst_idx, axes[d], taps, plane_strides[d],
                             x.ndim - axes[d] - 1)
                src, src_idx = dst, dst_idx
        if plan.all_padding_windows:
            # a window that holds no input cell has no index (its value is already -inf)
            empty = np.zeros(plan.out_size, dtype=bool)
            for d, counts in enumerate(plan.real_counts):
                shape = [1] * ndim
                shape[d] = -1
                empty |= (np.asarray(counts) == 0).reshape(shape)
            np.copyto(idx, -1, where=self._spatial_view(empty, spec))

    def global_pool(self, x: np.ndarray, spec: GlobalSpec):
        axes = spec.spatial_axes
        if spec.mode == "max":
            return np.max(x, axis=axes, keepdims=spec.keepdims)
        acc = _acc_dtype(x.dtype)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if spec.mode == "avg":
                out = np.mean(x, axis=axes, dtype=acc, keepdims=spec.keepdims)
            else:
                out = np.sum(np.abs(x, dtype=acc) ** spec.p, axis=axes,
                             keepdims=spec.keepdims) ** (1.0 / spec.p)
        return out.astype(x.dtype, copy=False)

    def adaptive_pool(self, x: np.ndarray, plan: AdaptivePlan):
        spec = plan.spec
        if plan.uniform:
            # every bin is the same window: a plain strided pool, same values and indices
            return self.pool(x, plan.as_pool_spec().plan(x.shape))
        if spec.mode == "avg":
            out = x.astype(_acc_dtype(x.dtype))
            for d, axis in enumerate(spec.spatial_axes):
                index, valid = plan.gather(d)
                taken = np.take(out, index, axis=axis)  # (..., out, width, ...)
                trailing = (1,) * (x.ndim - axis - 1)
                mask = valid.reshape(valid.shape + trailing)
                count = valid.sum(axis=1).reshape((-1,) + trailing)
                out = np.sum(taken * mask, axis=axis + 1) / count
            return out.astype(x.dtype, copy=False)
        flat = self._flat_index(x.shape, spec.spatial_axes)
        out = x
        # Reduce the last spatial dim first: the surviving index is then the first maximum
        # in row-major order of the whole bin.
        for d in reversed(range(spec.ndim)):
            axis = spec.spatial_axes[d]
            index, _ = plan.gather(d)
            taken = np.take(out, index, axis=axis)
            taken_flat = np.take(flat, index, axis=axis)
            pick = np.expand_dims(np.argmax(taken, axis=axis + 1), axis + 1)
            out = np.take_along_axis(taken, pick, axis=axis + 1).squeeze(axis + 1)
            flat = np.take_along_axis(np.broadcast_to(taken_flat, taken.shape), pick,
                                      axis=axis + 1).squeeze(axis + 1)
        return (out, flat) if spec.return_indices else out

    @staticmethod
    def _flat_index(shape, axes) -> np.ndarray:
        sizes = [shape[a] for a in axes]
        flat = np.arange(math.prod(sizes), dtype=np.int64).reshape(sizes)
        view = [1] * len(shape)
        for a, s in zip(axes, sizes):
            view[a] = s
        return flat.reshape(view)

    def max_unpool(self, y: np.ndarray, indices: np.ndarray, spec: UnpoolSpec,
                   out_size: tuple[int, ...]):
        cf = spec.data_format == "channels_first"
        yc = y if cf else np.moveaxis(y, -1, 1)
        ic = indices if cf else np.moveaxis(indices, -1, 1)
        n, c = yc.shape[:2]
        size = math.prod(out_size)
        flat_i = ic.reshape(n, c, -1).astype(np.int64)
        if flat_i.size and flat_i.max() >= size:
            raise ValueError(f"an index ({int(flat_i.max())}) is outside the output plane "
                             f"{out_size!r}")
        flat_i = np.where(flat_i < 0, size, flat_i)
        out = np.zeros((n, c, size + 1), dtype=y.dtype)
        np.put_along_axis(out, flat_i, yc.reshape(n, c, -1), axis=2)
        out = out[:, :, :size].reshape(n, c, *out_size)
        return out if cf else np.moveaxis(out, 1, -1)


@lru_cache(maxsize=256)
def _divisor_map(plan: PoolPlan, dtype: np.dtype) -> np.ndarray:
    return plan.divisor_map.astype(dtype)


BACKEND = NumpyBackend()
