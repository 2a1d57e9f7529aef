"""The Flax function API (``pooladapt.layers.flax.max_pool``, ``avg_pool``, ``min_pool``,
``pool``) and its nnx re-exports.

Signatures are compared with Flax's own, read with ``inspect``; wherever Flax's meaning is
pooladapt's ('VALID'/'SAME'/pairs, stride, 0-2 batch dims) the outputs equal Flax's functions;
the extras (same_lower, int padding, ceil_mode, dilation, channels_first) equal the oracle;
``min_pool`` is exact for integers at their limits and propagates NaN; ``pool`` with any
reducer places its windows by pooladapt's padding; gradients and ``jax.jit``.
"""

from __future__ import annotations

import inspect
import itertools
import math
import operator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.linen import pooling as flax_pooling
from jax import lax

from pooladapt import oracle
from pooladapt.layers import flax as layers
from pooladapt.spec import make_spec

RNG = np.random.default_rng(17)
NAMES = ("max_pool", "avg_pool", "min_pool", "pool")
SPATIAL = {1: (9,), 2: (7, 6), 3: (5, 6, 4)}
GEOMETRIES = {
    1: [((2,), None), ((3,), (2,))],
    2: [((2, 2), (2, 2)), ((3, 2), (2, 1)), ((3, 3), None)],
    3: [((2, 2, 2), (2, 2, 2)), ((3, 2, 2), (1, 2, 1))],
}


def _flax(name: str):
    """Flax's function: ``flax.linen``'s where it exports one, else ``flax.linen.pooling``'s
    (``min_pool``, which only nnx re-exports)."""
    return getattr(nn, name, None) or getattr(flax_pooling, name)


# ------------------------------------------------------------------------ signatures


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_flax_s_with_keyword_only_extras_after_it(name):
    native = list(inspect.signature(_flax(name)).parameters.values())
    ours = list(inspect.signature(getattr(layers, name)).parameters.values())
    assert len(ours) >= len(native)
    for theirs, mine in zip(native, ours):
        assert (mine.name, mine.kind, mine.default) == (theirs.name, theirs.kind,
                                                        theirs.default), name
    extras = ours[len(native):]
    assert [p.name for p in extras] == ["dilation", "ceil_mode", "data_format"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in extras)


@pytest.mark.parametrize("name", NAMES)
def test_nnx_re_exports_the_same_functions_as_flax_nnx_does(name):
    assert getattr(nnx, name) is getattr(flax_pooling, name)  # Flax's arrangement
    assert getattr(layers.nnx, name) is getattr(layers, name)
    assert name in layers.__all__ and name in layers.nnx.__all__


# ------------------------------------------------------------------ equal to Flax's functions


def _pairs(window):
    return tuple((k - 1, 0) if d % 2 == 0 else (0, k - 1) for d, k in enumerate(window))


def _native_grid():
    for ndim, geoms in GEOMETRIES.items():
        for (window, strides), pad, batch in itertools.product(
                geoms, ("VALID", "SAME", "pairs"), (0, 1, 2)):
            if pad == "pairs" and batch == 2:
                continue  # flax.linen.pool pads one batch dim only (tests/jax/test_framework_notes)
            padding = _pairs(window) if pad == "pairs" else pad
            yield pytest.param(window, strides, padding, batch,
                               id=f"{ndim}d-w{window}-s{strides}-{pad}-batch{batch}")


def _input(ndim: int, batch: int, dtype=np.float32) -> jax.Array:
    shape = (2, 3)[:batch] + SPATIAL[ndim] + (3,)
    return jnp.asarray(RNG.integers(-3, 4, shape).astype(dtype))  # ties


@pytest.mark.parametrize("window, strides, padding, batch", list(_native_grid()))
def test_functions_equal_flax_s_where_flax_means_the_same(window, strides, padding, batch):
    x = _input(len(window), batch)
    for name in ("max_pool", "min_pool"):
        got = getattr(layers, name)(x, window, strides, padding)
        assert isinstance(got, jax.Array)
        np.testing.assert_array_equal(np.asarray(got),
                                      np.asarray(_flax(name)(x, window, strides, padding)))
    for cip in ((), (True,), (False,)):  # Flax's default, then each value by position
        got = layers.avg_pool(x, window, strides, padding, *cip)
        want = nn.avg_pool(x, window, strides, padding, *cip)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
    for init, fn in ((-jnp.inf, lax.max), (jnp.inf, lax.min), (0.0, lax.add), (1.0, lax.mul),
                     (0.0, lambda a, b: a + b), (-jnp.inf, jnp.maximum)):
        got = layers.pool(x, init, fn, window, strides, padding)
        want = nn.pool(x, init, fn, window, strides, padding)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)


