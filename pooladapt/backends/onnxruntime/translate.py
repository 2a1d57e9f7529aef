"""The plan mapped onto onnxruntime: each plan runs as its one ONNX node. Read this first.

NumPy in, NumPy out, inference only. A pooling plan's node is ``lowering.onnx_pool_node``
(a global pool's ``lowering.onnx_global_node``), run in a session cached per (node, dtype,
layout) on the input as it is (a channels_last input: a Transpose to NC* and back around the
node in the same graph, 5x faster than NumPy's copies) and in a dtype onnxruntime has a
kernel for (``quirks.run_dtype``: the input's own, or an exact stand-in).
MaxPool's ``Indices`` count over N*C*plane; the remainder by the plane is pooladapt's
per-plane index. Where onnxruntime's kernel deviates (quirks.py) or ONNX has no node (a
non-integer p, windows of padding only, adaptive bins), the gather graph computes the plan
exactly (``graphs.gather_session``); unpooling is ``family.max_unpool``, scattering by
ScatterElements.

Speed route ``onnxruntime.finite_check``: a float max input without NaN or -inf (read on
the host: ``lowering.holds_nan_or_minus_inf``) runs the bare node instead of its safe form
(quirks 1 and 8).
"""

from __future__ import annotations

import math
from functools import lru_cache, partial
from typing import Any

import numpy as np
import onnxruntime as ort

from pooladapt import config, family, lowering
from pooladapt.backends.base import EMULATED, FEATURES, NATIVE, Backend
from pooladapt.backends.onnxruntime import graphs, quirks
from pooladapt.layouts import FROM_NC, TO_NC
from pooladapt.lowering import OnnxNode
from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan, make_spec

FINITE_CHECK = "onnxruntime.finite_check"
_INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _nc(x: np.ndarray, channels_first: bool) -> np.ndarray:
    return np.ascontiguousarray(x if channels_first else x.transpose(TO_NC[x.ndim]))


def _layout(y: np.ndarray, channels_first: bool) -> np.ndarray:
    return y if channels_first else np.ascontiguousarray(y.transpose(FROM_NC[y.ndim]))


def _scatter(values: np.ndarray, index: np.ndarray, size: int, first: bool) -> np.ndarray:
    """ScatterElements of (N, C, cells) rows into zeros with a spare last cell, cut off, on a
    copy of the bits: every dtype scatters as the integer of its size (quirk 6)."""
    n, c = values.shape[:2]
    if not values.size:
        return np.zeros((n, c, size), values.dtype)
    bits = f"int{8 * values.dtype.itemsize}"
    out = graphs.run(graphs.scatter_session(bits), np.zeros((n * c, size + 1), bits),
                     index.reshape(n * c, -1), values.reshape(n * c, -1).view(bits))[0]
    return out[:, :size].view(values.dtype).reshape(n, c, size)


UNPOOL = family.UnpoolOps(
    to_first=lambda a: _nc(a, False), to_last=lambda a: _layout(a, False), shape=np.shape,
    reshape=np.reshape, as_index=lambda i: i.astype(np.int64),
    top=lambda i: int(i.max()) if i.size else None, where=np.where, scatter=_scatter)


def node_session(node: OnnxNode, dtype: str, rank: int, channels_first: bool, channels: int,
                 safe: bool) -> ort.InferenceSession:
    """The node alone on an input of ``dtype`` with ``channels`` channels, its outputs in the
    input's layout (channels last: transposed to NC* and back in the graph); ``safe``: a max
    exact for NaN and -inf. The channel count is declared: onnxruntime's AveragePool on a
    graph that leaves it unknown runs 4x slower (ResNet head 14->7: 5.8 vs 1.4 ms)."""

    def build() -> graphs.Graph:
        g = graphs.Graph()
        x = g.input(dtype, rank, {1 if channels_first else rank - 1: channels})
        if not channels_first:
            x = g.op("Transpose", x, perm=TO_NC[rank])
        outs = (quirks.safe_max(g, node, x, dtype) if safe
                else g.ops(node.op_type, x, outputs=node.outputs, **node.attrs))
        for name, out_dtype in zip(outs, (dtype, "int64")):
            g.output(name if channels_first else g.op("Transpose", name, perm=FROM_NC[rank]),
                     out_dtype, rank)
        return g

    return graphs.session(("node", node, dtype, rank, channels_first, channels, safe), build)


@lru_cache(maxsize=1024)
def _runner(node: OnnxNode, dtype: np.dtype) -> tuple[str, np.dtype, bool] | None:
    """How ``node`` runs on input of ``dtype`` (either layout): the run dtype (name and NumPy
    dtype) and whether it is a float max, whose safe form runs unless the input holds no NaN
    or -inf; None where onnxruntime does not compute it exactly."""
    run = quirks.run_dtype(node, dtype.name)
    if run is None:
        return None
    return run, np.dtype(run), node.op_type == "MaxPool" and np.dtype(run).kind == "f"


