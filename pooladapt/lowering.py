"""Framework-neutral constants a backend lowers a plan with, written once.

A backend maps a resolved plan (``pooladapt.plan``) onto its framework's ops; what does not
depend on the framework is computed here, from the plan alone, cached by plan: the value
padding takes in a max, the accumulation dtype, the window taps along each dim, per-plane
flat indices of window cells, whether a framework's native pooling op (symmetric padding,
a ceil flag, ``SAME``/``VALID``) gives the plan's windows and with which arguments, the lp
steps, and the unpool index check; and, for the backends that read a max's input on the
host, the check for the NaN or -inf a NaN-dropping native max gets wrong. Everything is
checked against hand-computed values in ``tests/core/test_lowering.py``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import operator
from functools import lru_cache
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from pooladapt.plan import (
    AdaptivePlan,
    PoolPlan,
    output_size,
    resolve_adaptive,
    resolve_plan,
    same_pads,
)
from pooladapt.spec import AdaptiveSpec, PoolSpec

if TYPE_CHECKING:  # types only
    from pooladapt.spec import GlobalSpec

# ---------------------------------------------------------------------------- dtypes

HALF_DTYPES = ("float16", "bfloat16")


def is_integer(dtype_name: str) -> bool:
    return dtype_name.startswith(("int", "uint"))


def lowest(dtype_name: str) -> float | int:
    """The value of a padded cell in a max: it never wins. -inf for floats, the dtype's
    minimum for integers."""
    return int(np.iinfo(dtype_name).min) if is_integer(dtype_name) else -math.inf


def accumulator(dtype_name: str) -> str:
    """The dtype sums (avg, lp) are computed in: float64 for float64, float32 for the rest
    (float16 and bfloat16 accumulate in float32: the mean of 60000s is 60000)."""
    return "float64" if dtype_name == "float64" else "float32"


_CHECK_BLOCK = 1 << 16  # 2-byte cells per block of the bit check: its scratch stays in cache


@lru_cache(maxsize=8)
def _infinity_bits(dtype: np.dtype) -> tuple[np.uint16, np.uint16, np.uint16]:
    """+inf's and -inf's bits in a 2-byte float dtype, and the mask of the magnitude bits."""
    inf = int(np.array(np.inf, dtype).view(np.uint16))
    return np.uint16(inf), np.uint16(inf | 0x8000), np.uint16(0x7FFF)


def holds_nan_or_minus_inf(a: np.ndarray) -> bool:
    """Whether the float array ``a`` (read on the host) holds a NaN or -inf: the cells a
    NaN-dropping native max gets wrong. NumPy's minimum propagates NaN; for 2-byte floats
    (float16, bfloat16), whose NumPy arithmetic converts every element (5x slower), the bits
    decide, block by block: a NaN's magnitude bits exceed +inf's, and as unsigned integers
    -inf (+inf with the sign bit) and the negative NaNs are the largest patterns."""
    if a.dtype.kind in "biu":
        raise TypeError(f"holds_nan_or_minus_inf needs a float array, got dtype {a.dtype}")
    if not a.size:
        return False
    if a.dtype.itemsize == 2:
        inf, minus_inf, magnitude = _infinity_bits(a.dtype)
        bits = a.view(np.uint16).reshape(-1)  # a copy only where a's strides need one
        scratch = np.empty(min(bits.size, _CHECK_BLOCK), np.uint16)
        for start in range(0, bits.size, _CHECK_BLOCK):
            block = bits[start:start + _CHECK_BLOCK]
            if np.maximum.reduce(block) >= minus_inf:
                return True
            low = np.bitwise_and(block, magnitude, out=scratch[:block.size])
            if np.maximum.reduce(low) > inf:
                return True
        return False
    if a.dtype.kind == "f":  # NumPy's own floats: no warning (and no errstate's microsecond)
        return not np.minimum.reduce(a, None) > -np.inf
    with np.errstate(invalid="ignore"):  # ml_dtypes' minimum may warn on NaN
        return not np.minimum.reduce(a, None) > -np.inf


# ---------------------------------------------------------------------------- taps


class Tap(NamedTuple):
    """Tap ``tap`` of the window along one dim: output ``o`` reads input cell
    ``o * stride + offset``, which is inside the input for outputs ``first <= o < last``
    (``first == last``: never)."""

    tap: int
    offset: int
    first: int
    last: int

    def reaches_all(self, out_size: int) -> bool:
        return self.first == 0 and self.last == out_size


@lru_cache(maxsize=1024)
def dim_taps(plan: PoolPlan, dim: int) -> tuple[Tap, ...]:
    """Every tap of the window along ``dim``, in window order."""
    spec = plan.spec
    s, n, m = spec.stride[dim], plan.in_size[dim], plan.out_size[dim]
    taps = []
    for t in range(spec.window[dim]):
        offset = t * spec.dilation[dim] - plan.pads[dim][0]
        first = min(m, max(0, -(offset // s)))
        last = max(first, min(m, (n - 1 - offset) // s + 1))
        taps.append(Tap(t, offset, first, last))
    return tuple(taps)


def plane_strides(in_size: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides of a spatial plane: a cell's per-plane flat index is their dot."""
    return tuple(math.prod(in_size[d + 1:]) for d in range(len(in_size)))