def test_strides_none_is_stride_one_and_lists_are_accepted():
    x = _input(2, 1)
    assert layers.max_pool(x, (2, 2)).shape == (2, 6, 5, 3)
    np.testing.assert_array_equal(
        np.asarray(layers.min_pool(x, [3, 3], [2, 1], [[1, 0], [0, 2]])),
        np.asarray(flax_pooling.min_pool(x, (3, 3), (2, 1), ((1, 0), (0, 2)))))


# ------------------------------------------------------------------ extras against the oracle

EXTRAS = {
    "same-lower-ceil": dict(strides=(2, 2), padding="same_lower", ceil_mode=True),
    "int-pad-ceil-dilation": dict(strides=(2, 1), padding=1, ceil_mode=True, dilation=(1, 2)),
    "pairs-channels-first": dict(strides=(2, 2), padding=((0, 1), (1, 0)),
                                 data_format="channels_first"),
    "per-dim-pad-dilation": dict(strides=(1, 2), padding=(1, 0), dilation=(2, 1)),
}


def _oracle_spec(mode: str, kw: dict, **more):
    kw = dict(kw)
    kw["stride"] = kw.pop("strides", (1, 1))
    return make_spec(mode, (3, 3), ndim=2, **kw, **more)


def _extras_input(kw: dict, dtype=np.float32) -> np.ndarray:
    cf = kw.get("data_format") == "channels_first"
    return RNG.standard_normal((2, 3, 7, 6) if cf else (2, 7, 6, 3)).astype(dtype)


@pytest.mark.parametrize("name", EXTRAS)
def test_extras_equal_the_oracle(name):
    kw = EXTRAS[name]
    x = _extras_input(kw)
    xj = jnp.asarray(x)
    want_max = oracle.pool(x, _oracle_spec("max", kw))
    np.testing.assert_array_equal(np.asarray(layers.max_pool(xj, (3, 3), **kw)), want_max)
    # min is max of the negated input, an identity of the oracle's max
    np.testing.assert_array_equal(np.asarray(layers.min_pool(xj, (3, 3), **kw)),
                                  -oracle.pool(-x, _oracle_spec("max", kw)))
    for cip in (True, False):
        want = oracle.pool(x, _oracle_spec("avg", kw, count_include_pad=cip))
        got = layers.avg_pool(xj, (3, 3), count_include_pad=cip, **kw)
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=1e-6)
    # pool's routes and its generic path (a reducer pooladapt does not know) place the same
    # windows: each equals the oracle's max
    for init, fn in ((-jnp.inf, lax.max), (-jnp.inf, lambda a, b: jnp.maximum(a, b))):
        np.testing.assert_array_equal(np.asarray(layers.pool(xj, init, fn, (3, 3), **kw)),
                                      want_max)
    np.testing.assert_array_equal(
        np.asarray(layers.pool(xj, jnp.inf, lambda a, b: jnp.minimum(a, b), (3, 3), **kw)),
        -oracle.pool(-x, _oracle_spec("max", kw)))


