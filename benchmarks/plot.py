"""Draw the benchmark ratios (pooladapt / native, median wall time) from benchmarks/results/.

    python -m benchmarks.plot [--results DIR] [--out DIR]

One figure per backend, ``<out>/benchmarks-<backend>.png``, with a panel per phase: forward
calls, then training steps (forward+backward). A bar per case (layout, dtype and mode in the
label) on a log scale around 1: left of the line pooladapt is faster; green bars are within
1.05x, orange ones over; hatched bars compare with the closest native op (``~``), dotted ones
with a native max that drops NaN (``†``). Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = ["numpy", "torch", "tensorflow", "jax", "mxnet", "onnxruntime"]
PHASES = {"forward": "forward call", "train": "training step: gradient of sum(pool(x) * w)"}


def ratios(report: dict, phase: str) -> list[tuple[str, float, str]]:
    """(label, pooladapt / native, hatch) for every record of ``phase`` that timed both."""
    rows = []
    for r in report["records"]:
        times = r.get("times", {})
        if (r.get("phase", "forward") != phase or "pooladapt" not in times
                or "native" not in times or not times["native"]["wall"]):
            continue
        layout = "NCHW" if r["format"] == "channels_first" else "NHWC"
        mark = " ~" if r.get("how") == "closest" else " †" if r.get("finite_only") else ""
        hatch = "//" if mark == " ~" else ".." if mark else ""
        label = f"{r['case']}{mark} · {layout} · {r['dtype']} · {r['mode']}"
        rows.append((label, times["pooladapt"]["wall"] / times["native"]["wall"], hatch))
    return rows


def draw(backend: str, report: dict, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullFormatter

    panels = [(p, rows) for p in PHASES if (rows := ratios(report, p))]
    if not panels:
        return None
    values = [v for _, rows in panels for _, v, _ in rows]
    lo, hi = min(min(values) / 1.3, 0.5), max(max(values) * 1.3, 2.0)
    fig, axes = plt.subplots(len(panels), 1, squeeze=False, sharex=True,
                             figsize=(9, 0.22 * len(values) + 1.2 * len(panels) + 0.6),
                             gridspec_kw={"height_ratios": [len(rows) + 2 for _, rows in panels]})
    for ax, (phase, rows) in zip(axes[:, 0], panels):
        labels, vals, hatches = zip(*rows)
        bars = ax.barh(range(len(rows)), vals, edgecolor="white", linewidth=0.3,
                       color=["#2a9d8f" if v <= 1.05 else "#e76f51" for v in vals])
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), labels, fontsize=6.5)
        ax.invert_yaxis()
        ax.bar_label(bars, [f" {v:.2f}x" for v in vals], fontsize=6)
        ax.set_title(PHASES[phase], fontsize=9, loc="left")
    ticks = [t for t in (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32) if lo <= t <= hi]
    axes[-1, 0].set_xticks(ticks, [f"{t:g}x" for t in ticks])
    axes[-1, 0].xaxis.set_minor_formatter(NullFormatter())
    legend = [Patch(color="#2a9d8f", label="<= 1.05x"), Patch(color="#e76f51", label="> 1.05x"),
              Patch(facecolor="white", edgecolor="grey", hatch="//", label="~ closest native op"),
              Patch(facecolor="white", edgecolor="grey", hatch="..",
                    label="† native max drops NaN")]
    axes[0, 0].legend(handles=legend, fontsize=6.5, loc="lower right", ncol=4, frameon=False,
                      bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2)
    axes[-1, 0].set_xlabel("pooladapt / native, median wall time (log scale; < 1: pooladapt "
                           "is faster)", fontsize=8)
    machine = report.get("machine", {})
    fig.suptitle(f"{backend} {report.get('version', '')} on {machine.get('cpu', '?')}, "
                 f"{machine.get('cores', '?')} cores", fontsize=10)
    fig.tight_layout()
    path = out / f"benchmarks-{backend}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "docs" / "img"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for backend in ORDER:
        path = Path(args.results) / f"{backend}.json"
        if path.exists():
            written = draw(backend, json.loads(path.read_text()), out)
            if written:
                print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
