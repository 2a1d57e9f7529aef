"""The NumPy backend, the embedded default: vectorised, no framework needed.

Pooling loops over the window's taps (never over output cells): each tap is one strided
slice of the input combined into the output in place. Taps that land in padding are simply
not read, so no padded copy is made and padding can never win a max.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from pooladapt.backends.base import FEATURES, NATIVE, Backend
from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan, UnpoolSpec


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

    def _taps(self, plan: PoolPlan, ndim_total: int):
        """For each window tap in row-major order: (input index, output index, coords) tuples."""
        spec = plan.spec
        axes = spec.spatial_axes
        per_dim = []
        for d in range(spec.ndim):
            s, lo = spec.stride[d], plan.pads[d][0]
            options = []
            for t in range(spec.window[d]):
                offset = t * spec.dilation[d] - lo
                first, last = _tap_range(plan.out_size[d], s, offset, plan.in_size[d])
                start = first * s + offset
                options.append((slice(start, start + (last - first - 1) * s + 1, s),
                                slice(first, last), start, s, last - first))
            per_dim.append(options)
        for combo in itertools.product(*per_dim):
            if any(c[4] <= 0 for c in combo):
                continue
            src = [slice(None)] * ndim_total
            dst = [slice(None)] * ndim_total
            for axis, c in zip(axes, combo):
                src[axis], dst[axis] = c[0], c[1]
            yield tuple(src), tuple(dst), combo

    def pool(self, x: np.ndarray, plan: PoolPlan):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return self._pool(x, plan)

    def _pool(self, x: np.ndarray, plan: PoolPlan):
        spec = plan.spec
        out_shape = plan.output_shape(x.shape)
        if spec.mode == "max":
            return self._max(x, plan, out_shape)
        acc = np.zeros(out_shape, dtype=_acc_dtype(x.dtype))
        for src, dst, _ in self._taps(plan, x.ndim):
            tap = x[src]
            if spec.mode == "avg":
                np.add(acc[dst], tap, out=acc[dst], casting="unsafe")
            elif spec.p == 1.0:
                acc[dst] += np.abs(tap, dtype=acc.dtype)
            elif spec.p == 2.0:
                acc[dst] += np.square(tap, dtype=acc.dtype)
            else:
                acc[dst] += np.abs(tap, dtype=acc.dtype) ** spec.p
        if spec.mode == "avg":
            divisor = plan.uniform_divisor
            if divisor is not None:
                acc /= divisor if divisor else np.nan
            else:
                acc /= self._spatial_view(plan.divisor_map, spec)
        elif spec.p == 2.0:
            np.sqrt(acc, out=acc)
        elif spec.p != 1.0:
            acc **= 1.0 / spec.p
        return acc.astype(x.dtype, copy=False)

    @staticmethod
    def _spatial_view(a: np.ndarray, spec) -> np.ndarray:
        return a[None, None] if spec.channels_first else a[None, ..., None]

    def _max(self, x: np.ndarray, plan: PoolPlan, out_shape):
        spec = plan.spec
        out = np.full(out_shape, _lowest(x.dtype), dtype=x.dtype)
        if not spec.return_indices:
            for src, dst, _ in self._taps(plan, x.ndim):
                np.maximum(out[dst], x[src], out=out[dst])
            return out
        idx = np.full(out_shape, -1, dtype=np.int64)
        plane_strides = [math.prod(plan.in_size[d + 1:]) for d in range(spec.ndim)]
        floating = not np.issubdtype(x.dtype, np.integer)
        for src, dst, combo in self._taps(plan, x.ndim):
            tap, cur, cur_idx = x[src], out[dst], idx[dst]
            win = (tap > cur) | (cur_idx < 0)
            if floating:
                win |= np.isnan(tap) & ~np.isnan(cur)
            flat = np.zeros((), dtype=np.int64)
            for c, stride in zip(combo, plane_strides):
                coords = (c[2] + c[3] * np.arange(c[4], dtype=np.int64)) * stride
                flat = np.add.outer(flat, coords)
            flat = self._spatial_view(flat, spec)
            np.copyto(cur, tap, where=win)
            np.copyto(cur_idx, np.broadcast_to(flat, cur_idx.shape), where=win)
        return out, idx

    def global_pool(self, x: np.ndarray, spec: GlobalSpec):
        axes = spec.spatial_axes
        if spec.mode == "max":
            return np.max(x, axis=axes, keepdims=spec.keepdims)
        acc = _acc_dtype(x.dtype)
        if spec.mode == "avg":
            out = np.mean(x, axis=axes, dtype=acc, keepdims=spec.keepdims)
        else:
            out = np.sum(np.abs(x, dtype=acc) ** spec.p, axis=axes,
                         keepdims=spec.keepdims) ** (1.0 / spec.p)
        return out.astype(x.dtype, copy=False)

    def adaptive_pool(self, x: np.ndarray, plan: AdaptivePlan):
        spec = plan.spec
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


BACKEND = NumpyBackend()