def test_generic_reducer_sees_pooladapt_s_windows_padded_with_init():
    # one row of primes: a product names the cells of its window
    primes = np.array([2.0, 3.0, 5.0, 7.0, 11.0], np.float32)
    x = jnp.asarray(primes.reshape(1, 5, 1))
    mul = lambda a, b: a * b  # noqa: E731
    # same_lower, k=3, s=2 on 4 cells: 2 windows, the odd pad cell at the start
    got = layers.pool(x[:, :4], 1.0, mul, (3,), (2,), "same_lower")
    np.testing.assert_array_equal(np.asarray(got).ravel(), [2 * 3, 3 * 5 * 7])
    # SAME (= same_upper): the odd pad cell at the end
    got = layers.pool(x[:, :4], 1.0, mul, (3,), (2,), "SAME")
    np.testing.assert_array_equal(np.asarray(got).ravel(), [2 * 3 * 5, 5 * 7])
    # k=2, s=2, pad 1, ceil: torch's rule drops the window that starts in the right padding
    got = layers.pool(x, 1.0, mul, (2,), (2,), 1, ceil_mode=True)
    np.testing.assert_array_equal(np.asarray(got).ravel(), [2, 3 * 5, 7 * 11])
    # k=2, s=3, pads (1, 1), ceil: the third window would start in the right padding
    got = layers.pool(x, 1.0, mul, (2,), (3,), ((1, 1),), ceil_mode=True)
    np.testing.assert_array_equal(np.asarray(got).ravel(), [2, 5 * 7])
    # dilation 2: cells 0, 2, 4
    got = layers.pool(x, 1.0, mul, (3,), None, "VALID", dilation=2)
    np.testing.assert_array_equal(np.asarray(got).ravel(), [2 * 5 * 11])
    # an init that is not the identity of max is Flax's meaning: every window also sees it
    got = layers.pool(-x, 0.0, lax.max, (2,), (2,), "VALID")
    np.testing.assert_array_equal(np.asarray(got).ravel(), [0.0, 0.0])


def test_sum_route_accumulates_16_bit_floats_in_float32():
    x = jnp.asarray(np.array([2048, 1, 1, 1, 1], np.float16).reshape(1, 5, 1))
    got = layers.pool(x, 0.0, lax.add, (5,), None, "VALID")
    assert got.dtype == jnp.float16
    assert float(got.ravel()[0]) == 2052.0  # float16 running sums would stay at 2048
    x = jnp.asarray(RNG.standard_normal((2, 7, 6, 3)).astype(np.float32))
    spec = make_spec("avg", (3, 3), 2, 1, count_include_pad=True, ndim=2)
    want = oracle.pool(np.asarray(x), spec) * 9  # every window holds 9 cells, pads included
    np.testing.assert_allclose(np.asarray(layers.pool(x, 0.0, lax.add, (3, 3), (2, 2), 1)),
                               want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ min_pool's exactness


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "uint32"])
def test_min_pool_of_integers_is_exact_at_the_dtype_s_limits(dtype):
    info = np.iinfo(dtype)
    x = RNG.integers(info.min, info.max, (2, 5, 4, 2), dtype=dtype, endpoint=True)
    x[0, 0, 0, 0], x[1, 4, 3, 1] = info.min, info.max
    got = np.asarray(layers.min_pool(jnp.asarray(x), (2, 2), (1, 2), "SAME"))
    assert got.dtype == np.dtype(dtype)
    # by brute force: SAME pads H by (0, 1) here, W not at all; a pad cell holds the maximum
    xp = np.pad(x.astype(object), ((0, 0), (0, 1), (0, 0), (0, 0)), constant_values=info.max)
    want = np.array([[[[min(xp[n, i:i + 2, j:j + 2, c].ravel()) for c in range(2)]
                       for j in range(0, 4, 2)] for i in range(5)] for n in range(2)])
    np.testing.assert_array_equal(got, want.astype(dtype))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_min_pool_propagates_nan_and_padding_never_wins(dtype):
    row = jnp.asarray([[[5.0], [np.nan], [7.0], [-np.inf], [3.0]]], dtype)  # (1, 5, 1)
    got = np.asarray(layers.min_pool(row, (2,), (2,), ((1, 1),)), np.float32).ravel()
    np.testing.assert_array_equal(got, [5.0, np.nan, -np.inf])
    assert layers.min_pool(row, (2,), (2,), ((1, 1),)).dtype == dtype
    got = np.asarray(layers.pool(row, jnp.inf, lax.min, (2,), (2,), ((1, 1),)), np.float32)
    np.testing.assert_array_equal(got.ravel(), [5.0, np.nan, -np.inf])


# ------------------------------------------------------------------ gradients and jit


