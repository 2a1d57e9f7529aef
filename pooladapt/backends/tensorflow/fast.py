"""The TensorFlow backend's speed routes: the same plan computed faster.

Each route has a name in ``BACKEND.speed_routes`` and is asked for with
``config.take_route(name, auto)`` only where it is exact, with its :class:`Tuning` answer as
``auto`` (change it with :func:`tuned`); translate.py calls each at one hook marked
``# route``. ``pa.speed_routes("off")`` leaves the plain translation,
``pa.speed_routes("on", only=name)`` forces a route wherever it applies. Routes are chosen
when a call runs eagerly or when a ``tf.function`` is traced: a traced graph keeps the routes
of its tracing (trace under the setting you mean).

* ``tensorflow.nchw_kernel``: 2-D channels-first input on TF's NCHW kernel instead of two
  transposes, with 8+ channels or a small tensor. On CPU only oneDNN has one (float32; off
  with ``TF_ENABLE_ONEDNN_OPTS=0``): the route is listed only where TF has it
  (``quirks.nchw_kernel``); its gradient is TF's own where oneDNN runs it, else computed in
  NHWC (``quirks.nchw_pool``). Under XLA, XLA compiles the NCHW pool.
* ``tensorflow.native_same``: a plan whose windows are TF's SAME windows (``same_upper``, or
  e.g. padding 1 of a 3/2 window over an odd size: ``lowering.same_windows``) is one SAME
  call, whose avg excludes the padding as canonical avg does (no divisor map, no copy).
* ``tensorflow.depthwise_sum``: a padded 2-D channels-last avg or lp sums its windows with one
  depthwise convolution of ones, which pads by itself (AvgPool takes no explicit padding);
  not under XLA unless forced (XLA's CPU convolution is slower than a padded AvgPool).
* ``tensorflow.raw_op``: 2-D pools call the raw op with cached attributes (``tf.nn``'s wrapper
  re-validates its arguments on every call).
* ``tensorflow.indices_taps``: max with indices takes the native max, then, tap by tap, which
  cells equal it, instead of gathering every window's cells.
* ``tensorflow.host_nan_check``: the eager NaN/-inf check of a small CPU tensor reads it with
  NumPy instead of a TF reduction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import tensorflow as tf

from pooladapt import config, lowering
from pooladapt.backends.tensorflow import quirks
from pooladapt.backends.tensorflow.compile import batch_size, branch, in_portable, in_xla
from pooladapt.plan import PoolPlan

NCHW_KERNEL = "tensorflow.nchw_kernel"
NATIVE_SAME = "tensorflow.native_same"
DEPTHWISE_SUM = "tensorflow.depthwise_sum"
RAW_OP = "tensorflow.raw_op"
INDICES_TAPS = "tensorflow.indices_taps"
HOST_NAN_CHECK = "tensorflow.host_nan_check"
ROUTES = tuple(r for r in (NCHW_KERNEL, NATIVE_SAME, DEPTHWISE_SUM, RAW_OP, INDICES_TAPS,
                           HOST_NAN_CHECK)
               if r != NCHW_KERNEL or quirks.nchw_kernel("MAX", tf.float32)
               or quirks.nchw_kernel("AVG", tf.float32))


@dataclass(frozen=True)
class Tuning(config.Tuning):
    """Where the size-dependent routes pay under ``auto`` (measured on x86 CPUs)."""

    nchw_channels: int = 8  # NCHW kernel from this many channels (oneDNN's NCHW pooling of
    nchw_small: int = 1 << 16  # a few large planes is 5-20x slower than two transposes), or
    # up to this many cells, where it beats two transposes at any shape
    host_check: int = 1 << 14  # cells: up to here a NumPy read of a CPU tensor beats a TF op


TUNING = config.TuningSlot("tensorflow", Tuning())
tuning = TUNING.get
"""The TensorFlow backend's thresholds here and now."""
tuned = TUNING.tuned
"""Change some thresholds inside a ``with`` block: ``with tuned(host_check=0): ...``."""


