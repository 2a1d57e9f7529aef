"""JAX's and Flax's own pooling against FRAMEWORK-NOTES.md, next to pooladapt's canonical answer.

Each test runs the raw op (``lax.reduce_window``, ``flax.linen.max_pool``/``avg_pool``, the d2l
JAX cell) and asserts the documented native value, hand-computed from the notes, so a change
in JAX or Flax is noticed; then it asserts what pooladapt gives instead.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import pooladapt as pa
from pooladapt.backends import jax as pa_jax
from pooladapt.layers import flax as layers


def _row(values, dtype=jnp.float32):
    """A (1, W, 1) channels-last row, as Flax takes it."""
    return jnp.asarray(values, dtype).reshape(1, -1, 1)


def _flat(y) -> list:
    return np.asarray(y, dtype=np.float64).ravel().tolist()


def test_d1_same_pads_the_extra_cell_at_the_end_and_same_lower_at_the_start():
    x = _row([1.0, 2.0, 3.0, 4.0])
    kw = dict(window_dimensions=(1, 3, 1), window_strides=(1, 2, 1))
    assert _flat(lax.reduce_window(x, -jnp.inf, lax.max, padding="SAME", **kw)) == [3, 4]
    assert _flat(lax.reduce_window(x, -jnp.inf, lax.max, padding="SAME_LOWER", **kw)) == [2, 4]
    assert _flat(pa.pool1d(x, "max", 3, 2, "same")) == [3, 4]
    assert _flat(pa.pool1d(x, "max", 3, 2, "same_lower")) == [2, 4]  # ONNX's reference: [3, 4]


def _d2l_jax_max_pool(x):
    """The d2l book's JAX cell: zero-pad top and left with jnp.pad, then a VALID k3 s2 pool."""
    padded = jnp.pad(x, [[0, 0], [1, 0], [1, 0], [0, 0]])
    return nn.max_pool(padded, (3, 3), (2, 2), "VALID")


def test_d2_zero_padding_agrees_only_on_non_negative_input():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    assert _flat(_d2l_jax_max_pool(x)) == [5, 7, 13, 15]
    assert _flat(nn.max_pool(x, (3, 3), (2, 2), ((1, 0), (1, 0)))) == [5, 7, 13, 15]
    negative = -(jnp.arange(16.0) + 1).reshape(1, 4, 4, 1)
    assert _flat(_d2l_jax_max_pool(negative)) == [0, 0, 0, -6]  # padding won three windows
    assert _flat(nn.max_pool(negative, (3, 3), (2, 2), ((1, 0), (1, 0)))) == [-1, -2, -5, -6]
    assert _flat(pa.pool2d(negative, "max", 3, 2, ((1, 0), (1, 0)))) == [-1, -2, -5, -6]
    assert _flat(layers.MaxPool((3, 3), (2, 2), ((1, 0), (1, 0))).apply({}, negative)) == [
        -1, -2, -5, -6]


def test_d2_all_negative_corner_is_never_a_padded_zero():
    x = -(jnp.arange(9.0) + 1).reshape(1, 3, 3, 1)
    assert _flat(nn.max_pool(x, (3, 3), (1, 1), "SAME"))[0] == -1.0
    assert _flat(_d2l_jax_max_pool(x))[0] == 0.0
    assert _flat(pa.pool2d(x, "max", 3, 1, 1))[0] == -1.0


def test_d3_flax_avg_pool_counts_padding_even_with_same():
    ones = jnp.ones((1, 3, 3, 1))
    first_row = [4 / 9, 6 / 9, 4 / 9]
    np.testing.assert_allclose(nn.avg_pool(ones, (3, 3), (1, 1), "SAME")[0, 0, :, 0],
                               first_row, rtol=1e-6)
    np.testing.assert_allclose(nn.avg_pool(ones, (3, 3), (1, 1), ((1, 1), (1, 1)))[0, 0, :, 0],
                               first_row, rtol=1e-6)
    assert _flat(nn.avg_pool(ones, (3, 3), (1, 1), "SAME", count_include_pad=False)) == [1.0] * 9
    # pooladapt: padding excluded by default (TF, Keras, ONNX); the Flax layer keeps Flax's
    assert _flat(pa.pool2d(ones, "avg", 3, 1, "same")) == [1.0] * 9
    np.testing.assert_allclose(
        layers.AvgPool((3, 3), padding="SAME").apply({}, ones)[0, 0, :, 0], first_row, rtol=1e-6)
    np.testing.assert_allclose(
        layers.nnx.AvgPool((3, 3), padding="SAME")(ones)[0, 0, :, 0], first_row, rtol=1e-6)


