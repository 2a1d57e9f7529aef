"""Fractional max pooling: the window rule, the spec and the oracle against hand-computed values
(PyTorch's rule; tests/torch/test_fractional.py checks it against torch itself)."""

from __future__ import annotations

import numpy as np
import pytest

from pooladapt import oracle
from pooladapt.plan import fractional_starts
from pooladapt.spec import make_fractional_spec


def spec2d(window, output_size=None, output_ratio=None, **kw):
    kw.setdefault("data_format", "channels_first")
    return make_fractional_spec(window, output_size, output_ratio, ndim=2, **kw)


def test_window_starts_by_hand():
    # n=7, k=2, out=3, u=0.5: alpha = 5/2 = 2.5; i=0: int(0.5*2.5) - int(0.5*2.5) = 0;
    # i=1: int(1.5*2.5) - int(1.25) = 3 - 1 = 2; the last window starts at n - k = 5
    assert fractional_starts(np.float64(0.5), 7, 3, 2) == [0, 2, 5]
    # n=4, k=2, out=2, u=0.9: alpha = 2; i=0 starts at 0, the last at 2
    assert fractional_starts(np.float64(0.9), 4, 2, 2) == [0, 2]
    assert fractional_starts(np.float32(0.3), 9, 1, 3) == [6]  # one window: the last


def test_window_starts_follow_the_samples_precision():
    # n=12, k=2, out=4, u=0.1: alpha = 10/3 and window 2 starts at int(2.1 * 10/3) - int(1/3).
    # In float64, 2.1 * 3.3333333333333335 rounds to 7.000000000000001: start 7. In float32,
    # 2 + 0.1f = 2.0999999046 and alpha = 3.3333332539: their product 6.9999995 gives 6.
    assert fractional_starts(np.float64(0.1), 12, 4, 2) == [0, 3, 7, 10]
    assert fractional_starts(np.float32(0.1), 12, 4, 2) == [0, 3, 6, 10]


def test_vectorised_starts_equal_the_rule():
    spec = spec2d((2, 3), output_size=(5, 4))
    plan = spec.plan((3, 2, 11, 9))
    rng = np.random.default_rng(0)
    for dtype in (np.float16, np.float32, np.float64):
        samples = rng.random((3, 2, 2)).astype(dtype)
        rows, cols = plan.starts(samples)
        for n in range(3):
            for c in range(2):  # 2-D samples: the first drives the width, the second the height
                assert rows[n, c].tolist() == fractional_starts(samples[n, c, 1], 11, 5, 2)
                assert cols[n, c].tolist() == fractional_starts(samples[n, c, 0], 9, 4, 3)


PLANE = np.arange(28, dtype=np.float64).reshape(1, 1, 4, 7)


def test_oracle_by_hand():
    # width: n=7, k=2, out=3, u=0.5 -> starts 0, 2, 5; height: n=4, k=2, out=2, u=0.9 -> 0, 2.
    # Each window's maximum is its bottom-right cell of arange(28).reshape(4, 7)
    samples = np.array([[[0.5, 0.9]]])
    y, idx = oracle.fractional_max_pool(PLANE, spec2d(2, (2, 3), return_indices=True), samples)
    np.testing.assert_array_equal(y[0, 0], [[8, 10, 13], [22, 24, 27]])
    np.testing.assert_array_equal(idx[0, 0], [[8, 10, 13], [22, 24, 27]])


def test_oracle_3d_samples_are_depth_height_width():
    x = np.arange(4 * 5 * 7, dtype=np.float64).reshape(1, 1, 4, 5, 7)
    spec = make_fractional_spec(2, (2, 1, 3), return_indices=True, ndim=3,
                                data_format="channels_first")
    # depth n=4 out=2 -> starts 0, 2; height out=1 -> 3; width n=7 out=3 u=0.5 -> 0, 2, 5
    y, idx = oracle.fractional_max_pool(x, spec, np.array([[[0.9, 0.2, 0.5]]]))
    want = [[[(d + 1) * 35 + 4 * 7 + (w + 1) for w in (0, 2, 5)]] for d in (0, 2)]
    np.testing.assert_array_equal(idx[0, 0], want)
    np.testing.assert_array_equal(y[0, 0], want)


