"""Backend selection (the config flag), lazy imports and type detection."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import numpy as np
import pytest

import pooladapt as pa
from pooladapt import dispatch


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("POOLADAPT_BACKEND", raising=False)
    pa.set_backend(None)
    yield
    pa.set_backend(None)


def test_import_and_numpy_pooling_pull_in_no_framework():
    code = (
        "import sys, numpy as np, pooladapt as pa\n"
        "x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)\n"
        "pa.pool2d(x, 'max', 2); pa.pool2d(x, 'avg', 3, 1, 'same')\n"
        "pa.adaptive_pool2d(x, 'avg', 3); pa.global_pool2d(x, 'max')\n"
        "y, i = pa.pool2d(x, 'max', 2, return_indices=True); pa.max_unpool2d(y, i)\n"
        "bad = [m for m in ('torch', 'tensorflow', 'jax', 'mxnet', 'flax', 'keras') "
        "if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_precedence_call_context_global_env_default(monkeypatch):
    assert pa.get_backend() == "numpy"
    monkeypatch.setenv("POOLADAPT_BACKEND", "jax")
    assert pa.get_backend() == "jax"
    pa.set_backend("tensorflow")
    assert pa.get_backend() == "tensorflow"
    with pa.use_backend("torch"):
        assert pa.get_backend() == "torch"
        with pa.use_backend("mxnet"):
            assert pa.get_backend() == "mxnet"
        assert pa.get_backend() == "torch"
    assert pa.get_backend() == "tensorflow"
    x = np.ones((1, 2, 2, 1), dtype=np.float32)
    with pa.use_backend("torch"):  # the call's backend= wins over everything
        assert pa.pool2d(x, "max", 2, backend="numpy").item() == 1


def test_env_flag_is_validated(monkeypatch):
    monkeypatch.setenv("POOLADAPT_BACKEND", "theano")
    with pytest.raises(ValueError, match="POOLADAPT_BACKEND"):
        pa.get_backend()


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(ValueError, match="expected one of"):
        pa.set_backend("caffe")
    with pytest.raises(ValueError, match="expected one of"):
        pa.use_backend("caffe").__enter__()


_MISSING = """
import sys
sys.modules["mxnet"] = None  # makes `import mxnet` fail
import pooladapt as pa
from pooladapt import dispatch
try:
    dispatch.load("mxnet")
except ImportError as e:
    print(str(e))
print("mxnet" in pa.available_backends(), "numpy" in pa.available_backends())
"""


def test_missing_framework_names_the_pip_extra():
    # a fresh interpreter: no backend loaded by an earlier test
    done = subprocess.run([sys.executable, "-c", _MISSING], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    message, available = done.stdout.strip().splitlines()[-2:]
    assert "pip install 'pooladapt[mxnet]'" in message
    assert available == "False True"


def test_use_backend_does_not_leak_between_threads():
    seen = {}
    barrier = threading.Barrier(2)

    def worker(name):
        with pa.use_backend(name):
            barrier.wait()
            seen[name] = pa.get_backend()

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("torch", "jax")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"torch": "torch", "jax": "jax"}
    assert pa.get_backend() == "numpy"


def test_use_backend_does_not_leak_between_tasks():
    async def task(name, ready, go):
        with pa.use_backend(name):
            ready.set()
            await go.wait()
            return pa.get_backend()

    async def main():
        ready = [asyncio.Event(), asyncio.Event()]
        go = asyncio.Event()
        jobs = [asyncio.create_task(task(n, r, go)) for n, r in zip(("torch", "jax"), ready)]
        for r in ready:
            await r.wait()
        go.set()
        return await asyncio.gather(*jobs)

    assert asyncio.run(main()) == ["torch", "jax"]


def test_type_detection_reads_module_names_only():
    class FakeTorch:
        pass

    FakeTorch.__module__ = "torch.nn.parameter"
    assert dispatch.owner_of(FakeTorch()) == "torch"
    assert dispatch.owner_of(np.zeros(2)) is None
    assert dispatch.owner_of([1, 2]) is None
    with pytest.raises(TypeError, match="pooled by its own framework"):
        dispatch.resolve(FakeTorch(), "jax")


def test_numpy_in_numpy_out_and_lists_accepted():
    x = [[[[1.0], [2.0]], [[3.0], [4.0]]]]
    y = pa.pool2d(x, "max", 2)
    assert isinstance(y, np.ndarray) and y.item() == 4


def test_pool_objects_carry_their_backend():
    pool = pa.Pool2D("avg", 2, backend="numpy", data_format="channels_first")
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(pool(x)[0, 0], [[2.5, 4.5], [10.5, 12.5]])
    assert "Pool2D('avg'" in repr(pool)
