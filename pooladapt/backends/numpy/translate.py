"""The plan mapped onto NumPy's ops. Read this file first.

One rank-generic path for 1-D, 2-D and 3-D, in the caller's layout. NumPy has no pooling op,
and pooling is separable: a window reduction equals one reduction per spatial dim. A pass
over one dim (``ops.reduce_dim``; with indices ``ops.first_max_dim``) loops over that dim's
taps (``lowering.dim_taps`` as slices: ``ops.dim_pass``), never over output cells: each tap is
one strided slice of the pass's source combined in place into its destination, so a k x k
window costs 2k slice operations instead of k*k. Taps that land in padding are simply not
read: no padded copy is made and padding can never win a max. How each plan feature is
realised:

* **max**: ``np.maximum`` tap by tap (NaN propagates); 16-bit floats through float32
  (``quirks.max_dtype``: exact, and vectorised).
* **avg**: sums in ``lowering.accumulator``'s dtype, divided by ``plan.uniform_divisor``, or
  by the plan's divisor map where windows differ.
* **lp** (``lowering.lp_steps``): the first pass sums ``|x| ** p``, the last takes the root.
* **indices**: one pass per dim, innermost first, each keeping the first maximum (or first
  NaN) of its row and its per-plane flat index: the first row holding the maximum is then
  the first maximum in row-major window order. A window of padding only gets index -1.
* **global**: NumPy reductions; **adaptive**: bins tap by tap, one dim at a time (with
  indices: ``family.bin_first_max``, by ``argmax``); **unpool**: ``family.max_unpool``,
  scattering by ``put_along_axis``.

Speed routes (fast.py) are asked at the hooks marked ``# route``: blocks, threads, stride
phases. With every route off the whole job is one block, every tap a strided slice, in the
caller's thread.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from pooladapt import family, lowering
from pooladapt.backends.numpy import fast, ops, quirks
from pooladapt.plan import AdaptivePlan, PoolPlan
from pooladapt.spec import GlobalSpec


def pool(x: np.ndarray, plan: PoolPlan) -> Any:
    """Pool ``x`` (in the spec's layout) by the plan."""
    out = np.empty(plan.output_shape(x.shape), dtype=x.dtype)
    if plan.spec.return_indices:
        idx = np.empty(out.shape, dtype=np.int64)
        if out.size:
            max_with_indices(x, plan, out, idx)
        return out, idx
    if out.size:
        separable(x, plan, out)
    return out


def separable(x: np.ndarray, plan: PoolPlan, out: np.ndarray) -> None:
    """Max, avg or lp (no indices) into ``out``: one pass per spatial dim, outermost first."""
    spec = plan.spec
    is_max = spec.mode == "max"
    acc = quirks.max_dtype(x.dtype) if is_max else ops.accumulator(x.dtype)
    op, identity = (np.maximum, ops.lowest(acc)) if is_max else (np.add, 0)
    transform = ops.lp_power(spec.p, acc) if spec.mode == "lp" else None
    dims = ops.plan_passes(plan)
    last = len(dims) - 1
    schedule = fast.schedule(plan, x.shape, acc.itemsize, out.nbytes)  # route: blocks, threads
    outer, o0, o1 = schedule.blocks[0]
    phases = fast.phases(plan, dims, x[outer].shape, o1 - o0)  # route: stride phases

    def block(outer: tuple[slice, ...], o0: int, o1: int, scratch: ops.Scratch) -> None:
        part = o1 - o0 < plan.out_size[0]  # some output rows of dim 0 only
        block_out = out[outer][ops.at(dims[0].axis, slice(o0, o1))] if part else out[outer]
        src = x[outer]
        for d, dim in enumerate(dims):
            if d == 0 and part:
                dim = ops.dim_pass(plan, 0, o0, o1)
            if d == last and acc == out.dtype:
                dst = block_out
            else:
                shape = list(src.shape)
                shape[dim.axis] = block_out.shape[dim.axis]
                dst = scratch.get(d % 2, tuple(shape), acc)
            fn = transform if d == 0 else None
            if phases[d]:  # route: the source split by stride phase
                fast.phase_reduce(src, dst, dim, op, identity, scratch, fn, stage=d == 0)
            else:
                ops.reduce_dim(src, dst, dim, op, identity, fn)
            src = dst
        if not is_max:
            finish(src, plan, o0, o1)
        if src is not block_out:
            np.copyto(block_out, src, casting="unsafe")

    fast.run(block, schedule)




def finish(a: np.ndarray, plan: PoolPlan, o0: int, o1: int) -> None:
    """Divide sums by the plan's divisors (avg) or take the p-th root (lp), in place."""
    spec = plan.spec
    if spec.mode == "avg":
        divisor = plan.uniform_divisor
        if divisor is not None:
            a /= divisor if divisor else np.nan
        else:
            a /= plane_view(ops.divisor_map(plan, a.dtype)[o0:o1], spec.data_format)
        return
    root = lowering.lp_steps(spec.p).root
    if root == 0.5:
        np.sqrt(a, out=a)
    elif root is not None:
        np.power(a, a.dtype.type(root), out=a)


def plane_view(a: np.ndarray, data_format: str) -> np.ndarray:
    """An array over the spatial plane, viewed to broadcast against a pooled array."""
    return a[None, None] if data_format == "channels_first" else a[None, ..., None]


def max_with_indices(x: np.ndarray, plan: PoolPlan, out: np.ndarray, idx: np.ndarray) -> None:
    """Max with indices into ``out`` and ``idx``: one pass per spatial dim, innermost first."""
    spec = plan.spec
    dims = ops.plan_passes(plan)
    axis0, s0, lo0, ext0 = dims[0].axis, spec.stride[0], plan.pads[0][0], spec.extent[0]

    def block(outer: tuple[slice, ...], o0: int, o1: int, scratch: ops.Scratch) -> None:
        rows = ops.at(axis0, slice(o0, o1))
        r0 = max(0, o0 * s0 - lo0)  # the input rows the block reads
        r1 = min(plan.in_size[0], (o1 - 1) * s0 - lo0 + ext0)
        src, src_idx = x[outer][ops.at(axis0, slice(r0, r1))], None
        for d in reversed(range(spec.ndim)):
            dim = dims[d]
            if d == 0:
                if (o0, o1) != (0, plan.out_size[0]):
                    dim = ops.dim_pass(plan, 0, o0, o1, base=r0)
                dst, dst_idx = out[outer][rows], idx[outer][rows]
            else:
                shape = list(src.shape)
                shape[dim.axis] = plan.out_size[d]
                dst = scratch.get(d % 2, tuple(shape), x.dtype)
                dst_idx = scratch.get(2 + d % 2, tuple(shape), np.dtype(np.int64))
            ops.first_max_dim(src, src_idx, dst, dst_idx, dim)
            src, src_idx = dst, dst_idx

    # route: blocks, threads
    fast.run(block, fast.schedule(plan, x.shape, x.dtype.itemsize + 8, idx.nbytes))
    if plan.all_padding_windows:  # a window of padding only has no index (its value is -inf)
        np.copyto(idx, -1, where=plane_view(plan.empty_windows, spec.data_format))



def global_pool(x: np.ndarray, spec: GlobalSpec) -> Any:
    """NumPy reductions over the spatial axes, sums in the accumulator dtype."""
    axes = spec.spatial_axes
    with quirks.quiet():
        if spec.mode == "max":
            return np.max(x, axis=axes, keepdims=spec.keepdims)
        acc = ops.accumulator(x.dtype)
        if spec.mode == "avg":
            out = np.mean(x, axis=axes, dtype=acc, keepdims=spec.keepdims)
        else:
            out = np.sum(np.abs(x, dtype=acc) ** spec.p, axis=axes,
                         keepdims=spec.keepdims) ** (1.0 / spec.p)
        return out.astype(x.dtype, copy=False)  # past float16's range: inf, silently


def adaptive_pool(x: np.ndarray, plan: AdaptivePlan) -> Any:
    """Avg and max without indices: bins tap by tap, one dim at a time (outermost first), tap
    t of every bin one gather along the dim, added (or maxed) into the bins it belongs to.
    Max with indices: ``family.bin_first_max``, each bin's first maximum by ``argmax``."""
    spec = plan.spec
    with quirks.quiet():
        if spec.mode == "avg" or not spec.return_indices:
            avg = spec.mode == "avg"
            acc = ops.accumulator(x.dtype) if avg else quirks.max_dtype(x.dtype)
            out = x
            for d, axis in enumerate(spec.spatial_axes):
                out = ops.bins(out, plan, d, axis, np.add if avg else np.maximum, acc)
            if avg:
                counts = np.ones((), dtype=acc)
                for st, en in zip(plan.starts, plan.ends):
                    counts = np.multiply.outer(counts, np.subtract(en, st, dtype=acc))
                out /= plane_view(counts, spec.data_format)
            return out.astype(x.dtype, copy=False)
        return family.bin_first_max(ops.BIN_MAX, x, ops.flat_index(x.shape, spec.spatial_axes),
                                    family.plan_bins(plan))


max_unpool = partial(family.max_unpool, ops.UNPOOL)  # put_along_axis with a spare cell
