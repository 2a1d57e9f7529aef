"""The speed-route switch and the import structure of the configuration."""

from __future__ import annotations

import ast
import dataclasses
import io
import os
import subprocess
import sys
import threading
import tokenize
from pathlib import Path

import numpy as np
import pytest

import pooladapt as pa
from pooladapt import config
from pooladapt.conformance import Case, compare, cotangent, expected_vjp, gradient_tolerance


@pytest.fixture(autouse=True)
def _clean():
    pa.set_speed_routes(None)
    yield
    pa.set_speed_routes(None)


def _in_python(code: str, env: str | None) -> subprocess.CompletedProcess:
    """Run code in a new Python with POOLADAPT_SPEED_ROUTES set to env (read at import)."""
    environ = {k: v for k, v in os.environ.items() if k != "POOLADAPT_SPEED_ROUTES"}
    if env is not None:
        environ["POOLADAPT_SPEED_ROUTES"] = env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ)


def test_routes_default_to_auto_and_follow_precedence():
    assert str(pa.get_speed_routes()) == "auto"
    assert config.take_route("r", True) and not config.take_route("r", False)
    pa.set_speed_routes("off")
    assert not config.take_route("a", True)
    with pa.speed_routes("on"):
        assert config.take_route("anything", False)
        with pa.speed_routes("auto"):
            assert not config.take_route("anything", False)
        assert config.take_route("anything", False)
    assert str(pa.get_speed_routes()) == "off"


def test_the_environment_sets_the_default_under_the_process_and_block_settings():
    code = ("import pooladapt as pa; from pooladapt import config as c\n"
            "print(pa.get_speed_routes(), c.take_route('a', False), c.take_route('z', True))\n"
            "pa.set_speed_routes('off'); print(pa.get_speed_routes())\n"
            "with pa.speed_routes('auto'): print(pa.get_speed_routes())\n")
    out = _in_python(code, "on:a,b")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["on:a,b", "True", "False", "off", "auto"]
    assert _in_python(code, None).stdout.split()[0] == "auto"


def test_a_block_is_per_thread():
    seen = []
    with pa.speed_routes("off"):
        worker = threading.Thread(target=lambda: seen.append(str(pa.get_speed_routes())))
        worker.start()
        worker.join()
    assert seen == ["auto"]


def test_forcing_records_the_route_taken():
    config.routes_taken.discard("some.route")
    with pa.speed_routes("on", only=["some.route"]):
        assert config.take_route("some.route", False)
        assert not config.take_route("other.route", True)
    assert "some.route" in config.routes_taken and "other.route" not in config.routes_taken


@pytest.mark.parametrize("bad, error, match", [
    (("fast",), ValueError, "mode must be one of"),
    (("off", "a"), ValueError, "needs mode 'on'"),
    (("on", [1]), TypeError, "route name"),
    (("on", []), TypeError, "route name"),
])
def test_bad_settings_are_rejected(bad, error, match):
    with pytest.raises(error, match=match), pa.speed_routes(*bad):
        pass


def test_a_bad_environment_value_names_the_variable_when_used():
    out = _in_python("import pooladapt as pa; pa.get_speed_routes()", "sometimes")
    assert out.returncode != 0 and "POOLADAPT_SPEED_ROUTES" in out.stderr
    assert _in_python("import pooladapt", "sometimes").returncode == 0  # import still works


