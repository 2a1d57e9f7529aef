"""Benchmark runner: pooladapt against the framework's own op, one process per backend.

    python -m benchmarks.run --backend torch [--phase forward|train|all] [-k stem] [--quick]
                             [--repeats 7] [--threads 1] [--json FILE]

For every case (``benchmarks/cases.py``) it times, on the same data and interleaved round by
round so that machine noise hits them alike, pooladapt on the framework's tensors against the
framework's native op. Forward cases time one call, and pooladapt's NumPy backend on the NumPy
array as well (with its peak memory from tracemalloc); training cases time the gradient of
``sum(pool(x) * w)`` with respect to ``x``. Each runs eagerly, then under each of the
framework's compilers (forward: the cases marked ``compiled``; training: every case). Each
figure is the median of ``--repeats`` samples after ``--warmup`` calls; a sample times enough
calls to last about ``--sample-ms``. ``nox -s bench`` runs this once per installed backend
environment, then ``benchmarks/report.py`` and ``benchmarks/plot.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pooladapt as pa  # noqa: E402
from benchmarks.cases import Case, cases  # noqa: E402
from benchmarks.natives import FRAMEWORKS, Framework  # noqa: E402


def pooladapt_fn(case: Case, backend: str | None = None) -> Callable[[Any], Any]:
    """pooladapt's call for the case (a layer built once for regular pooling)."""
    fmt, kw = case.data_format, dict(case.kwargs)
    if case.kind == "pool":
        layer = pa.Pool2D(case.mode, data_format=fmt, backend=backend, **kw)
        return layer
    if case.kind == "global":
        return lambda x: pa.global_pool2d(x, case.mode, data_format=fmt, backend=backend)
    size = kw.pop("output_size")
    return lambda x: pa.adaptive_pool2d(x, case.mode, size, data_format=fmt, backend=backend,
                                        **kw)


def measure(contenders: dict[str, tuple[Callable, Any, Callable]], warmup: int, repeats: int,
            sample_s: float) -> dict[str, dict[str, float]]:
    """Median (and fastest) wall and CPU seconds per call of each ``(fn, arg, sync)``, sampled
    round-robin."""
    numbers = {}
    for name, (fn, arg, sync) in contenders.items():
        for _ in range(max(warmup, 1)):
            sync(fn(arg))
        calls, one, start = 0, float("inf"), time.perf_counter()
        while calls < 3 or (time.perf_counter() - start < 0.2 * sample_s and calls < 1000):
            t = time.perf_counter()  # calibrate on the fastest warm call: a busy moment
            sync(fn(arg))            # must not make a tiny call's samples one call each
            one = min(one, time.perf_counter() - t)
            calls += 1
        numbers[name] = max(1, min(10_000, int(sample_s / max(one, 1e-7))))
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, arg, sync = contenders[name]
            n = numbers[name]
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(n):
                y = fn(arg)
            sync(y)
            walls[name].append((time.perf_counter() - wall) / n)
            cpus[name].append((time.process_time() - cpu) / n)
    return {name: {"wall": statistics.median(walls[name]), "min": min(walls[name]),
                   "cpu": statistics.median(cpus[name]), "calls": numbers[name]}
            for name in contenders}


def _layout_ops(fw: Framework, fn: Callable, x: Any) -> dict[str, int] | str | None:
    try:
        return fw.layout_ops(fn, x)
    except Exception as err:  # inspection is best effort
        return f"{type(err).__name__}: {err}"[:120]


def _no_sync(y: Any) -> None:
    pass


def numpy_peak(fn: Callable, x: np.ndarray) -> int:
    tracemalloc.start()
    try:
        fn(x)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _nbytes(y: Any) -> int:
    y = y[0] if isinstance(y, tuple) else y
    return int(np.asarray(y).nbytes)


