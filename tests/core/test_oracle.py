"""The oracle against hand-computed values: the two classic walk-throughs and the cases where
frameworks disagree (FRAMEWORK-NOTES D1-D11)."""

from __future__ import annotations

import numpy as np
import pytest

from pooladapt import oracle
from pooladapt.spec import (
    make_adaptive_spec,
    make_global_spec,
    make_spec,
    make_unpool_spec,
)


def spec2d(mode, window, **kw):
    kw.setdefault("data_format", "channels_first")
    return make_spec(mode, window, ndim=2, **kw)


def plane(a):
    return np.asarray(a, dtype=np.float64)[None, None]


X16 = plane(np.arange(16).reshape(4, 4))


# d2l: 3x3 input 0..8, 2x2 window, stride 1.
@pytest.mark.parametrize(("mode", "want"), [("max", [[4, 5], [7, 8]]),
                                            ("avg", [[2, 3], [5, 6]])])
def test_d2l_3x3(mode, want):
    x = plane(np.arange(9).reshape(3, 3))
    np.testing.assert_array_equal(oracle.pool(x, spec2d(mode, 2, stride=1))[0, 0], want)


def test_d2l_window_defaults_to_stride():
    np.testing.assert_array_equal(oracle.pool(X16, spec2d("max", 3))[0, 0], [[10]])


def test_d2l_padding_and_stride():
    y = oracle.pool(X16, spec2d("max", 3, padding=1, stride=2))
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])


def test_d2l_rectangular_window():
    y = oracle.pool(X16, spec2d("max", (2, 3), stride=(2, 3), padding=(0, 1)))
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])


def test_d2l_two_channels():
    x = np.concatenate([X16, X16 + 1], axis=1)
    y = oracle.pool(x, spec2d("max", 3, padding=1, stride=2))
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(y[0, 1], [[6, 8], [14, 16]])


KERAS_4X4 = [[1, 3, 2, 1], [2, 9, 1, 1], [1, 3, 2, 3], [2, 6, 1, 2]]


@pytest.mark.parametrize(("mode", "want"), [("max", [[9, 2], [6, 3]]),
                                            ("avg", [[3.75, 1.25], [3, 2]])])
def test_keras_notebook_4x4(mode, want):
    x = np.asarray(KERAS_4X4, dtype=np.float64).reshape(1, 4, 4, 1)
    y = oracle.pool(x, make_spec(mode, 2, 2, data_format="channels_last", ndim=2))
    np.testing.assert_array_equal(y[0, :, :, 0], want)


def test_keras_notebook_4x4x3_channels_last():
    in0 = [[1, 4, 2, 0], [2, 3, 1, 0], [3, 1, 2, 3], [4, 3, 2, 1]]
    in1 = [[1, 7, 2, 1], [3, 2, 1, 9], [0, 1, 5, 1], [4, 6, 2, 4]]
    in2 = [[1, 5, 2, 1], [3, 2, 1, 9], [0, 1, 3, 1], [4, 6, 2, 7]]
    x = np.stack([in0, in1, in2], axis=-1).astype(np.float64)[None]
    y_max = oracle.pool(x, make_spec("max", 2, data_format="NHWC", ndim=2))[0]
    y_avg = oracle.pool(x, make_spec("avg", 2, data_format="NHWC", ndim=2))[0]
    np.testing.assert_array_equal(y_max[..., 0], [[4, 2], [4, 3]])
    np.testing.assert_array_equal(y_max[..., 1], [[7, 9], [6, 5]])
    np.testing.assert_array_equal(y_max[..., 2], [[5, 9], [6, 7]])
    np.testing.assert_array_equal(y_avg[..., 0], [[2.5, 0.75], [2.75, 2]])
    np.testing.assert_array_equal(y_avg[..., 1], [[3.25, 3.25], [2.75, 3]])
    np.testing.assert_array_equal(y_avg[..., 2], [[2.75, 3.25], [2.75, 3.25]])


def test_padding_never_wins_a_max():
    # D2: -(arange(16)+1), k3 s2, padding ((1,0),(1,0)): torch/Flax give [-1,-2,-5,-6].
    x = -(X16 + 1)
    y = oracle.pool(x, spec2d("max", 3, stride=2, padding=((1, 0), (1, 0))))
    np.testing.assert_array_equal(y[0, 0], [[-1, -2], [-5, -6]])
    z = oracle.pool(-np.ones((1, 1, 3, 3)), spec2d("max", 3, stride=1, padding=1))
    assert (z == -1).all()