def test_min_pool_gradient_goes_to_the_first_minimum():
    x = jnp.asarray(np.array([1.0, 1.0, 2.0, 0.0, 0.0], np.float32).reshape(1, 5, 1))
    g = jax.grad(lambda t: layers.min_pool(t, (2,), (1,)).sum())(x)
    # windows [1,1] [1,2] [2,0] [0,0]: minima at 0, 1, 3, 3
    np.testing.assert_array_equal(np.asarray(g).ravel(), [1.0, 1.0, 0.0, 2.0, 0.0])
    g = jax.grad(lambda t: layers.pool(t, jnp.inf, lax.min, (2,), (1,), "VALID").sum())(x)
    np.testing.assert_array_equal(np.asarray(g).ravel(), [1.0, 1.0, 0.0, 2.0, 0.0])


@pytest.mark.parametrize("name", EXTRAS)
def test_gradients_equal_the_oracle_vjp(name):
    kw = EXTRAS[name]
    x = np.round(_extras_input(kw) * 2) / 2  # ties
    xj = jnp.asarray(x)
    spec = _oracle_spec("max", kw)
    gy = RNG.standard_normal(oracle.pool(x, spec).shape).astype(np.float32)
    for fn in (lambda t: layers.max_pool(t, (3, 3), **kw),
               lambda t: layers.pool(t, -jnp.inf, lax.max, (3, 3), **kw)):
        dx = jax.grad(lambda t, fn=fn: jnp.sum(fn(t) * gy))(xj)
        np.testing.assert_allclose(np.asarray(dx), oracle.pool_vjp(x, spec, gy), rtol=1e-6)
    dx = jax.grad(lambda t: jnp.sum(layers.min_pool(t, (3, 3), **kw) * gy))(xj)
    # d(-max(-x)) = the max vjp at -x (two sign changes)
    np.testing.assert_allclose(np.asarray(dx), oracle.pool_vjp(-x, spec, gy), rtol=1e-6)
    spec = _oracle_spec("avg", kw, count_include_pad=True)
    dx = jax.grad(lambda t: jnp.sum(layers.avg_pool(t, (3, 3), **kw) * gy))(xj)
    np.testing.assert_allclose(np.asarray(dx), oracle.pool_vjp(x, spec, gy), rtol=1e-5,
                               atol=1e-6)


def test_every_function_under_jit_equals_itself_eagerly():
    x = _input(2, 1)
    kw = dict(strides=(2, 1), padding="same_lower", ceil_mode=True, dilation=(1, 2))
    calls = {
        "max": lambda t: layers.max_pool(t, (3, 2), **kw),
        "min": lambda t: layers.min_pool(t, (3, 2), **kw),
        "avg": lambda t: layers.avg_pool(t, (3, 2), **kw),
        "mul": lambda t: layers.pool(t, 1.0, operator.mul, (3, 2), **kw),
        "add": lambda t: layers.pool(t, 0.0, lax.add, (3, 2), **kw),
        "nnx": lambda t: layers.nnx.min_pool(t, (3, 2), **kw),
    }
    for name, call in calls.items():
        np.testing.assert_allclose(np.asarray(jax.jit(call)(x)), np.asarray(call(x)),
                                   rtol=1e-6, err_msg=name)
    # a traced init decides no route: the generic reduce_window, the same windows
    traced = jax.jit(lambda t, init: layers.pool(t, init, lax.max, (3, 2), **kw))
    np.testing.assert_array_equal(np.asarray(traced(x, -jnp.inf)), np.asarray(calls["max"](x)))


def test_bad_arguments_raise_as_pooladapt_s_spec_does():
    x = _input(2, 1)
    with pytest.raises(TypeError, match="window_shape"):
        layers.max_pool(x, 2)
    with pytest.raises(ValueError, match="smaller than the window"):
        layers.min_pool(x, (2, 2), padding=((2, 0), (0, 0)))
    with pytest.raises(ValueError, match="smaller than the window"):
        layers.pool(x, 1.0, lax.mul, (2, 2), None, ((2, 0), (0, 0)))
    with pytest.raises(ValueError, match="expected an input"):
        layers.avg_pool(jnp.ones((4, 4)), (2, 2))
    assert math.prod(layers.max_pool(x[0], (2, 2)).shape) == 6 * 5 * 3  # unbatched, as Flax