def _contenders(fw: Framework, case: Case, mode: str, calls: dict[str, Callable], arg: Any,
                errors: dict[str, str]) -> dict[str, tuple[Callable, Any, Callable]]:
    """``(fn, arg, sync)`` of each contender that runs once; a failing one goes to ``errors``."""
    out = {}
    for who, build in calls.items():
        try:
            fn = build()
            fw.sync(fn(arg))
        except Exception as err:  # a failing contender is reported, not fatal
            errors[who] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
            continue
        out[who] = (fn, arg, fw.sync)
    return out


def run_case(fw: Framework, case: Case, args) -> list[dict[str, Any]]:
    """The records of one case: eager, then under each compiler where asked for (every
    training case)."""
    x = case.make_input()
    tensor = fw.tensor(x, case.dtype)
    pa_fn = pooladapt_fn(case, fw.pooladapt_backend)
    base = dict(case=case.name, group=case.group, format=case.data_format, dtype=case.dtype,
                phase=case.phase, in_bytes=int(x.nbytes),
                finite_only=fw.finite_only(case))
    modes = ["eager"]
    if (case.compiled or case.phase == "train") and not args.no_compile:
        modes += fw.compilers
    if case.phase == "train":
        arg = fw.trainable(tensor)
        out_shape = tuple(pa_fn(arg).shape)
        w = fw.tensor(np.random.default_rng(1).standard_normal(out_shape, dtype=np.float32)
                      .astype(x.dtype), case.dtype)
    else:
        numpy_fn = pooladapt_fn(case, backend="numpy")
        arg = tensor
        base["out_bytes"] = _nbytes(numpy_fn(x))
    records = []
    for mode in modes:
        fw.reset()
        native = fw.native(case, mode)
        calls: dict[str, Callable[[], Callable]] = {}
        if fw.name != "numpy":
            for who, fn in (("pooladapt", pa_fn), ("native", native and native[0])):
                if fn is None:
                    continue
                if case.phase == "train":
                    calls[who] = partial(fw.train, fn, mode, case, who, w)
                else:
                    calls[who] = partial(fw.forward, fn, mode, case, who)
        record: dict[str, Any] = dict(base, mode=mode, how=native and native[1],
                                      load=os.getloadavg()[0])
        errors: dict[str, str] = {}
        contenders = _contenders(fw, case, mode, calls, arg, errors)
        if case.phase == "forward" and mode == "eager":
            contenders["numpy"] = (numpy_fn, x, _no_sync)
        if errors:
            record["error"] = "; ".join(f"{who}: {e}" for who, e in errors.items())
        if contenders:
            record["times"] = measure(contenders, args.warmup, args.repeats,
                                      args.sample_ms / 1000)
        if mode != "eager":
            record["layout_ops"] = {who: _layout_ops(fw, contenders[who][0], arg)
                                    for who in ("pooladapt", "native") if who in contenders}
        if "numpy" in contenders:
            record["numpy_peak"] = numpy_peak(numpy_fn, x)
        records.append(record)
    return records


VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_tile")