def test_same_upper_and_lower_1d():
    # D1: row [1,2,3,4], kernel 3, stride 2: SAME pads (0,1) -> max [3,4]; SAME_LOWER -> [2,4].
    x = np.array([1.0, 2, 3, 4]).reshape(1, 1, 4)
    up = make_spec("max", 3, 2, "same", data_format="NCW", ndim=1)
    low = make_spec("max", 3, 2, "same_lower", data_format="NCW", ndim=1)
    np.testing.assert_array_equal(oracle.pool(x, up).ravel(), [3, 4])
    np.testing.assert_array_equal(oracle.pool(x, low).ravel(), [2, 4])
    avg = make_spec("avg", 3, 2, "same", data_format="NCW", ndim=1)
    np.testing.assert_allclose(oracle.pool(x, avg).ravel(), [2, 3.5])  # TF: padding excluded
    avg_cip = make_spec("avg", 3, 2, "same", count_include_pad=True, data_format="NCW", ndim=1)
    np.testing.assert_allclose(oracle.pool(x, avg_cip).ravel(), [2, 7 / 3])  # (3+4+0)/3


def test_same_total_padding_two_splits_evenly():
    # in 4, k 3, s 1: total padding 2, one cell each side; the first window is [0,1,2] -> 1.5 avg.
    x = np.array([1.0, 2, 3, 4]).reshape(1, 1, 4)
    s = make_spec("avg", 3, 1, "same", data_format="NCW", ndim=1)
    np.testing.assert_allclose(oracle.pool(x, s).ravel(), [1.5, 2, 3, 3.5])


def test_ceil_mode_drops_window_starting_in_padding():
    # D4: [1..5], k2 s2 pad1 ceil -> 3 outputs [1,3,5] (torch/ONNX), not MXNet's 4.
    x = np.arange(1.0, 6).reshape(1, 1, 5)
    s = make_spec("max", 2, 2, 1, ceil_mode=True, data_format="NCW", ndim=1)
    np.testing.assert_array_equal(oracle.pool(x, s).ravel(), [1, 3, 5])


def test_ceil_mode_partial_window_divisor():
    # D4: 4x4 (1..16), k3 s2 p1, ceil, cip=True: torch gives 1.556, 3.333, 2.0 on the first row.
    x = plane(np.arange(1, 17).reshape(4, 4))
    s = spec2d("avg", 3, stride=2, padding=1, ceil_mode=True, count_include_pad=True)
    y = oracle.pool(x, s)[0, 0]
    np.testing.assert_allclose(y[0], [(1 + 2 + 5 + 6) / 9, (2 + 3 + 4 + 6 + 7 + 8) / 9,
                                      (4 + 8) / 6])


def test_count_include_pad_ones():
    # D3: ones 3x3, k3 s1 p1: the corner is 4/9 when padding counts, 1 when it does not.
    x = np.ones((1, 1, 3, 3))
    inc = oracle.pool(x, spec2d("avg", 3, stride=1, padding=1, count_include_pad=True))
    exc = oracle.pool(x, spec2d("avg", 3, stride=1, padding=1))
    np.testing.assert_allclose(inc[0, 0, 0], [4 / 9, 6 / 9, 4 / 9])
    np.testing.assert_allclose(exc[0, 0], np.ones((3, 3)))


def test_lp_uses_absolute_values():
    # D11: p=1 on [-1,-2,-3,-4] is +10 (ONNX), not -10 (torch/MXNet).
    x = np.array([-1.0, -2, -3, -4]).reshape(1, 1, 4)
    s = make_spec("lp", 4, p=1, data_format="NCW", ndim=1)
    assert oracle.pool(x, s).item() == 10
    s2 = make_spec("lp", 2, p=2, data_format="NCW", ndim=1)
    np.testing.assert_allclose(oracle.pool(np.array([3.0, -4, 0, 0]).reshape(1, 1, 4), s2).ravel(),
                               [5, 0])


def test_nan_propagates_in_max():
    # D5: [nan,1 | 2,3] and [1,nan | 2,3] -> [nan,3].
    s = make_spec("max", 2, data_format="NCW", ndim=1, return_indices=True)
    for row, idx in (([np.nan, 1, 2, 3], [0, 3]), ([1, np.nan, 2, 3], [1, 3])):
        y, i = oracle.pool(np.array(row).reshape(1, 1, 4), s)
        assert np.isnan(y.ravel()[0]) and y.ravel()[1] == 3
        np.testing.assert_array_equal(i.ravel(), idx)


def test_indices_per_plane_and_first_max_on_ties():
    # D9: each plane's max at (h=1, w=0) of a 2x2 plane -> index 2 for every plane.
    x = np.zeros((2, 2, 2, 2))
    x[:, :, 1, 0] = 1
    _, idx = oracle.pool(x, spec2d("max", 2, return_indices=True))
    np.testing.assert_array_equal(idx.ravel(), [2, 2, 2, 2])
    # D10: ties go to the first maximum in row-major window order.
    _, idx = oracle.pool(np.ones((1, 1, 2, 2)), spec2d("max", 2, return_indices=True))
    assert idx.item() == 0
    s = make_spec("max", 2, 2, data_format="NCW", ndim=1, return_indices=True)
    _, idx = oracle.pool(np.array([1.0, 3, 3, 2]).reshape(1, 1, 4), s)
    np.testing.assert_array_equal(idx.ravel(), [1, 2])


