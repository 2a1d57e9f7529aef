"""The conformance report: cases run on each target, tallied into a feature x backend matrix
(JSON, Markdown and the rows the command line prints)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pooladapt import dispatch
from pooladapt.conformance.cases import GRADIENT_DTYPES, INT_DTYPES, Case
from pooladapt.conformance.runner import reproducer, run_against, run_case

# Matrix row -> (conformance feature tags it gathers, capability of base.FEATURES or None).
ROWS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "max": (("mode:max",), "max"),
    "avg": (("mode:avg",), "avg"),
    "lp": (("mode:lp",), "lp"),
    "padding valid": (("padding:valid",), None),
    "padding same": (("padding:same",), "same"),
    "padding same_lower": (("padding:same_lower",), "same"),
    "padding symmetric": (("padding:int", "padding:per_dim"), "symmetric_padding"),
    "padding (low, high)": (("padding:pairs",), "asymmetric_padding"),
    "ceil_mode": (("ceil_mode",), "ceil_mode"),
    "dilation": (("dilation",), "dilation"),
    "count_include_pad": (("count_include_pad",), "count_include_pad"),
    "all-padding windows": (("all_padding", "window=padded_input"), None),
    "channels_first": (("layout:channels_first",), "channels_first"),
    "channels_last": (("layout:channels_last",), "channels_last"),
    "float16": (("dtype:float16",), "float16"),
    "bfloat16": (("dtype:bfloat16",), "bfloat16"),
    "float32": (("dtype:float32",), None),
    "float64": (("dtype:float64",), None),
    "integers": (tuple(f"dtype:{d}" for d in INT_DTYPES), "integers"),
    "NaN": (("nan",), "nan"),
    "inf, -0.0, subnormals": (("edge_values",), None),
    "ties": (("ties",), None),
    "indices": (("indices",), "indices"),
    "gradient": (("gradient",), "autograd"),
    **{f"gradient {d}": ((f"gradient:{d}",), None) for d in GRADIENT_DTYPES},
    "1-D": (("1d",), None),
    "2-D": (("2d",), None),
    "3-D": (("3d",), None),
    "global": (("global",), "global"),
    "adaptive": (("adaptive",), "adaptive"),
    "unpool": (("unpool",), "unpool"),
    "random cases (--fuzz)": (("fuzz",), None),
}

PASS, FAIL, KNOWN, NOT_APPLICABLE = "pass", "fail", "known", "n/a"


def _display_name(target: str) -> str:
    module, _, func = target.rpartition(":")
    return f"{Path(module).name}:{func}" if module.endswith(".py") else target


def reproducer_for(case: Case, target: str, grid_ids: set[str], against: bool) -> str:
    if against:
        return (f"python -c \"from pooladapt import conformance as c; "
                f"print(c.run_against(c.{case!r}, c.load_function({target!r})))\"")
    if case.id in grid_ids:
        return reproducer(case, target)
    return (f"python -c \"from pooladapt import conformance as c; "
            f"print(c.run_case(c.{case!r}, {target!r}))\"")


def _json_float(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _empty_rows() -> dict[str, dict[str, Any]]:
    return {row: {"passed": 0, "failed": 0, "known": 0, "not_applicable": 0,
                  "worst_error": 0.0} for row in ROWS}


def _tally(rows: dict[str, dict[str, Any]], case: Case, status: str, error: float) -> None:
    tags = set(case.features)
    for row, (row_tags, _) in ROWS.items():
        if tags.isdisjoint(row_tags):
            continue
        cell = rows[row]
        key = {PASS: "passed", FAIL: "failed", KNOWN: "known"}.get(status, "not_applicable")
        cell[key] += 1
        if status == FAIL:
            worst = cell["worst_error"]
            cell["worst_error"] = None if worst is None or not math.isfinite(error) or (
                error > 1e300) else max(worst, error)  # nan_to_num turns inf - x into 1.8e308


def run_conformance(targets: list[tuple[str, Any]], cases: list[Case], grid_ids: set[str],
                    meta: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """Run ``cases`` on each target -> the JSON report. A target is ``(backend name, None)``
    or ``(module:function, the function)`` for ``--against``."""
    report: dict[str, Any] = {"backends": {}}
    for target, fn in targets:
        against = fn is not None
        name = _display_name(target) if against else target
        be = None if against else dispatch.load(name).BACKEND
        entry: dict[str, Any] = {
            "kind": "function" if against else "backend",
            "version": None if be is None else be.version(),
            "passed": 0, "failed": 0, "known_deviations": 0, "not_applicable": 0,
            "capabilities": {} if be is None else dict(be.capabilities()),
            **meta,
            "rows": _empty_rows(), "failures": [], "deviations": [],
        }
        deviations = {} if be is None else dict(be.known_deviations)
        task = None if progress is None else progress.add_task(name, total=len(cases))
        for case in cases:
            if against:
                result = run_against(case, fn)
            elif case.gradient and not be.supports_autograd:
                result = None
            else:
                result = run_case(case, name)
            if result is None:
                status = NOT_APPLICABLE
            elif result.passed:
                status = PASS
            else:
                reason = next((deviations[f] for f in case.features if f in deviations), None)
                status = FAIL if reason is None else KNOWN
                record = {"case": case.id, "features": list(case.features),
                          "error": _json_float(result.error), "message": result.message,
                          "reproducer": reproducer_for(case, target, grid_ids, against)}
                if reason is None:
                    entry["failures"].append(record)
                else:
                    entry["deviations"].append({**record, "reason": reason})
            entry[{PASS: "passed", FAIL: "failed", KNOWN: "known_deviations"}.get(
                status, "not_applicable")] += 1
            _tally(entry["rows"], case if result is None else result.case, status,
                   0.0 if result is None else result.error)
            if task is not None:
                progress.advance(task)
        report["backends"][name] = entry
    return report


def merge_reports(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Merge conformance JSON reports; a later report's backend replaces an earlier one's."""
    merged: dict[str, Any] = {"backends": {}}
    for path in paths:
        data = json.loads(Path(path).read_text())
        if not isinstance(data.get("backends"), dict):
            raise ValueError(f"{path}: not a pooladapt conformance report (no 'backends')")
        merged["backends"].update(data["backends"])
    return merged


