"""Fractional max pooling on TensorFlow (PyTorch's meaning; TF's own ``fractional_max_pool``
places its windows by another rule, so it is not used): every window's cells gathered from
its plane, eagerly, in ``tf.function`` and under XLA alike.

* **starts**: the plan's rule (``FractionalPlan.starts``) as TF ops in the samples' dtype,
  one rounding per operation as ATen and NumPy do: ``alpha`` and ``arange`` are the plan's
  own constants, ``(i + u) * alpha`` and ``u * alpha`` are computed in that dtype and cast to
  int64 (truncation). float16 and bfloat16 are computed in float32 and rounded after each
  operation with integer ops, because XLA may skip those roundings (TF 2.16's does for
  bfloat16): ``test_xla_places_windows_as_the_oracle``, tests/tensorflow/test_fractional.py.
* **winner**: the cells compared as integer order keys (``quirks.order_key``: every NaN one
  key above +inf, subnormals exact where TF's CPU kernels flush them; integers as they are),
  the first cell equal to the window's largest key in row-major window order by a
  ``reduce_min`` of cell numbers (``tf.math.argmax`` says nothing of ties or NaN, and XLA's
  max drops NaN): the first NaN of a window, else its first maximum.
* **value**: gathered again from the plane at the winner's index, so the gradient goes to
  that cell only (``tf.gather``'s gradient).

Indices are int64 per-plane flat positions, in the input's layout, like the other pools'.
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np
import tensorflow as tf

from pooladapt.backends.tensorflow.quirks import order_key, to_first, to_last
from pooladapt.plan import FRACTIONAL_SAMPLE_DIMS, FractionalPlan


def draw_samples(x: tf.Tensor, shape: tuple[int | None, int, int]) -> tf.Tensor:
    """Uniform samples in [0, 1) from TF's random ops (``tf.random.uniform``: the global seed
    of ``tf.random.set_seed`` and the op's own, a stateful op inside ``tf.function`` and
    XLA, as torch's layers use torch's global generator), in x's floating dtype (float64 for
    integer input). A draw that reaches 1 (should a kernel draw a 16-bit float in float32 and
    round it) takes the dtype's largest value below 1. A batch of None (unknown while
    tracing) is read from ``x`` at run time."""
    dtype = x.dtype if x.dtype.is_floating else tf.float64
    batch = tf.shape(x)[0] if shape[0] is None else shape[0]  # a graph's unknown batch
    u = tf.random.uniform(tf.stack([batch, *shape[1:]]), dtype=dtype)
    return tf.minimum(u, tf.constant(1 - ml_dtypes.finfo(dtype.as_numpy_dtype).epsneg, dtype))


_PRECISION = {tf.float16: 11, tf.bfloat16: 8}
"""Significand bits of the 16-bit floats, whose arithmetic the starts emulate in float32."""


def _rounded(v: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """The float32 ``v`` (>= 0, finite) rounded to ``dtype``'s precision, ties to even, by
    integer ops on its bits: a cast there and back XLA may drop (TF 2.16's XLA computes
    bfloat16 arithmetic in float32 without rounding between operations). float32 holds
    2p + 2 bits of a 16-bit float's p, so a float32 result rounded again is the 16-bit
    operation's own. Below the smallest normal float16 more bits are kept than float16 has;
    such values are below 1 and truncate to 0 as float16's would."""
    drop = 24 - _PRECISION[dtype]
    bits = tf.bitcast(v, tf.int32)
    odd = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, drop), 1)
    bits = tf.bitwise.bitwise_and(bits + ((1 << (drop - 1)) - 1) + odd, ~((1 << drop) - 1))
    r = tf.bitcast(bits, tf.float32)
    if dtype == tf.float16:  # beyond float16's largest value: inf, as float16's rounding
        r = tf.where(r > 65504, tf.constant(np.inf, tf.float32), r)
    return r


