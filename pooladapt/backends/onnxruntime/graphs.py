"""ONNX graphs for onnxruntime, built once per key into a cached session.

:class:`Graph` builds a small model (the plan's one node, a NaN-safe max, the gather graph
below, a scatter); :func:`session` caches one InferenceSession per key (a plan and a dtype),
keeping its model in :data:`MODELS` for inspection. :func:`gather_session` is the exact
emulation of any pooling or adaptive plan in onnxruntime's generic ops: every window's cells
gathered from the flattened plane, masked, reduced.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from pooladapt import lowering
from pooladapt.layouts import TO_NC
from pooladapt.plan import AdaptivePlan, PoolPlan

OPSET = lowering.ONNX_OPSET
CACHE_SIZE = 256

MODELS: OrderedDict[Hashable, onnx.ModelProto] = OrderedDict()
"""The model of every cached session, by key (most recently used last)."""
_SESSIONS: OrderedDict[Hashable, ort.InferenceSession] = OrderedDict()


def input_name(i: int) -> str:
    """The name of a graph's ``i``-th input (:meth:`Graph.input`, :func:`run`)."""
    return f"X{i}"


def tensor_type(dtype: str) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class Graph:
    """A small ONNX graph under construction; every method returns the name of a value."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []

    def input(self, dtype: str, rank: int, known: dict[int, int] | None = None) -> str:
        """A new input of ``dtype`` and ``rank``, its dims unknown but those in ``known``
        (axis -> size)."""
        name = input_name(len(self.inputs))
        dims = [(known or {}).get(axis) for axis in range(rank)]
        self.inputs.append(helper.make_tensor_value_info(name, tensor_type(dtype), dims))
        return name

    def const(self, value: Any, dtype: str | None = None) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ops(self, op_type: str, *inputs: str, outputs: int = 1, **attrs: Any) -> list[str]:
        names = [f"{op_type}{len(self.nodes)}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        return self.ops(op_type, *inputs, **attrs)[0]

    def output(self, name: str, dtype: str, rank: int) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, tensor_type(dtype), [None] * rank))

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "pooladapt", self.inputs, self.outputs, self.inits)
        opsets = [helper.make_opsetid("", OPSET)]
        return helper.make_model(graph, opset_imports=opsets,
                                 ir_version=helper.find_min_ir_version_for(opsets))


def session(key: Hashable, build: Callable[[], Graph]) -> ort.InferenceSession:
    """The session of ``key``, building its graph on first use (least recently used dropped)."""
    found = _SESSIONS.get(key)
    if found is not None:
        _SESSIONS.move_to_end(key)
        MODELS.move_to_end(key)
        return found
    model = build().model()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a shape warning is not the caller's concern
    found = ort.InferenceSession(model.SerializeToString(), options,
                                 providers=["CPUExecutionProvider"])
    _SESSIONS[key], MODELS[key] = found, model
    while len(_SESSIONS) > CACHE_SIZE:
        _SESSIONS.popitem(last=False)
        MODELS.popitem(last=False)
    return found


def clear() -> None:
    """Drop every cached session and model."""
    _SESSIONS.clear()
    MODELS.clear()


def run(sess: ort.InferenceSession, *arrays: np.ndarray) -> list[np.ndarray]:
    """The session's outputs on ``arrays``, its inputs in order (named as :class:`Graph` does:
    not asked of the session, which costs a microsecond or more a call)."""
    return list(sess.run(None, {input_name(i): a for i, a in enumerate(arrays)}))


def gather_session(plan: PoolPlan | AdaptivePlan, dtype: str, lowest: float = -math.inf,
                   channels_first: bool = True) -> ort.InferenceSession:
    """``(N*C, plane)`` in (``channels_first=False``: the channels-last array, transposed and
    flattened to that in the graph), ``(N*C, windows)`` out (plus per-plane int64 indices for
    max with ``return_indices``), in ``dtype`` (float32, float64 or int64): each window's
    (bin's) cells gathered (``lowering.window_cells``/``bin_cells``), padding masked out, then
    max (NaN first, ties to the first cell in window order, ``lowest`` and index -1 for a
    window of padding only), the sum over the plan's divisors (avg; 0 / 0 = NaN) or the
    p-norm (lp)."""
    return session(("gather", plan, dtype, lowest, channels_first),
                   lambda: _gather_graph(plan, dtype, lowest, channels_first))


def _gather_graph(plan: PoolPlan | AdaptivePlan, dtype: str, lowest: float,
                  channels_first: bool) -> Graph:
    spec = plan.spec
    if isinstance(plan, PoolPlan):
        flat, valid = lowering.window_cells(plan)
        divisor, empty, p = plan.divisor_map.ravel(), plan.empty_windows.ravel(), plan.spec.p
    else:
        flat, valid = lowering.bin_cells(plan)
        divisor, empty, p = valid.sum(axis=1), np.zeros(len(flat), bool), 1.0
    g = Graph()
    if channels_first:
        x = g.input(dtype, 2)
    else:
        x = g.op("Transpose", g.input(dtype, spec.ndim + 2), perm=TO_NC[spec.ndim + 2])
        x = g.op("Reshape", x, g.const([-1, math.prod(plan.in_size)], "int64"))
    cells = g.op("Gather", x, g.const(flat), axis=1)  # (N*C, windows, taps)
    ok, axis = g.const(valid), g.const([2], "int64")
    floating = dtype != "int64"
    if spec.mode == "max":
        low = g.const(lowest, dtype)
        y = g.op("ReduceMax", g.op("Where", ok, cells, low), axis, keepdims=0)
        hit = g.op("And", ok, g.op("Equal", cells, g.op("Unsqueeze", y, axis)))
        hit = g.op("Cast", hit, to=TensorProto.INT32)  # 1 at each cell holding the max
        if floating:  # a NaN wins, the first one in window order
            nan = g.op("Cast", g.op("And", ok, g.op("IsNaN", cells)), to=TensorProto.INT32)
            has = g.op("ReduceMax", nan, axis, keepdims=1)
            hit = g.op("Where", g.op("Cast", has, to=TensorProto.BOOL), nan, hit)
            has = g.op("Cast", g.op("Squeeze", has, axis), to=TensorProto.BOOL)
            y = g.op("Where", has, g.const(math.nan, dtype), y)
        g.output(y, dtype, 2)
        if spec.return_indices:
            first = g.op("ArgMax", hit, axis=2, keepdims=0)
            at = g.op("Add", first, g.const(np.arange(len(flat), dtype=np.int64) * flat.shape[1]))
            idx = g.op("Gather", g.const(flat.ravel()), at)
            g.output(g.op("Where", g.const(empty), g.const(-1, "int64"), idx), "int64", 2)
        return g
    zero = g.const(0, dtype)
    if spec.mode == "lp":
        cells = g.op("Abs", cells)
        if p != 1.0:
            cells = g.op("Pow", cells, g.const(p, dtype))
    y = g.op("ReduceSum", g.op("Where", ok, cells, zero), axis, keepdims=0)
    if spec.mode == "avg":
        y = g.op("Div", y, g.const(divisor, dtype))
    elif p != 1.0:
        y = g.op("Pow", y, g.const(1.0 / p, dtype))
    g.output(y, dtype, 2)
    return g


def scatter_session(dtype: str) -> ort.InferenceSession:
    """ScatterElements along axis 1: ``(data, indices, updates)`` in, ``data`` updated out."""

    def build() -> Graph:
        g = Graph()
        data, idx, updates = g.input(dtype, 2), g.input("int64", 2), g.input(dtype, 2)
        g.output(g.op("ScatterElements", data, idx, updates, axis=1), dtype, 2)
        return g

    return session(("scatter", dtype), build)
