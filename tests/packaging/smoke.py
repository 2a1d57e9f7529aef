"""Smoke test of a built wheel installed alone (NumPy and the CLI extras, no framework).

Run by ``nox -s build`` with the clean virtualenv's Python; exits non-zero on the first
failure. Checks what a new user meets first: the command line, a pooled picture, the
installed metadata, and each layers module's install hint.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def run(*argv: str) -> str:
    out = subprocess.run([sys.executable, "-m", "pooladapt.cli", *argv], capture_output=True,
                         text=True)
    assert out.returncode == 0, (argv, out.stdout, out.stderr)
    return out.stdout


def main() -> None:
    import pooladapt

    assert "torch" not in sys.modules and "tensorflow" not in sys.modules
    dist = importlib.metadata.distribution("pooladapt")
    assert dist.version == pooladapt.__version__, (dist.version, pooladapt.__version__)
    files = {str(f) for f in dist.files or ()}
    assert "pooladapt/py.typed" in files, "py.typed missing from the wheel"
    assert any(f.endswith("licenses/LICENSE") for f in files), "LICENSE missing from the wheel"
    assert dist.metadata["License-Expression"] == "Apache-2.0"

    info = run("info")
    assert "numpy" in info and "pip install 'pooladapt[torch]'" in info, info

    with tempfile.TemporaryDirectory() as tmp:
        grey = np.arange(1, 17, dtype=np.uint8).reshape(4, 4) * 10  # 10..160, row-major
        Image.fromarray(grey).save(Path(tmp) / "in.png")
        run("pool", str(Path(tmp) / "in.png"), "--mode", "max", "--window", "2",
            "--out", str(Path(tmp) / "out.png"))
        got = np.asarray(Image.open(Path(tmp) / "out.png"))
        assert got.tolist() == [[60, 80], [140, 160]], got.tolist()  # each 2x2 block's max

    for module, extra in (("torch", "torch"), ("keras", "keras"), ("flax", "flax"),
                          ("mxnet", "mxnet")):
        try:
            importlib.import_module(f"pooladapt.layers.{module}")
        except ImportError as err:
            assert f"pip install 'pooladapt[{extra}]'" in str(err), (module, str(err))
        else:
            raise AssertionError(f"pooladapt.layers.{module} imported without its framework")
    print("wheel smoke test passed")


if __name__ == "__main__":
    main()
