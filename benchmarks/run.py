"""Benchmark runner: pooladapt against the framework's own op, one process per backend.

    python -m benchmarks.run --backend torch [--repeats 7] [--quick] [--json FILE]

For every case (``benchmarks/cases.py``) it times, on the same data and interleaved round by
round so that machine noise hits them alike: pooladapt on the framework's tensors, the
framework's native op, and pooladapt's NumPy backend on the NumPy array, eagerly and (for
the cases marked ``compiled``) under the framework's compiler. Each figure is the median of
``--repeats`` samples after ``--warmup`` calls; a sample times enough calls to last about
``--sample-ms``. The NumPy backend's peak memory is taken with tracemalloc (NumPy reports
its allocations there). ``nox -s bench`` runs this once per installed backend environment
and writes docs/benchmarks.md (``benchmarks/report.py``).
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
    """Median wall and CPU seconds per call of each ``(fn, arg, sync)``, sampled round-robin."""
    numbers = {}
    for name, (fn, arg, sync) in contenders.items():
        for _ in range(max(warmup, 1)):
            sync(fn(arg))
        calls, start = 0, time.perf_counter()  # calibrate on warm calls, not the first one
        while calls < 3 or (time.perf_counter() - start < 0.2 * sample_s and calls < 1000):
            sync(fn(arg))
            calls += 1
        one = (time.perf_counter() - start) / calls
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
    return {name: {"wall": statistics.median(walls[name]), "cpu": statistics.median(cpus[name]),
                   "calls": numbers[name]} for name in contenders}


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


def run_case(fw: Framework, case: Case, args) -> list[dict[str, Any]]:
    """The records of one case: eager, then compiled where asked for."""
    x = case.make_input()
    tensor = fw.tensor(x)
    native = fw.native(case)
    numpy_fn = pooladapt_fn(case, backend="numpy")
    base = dict(case=case.name, group=case.group, format=case.data_format, dtype=case.dtype,
                in_bytes=int(x.nbytes), out_bytes=_nbytes(numpy_fn(x)), how=native and native[1])
    records = []
    modes = [("eager", lambda f: f)]
    if case.compiled and not args.no_compile and fw.compile(lambda t: t) is not None:
        modes.append((fw.compiler, fw.compile))
    for mode, wrap in modes:
        contenders: dict[str, tuple[Callable, Any, Callable]] = {}
        if fw.name != "numpy":
            contenders["pooladapt"] = (wrap(pooladapt_fn(case)), tensor, fw.sync)
            if native is not None:
                contenders["native"] = (wrap(native[0]), tensor, fw.sync)
        if mode == "eager":
            contenders["numpy"] = (numpy_fn, x, _no_sync)
        record = dict(base, mode=mode)
        try:
            times = measure(contenders, args.warmup, args.repeats, args.sample_ms / 1000)
        except Exception as err:  # a failing contender is reported, not fatal
            record["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            records.append(record)
            continue
        record["times"] = times
        if mode != "eager":
            record["layout_ops"] = {name: _layout_ops(fw, contenders[name][0], tensor)
                                    for name in ("pooladapt", "native") if name in contenders}
        if mode == "eager":
            record["numpy_peak"] = numpy_peak(numpy_fn, x)
        records.append(record)
    return records


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = next(int(line.split()[1]) * 1024 for line in
                   Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = None
    return dict(cpu=cpu, cores=len(os.sched_getaffinity(0)) if hasattr(
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

    t = Table(title=f"pooladapt vs {fw.name} {fw.version()} (median wall time per call)")
    for col in ("case", "fmt", "dtype", "mode", "pooladapt", "native", "ratio", "numpy",
                "numpy/native", "numpy peak"):
        t.add_column(col, justify="left" if col in ("case", "mode") else "right")
    for r in records:
        times, peak = r.get("times", {}), r.get("numpy_peak")
        t.add_row(r["case"], "NCHW" if r["format"] == "channels_first" else "NHWC", r["dtype"],
                  r["mode"] if "error" not in r else f"{r['mode']}: {r['error'][:60]}",
                  _ms(times, "pooladapt"),
                  _ms(times, "native") + (" ~" if r["how"] == "closest" else ""),
                  _ratio(times, "pooladapt", "native"), _ms(times, "numpy"),
                  _ratio(times, "numpy", "native"),
                  f"{peak / 2**20:.1f} MiB" if peak is not None else "-")
    Console(width=200).print(t)
    print("~ : the framework cannot express the case; its closest native op is timed")


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
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sample-ms", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="one case per group")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--threads", type=int, help="threads for the framework and the NumPy "
                        "backend (default: theirs, every core)")
    parser.add_argument("-k", dest="match", default="", help="only cases whose id contains it")
    parser.add_argument("--json", type=Path, help="write the records here")
    args = parser.parse_args(argv)
    if args.threads:
        limit_threads(args.threads)
    fw = FRAMEWORKS[args.backend]()
    if args.threads and fw.name == "torch":
        fw.torch.set_num_threads(args.threads)
    info = dict(machine=machine(), backend=fw.name, version=fw.version(),
                pooladapt=pa.__version__, threads=args.threads, records=[])
    started = time.perf_counter()
    for case in cases(args.quick):
        if args.match and args.match not in case.id:
            continue
        print(f"{fw.name}: {case.id}", file=sys.stderr, flush=True)
        info["records"] += run_case(fw, case, args)
    info["seconds"] = time.perf_counter() - started
    info["machine"]["load_after"] = list(os.getloadavg())
    table(fw, info["records"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
