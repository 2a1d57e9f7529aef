"""Draw the benchmark ratios (pooladapt / native, median wall time) from benchmarks/results/.

    python -m benchmarks.plot [--results DIR] [--out DIR]

One figure per backend, ``<out>/benchmarks-<backend>.png``: a bar per case (layout, dtype and
mode in the label), on a log scale around 1 (left of the line: pooladapt is faster). Cases with
a training step (``phase`` ``train``) are drawn beside the forward ones. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ORDER = ["numpy", "torch", "tensorflow", "jax", "mxnet"]


def ratios(report: dict) -> list[tuple[str, float]]:
    """(label, pooladapt / native) for every record that timed both."""
    rows = []
    for r in report["records"]:
        times = r.get("times", {})
        if "pooladapt" not in times or "native" not in times or not times["native"]["wall"]:
            continue
        layout = "NCHW" if r["format"] == "channels_first" else "NHWC"
        phase = r.get("phase", "forward")
        label = f"{r['case']} · {layout} · {r['dtype']} · {r['mode']} · {phase}"
        rows.append((label, times["pooladapt"]["wall"] / times["native"]["wall"]))
    return rows


def draw(backend: str, report: dict, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ratios(report)
    if not rows:
        return None
    labels, values = zip(*rows)
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.4))
    colors = ["#2a9d8f" if v <= 1.05 else "#e76f51" for v in values]
    ax.barh(range(len(rows)), values, color=colors)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    lo, hi = min(values), max(values)
    ax.set_xlim(min(0.5, lo / 1.3), max(2.0, hi * 1.3))
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}x", va="center", fontsize=6)
    machine = report.get("machine", {})
    ax.set_title(f"{backend} {report.get('version', '')}: pooladapt / native time "
                 f"({machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; "
                 f"< 1 is faster)", fontsize=9)
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
