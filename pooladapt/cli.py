"""The ``pooladapt`` command line: ``info``, ``pool`` and ``conformance``.

::

    pooladapt info                                  # backends found, native/emulated features
    pooladapt pool photo.jpg --mode max --window 3 --stride 2 --padding 1 --out small.png
    pooladapt conformance --grid quick --fuzz 200   # every installed backend vs the oracle
    pooladapt conformance --against mykernels:maxpool   # your own implementation

``--against module:function`` checks a user's pooling function with the same cases. The
calling convention::

    def my_pool(x: np.ndarray, spec: pooladapt.PoolSpec) -> np.ndarray | tuple[np.ndarray, ...]

``x`` is the case's input (batch + channels + spatial dims in ``spec.data_format``, of the
case's dtype); ``spec`` the validated arguments (``spec.plan(x.shape)`` resolves padding,
ceil mode and the output size). Return the pooled array of ``x``'s dtype; when
``spec.return_indices``, return ``(values, indices)`` to have the indices checked too (a bare
array is checked as the values alone). Raise ``NotImplementedError`` for a feature you do
not support: that case counts as not applicable, not as a failure. Only plain pooling cases
(``kind == "pool"``) are run; global, adaptive, unpool and gradient cases are not applicable.
``module`` is an importable module name or a path to a ``.py`` file.

The rich and Pillow dependencies come with ``pip install 'pooladapt[cli]'``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.util
import json
import math
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import pooladapt
from pooladapt import config, conformance, dispatch
from pooladapt.backends.base import FEATURES, NATIVE
from pooladapt.conformance import PADDINGS, Case, Result
from pooladapt.spec import make_spec

# ---------------------------------------------------------------------------- the matrix rows

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
    "integers": (tuple(f"dtype:{d}" for d in conformance.INT_DTYPES), "integers"),
    "NaN": (("nan",), "nan"),
    "inf, -0.0, subnormals": (("edge_values",), None),
    "ties": (("ties",), None),
    "indices": (("indices",), "indices"),
    "gradient": (("gradient",), "autograd"),
    **{f"gradient {d}": ((f"gradient:{d}",), None) for d in conformance.GRADIENT_DTYPES},
    "1-D": (("1d",), None),
    "2-D": (("2d",), None),
    "3-D": (("3d",), None),
    "global": (("global",), "global"),
    "adaptive": (("adaptive",), "adaptive"),
    "unpool": (("unpool",), "unpool"),
    "random cases (--fuzz)": (("fuzz",), None),
}

PASS, FAIL, KNOWN, NOT_APPLICABLE = "pass", "fail", "known", "n/a"


def _rich():
    try:
        import rich  # noqa: F401
    except ImportError as err:
        raise SystemExit(
            "the pooladapt command line needs 'rich' (and 'pillow' for `pool`): "
            "pip install 'pooladapt[cli]'") from err
    from rich.console import Console

    return Console(highlight=False), Console(stderr=True, highlight=False)


# ---------------------------------------------------------------------------- info


def _backend_status(name: str) -> tuple[Any | None, str]:
    """(BACKEND or None, version or why it is missing)."""
    try:
        be = dispatch.load(name).BACKEND
    except ImportError as err:
        if "which is not installed" in str(err):
            return None, f"not installed: {dispatch.PIP_EXTRAS[name]}"
        return None, f"unavailable: {err}"
    except Exception as err:  # e.g. a framework built against another NumPy
        return None, f"broken install: {type(err).__name__}: {err}"
    return be, be.version()


def cmd_info(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    out, _ = _rich()
    names = [config.normalize_backend_name(args.backend)] if args.backend else list(
        dispatch.BACKENDS)
    out.print(f"pooladapt {pooladapt.__version__}, Python {platform.python_version()}, "
              f"NumPy {np.__version__}; NumPy input goes to backend "
              f"[bold]{config.get_backend()}[/] (POOLADAPT_BACKEND / --backend)")
    table = Table(title="Backends")
    table.add_column("backend")
    table.add_column("framework")
    table.add_column("version or how to install")
    found = {}
    for name in names:
        be, text = _backend_status(name)
        if be is not None:
            found[name] = be
            table.add_row(name, dispatch.FRAMEWORK_MODULES[name], f"[green]{escape(text)}[/]")
        else:
            table.add_row(name, dispatch.FRAMEWORK_MODULES[name], f"[yellow]{escape(text)}[/]")
    out.print(table)
    if not found:
        return 1 if args.backend else 0
    caps = Table(title="Features: native or emulated")
    caps.add_column("feature")
    for name in found:
        caps.add_column(name)
    capabilities = {name: be.capabilities() for name, be in found.items()}
    for feature in FEATURES:
        cells = []
        for name in found:
            how = capabilities[name].get(feature)
            cells.append("[dim]—[/]" if how is None else
                         f"[green]{how}[/]" if how == NATIVE else f"[yellow]{how}[/]")
        caps.add_row(feature, *cells)
    out.print(caps)
    out.print("[dim]native: the framework's own op; emulated: exact, from several ops; "
              "—: not available[/]")
    return 0


# ---------------------------------------------------------------------------- pool


def _ints(text: str, what: str) -> int | tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what} must be an int or comma-separated ints like 2,3, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _padding(text: str) -> Any:
    if text.strip().lower() in ("valid", "same", "same_upper", "same_lower"):
        return text.strip().lower()
    if ":" in text:  # low:high per dim, e.g. 0:1,1:1
        try:
            return tuple(tuple(int(v) for v in pair.split(":")) for pair in text.split(","))
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(
            f"padding pairs are written low:high per dim, e.g. 0:1,1:1, got {text!r}")
    return _ints(text, "padding")


def load_image(path: str | Path) -> tuple[np.ndarray, str]:
    """An image file as a (1, H, W, C) float32 array and the Pillow mode to save it back in."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("L", "LA", "RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        mode = img.mode
        array = np.asarray(img, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    return array[None], mode


def save_image(array: np.ndarray, mode: str, path: str | Path) -> None:
    """Save a (1, H, W, C) array, rounded and clipped to 0..255, as an 8-bit image."""
    from PIL import Image

    pixels = np.clip(np.rint(np.nan_to_num(np.asarray(array[0], np.float64))), 0, 255)
    pixels = pixels.astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = pixels[:, :, 0]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)


