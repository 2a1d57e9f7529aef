"""The Flax drop-in modules (``pooladapt.layers.flax``, linen and nnx).

For every argument combination ``flax.linen.max_pool``/``avg_pool`` accept (window, strides,
'VALID'/'SAME'/pairs, count_include_pad, 1-3 spatial dims, 0-2 batch dims) the module equals
the Flax function; the extras (same_lower, int padding, ceil_mode, dilation, channels_first,
LpPool, adaptive, global) equal the oracle; the modules train under ``jax.jit`` with gradients.
"""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import pooladapt as pa
from pooladapt import oracle
from pooladapt.layers import flax as layers
from pooladapt.spec import make_adaptive_spec, make_global_spec, make_spec

RNG = np.random.default_rng(3)

GEOMETRIES = {
    1: [((2,), None), ((3,), (2,)), ((4,), (3,))],
    2: [((2, 2), (2, 2)), ((3, 2), (2, 1)), ((3, 3), None)],
    3: [((2, 2, 2), (2, 2, 2)), ((3, 2, 2), (1, 2, 1))],
}
SPATIAL = {1: (9,), 2: (7, 6), 3: (5, 6, 4)}


def _pairs(window):
    """Asymmetric (low, high) pairs, each smaller than the window (pooladapt's rule)."""
    return tuple((k - 1, 0) if d % 2 == 0 else (0, k - 1) for d, k in enumerate(window))


def _native_grid():
    for ndim, geoms in GEOMETRIES.items():
        for (window, strides), pad, batch in itertools.product(
                geoms, ("VALID", "SAME", "pairs"), (0, 1, 2)):
            if pad == "pairs" and batch == 2:
                continue  # flax.linen.pool pads one batch dim only: it raises (see the notes)
            padding = _pairs(window) if pad == "pairs" else pad
            yield pytest.param(window, strides, padding, batch,
                               id=f"{ndim}d-w{window}-s{strides}-{pad}-batch{batch}")


def _input(ndim: int, batch: int, dtype=np.float32, ties: bool = False) -> jax.Array:
    shape = (2, 3)[:batch] + SPATIAL[ndim] + (3,)
    x = RNG.integers(-2, 3, shape) if ties else RNG.standard_normal(shape)
    return jnp.asarray(x.astype(dtype))


@pytest.mark.parametrize("window, strides, padding, batch", list(_native_grid()))
def test_linen_modules_equal_flax_pooling_functions(window, strides, padding, batch):
    x = _input(len(window), batch, ties=True)
    got = layers.MaxPool(window, strides, padding).apply({}, x)
    assert isinstance(got, jax.Array)
    np.testing.assert_array_equal(np.asarray(got),
                                  np.asarray(nn.max_pool(x, window, strides, padding)))
    for cip in (True, False):
        got = layers.AvgPool(window, strides, padding, count_include_pad=cip).apply({}, x)
        want = nn.avg_pool(x, window, strides, padding, count_include_pad=cip)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(layers.AvgPool(window, strides, padding).apply({}, x)),
                               np.asarray(nn.avg_pool(x, window, strides, padding)), rtol=1e-6,
                               atol=1e-7)  # the defaults: count_include_pad=True on both


@pytest.mark.parametrize("window, strides, padding, batch",
                         [p for p in _native_grid() if "batch1" in p.id])
def test_nnx_modules_equal_flax_nnx_pooling_functions(window, strides, padding, batch):
    x = _input(len(window), batch)
    np.testing.assert_array_equal(np.asarray(layers.nnx.MaxPool(window, strides, padding)(x)),
                                  np.asarray(nnx.max_pool(x, window, strides, padding)))
    for cip in (True, False):
        got = layers.nnx.AvgPool(window, strides, padding, count_include_pad=cip)(x)
        want = nnx.avg_pool(x, window, strides, padding, count_include_pad=cip)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)


def test_flax_argument_forms_lists_and_defaults():
    x = _input(2, 1)
    m = layers.MaxPool([3, 3], [2, 1], [[1, 0], [0, 2]])  # Flax users write lists too
    np.testing.assert_array_equal(np.asarray(m.apply({}, x)),
                                  np.asarray(nn.max_pool(x, (3, 3), (2, 1), ((1, 0), (0, 2)))))
    assert layers.AvgPool((2, 2)).count_include_pad is True
    assert layers.MaxPool((2, 2)).padding == "VALID" and layers.MaxPool((2, 2)).strides is None
    assert layers.MaxPool((2, 2)).apply({}, x).shape == (2, 6, 5, 3)  # stride 1, as Flax
    assert type(layers.nnx.MaxPool((2,))).__name__ == "MaxPool"
    assert isinstance(layers.nnx.MaxPool((2,)), nnx.Module)
    from pooladapt.layers.flax.nnx import AvgPool

    assert AvgPool is layers.nnx.AvgPool


