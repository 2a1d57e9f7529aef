"""Where onnxruntime's CPU kernels (1.32) differ from the canonical meaning, and what the
backend does instead. Each entry names its evidence: a test of the raw runtime in
``tests/onnxruntime/test_framework_notes.py`` (it asserts what onnxruntime does on this
machine, so the project notices when that changes) and, where there is one, a FRAMEWORK-NOTES
entry or public issue.

1. NaN in a max (``test_max_skips_a_nan_after_the_first_tap``; TF's and the ONNX reference
   evaluator's are alike, D5 and D6): MaxPool with ``Indices`` (and float64's) keeps a running
   maximum with ``>``, so ``[1, nan]`` gives 1 and ``[nan, 1]`` NaN; float16/32 MaxPool
   without ``Indices`` and GlobalMaxPool skip a NaN in most windows but not in all (1.32:
   ``[1, nan, 0, nan, 2]`` with kernel 5 gives NaN, and ``[nan, -inf]`` float32's lowest
   finite value). :func:`safe_max` runs the node again on the NaN mask: a window holding a
   NaN is NaN, its index the first NaN's.
2. Dtypes without a kernel (``test_kernel_dtypes``): MaxPool takes float16/32/64, int8 and
   uint8; AveragePool, LpPool and the global ops float16/32 only (ONNX also allows float64
   and, from opset 22, bfloat16); the Python binding takes no bfloat16 array at all.
   :func:`run_dtype` picks an exact stand-in (a max of integers or bfloat16 is exact in a
   wider type; float16 sums accumulate in float32 inside the kernels); float64 avg/lp and
   int64/uint64 max run the gather graph (``graphs.gather_session``).
3. Pads at least the kernel (``test_pads_must_be_smaller_than_the_kernel``): rejected when the
   session is built ("Pad should be smaller than kernel"), though ONNX allows any pads >= 0
   and ``same`` padding with dilation gives them: :func:`rejects_pads`, then the gather graph.
4. Windows of padding only (``test_windows_of_padding_only``): ONNX leaves them undefined
   (``lowering.onnx_pool_gap``); onnxruntime gives max -3.4e38, avg without
   count_include_pad 0. The gather graph gives -inf with index -1, and NaN (0 / 0).
5. An empty channel dim (``test_only_the_batch_may_be_empty``): "Only N can be zero"; the
   backend returns the empty result without a session.
6. MaxUnpool (``test_max_unpool_limits``): needs its output_shape input, rejects index -1 and
   takes float16/32 only; the backend scatters (ScatterElements) the values' bits instead.
7. GlobalLpPool (``test_global_lp_pool``): no kernel at opset 22 (only up to opset 21);
   :data:`KERNELS` has none, so LpPool runs over the whole plane.
8. -inf in a float32 max (``test_max_of_minus_infinity``): MaxPool without ``Indices`` (its
   fast kernel) and GlobalMaxPool start the running maximum at the lowest finite value, so a
   window of -inf only gives -3.4e38; MaxPool with ``Indices`` (and in float16/64) gives
   -inf. :func:`safe_max` asks MaxPool for its indices; a global max is MaxPool over the plane.

Pinned, no longer deviations: ceil-mode divisors with count_include_pad (FRAMEWORK-NOTES D4,
pytorch#183528: onnxruntime 1.32's kernel gives PyTorch's at opsets 11 to 22), the window that
would start in the right padding dropped (onnx#4958, §3 items 13-14), SAME_LOWER with strides
(D6 is the reference evaluator's bug). Measured for exporters, not used here: ``auto_pad``
SAME_UPPER/SAME_LOWER computes the pads without the dilation.
"""

from __future__ import annotations

import numpy as np

from pooladapt.backends.onnxruntime.graphs import Graph, tensor_type
from pooladapt.lowering import OnnxNode

KERNELS: dict[str, frozenset[str]] = {
    "MaxPool": frozenset({"float16", "float32", "float64", "int8", "uint8"}),
    "AveragePool": frozenset({"float16", "float32"}),
    "LpPool": frozenset({"float16", "float32"}),
    "GlobalMaxPool": frozenset({"float16", "float32"}),
    "GlobalAveragePool": frozenset({"float16", "float32"}),
    "GlobalLpPool": frozenset(),
}
"""Input dtypes of onnxruntime's CPU kernel for each op at opset 22 (quirk 2)."""

STAND_INS = {"bfloat16": "float32", "int16": "float32", "uint16": "float32",
             "int32": "float64", "uint32": "float64"}
"""A dtype that holds every value of the key exactly (a max is exact there, a sum better)."""

_SIGN = np.uint64(1 << 63)


def kernel_dtype(op_type: str, dtype: str) -> str | None:
    """The dtype ``op_type``'s kernel runs input of ``dtype`` in (quirk 2), or None."""
    kernels = KERNELS[op_type]
    if dtype in kernels:
        return dtype
    stand_in = STAND_INS.get(dtype)
    return stand_in if stand_in in kernels else None


def run_dtype(node: OnnxNode, dtype: str) -> str | None:
    """The dtype to run ``node`` in for input of ``dtype``, or None where onnxruntime does not
    compute it exactly: no kernel (quirk 2), pads it refuses (quirk 3), GlobalMaxPool (8)."""
    kernel, pads = node.attrs.get("kernel_shape"), node.attrs.get("pads")
    if isinstance(kernel, tuple) and isinstance(pads, tuple) and any(
            p >= k for p, k in zip(pads, kernel + kernel)):
        return None
    return None if node.op_type == "GlobalMaxPool" else kernel_dtype(node.op_type, dtype)


def gather_dtype(dtype: str) -> str:
    """The gather graph's dtype: float64, int64 (every integer), float32 for the rest."""
    if dtype == "float64":
        return dtype
    return "int64" if dtype.startswith(("int", "uint")) else "float32"


def to_run(x: np.ndarray, dtype: str) -> np.ndarray:
    """``x`` as ``dtype``, exactly; uint64 as int64 in the same order (the top bit flipped)."""
    if x.dtype == np.uint64 and dtype == "int64":
        return (x ^ _SIGN).view(np.int64)
    return np.ascontiguousarray(x, dtype=dtype)


def from_run(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The inverse of :func:`to_run` (float results rounded once to ``dtype``)."""
    if y.dtype == dtype:
        return y
    if dtype == np.uint64 and y.dtype == np.int64:
        return y.view(np.uint64) ^ _SIGN
    with np.errstate(over="ignore"):  # past the dtype's largest value: inf, as rounded
        return y.astype(dtype, copy=False)


def safe_max(g: Graph, node: OnnxNode, x: str, dtype: str) -> list[str]:
    """MaxPool ``node`` on ``x`` exact for every value: with ``Indices`` (quirk 8) and every
    window that holds a NaN made NaN, its index the first NaN's (quirk 1), from the same node
    run on the NaN mask. Returns the node's own outputs (values, and indices if it has them)."""
    values, indices = g.ops(node.op_type, x, outputs=2, **node.attrs)
    mask = g.op("Cast", g.op("IsNaN", x), to=tensor_type(dtype))
    flags, first = g.ops(node.op_type, mask, outputs=2, **node.attrs)
    has = g.op("Cast", flags, to=tensor_type("bool"))
    outs = [g.op("Where", has, g.const(np.nan, dtype), values)]
    if node.outputs == 2:
        outs.append(g.op("Where", has, first, indices))
    return outs
