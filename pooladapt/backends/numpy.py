"""The NumPy backend, the embedded default: vectorised, no framework needed.

Pooling is separable: a window reduction equals one reduction per spatial dim (max and sum
directly; for indices, the first maximum of each row, then the first row holding the
maximum, which is the first maximum in row-major window order, NaN included). A pass over
one dim loops over that dim's taps, never over output cells: each tap is one strided slice
of the pass's source combined in place into its destination, so a k x k window costs 2k
slice operations instead of k*k. Taps that land in padding are simply not read, so no padded
copy is made and padding can never win a max. 16-bit floats go through float32, where NumPy's
loops are vectorised; max stays exact.

Speed routes (``BACKEND.speed_routes``, switched by ``pa.speed_routes``; their thresholds are
one :class:`Tuning`, changed in a ``with tuned(...)`` block; docs/benchmarks.md):

* ``numpy.blocks``: the work runs in blocks of batch items, channels (when they come first)
  and outer-dim output rows, sized so a block's first intermediate takes about
  ``block_bytes`` and stays in cache; peak memory is the output plus a few blocks. Forced on,
  a job that fits one block is cut into blocks of two output rows.
* ``numpy.phases``: a pass whose slices would be short strided runs (a trailing run under
  ``short_run`` cells: the inner dims of NCHW, the width of NHWC) over a source of at least
  ``phase_min`` cells first splits the source by stride phase into contiguous buffers, so
  every tap becomes one long contiguous op.
* ``numpy.threads``: outputs of ``parallel_bytes`` or more spread their blocks over a thread
  pool of ``threads`` workers (NumPy releases the GIL in its loops); without
  ``numpy.blocks``, one block per worker.

With every route off, the plain translation runs: the whole job as one block, every tap a
strided slice, in the caller's thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from pooladapt import config
from pooladapt.backends.base import FEATURES, NATIVE, Backend
from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan, UnpoolSpec


def _acc_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _half(dtype: np.dtype) -> bool:
    """float16 or bfloat16 (ml_dtypes, a void-kind dtype to NumPy)."""
    return dtype.itemsize == 2 and dtype.kind in "fV"


@lru_cache(maxsize=64)
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
    """One window tap along one spatial dim, for the outputs ``[o0, o1)`` of a block."""

    src: slice  # the cells it reads, in the pass's source
    dst: slice  # the outputs it reaches, relative to o0
    full: bool  # reaches every output of the block
    src_ix: tuple[slice, ...]  # src and dst as index tuples on the dim's axis
    dst_ix: tuple[slice, ...]
    flat: np.ndarray  # per reached output: its input coordinate times the plane stride,
    # shaped to broadcast along the axis (the index contribution of this dim)


class _Dim(NamedTuple):
    """The taps of one spatial dim in window order, and how a reduction starts."""

    axis: int
    stride: int
    taps: tuple[_Tap, ...]
    init: tuple[_Tap, ...]  # up to two full taps: the first op writes every output
    rest: tuple[_Tap, ...]  # the others, combined in place


def _dim(plan: PoolPlan, d: int, o0: int, o1: int, base: int = 0) -> _Dim:
    """Dim ``d``'s taps for outputs ``[o0, o1)``; the source starts at input cell ``base``."""
    spec = plan.spec
    s, lo, axis = spec.stride[d], plan.pads[d][0], spec.spatial_axes[d]
    plane_stride = math.prod(plan.in_size[d + 1:])
    trailing = (1,) * (spec.ndim + 1 - axis)
    taps = []
    for t in range(spec.window[d]):
        offset = t * spec.dilation[d] - lo
        first, last = _tap_range(plan.out_size[d], s, offset, plan.in_size[d])
        first, last = max(first, o0), min(last, o1)
        if first < last:
            start = first * s + offset
            src = slice(start - base, start - base + (last - first - 1) * s + 1, s)
            dst = slice(first - o0, last - o0)
            flat = np.arange(start, start + (last - first) * s, s, dtype=np.int64) * plane_stride
            taps.append(_Tap(src, dst, first == o0 and last == o1, _at(axis, src),
                             _at(axis, dst), flat.reshape((-1, *trailing))))
    init = tuple(t for t in taps if t.full)[:2]
    return _Dim(axis, s, tuple(taps), init, tuple(t for t in taps if t not in init))


