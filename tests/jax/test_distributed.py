"""pooladapt inside JAX's distributed engine: ``jax.jit`` over 8 simulated CPU devices.

XLA_FLAGS=--xla_force_host_platform_device_count=8 only counts before JAX starts its CPU
backend, so the checks run in one fresh interpreter (this file run as a script, its result
one JSON line) and each test here reads its check's outcome. Over a 'batch' mesh axis
(NamedSharding), pooling, its indices, adaptive, global pooling, unpool and every gradient
keep the input's batch sharding and give the unsharded values (the same jitted program on one
device), bit for bit, and so do the gradients of max pooling, adaptive and global max and
unpool (a gather or scatter at the first maximum); gradients through sums (avg, lp) are the
unsharded ones within a few units in the last place, as XLA's CPU code sums a plane in
another order for another shape (unsharded batch-8 and batch-1 programs differ likewise). On
a 2x4 mesh the channel sharding stays too (both layouts); under ``shard_map`` each device
pools its own rows; a Flax train step over the sharded batch gives the single-device step.

(``max_unpool2d`` and every max gradient once scattered into the flattened batch, so the
output was replicated: every device held the whole batch. They scatter per plane now, batch
and channel as the scatter's batching dims.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback

import pytest

DEVICES = 8

CASES = {  # name -> (entry point, positional args after x, keyword args)
    "max-same-ceil": ("pool2d", ("max", 3, 2, "same"), dict(ceil_mode=True)),
    "avg-padded-include-pad": ("pool2d", ("avg", 3, 2, 1), dict(count_include_pad=True)),
    "avg-ceil-dilated": ("pool2d", ("avg", 2, 2, 1), dict(ceil_mode=True, dilation=2)),
    "lp": ("pool2d", ("lp", 2, 2), dict(p=3.0)),
    "max-indices": ("pool2d", ("max", 3, 2, 1), dict(return_indices=True)),
    "adaptive-max": ("adaptive_pool2d", ("max", (3, 4)), {}),
    "adaptive-avg": ("adaptive_pool2d", ("avg", (4, 5)), {}),
    "global-max": ("global_pool2d", ("max",), {}),
    "global-avg-keepdims": ("global_pool2d", ("avg", True), {}),
    "unpool": ("unpool", (), {}),
}
EXACT_GRADIENTS = {"max-same-ceil", "max-indices", "adaptive-max", "global-max", "unpool"}
CHECKS = (*(f"batch:{name}" for name in CASES), *(f"grad:{name}" for name in CASES),
          "mesh2x4:channels_first", "mesh2x4:channels_last", "shard_map", "flax-train-step")


# ---------------------------------------------------------------- the worker (fresh interpreter)


def _worker() -> dict[str, str]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import pooladapt as pa

    assert jax.device_count() == DEVICES, jax.devices()
    rng = np.random.default_rng(18)

    def call(name, x, fmt):
        entry, args, kwargs = CASES[name]
        if entry == "unpool":  # the round trip: pool with indices, then unpool onto the plane
            y, idx = pa.pool2d(x, "max", 2, data_format=fmt, return_indices=True)
            shape = x.shape[2:] if fmt == "channels_first" else x.shape[1:3]
            return pa.max_unpool2d(y, idx, tuple(shape), data_format=fmt)
        return getattr(pa, entry)(x, *args, data_format=fmt, **kwargs)

    def loss(name, fmt):
        def f(x):
            out = call(name, x, fmt)
            out = out[0] if isinstance(out, tuple) else out
            return jnp.sum(out**2)
        return f

    def same(got, want, mesh, spec, exact=True):
        """``got`` equals ``want`` (bit for bit if ``exact``) and is laid out as ``spec`` on
        ``mesh``."""
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            if exact:
                np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
            else:
                np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)
            assert g.sharding.is_equivalent_to(NamedSharding(mesh, spec), g.ndim), (
                f"{g.sharding} is not {spec}")

    results: dict[str, str] = {}

    def check(name, fn):
        try:
            fn()
            results[name] = "ok"
        except Exception:
            results[name] = traceback.format_exc()

    # a 'batch' axis over the 8 devices; 7x6 planes (odd: ceil mode, uneven adaptive bins)
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    x = jnp.asarray(rng.standard_normal((DEVICES, 3, 7, 6)), jnp.float32)
    x = x.at[:, :, 1, 1].set(x[:, :, 1, 2])  # ties: the first maximum wins everywhere
    xs = jax.device_put(x, NamedSharding(mesh, P("batch")))
    fmt = "channels_first"
    for name in CASES:
        def forward(name=name):
            f = jax.jit(lambda a: call(name, a, fmt))
            same(f(xs), f(x), mesh, P("batch"))

        def gradient(name=name):
            grad = jax.jit(jax.grad(loss(name, fmt)))
            same(grad(xs), grad(x), mesh, P("batch"), name in EXACT_GRADIENTS)

        check(f"batch:{name}", forward)
        check(f"grad:{name}", gradient)

    # 2x4: the batch over 2 devices, the channels over 4, in both layouts
    mesh2 = Mesh(np.array(jax.devices()).reshape(2, 4), ("batch", "channels"))
    for fmt, spec in (("channels_first", P("batch", "channels")),
                      ("channels_last", P("batch", None, None, "channels"))):
        def mesh2x4(fmt=fmt, spec=spec):
            shape = (4, 8, 7, 6) if fmt == "channels_first" else (4, 7, 6, 8)
            a = jnp.asarray(rng.standard_normal(shape), jnp.float32)
            a_s = jax.device_put(a, NamedSharding(mesh2, spec))
            for name in ("max-same-ceil", "avg-padded-include-pad", "lp", "max-indices",
                         "adaptive-max", "adaptive-avg", "unpool"):
                f = jax.jit(lambda t, name=name: call(name, t, fmt))
                same(f(a_s), f(a), mesh2, spec)
                grad = jax.jit(jax.grad(loss(name, fmt)))
                same(grad(a_s), grad(a), mesh2, spec, name in EXACT_GRADIENTS)
            f = jax.jit(lambda t: pa.global_pool2d(t, "max", data_format=fmt))
            same(f(a_s), f(a), mesh2, P("batch", "channels"))

        check(f"mesh2x4:{fmt}", mesh2x4)

    def with_shard_map():
        shard_map = getattr(jax, "shard_map", None)
        if shard_map is None:  # older JAX: only the experimental one
            from jax.experimental.shard_map import shard_map
        fmt = "channels_first"

        def local(a):  # on each device: its own rows, the same calls
            y, idx = pa.pool2d(a, "max", 3, 2, 1, data_format=fmt, return_indices=True)
            return (y, idx, pa.max_unpool2d(y, idx, (7, 6), data_format=fmt),
                    pa.adaptive_pool2d(a, "avg", (4, 5), data_format=fmt),
                    pa.global_pool2d(a, "max", data_format=fmt),
                    jax.grad(loss("max-same-ceil", fmt))(a))

        sharded = jax.jit(shard_map(local, mesh=mesh, in_specs=P("batch"),
                                    out_specs=P("batch")))
        same(sharded(xs), jax.jit(local)(x), mesh, P("batch"))  # max gradient: exact

    check("shard_map", with_shard_map)

    def flax_train_step():
        import flax.linen as nn

        from pooladapt.layers import flax as layers

        class Net(nn.Module):
            @nn.compact
            def __call__(self, t):
                t = nn.Conv(4, (3, 3))(t)
                t = layers.MaxPool((3, 3), strides=(2, 2), padding="SAME", ceil_mode=True)(t)
                t = layers.AvgPool((2, 2), strides=(1, 1), padding="SAME")(t)
                t = layers.AdaptiveMaxPool((3, 2))(t)
                t = layers.GlobalAvgPool()(t)
                return nn.Dense(2)(t)

        net = Net()
        a = jnp.asarray(rng.standard_normal((DEVICES, 9, 8, 3)), jnp.float32)
        labels = jnp.asarray(rng.standard_normal((DEVICES, 2)), jnp.float32)
        params = net.init(jax.random.key(0), a)

        def step(params, a, labels):
            def objective(p):
                return jnp.mean((net.apply(p, a) - labels) ** 2)
            value, grads = jax.value_and_grad(objective)(params)
            return value, jax.tree.map(lambda w, g: w - 0.1 * g, params, grads)

        replicated = NamedSharding(mesh, P())
        batch = NamedSharding(mesh, P("batch"))
        got = jax.jit(step, in_shardings=(replicated, batch, batch),
                      out_shardings=(replicated, replicated))(params, a, labels)
        want = jax.jit(step)(params, a, labels)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            # the batch sums run in another order across devices: not bit for bit
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=1e-6)
        assert not np.array_equal(np.asarray(jax.tree.leaves(got[1])[0]),
                                  np.asarray(jax.tree.leaves(params)[0]))  # it trained

    check("flax-train-step", flax_train_step)
    return results


# ---------------------------------------------------------------- the tests (this interpreter)


@pytest.fixture(scope="module")
def outcome() -> dict[str, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                         f" --xla_force_host_platform_device_count={DEVICES}").strip()}
    run = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                         timeout=300)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert run.returncode == 0 and lines, f"the worker failed:\n{run.stdout}\n{run.stderr}"
    return json.loads(lines[-1])


@pytest.mark.parametrize("name", CHECKS)
def test_sharded(outcome, name):
    assert outcome.get(name) == "ok", outcome.get(name, f"{name} did not run")


def test_every_check_ran(outcome):
    assert sorted(outcome) == sorted(CHECKS)


if __name__ == "__main__":
    print(json.dumps(_worker()))
