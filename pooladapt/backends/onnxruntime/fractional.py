"""Fractional max pooling on onnxruntime (PyTorch's meaning; ONNX has no fractional operator):
the windows' cells chosen on the host, the pooling one cached ONNX graph of generic ops.

* **samples**: NumPy arrays, as every onnxruntime input; drawn by the NumPy backend's
  ``draw_samples`` (NumPy's global generator, in the input's floating dtype), so
  ``np.random.seed`` fixes them as it does on the NumPy backend.
* **cells**: the NumPy backend's ``window_cells`` (the plan's starts, ``FractionalPlan.starts``,
  in the samples' dtype): the window placement is written once. They are an input of the
  graph, which is therefore one session per input dtype and rank, whatever the samples.
* **graph** (in the gather graph's dtype, ``quirks.gather_dtype``: float16/bfloat16 in
  float32, exactly; integers in int64): ``GatherElements`` of every window's cells from its
  plane; the first NaN of a window wins (``IsNaN``), else its first cell equal to the
  window's ``ReduceMax`` (``ArgMax`` of the hits, whose ties keep the first); the index is
  gathered from the cells and the value from the plane at it.

Indices are int64 per-plane flat positions, in the input's layout, like the other pools'.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnxruntime as ort
from onnx import TensorProto

from pooladapt.backends.numpy.fractional import draw_samples, window_cells
from pooladapt.backends.onnxruntime import graphs, quirks
from pooladapt.plan import FractionalPlan

__all__ = ["draw_samples", "fractional_max_pool"]


def _session(dtype: str) -> ort.InferenceSession:
    """(planes (P, cells), window cells (P, W, k) int64) -> (values (P, W), indices (P, W))."""
    return graphs.session(("fractional", dtype), lambda: _graph(dtype))


def _graph(dtype: str) -> graphs.Graph:
    g = graphs.Graph()
    planes, cells = g.input(dtype, 2), g.input("int64", 3)
    shape = g.op("Shape", cells)
    flat = g.op("Reshape", cells, g.const([0, -1], "int64"))  # (P, W * k)
    values = g.op("Reshape", g.op("GatherElements", planes, flat, axis=1), shape)
    axis = g.const([2], "int64")
    top = g.op("ReduceMax", values, axis, keepdims=1)
    hit = g.op("Cast", g.op("Equal", values, top), to=TensorProto.INT32)
    if dtype != "int64":  # a NaN wins, the first one in window order
        nan = g.op("Cast", g.op("IsNaN", values), to=TensorProto.INT32)
        has = g.op("Cast", g.op("ReduceMax", nan, axis, keepdims=1), to=TensorProto.BOOL)
        hit = g.op("Where", has, nan, hit)
    first = g.op("ArgMax", hit, axis=2, keepdims=1, select_last_index=0)  # (P, W, 1)
    idx = g.op("Squeeze", g.op("GatherElements", cells, first, axis=2), axis)  # (P, W)
    g.output(g.op("GatherElements", planes, idx, axis=1), dtype, 2)
    g.output(idx, "int64", 2)
    return g


def fractional_max_pool(x: np.ndarray, plan: FractionalPlan, samples: np.ndarray) -> Any:
    spec = plan.spec
    cf = spec.data_format == "channels_first"
    xc = x if cf else np.moveaxis(x, -1, 1)
    n, c = xc.shape[:2]
    windows, count = math.prod(plan.out_size), math.prod(spec.window)
    out = (n, c, *plan.out_size)
    if n * c == 0:
        y, idx = np.zeros(out, x.dtype), np.zeros(out, np.int64)
    else:
        cells = window_cells(plan, np.asarray(samples)[:n]).reshape(n * c, windows, count)
        dtype = quirks.gather_dtype(str(x.dtype))
        planes = quirks.to_run(xc.reshape(n * c, math.prod(plan.in_size)), dtype)
        values, idx = graphs.run(_session(dtype), planes, cells)
        y = quirks.from_run(values, x.dtype).reshape(out)
        idx = idx.reshape(out)
    y = y if cf else np.moveaxis(y, 1, -1)
    if not spec.return_indices:
        return y
    return y, (idx if cf else np.moveaxis(idx, 1, -1))
