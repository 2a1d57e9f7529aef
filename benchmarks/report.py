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
ORDER = ["numpy", "torch", "tensorflow", "jax", "mxnet"]
STEM = "resnet stem max 3/2/1"


def _fmt(r: dict) -> str:
    return "NCHW" if r["format"] == "channels_first" else "NHWC"


def _wall(r: dict, who: str) -> float | None:
    t = r.get("times", {}).get(who)
    return t["wall"] if t else None


def _ratio(r: dict, a: str, b: str) -> float | None:
    x, y = _wall(r, a), _wall(r, b)
    return x / y if x is not None and y else None


def _ms(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.3f}" if s < 0.01 else f"{s * 1e3:.1f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _find(records: list[dict], case: str, fmt: str, dtype: str = "float32",
          mode: str = "eager") -> dict | None:
    for r in records:
        if (r["case"], _fmt(r), r["dtype"], r["mode"]) == (case, fmt, dtype, mode):
            return r
    return None


def _layout(r: dict) -> str:
    ops = r.get("layout_ops") or {}
    pa, na = ops.get("pooladapt"), ops.get("native")
    if not isinstance(pa, dict) or not isinstance(na, dict):
        return ""
    return f" ({pa['transpose']}/{pa['pad']} vs {na['transpose']}/{na['pad']})"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**missed**")


def targets(runs: dict[str, dict]) -> list[str]:
    """The issue's targets, one row per framework and target."""
    rows = ["| target | backend | measured | verdict |", "|---|---|---|---|"]
    frameworks = [b for b in ORDER if b in runs and b != "numpy"]
    for b in frameworks:
        recs = runs[b]["records"]
        tiny = [(_fmt(r), _ratio(r, "pooladapt", "native")) for r in recs
                if r["group"] == "tiny" and r["mode"] == "eager"]
        worst = max((v for _, v in tiny if v is not None), default=None)
        rows.append(f"| tiny eager call <= 1.3x native | {b} | "
                    f"{', '.join(f'{f} {_x(v)}' for f, v in tiny)} | "
                    f"{_verdict(None if worst is None else worst <= 1.3)} |")
        large = [(r, _ratio(r, "pooladapt", "native")) for r in recs
                 if r["group"] == "native" and r["mode"] == "eager" and r["how"] == "exact"
                 and r["dtype"] == "float32"]
        bad = [f"{r['case']} {_fmt(r)} {_x(v)}" for r, v in large if v is not None and v > 1.05]
        worst = max((v for _, v in large if v is not None), default=None)
        rows.append(f"| large inputs <= 1.05x native (native plan) | {b} | worst {_x(worst)}"
                    f"{'; over: ' + ', '.join(bad) if bad else ''} | "
                    f"{_verdict(None if worst is None else not bad)} |")
        emulated = [(r, _ratio(r, "pooladapt", "native")) for r in recs
                    if r["how"] == "closest" and r["mode"] == "eager"]
        bad = [f"{r['case']} {_fmt(r)} {_x(v)}" for r, v in emulated
               if v is not None and v > 1.5]
        worst = max((v for _, v in emulated if v is not None), default=None)
        rows.append(f"| emulated <= 1.5x closest native | {b} | worst {_x(worst)}"
                    f"{'; over: ' + ', '.join(bad) if bad else ''} | "
                    f"{_verdict(None if worst is None else not bad)} |")
        compiled = [(r, _ratio(r, "pooladapt", "native")) for r in recs
                    if r["mode"] != "eager"]
        if compiled:
            rows.append(f"| compiled ({compiled[0][0]['mode']}) | {b} | " + ", ".join(
                f"{r['case'].split(' max')[0]} {_fmt(r)} {_x(v)}{_layout(r)}"
                for r, v in compiled) + " | timing only; graphs: transposes/pads, pooladapt "
                "vs native |")
    torch = runs.get("torch")
    if torch:
        r = _find(torch["records"], STEM, "NCHW")
        speedup = None if r is None else _ratio(r, "native", "pooladapt")
        rows.append(f"| torch NCHW stem >= 3x faster than F.max_pool2d | torch | "
                    f"{_x(speedup)} faster | "
                    f"{_verdict(None if speedup is None else speedup >= 3)} |")
    rows += numpy_targets(runs)
    return rows


def numpy_targets(runs: dict[str, dict]) -> list[str]:
    rows = []
    torch = runs.get("torch")
    if torch:
        r = _find(torch["records"], STEM, "NCHW")
        v = None if r is None else _ratio(r, "numpy", "native")
        rows.append(f"| NumPy backend faster than torch NCHW stem | numpy | NCHW "
                    f"{_ms(_wall(r, 'numpy') if r else None)} ms vs torch "
                    f"{_ms(_wall(r, 'native') if r else None)} ms ({_x(v)}) | "
                    f"{_verdict(None if v is None else v < 1)} |")
    natives = [(b, r) for b in ORDER if b in runs for r in runs[b]["records"]
               if r["case"] == STEM and r["dtype"] == "float32" and r["mode"] == "eager"
               and _wall(r, "native")]
    if natives:
        b, fastest = min(natives, key=lambda br: _wall(br[1], "native"))
        for r in (r for bb, r in natives if bb == b):  # the NumPy backend in the same process
            v = _wall(r, "numpy") / _wall(fastest, "native")
            rows.append(f"| NumPy backend within 4x of the fastest native stem | numpy | "
                        f"{_fmt(r)} {_ms(_wall(r, 'numpy'))} ms vs {b} {_fmt(fastest)} "
                        f"{_ms(_wall(fastest, 'native'))} ms ({_x(v)}, same process) | "
                        f"{_verdict(v <= 4)} |")
    numpy_run = runs.get("numpy") or next(iter(runs.values()))
    peaks = [r for r in numpy_run["records"] if r["case"] == STEM and r["dtype"] == "float32"
             and "numpy_peak" in r]
    for r in peaks:
        ok = r["numpy_peak"] <= 2 * r["out_bytes"]
        rows.append(f"| NumPy stem peak <= output + one output-sized temporary | numpy | "
                    f"{_fmt(r)} {r['numpy_peak'] / 2**20:.1f} MiB allocated for a "
                    f"{r['out_bytes'] / 2**20:.1f} MiB output (input "
                    f"{r['in_bytes'] / 2**20:.0f} MiB) | {_verdict(ok)} |")
    return rows


def machine(runs: dict[str, dict]) -> list[str]:
    m = next(iter(runs.values()))["machine"]
    mem = f"{m['memory'] / 2**30:.0f} GiB" if m.get("memory") else "?"
    lines = [f"- CPU: {m['cpu']}, {m['cores']} cores available, {mem} memory; {m['system']}; "
             f"Python {m['python']}", "- Runs (1-minute load average before and after each):",
             ""]
    for name, r in runs.items():
        lo, hi = r["machine"]["load"][0], r["machine"].get("load_after", [None])[0]
        lines.append(f"  - `{name}`: {r['backend']} {r['version']} (NumPy "
                     f"{r['machine']['numpy']}), {_threads(r)}: load {lo:.1f} -> {hi:.1f}, "
                     f"{r['seconds']:.0f} s")
    return lines


def _threads(run: dict) -> str:
    n = run.get("threads")
    return "default threads (every core)" if not n else f"{n} thread{'s' if n > 1 else ''}"


def table(run: dict) -> list[str]:
    rows = ["| case | fmt | dtype | mode | pooladapt ms | native ms | ratio | NumPy ms | "
            "NumPy/native | NumPy peak MiB (out) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in run["records"]:
        native = _ms(_wall(r, "native")) + (" ~" if r["how"] == "closest" else "")
        peak = r.get("numpy_peak")
        mode = r["mode"] + (f" ({r['error']})" if "error" in r else "")
        rows.append(
            f"| {r['case']} | {_fmt(r)} | {r['dtype']} | {mode} | {_ms(_wall(r, 'pooladapt'))} "
            f"| {native} | {_x(_ratio(r, 'pooladapt', 'native'))} | {_ms(_wall(r, 'numpy'))} "
            f"| {_x(_ratio(r, 'numpy', 'native'))} | "
            + (f"{peak / 2**20:.1f} ({r['out_bytes'] / 2**20:.1f})" if peak is not None else "-")
            + " |")
    return rows


def noise(runs: dict[str, dict]) -> str:
    """CPU time over wall time of the NumPy backend: how much of the machine this run had."""
    shares = [t["numpy"]["cpu"] / t["numpy"]["wall"] for run in runs.values()
              for r in run["records"] for t in [r.get("times", {})]
              if "numpy" in t and t["numpy"]["wall"] > 0.005]
    if not shares:
        return ""
    return (f"The NumPy backend got a median {statistics.median(shares):.2f} CPU-seconds per "
            "wall-second on the cases over 5 ms (2.0 would be both cores to itself).")


def render(runs: dict[str, dict]) -> str:
    out = [BEGIN, "", "## Machine", "", *machine(runs), "", noise(runs), ""]
    groups: dict[int, dict[str, dict]] = {}
    for run in runs.values():
        groups.setdefault(run.get("threads") or 0, {})[run["backend"]] = run
    for _, group in sorted(groups.items()):
        label = _threads(next(iter(group.values())))
        out += [f"## Targets, {label}", "", *targets(group), ""]
        for b in ORDER:
            if b in group:
                out += [f"### {b} {group[b]['version']}, {label}", "", *table(group[b]), ""]
    out += ["`~`: the framework cannot express the case; its closest native op is timed "
            "(`how` in the JSON). Ratios are pooladapt (or the NumPy backend) over native, "
            "both timed in the same process, interleaved round by round.", "", END]
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