def cmd_pool(args: argparse.Namespace) -> int:
    out, _ = _rich()
    x, mode = load_image(args.image)
    kwargs: dict[str, Any] = dict(window=args.window, stride=args.stride, padding=args.padding,
                                  dilation=args.dilation, ceil_mode=args.ceil_mode,
                                  data_format="channels_last")
    if args.count_include_pad:
        kwargs["count_include_pad"] = True
    if args.p is not None:
        kwargs["p"] = args.p
    spec = make_spec(args.mode, **kwargs, ndim=2)  # validated before any work
    backend = args.backend or config.get_backend()
    y = pooladapt.pool2d(x, spec.mode, **kwargs, backend=backend)
    save_image(y, mode, args.out)
    out.print(f"{args.image}: {x.shape[1]}x{x.shape[2]}x{x.shape[3]} -> "
              f"{y.shape[1]}x{y.shape[2]}x{y.shape[3]} ({spec.mode}, window {spec.window}, "
              f"stride {spec.stride}, padding {spec.padding!r}, backend {backend}) -> {args.out}")
    return 0


# ---------------------------------------------------------------------------- random cases


def fuzz_cases(n: int, seed: int = 0, dtypes: Sequence[str] | None = None,
               gradients: bool = False) -> list[Case]:
    """``n`` random pooling cases drawn from ``seed`` (NumPy's Generator), each valid.

    Mode, window, stride, dilation, padding form, ceil_mode, count_include_pad, layout, dtype,
    input values, rank and sizes are drawn independently; a draw the spec rejects (e.g. a
    window larger than the padded input) is skipped. With ``gradients`` about a third are
    gradient cases, in the float dtypes among ``dtypes``.
    """
    rng = np.random.default_rng(seed)
    dtypes = tuple(dtypes or conformance.available_dtypes())
    floats = [d for d in dtypes if d in conformance.FLOAT_DTYPES]
    cases: list[Case] = []
    for _ in range(50 * n + 100):
        if len(cases) >= n:
            break
        case = _draw_case(rng, dtypes, floats, gradients)
        if case is not None:
            cases.append(case)
    return cases


