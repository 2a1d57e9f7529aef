"""The pooladapt Keras layers on the torch Keras backend.

The tests live in tests/tensorflow/keras_layer_suite.py, shared by the three Keras backends;
this file selects the backend (before keras is imported) and takes them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"

_path = Path(__file__).resolve().parents[1] / "tensorflow" / "keras_layer_suite.py"
_spec = importlib.util.spec_from_file_location("pooladapt_keras_layer_suite_torch", _path)
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
globals().update({k: v for k, v in vars(_suite).items() if k.startswith("test_")})
