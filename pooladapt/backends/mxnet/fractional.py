"""Fractional max pooling on MXNet 1.9.1 (PyTorch's meaning; MXNet has no fractional pooling):
every window's cells gathered from its plane with ``take``, on ``mx.nd`` arrays (``mx.np``
input and NumPy integers MXNet has no arrays of go through the backend's ``mx.nd`` view and
stand-ins, as the other pools do). Hybridized graphs are not offered: the starts are
computed on the host.

* **starts**: the plan's own (``FractionalPlan.starts`` on the samples copied to the host, in
  their dtype), so the windows are the oracle's exactly; the cells' flat indices are built on
  the host as on NumPy (``numpy.fractional.window_cells``) and offset by each plane's start.
* **winner**: MXNet's ``argmax`` and ``max`` say nothing of NaN (here ``argmax`` gives the
  first cell of ``[nan, 1, -inf, nan]`` by chance, ``max`` its NaN) and return float
  indices, so neither decides: a window holding a NaN takes its first NaN (``x != x``);
  the others their first cell equal to their ``max`` (NaN masked to -inf first, so a window
  of -inf takes its first cell), the first by a ``min`` over cell numbers, outside autograd.
* **value**: ``pick`` of the gathered cells at the winner, recorded, so the gradient goes
  through ``pick`` and ``take`` to the winning cell only.

Indices are int64 per-plane flat positions, in the input's layout, like the other pools'.
"""

from __future__ import annotations

import math
from typing import Any

import mxnet as mx
import numpy as np

from pooladapt.backends.mxnet import BACKEND, ops
from pooladapt.backends.numpy.fractional import window_cells
from pooladapt.layouts import FROM_NC, TO_NC
from pooladapt.plan import FractionalPlan

nd = mx.nd
FLOATS = ("float16", "float32", "float64")


def draw_samples(x: Any, shape: tuple[int, int, int]) -> Any:
    """Uniform samples in [0, 1) from MXNet's generator (``mx.nd.random.uniform`` on x's
    context: ``mx.random.seed`` sets it, as torch's layers use torch's global generator), in
    x's floating dtype (float64 for integer input; MXNet has no bfloat16). A draw that
    rounds up to 1 takes the dtype's largest value below 1."""
    name = ops.dtype_name(x.dtype)
    dtype = name if name in FLOATS else "float64"
    if 0 in shape:  # MXNet's ops read a 0 in a shape as unknown
        return nd.array(np.zeros(shape, dtype), ctx=x.context, dtype=dtype)
    u = nd.random.uniform(0, 1, shape=shape, dtype=dtype, ctx=x.context)
    below_one = np.full(shape, 1 - np.finfo(dtype).epsneg, dtype)
    return nd.minimum(u, nd.array(below_one, ctx=x.context, dtype=dtype))


def _samples_on_host(samples: Any) -> np.ndarray:
    return samples if isinstance(samples, np.ndarray) else samples.asnumpy()


def fractional_max_pool(x: Any, plan: FractionalPlan, samples: Any) -> Any:
    spec = plan.spec
    host = _samples_on_host(samples)
    outputs = BACKEND._outputs(x, plan.output_shape(tuple(x.shape)), spec.return_indices)
    return BACKEND._on_nd_view(lambda t: _pool(t, plan, host), x, outputs)


def _pool(x: Any, plan: FractionalPlan, samples: np.ndarray) -> Any:
    spec = plan.spec
    cf = spec.data_format == "channels_first"
    xc = x if cf else nd.transpose(x, axes=TO_NC[x.ndim])
    n, channels = xc.shape[:2]
    plane, count = math.prod(plan.in_size), math.prod(spec.window)
    cells = window_cells(plan, samples[:n])  # (N, C, *out, cells), on the host
    cells = cells.reshape(n, channels, math.prod(plan.out_size), count)
    offsets = (np.arange(n * channels, dtype=np.int64) * plane).reshape(n, channels, 1, 1)
    ctx = x.context
    values = nd.take(nd.reshape(xc, (-1,)), nd.array(cells + offsets, ctx=ctx, dtype="int64"))
    with mx.autograd.pause():
        first = _first_winner(values, count)  # (N, C, windows), int64
    y = nd.pick(values, first, axis=-1)  # recorded: the gradient goes to the winning cell
    out_shape = (n, channels, *plan.out_size)
    y = nd.reshape(y, out_shape)
    y = y if cf else nd.transpose(y, axes=FROM_NC[y.ndim])
    if not spec.return_indices:
        return y
    with mx.autograd.pause():
        idx = nd.pick(nd.array(cells, ctx=ctx, dtype="int64"), first, axis=-1)
        idx = nd.reshape(idx, out_shape)
        return y, (idx if cf else nd.transpose(idx, axes=FROM_NC[idx.ndim]))


def _first_winner(values: Any, count: int) -> Any:
    """Per window (the last axis of ``values``), the number of its first NaN if it holds one,
    else of its first maximum."""
    if ops.dtype_name(values.dtype) in FLOATS:
        nan = values != values  # 1 where NaN, in values' dtype
        has_nan = nd.broadcast_like(nd.max(nan, axis=-1, keepdims=True), values)
        finite = nd.where(nan, nd.ones_like(values) * -math.inf, values)
        top = nd.broadcast_equal(finite, nd.max(finite, axis=-1, keepdims=True))
        hit = nd.where(has_nan, nan, top)
    else:
        hit = nd.broadcast_equal(values, nd.max(values, axis=-1, keepdims=True))
    numbers = nd.broadcast_like(
        nd.array(np.arange(count), ctx=values.context, dtype="int64").reshape(
            (1,) * (values.ndim - 1) + (count,)), values)
    beyond = nd.ones_like(numbers) * count
    return nd.min(nd.where(hit, numbers, beyond), axis=-1)
