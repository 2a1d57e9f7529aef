"""Concurrency: backend selection stays local to its thread or task, and pooling from many
threads at once (shared specs, the shared plan cache, the unpool plane registry) gives the
single-threaded answers. tests/core/test_dispatch.py has the two-thread and two-task basics.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pooladapt as pa
from pooladapt import oracle
from pooladapt.spec import make_spec, resolve_plan

NAMES = ["numpy", "torch", "tensorflow", "jax", "mxnet"]  # selecting never imports them


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("POOLADAPT_BACKEND", raising=False)
    pa.set_backend(None)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    yield
    sys.setswitchinterval(old)
    pa.set_backend(None)


# ------------------------------------------------------------------ use_backend in threads


def test_nested_selections_in_many_threads_never_mix():
    errors: list[str] = []
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        rng = random.Random(i)
        start.wait()
        for _ in range(300):
            outer, inner = rng.choice(NAMES), rng.choice(NAMES)
            with pa.use_backend(outer):
                if pa.get_backend() != outer:
                    errors.append(f"thread {i}: {pa.get_backend()} != {outer}")
                with pa.use_backend(inner):
                    if pa.get_backend() != inner:
                        errors.append(f"thread {i}: {pa.get_backend()} != {inner}")
                if pa.get_backend() != outer:
                    errors.append(f"thread {i}: {pa.get_backend()} after inner != {outer}")
        if pa.get_backend() != "numpy":
            errors.append(f"thread {i} ends with {pa.get_backend()}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert pa.get_backend() == "numpy"


def test_a_thread_does_not_see_the_selection_of_the_thread_that_started_it():
    if getattr(sys.flags, "thread_inherit_context", 0):
        pytest.skip("this interpreter copies the context into new threads")
    seen = []
    with pa.use_backend("jax"):
        t = threading.Thread(target=lambda: seen.append(pa.get_backend()))
        t.start()
        t.join()
        with ThreadPoolExecutor(2) as pool:
            seen += list(pool.map(lambda _: pa.get_backend(), range(4)))
    assert seen == ["numpy"] * 5


def test_a_selection_can_be_carried_into_a_thread_explicitly():
    with pa.use_backend("torch"):
        ctx = contextvars.copy_context()
    seen = []
    t = threading.Thread(target=lambda: seen.append(ctx.run(pa.get_backend)))
    t.start()
    t.join()
    assert seen == ["torch"]
    assert pa.get_backend() == "numpy"


def test_set_backend_is_process_wide_and_use_backend_overrides_it_locally():
    ready, done = threading.Event(), threading.Event()
    seen = {}

    def local() -> None:
        with pa.use_backend("mxnet"):
            ready.set()
            done.wait()
            seen["local"] = pa.get_backend()

    t = threading.Thread(target=local)
    t.start()
    ready.wait()
    pa.set_backend("tensorflow")  # while the other thread is inside its block
    seen["global"] = pa.get_backend()
    done.set()
    t.join()
    other = []
    t = threading.Thread(target=lambda: other.append(pa.get_backend()))
    t.start()
    t.join()
    assert seen == {"local": "mxnet", "global": "tensorflow"} and other == ["tensorflow"]


def test_selection_is_restored_when_the_block_raises_in_threads():
    def worker(name: str) -> str:
        try:
            with pa.use_backend(name):
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        return pa.get_backend()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(worker, NAMES * 4)) == ["numpy"] * 20


# ------------------------------------------------------------------ use_backend in asyncio


def test_tasks_inherit_at_creation_and_never_leak_back():
    async def child(name: str | None, seen: list) -> None:
        seen.append(("start", pa.get_backend()))
        if name is not None:
            with pa.use_backend(name):
                await asyncio.sleep(0)
                seen.append(("inside", pa.get_backend()))
        await asyncio.sleep(0)
        seen.append(("end", pa.get_backend()))

    async def main() -> list:
        seen: list = []
        with pa.use_backend("jax"):
            task = asyncio.create_task(child("torch", seen))  # copies the context now
        await asyncio.sleep(0)
        after = pa.get_backend()
        await task
        plain: list = []
        await asyncio.create_task(child(None, plain))
        return [seen, after, plain, pa.get_backend()]

    seen, after, plain, final = asyncio.run(main())
    assert seen == [("start", "jax"), ("inside", "torch"), ("end", "jax")]
    assert after == "numpy" and final == "numpy"
    assert plain == [("start", "numpy"), ("end", "numpy")]


def test_many_interleaved_tasks():
    async def task(i: int) -> list[str]:
        rng = random.Random(i)
        errors = []
        for _ in range(50):
            name = rng.choice(NAMES)
            with pa.use_backend(name):
                for _ in range(rng.randint(0, 2)):
                    await asyncio.sleep(0)
                if pa.get_backend() != name:
                    errors.append(f"task {i}: {pa.get_backend()} != {name}")
            await asyncio.sleep(0)
            if pa.get_backend() != "numpy":
                errors.append(f"task {i} outside: {pa.get_backend()}")
        return errors

    async def main():
        return await asyncio.gather(*(task(i) for i in range(20)))

    assert sum(asyncio.run(main()), []) == []


def test_to_thread_carries_the_task_selection():
    async def main() -> tuple[str, str]:
        with pa.use_backend("tensorflow"):
            inside = await asyncio.to_thread(pa.get_backend)  # copies the context
        outside = await asyncio.to_thread(pa.get_backend)
        return inside, outside

    assert asyncio.run(main()) == ("tensorflow", "numpy")


def test_pooling_inside_tasks_uses_the_tasks_backend():
    x = np.arange(32, dtype=np.float64).reshape(1, 4, 4, 2)
    want = oracle.pool(x, make_spec("avg", 2, ndim=2))

    async def task() -> np.ndarray:
        with pa.use_backend("numpy"):
            await asyncio.sleep(0)
            return pa.pool2d(x, "avg", 2)

    async def main():
        pa.set_backend("jax")  # a task that forgot use_backend would fail without jax
        try:
            return await asyncio.gather(*(task() for _ in range(8)))
        finally:
            pa.set_backend(None)

    for got in asyncio.run(main()):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------ pooling from many threads


def _jobs():
    """(function, input, expected) triples: distinct specs and shapes, expected by the oracle."""
    rng = np.random.default_rng(0)
    jobs = []
    for i, (mode, window, stride, padding) in enumerate([
            ("max", 3, 2, 1), ("avg", 2, 1, "same"), ("lp", (2, 3), 1, ((0, 1), (1, 0))),
            ("avg", 3, 2, 1), ("max", 2, None, "valid"), ("max", (3, 1), (1, 2), "same_lower")]):
        for size in ((5, 6), (7, 4), (6, 6)):
            x = rng.standard_normal((2, *size, 3))
            kw = dict(mode=mode, window=window, stride=stride, padding=padding,
                      count_include_pad=(mode == "avg" and i % 2 == 1),
                      ceil_mode=size == (7, 4), return_indices=mode == "max")
            want = oracle.pool(x, make_spec(**kw, ndim=2))
            jobs.append((lambda x, kw=kw: pa.pool2d(x, **kw), x, want))
    # large enough for the NumPy backend's blocked and stride-phase paths (scratch buffers)
    for mode in ("max", "avg"):
        x = rng.standard_normal((1, 8, 48, 48))
        kw = dict(mode=mode, window=3, stride=2, padding=1, data_format="NCHW",
                  return_indices=mode == "max")
        jobs.append((lambda x, kw=kw: pa.pool2d(x, **kw), x,
                     oracle.pool(x, make_spec(**kw, ndim=2))))
    return jobs


def _same(got, want) -> bool:
    if isinstance(want, tuple):
        return all(_same(g, w) for g, w in zip(got, want))
    return got.shape == want.shape and np.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_pooling_from_many_threads_at_once():
    jobs = _jobs()
    start = threading.Barrier(6)

    def worker(i: int) -> list[int]:
        order = list(range(len(jobs))) * 3
        random.Random(i).shuffle(order)
        start.wait()
        wrong = []
        for j in order:
            if i % 3 == 0 and j % 5 == 0:
                resolve_plan.cache_clear()  # the plan cache emptied under the others' feet
            fn, x, want = jobs[j]
            if not _same(fn(x), want):
                wrong.append(j)
        return wrong

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(worker, range(6)))
    assert results == [[]] * 6


def test_one_pool_object_shared_by_threads():
    pool = pa.Pool2D("avg", 3, 2, 1, count_include_pad=True, data_format="NCHW")
    xs = [np.random.default_rng(i).standard_normal((1, 2, 5 + i % 4, 6)) for i in range(24)]
    wants = [oracle.pool(x, pool.spec) for x in xs]
    with ThreadPoolExecutor(6) as ex:
        gots = list(ex.map(pool, xs))
    for got, want in zip(gots, wants):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_unpool_planes_remembered_per_index_array_across_threads():
    """Each thread pools its own plane size with indices, then unpools without output_size:
    the registry of index arrays must hand every thread its own plane."""
    start = threading.Barrier(6)

    def worker(i: int) -> bool:
        x = np.random.default_rng(i).standard_normal((1, 5 + i, 4 + i, 2))
        start.wait()
        ok = True
        for _ in range(40):
            y, idx = pa.pool2d(x, "max", 2, 1, 1, return_indices=True)
            back = pa.max_unpool2d(y, idx)
            ok &= back.shape == x.shape
            y2, idx2 = oracle.pool(x, make_spec("max", 2, 1, 1, return_indices=True, ndim=2))
            ok &= np.array_equal(idx, idx2) and np.array_equal(y, y2)
            del y, idx, back  # frees index arrays while other threads register theirs
        return ok

    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(worker, range(6)))
