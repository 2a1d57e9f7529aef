"""The TensorFlow backend: tf tensors in, tf tensors out, GradientTape and XLA intact.

translate.py maps a plan onto TF's pooling ops (read it first); fast.py holds the speed
routes, quirks.py the TF behaviours worked around, compile.py what ``tf.function`` and XLA
need, onnx.py the one op per ONNX-expressible plan that tf2onnx converts. This module is the
backend object: conversions, dtype names, autograd, what it reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from pooladapt import lowering
from pooladapt.backends.base import Backend
from pooladapt.backends.tensorflow import fast, onnx, quirks, translate
from pooladapt.backends.tensorflow.compile import portable
from pooladapt.backends.tensorflow.onnx import onnx_nodes, tf2onnx_handlers
from pooladapt.plan import PoolPlan


class TensorflowBackend(Backend):
    name = "tensorflow"
    framework = "tensorflow"
    supports_autograd = True
    speed_routes = fast.ROUTES
    native_features = frozenset({"global", "autograd", "compile"})
    # MaxPool drops NaN (an exact redo); TF has no adaptive pooling and no unpool
    emulated_features = frozenset({"nan", "adaptive", "unpool"})

    # the translation, or inside onnx_nodes() one op that tf2onnx writes as the plan's node
    pool = staticmethod(onnx.pool)
    global_pool = staticmethod(onnx.global_pool)
    adaptive_pool = staticmethod(translate.adaptive_pool)
    max_unpool = staticmethod(translate.max_unpool)

    @property
    def known_deviations(self) -> dict[str, str]:  # type: ignore[override]
        """Subnormals, for each dtype whose subnormals TF's CPU kernels flush here."""
        return quirks.subnormal_deviations()

    def version(self) -> str:
        return tf.__version__

    def tracing(self, x: Any = None) -> bool:
        """True inside ``tf.function`` (XLA included): tensors are symbolic there."""
        return not tf.executing_eagerly()

    def lowers_natively(self, plan: PoolPlan, dtype_name: str) -> bool | None:
        """The translation's own choice: one TF pool (a layout change aside) where the op's
        padding gives the plan's windows (``translate.native_padding``) and the op takes the
        arguments (``quirks.op_workaround``); lp (a root of sums), indices (a gather) and
        windows of padding only (a fix-up) are emulated."""
        spec = plan.spec
        if spec.mode != "max" and lowering.is_integer(dtype_name):
            return None
        return (spec.mode != "lp" and not spec.return_indices and not plan.all_padding_windows
                and translate.native_padding(plan) is not None
                and quirks.op_workaround(spec.ndim, spec.stride, spec.dilation,
                                         dtype_name) is None)

    def from_numpy(self, a: np.ndarray) -> tf.Tensor:
        return tf.convert_to_tensor(a)  # ml_dtypes.bfloat16 arrays map to tf.bfloat16

    def to_numpy(self, x: tf.Tensor) -> np.ndarray:
        return np.asarray(x.numpy())

    def dtype_name(self, x: Any) -> str:
        return x.dtype.name

    def vjp(self, fn: Callable[[Any], Any], x: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        dx = tape.gradient(y, x, output_gradients=tf.cast(g, y.dtype))
        return tf.zeros_like(x) if dx is None else dx


BACKEND = TensorflowBackend()

__all__ = ["BACKEND", "TensorflowBackend", "onnx_nodes", "portable", "tf2onnx_handlers"]