def nchw_route(x: tf.Tensor, plan: PoolPlan) -> bool:
    """Pool the channels-first ``x`` on TF's NCHW kernel? It applies to a 2-D plan without
    dilation with a kernel for the dtype it is pooled in (sums: ``lowering.accumulator``'s),
    not in a graph traced for TFLite (``compile.portable``). Under XLA the pool is XLA's own
    (its max's gradient goes through NHWC: ``quirks.nchw_gradient_kernel``)."""
    spec = plan.spec
    kind, dtype = ("MAX", x.dtype) if spec.mode == "max" else (
        "AVG", tf.as_dtype(lowering.accumulator(x.dtype.name)))
    if not (spec.ndim == 2 and all(r == 1 for r in spec.dilation)
            and quirks.nchw_kernel(kind, dtype)) or in_portable():
        return False
    cells = x.shape.num_elements()
    return config.take_route(NCHW_KERNEL, (x.shape[1] or 0) >= tuning().nchw_channels
                             or (cells is not None and cells <= tuning().nchw_small))


@lru_cache(maxsize=256)
def _same_windows(plan: PoolPlan) -> bool:
    return all(r == 1 for r in plan.spec.dilation) and lowering.same_windows(plan)


def same_route(plan: PoolPlan) -> bool:
    """One native SAME call for the padded ``plan``? It applies where TF's SAME gives the
    plan's windows, to max (not where :func:`quirks.same_max_misroutes_ties`) and to avg
    that does not count padding (SAME's avg excludes it); never to lp (a sum)."""
    spec = plan.spec
    if spec.mode == "lp" or not _same_windows(plan) or (
            quirks.same_max_misroutes_ties() if spec.mode == "max" else spec.count_include_pad):
        return False
    return config.take_route(NATIVE_SAME, True)


def depthwise_sum(x: tf.Tensor, plan: PoolPlan) -> tf.Tensor | None:
    """The sum of every window of a channels-last float ``x`` padded with zeros, as one
    depthwise convolution of ones, or None: the route does not apply (a 2-D plan without
    dilation with equal strides and a static channel count) or is not taken (``auto``: not
    under XLA, whose CPU depthwise convolution is 15x the padded AvgPool in a training step)."""
    spec = plan.spec
    if not (spec.ndim == 2 and spec.stride[0] == spec.stride[1] and x.shape[-1] is not None
            and all(r == 1 for r in spec.dilation)) or not config.take_route(DEPTHWISE_SUM,
                                                                              not in_xla()):
        return None
    ones = tf.ones([*spec.window, x.shape[-1], 1], x.dtype)
    return tf.nn.depthwise_conv2d(x, ones, [1, *spec.stride, 1],
                                  [(0, 0), *plan.total_pads, (0, 0)])


@lru_cache(maxsize=256)
def _nhwc_args(window, stride, padding) -> dict[str, Any]:
    args = dict(ksize=[1, *window, 1], strides=[1, *stride, 1], padding=padding)
    if not isinstance(padding, str):
        pads = [0, 0, *(p for pair in padding for p in pair), 0, 0]
        args.update(padding="EXPLICIT", explicit_paddings=pads)
    return args


def raw_pool(x: tf.Tensor, kind: str, window, stride, padding) -> tf.Tensor | None:
    """A 2-D channels-last pool as the raw op with cached attributes, or None (not 2-D, or
    not taken)."""
    if len(window) != 2 or not config.take_route(RAW_OP, True):
        return None
    if kind == "MAX":
        return tf.raw_ops.MaxPool(input=x, **_nhwc_args(window, stride, padding))
    return tf.raw_ops.AvgPool(value=x, **_nhwc_args(window, stride, padding))


