"""Write the measured part of docs/benchmarks.md from benchmarks/results/*.json.

    python -m benchmarks.report [--results DIR] [--out FILE]

Only the block between the ``measured`` markers is replaced; the notes around it are kept.
Standard library only, so any Python can run it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"
ORDER = ["numpy", "torch", "tensorflow", "jax", "mxnet", "onnxruntime"]
STEM = "resnet stem max 3/2/1"
STEM_CASES = (STEM, "stem max 'same' (pads 0,1)")


def _fmt(r: dict) -> str:
    return "NCHW" if r["format"] == "channels_first" else "NHWC"


def _phase(r: dict) -> str:
    return r.get("phase", "forward")


def _wall(r: dict | None, who: str) -> float | None:
    t = (r or {}).get("times", {}).get(who)
    return t["wall"] if t else None


def _ratio(r: dict | None, a: str, b: str) -> float | None:
    x, y = _wall(r, a), _wall(r, b)
    return x / y if x is not None and y else None


def _ms(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.3f}" if s < 0.01 else f"{s * 1e3:.1f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _mark(r: dict) -> str:
    return " ~" if r.get("how") == "closest" else " †" if r.get("finite_only") else ""


def _label(r: dict, mode: bool = True) -> str:
    short = r["case"].replace("resnet ", "").replace(" (pads 0,1)", "")
    return f"{short} {_fmt(r)} {r['dtype']}" + (f" {r['mode']}" if mode else "") + _mark(r)


def _find(records: list[dict], case: str, fmt: str, dtype: str = "float32",
          mode: str = "eager", phase: str = "forward") -> dict | None:
    for r in records:
        if (r["case"], _fmt(r), r["dtype"], r["mode"], _phase(r)) == (case, fmt, dtype, mode,
                                                                       phase):
            return r
    return None


def _select(records: list[dict], phase: str, **where) -> list[dict]:
    return [r for r in records if _phase(r) == phase
            and all(r.get(k) == v for k, v in where.items())]


def _layout(r: dict) -> str:
    ops = r.get("layout_ops") or {}
    pa, na = ops.get("pooladapt"), ops.get("native")
    if not isinstance(pa, dict) or not isinstance(na, dict):
        return ""
    return f" ({pa['transpose']}/{pa['pad']} vs {na['transpose']}/{na['pad']})"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**missed**")


def _bound(records: list[dict], limit: float, worst_first: int = 4) -> tuple[str, bool | None]:
    """'worst W; N of M over: ...' for the records' pooladapt/native ratios against ``limit``."""
    rated = [(r, v) for r in records if (v := _ratio(r, "pooladapt", "native")) is not None]
    if not rated:
        return "not measured", None
    over = sorted(((v, r) for r, v in rated if v > limit), key=lambda vr: -vr[0])
    text = f"worst {_x(max(v for _, v in rated))}"
    if over:
        shown = ", ".join(f"{_label(r)} {_x(v)}" for v, r in over[:worst_first])
        more = f", {len(over) - worst_first} more" if len(over) > worst_first else ""
        text += f"; {len(over)} of {len(rated)} over: {shown}{more}"
    else:
        text += f" ({len(rated)} rows)"
    return text, not over