def test_d12_flax_same_average_is_not_tf_same():
    x = _row([1.0, 2.0, 3.0, 4.0])  # SAME pads (0, 1): windows [1, 2, 3] and [3, 4, pad]
    np.testing.assert_allclose(_flat(nn.avg_pool(x, (3,), (2,), "SAME")), [2.0, 7 / 3],
                               rtol=1e-6)
    assert _flat(nn.avg_pool(x, (3,), (2,), "SAME", count_include_pad=False)) == [2.0, 3.5]
    assert _flat(pa.pool1d(x, "avg", 3, 2, "same")) == [2.0, 3.5]  # TF, Keras, ONNX
    np.testing.assert_allclose(
        _flat(pa.pool1d(x, "avg", 3, 2, "same", count_include_pad=True)), [2.0, 7 / 3],
        rtol=1e-6)


def test_flax_default_stride_is_one_not_the_window():
    x = _row([1.0, 2.0, 3.0, 4.0, 5.0])
    assert _flat(nn.max_pool(x, (2,))) == [2, 3, 4, 5]
    assert _flat(layers.MaxPool((2,)).apply({}, x)) == [2, 3, 4, 5]  # the drop-in keeps it
    assert _flat(pa.pool1d(x, "max", 2)) == [2, 4]  # pooladapt's stride=None: the window


def test_flax_explicit_padding_breaks_with_two_batch_dims():
    x = jnp.asarray(np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5, 1))
    with pytest.raises(ValueError, match="safe_zip"):  # flax.linen.pool pads one batch dim
        nn.max_pool(x, (2,), (2,), ((1, 0),))
    y = layers.MaxPool((2,), (2,), ((1, 0),)).apply({}, x)
    assert _flat(y[1, 2]) == _flat(nn.max_pool(x[1, 2], (2,), (2,), ((1, 0),))) == [25, 27, 29]


@pytest.mark.parametrize("row, want", [
    ([np.nan, 1, 2, 3], [np.nan, 3.0]),
    ([1, np.nan, 2, 3], [np.nan, 3.0]),
    ([np.nan, np.nan, 2, 3], [np.nan, 3.0]),
])
def test_d5_max_pooling_propagates_nan(row, want):
    x = _row(row)
    np.testing.assert_array_equal(_flat(nn.max_pool(x, (2,), (2,))), want)
    np.testing.assert_array_equal(_flat(pa.pool1d(x, "max", 2)), want)


def test_d7_flax_average_promotes_integers_and_max_keeps_them():
    x = jnp.arange(16, dtype=jnp.int32).reshape(1, 4, 4, 1)
    assert nn.avg_pool(x, (2, 2), (2, 2)).dtype == jnp.float32
    native_max = nn.max_pool(x, (2, 2), (2, 2))
    assert native_max.dtype == jnp.int32 and _flat(native_max) == [5, 7, 13, 15]
    with pytest.raises(TypeError, match="cast"):
        pa.pool2d(x, "avg", 2)
    y = pa.pool2d(x, "max", 2)
    assert y.dtype == jnp.int32 and _flat(y) == [5, 7, 13, 15]


def _reduce_window_max_grad(x, window, stride, **kw):
    def f(t):
        return lax.reduce_window(t, -jnp.inf, lax.max, (window,), (stride,), "VALID", **kw).sum()

    return _flat(jax.grad(f)(jnp.asarray(x)))


def test_d10_reduce_window_max_gradient_goes_to_the_first_maximum():
    uniform = jax.grad(lambda t: lax.reduce_window(t, -jnp.inf, lax.max, (2, 2), (2, 2),
                                                   "VALID").sum())(jnp.ones((2, 2)))
    assert _flat(uniform) == [1, 0, 0, 0]
    assert _reduce_window_max_grad([1.0, 3.0, 3.0, 2.0], 4, 4) == [0, 1, 0, 0]
    assert _reduce_window_max_grad([1.0, 2.0, 2.0, 1.0], 2, 1) == [0, 2, 1, 0]
    assert _flat(jax.grad(jnp.max)(jnp.ones(4))) == [0.25] * 4  # reduce-based: split evenly
    g = jax.grad(lambda t: pa.pool1d(t, "max", 2, 1).sum())(_row([1.0, 2.0, 2.0, 1.0]))
    assert _flat(g) == [0, 2, 1, 0]
    g = jax.grad(lambda t: pa.global_pool1d(t, "max").sum())(_row([1.0, 1.0, 1.0, 1.0]))
    assert _flat(g) == [1, 0, 0, 0]