@lru_cache(maxsize=256)
def _plan_dims(plan: PoolPlan) -> tuple[_Dim, ...]:
    """Every dim's taps over its whole output range (the plan is hashable and resolved once)."""
    return tuple(_dim(plan, d, 0, plan.out_size[d]) for d in range(plan.spec.ndim))




def _at(axis: int, sl: slice) -> tuple[slice, ...]:
    return (slice(None),) * axis + (sl,)


class _Scratch:
    """Reusable buffers for the intermediates of a block, by slot (passes ping-pong)."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[Any, np.dtype], np.ndarray] = {}

    def get(self, slot: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        size = math.prod(shape)
        buf = self.buffers.get((slot, dtype))
        if buf is None or buf.size < size:
            buf = self.buffers[(slot, dtype)] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


def _reduce(src: np.ndarray, dst: np.ndarray, dim: _Dim, op, identity, transform=None) -> None:
    """``dst`` = the ``op`` reduction of ``src`` over the taps of ``dim`` (in dst's dtype)."""
    dtype = None if src.dtype == dst.dtype else dst.dtype
    rest = dim.rest
    if transform is not None:
        dst.fill(identity)
        rest = dim.taps
    elif len(dim.init) == 2:
        op(src[dim.init[0].src_ix], src[dim.init[1].src_ix], out=dst, dtype=dtype)
    elif dim.init:
        np.copyto(dst, src[dim.init[0].src_ix], casting="unsafe")
    else:
        dst.fill(identity)
    for t in rest:
        view = dst[t.dst_ix]
        tap = src[t.src_ix]
        op(view, tap if transform is None else transform(tap), out=view, dtype=dtype)


def _argmax_pass(src, src_idx, dst, dst_idx, dim: _Dim) -> None:
    """Max over the taps of ``dim`` keeping the first maximum (or first NaN) in tap order and
    its per-plane flat index: the tap's coordinate term plus the source's partial index."""
    floating = not np.issubdtype(dst.dtype, np.integer)
    fresh = not dim.init or dim.init[0] is not dim.taps[0]
    if fresh:
        dst.fill(_lowest(dst.dtype))
        dst_idx.fill(-1)
    for i, t in enumerate(dim.taps):
        tap = src[t.src_ix]
        cand = t.flat if src_idx is None else t.flat + src_idx[t.src_ix]
        view, view_idx = dst[t.dst_ix], dst_idx[t.dst_ix]
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


# ---------------------------------------------------------------------------- speed routes
# Each is asked for with config.take_route(name, auto) in the caller's thread (the route
# switch and the tuning are per thread), only where it applies; "off" leaves one whole block,
# strided slices, the caller's thread.

BLOCKS, PHASES, THREADS = "numpy.blocks", "numpy.phases", "numpy.threads"


@dataclass(frozen=True)
class Tuning:
    """The thresholds of the NumPy backend's speed routes (measured: docs/benchmarks.md).

    ``block_bytes``: a block's first intermediate (L2 is about 1 MiB a core); ``short_run``
    and ``phase_min``: a pass uses stride phases when its trailing run is shorter than
    ``short_run`` cells and its source holds at least ``phase_min``; ``parallel_bytes``:
    outputs at least this large are pooled on ``threads`` workers (None:
    ``POOLADAPT_NUMPY_THREADS``, else the CPUs this process may run on).
    """

    block_bytes: int = 1 << 21
    short_run: int = 1024
    phase_min: int = 1 << 14
    parallel_bytes: int = 1 << 22
    threads: int | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "threads" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Tuning.{field.name} must be an int, got "
                                f"{type(value).__name__} {value!r}")
            least = 1 if field.name in ("block_bytes", "threads") else 0
            if value < least:
                raise ValueError(f"Tuning.{field.name} must be >= {least}, got {value}")


DEFAULT_TUNING = Tuning()
_tuning: contextvars.ContextVar[Tuning] = contextvars.ContextVar(
    "pooladapt_numpy_tuning", default=DEFAULT_TUNING)