def issue19_targets(runs: dict[str, dict]) -> list[str]:
    """The training-speed targets of issue 19, one row per framework and target."""
    rows = ["| target | backend | measured | verdict |", "|---|---|---|---|"]
    frameworks = [b for b in ORDER if b in runs and b != "numpy"]
    for b in frameworks:
        recs = runs[b]["records"]
        train = _select(recs, "train")
        if train:
            native_plan = [r for r in train if r.get("how") == "exact"
                           and not r.get("finite_only")]
            text, ok = _bound(native_plan, 1.05)
            rows.append(f"| training step <= 1.05x native (native op expresses the plan; "
                        f"every mode and dtype) | {b} | {text} | {_verdict(ok)} |")
    torch = runs.get("torch")
    if torch:
        cells, ok = [], None
        for mode in ("eager", "torch.compile"):
            r = _find(torch["records"], STEM, "NCHW", mode=mode, phase="train")
            v = _ratio(r, "native", "pooladapt")
            if v is not None:
                cells.append(f"{mode}: {_ms(_wall(r, 'pooladapt'))} vs "
                             f"{_ms(_wall(r, 'native'))} ms, {_x(v)} as fast")
                ok = v >= 2 if mode == "eager" else ok
        rows.append(f"| torch max, contiguous NCHW stem: >= 2x faster than native "
                    f"forward+backward (eager) | torch | {'; '.join(cells) or '-'} | "
                    f"{_verdict(ok)} |")
    for b in frameworks:
        tiny = [r for r in _select(runs[b]["records"], "forward", group="tiny", mode="eager")]
        vals = [(r, _ratio(r, "pooladapt", "native")) for r in tiny]
        worst = max((v for _, v in vals if v is not None), default=None)
        rows.append(f"| tiny 1x1x4x4 eager forward call <= 1.3x native | {b} | "
                    + (", ".join(f"{_fmt(r)} {_x(v)} ({_ms(_wall(r, 'pooladapt'))} vs "
                                 f"{_ms(_wall(r, 'native'))} ms)" for r, v in vals) or "-")
                    + f" | {_verdict(None if worst is None else worst <= 1.3)} |")
    for b in ("tensorflow", "mxnet"):
        if b not in runs:
            continue
        recs = [r for r in runs[b]["records"] if r.get("finite_only") and r["group"] != "tiny"
                and r.get("how") == "exact"]
        name = ("TensorFlow's exact-NaN max" if b == "tensorflow" else
                "MXNet's exact-NaN max (no target in the issue; TensorFlow's bounds)")
        for phase, limit, what in (("forward", 1.5, "forward"), ("train", 1.2, "with backward")):
            text, ok = _bound(_select(recs, phase), limit)
            rows.append(f"| {name} <= {limit}x native {what} | {b} | {text} | "
                        f"{_verdict(ok) if b == 'tensorflow' else '-'} |")
    jax = runs.get("jax")
    if jax:
        case = "stem avg 'same' excl. pad"
        found = [(fmt, mode, _find(jax["records"], case, fmt, mode=mode, phase="train"))
                 for fmt in ("NCHW", "NHWC") for mode in ("jax.jit", "eager")]
        judged = [_ratio(r, "pooladapt", "native") for fmt, mode, r in found
                  if mode == "jax.jit"]
        cells = [f"{fmt} {'jax.jit(jax.grad)' if mode == 'jax.jit' else 'jax.grad eager'} "
                 f"{_x(_ratio(r, 'pooladapt', 'native'))}" for fmt, mode, r in found if r]
        ok = None if None in judged or not judged else max(judged) <= 1.05
        rows.append(f"| JAX avg `same` at native speed under `jax.jit(jax.grad)` (<= 1.05x "
                    f"`flax.linen.avg_pool(count_include_pad=False)`) | jax | "
                    f"{', '.join(cells) or '-'} | {_verdict(ok)} |")
    rows += numpy_vs_fastest(runs, 1.5)
    return rows


def numpy_vs_fastest(runs: dict[str, dict], limit: float) -> list[str]:
    """The NumPy backend on the float32 stem against the fastest native stem of any run."""
    natives = [(b, r) for b in ORDER if b in runs for r in runs[b]["records"]
               if r["case"] == STEM and r["dtype"] == "float32" and _phase(r) == "forward"
               and _wall(r, "native")]
    if not natives:
        return []
    b, fastest = min(natives, key=lambda br: _wall(br[1], "native"))
    rows = []
    for r in (r for bb, r in natives if bb == b and _wall(r, "numpy")):  # same process
        v = _wall(r, "numpy") / _wall(fastest, "native")
        rows.append(f"| NumPy backend within {limit}x of the fastest framework on the stem "
                    f"(forward) | numpy | {_fmt(r)} {_ms(_wall(r, 'numpy'))} ms vs {b} "
                    f"{_fmt(fastest)} {fastest['mode']} {_ms(_wall(fastest, 'native'))} ms "
                    f"({_x(v)}, same process) | {_verdict(v <= limit)} |")
    return rows


