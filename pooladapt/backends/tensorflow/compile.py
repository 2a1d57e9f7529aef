"""tf.function and XLA: what the translation needs to know while TensorFlow traces it.

A plan is a trace-time constant, so every choice the translation makes (native or emulated,
a speed route, a framework workaround) is made once per trace and the graph holds only the
chosen ops. Routes are chosen when a call runs eagerly or when a ``tf.function`` is traced:
a traced graph keeps the routes of its tracing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

try:  # TF's own test for "some tape or accumulator is recording"
    from tensorflow.python.eager.record import could_possibly_record as _tape_active
except ImportError:  # pragma: no cover - a TF without it: assume a tape
    _tape_active = None


def in_xla() -> bool:
    """True while tracing for XLA (``jit_compile``). Known only at trace time: a plain
    ``tf.function`` traced outside XLA and later called inside a ``jit_compile`` one keeps
    what it chose outside (an error where XLA lacks the op, never a wrong value:
    ``test_plain_tf_function_called_inside_jit_compile_is_an_error_not_a_wrong_value``)."""
    if tf.executing_eagerly():
        return False
    enclosing = getattr(tf.__internal__, "get_enclosing_xla_context", None)
    return enclosing is None or enclosing() is not None


def may_record() -> bool:
    """False only eagerly with no gradient tape active: then no gradient can be asked for."""
    return not tf.executing_eagerly() or _tape_active is None or bool(_tape_active())


def branch(pred: Any, if_true: Callable[[], Any], if_false: Callable[[], Any]) -> Any:
    """``if_true()`` where ``pred`` holds: a Python bool eagerly (one branch runs), a boolean
    tensor in a graph (``tf.cond``: both are traced, one runs)."""
    if isinstance(pred, bool):
        return if_true() if pred else if_false()
    return tf.cond(pred, if_true, if_false)


def batch_size(x: tf.Tensor) -> tf.Tensor:
    """The batch size, dynamic under a ``tf.function`` with an unknown batch; int64, as a
    plane may hold 2**31 cells."""
    return tf.shape(x, out_type=tf.int64)[0]


def static_plane(x: tf.Tensor, axes: tuple[int, ...]) -> tuple[int, ...]:
    """The spatial sizes of ``x``, which must be known when the graph is traced."""
    plane = tuple(x.shape[a] for a in axes)
    if None in plane:
        raise ValueError(f"global max pooling on TensorFlow needs static spatial sizes (it is a "
                         f"max pool over the whole plane), got {plane}")
    return plane  # type: ignore[return-value]