def taps_route(x: tf.Tensor, plan: PoolPlan) -> bool:
    """Max with indices from the native max and a tap-by-tap match? It applies to floats (its
    phase grid is padded with -inf) where every window holds a real cell, on planes under
    2**30 cells; it is exact only where MaxPool is (the caller checks)."""
    if not x.dtype.is_floating or plan.all_padding_windows or math.prod(plan.in_size) >= 2**30:
        return False
    return config.take_route(INDICES_TAPS, True)


@lru_cache(maxsize=256)
def _phase_grid(plan: PoolPlan):
    """Pads and lengths that split every dim of the padded input into (length / stride,
    stride), so that a tap's cells are a plain slice at one phase (not a slow strided
    slice); and per tap in row-major window order, its view of that grid and its offset in
    the plane from the window's first cell (which grows with the tap)."""
    spec = plan.spec
    pads, lengths = [], []
    for d in range(spec.ndim):
        s, (lo, hi) = spec.stride[d], plan.total_pads[d]
        length = s * ((spec.extent[d] - 1) // s + plan.out_size[d])
        pads.append((lo, hi + max(0, length - (plan.in_size[d] + lo + hi))))
        lengths.append(length)
    strides = lowering.plane_strides(plan.in_size)
    taps = tuple(((slice(None), *(i for t, s, o in zip(offsets, spec.stride, plan.out_size)
                                  for i in (slice(t // s, t // s + o), t % s)), slice(None)),
                  sum(t * st for t, st in zip(offsets, strides)))
                 for offsets in lowering.tap_offsets(plan))
    return tuple(pads), tuple(lengths), taps


def max_by_taps(x: tf.Tensor, plan: PoolPlan, native_max: Callable[[tf.Tensor], tf.Tensor],
                gather: Callable[[], Any]) -> tuple[tf.Tensor, tf.Tensor]:
    """The ``indices_taps`` route: ``native_max`` (MaxPool) of ``x`` as channels-last and the
    index of each window's first cell equal to it, or, where MaxPool may be wrong
    (``quirks.may_drop_nan``), ``gather()``, the plain translation's exact gather."""
    cf = plan.spec.channels_first
    xl = quirks.to_last(x, cf)
    y = native_max(xl)
    return branch(quirks.may_drop_nan(xl, nan_check_on_host(xl)), gather, lambda: (
        quirks.to_first(y, cf), quirks.to_first(_tap_indices(xl, y, plan), cf)))


def _tap_indices(x: tf.Tensor, y: tf.Tensor, plan: PoolPlan) -> tf.Tensor:
    """Per-plane indices of the first cell of each window of the channels-last ``x`` that
    equals its max ``y`` (the one nearest the window's start)."""
    pads, lengths, taps = _phase_grid(plan)
    grid = tf.pad(x, [(0, 0), *pads, (0, 0)], constant_values=-np.inf)
    grid = grid[(slice(None), *(slice(0, n) for n in lengths))]
    grid = tf.reshape(grid, [batch_size(x), *(v for n, s in zip(lengths, plan.spec.stride)
                                              for v in (n // s, s)), x.shape[-1]])
    # the first maximum has the smallest offset: keep the largest (top - offset) that matches
    top = max(offset for _, offset in taps) + 1
    best = tf.zeros_like(y, tf.int32)
    for view, offset in taps:
        best = tf.maximum(best, tf.cast(tf.equal(grid[view], y), tf.int32) * (top - offset))
    return tf.constant(lowering.window_origins(plan)[None, ..., None]) + tf.cast(top - best,
                                                                                  tf.int64)


def nan_check_on_host(x: tf.Tensor) -> bool | None:
    """Whether the eager float ``x`` holds a NaN or -inf, read with NumPy, or None: not an
    eager non-empty CPU tensor, or not taken (``auto``: up to ``tuning().host_check`` cells)."""
    cells = x.shape.num_elements()
    if not (cells and tf.executing_eagerly() and x.device.endswith("CPU:0")
            and config.take_route(HOST_NAN_CHECK, cells <= tuning().host_check)):
        return None
    return lowering.holds_nan_or_minus_inf(x.numpy())
