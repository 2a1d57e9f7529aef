"""TensorFlow's primitives for the family's algorithms (pooladapt.family): ``UNPOOL`` (rows
moved channels-first, one ``tensor_scatter_nd_update`` with row offsets) and ``MEANS``
(adaptive avg by ``tf.gather``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from pooladapt import family
from pooladapt.backends.tensorflow.compile import batch_size
from pooladapt.backends.tensorflow.quirks import to_first, to_last


def _scatter(values: tf.Tensor, index: tf.Tensor, size: int, first: bool) -> tf.Tensor:
    """(N, C, cells) rows scattered into one flat zeros where row r's ``size + 1`` slots start
    at r * (size + 1), the spare last slot of each cut off. An update, not a sum."""
    n, c = batch_size(values), values.shape[1]
    rows = tf.reshape(tf.range(n * c), [n, c, 1]) * (size + 1)
    out = tf.tensor_scatter_nd_update(tf.zeros([n * c * (size + 1)], values.dtype),
                                      tf.reshape(index + rows, [-1, 1]), tf.reshape(values, [-1]))
    return tf.reshape(out, [n, c, size + 1])[..., :size]


def _top(i: tf.Tensor) -> int | None:
    """The largest index, eagerly (a graph holds no values: its out-of-range indices are
    dropped)."""
    return int(tf.reduce_max(i)) if tf.executing_eagerly() and i.shape.num_elements() else None


def _take(t: tf.Tensor, index: np.ndarray, axis: int) -> tf.Tensor:
    return tf.gather(t, tf.constant(index), axis=axis)


def _divide(t: tf.Tensor, counts: Any) -> tf.Tensor:
    return t / tf.constant(counts, t.dtype)


UNPOOL = family.UnpoolOps(
    to_first=to_first, to_last=to_last, shape=lambda a: (batch_size(a), *a.shape[1:]),
    reshape=lambda a, shape: tf.reshape(a, list(shape)),
    as_index=lambda i: tf.cast(i, tf.int64), top=_top, where=tf.where, scatter=_scatter)
MEANS = family.MeanOps(cast=tf.cast, take=_take, where=tf.where,
                       sum=lambda t, axis: tf.reduce_sum(t, axis=axis), divide=_divide)