def test_indices_ignore_padding():
    # D9: 3x3 arange, k2 s2 p1: windows' maxima at (0,0),(0,2),(2,0),(2,2) -> [0,2,6,8].
    x = plane(np.arange(9).reshape(3, 3))
    _, idx = oracle.pool(x, spec2d("max", 2, stride=2, padding=1, return_indices=True))
    np.testing.assert_array_equal(idx.ravel(), [0, 2, 6, 8])


def test_gradient_ties_go_to_first_max():
    # D10: [1,2,2,1] with k2 s1: gradients [0,2,1,0].
    x = np.array([1.0, 2, 2, 1]).reshape(1, 1, 4)
    s = make_spec("max", 2, 1, data_format="NCW", ndim=1)
    np.testing.assert_array_equal(oracle.pool_vjp(x, s, np.ones((1, 1, 3))).ravel(), [0, 2, 1, 0])
    u = make_spec("max", 2, data_format="NCHW", ndim=2)
    np.testing.assert_array_equal(oracle.pool_vjp(np.ones((1, 1, 2, 2)), u, np.ones((1, 1, 1, 1)))
                                  .ravel(), [1, 0, 0, 0])


def test_avg_and_lp_gradients_by_hand():
    x = np.array([1.0, 2, 3]).reshape(1, 1, 3)
    # windows [p,1],[1,2],[2,3],[3,p] with divisors 1,2,2,1 (padding not counted)
    s = make_spec("avg", 2, 1, padding=1, data_format="NCW", ndim=1)
    np.testing.assert_allclose(oracle.pool_vjp(x, s, np.ones((1, 1, 4))).ravel(), [1.5, 1, 1.5])
    lp = make_spec("lp", 2, data_format="NCW", ndim=1, p=2)
    x2 = np.array([3.0, -4]).reshape(1, 1, 2)
    np.testing.assert_allclose(oracle.pool_vjp(x2, lp, np.ones((1, 1, 1))).ravel(), [0.6, -0.8])


def test_integer_max_keeps_dtype_and_pads_with_minimum():
    x = np.full((1, 1, 2, 2), np.iinfo(np.int8).min, dtype=np.int8)
    y, idx = oracle.pool(x, spec2d("max", 2, stride=1, padding=1, return_indices=True))
    assert y.dtype == np.int8 and (y == -128).all()
    np.testing.assert_array_equal(idx[0, 0], [[0, 0, 1], [0, 0, 1], [2, 2, 3]])


def test_all_padding_window():
    # dilation 3 over 2 cells with one cell of padding: the second window's taps are (0, 3)...
    x = np.array([-5.0, -7]).reshape(1, 1, 2)
    s = make_spec("max", 2, 1, 1, dilation=3, data_format="NCW", ndim=1, return_indices=True)
    y, idx = oracle.pool(x, s)  # windows taps: (-1,2) -> all padding
    assert y.ravel().tolist() == [-np.inf] and idx.ravel().tolist() == [-1]
    a = make_spec("avg", 2, 1, 1, dilation=3, data_format="NCW", ndim=1)
    assert np.isnan(oracle.pool(x, a).item())
    a2 = make_spec("avg", 2, 1, 1, dilation=3, count_include_pad=True, data_format="NCW", ndim=1)
    assert oracle.pool(x, a2).item() == 0


def test_global_pool():
    x = plane(np.arange(16).reshape(4, 4))
    g = make_global_spec("avg", ndim=2, data_format="channels_first")
    assert oracle.global_pool(x, g).tolist() == [[7.5]]
    gk = make_global_spec("max", ndim=2, keepdims=True, data_format="channels_first")
    assert oracle.global_pool(x, gk).shape == (1, 1, 1, 1)


def test_adaptive_bins_torch_rule():
    # in 5 -> out 3: bins [0,2),[1,4),[3,5).
    x = np.array([1.0, 5, 2, 4, 3]).reshape(1, 1, 5)
    s = make_adaptive_spec("max", 3, ndim=1, data_format="NCW", return_indices=True)
    y, idx = oracle.adaptive_pool(x, s)
    np.testing.assert_array_equal(y.ravel(), [5, 5, 4])
    np.testing.assert_array_equal(idx.ravel(), [1, 1, 3])
    a = make_adaptive_spec("avg", 3, ndim=1, data_format="NCW")
    np.testing.assert_allclose(oracle.adaptive_pool(x, a).ravel(), [3, 11 / 3, 3.5])


def test_max_unpool_inverts_indices():
    x = plane([[1, 2], [3, 4]])
    y, idx = oracle.pool(x, spec2d("max", 2, return_indices=True))
    out = oracle.max_unpool(y, idx, make_unpool_spec((2, 2), ndim=2, data_format="NCHW"), (2, 2))
    np.testing.assert_array_equal(out[0, 0], [[0, 0], [0, 4]])
