"""tf2onnx: a plan ONNX expresses leaves TensorFlow as its one ONNX pooling node.

tf2onnx converts TF's ops one by one, so the exact translation (a NaN check, a ``tf.cond``,
the exact max, a divisor map) would leave TensorFlow as that whole graph. Inside
:func:`onnx_nodes`, a pooling call traced in a plain graph (not eagerly, not under XLA)
whose plan ``lowering.onnx_pool_node`` (``onnx_global_node`` for a global pool) expresses at
the block's opset, for the input's dtype, is traced as ONE op instead: a ``tf.py_function``
(``EagerPyFunc``) that runs the eager translation, so the traced graph still gives
pooladapt's exact values in TensorFlow (NaN and gradients included). :func:`tf2onnx_handlers`
gives tf2onnx the handler that writes that op as the plan's node (recomputed at the
conversion's opset), on the NC* view: a channels_last input adds a Transpose on each side
(tf2onnx's optimizer may fold them into neighbouring ones), a global pool without
``keepdims`` a Flatten of its 1s.

How the handler finds the plan: each such op's ``token`` attribute (TF's key for the Python
function) maps to the traced call in a weak registry of this process, alive as long as the
traced graph is. So convert in the process that traced, while the function (or concrete
function) is alive; a graph traced in another process, or a SavedModel reloaded, has no
registry entry (and a ``py_function`` neither serialises nor runs without its Python), and
the handler says so. Everything else traces the translation as it is: indices (ONNX's count
over N*C*plane), windows of padding only, a non-integer ``p``, a dtype the op does not take,
pads at least the kernel (onnxruntime refuses them: its quirk 3), zero channels.
docs/deploying.md, "One ONNX node per plan".
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf

from pooladapt import lowering
from pooladapt.backends.tensorflow import translate
from pooladapt.backends.tensorflow.compile import builtin_graph
from pooladapt.lowering import OnnxNode
from pooladapt.spec import GlobalSpec, PoolPlan

TO_NC = {3: [0, 2, 1], 4: [0, 3, 1, 2], 5: [0, 4, 1, 2, 3]}
FROM_NC = {3: [0, 2, 1], 4: [0, 2, 3, 1], 5: [0, 2, 3, 4, 1]}
TF2ONNX_OPSET = 18
"""The newest opset tf2onnx 1.17 writes, and :func:`onnx_nodes`'s default."""
OP_NAME = "pooladapt_onnx_node"
"""The name the one op is traced under (TF uniquifies it: ``pooladapt_onnx_node_1``...)."""

_STATE = threading.local()
_TRACED: weakref.WeakValueDictionary[str, _Traced] = weakref.WeakValueDictionary()


@contextlib.contextmanager
def onnx_nodes(opset: int = TF2ONNX_OPSET) -> Iterator[None]:
    """Trace pooling calls for tf2onnx: inside this block, a plan that ONNX ``opset`` expresses
    as one node is traced as one op that :func:`tf2onnx_handlers` converts to that node; it
    computes pooladapt's exact result when the graph runs in TensorFlow. Trace (and convert)
    inside the block, with the same opset, in this process::

        with pooladapt.backends.tensorflow.onnx_nodes(opset=18):
            proto, _ = tf2onnx.convert.from_function(
                f, input_signature=spec, opset=18,
                custom_op_handlers=pooladapt.backends.tensorflow.tf2onnx_handlers())

    A ``tf.function`` already traced for that signature outside the block keeps its trace:
    convert a fresh one. Eagerly, under XLA and outside the block nothing changes.
    """
    opset = lowering._check_opset(opset)
    before = getattr(_STATE, "opset", None)
    _STATE.opset = opset
    try:
        yield
    finally:
        _STATE.opset = before


def tracing_opset() -> int | None:
    """The opset of :func:`onnx_nodes` while a plain graph is traced inside it, else None."""
    opset: int | None = getattr(_STATE, "opset", None)
    return opset if opset is not None and builtin_graph() else None


class _Traced:
    """One traced pooling call: the eager translation its op runs, and its node at an opset."""

    def __init__(self, compute: Callable[[tf.Tensor], Any],
                 node_at: Callable[[int], OnnxNode | None], channels_first: bool,
                 flatten: bool, shape: list[int | None], rank: int) -> None:
        self.compute, self.node_at, self.rank = compute, node_at, rank
        self.channels_first, self.flatten = channels_first, flatten
        self.shape = [-1 if n is None else n for n in shape]  # tf2onnx's unknown dim: -1

    def __call__(self, x: tf.Tensor) -> Any:
        return self.compute(x)


def _emit(x: tf.Tensor, traced: _Traced) -> tf.Tensor:
    y = tf.py_function(traced, [x], x.dtype, name=OP_NAME)
    y.set_shape([None if n < 0 else n for n in traced.shape])
    _TRACED[y.op.get_attr("token").decode()] = traced
    return y


