"""pooladapt.family against hand-computed values, on NumPy's primitives."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pooladapt import family
from pooladapt.backends.numpy import ops
from pooladapt.spec import make_adaptive_spec, make_unpool_spec

NAN = np.nan


def _unpool(y, indices, out_size, data_format="channels_first", unpool_ops=ops.UNPOOL):
    spec = make_unpool_spec(out_size, ndim=2, data_format=data_format)
    return family.max_unpool(unpool_ops, np.asarray(y), np.asarray(indices), spec, out_size)


def test_unpool_puts_each_value_at_its_index_of_a_4x4_plane():
    out = _unpool([[[[1.0, 2.0], [3.0, 4.0]]]], [[[[5, 7], [13, 15]]]], (4, 4))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[[[0, 0, 0, 0], [0, 1, 0, 2],
                                          [0, 0, 0, 0], [0, 3, 0, 4]]]])


def test_unpool_drops_index_minus_one_and_updates_a_repeated_index():
    # -1: a window of padding only; 5 twice: overlapping windows, same value, written once
    out = _unpool(np.array([[[[7, 2], [2, 9]]]], np.int16), [[[[-1, 5], [5, 0]]]], (4, 4))
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, [[[[9, 0, 0, 0], [0, 2, 0, 0],
                                          [0, 0, 0, 0], [0, 0, 0, 0]]]])


def test_unpool_channels_last_scatters_each_channel_in_its_plane():
    y = np.array([[[[1, 10]], [[2, 20]]]], np.float32)  # (1, 2, 1, 2): 2x1 plane, 2 channels
    i = np.array([[[[0, 3]], [[3, 1]]]])
    out = _unpool(y, i, (2, 2), "channels_last")
    np.testing.assert_array_equal(out[..., 0], [[[1, 0], [0, 2]]])
    np.testing.assert_array_equal(out[..., 1], [[[0, 20], [0, 10]]])


def test_unpool_checks_the_range_eagerly_and_drops_it_where_nothing_is_checked():
    with pytest.raises(ValueError, match="outside the output plane"):
        _unpool([[[[1.0]]]], [[[[16]]]], (4, 4))
    traced = dataclasses.replace(ops.UNPOOL, top=lambda i: None)  # as in a graph
    out = _unpool([[[[1.0, 2.0]]]], [[[[16, 3]]]], (2, 2), unpool_ops=traced)
    np.testing.assert_array_equal(out, [[[[0, 0], [0, 2]]]])


MEANS = family.MeanOps(
    cast=lambda t, dtype: t.astype(dtype), take=lambda t, index, axis: np.take(t, index, axis),
    where=np.where, sum=lambda t, axis: t.sum(axis=axis), divide=np.divide)


def _plan(mode, shape, out, ndim):
    return make_adaptive_spec(mode, out, ndim=ndim, return_indices=mode == "max",
                              data_format="channels_first").plan(shape)


def test_adaptive_5_to_3_bins_are_0_2_1_4_3_5():
    plan = _plan("avg", (1, 1, 5), 3, 1)
    assert (plan.starts, plan.ends) == (((0, 1, 3),), ((2, 4, 5),))


def test_bin_means_5_to_3():
    x = np.array([[[1, 3, 3, 0, 2]]], np.float32)
    out = family.bin_means(MEANS, x, _plan("avg", x.shape, 3, 1))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[[2, 2, 1]]])  # (1+3)/2, (3+3+0)/3, (0+2)/2


def test_bin_means_5x5_to_3x3_of_a_ramp():
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)  # x[r, c] = 5r + c
    out = family.bin_means(MEANS, x, _plan("avg", x.shape, 3, 2))
    # the mean of a box is 5 * mean(rows) + mean(cols); the bins' means are 0.5, 2, 3.5
    np.testing.assert_array_equal(out, [[[[3, 4.5, 6], [10.5, 12, 13.5], [18, 19.5, 21]]]])


def _first_max(x, out, ndim):
    x = np.asarray(x)
    flat = ops.flat_index(x.shape, tuple(range(2, 2 + ndim)))
    return family.bin_first_max(ops.BIN_MAX, x, flat,
                                family.plan_bins(_plan("max", x.shape, out, ndim)))


def test_bin_first_max_5_to_3_keeps_the_first_of_tied_maxima():
    value, index = _first_max([[[1, 3, 3, 0, 2]]], 3, 1)
    np.testing.assert_array_equal(value, [[[3, 3, 2]]])
    np.testing.assert_array_equal(index, [[[1, 1, 4]]])  # bin [1, 4) ties at 1 and 2


def test_bin_first_max_picks_the_first_nan():
    value, index = _first_max([[[1, NAN, 3, NAN, 2]]], 3, 1)
    assert np.isnan(value).all()
    np.testing.assert_array_equal(index, [[[1, 1, 3]]])


def test_bin_first_max_5x5_to_3x3_is_the_row_major_first_maximum():
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 9  # tied: flat 1 comes first in row-major order
    value, index = _first_max(x, 3, 2)
    np.testing.assert_array_equal(value, [[[[9, 9, 0], [9, 0, 0], [0, 0, 0]]]])
    # all-zero bins keep their first cell: rows [0,2) [1,4) [3,5), the same columns
    np.testing.assert_array_equal(index, [[[[1, 1, 3], [5, 6, 8], [15, 16, 18]]]])