def tuning() -> Tuning:
    """The NumPy backend's thresholds here and now (``DEFAULT_TUNING`` unless changed)."""
    return _tuning.get()


@contextlib.contextmanager
def tuned(**changes: int | None) -> Iterator[Tuning]:
    """Change some thresholds of :class:`Tuning` inside a ``with`` block (per thread and
    asyncio task); unknown names raise TypeError, bad values ValueError.

    >>> import numpy as np, pooladapt as pa
    >>> with tuned(block_bytes=1 << 16, threads=2):
    ...     pa.pool2d(np.ones((1, 8, 8, 3)), "max", 2).shape
    (1, 4, 4, 3)
    """
    token = _tuning.set(dataclasses.replace(_tuning.get(), **changes))
    try:
        yield _tuning.get()
    finally:
        _tuning.reset(token)


@lru_cache(maxsize=1)
def _cpus() -> int:
    env = os.environ.get("POOLADAPT_NUMPY_THREADS")
    if env:
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=4)
def _executor(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="pooladapt-numpy")


Block = tuple[tuple[slice, ...], int, int]  # (outer index, o0, o1): outputs [o0, o1) of dim 0


class _Schedule(NamedTuple):
    """The blocks a job runs in, in how many groups (1: the caller's thread), on a pool of
    ``threads`` workers."""

    blocks: list[Block]
    groups: int
    threads: int = 1


