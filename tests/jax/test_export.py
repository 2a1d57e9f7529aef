"""Deploying JAX programs (issue 18): ``jax.export`` exports a jitted function that pools, with
a symbolic batch; the exported StableHLO runs with the original's numbers and the oracle's,
its gradient too, and its serialized bytes run back in a process without pooladapt
(docs/deploying.md)."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import pooladapt as pa
from pooladapt import oracle
from pooladapt.spec import make_adaptive_spec, make_spec

RNG = np.random.default_rng(18)
CASES = {  # name: (function of x, the spec that states its meaning)
    "max same": (lambda x: pa.pool2d(x, "max", 3, 2, "same", data_format="channels_first"),
                 make_spec("max", 3, 2, "same", ndim=2, data_format="channels_first")),
    "max ceil": (lambda x: pa.pool2d(x, "max", 3, 2, 1, ceil_mode=True,
                                     data_format="channels_first"),
                 make_spec("max", 3, 2, 1, ceil_mode=True, ndim=2, data_format="channels_first")),
    "avg exclude": (lambda x: pa.pool2d(x, "avg", 3, 1, 1, data_format="channels_first"),
                    make_spec("avg", 3, 1, 1, ndim=2, data_format="channels_first")),
    "lp dilated": (lambda x: pa.pool2d(x, "lp", 2, 1, dilation=2, p=2,
                                       data_format="channels_first"),
                   make_spec("lp", 2, 1, dilation=2, p=2, ndim=2, data_format="channels_first")),
}


def _input(batch: int) -> np.ndarray:
    x = RNG.integers(-3, 4, size=(batch, 3, 9, 8)).astype(np.float32)  # ties
    x[0, 0, :3, :3] = -np.inf
    x[-1, 1, 2, 2] = np.nan
    return x


def _exported(fn) -> export.Exported:
    batch = export.symbolic_shape("b, 3, 9, 8")
    return export.export(jax.jit(fn))(jax.ShapeDtypeStruct(batch, jnp.float32))


def _check(got: np.ndarray, want: np.ndarray, spec) -> None:
    if spec.mode == "max":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_export_with_a_symbolic_batch_gives_the_originals_numbers(name):
    fn, spec = CASES[name]
    exported = _exported(fn)
    for batch in (1, 5):
        x = _input(batch)
        got = np.asarray(exported.call(jnp.asarray(x)))
        np.testing.assert_array_equal(got, np.asarray(fn(jnp.asarray(x))))
        _check(got, oracle.pool(x, spec), spec)


def test_exported_gradient_equals_the_oracle_vjp():
    fn, spec = CASES["max ceil"]
    b, = export.symbolic_shape("b")
    exported = export.export(jax.jit(jax.grad(lambda x, w: jnp.sum(fn(x) * w))))(
        jax.ShapeDtypeStruct((b, 3, 9, 8), jnp.float32),
        jax.ShapeDtypeStruct((b, *spec.output_shape((1, 3, 9, 8))[1:]), jnp.float32))
    x = RNG.integers(-3, 4, size=(4, 3, 9, 8)).astype(np.float32)
    w = RNG.standard_normal(spec.output_shape(x.shape)).astype(np.float32)
    got = np.asarray(exported.call(jnp.asarray(x), jnp.asarray(w)))
    want = oracle.pool_vjp(x.astype(np.float64), spec, w.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_adaptive_export_gives_the_oracles_numbers():
    spec = make_adaptive_spec("avg", (4, 3), ndim=2, data_format="channels_first")
    fn = lambda x: pa.adaptive_pool2d(x, "avg", (4, 3), data_format="channels_first")  # noqa: E731
    x = _input(3)
    x[np.isnan(x) | np.isinf(x)] = 0.5
    got = np.asarray(_exported(fn).call(jnp.asarray(x)))
    np.testing.assert_allclose(got, oracle.adaptive_pool(x, spec), rtol=1e-6, atol=1e-6)


def test_serialized_export_runs_without_pooladapt(tmp_path):
    fn, spec = CASES["max same"]
    (tmp_path / "pooled.bin").write_bytes(_exported(fn).serialize())
    x = _input(2)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, jax.numpy as jnp\nfrom jax import export\n"
            "exported = export.deserialize(bytearray(open(sys.argv[1], 'rb').read()))\n"
            "np.save(sys.argv[3], np.asarray(exported.call(jnp.asarray(np.load(sys.argv[2])))))\n"
            "assert 'pooladapt' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "pooled.bin"),
                    str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], check=True, cwd=tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), oracle.pool(x, spec))