def issue8_targets(runs: dict[str, dict]) -> list[str]:
    """The forward targets of issue 8, one row per framework and target."""
    rows = ["| target | backend | measured | verdict |", "|---|---|---|---|"]
    for b in (b for b in ORDER if b in runs and b != "numpy"):
        recs = _select(runs[b]["records"], "forward")
        large = [r for r in recs if r["group"] == "native" and r["mode"] == "eager"
                 and r["how"] == "exact" and r["dtype"] == "float32"]
        text, ok = _bound(large, 1.05, worst_first=6)
        rows.append(f"| large inputs <= 1.05x native (native plan) | {b} | {text} | "
                    f"{_verdict(ok)} |")
        emulated = [r for r in recs if r["how"] == "closest" and r["mode"] == "eager"]
        text, ok = _bound(emulated, 1.5, worst_first=6)
        rows.append(f"| emulated <= 1.5x closest native | {b} | {text} | {_verdict(ok)} |")
        compiled = [r for r in recs if r["mode"] != "eager"]
        for mode in dict.fromkeys(r["mode"] for r in compiled):
            rows.append(f"| compiled forward ({mode}) | {b} | " + ", ".join(
                f"{_label(r, mode=False)} {_x(_ratio(r, 'pooladapt', 'native'))}{_layout(r)}"
                for r in compiled if r["mode"] == mode) + " | timing only; graphs: "
                "transposes/pads, pooladapt vs native |")
    torch = runs.get("torch")
    if torch:
        r = _find(torch["records"], STEM, "NCHW")
        speedup = _ratio(r, "native", "pooladapt")
        rows.append(f"| torch NCHW stem >= 3x faster than F.max_pool2d | torch | "
                    f"{_x(speedup)} faster | "
                    f"{_verdict(None if speedup is None else speedup >= 3)} |")
        v = _ratio(r, "numpy", "native")
        rows.append(f"| NumPy backend faster than torch NCHW stem | numpy | NCHW "
                    f"{_ms(_wall(r, 'numpy'))} ms vs torch {_ms(_wall(r, 'native'))} ms "
                    f"({_x(v)}) | {_verdict(None if v is None else v < 1)} |")
    rows += numpy_vs_fastest(runs, 4)
    numpy_run = runs.get("numpy") or next(iter(runs.values()))
    for r in numpy_run["records"]:
        if r["case"] == STEM and r["dtype"] == "float32" and "numpy_peak" in r:
            ok = r["numpy_peak"] <= 2 * r["out_bytes"]
            rows.append(f"| NumPy stem peak <= output + one output-sized temporary | numpy | "
                        f"{_fmt(r)} {r['numpy_peak'] / 2**20:.1f} MiB allocated for a "
                        f"{r['out_bytes'] / 2**20:.1f} MiB output (input "
                        f"{r['in_bytes'] / 2**20:.0f} MiB) | {_verdict(ok)} |")
    return rows


def machine(runs: dict[str, dict]) -> list[str]:
    m = max((r["machine"] for r in runs.values()), key=lambda m: "flags" in m)
    mem = f"{m['memory'] / 2**30:.0f} GiB" if m.get("memory") else "?"
    flags = ", ".join(m.get("flags", [])) or "not recorded"
    lines = [f"- CPU: {m['cpu']}, {m['cores']} cores available, {mem} memory; {m['system']}; "
             f"Python {m['python']}", f"- Vector extensions (/proc/cpuinfo): {flags}",
             "- Runs (started; 1-minute load average before and after; at the start of each "
             "record, lowest to highest):", ""]
    for name, run in runs.items():
        entries = run.get("runs") or [dict(
            started="date not recorded (before the training benchmarks)",
            load=run["machine"]["load"], load_after=run["machine"].get("load_after"),
            seconds=run.get("seconds", 0), framework_threads=None)]
        for e in entries:
            loads = [r["load"] for r in run["records"]
                     if "load" in r and r.get("started") == e["started"]]
            spread = f", {min(loads):.1f}-{max(loads):.1f} per record" if loads else ""
            after = (e.get("load_after") or [float("nan")])[0]
            phases = sorted({_phase(r) for r in run["records"]
                             if r.get("started", e["started"]) == e["started"]})
            lines.append(f"  - `{name}` ({'/'.join(phases)}): {run['backend']} {run['version']} "
                         f"(NumPy {run['machine']['numpy']}), {_threads(run, e)}: "
                         f"{e['started']}, load {e['load'][0]:.1f} -> {after:.1f}{spread}, "
                         f"{e.get('seconds', 0):.0f} s")
    return lines


def _threads(run: dict, entry: dict | None = None) -> str:
    n = run.get("threads")
    if n:
        return f"{n} thread{'s' if n > 1 else ''}"
    own = (entry or {}).get("framework_threads")
    return "default threads (every core" + (f"; {own} intra-op" if own else "") + ")"


