"""The examples run as programs, on every backend under test, and print hand-computed numbers.

Backends: ``POOLADAPT_TEST_BACKENDS`` (comma-separated) if set, else every installed one. The
expected values below are worked out by hand (or, for the photo, by an independent NumPy
sliding-window computation), never copied from pooladapt's output.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pooladapt import config, dispatch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _backends() -> list[str]:
    env = os.environ.get("POOLADAPT_TEST_BACKENDS")
    if env:
        return [config.normalize_backend_name(n) for n in env.split(",") if n.strip()]
    return dispatch.available_backends()


BACKENDS = [pytest.param(name, id=name) for name in _backends()]


def run_example(name: str, backend: str, cwd: Path, *args: str) -> dict[str, str]:
    """Run examples/<name> with POOLADAPT_BACKEND=backend; its output lines as label -> text."""
    env = {**os.environ, "POOLADAPT_BACKEND": backend}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {}
    for line in proc.stdout.splitlines():
        label, sep, text = line.partition(": ")
        if sep:
            lines[label] = text
    assert lines["backend"] == backend
    return lines


def numbers(text: str):
    return json.loads(text)


@pytest.mark.parametrize("backend", BACKENDS)
def test_d2l_chapter_cells(backend, tmp_path):
    out = run_example("d2l_pooling.py", backend, tmp_path)
    expected = {
        # max(0,1,3,4)=4, max(1,2,4,5)=5, max(3,4,6,7)=7, max(4,5,7,8)=8
        "max 2x2 stride 1": [[[4, 5], [7, 8]]],
        # (0+1+3+4)/4=2, (1+2+4+5)/4=3, (3+4+6+7)/4=5, (4+5+7+8)/4=6
        "avg 2x2 stride 1": [[[2, 3], [5, 6]]],
        # one 3x3 window over rows/cols 0..2 of arange(16): max = 2*4+2 = 10
        "window 3, stride defaults to window": [[[10]]],
        # windows cover rows/cols {0,1} and {1,2,3}: maxima at (1,1)=5, (1,3)=7, (3,1)=13, 15
        "window 3, padding 1, stride 2": [[[5, 7], [13, 15]]],
        # rows {0,1},{2,3}; cols {0,1},{2,3} after one pad column: 5, 7, 13, 15
        "window (2, 3), padding (0, 1), stride (2, 3)": [[[5, 7], [13, 15]]],
        # channel 2 is channel 1 plus one
        "two channels, window 3, padding 1, stride 2": [[[5, 7], [13, 15]], [[6, 8], [14, 16]]],
    }
    for label, want in expected.items():
        for layout in ("NCHW", "NHWC"):
            assert numbers(out[f"{label} [{layout}]"]) == want, (label, layout)
    # -1..-16 with a zero row/column on top/left: every window touching it answers 0
    assert numbers(out["negative input, d2l TF/JAX recipe (zero padding)"]) == [[0, 0], [0, -6]]
    # padding never wins: the maxima are the real cells -1, -2, -5, -6
    assert numbers(out["negative input, pooladapt padding=1"]) == [[-1, -2], [-5, -6]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_keras_notebook(backend, tmp_path):
    pytest.importorskip("matplotlib")
    datasets = pytest.importorskip("sklearn.datasets")
    from PIL import Image

    figure = tmp_path / "figure.png"
    out = run_example("keras_notebook.py", backend, tmp_path, "--out", str(figure))
    assert numbers(out["4x4 max 2x2 stride 2"]) == [[9, 2], [6, 3]]
    # (1+3+2+9)/4, (2+1+1+1)/4, (1+3+2+6)/4, (2+3+1+2)/4
    assert numbers(out["4x4 avg 2x2 stride 2"]) == [[3.75, 1.25], [3, 2]]
    assert numbers(out["4x4x3 max per channel (C, H, W)"]) == [
        [[4, 2], [4, 3]], [[7, 9], [6, 5]], [[5, 9], [6, 7]]]
    assert numbers(out["4x4x3 avg per channel (C, H, W)"]) == [
        [[10 / 4, 3 / 4], [11 / 4, 8 / 4]],
        [[13 / 4, 13 / 4], [11 / 4, 12 / 4]],
        [[11 / 4, 13 / 4], [11 / 4, 13 / 4]]]

    photo = datasets.load_sample_images().images[1].astype(np.float64)
    assert out["photo"] == "shape [427, 640, 3]"
    for window in (2, 10):
        # floor((427 - k) / 2) + 1 rows, floor((640 - k) / 2) + 1 columns
        rows, cols = (427 - window) // 2 + 1, (640 - window) // 2 + 1
        views = np.lib.stride_tricks.sliding_window_view(photo, (window, window), axis=(0, 1))
        views = views[::2, ::2]
        for mode, reduce in (("max", np.max), ("avg", np.mean)):
            text = out[f"photo {mode} window {window} stride 2"]
            shape, _, mean = text.partition(" mean ")
            assert shape == f"shape [{rows}, {cols}, 3]"
            want = reduce(views, axis=(-2, -1)).mean()
            assert math.isclose(float(mean), want, rel_tol=1e-6), (mode, window)
    with Image.open(figure) as img:
        assert img.format == "PNG"
        assert img.width > 4 * img.height  # five panels side by side


EXPECTED_SWAP = {
    # x = arange(16) - 8 as 4x4; windows rows/cols {0,1} and {1,2,3}
    "max window 3 stride 2 padding 1": [[-3, -1], [5, 7]],
    # means of the real cells: (0+1+4+5)/4-8, (1+2+3+5+6+7)/6-8, (4+5+8+9+12+13)/6-8, 10-8
    "avg window 3 stride 2 padding 1": [[-5.5, -4.0], [0.5, 2.0]],
    # the same sums over 9 cells: -22/9, -24/9, 3/9, 18/9
    "avg window 3 stride 2 padding 1 count_include_pad": [
        [round(-22 / 9, 4), round(-24 / 9, 4)], [round(3 / 9, 4), 2.0]],
    # same: total padding 1, at the end -> windows {0,1,2} and {2,3}
    "max window 3 stride 2 same": [[2, 3], [6, 7]],
    # same_lower: the padding cell at the start -> windows {0,1} and {1,2,3}
    "max window 3 stride 2 same_lower": [[-3, -1], [5, 7]],
    # ceil: ceil((4-3)/2)+1 = 2 windows, the second starts at 2 (inside the input)
    "max window 3 stride 2 ceil_mode": [[2, 3], [6, 7]],
    # sqrt of the sums of squares of {-8,-7,-4,-3}, {-6,-5,-2,-1}, {0,1,4,5}, {2,3,6,7}
    "lp p=2 window 2": [[round(math.sqrt(138), 4), round(math.sqrt(66), 4)],
                        [round(math.sqrt(42), 4), round(math.sqrt(98), 4)]],
    "max window 2 values": [[-3, -1], [5, 7]],
    # the maxima sit at (1,1), (1,3), (3,1), (3,3) of the 4x4 plane
    "max window 2 indices": [[5, 7], [13, 15]],
    "global avg": [-0.5],
    "global max": [7],
    # bins [0,2), [1,3), [2,4) per dim: mean = 4*(i+0.5) + (j+0.5) - 8
    "adaptive avg 3x3": [[-5.5, -4.5, -3.5], [-1.5, -0.5, 0.5], [2.5, 3.5, 4.5]],
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_swap_backend_prints_the_same_numbers(backend, tmp_path):
    out = run_example("swap_backend.py", backend, tmp_path)
    assert set(out) == {"backend", *EXPECTED_SWAP}
    for label, want in EXPECTED_SWAP.items():
        assert numbers(out[label]) == want, label


def test_buggy_zero_pad_maxpool_is_caught(tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "buggy_zero_pad_maxpool.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "zero padding : [[0.0, 0.0], [0.0, -6.0]]" in proc.stdout
    assert "-inf padding : [[-1.0, -2.0], [-5.0, -6.0]]" in proc.stdout
    assert "{'zero_pad_max_pool': 'FAILS', 'max_pool': 'passes'}" in proc.stdout