def machine() -> dict[str, Any]:
    """The CPU (model, vector extensions from /proc/cpuinfo, cores), memory and software."""
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == (platform.processor() or
                                                         platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in VECTOR_FLAGS if f in have]
    except OSError:
        pass
    try:
        mem = next(int(line.split()[1]) * 1024 for line in
                   Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = None
    return dict(cpu=cpu, flags=flags, cores=len(os.sched_getaffinity(0)) if hasattr(
        os, "sched_getaffinity") else os.cpu_count(), memory=mem, system=platform.platform(),
                python=platform.python_version(), numpy=np.__version__,
                load=list(os.getloadavg()))


def _ms(times: dict, name: str) -> str:
    return f"{times[name]['wall'] * 1e3:.3f} ms" if name in times else "-"


def _ratio(times: dict, a: str, b: str) -> str:
    return f"{times[a]['wall'] / times[b]['wall']:.2f}" if a in times and b in times else "-"


def table(fw: Framework, records: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"pooladapt vs {fw.name} {fw.version()} (median wall time per call; "
              "train: forward+backward)")
    for col in ("case", "fmt", "dtype", "phase", "mode", "pooladapt", "native", "ratio",
                "numpy", "numpy/native", "numpy peak"):
        t.add_column(col, justify="left" if col in ("case", "phase", "mode") else "right")
    for r in records:
        times, peak = r.get("times", {}), r.get("numpy_peak")
        t.add_row(r["case"], "NCHW" if r["format"] == "channels_first" else "NHWC", r["dtype"],
                  r["phase"], r["mode"] if "error" not in r else f"{r['mode']}: {r['error'][:60]}",
                  _ms(times, "pooladapt"),
                  _ms(times, "native") + (" ~" if r["how"] == "closest" else ""),
                  _ratio(times, "pooladapt", "native"), _ms(times, "numpy"),
                  _ratio(times, "numpy", "native"),
                  f"{peak / 2**20:.1f} MiB" if peak is not None else "-")
    Console(width=220).print(t)
    print("~ : the framework cannot express the case; its closest native op is timed")


def _key(r: dict[str, Any]) -> tuple:
    return r["case"], r["format"], r["dtype"], r.get("phase", "forward"), r["mode"]


def save(path: Path, info: dict[str, Any]) -> None:
    """Write ``info`` to ``path``, keeping the records of an earlier run there that this run
    did not measure again (another phase, other cases), with that run's entry in ``runs``."""
    old: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
    same = old.get("backend") == info["backend"] and old.get("threads") == info["threads"]
    fresh = {_key(r) for r in info["records"]}
    kept = [r for r in old.get("records", []) if same and _key(r) not in fresh]
    runs = [r for r in old.get("runs", []) if same and r["started"] != info["runs"][-1][
        "started"]]
    used = {r.get("started") for r in kept}
    out = dict(info, records=kept + info["records"],
               runs=[r for r in runs if r["started"] in used] + info["runs"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


def limit_threads(n: int) -> None:
    """Thread settings every framework reads when it starts (before its import)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "POOLADAPT_NUMPY_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                "MXNET_CPU_WORKER_NTHREADS"):
        os.environ[var] = str(n)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen="
                               f"{'true' if n > 1 else 'false'} intra_op_parallelism_threads={n}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, choices=sorted(FRAMEWORKS))
    parser.add_argument("--phase", choices=("forward", "train", "all"), default="all",
                        help="forward calls, training steps (forward+backward), or both")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sample-ms", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few cases")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--threads", type=int, help="threads for the framework and the NumPy "
                        "backend (default: theirs, every core)")
    parser.add_argument("-k", dest="match", default="", help="only cases whose id "
                        "('<case> <NCHW|NHWC> <dtype> <phase>') contains it")
    parser.add_argument("--json", type=Path, help="write the records here (replacing the "
                        "rows measured again, keeping the others)")
    args = parser.parse_args(argv)
    if args.threads:
        limit_threads(args.threads)
    fw = FRAMEWORKS[args.backend]()
    if args.threads and fw.name == "torch":
        fw.torch.set_num_threads(args.threads)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    run = dict(started=started, load=list(os.getloadavg()), argv=sys.argv[1:] if argv is None
               else argv, framework_threads=fw.threads(),
               numpy_threads=os.environ.get("POOLADAPT_NUMPY_THREADS"))
    info = dict(machine=machine(), backend=fw.name, version=fw.version(),
                pooladapt=pa.__version__, threads=args.threads, records=[], runs=[run])
    clock = time.perf_counter()
    for case in cases(args.quick):
        if (args.match and args.match not in case.id
                or args.phase not in ("all", case.phase)
                or case.phase == "train" and case.dtype not in fw.train_dtypes):
            continue
        print(f"{fw.name}: {case.id}", file=sys.stderr, flush=True)
        for record in run_case(fw, case, args):
            info["records"].append(dict(record, started=started))
        run.update(seconds=time.perf_counter() - clock, load_after=list(os.getloadavg()))
        info["seconds"], info["machine"]["load_after"] = run["seconds"], run["load_after"]
        if args.json:  # after every case: a long run that dies keeps what it measured
            save(args.json, info)
    table(fw, info["records"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