def _draw_case(rng: np.random.Generator, dtypes, floats, gradients: bool) -> Case | None:
    def pick(options):
        return options[int(rng.integers(len(options)))]

    ndim = int(rng.integers(1, 4))
    mode = pick(("max", "avg", "lp"))
    window = tuple(int(k) for k in rng.integers(1, 5 if ndim < 3 else 4, size=ndim))
    args: dict[str, Any] = dict(mode=mode, window=window)
    if rng.random() < 0.7:
        args["stride"] = tuple(int(s) for s in rng.integers(1, 4, size=ndim))
    if rng.random() < 0.35:
        args["dilation"] = tuple(int(d) for d in rng.integers(1, 3, size=ndim))
    pad_name = pick(tuple(PADDINGS))
    if pad_name in ("valid", "same", "same_lower"):
        args["padding"] = pad_name
    elif pad_name == "int":
        args["padding"] = int(rng.integers(0, min(window)))
    elif pad_name == "per_dim":
        args["padding"] = tuple(int(rng.integers(0, k)) for k in window)
    else:
        args["padding"] = tuple((int(rng.integers(0, k)), int(rng.integers(0, k)))
                                for k in window)
    args["ceil_mode"] = bool(rng.random() < 0.4)
    fmt = pick(("channels_first", "channels_last"))
    args["data_format"] = fmt
    gradient = gradients and bool(floats) and rng.random() < 1 / 3
    if mode == "avg":
        args["count_include_pad"] = bool(rng.random() < 0.5)
    if mode == "max" and not gradient and rng.random() < 0.5:
        args["return_indices"] = True
    if mode == "lp":
        args["p"] = pick((1.0, 1.5, 2.0, 3.0))
    if gradient:
        dtype, values = pick(floats), pick(("normal", "negative", "ties"))
    else:
        dtype = pick(dtypes if mode == "max" else floats)
        values = ("int" if dtype in conformance.INT_DTYPES else
                  pick(("normal", "normal", "negative", "ties", "nan", "extremes")))
        if dtype in conformance.INT_DTYPES and rng.random() < 0.3:
            values = "extremes"
    extent = [d * (k - 1) + 1 for k, d in zip(window, args.get("dilation", (1,) * ndim))]
    spatial = tuple(max(1, e + int(rng.integers(-2, 6 if ndim < 3 else 4))) for e in extent)
    batch = (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
    case = Case("pool", ndim, tuple(args.items()), spatial, dtype, values, batch, gradient)
    try:
        make_spec(**args, ndim=ndim).plan(case.shape())
    except (ValueError, TypeError):
        return None
    features = ["fuzz", f"{ndim}d", f"padding:{pad_name}", f"layout:{fmt}", f"mode:{mode}",
                f"dtype:{dtype}"]
    features += [tag for tag, on in (
        ("ceil_mode", args["ceil_mode"]), ("dilation", "dilation" in args),
        ("count_include_pad", args.get("count_include_pad", False)),
        ("indices", args.get("return_indices", False)), ("ties", values == "ties"),
        ("nan", values == "nan"), ("edge_values", values == "extremes"),
        ("gradient", gradient), (f"gradient:{dtype}", gradient)) if on]
    return Case("pool", ndim, tuple(args.items()), spatial, dtype, values, batch, gradient,
                features=tuple(features))


# ---------------------------------------------------------------------------- --against


def load_function(target: str) -> Callable[..., Any]:
    """``module:function`` (a module name or a path to a .py file) -> the function."""
    module_name, sep, func_name = target.rpartition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(f"--against expects module:function (e.g. mykernels:maxpool or "
                         f"path/to/file.py:maxpool), got {target!r}")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"--against: no such file {module_name!r}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))  # as `python -m` would
        module = importlib.import_module(module_name)
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise ValueError(f"--against: {module_name!r} has no function {func_name!r}")
    return fn


def run_against(case: Case, fn: Callable[..., Any]) -> Result | None:
    """Run one case on a user function (calling convention in the module docstring);
    None when the case does not apply or the function raised NotImplementedError."""
    if case.kind != "pool" or case.gradient:
        return None
    x = case.make_input()
    spec = make_spec(**case.kwargs, ndim=case.ndim)
    want = conformance.expected(case, x)
    try:
        got = fn(x.copy(), spec)
    except NotImplementedError:
        return None
    except Exception as err:  # a crash is a failure, reported with its message
        return Result(case, "", False, math.inf, f"{type(err).__name__}: {err}")
    if spec.return_indices and not isinstance(got, tuple):
        # values only: check them, and do not count the case as an indices check
        case = dataclasses.replace(case, features=tuple(
            f for f in case.features if f != "indices"))
        want = want[0]
    elif spec.return_indices:
        if len(got) != 2:
            return Result(case, "", False, math.inf,
                          "return_indices is set: expected values or (values, indices)")
        with np.errstate(all="ignore"):
            ok1, e1, m1 = conformance.compare(case, want[0], got[0])
            ok2, e2, m2 = conformance.compare(case, want[1], got[1], "indices")
        return Result(case, "", ok1 and ok2, max(e1, e2), "; ".join(m for m in (m1, m2) if m))
    with np.errstate(all="ignore"):
        ok, err, msg = conformance.compare(case, want, got)
    return Result(case, "", ok, err, msg)


# ---------------------------------------------------------------------------- conformance


def _display_name(target: str) -> str:
    module, _, func = target.rpartition(":")
    return f"{Path(module).name}:{func}" if module.endswith(".py") else target


def _reproducer(case: Case, target: str, grid_ids: set[str], against: bool) -> str:
    if against:
        return (f"python -c \"from pooladapt import cli, conformance as c; "
                f"print(cli.run_against(c.{case!r}, cli.load_function({target!r})))\"")
    if case.id in grid_ids:
        return conformance.reproducer(case, target)
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
                result = conformance.run_case(case, name)
            if result is None:
                status = NOT_APPLICABLE
            elif result.passed:
                status = PASS
            else:
                reason = next((deviations[f] for f in case.features if f in deviations), None)
                status = FAIL if reason is None else KNOWN
                record = {"case": case.id, "features": list(case.features),
                          "error": _json_float(result.error), "message": result.message,
                          "reproducer": _reproducer(case, target, grid_ids, against)}
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
                lines += ["", f"## {title}: {name}", ""]
                for f in e[key]:
                    why = f" ({f['reason']})" if "reason" in f else ""
                    lines.append(f"- `{f['case']}`: {f['message']}{why}")
    return "\n".join(lines) + "\n"


def _print_report(out: Any, report: dict[str, Any], show: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    header, rows = matrix(report)
    table = Table(title="pooladapt conformance: backends against the oracle")
    for col in header:
        table.add_column(col)
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=(i == len(rows) - 2))
    out.print(table)
    for name, entry in report["backends"].items():
        for dev in entry["deviations"][:show]:
            out.print(f"[yellow]known deviation[/] {name}: {escape(dev['case'])}: "
                      f"{escape(dev['reason'])}", soft_wrap=True)
        failures = entry["failures"]
        for f in failures[:show]:
            out.print(f"[bold red]FAIL[/] {name}: {escape(f['case'])}: {escape(f['message'])}",
                      soft_wrap=True)
            out.print(f"  reproduce: {f['reproducer']}", soft_wrap=True, markup=False)
        if len(failures) > show:
            out.print(f"... and {len(failures) - show} more failures on {name} "
                      f"(all of them in --json; --show N prints more)")


def _dtypes(text: str | None) -> tuple[str, ...]:
    """``--dtypes``: comma-separated names, each known and available here."""
    available = conformance.available_dtypes()
    if text is None:
        return available
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    known = conformance.FLOAT_DTYPES + conformance.INT_DTYPES
    for name in names:
        if name not in known:
            raise ValueError(f"--dtypes: unknown dtype {name!r}; expected some of {known}")
        if name not in available:
            raise ValueError(f"--dtypes: {name} arrays need the ml_dtypes package here")
    if not names:
        raise ValueError(f"--dtypes: expected some of {known}, got {text!r}")
    return names


def cmd_conformance(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    out, err = _rich()
    if args.merge:
        report = merge_reports(args.merge)
    else:
        targets: list[tuple[str, Any]] = []
        names = []
        for text in [*(args.backends or []), *([args.backend] if args.backend else [])]:
            names += [config.normalize_backend_name(n) for n in text.split(",") if n.strip()]
        if not names and not args.against:
            names = dispatch.available_backends()
        for name in dict.fromkeys(names):
            be, why = _backend_status(name)
            if be is None:
                raise ValueError(f"backend {name!r} is {why}")
            targets.append((name, None))
        targets += [(t, load_function(t)) for t in args.against or []]
        dtypes = _dtypes(args.dtypes)
        grid = conformance.grid(args.grid, dtypes=dtypes)
        if not args.gradients:
            grid = [c for c in grid if not c.gradient]
        cases = grid + fuzz_cases(args.fuzz, args.seed, dtypes, args.gradients)
        meta = {"grid": args.grid, "fuzz": args.fuzz, "seed": args.seed,
                "gradients": bool(args.gradients), "cases": len(cases),
                "dtypes": list(dtypes), "speed_routes": args.speed_routes,
                "pooladapt": pooladapt.__version__, "python": platform.python_version(),
                "platform": platform.platform(),
                "generated": datetime.date.today().isoformat()}
        grid_ids = {c.id for c in conformance.grid("full")}
        with Progress(TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
                      console=err, transient=True) as progress:
            mode, _, only = args.speed_routes.partition(":")
            with config.speed_routes(mode, only=only.split(",") if only else None):
                report = run_conformance(targets, cases, grid_ids, meta, progress)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(render_markdown(report))
    _print_report(out, report, args.show)
    failed = sum(e["failed"] for e in report["backends"].values())
    out.print(f"[bold red]{failed} failures[/]" if failed else "[green]no failures[/]")
    return 1 if failed else 0


# ---------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", help="backend for NumPy input (numpy, torch, tensorflow, "
                        "jax, mxnet); default: POOLADAPT_BACKEND, else numpy")
    parser = argparse.ArgumentParser(
        prog="pooladapt", description="Pooling with one meaning across NumPy, PyTorch, "
        "TensorFlow, JAX/Flax and MXNet.")
    parser.add_argument("--version", action="version", version=pooladapt.__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", parents=[common],
                          help="backends found, versions, native/emulated features")
    info.set_defaults(run=cmd_info)

    pool = sub.add_parser("pool", parents=[common], help="pool a picture and save it")
    pool.add_argument("image", help="input image (anything Pillow reads)")
    pool.add_argument("--mode", choices=("max", "avg", "lp"), default="max")
    pool.add_argument("--window", type=lambda t: _ints(t, "window"), default=2,
                      help="int or H,W (default 2)")
    pool.add_argument("--stride", type=lambda t: _ints(t, "stride"), default=None,
                      help="int or H,W (default: the window)")
    pool.add_argument("--padding", type=_padding, default="valid",
                      help="valid, same, same_lower, int, H,W or low:high pairs like 0:1,1:1")
    pool.add_argument("--dilation", type=lambda t: _ints(t, "dilation"), default=1)
    pool.add_argument("--ceil-mode", action="store_true")
    pool.add_argument("--count-include-pad", action="store_true", help="avg only")
    pool.add_argument("--p", type=float, default=None, help="lp only (default 2)")
    pool.add_argument("--out", required=True, help="output image, e.g. out.png")
    pool.set_defaults(run=cmd_pool)

    conf = sub.add_parser(
        "conformance", parents=[common],
        help="every selected backend (or your function) against the oracle",
        description="Run the conformance grid (and random cases) against the oracle and print "
        "the feature x backend matrix. Exit status 1 on any failure. --against module:function "
        "checks your own pooling function: fn(x: np.ndarray, spec: pooladapt.PoolSpec) -> "
        "np.ndarray (or (values, indices) when spec.return_indices, to check the indices too); "
        "raise NotImplementedError for unsupported features.")
    conf.add_argument("--backends", action="append",
                      help="comma-separated backends (default: every installed one)")
    conf.add_argument("--grid", choices=("quick", "full"), default="full")
    conf.add_argument("--fuzz", type=int, default=0, metavar="N",
                      help="also run N random cases drawn from --seed")
    conf.add_argument("--seed", type=int, default=0)
    conf.add_argument("--gradients", action="store_true",
                      help="include gradient cases (backends with autograd)")
    conf.add_argument("--dtypes", metavar="LIST",
                      help="comma-separated dtypes of the cases, forward and gradient (e.g. "
                           "float32,float16,bfloat16); default: every dtype available here")
    conf.add_argument("--speed-routes", default="auto", metavar="SETTING",
                      help="auto (default), off, on, or on:ROUTE,ROUTE to force those routes "
                           "(see pooladapt.speed_routes)")
    conf.add_argument("--against", action="append", metavar="MODULE:FUNCTION",
                      help="check your own pooling function (see --help text above)")
    conf.add_argument("--json", metavar="OUT", help="write the report as JSON")
    conf.add_argument("--markdown", metavar="OUT", help="write the matrix as Markdown")
    conf.add_argument("--merge", nargs="+", metavar="JSON",
                      help="merge earlier --json reports instead of running (later wins)")
    conf.add_argument("--show", type=int, default=20, metavar="N",
                      help="failures to print per backend (default 20)")
    conf.set_defaults(run=cmd_conformance)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pooladapt`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, ImportError, OSError) as err:
        print(f"pooladapt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
