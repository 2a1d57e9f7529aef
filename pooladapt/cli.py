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
import datetime
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import pooladapt
from pooladapt import config, conformance, dispatch
from pooladapt.backends.base import FEATURES, NATIVE
from pooladapt.spec import make_spec


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


# ---------------------------------------------------------------------------- conformance


def _print_report(out: Any, report: dict[str, Any], show: int) -> None:
    from rich.markup import escape
    from rich.table import Table

    header, rows = conformance.matrix(report)
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
        report = conformance.merge_reports(args.merge)
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
        targets += [(t, conformance.load_function(t)) for t in args.against or []]
        dtypes = _dtypes(args.dtypes)
        grid = conformance.grid(args.grid, dtypes=dtypes)
        if not args.gradients:
            grid = [c for c in grid if not c.gradient]
        cases = grid + conformance.random_cases(args.fuzz, args.seed, dtypes, args.gradients)
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
                report = conformance.run_conformance(targets, cases, grid_ids, meta, progress)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(conformance.render_markdown(report))
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