def _node(x: tf.Tensor, opset: int, channels_first: bool,
          node_at: Callable[[int], OnnxNode | None]) -> Callable[[int], OnnxNode | None] | None:
    """``node_at`` (opset -> the plan's node for ``x``'s dtype) where the node exists at the
    block's ``opset`` and ``x`` has channels (onnxruntime quirk 5), else None."""
    if x.shape[1 if channels_first else -1] == 0:
        return None
    return node_at if lowering.onnx_exportable(node_at(opset)) is not None else None


def pool(x: tf.Tensor, plan: PoolPlan) -> Any:
    """The backend's ``pool``: the one op inside :func:`onnx_nodes` where the plan has a node,
    else the translation."""
    opset = tracing_opset()
    if opset is None:
        return translate.pool(x, plan)
    cf = plan.spec.channels_first
    node_at = _node(x, opset, cf, lambda o: lowering.onnx_exportable(
        lowering.onnx_pool_node(plan, o, x.dtype.name)))
    if node_at is None:
        return translate.pool(x, plan)
    shape = [x.shape[0], *plan.out_size]
    shape.insert(1 if cf else len(shape), x.shape[1 if cf else -1])
    return _emit(x, _Traced(lambda t: translate.pool(t, plan), node_at, cf, False, shape,
                            x.shape.rank))


def global_pool(x: tf.Tensor, spec: GlobalSpec) -> Any:
    """The backend's ``global_pool``: GlobalMaxPool, GlobalAveragePool or GlobalLpPool inside
    :func:`onnx_nodes` (flattened without ``keepdims``), else the translation."""
    opset = tracing_opset()
    if opset is None:
        return translate.global_pool(x, spec)
    cf = spec.data_format == "channels_first"
    node_at = _node(x, opset, cf, lambda o: lowering.onnx_global_node(spec, o, x.dtype.name))
    if node_at is None:
        return translate.global_pool(x, spec)
    channels, ones = x.shape[1 if cf else -1], [1] * spec.ndim
    shape = [x.shape[0], channels] if not spec.keepdims else (
        [x.shape[0], channels, *ones] if cf else [x.shape[0], *ones, channels])
    return _emit(x, _Traced(lambda t: translate.global_pool(t, spec), node_at, cf,
                            not spec.keepdims, shape, x.shape.rank))


def _convert(ctx: Any, node: Any, name: str, args: Any) -> Any:
    """tf2onnx's handler of ``EagerPyFunc``: a pooling op traced inside :func:`onnx_nodes`
    becomes its plan's node at the conversion's opset; any other ``py_function`` is an error
    (tf2onnx has no handler for it either)."""
    token = node.get_attr_str("token")
    traced = _TRACED.get(token)
    if traced is None:
        raise ValueError(
            f"{node.name}: a py_function ({token}) that pooladapt did not trace in this process "
            "(trace and convert inside pooladapt.backends.tensorflow.onnx_nodes(), in one "
            "process, while the traced function is alive)")
    onnx_node = traced.node_at(ctx.opset)
    if onnx_node is None:
        raise ValueError(f"{node.name}: the plan has no ONNX node at opset {ctx.opset}; convert "
                         "at the opset given to onnx_nodes()")
    dtype, shape, rank = ctx.get_dtype(node.input[0]), traced.shape, traced.rank
    for key in list(node.attr):
        del node.attr[key]
    node.type, node.domain = onnx_node.op_type, ""
    for key, value in onnx_node.attrs.items():
        node.set_attr(key, list(value) if isinstance(value, tuple) else value)
    if not traced.channels_first:
        ctx.insert_new_node_on_input(node, "Transpose", node.input[0], perm=TO_NC[rank])
    nc_shape = shape
    if traced.flatten:  # (N, C) from the node's (N, C, 1, ...)
        after = ctx.insert_new_node_on_output("Flatten", node.output[0], axis=1)
        nc_shape = [*shape, *[1] * (rank - 2)]
    elif not traced.channels_first:
        after = ctx.insert_new_node_on_output("Transpose", node.output[0], perm=FROM_NC[rank])
        nc_shape = [shape[i] for i in TO_NC[rank]]
    else:
        after = node
    for out, out_shape in ((after.output[0], shape), (node.output[0], nc_shape)):
        ctx.set_dtype(out, dtype)
        ctx.set_shape(out, out_shape)
    return node


def tf2onnx_handlers() -> dict[str, tuple[Callable[..., Any], list[Any]]]:
    """tf2onnx's ``custom_op_handlers`` (``from_function``, ``from_keras``, ``from_graph_def``)
    that write each op traced inside :func:`onnx_nodes` as its plan's ONNX node."""
    return {"EagerPyFunc": (_convert, [])}
