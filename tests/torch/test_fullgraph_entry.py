"""``pa.pool2d`` inside ``torch.compile(fullgraph=True)``: the functional API traces without a
graph break once the torch backend module is imported (``pooladapt.layers.torch`` or
``pooladapt.backends.torch``), even before any eager call. Run in a fresh interpreter, where
no earlier test has loaded the backend."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import warnings
warnings.simplefilter("ignore")
import torch, pooladapt as pa
import pooladapt.layers.torch
x = torch.tensor([[[[1., 5, 2, 0], [3, 4, 8, 7], [0, -1, 1, 1], [9, 0, 1, 2]]]])
f = torch.compile(lambda t: pa.pool2d(t, "max", 2, data_format="channels_first"),
                  fullgraph=True)
print(f(x).flatten().tolist())
"""


def test_functional_pool_compiles_with_fullgraph_in_a_fresh_process():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[5.0, 8.0, 9.0, 2.0]"
