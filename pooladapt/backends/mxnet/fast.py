"""MXNet's speed routes: faster ways to compute the same plan, fenced from the translation.

Each route has a name in ``BACKEND.speed_routes`` and is asked for with
``config.take_route(name, auto)`` only where it applies and is exact; ``auto`` is
:class:`Tuning`'s answer (change it with :func:`tuned`). ``translate.py`` calls each from one
marked hook; ``pa.speed_routes("off")`` leaves its plain translation.

* ``mxnet.few_channels``: a channels-first max with few channels pooled as ``(N*C, 1, ...)``
  (oneDNN, which runs the plain call, is slow with few channels; MXNet's own kernel takes the
  view).
* ``mxnet.flat_1d``: a channels-first 1-D max pooled as 2-D with a unit height (oneDNN is slow
  in 1-D).
* ``mxnet.channels_last_view``: a channels-last max pooled in a channels-first view: the batch
  as the channels, the channels a window-1 dim (MXNet's NHWC kernel is slow).
* ``mxnet.separable``: a 2-D channels-last max of many cells as two passes, W then H.
* ``mxnet.float16_as_float32``: a float16 max pooled in float32 (exact; float16 has no oneDNN
  kernel).
* ``mxnet.python_check`` / ``mxnet.host_check``: the NaN/inf check of a max's input read on the
  host, summed in Python when tiny, else in NumPy (instead of a global average pooling).
* ``mxnet.onednn_avg``: avg as one native ``Pooling`` where oneDNN computes it (it divides the
  window sum; MXNet's own kernel is an ulp off): listed only where oneDNN runs.

Views only where nothing is recorded (a view's recorded max gradient is wrong:
``quirks.recorded_input``), and in graphs (a hybridized graph's reshape is no view).
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
from typing import Any

import mxnet as mx
import numpy as np

from pooladapt import config
from pooladapt.backends.mxnet import ops, quirks
from pooladapt.config import take_route
from pooladapt.lowering import Cover
from pooladapt.plan import PoolPlan

FEW_CHANNELS = "mxnet.few_channels"
FLAT_1D = "mxnet.flat_1d"
CHANNELS_LAST_VIEW = "mxnet.channels_last_view"
SEPARABLE = "mxnet.separable"
HALF_AS_FLOAT = "mxnet.float16_as_float32"
PYTHON_CHECK = "mxnet.python_check"
HOST_CHECK = "mxnet.host_check"
ONEDNN_AVG = "mxnet.onednn_avg"
ROUTES = (FEW_CHANNELS, FLAT_1D, CHANNELS_LAST_VIEW, SEPARABLE, HALF_AS_FLOAT, PYTHON_CHECK,
          HOST_CHECK, ONEDNN_AVG)


@dataclasses.dataclass(frozen=True)
class Tuning(config.Tuning):
    """Where each speed route pays on a CPU (``auto``; docs/benchmarks.md). The views pay only
    where oneDNN runs the plain call (MXNet's own kernels are as fast on the plain layout)."""

    few_channels: int = 8  # channels-first max below this many channels: (N*C, 1, ...)
    separable_cells: int = 16  # channels-last 2-d max windows of this many cells: two passes
    host_check: int = 1 << 20  # elements up to which reading x beats a pooling as NaN check
    python_check: int = 256  # elements up to which that read is summed in Python


TUNING = config.TuningSlot("mxnet", Tuning())
tuning = TUNING.get
"""The MXNet backend's thresholds here and now."""
tuned = TUNING.tuned
"""Change some thresholds inside a ``with`` block: ``with tuned(separable_cells=100): ...``."""


def routes() -> tuple[str, ...]:
    """The routes; oneDNN's avg kernel only where oneDNN runs."""
    return ROUTES if quirks.onednn_pools() else tuple(r for r in ROUTES if r != ONEDNN_AVG)


def max_view(F: Any, x: Any, plan: PoolPlan, cover: Cover) -> Any:
    """Max ``Pooling`` of x with the cover's symmetric pads in a view MXNet's own kernel takes
    fast, or in two separable passes; None where no route is taken."""
    spec, kernel, stride, pad = plan.spec, plan.spec.window, plan.spec.stride, cover.pads
    views = F is mx.sym or not mx.autograd.is_recording()
    kw = ops.pooling_args("max", cover.ceil, (0,))
    if spec.channels_first:
        if not views:
            return None
        shape = None if F is mx.sym else x.shape
        if shape is not None and shape[1] > 1 and take_route(
                FEW_CHANNELS, shape[1] < tuning().few_channels and quirks.onednn_pools()):
            n, c = shape[:2]
            v = x.reshape((n * c, 1, *shape[2:]))
            y = max_view(F, v, plan, cover)
            if y is None:
                y = F.Pooling(v, kernel=kernel, stride=stride,
                              **ops.pooling_args("max", cover.ceil, pad))
            return y.reshape((n, c, *y.shape[2:]))
        if spec.ndim == 1 and take_route(FLAT_1D, quirks.onednn_pools()):
            y = F.Pooling(x.reshape((0, 0, 1, -1)), kernel=(1, *kernel), stride=(1, *stride),
                          pad=(0, *pad), **kw)
            return y.reshape((0, 0, -1))
        return None
    two = spec.ndim == 2 and math.prod(kernel) >= tuning().separable_cells
    if views and take_route(CHANNELS_LAST_VIEW, quirks.onednn_pools()):
        # the batch as the channels of a channels-first view, the channels a window-1 dim
        if spec.ndim == 3:  # H and W with D as the channels, then D with the batch as channels
            y = F.Pooling(x, kernel=(*kernel[1:], 1), stride=(*stride[1:], 1),
                          pad=(*pad[1:], 0), **kw)
            y = F.Pooling(y.reshape((-4, 1, -1, 0, -3, 0)), kernel=(kernel[0], 1, 1),
                          stride=(stride[0], 1, 1), pad=(pad[0], 0, 0), **kw)
            return y.reshape((-3, 0, -4, cover.sizes[1], -1, 0))
        if spec.ndim == 2 and take_route(SEPARABLE, two):  # W with H as the channels, then H
            y = F.Pooling(x, kernel=(kernel[1], 1), stride=(stride[1], 1), pad=(pad[1], 0),
                          **kw)
            y = F.Pooling(y.reshape((-4, 1, -1, 0, -3)), kernel=(kernel[0], 1),
                          stride=(stride[0], 1), pad=(pad[0], 0), **kw)
            return y.reshape((-3, 0, -4, cover.sizes[1], -1))
        y = F.Pooling(x.reshape((-4, 1, -1, *(0,) * (spec.ndim + 1))), kernel=(*kernel, 1),
                      stride=(*stride, 1), pad=(*pad, 0), **kw)
        return y.reshape((-3, *(0,) * (spec.ndim + 1)))
    if spec.ndim == 2 and take_route(SEPARABLE, two):  # a max is separable: W, then H
        y = F.Pooling(x, kernel=(1, kernel[1]), stride=(1, stride[1]), pad=(0, pad[1]),
                      layout="NHWC", **kw)
        return F.Pooling(y, kernel=(kernel[0], 1), stride=(stride[0], 1), pad=(pad[0], 0),
                         layout="NHWC", **kw)
    return None


def half_as_float() -> bool:
    """float16 max pooled in float32 (exact): MXNet's float16 pooling has no oneDNN kernel."""
    return take_route(HALF_AS_FLOAT, quirks.onednn_pools())


def _host_bytes(x: Any, nbytes: int) -> bytes:
    """A copy of the first ``nbytes`` of a dense CPU array's memory once its writers are done,
    without the engine's copy (that queues behind every op already pushed, reads of x
    included)."""
    x.wait_to_read()  # returns at once when no write to x is pending
    ptr = ctypes.c_void_p()  # MXNDArrayGetData reorders a oneDNN-layout array to default
    mx.base.check_call(mx.base._LIB.MXNDArrayGetData(x.handle, ctypes.byref(ptr)))
    return ctypes.string_at(ptr.value, nbytes)


def host_values(x: Any) -> np.ndarray | None | bool:
    """x's values read on the host for the NaN/inf check (a dense CPU array): summed in
    Python when tiny (on a 1x1x4x4 call any NumPy call between two MXNet ops costs about as
    much as the pooling itself; None: all finite), else into NumPy. False: no route taken.
    (Each read of an NDArray's shape, dtype or context is a C call of a microsecond or more:
    each is read once.)"""
    if type(x) is not mx.nd.NDArray or x.context.device_type != "cpu":
        return False
    size = math.prod(x.shape)
    dtype = np.dtype(x.dtype)
    if dtype.char in "fd" and take_route(PYTHON_CHECK, size <= tuning().python_check):
        raw = _host_bytes(x, size * dtype.itemsize)
        total = sum(memoryview(raw).cast(dtype.char))  # float64: no overflow from float32
        return None if total - total == 0 else np.frombuffer(raw, dtype=dtype)
    if take_route(HOST_CHECK, size <= tuning().host_check):
        return np.frombuffer(_host_bytes(x, size * dtype.itemsize), dtype=dtype)
    return False


def onednn_avg(plan: PoolPlan, acc: str) -> bool:
    """avg as one native ``Pooling`` where oneDNN computes it and divides the window sum."""
    return quirks.onednn_divides_avg(plan, acc) and take_route(ONEDNN_AVG, True)