def _starts(plan: FractionalPlan, u: tf.Tensor, d: int) -> tf.Tensor:
    """int64 window starts (N, C, out) along spatial dim ``d`` for samples u (N, C): the plan's
    rule in u's dtype; float16 and bfloat16 emulated in float32, rounded after each
    operation (:func:`_rounded`)."""
    n, k, out = plan.in_size[d], plan.spec.window[d], plan.out_size[d]
    last = tf.zeros_like(u, tf.int64)[..., None] + (n - k)
    np_dtype = u.dtype.as_numpy_dtype
    alpha = plan.alpha(d, np_dtype)
    if alpha is None:
        return last
    i = np.arange(out - 1, dtype=np_dtype)
    if u.dtype in _PRECISION:
        half, u = u.dtype, tf.cast(u, tf.float32)  # exact
        a, i = tf.constant(np.float32(alpha)), tf.constant(i.astype(np.float32))
        scaled = _rounded(_rounded(i + u[..., None], half) * a, half)
        base = _rounded(u * a, half)
    else:
        a, i = tf.constant(alpha, u.dtype), tf.constant(i)
        scaled, base = (i + u[..., None]) * a, u * a
    first = tf.cast(scaled, tf.int64) - tf.cast(base, tf.int64)[..., None]
    return tf.concat([first, last], axis=-1)


def window_cells(plan: FractionalPlan, samples: tf.Tensor) -> tf.Tensor:
    """int64 per-plane flat indices of every window's cells, shape (N, C, windows, cells),
    windows and cells in row-major order: one spatial dim at a time, each a rank-6 sum
    (grappler cannot merge broadcasting adds of rank 8, a 3-D plan's all at once)."""
    spec, nd = plan.spec, plan.spec.ndim
    cells: tf.Tensor | None = None
    for d in range(nd):
        u = samples[..., FRACTIONAL_SAMPLE_DIMS[nd].index(d)]
        pos = _starts(plan, u, d)[..., None] + tf.range(spec.window[d], dtype=tf.int64)
        pos = pos * math.prod(plan.in_size[d + 1:])  # (N, C, out_d, k_d)
        if cells is None:
            cells = pos
            continue
        lead = tf.shape(cells, out_type=tf.int64)[:2]
        cells = cells[:, :, :, None, :, None] + pos[:, :, None, :, None, :]
        cells = tf.reshape(cells, tf.concat([lead, [math.prod(plan.out_size[:d + 1]),
                                                    math.prod(spec.window[:d + 1])]], 0))
    assert cells is not None
    return cells


def fractional_max_pool(x: tf.Tensor, plan: FractionalPlan, samples: tf.Tensor) -> Any:
    spec = plan.spec
    cf = spec.data_format == "channels_first"
    xc = to_first(x, not cf)
    n = tf.shape(xc, out_type=tf.int64)[0]
    channels = xc.shape[1]
    flat = tf.reshape(xc, [n, channels, math.prod(plan.in_size)])
    cells = window_cells(plan, samples[:n])  # (N, C, windows, cells)
    values = tf.gather(flat, tf.reshape(cells, [n, channels, -1]), batch_dims=2)
    values = tf.reshape(values, tf.shape(cells))
    keys = order_key(values) if x.dtype.is_floating else values  # a NaN is the top key
    winners = keys == tf.reduce_max(keys, axis=-1, keepdims=True)
    count = math.prod(spec.window)
    first = tf.reduce_min(tf.where(winners, tf.range(count, dtype=tf.int64), count), axis=-1)
    idx = tf.gather(cells, first[..., None], batch_dims=3)[..., 0]  # (N, C, windows)
    y = tf.gather(flat, idx, batch_dims=2)  # gathered from the plane: the gradient's cell
    out_shape = [n, channels, *plan.out_size]
    y = to_last(tf.reshape(y, out_shape), not cf)
    if not spec.return_indices:
        return y
    return y, to_last(tf.reshape(idx, out_shape), not cf)