# ------------------------------------------------------------------ extras against the oracle

EXTRAS = {
    "max-same-lower-ceil": ("max", dict(strides=(2, 2), padding="same_lower", ceil_mode=True)),
    "max-int-pad-ceil-dilation": ("max", dict(strides=(2, 1), padding=1, ceil_mode=True,
                                              dilation=(1, 2))),
    "max-channels-first": ("max", dict(strides=(2, 2), padding=((0, 1), (1, 0)),
                                       data_format="channels_first")),
    "avg-exclude-ceil": ("avg", dict(strides=(2, 2), padding=1, ceil_mode=True,
                                     count_include_pad=False)),
    "avg-include-ceil-dilation": ("avg", dict(strides=(2, 1), padding=(1, 0), ceil_mode=True,
                                              dilation=(2, 1))),
    "avg-same-lower-channels-first": ("avg", dict(padding="same_lower",
                                                  data_format="channels_first")),
    "lp-p3": ("lp", dict(strides=(2, 2), padding=1, p=3.0)),
    "lp-default": ("lp", dict()),
}
_LINEN = {"max": layers.MaxPool, "avg": layers.AvgPool, "lp": layers.LpPool}
_NNX = {"max": layers.nnx.MaxPool, "avg": layers.nnx.AvgPool, "lp": layers.nnx.LpPool}


def _oracle_kwargs(mode: str, kw: dict) -> dict:
    out = dict(kw)
    out["stride"] = out.pop("strides", (1, 1))  # Flax's default stride
    if mode == "avg":
        out.setdefault("count_include_pad", True)  # Flax's default
    return out


@pytest.mark.parametrize("name", EXTRAS)
def test_extras_equal_the_oracle_in_linen_and_nnx(name):
    mode, kw = EXTRAS[name]
    cf = kw.get("data_format") == "channels_first"
    x = RNG.standard_normal((2, 3, 7, 6) if cf else (2, 7, 6, 3)).astype(np.float32)
    want = oracle.pool(x, make_spec(mode, (3, 3), ndim=2, **_oracle_kwargs(mode, kw)))
    for got in (_LINEN[mode]((3, 3), **kw).apply({}, jnp.asarray(x)),
                _NNX[mode]((3, 3), **kw)(jnp.asarray(x))):
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("channels_first", [False, True])
def test_adaptive_and_global_modules_equal_the_oracle(channels_first):
    fmt = "channels_first" if channels_first else "channels_last"
    x = RNG.integers(-3, 4, (2, 3, 7, 5) if channels_first else (2, 7, 5, 3)).astype(np.float32)
    xj = jnp.asarray(x)
    for mode, linen, nnx_cls in (("avg", layers.AdaptiveAvgPool, layers.nnx.AdaptiveAvgPool),
                                 ("max", layers.AdaptiveMaxPool, layers.nnx.AdaptiveMaxPool)):
        for size in ((3, 4), 2, (None, 3)):
            want = oracle.adaptive_pool(x, make_adaptive_spec(mode, size, ndim=2,
                                                              data_format=fmt))
            for got in (linen(size, data_format=fmt).apply({}, xj),
                        nnx_cls(size, data_format=fmt)(xj)):
                np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
    for mode, linen, nnx_cls in (("avg", layers.GlobalAvgPool, layers.nnx.GlobalAvgPool),
                                 ("max", layers.GlobalMaxPool, layers.nnx.GlobalMaxPool)):
        for keep in (False, True):
            want = oracle.global_pool(x, make_global_spec(mode, ndim=2, keepdims=keep,
                                                          data_format=fmt))
            for got in (linen(keep, data_format=fmt).apply({}, xj),
                        nnx_cls(keep, data_format=fmt)(xj)):
                np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)