@pytest.mark.parametrize("setting", ["auto", "off", "on"])
def test_every_setting_gives_the_same_numbers_on_numpy(setting):
    x = np.random.default_rng(0).standard_normal((2, 9, 8, 3)).astype(np.float32)
    want = pa.pool2d(x, "max", 3, 2, "same")
    with pa.speed_routes(setting):
        assert np.array_equal(pa.pool2d(x, "max", 3, 2, "same"), want)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the pooladapt modules it imports anywhere in its source (function bodies
    included: a deferred import still ties two modules together; ``if TYPE_CHECKING:``
    blocks, which never run, left out)."""
    root = Path(pa.__file__).parent
    names = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
             for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        deps: set[str] = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pooladapt"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & names
                deps.update(subs or {node.module})
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("pooladapt"))
        graph[module.removesuffix(".__init__")] = deps
    return graph


def test_the_package_has_no_import_cycle():
    graph = _import_graph()
    assert {"pooladapt.config", "pooladapt.layouts"} <= graph["pooladapt.spec"]
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dep in graph.get(module, ()):
            visit(dep, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


# ------------------------------------------------------------- each backend's translation

TRANSLATION_LIMIT = 150  # code lines of a backend's translate.py (docs/architecture.md)


def _code_lines(source: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    docs: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            docs.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docs)
    return len(lines)


def test_code_lines_skip_docstrings_comments_and_blanks():
    source = ('"""Module\ndocstring."""\n\nimport math  # a comment\n\n\n'
              'def f(x):\n    """Doc."""\n    # only a comment\n    return (x +\n'
              '            math.pi)\n')
    assert _code_lines(source) == 4  # import, def, and the two lines of the return


@pytest.mark.parametrize("path", sorted(
    (Path(pa.__file__).parent / "backends").glob("*/translate.py")), ids=lambda p: p.parent.name)
def test_each_translation_reads_in_one_sitting(path):
    assert _code_lines(path.read_text()) <= TRANSLATION_LIMIT, (
        f"{path}: move speed routes to fast.py, workarounds to quirks.py")


# ------------------------------------------------------- the gradient tolerance of every dtype

# avg 3x3 stride 1 over a 1x1x4x4 float16 input: the centre cells are read by 9 windows
_AVG = Case("pool", 2, (("mode", "avg"), ("window", 3), ("stride", 1), ("padding", 1),
                        ("data_format", "channels_first")), (4, 4), "float16", batch=(1, 1),
            gradient=True)
_MAX = Case("pool", 2, (("mode", "max"), ("window", 2), ("stride", 1),
                        ("data_format", "channels_first")), (3, 3), "float16", batch=(1, 1),
            gradient=True)


def _avg_input():
    x = np.arange(16, dtype=np.float16).reshape(1, 1, 4, 4) / 8
    return x, cotangent(_AVG, (1, 1, 4, 4))


def test_a_float16_accumulation_passes():
    x, g = _avg_input()
    want = expected_vjp(_AVG, x, g)
    # each window's share g / 9 rounded to float16, summed in float16: a real backend's error
    got = np.zeros((4, 4), np.float16)
    for i in range(4):
        for j in range(4):
            rows, cols = range(max(0, i - 1), min(4, i + 2)), range(max(0, j - 1), min(4, j + 2))
            share = np.float16(g[0, 0, i, j] / np.float16(len(rows) * len(cols)))
            for a in rows:
                for b in cols:
                    got[a, b] = np.float16(got[a, b] + share)
    ok, _, msg = compare(_AVG, want, got.reshape(1, 1, 4, 4), "gradient",
                         gradient_tolerance(_AVG, x, g))
    assert ok, msg


def test_a_wrong_divisor_fails_in_float16():
    x, g = _avg_input()
    want = expected_vjp(_AVG, x, g)
    cip = Case(_AVG.kind, 2, (*_AVG.args, ("count_include_pad", True)), (4, 4), "float16",
               batch=(1, 1), gradient=True)  # divides the border windows by 9, not 4 or 6
    got = expected_vjp(cip, x, g).astype(np.float16)
    ok, _, _ = compare(_AVG, want, got, "gradient", gradient_tolerance(_AVG, x, g))
    assert not ok


def test_a_gradient_sent_to_the_wrong_tie_fails_in_float16():
    x = np.ones((1, 1, 3, 3), np.float16)  # every window a tie: the first cell wins
    g = cotangent(_MAX, (1, 1, 2, 2), seed=1)
    g[g == 0] = 1
    want = expected_vjp(_MAX, x, g)
    got = np.zeros_like(want)
    got[0, 0, :2, :2] = g[0, 0]  # first cell of each window: right
    ok, _, msg = compare(_MAX, want, got.astype(np.float16), "gradient",
                         gradient_tolerance(_MAX, x, g))
    assert ok, msg
    got = np.zeros_like(want)
    got[0, 0, 1:, 1:] = g[0, 0]  # last cell of each window: wrong
    ok, _, _ = compare(_MAX, want, got.astype(np.float16), "gradient",
                       gradient_tolerance(_MAX, x, g))
    assert not ok


def test_a_gradient_of_another_dtype_fails():
    x, g = _avg_input()
    want = expected_vjp(_AVG, x, g)
    ok, _, msg = compare(_AVG, want, want.astype(np.float32), "gradient",
                         gradient_tolerance(_AVG, x, g))
    assert not ok and "dtype" in msg


# ------------------------------------------------------- a backend's tuning


@dataclasses.dataclass(frozen=True)
class _Thresholds(config.Tuning):
    cells: int = 16
    channels: int = 8


def test_a_tuning_slot_changes_thresholds_in_a_block_only():
    slot = config.TuningSlot("test", _Thresholds())
    assert slot.get() == _Thresholds(16, 8)
    with slot.tuned(cells=4) as inside:
        assert slot.get() is inside and (inside.cells, inside.channels) == (4, 8)
        seen = []
        worker = threading.Thread(target=lambda: seen.append(slot.get().cells))
        worker.start()
        worker.join()
        assert seen == [16]  # per thread
    assert slot.get().cells == 16


@pytest.mark.parametrize("changes, error, match", [
    (dict(cells=-1), ValueError, r"_Thresholds.cells must be >= 0, got -1"),
    (dict(cells=2.5), TypeError, r"_Thresholds.cells must be an int, got float 2.5"),
    (dict(cells=True), TypeError, "must be an int, got bool"),
    (dict(rows=3), TypeError, "rows"),
])
def test_bad_thresholds_are_rejected(changes, error, match):
    slot = config.TuningSlot("test", _Thresholds())
    with pytest.raises(error, match=match), slot.tuned(**changes):
        pass
