"""Deploying TensorFlow max pooling (issue 18): a ``tf.function`` using ``pa.pool2d(x, "max")``
converts to TFLite with builtin ops only and to ONNX with tf2onnx, and the TFLite interpreter
and onnxruntime give the original's numbers and the oracle's (NaN, -inf windows, ties, ceil
mode, same, padding, both layouts). A plain graph's exact max holds no bit cast or bitwise
op (``quirks.max_of_builtins``); ``portable()`` also drops MaxPool's explicit padding.
Inside ``onnx_nodes()``, with ``tf2onnx_handlers()``, a plan ONNX expresses converts to that
one ONNX node (Transposes around it for channels_last, a Flatten after a global pool without
keepdims) and the traced graph still gives pooladapt's exact values in TensorFlow."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf

import pooladapt as pa
from pooladapt import lowering, oracle
from pooladapt.backends.tensorflow import onnx_nodes, portable, tf2onnx_handlers
from pooladapt.spec import make_global_spec, make_spec

RNG = np.random.default_rng(18)
BANNED = {"Bitcast", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "LeftShift", "RightShift"}
CASES = {  # name: (args, kwargs)
    "3/2/1": (("max", 3, 2, 1), {}),
    "same": (("max", 3, 2, "same"), {}),
    "ceil": (("max", 3, 2), dict(ceil_mode=True)),
    "2/2": (("max", 2), {}),
    "asymmetric": (("max", 3, 1, ((0, 2), (1, 0))), {}),
    "global-like": (("max", (7, 6)), {}),
}
LAYOUTS = {"channels_last": (2, 7, 6, 3), "channels_first": (2, 3, 7, 6)}


def _input(shape) -> np.ndarray:
    x = RNG.integers(-2, 3, size=shape).astype(np.float32)  # ties
    pick = RNG.random(shape)
    x[pick < 0.08] = np.nan
    x[(pick >= 0.08) & (pick < 0.2)] = -np.inf
    x[(pick >= 0.2) & (pick < 0.25)] = np.inf
    if shape[-1] == 3:
        x[0, :4, :4, 0] = -np.inf  # whole windows of -inf
        x[1, :4, :4, 1] = np.nan
    else:
        x[0, 0, :4, :4] = -np.inf
        x[1, 1, :4, :4] = np.nan
    return x


def _fn(name, fmt):
    args, kw = CASES[name]
    return tf.function(lambda t: pa.pool2d(t, *args, data_format=fmt, **kw))


def _ops(concrete) -> set[str]:
    graph = concrete.graph.as_graph_def()
    return {n.op for n in graph.node} | {n.op for f in graph.library.function
                                         for n in f.node_def}


def _tflite(concrete, x: np.ndarray) -> np.ndarray:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    model = converter.convert()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_content=model)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("fmt", LAYOUTS)
@pytest.mark.parametrize("name", CASES)
def test_plain_graph_exact_max_holds_no_bit_cast_or_bitwise_op(name, fmt):
    x = tf.zeros(LAYOUTS[fmt])
    assert not _ops(_fn(name, fmt).get_concrete_function(x)) & BANNED


@pytest.mark.parametrize("fmt", LAYOUTS)
@pytest.mark.parametrize("name", CASES)
def test_tflite_converts_with_builtin_ops_only(name, fmt):
    x = _input(LAYOUTS[fmt])
    args, kw = CASES[name]
    with portable():
        concrete = _fn(name, fmt).get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
    original = concrete(tf.constant(x)).numpy()
    got = _tflite(concrete, x)
    want = oracle.pool(x, make_spec(*args, data_format=fmt, ndim=2, **kw))
    np.testing.assert_array_equal(original, want)
    np.testing.assert_array_equal(got, want)


def test_portable_graph_gradient_is_the_first_maximum():
    x = RNG.integers(-2, 3, size=(2, 7, 6, 3)).astype(np.float32)  # ties
    x[0, 0, 0, 0] = np.nan  # takes the exact (builtin) path
    spec = make_spec("max", 3, 2, ceil_mode=True, ndim=2)
    g = RNG.standard_normal(spec.output_shape(x.shape)).astype(np.float32)

    @tf.function
    def vjp(t, gt):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = pa.pool2d(t, "max", 3, 2, ceil_mode=True)
        return tape.gradient(y, t, output_gradients=gt)

    with portable():
        got = vjp(tf.constant(x), tf.constant(g)).numpy()
    # NaN windows pass no gradient (as the eager exact path): compare the others
    want = oracle.pool_vjp(np.where(np.isnan(x), -np.inf, x).astype(np.float64), spec,
                           np.where(np.isnan(oracle.pool(x, spec)), 0, g).astype(np.float64))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_without_portable_explicit_padding_stays_for_speed():
    concrete = _fn("ceil", "channels_last").get_concrete_function(tf.zeros((2, 7, 6, 3)))
    pads = [n.attr["padding"].s for n in concrete.graph.as_graph_def().node
            if n.op == "MaxPool"]
    assert b"EXPLICIT" in pads


# ------------------------------------------------------------------------------ tf2onnx


@pytest.mark.parametrize("fmt", LAYOUTS)
@pytest.mark.parametrize("name", CASES)
def test_tf2onnx_converts_and_onnxruntime_gives_the_original(name, fmt):
    tf2onnx = pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    x = _input(LAYOUTS[fmt])
    args, kw = CASES[name]
    spec = tf.TensorSpec(x.shape, tf.float32, name="x")
    fn = _fn(name, fmt)
    model, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=18)
    ops = {n.op_type for n in model.graph.node} | {
        n.op_type for node in model.graph.node for a in node.attribute if a.g
        for n in a.g.node}
    assert "MaxPool" in ops and not {"Bitcast", "BitwiseAnd", "BitShift"} & ops, ops
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    want = oracle.pool(x, make_spec(*args, data_format=fmt, ndim=2, **kw))
    np.testing.assert_array_equal(fn(tf.constant(x)).numpy(), want)
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------ SavedModel


def test_saved_model_reloads_without_pooladapt(tmp_path):
    x = _input((2, 7, 6, 3))
    module = tf.Module()
    module.f = tf.function(lambda t: pa.pool2d(t, "max", 3, 2, ceil_mode=True),
                           input_signature=[tf.TensorSpec([None, 7, 6, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sm"))
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, tensorflow as tf\n"
            "f = tf.saved_model.load(sys.argv[1]).f\n"
            "np.save(sys.argv[3], f(tf.constant(np.load(sys.argv[2]))).numpy())\n"
            "assert 'pooladapt' not in sys.modules\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "sm"), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, env=env, cwd=tmp_path)
    want = oracle.pool(x, make_spec("max", 3, 2, ceil_mode=True, ndim=2))
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


def test_keras_model_export_serves_without_pooladapt(tmp_path):
    keras = pytest.importorskip("keras")
    import pooladapt.layers.keras as pk

    model = keras.Sequential([
        keras.Input((9, 8, 3)),
        pk.MaxPooling2D(3, strides=2, padding=1, ceil_mode=True),
        pk.AveragePooling2D(2, strides=1, padding="same"),
    ])
    x = _input((2, 9, 8, 3))
    x[np.isnan(x)] = 1.5  # the average's NaN would hide the max's
    model.export(str(tmp_path / "served"))
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, tensorflow as tf\n"
            "served = tf.saved_model.load(sys.argv[1])\n"
            "np.save(sys.argv[3], served.serve(tf.constant(np.load(sys.argv[2]))).numpy())\n"
            "assert 'pooladapt' not in sys.modules\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "served"),
                    str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, env=env, cwd=tmp_path)
    pooled = oracle.pool(x, make_spec("max", 3, 2, 1, ceil_mode=True, ndim=2))
    want = oracle.pool(pooled, make_spec("avg", 2, 1, "same", ndim=2))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(model(x)), want, rtol=1e-6)


# ------------------------------------------------------------------------------ one ONNX node

OPSET = 18  # the newest tf2onnx 1.17 writes
SPATIAL = {1: (9,), 2: (7, 6), 3: (5, 6, 4)}
POOL_OPS = {"MaxPool", "AveragePool", "LpPool", "GlobalMaxPool", "GlobalAveragePool",
            "GlobalLpPool"}
LAYOUT_OPS = {"Transpose", "Flatten", "Reshape"}  # tf2onnx's optimizer makes Transposes of 1s
# Reshapes
ONE_NODE = {  # name: (ndim, args, kwargs); "global" args are (mode, keepdims)
    "max-symmetric": (2, ("max", 3, 2, 1), {}),
    "max-same": (2, ("max", 3, 2, "same"), {}),
    "max-same_lower-ceil": (2, ("max", 3, 2, "same_lower"), dict(ceil_mode=True)),
    "max-asymmetric": (2, ("max", 3, 1, ((0, 2), (1, 0))), {}),
    "max-ceil": (2, ("max", 3, 2), dict(ceil_mode=True)),
    "max-dilated": (2, ("max", 2, 1, 1, 2), {}),
    "max-1d": (1, ("max", 3, 2, "same"), {}),
    "max-3d": (3, ("max", 2, 2, 1), dict(ceil_mode=True)),
    "avg-include": (2, ("avg", 3, 2, 1), dict(count_include_pad=True)),
    "avg-exclude": (2, ("avg", 3, 2, 1), dict(count_include_pad=False)),
    "avg-same": (2, ("avg", 3, 2, "same"), {}),
    "avg-ceil-include": (2, ("avg", 3, 2, 1), dict(ceil_mode=True, count_include_pad=True)),
    "avg-ceil-exclude": (2, ("avg", 3, 2), dict(ceil_mode=True)),
    "avg-asymmetric": (2, ("avg", 2, 1, ((1, 0), (0, 1))), dict(count_include_pad=True)),
    "avg-1d-same_lower": (1, ("avg", 4, 3, "same_lower"), dict(count_include_pad=True)),
    "avg-3d": (3, ("avg", 2, 1, "same"), {}),
    "lp2": (2, ("lp", 3, 2, 1), dict(p=2)),
    "lp1-same_lower-ceil": (2, ("lp", 3, 2, "same_lower"), dict(p=1, ceil_mode=True)),
    "lp3-dilated": (2, ("lp", 2, 1, 0, 2), dict(p=3)),
    "lp-1d": (1, ("lp", 2, 2), dict(p=2, ceil_mode=True)),
    "global-max": (2, ("global", "max", False), {}),
    "global-avg-keepdims": (2, ("global", "avg", True), {}),
    "global-lp-1d": (1, ("global", "lp", False), dict(p=2)),
    "global-max-3d-keepdims": (3, ("global", "max", True), {}),
}


def _shape(ndim: int, fmt: str) -> tuple[int, ...]:
    return (2, 3, *SPATIAL[ndim]) if fmt == "channels_first" else (2, *SPATIAL[ndim], 3)


def _case(name: str, fmt: str):
    """(function on tf tensors, oracle on arrays, the plan's ONNX node at OPSET)."""
    ndim, args, kw = ONE_NODE.get(name) or NOT_ONE_NODE[name]
    shape = _shape(ndim, fmt)
    if args[0] == "global":
        spec = make_global_spec(args[1], ndim=ndim, keepdims=args[2], data_format=fmt, **kw)
        fn = getattr(pa, f"global_pool{ndim}d")
        return (lambda t: fn(t, args[1], args[2], data_format=fmt, **kw),
                lambda x: oracle.global_pool(x, spec),
                lowering.onnx_global_node(spec, OPSET, "float32"))
    spec = make_spec(*args, data_format=fmt, ndim=ndim, **kw)
    fn = getattr(pa, f"pool{ndim}d")
    return (lambda t: fn(t, *args, data_format=fmt, **kw), lambda x: oracle.pool(x, spec),
            lowering.onnx_pool_node(spec.plan(shape), OPSET, "float32"))


def _special(shape) -> np.ndarray:
    """Ties, NaN, -inf and inf, and a corner of -inf and one of NaN in each layout."""
    x = RNG.integers(-2, 3, size=shape).astype(np.float32)
    pick = RNG.random(shape)
    x[pick < 0.08] = np.nan
    x[(pick >= 0.08) & (pick < 0.2)] = -np.inf
    x[(pick >= 0.2) & (pick < 0.25)] = np.inf
    corner = (slice(None, 3),) * (len(shape) - 2)
    x[(0, 0, *corner)] = -np.inf
    x[(1, 1, *corner)] = np.nan
    return x


def _convert(fn, shape, **kw):
    """The concrete function traced inside onnx_nodes() and its tf2onnx model (batch unknown)."""
    tf2onnx = pytest.importorskip("tf2onnx")
    function = tf.function(fn)
    signature = [tf.TensorSpec([None, *shape[1:]], tf.float32, name="x")]
    with onnx_nodes(OPSET):
        concrete = function.get_concrete_function(*signature)
        model, _ = tf2onnx.convert.from_function(function, input_signature=signature,
                                                 opset=OPSET,
                                                 custom_op_handlers=tf2onnx_handlers(), **kw)
    return concrete, model


def _run(model, x: np.ndarray) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _bare(node, x: np.ndarray, fmt: str) -> np.ndarray:
    """The plan's node alone in onnxruntime (OPSET), on the NC* view of ``x``: what the
    runtime's kernel does, in the caller's layout."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node(node.op_type, ["x"], ["y"], **node.attrs)], "bare",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    last = fmt == "channels_last"
    y = _run(model, np.ascontiguousarray(np.moveaxis(x, -1, 1)) if last else x)
    return np.moveaxis(y, 1, -1) if last else y


def _close(got, want, exact: bool) -> None:
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("fmt", LAYOUTS)
@pytest.mark.parametrize("name", ONE_NODE)
def test_onnx_nodes_convert_a_plan_to_its_one_onnx_node(name, fmt):
    fn, want_of, node = _case(name, fmt)
    assert node is not None
    shape = _shape(ONE_NODE[name][0], fmt)
    concrete, model = _convert(fn, shape)
    # the TF graph: one op, which runs the eager translation (exact: NaN included)
    assert "EagerPyFunc" in _ops(concrete) and not _ops(concrete) & {
        "MaxPool", "AvgPool", "MaxPool3D", "AvgPool3D", "Mean", "Max", "If", "StatelessIf"}
    pools = [n for n in model.graph.node if n.op_type in POOL_OPS]
    others = {n.op_type for n in model.graph.node} - POOL_OPS
    assert len(pools) == 1 and pools[0].op_type == node.op_type, model.graph.node
    assert others <= LAYOUT_OPS, others
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in pools[0].attribute}
    assert attrs == {k: list(v) if isinstance(v, tuple) else v for k, v in node.attrs.items()}

    exact = node.op_type.endswith("MaxPool")
    x = RNG.standard_normal(shape).astype(np.float32)
    _close(_run(model, x), want_of(x), exact)  # finite: the oracle's values
    special = _special(shape)
    want = want_of(special)
    _close(concrete(tf.constant(special)).numpy(), want, exact)  # TF: pooladapt's exact values
    got = _run(model, special)
    np.testing.assert_array_equal(got, _bare(node, special, fmt).reshape(got.shape))  # its kernel
    if not exact:
        _close(got, want, exact)
        return
    # the kernel deviates from the canonical max only in windows holding a NaN or -inf
    # (onnxruntime quirks 1 and 8; where a NaN sits decides what its kernels give)
    special_windows = want_of(np.isnan(special) | np.isneginf(special)) > 0
    deviates = ~((got == want) | (np.isnan(got) & np.isnan(want)))
    assert not (deviates & ~special_windows).any()


NOT_ONE_NODE = {
    "lp-p1.5": (2, ("lp", 3, 2, 1), dict(p=1.5)),  # LpPool's p is an integer
    "avg-dilated": (2, ("avg", 3, 1, 2, 2), {}),  # AveragePool has dilations from opset 19
    "max-pads-at-kernel": (2, ("max", 2, 1, "same", 3), {}),  # onnxruntime refuses the pads
}


@pytest.mark.parametrize("name", NOT_ONE_NODE)
def test_onnx_nodes_leave_other_plans_as_the_exact_graph(name):
    fn, want_of, node = _case(name, "channels_last")
    shape = _shape(NOT_ONE_NODE[name][0], "channels_last")
    assert lowering.onnx_pool_gap(make_spec(*NOT_ONE_NODE[name][1], ndim=2, **NOT_ONE_NODE[
        name][2]).plan(shape), OPSET, "float32") is not None or name == "max-pads-at-kernel"
    concrete, model = _convert(fn, shape)
    assert "EagerPyFunc" not in _ops(concrete)
    x = RNG.standard_normal(shape).astype(np.float32)
    exact = name.startswith("max")
    if exact:
        x = _special(shape)  # today's graph: the exact max, NaN and -inf included
    want = want_of(x)
    _close(concrete(tf.constant(x)).numpy(), want, exact)
    _close(_run(model, x), want, exact)


def test_onnx_nodes_outside_a_graph_or_the_block_change_nothing():
    x = tf.constant(_special((2, 7, 6, 3)))
    want = oracle.pool(x.numpy(), make_spec("max", 3, 2, 1, ndim=2))
    with onnx_nodes():
        eager = pa.pool2d(x, "max", 3, 2, 1)
    np.testing.assert_array_equal(eager.numpy(), want)
    concrete = tf.function(lambda t: pa.pool2d(t, "max", 3, 2, 1)).get_concrete_function(x)
    assert "EagerPyFunc" not in _ops(concrete) and "MaxPool" in _ops(concrete)
    with onnx_nodes():
        under_xla = tf.function(lambda t: pa.pool2d(t, "max", 3, 2, 1), jit_compile=True)
        assert "EagerPyFunc" not in _ops(under_xla.get_concrete_function(x))
        np.testing.assert_array_equal(under_xla(x).numpy(), want)


@pytest.mark.parametrize("inside", [False, True], ids=["outside", "inside"])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_onnx_nodes_gradients(mode, inside):
    x = RNG.integers(-2, 3, size=(2, 7, 6, 3)).astype(np.float32)  # ties
    kw = dict(ceil_mode=True, count_include_pad=mode == "avg")
    spec = make_spec(mode, 3, 2, 1, ndim=2, **kw)
    g = RNG.standard_normal(spec.output_shape(x.shape)).astype(np.float32)

    @tf.function
    def vjp(t, gt):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = pa.pool2d(t, mode, 3, 2, 1, **kw)
        return tape.gradient(y, t, output_gradients=gt)

    with onnx_nodes() if inside else contextlib.nullcontext():
        concrete = vjp.get_concrete_function(tf.constant(x), tf.constant(g))
    assert ("EagerPyFunc" in _ops(concrete)) == inside
    want = oracle.pool_vjp(x.astype(np.float64), spec, g.astype(np.float64))
    np.testing.assert_allclose(concrete(tf.constant(x), tf.constant(g)).numpy(), want,
                               atol=1e-6)


def test_onnx_nodes_keras_model_converts_to_one_node_per_layer():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("Keras runs on another backend")
    import pooladapt.layers.keras as pk

    model = keras.Sequential([
        keras.Input((9, 8, 3)),
        pk.MaxPooling2D(3, strides=2, padding=1, ceil_mode=True),
        pk.AveragePooling2D(2, strides=1, padding="same"),
        pk.GlobalMaxPooling2D(),
    ])
    _, onnx_model = _convert(lambda t: model(t), (2, 9, 8, 3))
    ops = [n.op_type for n in onnx_model.graph.node]
    assert sorted(o for o in ops if o in POOL_OPS) == ["AveragePool", "GlobalMaxPool",
                                                       "MaxPool"], ops
    assert set(ops) - POOL_OPS <= LAYOUT_OPS, ops
    x = RNG.standard_normal((2, 9, 8, 3)).astype(np.float32)
    pooled = oracle.pool(x, make_spec("max", 3, 2, 1, ceil_mode=True, ndim=2))
    pooled = oracle.pool(pooled, make_spec("avg", 2, 1, "same", ndim=2))
    want = oracle.global_pool(pooled, make_global_spec("max", ndim=2))
    np.testing.assert_allclose(_run(onnx_model, x), want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(model(x)), want, rtol=1e-6)


def _handler_errors(function, signature, opset: int) -> list[str]:
    """The errors the EagerPyFunc handler raises while tf2onnx converts ``function`` (tf2onnx
    logs them and goes on)."""
    tf2onnx = pytest.importorskip("tf2onnx")
    handler, seen = tf2onnx_handlers()["EagerPyFunc"][0], []

    def spy(*args):
        try:
            return handler(*args)
        except ValueError as error:
            seen.append(str(error))
            raise

    tf2onnx.convert.from_function(function, input_signature=signature, opset=opset,
                                  custom_op_handlers={"EagerPyFunc": (spy, [])})
    return seen


def test_tf2onnx_handler_names_a_py_function_pooladapt_did_not_trace():
    function = tf.function(lambda t: tf.py_function(lambda u: u * 2, [t], tf.float32))
    with onnx_nodes(OPSET):
        seen = _handler_errors(function, [tf.TensorSpec([2, 3], tf.float32, name="x")], OPSET)
    assert len(seen) == 1 and "did not trace" in seen[0], seen


def test_tf2onnx_handler_refuses_an_opset_without_the_node():
    function = tf.function(lambda t: pa.pool1d(t, "lp", 2, 1, 0, 2, p=2))
    signature = [tf.TensorSpec([2, 5, 3], tf.float32, name="x")]
    with onnx_nodes(OPSET):  # LpPool has dilations from opset 18
        seen = _handler_errors(function, signature, 15)
    assert len(seen) == 1 and "no ONNX node at opset 15" in seen[0], seen
