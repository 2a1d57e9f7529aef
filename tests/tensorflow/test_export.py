"""Deploying TensorFlow max pooling (issue 18): a ``tf.function`` using ``pa.pool2d(x, "max")``
converts to TFLite with builtin ops only and to ONNX with tf2onnx, and the TFLite interpreter
and onnxruntime give the original's numbers and the oracle's (NaN, -inf windows, ties, ceil
mode, same, padding, both layouts). A plain graph's exact max holds no bit cast or bitwise
op (``quirks.max_of_builtins``); ``portable()`` also drops MaxPool's explicit padding."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf

import pooladapt as pa
from pooladapt import oracle
from pooladapt.backends.tensorflow import portable
from pooladapt.spec import make_spec

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
