"""examples/port_model.py: a PyTorch CNN ported to Keras (on each Keras backend) and Flax."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "port_model.py"


@pytest.mark.parametrize("keras_backend", ["jax", "tensorflow", "torch"])
def test_port_agrees_with_pooladapt_and_drifts_without(keras_backend):
    env = {**os.environ, "KERAS_BACKEND": keras_backend}
    out = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"Keras backend: {keras_backend}" in out.stdout
    diffs = dict(re.findall(r"^\s+(\S+/\S+)\s+(\S+)$", out.stdout, flags=re.M))
    assert set(diffs) == {"keras/pooladapt", "flax/pooladapt", "keras/native", "flax/native"}
    for key in ("keras/pooladapt", "flax/pooladapt"):
        assert float(diffs[key]) < 1e-5, (key, out.stdout)
    for key in ("keras/native", "flax/native"):  # the drift pooladapt removes is visible
        assert float(diffs[key]) > 1e-3, (key, out.stdout)