def _table(coords: list[np.ndarray], valid: list[np.ndarray],
           in_size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dim (out, width) coordinate and validity tables -> (windows, cells) flat indices
    (0 where invalid) and validity, windows and cells both in row-major order."""
    flat: np.ndarray = np.zeros((), np.int64)
    ok: np.ndarray = np.ones((), bool)
    for c, v, stride in zip(coords, valid, plane_strides(in_size)):
        flat = np.add.outer(flat, c.astype(np.int64) * stride)
        ok = np.logical_and.outer(ok, v)
    nd = len(coords)
    order = [*range(0, 2 * nd, 2), *range(1, 2 * nd, 2)]
    windows = math.prod(c.shape[0] for c in coords)
    flat = flat.transpose(order).reshape(windows, -1)
    ok = ok.transpose(order).reshape(windows, -1)
    flat = np.where(ok, flat, 0)
    flat.flags.writeable = ok.flags.writeable = False
    return flat, ok


@lru_cache(maxsize=256)
def window_cells(plan: PoolPlan) -> tuple[np.ndarray, np.ndarray]:
    """``(flat, valid)`` of shape (windows, taps): the per-plane flat input index of every tap
    of every window (0 where the tap is in padding or past it, ``valid`` False there);
    windows and taps in row-major order. Read-only (cached)."""
    spec = plan.spec
    coords, valid = [], []
    for d in range(spec.ndim):
        starts = np.asarray(plan.window_starts(d), np.int64)
        c = starts[:, None] + spec.dilation[d] * np.arange(spec.window[d])[None, :]
        coords.append(c)
        valid.append((c >= 0) & (c < plan.in_size[d]))
    return _table(coords, valid, plan.in_size)


@lru_cache(maxsize=256)
def bin_cells(plan: AdaptivePlan) -> tuple[np.ndarray, np.ndarray]:
    """``(flat, valid)`` of shape (bins, max bin cells) for an adaptive plan, as
    :func:`window_cells` (cells past a bin's end are invalid)."""
    pairs = [plan.gather(d) for d in range(plan.spec.ndim)]
    return _table([p[0] for p in pairs], [p[1] for p in pairs], plan.in_size)


@lru_cache(maxsize=256)
def tap_index_maps(plan: PoolPlan) -> np.ndarray:
    """int64 array (taps, *out_size): per tap in row-major window order, the per-plane flat
    input index each window reads there, -1 in padding. Read-only (cached)."""
    flat, valid = window_cells(plan)
    maps: np.ndarray = np.where(valid, flat, -1).T.reshape(-1, *plan.out_size)
    maps.flags.writeable = False
    return maps


@lru_cache(maxsize=256)
def first_real_taps(plan: PoolPlan) -> np.ndarray:
    """bool array (taps, *out_size): True at each window's first tap inside the input (the
    cell that beats the padding before it when equal: a max of the dtype's lowest values
    gives its index and gradient to that cell). Read-only (cached)."""
    real = tap_index_maps(plan) >= 0
    seen = np.logical_or.accumulate(real, axis=0)
    first: np.ndarray = real & ~np.concatenate([np.zeros_like(seen[:1]), seen[:-1]])
    first.flags.writeable = False
    return first


@lru_cache(maxsize=256)
def window_origins(plan: PoolPlan) -> np.ndarray:
    """int64 array of shape ``out_size``: the per-plane flat index of every window's first
    tap, computed with its coordinates as they are (negative inside the low padding)."""
    base: np.ndarray = np.zeros((), np.int64)
    for d, stride in enumerate(plane_strides(plan.in_size)):
        base = np.add.outer(base, np.asarray(plan.window_starts(d), np.int64) * stride)
    base.flags.writeable = False
    return base


def tap_offsets(plan: PoolPlan) -> tuple[tuple[int, ...], ...]:
    """Per tap in row-major window order, its per-dim offset from the window's first cell."""
    spec = plan.spec
    return tuple(itertools.product(*(tuple(t * spec.dilation[d] for t in range(spec.window[d]))
                                     for d in range(spec.ndim))))


# ---------------------------------------------------------------------------- native ops

CeilRule = Literal["drop", "full"]


def native_output_size(n: int, pad: int, extent: int, stride: int, ceil: bool,
                       rule: CeilRule = "drop") -> int:
    """Output size of a native pool padded by ``pad`` on both sides of a dim of ``n`` cells.
    ``ceil`` with rule ``drop`` (PyTorch, ONNX): a last window that would start in the high
    padding is dropped; ``full`` (MXNet's ``pooling_convention='full'``): it is kept."""
    return output_size(n, pad, pad, extent, stride, ceil, drop=rule == "drop")


class Cover(NamedTuple):
    """A native pool call whose windows include the plan's: pad ``pads[d]`` cells on both
    sides of dim d, the ceil flag ``ceil``; it computes ``sizes[d]`` windows, of which the
    plan's are ``skip[d]`` to ``skip[d] + out_size[d]`` (``crop``: not all of them)."""

    pads: tuple[int, ...]
    ceil: bool
    sizes: tuple[int, ...]
    skip: tuple[int, ...]
    crop: bool


@lru_cache(maxsize=1024)
def symmetric_cover(plan: PoolPlan, rule: CeilRule | None, pad_limit: tuple[int, ...],
                    skip_windows: bool = False) -> Cover | None:
    """How a native pool with symmetric padding gives the plan's windows, or None.

    A native window must start on every plan window start: pad the plan's low padding on
    both sides (``skip_windows``: or that plus a multiple of the stride, whose leading
    windows are cropped). ``pad_limit[d]`` is the largest pad the op takes (PyTorch:
    half the extent; MXNet: window - 1). Floor is tried first, then ceil with ``rule``
    (None: the op has no ceil mode). Cells the native op pads beyond the plan's padding, or
    its windows past the plan's, are cropped or never win: valid for max and sums, but
    averages must check the divisor themselves.
    """
    spec = plan.spec
    for ceil in (False, True) if rule else (False,):
        found: list[tuple[int, int, int]] = []
        for d in range(spec.ndim):
            lo, s = plan.pads[d][0], spec.stride[d]
            candidates = range(lo, pad_limit[d] + 1, s) if skip_windows else range(lo, lo + 1)
            hit = None
            for pad in candidates:
                if pad > pad_limit[d]:
                    break
                size = native_output_size(plan.in_size[d], pad, spec.extent[d], s, ceil,
                                          rule or "drop")
                skip = (pad - lo) // s
                if size - skip >= plan.out_size[d]:
                    hit = (pad, size, skip)
                    break
            if hit is None:
                break
            found.append(hit)
        else:
            pads = tuple(f[0] for f in found)
            sizes = tuple(f[1] for f in found)
            skips = tuple(f[2] for f in found)
            return Cover(pads, ceil, sizes, skips, any(skips) or sizes != plan.out_size)
    return None


def same_windows(plan: PoolPlan) -> bool:
    """True when TensorFlow's/ONNX's ``SAME`` (``SAME_UPPER``) padding gives exactly the
    plan's windows: the same first window start and count in every dim (the high side's
    extra padding never matters to a max or a sum). Averages check their divisor apart."""
    spec = plan.spec
    for d in range(spec.ndim):
        n, s = plan.in_size[d], spec.stride[d]
        lo, _ = same_pads(n, spec.extent[d], s, lower=False)
        if plan.pads[d][0] != lo or plan.out_size[d] != -(-n // s):
            return False
    return True


def valid_windows(plan: PoolPlan) -> bool:
    """True when ``VALID`` padding gives exactly the plan's windows: no padding before the
    first window and the floor count."""
    spec = plan.spec
    return all(plan.pads[d][0] == 0 and plan.out_size[d]
               == native_output_size(plan.in_size[d], 0, spec.extent[d], spec.stride[d], False)
               for d in range(spec.ndim))


# ---------------------------------------------------------------------------- lp and unpool


class LpSteps(NamedTuple):
    """lp pooling as ops: the window sum of ``|x| ** power`` (``power`` 1: ``abs``; 2: a
    square, no abs needed), then ``** root`` (None for p = 1; 0.5: ``sqrt``). A zero sum
    gives 0 and passes no gradient (the root's slope at 0 is not used)."""

    power: float
    root: float | None


def lp_steps(p: float) -> LpSteps:
    return LpSteps(p, None if p == 1.0 else 1.0 / p)


def check_unpool_index(top: int, out_size: tuple[int, ...]) -> None:
    """ValueError if the largest unpool index ``top`` is outside the output plane."""
    if top >= math.prod(out_size):
        raise ValueError(f"an index ({top}) is outside the output plane {tuple(out_size)!r} "
                         f"({math.prod(out_size)} cells)")


# ---------------------------------------------------------------------------- the plan's ONNX node

ONNX_OPSET = 22
"""The opset whose pooling operators define the canonical meaning (API.md §1). The pooling
operators have not changed since (onnx 1.23's opset 28 still has their version 22)."""

ONNX_POOL_OPS = {"max": "MaxPool", "avg": "AveragePool", "lp": "LpPool"}
ONNX_GLOBAL_OPS = {"max": "GlobalMaxPool", "avg": "GlobalAveragePool", "lp": "GlobalLpPool"}

# (op, attribute) -> the first opset whose version of the op has it (ONNX's operator docs)
_ONNX_SINCE = {("MaxPool", "dilations"): 10, ("MaxPool", "ceil_mode"): 10,
               ("AveragePool", "count_include_pad"): 7, ("AveragePool", "ceil_mode"): 10,
               ("AveragePool", "dilations"): 19, ("LpPool", "ceil_mode"): 18,
               ("LpPool", "dilations"): 18}
OnnxAttribute = int | float | str | tuple[int, ...]


class OnnxNode(NamedTuple):
    """One ONNX operator node: ``op_type`` and its attributes as ``onnx.helper.make_node``
    takes them (``attrs``); ``outputs`` is 2 for a MaxPool that also gives ``Indices`` (flat
    over N*C*plane: ``pooladapt.indices.from_onnx`` converts them). Input: the NC* tensor."""

    op_type: str
    attributes: tuple[tuple[str, OnnxAttribute], ...]
    outputs: int = 1

    @property
    def attrs(self) -> dict[str, OnnxAttribute]:
        return dict(self.attributes)


def onnx_dtypes(op_type: str, opset: int = ONNX_OPSET) -> tuple[str, ...]:
    """The input dtypes ONNX's ``op_type`` takes at ``opset`` (its type constraint T): floats
    (bfloat16 from opset 22), and int8/uint8 for MaxPool from opset 12."""
    floats = ("float16", "float32", "float64") + (("bfloat16",) if opset >= 22 else ())
    return floats + (("int8", "uint8") if op_type == "MaxPool" and opset >= 12 else ())


def _check_opset(opset: object) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 7:
        raise ValueError(f"opset must be an int >= 7 (the first with count_include_pad), "
                         f"got {opset!r}")
    return opset


def _int_p(p: float) -> int | str:
    """LpPool's ``p`` is an integer attribute (a float only in opset 1)."""
    return int(p) if float(p).is_integer() else (
        f"ONNX LpPool's p is an integer attribute; p={p!r} is not an integer")


@lru_cache(maxsize=1024)
def _onnx_pool(plan: PoolPlan, opset: int, dtype: str | None) -> OnnxNode | str:
    spec = plan.spec
    op = ONNX_POOL_OPS[spec.mode]
    if dtype is not None and dtype not in onnx_dtypes(op, opset):
        return f"ONNX {op} (opset {opset}) takes {', '.join(onnx_dtypes(op, opset))}, not {dtype}"
    if plan.all_padding_windows and (spec.mode == "max" or (
            spec.mode == "avg" and not spec.count_include_pad)):
        return (f"a window holds padding only, and ONNX {op} leaves its value undefined "
                "(pooladapt: -inf and index -1 for max, 0 / 0 = NaN for avg)")

    def has(attribute: str) -> bool:
        return opset >= _ONNX_SINCE.get((op, attribute), 1)

    if any(d != 1 for d in spec.dilation) and not has("dilations"):
        return f"ONNX {op} has dilations from opset {_ONNX_SINCE[(op, 'dilations')]}"
    lows, highs = [lo for lo, _ in plan.pads], [hi for _, hi in plan.pads]
    ceil = 0
    floor_sizes = tuple(output_size(n, lo, hi, e, s, False) for n, (lo, hi), e, s in zip(
        plan.in_size, plan.pads, spec.extent, spec.stride))
    if floor_sizes != plan.out_size:  # ceil mode adds a window, which starts in the input
        if has("ceil_mode"):
            ceil = 1
        elif not spec.count_include_pad:  # the ceil cells as padding: never counted, never won
            highs = [hi + e for hi, e in zip(highs, plan.ceil_extra)]
        else:
            return (f"ceil_mode with count_include_pad: ONNX {op} has ceil_mode from opset "
                    f"{_ONNX_SINCE[(op, 'ceil_mode')]}, and padding would count the ceil cells")
    attrs: list[tuple[str, OnnxAttribute]] = [
        ("kernel_shape", spec.window), ("strides", spec.stride), ("pads", (*lows, *highs))]
    if has("dilations"):
        attrs.append(("dilations", spec.dilation))
    if has("ceil_mode"):
        attrs.append(("ceil_mode", ceil))
    if op == "AveragePool":
        attrs.append(("count_include_pad", int(spec.count_include_pad)))
    if op == "LpPool":
        p = _int_p(spec.p)
        if isinstance(p, str):
            return p
        attrs.append(("p", p))
    return OnnxNode(op, tuple(attrs), 2 if spec.return_indices else 1)


def onnx_pool_node(plan: PoolPlan, opset: int = ONNX_OPSET,
                   dtype: str | None = None) -> OnnxNode | None:
    """The one ONNX node (MaxPool, AveragePool or LpPool, opset ``opset``) that computes
    ``plan`` exactly on an NC* input of ``dtype`` (any dtype when None), or None when ONNX
    cannot express it (:func:`onnx_pool_gap` says why).

    Explicit ``pads`` ``[x1_begin, x2_begin, ..., x1_end, ...]`` always (ONNX calls
    ``auto_pad`` deprecated; a resolved plan never needs it: :func:`onnx_auto_pad`). Where
    ceil mode adds a window, ``ceil_mode=1`` (that window starts inside the input, so the rule
    that drops one starting in the right padding, written in the docs from opset 22, never
    matters); before the op has ``ceil_mode``, the ceil cells fold into the end pads (max, lp
    and avg without ``count_include_pad``, which never count them).

    >>> plan = make_spec("avg", 3, 2, 1, count_include_pad=True, ndim=1).plan((1, 5, 1))
    >>> onnx_pool_node(plan).attrs["pads"]
    (1, 1)
    """
    node = _onnx_pool(plan, _check_opset(opset), dtype)
    return node if isinstance(node, OnnxNode) else None


def onnx_pool_gap(plan: PoolPlan, opset: int = ONNX_OPSET, dtype: str | None = None) -> str | None:
    """Why no single ONNX node computes ``plan`` (None when :func:`onnx_pool_node` gives one)."""
    node = _onnx_pool(plan, _check_opset(opset), dtype)
    return None if isinstance(node, OnnxNode) else node


def _onnx_global(spec: GlobalSpec, opset: int, dtype: str | None) -> OnnxNode | str:
    op = ONNX_GLOBAL_OPS[spec.mode]
    if dtype is not None and dtype not in onnx_dtypes(op, opset):
        return f"ONNX {op} (opset {opset}) takes {', '.join(onnx_dtypes(op, opset))}, not {dtype}"
    if spec.mode != "lp":
        return OnnxNode(op, ())
    p = _int_p(spec.p)
    return OnnxNode(op, (("p", p),)) if isinstance(p, int) else p


def onnx_global_node(spec: GlobalSpec, opset: int = ONNX_OPSET,
                     dtype: str | None = None) -> OnnxNode | None:
    """The ONNX node of a global pool (GlobalMaxPool, GlobalAveragePool, GlobalLpPool with an
    integer ``p``; its output keeps the spatial dims as 1s), or None (:func:`onnx_global_gap`)."""
    node = _onnx_global(spec, _check_opset(opset), dtype)
    return node if isinstance(node, OnnxNode) else None


def onnx_global_gap(spec: GlobalSpec, opset: int = ONNX_OPSET,
                    dtype: str | None = None) -> str | None:
    """Why no ONNX node computes the global pool ``spec`` (None when there is one)."""
    node = _onnx_global(spec, _check_opset(opset), dtype)
    return None if isinstance(node, OnnxNode) else node


def onnx_exportable(node: OnnxNode | None) -> OnnxNode | None:
    """``node`` where an exporter may emit it alone: one output (indices are not exported) and
    pads smaller than its kernel (onnxruntime 1.32 refuses the rest: onnxruntime quirk 3,
    ``test_pads_must_be_smaller_than_the_kernel``); else None."""
    if node is None or node.outputs != 1:
        return None
    kernel, pads = node.attrs.get("kernel_shape"), node.attrs.get("pads")
    if isinstance(kernel, tuple) and isinstance(pads, tuple) and any(
            p >= k for p, k in zip(pads, kernel + kernel)):
        return None
    return node


def onnx_auto_pad(spec: PoolSpec) -> str | None:
    """The ``auto_pad`` a node needs only when it is built without the input's spatial size
    (symbolic dims): ``SAME_UPPER``/``SAME_LOWER``/``VALID`` for those paddings, None for
    explicit pads (the same for every size). A plan's node never needs it: explicit pads are
    exact and the spec calls auto_pad deprecated. onnxruntime 1.32 computes SAME pads without
    the dilation (tests/onnxruntime/test_framework_notes.py)."""
    rules = {"same_upper": "SAME_UPPER", "same_lower": "SAME_LOWER", "valid": "VALID"}
    return rules[spec.padding] if isinstance(spec.padding, str) else None


# ---------------------------------------------------------------------------- plans as plain values
# (appended by the torch backend: torch.compile hands host code plain values only)


PlanValues = tuple[str, tuple[object, ...], tuple[int, ...]]


def plan_values(plan: PoolPlan | AdaptivePlan) -> PlanValues:
    """The plan as plain values: its spec's class name and fields, and its spatial size (each
    passed through ``operator.index``, which makes a compiler's symbolic size its value). A
    compiler that traces Python hands host code only such values (torch.compile: a plan it
    builds while tracing is no Python object there); :func:`plan_from_values` inverts it.

    >>> plan = make_spec("max", 2, ndim=1).plan((1, 4, 1))
    >>> plan_values(plan)[::2]
    ('PoolSpec', (4,))
    """
    spec = plan.spec
    fields = tuple(getattr(spec, f.name) for f in dataclasses.fields(spec))
    return type(spec).__name__, fields, tuple(operator.index(n) for n in plan.in_size)


def plan_from_values(values: PlanValues) -> PoolPlan | AdaptivePlan:
    """The core's plan (the cached one) that :func:`plan_values` describes."""
    kind, fields, in_size = values
    if kind == "PoolSpec":
        return resolve_plan(PoolSpec(*fields), in_size)  # type: ignore[arg-type]
    if kind == "AdaptiveSpec":
        return resolve_adaptive(AdaptiveSpec(*fields), in_size)  # type: ignore[arg-type]
    raise ValueError(f"plan values must name a PoolSpec or an AdaptiveSpec, got {kind!r}")
