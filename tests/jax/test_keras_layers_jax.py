"""The pooladapt Keras layers on the jax Keras backend.

The tests live in tests/tensorflow/keras_layer_suite.py and tests/tensorflow/test_keras_parity.py
(the parity with keras.layers' own classes), shared by the three Keras backends; this file
selects the backend (before keras is imported) and takes them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"

_here = Path(__file__).resolve().parents[1] / "tensorflow"


def _load(filename: str, module: str):
    spec = importlib.util.spec_from_file_location(module, _here / filename)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


for _module in (_load("keras_layer_suite.py", "pooladapt_keras_layer_suite_jax"),
                _load("test_keras_parity.py", "pooladapt_keras_parity_jax")):
    _tests = {k: v for k, v in vars(_module).items() if k.startswith("test_")}
    assert not set(_tests) & set(globals()), "a test name is taken twice"
    globals().update(_tests)