def forward_table(run: dict) -> list[str]:
    rows = ["| case | fmt | dtype | mode | pooladapt ms | native ms | ratio | NumPy ms | "
            "NumPy/native | NumPy peak MiB (out) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in _select(run["records"], "forward"):
        native = _ms(_wall(r, "native")) + _mark(r)
        peak = r.get("numpy_peak")
        mode = r["mode"] + (f" ({r['error']})" if "error" in r else "")
        rows.append(
            f"| {r['case']} | {_fmt(r)} | {r['dtype']} | {mode} | {_ms(_wall(r, 'pooladapt'))} "
            f"| {native} | {_x(_ratio(r, 'pooladapt', 'native'))} | {_ms(_wall(r, 'numpy'))} "
            f"| {_x(_ratio(r, 'numpy', 'native'))} | "
            + (f"{peak / 2**20:.1f} ({r['out_bytes'] / 2**20:.1f})" if peak is not None else "-")
            + " |")
    return rows


def train_table(run: dict) -> list[str]:
    """One row per case, layout and dtype; per mode the ratio and both times."""
    recs = _select(run["records"], "train")
    modes = list(dict.fromkeys(r["mode"] for r in recs))
    rows: dict[tuple, dict[str, dict]] = {}
    for r in recs:
        rows.setdefault((r["case"], _fmt(r), r["dtype"]), {})[r["mode"]] = r
    out = ["| case | fmt | dtype | " + " | ".join(f"{m}: ratio (pooladapt / native ms)"
                                                   for m in modes) + " |",
           "|---|---|---|" + "---|" * len(modes)]
    for (case, fmt, dtype), by_mode in rows.items():
        cells = []
        for m in modes:
            r = by_mode.get(m)
            if r is None:
                cells.append("-")
                continue
            cell = (f"**{_x(_ratio(r, 'pooladapt', 'native'))}** "
                    f"({_ms(_wall(r, 'pooladapt'))} / {_ms(_wall(r, 'native'))})")
            if "error" in r:
                cell += f" {r['error'][:90]}"
            cells.append(cell)
        mark = _mark(next(iter(by_mode.values())))
        out.append(f"| {case}{mark} | {fmt} | {dtype} | " + " | ".join(cells) + " |")
    return out


def noise(runs: dict[str, dict]) -> str:
    """CPU time over wall time of the NumPy backend: how much of the machine this run had."""
    shares = [t["numpy"]["cpu"] / t["numpy"]["wall"] for run in runs.values()
              for r in run["records"] for t in [r.get("times", {})]
              if "numpy" in t and t["numpy"]["wall"] > 0.005]
    if not shares:
        return ""
    cores = next(iter(runs.values()))["machine"].get("cores", "?")
    return (f"The NumPy backend got a median {statistics.median(shares):.2f} CPU-seconds per "
            f"wall-second on the forward cases over 5 ms ({cores} would be every core to "
            "itself).")


LEGEND = ("`~`: the framework cannot express the case; its closest native op is timed (`how` "
          "in the JSON). `†`: the native max drops NaN, so it matches the case on NaN-free data "
          "only and pooladapt pays for exact NaN propagation (`finite_only`). Ratios are "
          "pooladapt (or the NumPy backend) over native, both timed in the same process, "
          "interleaved round by round; below 1 pooladapt is faster.")


def render(runs: dict[str, dict]) -> str:
    out = [BEGIN, "", "## Machine", "", *machine(runs), "", noise(runs), ""]
    groups: dict[int, dict[str, dict]] = {}
    for run in runs.values():
        groups.setdefault(run.get("threads") or 0, {})[run["backend"]] = run
    for _, group in sorted(groups.items()):
        label = _threads(next(iter(group.values())))
        if any(_select(r["records"], "train") for r in group.values()):
            out += [f"## Targets of issue 19 (training speed), {label}", "",
                    *issue19_targets(group), ""]
            out += [f"## Training steps (forward+backward), {label}", ""]
            for b in ORDER:
                if b in group and _select(group[b]["records"], "train"):
                    out += [f"### {b} {group[b]['version']}, training, {label}", "",
                            *train_table(group[b]), ""]
        out += [f"## Targets of issue 8 (forward calls), {label}", "", *issue8_targets(group),
                ""]
        for b in ORDER:
            if b in group:
                out += [f"### {b} {group[b]['version']}, forward, {label}", "",
                        *forward_table(group[b]), ""]
    out += [LEGEND, "", END]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parent
    parser.add_argument("--results", type=Path, default=root / "results")
    parser.add_argument("--out", type=Path, default=root.parent / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    runs = {p.stem: json.loads(p.read_text()) for p in sorted(args.results.glob("*.json"))}
    if not runs:
        print(f"no results in {args.results}", file=sys.stderr)
        return 1
    block = render(runs)
    text = args.out.read_text() if args.out.exists() else (
        "# Benchmarks\n\n" + BEGIN + "\n" + END + "\n")
    head, rest = text.split(BEGIN, 1)
    args.out.write_text(head + block + rest.split(END, 1)[1])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