def test_unbatched_and_many_batch_dims_with_channels_first():
    x = RNG.standard_normal((2, 3, 4, 7, 6)).astype(np.float32)  # (batch, batch, C, H, W)
    m = layers.MaxPool((2, 2), (2, 2), data_format="channels_first")
    want = pa.pool2d(x.reshape(6, 4, 7, 6), "max", 2, data_format="channels_first")
    np.testing.assert_array_equal(np.asarray(m.apply({}, jnp.asarray(x))),
                                  want.reshape(2, 3, 4, 3, 3))
    np.testing.assert_array_equal(np.asarray(m.apply({}, jnp.asarray(x[0, 0]))), want[0])


def test_bad_arguments_raise_when_the_module_is_built():
    with pytest.raises(ValueError, match="smaller than the window"):
        layers.MaxPool((2, 2), padding=((2, 0), (0, 0)))
    with pytest.raises(ValueError, match="smaller than the window"):
        layers.nnx.AvgPool((2,), padding=2)
    with pytest.raises(TypeError, match="window_shape"):
        layers.MaxPool(2)
    with pytest.raises(ValueError, match="2-D layout"):
        layers.MaxPool((2,), data_format="NCHW")  # a 2-D layout for 1 spatial dim
    with pytest.raises(ValueError, match="expected an input"):
        layers.MaxPool((2, 2)).apply({}, jnp.ones((4, 4)))


# ------------------------------------------------------------------ training under jax.jit


def test_linen_pooling_gradient_under_jit_equals_the_oracle_vjp():
    x = RNG.integers(-2, 3, (2, 7, 6, 3)).astype(np.float32)  # ties
    g = RNG.standard_normal((2, 4, 6, 3)).astype(np.float32)
    m = layers.MaxPool((3, 2), (2, 1), padding=1, ceil_mode=True, dilation=(1, 2))
    dx = jax.jit(jax.grad(lambda t: jnp.sum(m.apply({}, t) * g)))(jnp.asarray(x))
    spec = make_spec("max", (3, 2), (2, 1), 1, (1, 2), True, ndim=2)
    np.testing.assert_allclose(np.asarray(dx), oracle.pool_vjp(x, spec, g), rtol=1e-6)


class _LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(x)
        x = layers.MaxPool((3, 3), (2, 2), padding=1, ceil_mode=True)(x)
        x = layers.AvgPool((2, 2), (1, 1), padding="same_lower", dilation=2)(x)
        x = layers.AdaptiveAvgPool((2, 3))(x)
        return nn.Dense(1)(x.reshape(x.shape[0], -1))


def test_linen_training_step_under_jit_lowers_the_loss():
    x = jnp.asarray(RNG.standard_normal((4, 9, 8, 2)).astype(np.float32))
    y = jnp.asarray(RNG.standard_normal((4, 1)).astype(np.float32))
    net = _LinenNet()
    params = net.init(jax.random.key(0), x)

    def loss(p):
        return jnp.mean((net.apply(p, x) - y) ** 2)

    @jax.jit
    def step(p):
        value, grads = jax.value_and_grad(loss)(p)
        return jax.tree.map(lambda a, b: a - 0.05 * b, p, grads), value, grads

    params, first, grads = step(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
    for _ in range(20):
        params, last, _ = step(params)
    assert float(last) < float(first)


class _NnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(2, 4, (3, 3), rngs=rngs)
        self.pool = layers.nnx.MaxPool((2, 2), (2, 2), padding="same_lower")
        self.lp = layers.nnx.LpPool((2, 2), p=3.0, ceil_mode=True, strides=(2, 2))
        self.head = layers.nnx.GlobalAvgPool()
        self.dense = nnx.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.dense(self.head(self.lp(self.pool(self.conv(x)))))


def test_nnx_training_step_under_nnx_jit_lowers_the_loss():
    x = jnp.asarray(RNG.standard_normal((4, 9, 8, 2)).astype(np.float32))
    y = jnp.asarray(RNG.standard_normal((4, 1)).astype(np.float32))
    model = _NnxNet(nnx.Rngs(0))

    @nnx.jit
    def step(model):
        def loss(m):
            return jnp.mean((m(x) - y) ** 2)

        value, grads = nnx.value_and_grad(loss)(model)
        params = nnx.state(model, nnx.Param)
        nnx.update(model, jax.tree.map(lambda p, g: p - 0.05 * g, params, grads))
        return value

    first = float(step(model))
    for _ in range(20):
        last = float(step(model))
    assert last < first