def _count(cell: dict[str, Any] | None) -> int:
    return 0 if not cell else sum(cell[k] for k in ("passed", "failed", "known",
                                                     "not_applicable"))


def _cell(entry: dict[str, Any], row: str, markup: bool) -> str:
    cell = entry["rows"].get(row)
    cap = ROWS[row][1]
    how = entry.get("capabilities", {}).get(cap) if cap else None

    def style(text: str, color: str) -> str:
        return f"[{color}]{text}[/]" if markup else text

    if cell is None or not (cell["passed"] or cell["failed"] or cell["known"]):
        if cell and cell["not_applicable"]:
            return style("n/a", "dim")
        return style("—", "dim")
    if cell["failed"]:
        worst = cell["worst_error"]
        text = style(f"FAIL {cell['failed']}", "bold red")
        text += f" (worst {worst:.2g})" if worst is not None else " (worst inf)"
    else:
        text = style(f"pass {cell['passed']}", "green")
    if cell["known"]:
        text += " " + style(f"+{cell['known']} known", "yellow")
    if how:
        text += " · " + (how if not markup else style(how, "dim"))
    return text


def matrix(report: dict[str, Any], markup: bool = True) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the feature x backend matrix."""
    names = list(report["backends"])
    body = []
    for row in ROWS:
        if not any(_count(report["backends"][n]["rows"].get(row)) for n in names):
            continue  # a row no case reached (e.g. gradient without --gradients)
        body.append([row, *(_cell(report["backends"][n], row, markup) for n in names)])
    totals = ["total"]
    for n in names:
        e = report["backends"][n]
        text = f"{e['passed']} passed, {e['failed']} failed"
        if e.get("known_deviations"):
            text += f", {e['known_deviations']} known"
        if e.get("not_applicable"):
            text += f", {e['not_applicable']} n/a"
        totals.append(text)
    body.append(totals)
    return ["feature", *names], body


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the matrix, then failures and known deviations."""
    header, rows = matrix(report, markup=False)
    lines = ["# Conformance: every backend against the oracle", "",
             "Generated by `nox -s conformance` (`pooladapt conformance --json`); each cell "
             "counts the cases carrying that feature. `native`/`emulated`: how the backend "
             "realises the feature (`pooladapt info`).", ""]
    lines.append("| backend | version | grid | random cases | gradients | generated |")
    lines.append("|---|---|---|---|---|---|")
    for name, e in report["backends"].items():
        lines.append(f"| {name} | {e.get('version') or '—'} | {e.get('grid', '—')} | "
                     f"{e.get('fuzz', 0)} (seed {e.get('seed', 0)}) | "
                     f"{'yes' if e.get('gradients') else 'no'} | {e.get('generated', '—')} |")
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    for name, e in report["backends"].items():
        for title, key in (("Failures", "failures"), ("Known deviations", "deviations")):
            if e.get(key):
                lines += ["", f"## {title}: {name}", "", *_listed(e[key])]
    return "\n".join(lines) + "\n"


SHOWN = 3  # cases named per cause in the markdown; the JSON lists every case


def _listed(entries: list[dict[str, Any]]) -> list[str]:
    """One line per cause (message and reason), naming its first cases and counting the rest."""
    causes: dict[str, list[str]] = {}
    for f in entries:
        reason = f.get("reason")
        why = f" ({reason})" if reason and reason not in f["message"] else ""
        causes.setdefault(f"{f['message']}{why}", []).append(f"`{f['case']}`")
    lines = []
    for cause, cases in causes.items():
        if len(cases) == 1:
            lines.append(f"- {cases[0]}: {cause}")
            continue
        more = f" and {len(cases) - SHOWN} more" if len(cases) > SHOWN else ""
        lines.append(f"- {len(cases)} cases, {', '.join(cases[:SHOWN])}{more}: {cause}")
    return lines