def _run_node(node: OnnxNode | None, x: np.ndarray,
              channels_first: bool = True) -> list[np.ndarray] | None:
    """The node on ``x``, its outputs in x's layout, or None where onnxruntime does not
    compute it exactly."""
    how = None if node is None else _runner(node, x.dtype)
    if how is None:
        return None
    dtype, np_dtype, float_max = how
    if x.dtype != np_dtype or not x.flags.c_contiguous:
        x = quirks.to_run(x, dtype)
    safe = float_max and not (config.take_route(FINITE_CHECK, True)
                              and not lowering.holds_nan_or_minus_inf(x))
    channels = x.shape[1 if channels_first else -1]
    return graphs.run(node_session(node, dtype, x.ndim, channels_first, channels, safe), x)


def _gather(plan: PoolPlan | AdaptivePlan, x: np.ndarray,
            channels_first: bool) -> list[np.ndarray]:
    """The gather graph on ``x`` (a channels-last one transposed in the graph): values (and
    indices) shaped N, C, *out_size."""
    n, c = x.shape[0], x.shape[1 if channels_first else -1]
    dtype = quirks.gather_dtype(str(x.dtype))
    lowest = quirks.to_run(np.array(lowering.lowest(str(x.dtype)), x.dtype), dtype)
    outs = graphs.run(graphs.gather_session(plan, dtype, lowest.item(), channels_first),
                      quirks.to_run(x.reshape(n * c, -1) if channels_first else x, dtype))
    return [o.reshape(n, c, *plan.out_size) for o in outs]


def _finish(outs: list[np.ndarray], dtype: np.dtype, channels_first: bool,
            indices: bool) -> Any:
    y = _layout(quirks.from_run(outs[0], dtype), channels_first)
    return (y, _layout(outs[1], channels_first)) if indices else y


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    framework = "onnxruntime"
    supports_autograd = False
    numpy_arrays = True
    speed_routes = (FINITE_CHECK,)

    def version(self) -> str:
        return str(ort.__version__)

    def capabilities(self) -> dict[str, str]:
        caps = {f: NATIVE for f in FEATURES if f not in ("autograd", "compile")}
        emulated = ["channels_last", "nan", "adaptive", "unpool"]  # transposes, quirks 1 and 6
        if any(quirks.kernel_dtype("MaxPool", d) != d for d in _INTS):
            emulated.append("integers")
        for dtype in ("float16", "bfloat16"):
            if any(quirks.kernel_dtype(op, dtype) != dtype for op in ("AveragePool", "LpPool")):
                emulated.append(dtype)
        return {**caps, **dict.fromkeys(emulated, EMULATED)}

    def from_numpy(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a)

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def dtype_name(self, x: Any) -> str:
        return str(np.asarray(x).dtype)

    def pool(self, x: np.ndarray, plan: PoolPlan) -> Any:
        spec = plan.spec
        cf, indices = spec.channels_first, spec.return_indices
        n, c = x.shape[0], x.shape[1 if cf else -1]
        if n * c == 0:  # quirk 5
            shape = (n, c, *plan.out_size)
            return _finish([np.empty(shape, x.dtype), np.empty(shape, np.int64)], x.dtype, cf,
                           indices)
        outs = _run_node(lowering.onnx_pool_node(plan), x, cf)
        if outs is None:
            return _finish(_gather(plan, x, cf), x.dtype, cf, indices)
        y = quirks.from_run(outs[0], x.dtype)
        return (y, outs[1] % math.prod(plan.in_size)) if indices else y  # over N*C*plane

    def global_pool(self, x: np.ndarray, spec: GlobalSpec) -> np.ndarray:
        cf = spec.data_format == "channels_first"
        outs = _run_node(lowering.onnx_global_node(spec), x, cf) if x.size else None
        if outs is None:  # the plan of a window over the whole plane
            xc = _nc(x, cf)
            whole = make_spec(spec.mode, xc.shape[2:], p=spec.p if spec.mode == "lp" else None,
                              data_format="channels_first", ndim=spec.ndim)
            y = _layout(self.pool(xc, whole.plan(xc.shape)), cf)
        else:
            y = quirks.from_run(outs[0], x.dtype)
        return y if spec.keepdims else y.reshape(x.shape[0], x.shape[1 if cf else -1])

    def adaptive_pool(self, x: np.ndarray, plan: AdaptivePlan) -> Any:
        spec = plan.spec
        cf = spec.data_format == "channels_first"
        n, c = x.shape[0], x.shape[1 if cf else -1]
        shape = (n, c, *plan.out_size)
        outs = _gather(plan, x, cf) if n * c else [np.empty(shape, x.dtype),
                                                   np.empty(shape, np.int64)]
        return _finish(outs, x.dtype, cf, spec.return_indices)

    max_unpool = staticmethod(partial(family.max_unpool, UNPOOL))


BACKEND = OnnxRuntimeBackend()
