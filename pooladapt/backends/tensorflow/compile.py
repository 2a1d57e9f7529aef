"""tf.function and XLA: what the translation needs to know while TensorFlow traces it.

A plan is a trace-time constant, so every choice the translation makes (native or emulated,
a speed route, a framework workaround) is made once per trace and the graph holds only the
chosen ops. Routes are chosen when a call runs eagerly or when a ``tf.function`` is traced:
a traced graph keeps the routes of its tracing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
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


def builtin_graph() -> bool:
    """True while tracing a graph outside XLA: the graph a SavedModel, ``model.export``, the
    TFLite converter or tf2onnx receive. There the exact max holds builtin ops only (no bit
    casts or bitwise ops: ``quirks.max_of_builtins``); eagerly and under XLA it compares
    integer order keys, exact on subnormals too (``quirks.max_of_keys``)."""
    return not tf.executing_eagerly() and not in_xla()


_PORTABLE = threading.local()


@contextlib.contextmanager
def portable() -> Iterator[None]:
    """Trace graphs that TFLite converts with builtin ops only: inside this block a traced
    max pool pads a copy and pools it VALID instead of MaxPool's explicit padding (which
    TFLite lacks: ceil mode, asymmetric or non-SAME pads), and no speed route that TFLite
    cannot run (TF's NCHW kernel) is taken. Outside it graphs keep the faster forms. Trace
    (``get_concrete_function``, ``model.export``) inside the block::

        with pooladapt.backends.tensorflow.portable():
            concrete = f.get_concrete_function(spec)
    """
    before = getattr(_PORTABLE, "on", False)
    _PORTABLE.on = True
    try:
        yield
    finally:
        _PORTABLE.on = before


def in_portable() -> bool:
    """True while tracing a graph inside :func:`portable`."""
    return getattr(_PORTABLE, "on", False) and not tf.executing_eagerly()


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