def _schedule(plan: PoolPlan, shape: tuple[int, ...], itemsize: int,
              out_bytes: int) -> _Schedule:
    """The whole job in the caller's thread, unless numpy.blocks or numpy.threads is taken."""
    tune = tuning()
    axis, out0 = plan.spec.spatial_axes[0], plan.out_size[0]
    row = itemsize * math.prod(shape[axis + 1:])  # an output row of the first intermediate
    first = row * out0 * math.prod(shape[:axis])
    budget = None
    if config.take_route(BLOCKS, first > tune.block_bytes):
        budget = tune.block_bytes if first > tune.block_bytes else 2 * row
    workers = tune.threads or _cpus()
    if config.take_route(THREADS, out_bytes >= tune.parallel_bytes and workers >= 2):
        workers = max(2, workers)
        if budget is None:  # one block per worker
            budget = -(-first // workers)
    else:
        workers = 1
    if budget is None:
        return _Schedule([((slice(None),), 0, out0)], 1)
    blocks = list(_blocks(plan, shape, itemsize, budget))
    return _Schedule(blocks, min(workers, len(blocks)), workers)


def _blocks(plan: PoolPlan, shape: tuple[int, ...], itemsize: int,
            budget: int) -> Iterator[Block]:
    """Blocks of batch items (and channels when they come first) and outer-dim output rows
    ``[o0, o1)``, so that a block's first intermediate (outer dim reduced, the others not)
    takes about ``budget`` bytes and stays contiguous."""
    axis, out0 = plan.spec.spatial_axes[0], plan.out_size[0]
    row = itemsize * math.prod(shape[axis + 1:])
    plane = row * out0
    item = plane * math.prod(shape[1:axis])
    if item <= budget:
        step = max(1, budget // max(item, 1))
        for b in range(0, shape[0], step):
            yield (slice(b, b + step),), 0, out0
    elif axis == 2 and plane <= budget:
        step = budget // max(plane, 1)
        for b in range(shape[0]):
            for c in range(0, shape[1], step):
                yield (slice(b, b + 1), slice(c, c + step)), 0, out0
    else:
        rows = max(1, budget // max(row, 1))
        for outer in np.ndindex(shape[:axis]):
            for o0 in range(0, out0, rows):
                yield tuple(slice(i, i + 1) for i in outer), o0, min(o0 + rows, out0)


def _run(fn, schedule: _Schedule) -> None:
    """``fn(*block, scratch)`` for every block: one group of blocks and one scratch per worker
    (NumPy releases the GIL inside its loops)."""

    def run(group: list[Block]) -> None:
        scratch = _Scratch()
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            for b in group:
                fn(*b, scratch)

    blocks, groups, threads = schedule
    if groups < 2:
        return run(blocks)
    list(_executor(threads).map(run, [blocks[i::groups] for i in range(groups)]))


def _phases(plan: PoolPlan, dims: tuple[_Dim, ...], shape: tuple[int, ...],
            rows: int) -> tuple[bool, ...]:
    """Per pass of the separable reduction of a block of input ``shape`` (``rows`` output rows
    of dim 0): whether it splits its source by stride phase (numpy.phases)."""
    tune, shape, taken = tuning(), list(shape), []
    for d, dim in enumerate(dims):
        short = math.prod(shape[dim.axis + 1:]) < tune.short_run
        taken.append(config.take_route(PHASES, short and math.prod(shape) >= tune.phase_min))
        shape[dim.axis] = rows if d == 0 else plan.out_size[d]
    return tuple(taken)


def _phase_reduce(src: np.ndarray, dst: np.ndarray, dim: _Dim, op, identity, scratch: _Scratch,
                  transform=None, stage: bool = False) -> None:
    """:func:`_reduce` for short trailing runs, where a strided slice costs a loop per run.

    The source is split by stride phase into contiguous buffers (``phase_p[j]`` holds source
    cell ``stride * j + p``); every tap is then one flat contiguous op at a fixed offset. The
    few outputs a tap does not reach, which a flat op fills from a neighbouring row, are
    saved before and restored after. ``stage`` first copies the source contiguously (a
    strided read straight from main memory is several times slower than a streamed one).
    """
    if not dim.taps:
        dst.fill(identity)
        return
    axis, stride, taps = dim.axis, dim.stride, dim.taps
    lead, trail = src.shape[:axis], src.shape[axis + 1:]
    m, run = dst.shape[axis], math.prod(trail)
    # tap -> (shift, phase): it reads source cell stride * (o + shift) + phase for output o
    shifts = [divmod(t.src.start - stride * t.dst.start, stride) for t in taps]
    length = max([m] + [t.dst.stop + k for t, (k, _) in zip(taps, shifts)])
    base = 0
    if stage:
        base, stop = min(t.src.start for t in taps), max(t.src.stop for t in taps)
        staged = scratch.get("stage", (*lead, stop - base, *trail), src.dtype)
        np.copyto(staged, src[_at(axis, slice(base, stop))])
        src = staged
    phases = {}
    for p in sorted({p for _, p in shifts}):
        buf = scratch.get(("phase", p), (*lead, length, *trail), dst.dtype)
        first = max(0, -((p - base) // stride))  # the j whose cells the source holds
        last = min(length, (base + src.shape[axis] - p + stride - 1) // stride)
        if first < last:
            start = stride * first + p - base
            part = buf[_at(axis, slice(first, last))]
            cells = src[_at(axis, slice(start, start + stride * (last - first - 1) + 1, stride))]
            if transform is None:
                np.copyto(part, cells, casting="unsafe")
            else:
                transform(cells, part)
        phases[p] = buf.reshape(-1)
    direct = length == m and dst.flags.c_contiguous
    work = dst if direct else scratch.get("work", (*lead, length, *trail), dst.dtype)
    flat, size = work.reshape(-1), work.size
    todo = [(t, p, k * run) for t, (k, p) in zip(taps, shifts)]
    full = [item for item in todo if item[0].full]  # a full tap has a shift >= 0
    if len(full) >= 2:
        (_, pa, da), (_, pb, db) = full[:2]
        end = size - max(da, db)
        op(phases[pa][da:da + end], phases[pb][db:db + end], out=flat[:end])
        todo = [item for item in todo if item is not full[0] and item is not full[1]]
    else:
        work.fill(identity)
    for t, p, delta in todo:
        kept = [(ix, work[ix].copy()) for ix in (_at(axis, slice(0, t.dst.start)),
                                                 _at(axis, slice(t.dst.stop, m)))]
        lo, hi = max(0, -delta), min(size, size - delta)
        op(flat[lo:hi], phases[p][lo + delta:hi + delta], out=flat[lo:hi])
        for ix, values in kept:
            work[ix] = values
    if not direct:
        np.copyto(dst, work[_at(axis, slice(0, m))])


class NumpyBackend(Backend):
    name = "numpy"
    framework = "numpy"
    speed_routes = (BLOCKS, PHASES, THREADS)

    def version(self) -> str:
        return np.__version__

    def capabilities(self) -> dict[str, str]:
        return {f: NATIVE for f in FEATURES if f not in ("autograd", "compile")}

    def from_numpy(self, a: np.ndarray) -> np.ndarray:
        return a

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def dtype_name(self, x: Any) -> str:
        return _dtype_name(np.asarray(x).dtype)

    def pool(self, x: np.ndarray, plan: PoolPlan):
        spec = plan.spec
        out = np.empty(plan.output_shape(x.shape), dtype=x.dtype)
        if spec.return_indices:
            idx = np.empty(out.shape, dtype=np.int64)
            if out.size:
                self._max_indices(x, plan, out, idx)
            return out, idx
        if out.size:
            self._separable(x, plan, out)
        return out

    def _separable(self, x: np.ndarray, plan: PoolPlan, out: np.ndarray) -> None:
        """Max, avg or lp (no indices): one pass per spatial dim, outermost first."""
        spec = plan.spec
        is_max = spec.mode == "max"
        # max is exact in any wider float type: 16-bit floats go through float32, where NumPy
        # has vector loops (its float16 maximum converts element by element)
        acc = _acc_dtype(x.dtype) if not is_max or _half(x.dtype) else x.dtype
        op, identity = (np.maximum, _lowest(acc)) if is_max else (np.add, 0)
        transform = None if spec.mode != "lp" else self._lp_transform(spec.p, acc)
        dims = _plan_dims(plan)
        last = len(dims) - 1
        schedule = _schedule(plan, x.shape, acc.itemsize, out.nbytes)
        outer, o0, o1 = schedule.blocks[0]
        phases = _phases(plan, dims, x[outer].shape, o1 - o0)

        def block(outer: tuple[slice, ...], o0: int, o1: int, scratch: _Scratch) -> None:
            block_out = out[outer]
            if o1 - o0 < plan.out_size[0]:
                block_out = block_out[_at(dims[0].axis, slice(o0, o1))]
            src = x[outer]
            for d, dim in enumerate(dims):
                if d == 0 and o1 - o0 < plan.out_size[0]:
                    dim = _dim(plan, 0, o0, o1)
                if d == last and acc == out.dtype:
                    dst = block_out
                else:
                    shape = list(src.shape)
                    shape[dim.axis] = block_out.shape[dim.axis]
                    dst = scratch.get(d % 2, tuple(shape), acc)
                fn = transform if d == 0 else None
                if phases[d]:
                    _phase_reduce(src, dst, dim, op, identity, scratch, fn, stage=d == 0)
                else:
                    _reduce(src, dst, dim, op, identity, fn)
                src = dst
            if not is_max:
                self._finish(src, plan, o0, o1)
            if src is not block_out:
                np.copyto(block_out, src, casting="unsafe")

        _run(block, schedule)

    @staticmethod
    def _lp_transform(p: float, acc: np.dtype):
        if p == 1.0:
            return lambda v, out=None: np.abs(v, out=out, dtype=acc)
        if p == 2.0:
            return lambda v, out=None: np.square(v, out=out, dtype=acc)

        def power(v, out=None):
            a = np.abs(v, out=out, dtype=acc)
            return np.power(a, acc.type(p), out=a)

        return power

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
        return a[None, None] if spec.data_format == "channels_first" else a[None, ..., None]

    def _max_indices(self, x: np.ndarray, plan: PoolPlan, out: np.ndarray,
                     idx: np.ndarray) -> None:
        """Max with indices: one pass per spatial dim, innermost first."""
        spec = plan.spec
        dims = _plan_dims(plan)
        axis0, s0, lo0, ext0 = dims[0].axis, spec.stride[0], plan.pads[0][0], spec.extent[0]

        def block(outer: tuple[slice, ...], o0: int, o1: int, scratch: _Scratch) -> None:
            rows = _at(axis0, slice(o0, o1))
            r0 = max(0, o0 * s0 - lo0)  # the input rows the block reads
            r1 = min(plan.in_size[0], (o1 - 1) * s0 - lo0 + ext0)
            src, src_idx = x[outer][_at(axis0, slice(r0, r1))], None
            for d in reversed(range(spec.ndim)):
                dim = dims[d]
                if d == 0:
                    if (o0, o1) != (0, plan.out_size[0]):
                        dim = _dim(plan, 0, o0, o1, base=r0)
                    dst, dst_idx = out[outer][rows], idx[outer][rows]
                else:
                    shape = list(src.shape)
                    shape[dim.axis] = plan.out_size[d]
                    dst = scratch.get(d % 2, tuple(shape), x.dtype)
                    dst_idx = scratch.get(2 + d % 2, tuple(shape), np.dtype(np.int64))
                _argmax_pass(src, src_idx, dst, dst_idx, dim)
                src, src_idx = dst, dst_idx

        _run(block, _schedule(plan, x.shape, x.dtype.itemsize + 8, idx.nbytes))
        if plan.all_padding_windows:
            # a window that holds no input cell has no index (its value is already -inf)
            np.copyto(idx, -1, where=self._spatial_view(plan.empty_windows, spec))

    def global_pool(self, x: np.ndarray, spec: GlobalSpec):
        axes = spec.spatial_axes
        acc = _acc_dtype(x.dtype)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if spec.mode == "max":  # (ml_dtypes' bfloat16 max warns on NaN)
                return np.max(x, axis=axes, keepdims=spec.keepdims)
            if spec.mode == "avg":
                out = np.mean(x, axis=axes, dtype=acc, keepdims=spec.keepdims)
            else:
                out = np.sum(np.abs(x, dtype=acc) ** spec.p, axis=axes,
                             keepdims=spec.keepdims) ** (1.0 / spec.p)
            return out.astype(x.dtype, copy=False)  # past float16's range: inf, silently

    def adaptive_pool(self, x: np.ndarray, plan: AdaptivePlan):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return self._adaptive(x, plan)

    def _adaptive(self, x: np.ndarray, plan: AdaptivePlan):
        spec = plan.spec
        if spec.mode == "avg" or not spec.return_indices:
            # bins tap by tap, one dim at a time (outermost first): tap t of every bin is
            # one gather along the dim, added (or maxed) into the bins it belongs to
            avg = spec.mode == "avg"
            acc = _acc_dtype(x.dtype) if avg or _half(x.dtype) else x.dtype
            out = x
            for d, axis in enumerate(spec.spatial_axes):
                out = self._bins(out, plan, d, axis, np.add if avg else np.maximum, acc)
            if avg:
                counts = np.ones((), dtype=acc)
                for st, en in zip(plan.starts, plan.ends):
                    counts = np.multiply.outer(counts, np.subtract(en, st, dtype=acc))
                out /= self._spatial_view(counts, spec)
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
    def _bins(a: np.ndarray, plan: AdaptivePlan, d: int, axis: int, op, acc) -> np.ndarray:
        starts = np.asarray(plan.starts[d])
        widths = np.asarray(plan.ends[d]) - starts
        out = np.take(a, starts, axis=axis).astype(acc, copy=False)
        for t in range(1, int(widths.max())):
            bins = np.flatnonzero(widths > t)
            cells = np.take(a, starts[bins] + t, axis=axis)
            if len(bins) == len(starts):
                op(out, cells, out=out)
            else:
                ix = _at(axis, bins)
                out[ix] = op(out[ix], cells)
        return out

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
        size, plane = math.prod(out_size), math.prod(yc.shape[2:])
        flat_i = ic.reshape(n, c, plane).astype(np.int64)
        if flat_i.size and flat_i.max() >= size:
            raise ValueError(f"an index ({int(flat_i.max())}) is outside the output plane "
                             f"{out_size!r}")
        flat_i = np.where(flat_i < 0, size, flat_i)
        out = np.zeros((n, c, size + 1), dtype=y.dtype)
        np.put_along_axis(out, flat_i, yc.reshape(n, c, plane), axis=2)
        out = out[:, :, :size].reshape(n, c, *out_size)
        return out if cf else np.moveaxis(out, 1, -1)


@lru_cache(maxsize=64)
def _dtype_name(dtype: np.dtype) -> str:
    return str(dtype)


@lru_cache(maxsize=256)
def _divisor_map(plan: PoolPlan, dtype: np.dtype) -> np.ndarray:
    return plan.divisor_map.astype(dtype)


BACKEND = NumpyBackend()
