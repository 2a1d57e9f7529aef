"""The ``pooladapt`` command line: info, pool (pixels checked by hand) and conformance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pooladapt import cli, conformance, dispatch

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("rich")

BUGGY = Path(__file__).resolve().parents[2] / "examples" / "buggy_zero_pad_maxpool.py"

# A 4x4 grey picture: row r, column c holds 10 * (4r + c + 1).
GREY = np.array([[10, 20, 30, 40], [50, 60, 70, 80], [90, 100, 110, 120],
                 [130, 140, 150, 160]], dtype=np.uint8)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich tables unwrapped, whatever the terminal


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------- info


def test_info_lists_numpy_with_version_and_features(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("│ numpy "))
    assert [cell.strip() for cell in row.split("│")[1:4]] == ["numpy", "numpy", np.__version__]
    assert "asymmetric_padding" in out and "native" in out
    for name in set(dispatch.BACKENDS) - set(dispatch.available_backends()):
        extra = dispatch.PIP_EXTRAS[name].split()[2]  # 'pooladapt[onnx]' (a line may wrap)
        assert extra.startswith("'pooladapt[") and extra in out  # missing ones name their extra


def test_info_for_one_backend(capsys):
    code, out, _ = run(capsys, "info", "--backend", "numpy")
    assert code == 0
    assert "numpy" in out and "tensorflow" not in out


# ---------------------------------------------------------------------------- pool


def pool_picture(capsys, tmp_path, picture: np.ndarray, *args: str) -> np.ndarray:
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(picture).save(src)
    code, out, err = run(capsys, "pool", str(src), *args, "--out", str(dst))
    assert code == 0, err
    assert str(dst) in out
    with Image.open(dst) as img:
        return np.asarray(img)


def test_pool_max_and_avg_grey(capsys, tmp_path):
    got = pool_picture(capsys, tmp_path, GREY, "--mode", "max", "--window", "2")
    np.testing.assert_array_equal(got, [[60, 80], [140, 160]])
    got = pool_picture(capsys, tmp_path, GREY, "--mode", "avg", "--window", "2")
    # (10+20+50+60)/4, (30+40+70+80)/4, (90+100+130+140)/4, (110+120+150+160)/4
    np.testing.assert_array_equal(got, [[35, 55], [115, 135]])


def test_pool_padding_stride_and_count_include_pad(capsys, tmp_path):
    # window 3, stride 2, padding 1: windows cover rows/cols {0,1} and {1,2,3}
    got = pool_picture(capsys, tmp_path, GREY, "--mode", "avg", "--window", "3",
                       "--stride", "2", "--padding", "1")
    # means of the real cells: 140/4, 300/6, 570/6, 990/9
    np.testing.assert_array_equal(got, [[35, 50], [95, 110]])
    got = pool_picture(capsys, tmp_path, GREY, "--mode", "avg", "--window", "3",
                       "--stride", "2", "--padding", "1", "--count-include-pad")
    # the same sums over 9 cells, rounded: 15.6, 33.3, 63.3, 110
    np.testing.assert_array_equal(got, [[16, 33], [63, 110]])


def test_pool_rgb_keeps_channels(capsys, tmp_path):
    rgb = np.stack([GREY, 255 - GREY, np.full_like(GREY, 7)], axis=-1)
    got = pool_picture(capsys, tmp_path, rgb, "--mode", "max", "--window", "3",
                       "--stride", "2", "--padding", "1")
    assert got.shape == (2, 2, 3)
    np.testing.assert_array_equal(got[..., 0], [[60, 80], [140, 160]])
    # 255 - the smallest grey value of each window: 10, 20, 50, 60
    np.testing.assert_array_equal(got[..., 1], [[245, 235], [205, 195]])
    np.testing.assert_array_equal(got[..., 2], [[7, 7], [7, 7]])


def test_pool_lp_is_clipped_to_255(capsys, tmp_path):
    got = pool_picture(capsys, tmp_path, GREY, "--mode", "lp", "--window", "2")
    # sqrt(6600)=81.2, sqrt(13800)=117.5, sqrt(54600)=233.7, sqrt(74600)=273.1 -> 255
    np.testing.assert_array_equal(got, [[81, 117], [234, 255]])


def test_pool_rejects_a_window_larger_than_the_picture(capsys, tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(GREY).save(src)
    code, _, err = run(capsys, "pool", str(src), "--window", "9", "--out",
                       str(tmp_path / "out.png"))
    assert code == 2
    assert "window" in err and "larger than the padded input" in err
    assert not (tmp_path / "out.png").exists()


# ---------------------------------------------------------------------------- conformance


def test_conformance_quick_grid_on_numpy(capsys, tmp_path):
    report, md = tmp_path / "r.json", tmp_path / "r.md"
    code, out, _ = run(capsys, "conformance", "--backends", "numpy", "--grid", "quick",
                       "--json", str(report), "--markdown", str(md))
    assert code == 0
    data = json.loads(report.read_text())
    entry = data["backends"]["numpy"]
    cases = [c for c in conformance.grid("quick", dtypes=conformance.available_dtypes())
             if not c.gradient]
    assert entry["version"] == np.__version__
    assert (entry["passed"], entry["failed"], entry["failures"]) == (len(cases), 0, [])
    assert "no failures" in out and "padding (low, high)" in out
    assert "| feature | numpy |" in md.read_text()


def test_gradient_cases_are_not_applicable_without_autograd(capsys, tmp_path):
    report = tmp_path / "r.json"
    code, out, _ = run(capsys, "conformance", "--backend", "numpy", "--grid", "quick",
                       "--gradients", "--json", str(report))
    assert code == 0
    entry = json.loads(report.read_text())["backends"]["numpy"]
    n_grad = sum(c.gradient for c in conformance.grid("quick"))
    assert n_grad > 0 and entry["not_applicable"] == n_grad
    assert entry["rows"]["gradient"]["not_applicable"] == n_grad


def test_dtypes_choose_the_cases_forward_and_gradient(capsys, tmp_path):
    report = tmp_path / "r.json"
    code, _, _ = run(capsys, "conformance", "--backend", "numpy", "--grid", "quick",
                     "--gradients", "--dtypes", "float16,int8", "--fuzz", "30",
                     "--json", str(report))
    assert code == 0
    entry = json.loads(report.read_text())["backends"]["numpy"]
    rows = entry["rows"]
    assert entry["dtypes"] == ["float16", "int8"]
    assert rows["float16"]["passed"] > 0 and rows["integers"]["passed"] > 0
    assert not any(rows[r]["passed"] + rows[r]["not_applicable"]
                   for r in ("float32", "float64", "bfloat16", "gradient float32"))
    n_grad = sum(c.gradient for c in conformance.grid("quick", dtypes=("float16",)))
    assert rows["gradient float16"]["not_applicable"] >= n_grad > 0  # grid and random


def test_random_gradient_cases_come_in_every_float_dtype():
    cases = [c for c in conformance.random_cases(300, seed=2, gradients=True) if c.gradient]
    assert {c.dtype for c in cases} == set(conformance.available_dtypes()) & {
        "float16", "bfloat16", "float32", "float64"}
    assert all(f"gradient:{c.dtype}" in c.features for c in cases)


def test_speed_routes_setting_is_recorded(capsys, tmp_path):
    report = tmp_path / "r.json"
    code, _, _ = run(capsys, "conformance", "--backend", "numpy", "--grid", "quick",
                     "--speed-routes", "off", "--json", str(report))
    assert code == 0
    assert json.loads(report.read_text())["backends"]["numpy"]["speed_routes"] == "off"


def test_fuzz_cases_are_valid_varied_and_reproducible():
    cases = conformance.random_cases(60, seed=3)
    assert len(cases) == 60
    assert [c.id for c in cases] == [c.id for c in conformance.random_cases(60, seed=3)]
    assert [c.id for c in cases] != [c.id for c in conformance.random_cases(60, seed=4)]
    for case in cases:
        assert "fuzz" in case.features and f"dtype:{case.dtype}" in case.features
        assert conformance.run_case(case, "numpy").passed  # valid: the spec accepts it
    assert {c.kind for c in cases} == {"pool", "global", "adaptive"}
    assert {c.ndim for c in cases} == {1, 2, 3}
    assert {c.kwargs["mode"] for c in cases} == {"max", "avg", "lp"}
    assert len({str(c.kwargs["padding"]) for c in cases if c.kind == "pool"}) > 10
    assert {c.data_format for c in cases} == {"channels_first", "channels_last"}


def test_conformance_fuzz_on_numpy(capsys, tmp_path):
    report = tmp_path / "r.json"
    code, _, _ = run(capsys, "conformance", "--backends", "numpy", "--grid", "quick",
                     "--fuzz", "40", "--seed", "5", "--json", str(report))
    assert code == 0
    entry = json.loads(report.read_text())["backends"]["numpy"]
    assert entry["rows"]["random cases (--fuzz)"]["passed"] == 40
    assert (entry["fuzz"], entry["seed"]) == (40, 5)


def test_reproducer_of_a_random_case_runs(tmp_path):
    case = conformance.random_cases(1, seed=11)[0]
    command = conformance.reproducer_for(case, "numpy", set(), against=False)
    assert command.startswith("python -c ")
    code = command.removeprefix("python -c ").strip('"')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "passed=True" in proc.stdout


def test_against_catches_the_zero_padding_max_pool(capsys, tmp_path):
    report = tmp_path / "r.json"
    code, out, _ = run(capsys, "conformance", "--grid", "quick", "--json", str(report),
                       "--against", f"{BUGGY}:zero_pad_max_pool")
    assert code == 1
    assert "FAIL" in out and "reproduce:" in out
    backends = json.loads(report.read_text())["backends"]
    entry = backends["buggy_zero_pad_maxpool.py:zero_pad_max_pool"]
    assert entry["kind"] == "function" and entry["failed"] > 0
    failed = {f["case"] for f in entry["failures"]}
    assert any(case.endswith("-negative") for case in failed)  # zeros beat negative input
    assert not any("padding=valid-ceil_mode=False" in case for case in failed)  # no padding: ok
    assert entry["rows"]["avg"]["not_applicable"] > 0 and entry["rows"]["avg"]["failed"] == 0

    # the listed reproducer re-runs one failing case and shows it failing
    command = entry["failures"][0]["reproducer"].removeprefix("python -c ").strip('"')
    proc = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "passed=False" in proc.stdout


def test_against_passes_the_correct_max_pool(capsys, tmp_path):
    report = tmp_path / "r.json"
    code, out, _ = run(capsys, "conformance", "--json", str(report),
                       "--against", f"{BUGGY}:max_pool")
    assert code == 0, out
    entry = json.loads(report.read_text())["backends"]["buggy_zero_pad_maxpool.py:max_pool"]
    n_max = sum(1 for c in conformance.grid("full", dtypes=conformance.available_dtypes())
                if c.kind == "pool" and c.kwargs["mode"] == "max" and not c.gradient)
    assert (entry["passed"], entry["failed"]) == (n_max, 0)


def test_merge_puts_reports_side_by_side(capsys, tmp_path):
    a, b, merged, md = (tmp_path / n for n in ("a.json", "b.json", "m.json", "m.md"))
    assert run(capsys, "conformance", "--backends", "numpy", "--grid", "quick",
               "--json", str(a))[0] == 0
    assert run(capsys, "conformance", "--grid", "quick", "--json", str(b),
               "--against", f"{BUGGY}:zero_pad_max_pool")[0] == 1
    code, out, _ = run(capsys, "conformance", "--merge", str(a), str(b), "--json", str(merged),
                       "--markdown", str(md))
    assert code == 1  # the merged report still holds the buggy function's failures
    data = json.loads(merged.read_text())
    assert list(data["backends"]) == ["numpy", "buggy_zero_pad_maxpool.py:zero_pad_max_pool"]
    text = md.read_text()
    assert "| feature | numpy | buggy_zero_pad_maxpool.py:zero_pad_max_pool |" in text
    assert "## Failures: buggy_zero_pad_maxpool.py:zero_pad_max_pool" in text


def test_markdown_lists_each_cause_once(capsys, tmp_path):
    a, merged, md = (tmp_path / n for n in ("a.json", "m.json", "m.md"))
    assert run(capsys, "conformance", "--backends", "numpy", "--grid", "quick",
               "--json", str(a))[0] == 0
    data = json.loads(a.read_text())
    shared = dict(message="TypeError: no such dtype here", reason="no such dtype here")
    data["backends"]["numpy"]["deviations"] = [
        *(dict(case=f"case-{i}", **shared) for i in range(5)),
        dict(case="odd-one", message="values: 2 values off", reason="a kernel rounds"),
    ]
    a.write_text(json.dumps(data))
    run(capsys, "conformance", "--merge", str(a), "--json", str(merged), "--markdown", str(md))
    section = md.read_text().split("## Known deviations: numpy\n\n")[1].splitlines()
    assert section == [
        "- 5 cases, `case-0`, `case-1`, `case-2` and 2 more: TypeError: no such dtype here",
        "- `odd-one`: values: 2 values off (a kernel rounds)",
    ]


@pytest.mark.parametrize("argv, message", [
    (["conformance", "--backends", "nosuch"], "unknown backend"),
    (["conformance", "--against", "no_colon_here"], "module:function"),
    (["conformance", "--against", "json:no_such_function"], "no function"),
    (["conformance", "--backend", "numpy", "--dtypes", "float8"], "unknown dtype 'float8'"),
    (["conformance", "--backend", "numpy", "--speed-routes", "fast"], "mode must be one of"),
])
def test_conformance_bad_arguments(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err


def test_missing_backend_names_its_extra(capsys):
    missing = sorted(set(dispatch.BACKENDS) - set(dispatch.available_backends()))
    if not missing:
        pytest.skip("every backend is installed here")
    code, _, err = run(capsys, "conformance", "--backends", missing[0])
    assert code == 2
    assert f"pooladapt[{missing[0]}]" in err


def test_readme_command_one_runs_and_writes_the_pooled_picture(capsys, tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("python3 -m pip install -e"))
    commands = [c.strip().split() for c in line.split("&&")[1:]]
    assert [c[:2] for c in commands] == [["pooladapt", "info"], ["pooladapt", "conformance"],
                                         ["pooladapt", "pool"]]
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    for argv in commands[:2]:
        assert run(capsys, *argv[1:])[0] == 0
    pool = commands[2][1:]
    out = tmp_path / "pooled.png"
    pool[pool.index("--out") + 1] = str(out)
    code, printed, _ = run(capsys, *pool)
    assert code == 0 and out.exists()
    picture = np.asarray(Image.open(Path(pool[1])))
    pooled = np.asarray(Image.open(out))
    assert pooled.shape == (80, 120, 3) and picture.shape == (160, 240, 3)  # 'same', stride 2
    # the first window is rows and columns 0..2 (same pads (0, 1)): its max, per channel
    assert (pooled[0, 0] == picture[:3, :3].max(axis=(0, 1))).all()
    assert (pooled[-1, -1] == picture[-2:, -2:].max(axis=(0, 1))).all()  # 158, 159 + a pad
