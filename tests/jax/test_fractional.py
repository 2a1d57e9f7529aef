"""Fractional max pooling on JAX beyond the conformance suite (tests/conformance/
test_fractional.py runs the shared cases on JAX): windows placed as the NumPy backend places
them for the same samples under ``jax.jit``, in every float dtype and many samples (XLA may
compute 16-bit arithmetic in float32); ``jax.grad`` under jit against a brute-force VJP;
drawn samples (NumPy's global seed, never inside a trace).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import pooladapt as pa
from pooladapt import oracle
from pooladapt.backends.jax import fractional
from pooladapt.spec import make_fractional_spec

DTYPES = ["float16", "bfloat16", "float32", "float64"]


def _np_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_windows_under_jit_are_the_numpy_backend_s_for_many_samples(dtype):
    # a plane of distinct increasing values: each window's max is its last cell, so the
    # indices name the windows' starts; 4096 samples per dim and size
    rng = np.random.default_rng(0)
    for (h, w), kernel, size in (((37, 23), (3, 2), (12, 10)), ((61, 9), (2, 4), (29, 3)),
                                 ((130, 40), (2, 2), (101, 7))):
        x = np.arange(h * w, dtype=np.float32).reshape(1, 1, h, w)
        x = np.repeat(x, 4096, axis=0)
        samples = rng.random((4096, 1, 2)).astype(_np_dtype(dtype))
        below_one = 1 - ml_dtypes.finfo(samples.dtype).epsneg  # rounding may reach 1
        samples = np.minimum(samples, np.asarray(below_one, samples.dtype))
        _, want = pa.fractional_max_pool2d(x, kernel, size, None, True, samples,
                                           data_format="channels_first", backend="numpy")
        spec = make_fractional_spec(kernel, size, None, True, ndim=2,
                                    data_format="channels_first")
        pool = jax.jit(partial(fractional.fractional_max_pool, plan=spec.plan(x.shape)))
        with jax.enable_x64(dtype == "float64"):
            _, got = pool(jnp.asarray(x), samples=jnp.asarray(samples))
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"{dtype} {h}x{w}")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_jit_equals_eager_and_the_numpy_backend_channels_last_3d(dtype):
    rng = np.random.default_rng(1)
    x = (np.round(rng.standard_normal((2, 7, 8, 6, 3)) * 2) / 2).astype(_np_dtype(dtype))
    samples = rng.random((2, 3, 3)).astype(_np_dtype(dtype))

    def call(t, s):
        return pa.fractional_max_pool3d(t, 2, (4, 5, 3), None, True, s,
                                        data_format="channels_last")

    want = call(x, samples)  # NumPy input: the NumPy backend (the conformance suite's default)
    s = jnp.asarray(samples)  # concrete: the entry point checks their values
    for got in (call(jnp.asarray(x), s), jax.jit(lambda t: call(t, s))(jnp.asarray(x))):
        assert isinstance(got[0], jax.Array) and got[1].dtype == jnp.int64
        np.testing.assert_array_equal(np.asarray(got[0]), want[0])
        np.testing.assert_array_equal(np.asarray(got[1]), want[1])


def test_samples_passed_into_jit_are_traced_not_read():
    """Samples that are an argument of the jitted function are tracers: the entry point
    leaves their values unchecked (a tracer has none) and the windows follow them."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    samples = rng.random((2, 3, 2)).astype(np.float32)

    def call(t, s):
        return pa.fractional_max_pool2d(t, 3, (4, 3), None, True, s, data_format="NCHW")

    want = call(x, samples)
    got = jax.jit(call)(jnp.asarray(x), jnp.asarray(samples))
    np.testing.assert_array_equal(np.asarray(got[0]), want[0])
    np.testing.assert_array_equal(np.asarray(got[1]), want[1])


def test_grad_under_jit_equals_a_brute_force_vjp():
    rng = np.random.default_rng(2)
    x = rng.integers(-2, 3, (2, 3, 11, 9)).astype(np.float32)  # ties: the first max wins
    samples = rng.random((2, 3, 2)).astype(np.float32)
    g = rng.integers(-4, 5, (2, 3, 5, 4)).astype(np.float32)
    s = jnp.asarray(samples)  # concrete: the entry point checks their values

    def loss(t):
        y = pa.fractional_max_pool2d(t, 3, (5, 4), None, False, s,
                                     data_format="channels_first")
        return jnp.sum(y * g)

    dx = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(x)))
    # brute force: every window's winner (the oracle's index: its first maximum in row-major
    # order) gets that window's cotangent, summed where windows share it
    spec = make_fractional_spec(3, (5, 4), None, True, ndim=2, data_format="channels_first")
    _, idx = oracle.fractional_max_pool(x, spec, samples)
    want = np.zeros_like(x)
    for n, c, i, j in np.ndindex(*g.shape):
        r, col = divmod(int(idx[n, c, i, j]), 9)
        want[n, c, r, col] += g[n, c, i, j]
    np.testing.assert_array_equal(dx, want)


def test_drawn_samples_follow_numpy_s_global_seed_and_are_refused_inside_jit():
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 3, 9, 8)), jnp.bfloat16)

    def draw():
        np.random.seed(5)
        return pa.fractional_max_pool2d(x, 2, (4, 4), return_indices=True,
                                        data_format="channels_first")[1]

    first, again = draw(), draw()
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    np.random.seed(6)
    others = [pa.fractional_max_pool2d(x, 2, (4, 4), return_indices=True,
                                       data_format="channels_first")[1] for _ in range(3)]
    assert any((np.asarray(o) != np.asarray(first)).any() for o in others)
    with pytest.raises(ValueError, match="random_samples"):
        jax.jit(lambda t: pa.fractional_max_pool2d(t, 2, (4, 4),
                                                   data_format="channels_first"))(x)