def test_jax_max_gradient_goes_to_the_last_nan():
    assert _reduce_window_max_grad([1.0, np.nan, 2.0, np.nan], 4, 4) == [0, 0, 0, 1]
    g = jax.grad(lambda t: pa.pool1d(t, "max", 4).sum())(_row([1.0, np.nan, 2.0, np.nan]))
    assert _flat(g) == [0, 1, 0, 0]  # the value is the first NaN; so is the gradient


def test_jax_has_no_vjp_for_dilated_max():
    with pytest.raises(NotImplementedError, match="window dilation"):
        _reduce_window_max_grad([1.0, 2.0, 3.0], 2, 1, window_dilation=(2,))
    g = jax.grad(lambda t: pa.pool1d(t, "max", 2, 1, dilation=2).sum())(_row([1.0, 2.0, 3.0]))
    assert _flat(g) == [0, 0, 1]


def test_xla_flushes_subnormals_where_it_does_and_pooladapt_indices_never():
    tiny = 2.0**-149
    x = _row([tiny, 0.0, 3 * tiny, tiny])
    # what XLA does on this machine (on CPU it flushes in every float op: jax#16200)
    flushes = _flat(x + 0) == [0.0] * 4
    if flushes:
        assert bool(x[0, 0, 0] == 0) and bool(x[0, 2, 0] == x[0, 3, 0])  # comparisons too
    exact = [tiny, 3 * tiny]
    assert _flat(nn.max_pool(x, (2,), (2,))) == ([0.0, 0.0] if flushes else exact)
    # pooladapt's values follow XLA (a known deviation where it flushes); its indices do not
    assert _flat(pa.pool1d(x, "max", 2)) == ([0.0, 0.0] if flushes else exact)
    assert _flat(pa.pool1d(x, "max", 2, return_indices=True)[1]) == [0, 2]
    assert ("subnormals:float32" in pa_jax.BACKEND.known_deviations) == flushes


def test_jit_divides_by_a_constant_through_its_reciprocal():
    with jax.enable_x64(True):
        six = jnp.asarray([6.0], jnp.float64)
        assert float(jax.jit(lambda t: t / 5.0)(six)[0]) == 1.2000000000000002
        assert float((six / 5.0)[0]) == 1.2  # eager: a real division
        # pooladapt: (1 + 2 + 3) / 5 correctly rounded under jit (a window of 5 over 3 cells
        # and 2 of padding, counted)
        x = jnp.asarray([1.0, 2.0, 3.0], jnp.float64).reshape(1, 1, 3)
        pool = jax.jit(lambda t: pa.pool1d(t, "avg", 5, padding=1, count_include_pad=True,
                                           data_format="NCW"))
        assert _flat(pool(x)) == [1.2]


def test_jit_gradient_of_a_padded_window_sum_reaches_a_cell_outside_it():
    # one cell, window 2 with dilation 2 and padding (1, 1): the only window's taps (-1 and 1)
    # are both padding, so the sum is 0 and does not depend on the cell
    x, g = jnp.array([[[2.875]]]), jnp.array([[[1.5]]])

    def window_sum(t):
        return lax.reduce_window(t, 0.0, lax.add, (1, 1, 2), (1, 1, 2),
                                 [(0, 0), (0, 0), (1, 1)], window_dilation=(1, 1, 2))

    assert _flat(window_sum(x)) == [0.0]
    assert _flat(jax.vjp(window_sum, x)[1](g)[0]) == [0.0]  # eager: right
    jitted = jax.jit(lambda t, c: jax.vjp(window_sum, t)[1](c)[0])
    assert _flat(jitted(x, g)) == [1.5]  # compiled: the cotangent reaches the cell
    # pooladapt's sums (lp with p=1 is that window sum) pass it no gradient, compiled or not
    pool = lambda t: pa.pool1d(t, "lp", 2, padding="same", dilation=2, p=1.0,  # noqa: E731
                               data_format="NCW")
    assert _flat(jax.jit(lambda t, c: jax.vjp(pool, t)[1](c)[0])(x, g)) == [0.0]
