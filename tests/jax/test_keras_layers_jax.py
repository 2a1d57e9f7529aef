"""The pooladapt Keras layers on the jax Keras backend.

The tests live in tests/tensorflow/keras_layer_suite.py and tests/tensorflow/test_keras_parity.py
(the parity with keras.layers' own classes), shared by the three Keras backends; this file
selects the backend (before keras is imported) and takes them.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"

from pooladapt.testing.suites import adopt_tests  # noqa: E402

_here = Path(__file__).resolve().parents[1] / "tensorflow"
adopt_tests(_here / "keras_layer_suite.py", "pooladapt_keras_layer_suite_jax", globals())
adopt_tests(_here / "test_keras_parity.py", "pooladapt_keras_parity_jax", globals())
