"""The NumPy backend's speed routes: the same plan computed faster, and their tuning.

Each route has a name in ``BACKEND.speed_routes`` and is asked for with
``config.take_route(name, auto)`` in the caller's thread (the switch and the tuning are per
thread), only where it applies; ``auto`` is :class:`Tuning`'s answer (change it with
:func:`tuned`; docs/benchmarks.md). translate.py calls each at one hook marked ``# route``.
``pa.speed_routes("off")`` leaves the plain translation: the whole job as one block, every
tap a strided slice, in the caller's thread.

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
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from pooladapt import config
from pooladapt.backends.numpy import quirks
from pooladapt.backends.numpy.ops import DimPass, Scratch, at
from pooladapt.plan import PoolPlan

BLOCKS, PHASES, THREADS = "numpy.blocks", "numpy.phases", "numpy.threads"
ROUTES = (BLOCKS, PHASES, THREADS)


@dataclass(frozen=True)
class Tuning(config.Tuning):
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
        if self.threads is None:  # the automatic count: check the other fields
            replace(self, threads=1)
            return
        for name in ("block_bytes", "threads"):  # a block and a pool need at least 1
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ValueError(f"Tuning.{name} must be >= 1, got {value}")
        super().__post_init__()


TUNING = config.TuningSlot("numpy", Tuning())
DEFAULT_TUNING = TUNING.default
tuning = TUNING.get
"""The NumPy backend's thresholds here and now (``DEFAULT_TUNING`` unless changed)."""
tuned = TUNING.tuned
"""Change some thresholds inside a ``with`` block (per thread and asyncio task); unknown
names raise TypeError, bad values TypeError or ValueError:
``with tuned(block_bytes=1 << 16, threads=2): ...``."""


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


# ---------------------------------------------------------------------------- blocks and threads

Block = tuple[tuple[slice, ...], int, int]  # (outer index, o0, o1): outputs [o0, o1) of dim 0


class Schedule(NamedTuple):
    """The blocks a job runs in, in how many groups (1: the caller's thread), on a pool of
    ``threads`` workers."""

    blocks: list[Block]
    groups: int
    threads: int = 1


def schedule(plan: PoolPlan, shape: tuple[int, ...], itemsize: int, out_bytes: int) -> Schedule:
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
        return Schedule([((slice(None),), 0, out0)], 1)
    cut = list(blocks(plan, shape, itemsize, budget))
    return Schedule(cut, min(workers, len(cut)), workers)


def blocks(plan: PoolPlan, shape: tuple[int, ...], itemsize: int, budget: int) -> Iterator[Block]:
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


def run(fn: Callable[[tuple[slice, ...], int, int, Scratch], None], sched: Schedule) -> None:
    """``fn(*block, scratch)`` for every block of the schedule: one group of blocks and one
    scratch per worker (NumPy releases the GIL inside its loops)."""

    def run_group(group: list[Block]) -> None:
        scratch = Scratch()
        with quirks.quiet():
            for b in group:
                fn(*b, scratch)

    cut, groups, threads = sched
    if groups < 2:
        return run_group(cut)
    list(_executor(threads).map(run_group, [cut[i::groups] for i in range(groups)]))


# ---------------------------------------------------------------------------- stride phases


def phases(plan: PoolPlan, dims: tuple[DimPass, ...], shape: tuple[int, ...],
           rows: int) -> tuple[bool, ...]:
    """Per pass of the separable reduction of a block of input ``shape`` (``rows`` output rows
    of dim 0): whether it splits its source by stride phase (numpy.phases)."""
    tune, sizes, taken = tuning(), list(shape), []
    for d, dim in enumerate(dims):
        short = math.prod(sizes[dim.axis + 1:]) < tune.short_run
        taken.append(config.take_route(PHASES, short and math.prod(sizes) >= tune.phase_min))
        sizes[dim.axis] = rows if d == 0 else plan.out_size[d]
    return tuple(taken)


def phase_reduce(src: np.ndarray, dst: np.ndarray, dim: DimPass, op: Any, identity: Any,
                 scratch: Scratch, transform: Any = None, stage: bool = False) -> None:
    """``ops.reduce_dim`` for short trailing runs, where a strided slice costs a loop
    per run.

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
        np.copyto(staged, src[at(axis, slice(base, stop))])
        src = staged
    buffers = {}
    for p in sorted({p for _, p in shifts}):
        buf = scratch.get(("phase", p), (*lead, length, *trail), dst.dtype)
        first = max(0, -((p - base) // stride))  # the j whose cells the source holds
        last = min(length, (base + src.shape[axis] - p + stride - 1) // stride)
        if first < last:
            start = stride * first + p - base
            part = buf[at(axis, slice(first, last))]
            cells = src[at(axis, slice(start, start + stride * (last - first - 1) + 1, stride))]
            if transform is None:
                np.copyto(part, cells, casting="unsafe")
            else:
                transform(cells, part)
        buffers[p] = buf.reshape(-1)
    direct = length == m and dst.flags.c_contiguous
    work = dst if direct else scratch.get("work", (*lead, length, *trail), dst.dtype)
    flat, size = work.reshape(-1), work.size
    todo = [(t, p, k * run) for t, (k, p) in zip(taps, shifts)]
    full = [item for item in todo if item[0].full]  # a full tap has a shift >= 0
    if len(full) >= 2:
        (_, pa, da), (_, pb, db) = full[:2]
        end = size - max(da, db)
        op(buffers[pa][da:da + end], buffers[pb][db:db + end], out=flat[:end])
        todo = [item for item in todo if item is not full[0] and item is not full[1]]
    else:
        work.fill(identity)
    for t, p, delta in todo:
        kept = [(ix, work[ix].copy()) for ix in (at(axis, slice(0, t.dst.start)),
                                                 at(axis, slice(t.dst.stop, m)))]
        lo, hi = max(0, -delta), min(size, size - delta)
        op(flat[lo:hi], buffers[p][lo + delta:hi + delta], out=flat[lo:hi])
        for ix, values in kept:
            work[ix] = values
    if not direct:
        np.copyto(dst, work[at(axis, slice(0, m))])