def test_oracle_nan_first_and_ties_first():
    x = np.array([[[[1.0, np.nan, 3.0, 3.0], [np.nan, 2.0, 0.0, 3.0]]]])
    samples = np.zeros((1, 1, 2))  # width n=4, out=2: windows at 0 and 2; one row window
    y, idx = oracle.fractional_max_pool(x, spec2d(2, (1, 2), return_indices=True), samples)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 1  # the first NaN in row-major order
    assert y[0, 0, 0, 1] == 3 and idx[0, 0, 0, 1] == 2  # three 3s: the first wins


def test_oracle_keeps_integers_and_channels_last():
    x = (np.arange(2 * 3 * 6 * 5) % 17).astype(np.int16).reshape(2, 3, 6, 5)
    samples = np.random.default_rng(1).random((2, 3, 2))
    first = oracle.fractional_max_pool(x, spec2d(2, (3, 3)), samples)
    assert first.dtype == np.int16
    last = oracle.fractional_max_pool(np.moveaxis(x, 1, -1), spec2d(
        2, (3, 3), data_format="channels_last"), samples)
    np.testing.assert_array_equal(np.moveaxis(last, -1, 1), first)


def test_vjp_sends_each_gradient_to_its_winner():
    samples = np.array([[[0.5, 0.9]]])
    g = np.arange(1.0, 7.0).reshape(1, 1, 2, 3)
    dx = oracle.fractional_vjp(PLANE, spec2d(2, (2, 3)), samples, g)
    want = np.zeros((4, 7))
    for (r, c), v in zip([(1, 1), (1, 3), (1, 6), (3, 1), (3, 3), (3, 6)], range(1, 7)):
        want[r, c] = v
    np.testing.assert_array_equal(dx[0, 0], want)


def test_overlapping_windows_add_their_gradients():
    x = np.array([[[[0.0, 5.0, 0.0]]]])  # width n=3, k=2, out=2: windows 0-1 and 1-2
    dx = oracle.fractional_vjp(x, spec2d((1, 2), (1, 2)), np.zeros((1, 1, 2)),
                               np.array([[[[1.0, 2.0]]]]))
    np.testing.assert_array_equal(dx[0, 0], [[0, 3, 0]])


def test_output_ratio_gives_int_of_the_product():
    assert spec2d(2, output_ratio=0.5).plan((1, 3, 5, 7)).out_size == (2, 3)
    assert spec2d(2, output_ratio=(0.75, 0.3)).plan((1, 1, 9, 9)).out_size == (6, 2)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    (dict(), ValueError, "exactly one of output_size and output_ratio"),
    (dict(output_size=2, output_ratio=0.5), ValueError, "exactly one"),
    (dict(output_ratio=1.0), ValueError, "between 0 and 1"),
    (dict(output_ratio=0), ValueError, "between 0 and 1"),
    (dict(output_ratio="half"), TypeError, "output_ratio"),
    (dict(output_size=0), ValueError, "output_size must be >= 1"),
    (dict(output_size=(2, 2, 2)), ValueError, "output_size"),
    (dict(output_size=2, return_indices=1), TypeError, "return_indices"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_fractional_spec(2, ndim=2, **kwargs)


def test_windows_that_do_not_fit_and_bad_ranks():
    with pytest.raises(ValueError, match="output size \\+ window - 1 <= input size"):
        spec2d(3, (4, 4)).plan((1, 1, 5, 9))  # 4 + 3 - 1 > 5
    with pytest.raises(ValueError, match="output size"):
        spec2d(2, output_ratio=0.1).plan((1, 1, 5, 9))  # int(0.5) = 0 windows
    with pytest.raises(ValueError, match="expected a 4-D input"):
        spec2d(2, 2).plan((1, 5, 9))
    with pytest.raises(ValueError, match="2 or 3 spatial dims"):
        make_fractional_spec(2, 2, ndim=1)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_numpy_draws_below_one_where_rounding_would_reach_it(dtype, monkeypatch):
    # a float64 draw of 1 - 2**-20 rounds to 1.0 in every 16-bit float (and float32 keeps
    # it); the samples must stay in [0, 1): a sample of 1 starts a window past the input
    from pooladapt.backends.numpy import fractional

    dt = np.dtype(pytest.importorskip("ml_dtypes").bfloat16) if dtype == "bfloat16" else (
        np.dtype(dtype))
    monkeypatch.setattr(np.random, "random", lambda shape: np.full(shape, 1 - 2**-20))
    u = fractional.draw_samples(np.zeros((1, 1, 4, 4), dt), (1, 1, 2))
    assert u.dtype == dt and (u.astype(np.float64) < 1).all()
    assert (u.astype(np.float64) >= 0.99).all()
