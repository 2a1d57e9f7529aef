"""onnxruntime's own kernels against the canonical meaning, next to pooladapt's answer.

Each test runs a raw one-node ONNX model in onnxruntime and asserts what the runtime does on
this machine (hand-computed values; quirks.py lists the deviations and their emulation), so
a change in onnxruntime is noticed; then, where pooladapt differs, what pooladapt gives.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import pooladapt as pa
from pooladapt.backends.onnxruntime import quirks

ORT = dict(backend="onnxruntime")
FLT_LOWEST = float(np.finfo(np.float32).min)  # -3.4028235e38


def model(op: str, inputs: list[np.ndarray], outputs: int = 1, opset: int = 22,
          **attrs) -> bytes:
    names = [f"x{i}" for i in range(len(inputs))]
    outs = ["y", "i"][:outputs]
    elem = helper.np_dtype_to_tensor_dtype(inputs[0].dtype)
    graph = helper.make_graph(
        [helper.make_node(op, names, outs, **attrs)], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in zip(names, inputs)],
        [helper.make_tensor_value_info(o, elem if o == "y" else TensorProto.INT64,
                                       [None] * inputs[0].ndim) for o in outs])
    ids = [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=ids,
                             ir_version=helper.find_min_ir_version_for(ids)).SerializeToString()


def run(op: str, inputs: list[np.ndarray], outputs: int = 1, opset: int = 22, **attrs):
    """The raw node in onnxruntime: its outputs (values first, then indices)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(model(op, inputs, outputs, opset, **attrs), options,
                                providers=["CPUExecutionProvider"])
    out = sess.run(None, {f"x{i}": a for i, a in enumerate(inputs)})
    return [o.ravel().tolist() for o in out]


def row(values, dtype="float32") -> np.ndarray:
    return np.array(values, dtype=np.float64).astype(dtype).reshape(1, 1, -1)


# ---------------------------------------------------------------------------- deviations


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_max_skips_a_nan_after_the_first_tap(dtype):
    """Quirk 1: MaxPool with Indices (and float64's) keeps a running maximum with ``>``, so a
    NaN counts only as a window's first tap; float16/32 MaxPool without Indices and
    GlobalMaxPool skip the NaN of these windows (an all-NaN window: the kernel's starting
    value); not of every window (the quirk's docstring), which is not pinned here."""
    x = row([1, math.nan, math.nan, 1, math.nan, math.nan], dtype)
    y, idx = run("MaxPool", [x], 2, kernel_shape=[2], strides=[2])
    assert y[0] == 1 and math.isnan(y[1]) and math.isnan(y[2]) and idx == [0, 2, 4]
    y = run("MaxPool", [x], kernel_shape=[2], strides=[2])[0]
    if dtype == "float64":
        assert y[0] == 1 and math.isnan(y[1]) and math.isnan(y[2])
    else:
        assert y == [1, 1, FLT_LOWEST if dtype == "float32" else -math.inf]
        assert run("GlobalMaxPool", [row([1, math.nan], dtype)])[0] == [1]
        assert run("GlobalMaxPool", [row([math.nan, 1], dtype)])[0] == [1]
    y, idx = pa.pool1d(x, "max", 2, data_format="NCW", return_indices=True, **ORT)
    assert np.isnan(y).ravel().tolist() == [True] * 3 and idx.ravel().tolist() == [1, 2, 4]
    assert np.isnan(pa.global_pool1d(x[..., :2], "max", data_format="NCW", **ORT)).all()


def test_max_of_minus_infinity():
    """Quirk 8: float32 MaxPool without Indices, and GlobalMaxPool, start their running
    maximum at the lowest finite float: a window of -inf gives -3.4e38."""
    x = row([-math.inf, -math.inf, -math.inf, 2.0])
    assert run("MaxPool", [x], kernel_shape=[2], strides=[2])[0] == [FLT_LOWEST, 2.0]
    assert run("MaxPool", [x], 2, kernel_shape=[2], strides=[2])[0] == [-math.inf, 2.0]
    assert run("MaxPool", [x.astype(np.float64)], kernel_shape=[2], strides=[2])[0] == [
        -math.inf, 2.0]
    assert run("GlobalMaxPool", [x[..., :3]])[0] == [FLT_LOWEST]
    assert pa.pool1d(x, "max", 2, data_format="NCW", **ORT).ravel().tolist() == [-math.inf, 2]
    assert pa.global_pool1d(x[..., :3], "max", data_format="NCW", **ORT).tolist() == [
        [-math.inf]]


def _builds(op: str, dtype: str, opset: int = 22) -> bool:
    x = np.zeros((1, 1, 2, 2), dtype)
    attrs = {} if op.startswith("Global") else {"kernel_shape": [2, 2]}
    try:
        ort.InferenceSession(model(op, [x], opset=opset, **attrs),
                             providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001  (onnxruntime raises its own classes)
        assert "NOT_IMPLEMENTED" in str(err) or "INVALID_GRAPH" in str(err), err
        return False
    return True


@pytest.mark.parametrize("op", sorted(quirks.KERNELS))
def test_kernel_dtypes(op):
    """Quirk 2: the dtypes each CPU kernel takes at opset 22 are quirks.KERNELS."""
    dtypes = ["float16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64"]
    assert {d for d in dtypes if _builds(op, d)} == quirks.KERNELS[op]


def test_bfloat16_has_no_kernel_nor_a_python_binding():
    """Quirk 2: ONNX allows bfloat16 from opset 22; onnxruntime 1.32's CPU pooling has no
    kernel for it, and its Python binding takes no ml_dtypes bfloat16 array."""
    x = np.zeros((1, 1, 2, 2), ml_dtypes.bfloat16)
    sess_bytes = model("MaxPool", [x], kernel_shape=[2, 2])
    onnx.checker.check_model(onnx.load_from_string(sess_bytes))  # valid ONNX
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        ort.InferenceSession(sess_bytes, providers=["CPUExecutionProvider"])
    f32 = ort.InferenceSession(model("MaxPool", [x.astype(np.float32)], kernel_shape=[2, 2]),
                               providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="can't be converted"):
        f32.run(None, {"x0": x})
    got = pa.pool2d(np.full((1, 1, 2, 2), 1.5, ml_dtypes.bfloat16), "avg", 2,
                    data_format="NCHW", **ORT)
    assert got.dtype == ml_dtypes.bfloat16 and got.ravel().tolist() == [1.5]


def test_pads_must_be_smaller_than_the_kernel():
    """Quirk 3: ONNX allows any pads >= 0; onnxruntime refuses a pad as large as the kernel
    (same padding with dilation makes one: window 2, dilation 3 over 2 cells pads (1, 2))."""
    x = row([3.0, -5.0])
    attrs = dict(kernel_shape=[2], strides=[1], dilations=[3], pads=[1, 2])
    onnx.checker.check_model(onnx.load_from_string(model("MaxPool", [x], **attrs)),
                             full_check=True)
    with pytest.raises(Exception, match="Pad should be smaller than kernel"):
        run("MaxPool", [x], **attrs)
    y, idx = pa.pool1d(x, "max", 2, 1, "same", 3, data_format="NCW", return_indices=True, **ORT)
    assert y.ravel().tolist() == [-math.inf, 3.0] and idx.ravel().tolist() == [-1, 0]


def test_windows_of_padding_only():
    """Quirk 4: 2 cells, window 2, dilation 3, pads (1, 1): the only window's taps (-1 and 2)
    are padding. ONNX leaves it undefined; onnxruntime gives the values below."""
    x = row([3.0, -5.0])
    geo = dict(kernel_shape=[2], strides=[1], dilations=[3], pads=[1, 1])
    assert run("MaxPool", [x], **geo)[0] == [FLT_LOWEST]
    assert run("MaxPool", [x], 2, **geo)[0] == [FLT_LOWEST]
    assert run("AveragePool", [x], count_include_pad=0, **geo)[0] == [0.0]  # not 0 / 0
    assert run("AveragePool", [x], count_include_pad=1, **geo)[0] == [0.0]
    assert run("LpPool", [x], p=2, **geo)[0] == [0.0]
    kw = dict(window=2, stride=1, padding=1, dilation=3, data_format="NCW", **ORT)
    y, idx = pa.pool1d(x, "max", **kw, return_indices=True)
    assert y.tolist() == [[[-math.inf]]] and idx.tolist() == [[[-1]]]
    assert np.isnan(pa.pool1d(x, "avg", **kw)).all()


def test_only_the_batch_may_be_empty():
    """Quirk 5: an empty batch pools; an empty channel dim is refused."""
    assert run("MaxPool", [np.zeros((0, 3, 4), np.float32)], kernel_shape=[2])[0] == []
    with pytest.raises(Exception, match="Only N can be zero"):
        run("MaxPool", [np.zeros((2, 0, 4), np.float32)], kernel_shape=[2])
    assert pa.pool1d(np.zeros((2, 0, 4), np.float32), "max", 2, data_format="NCW",
                     **ORT).shape == (2, 0, 2)


def test_max_unpool_limits():
    """Quirk 6: MaxUnpool counts indices over N*C*plane, needs its output_shape input for the
    plane (else it infers kernel * pooled), refuses index -1 and has float16/32 kernels only."""
    y = np.array([[[5.0, 7.0]]], np.float32)
    i = np.array([[[1, 4]]], np.int64)
    with pytest.raises(Exception, match="out of bounds"):
        run("MaxUnpool", [y, i], kernel_shape=[2], strides=[2])  # plane of 4, index 4
    shape = np.array([1, 1, 6], np.int64)
    assert run("MaxUnpool", [y, i, shape], kernel_shape=[2], strides=[2])[0] == [
        0, 5, 0, 0, 7, 0]
    with pytest.raises(Exception, match="out of bounds"):
        run("MaxUnpool", [y, np.array([[[-1, 4]]]), shape], kernel_shape=[2], strides=[2])
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        run("MaxUnpool", [y.astype(np.float64), i, shape], kernel_shape=[2], strides=[2])
    got = pa.max_unpool1d(y.astype(np.float64), np.array([[[-1, 4]]]), 6, data_format="NCW",
                          **ORT)
    assert got.ravel().tolist() == [0, 0, 0, 0, 7, 0]


def test_global_lp_pool():
    """Quirk 7: no GlobalLpPool kernel at opset 22 (there is one up to opset 21)."""
    x = np.full((1, 1, 2, 2), 30000.0, np.float16)  # squares past float16's largest value
    assert not _builds("GlobalLpPool", "float32") and not _builds("GlobalLpPool", "float16")
    assert _builds("GlobalLpPool", "float32", opset=21)
    assert run("GlobalLpPool", [x], opset=21, p=2)[0] == [60000.0]
    assert run("LpPool", [x], kernel_shape=[2, 2], p=2)[0] == [60000.0]  # float32 inside
    assert pa.global_pool2d(x, "lp", data_format="NCHW", **ORT).tolist() == [[60000.0]]


# ---------------------------------------------------------------------- pinned: no deviation


@pytest.mark.parametrize("opset", [11, 18, 19, 22])
def test_ceil_mode_divisors_with_count_include_pad(opset):
    """FRAMEWORK-NOTES D4, pytorch#183528: 4x4, window 3, stride 2, pad 1, ceil, padding
    counted. The issue's export gave 1.333 in the corner; onnxruntime 1.32's kernel gives
    PyTorch's divisors (the padded cells counted, the ceil cells not) at every opset."""
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    got = run("AveragePool", [x], opset=opset, kernel_shape=[3, 3], strides=[2, 2],
              pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1)[0]
    want = [14 / 9, 30 / 9, 12 / 6, 57 / 9, 99 / 9, 36 / 6, 27 / 6, 45 / 6, 16 / 4]
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("opset", [11, 18, 22])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_ceil_mode_drops_a_window_starting_in_the_padding(op, opset):
    """D4 and onnx#4958 / pytorch#131272: [1..5], window 2, stride 2, pad 1, ceil: three
    windows [pad, 1], [2, 3], [4, 5], no fourth of padding only."""
    got = run(op, [row([1, 2, 3, 4, 5])], opset=opset, kernel_shape=[2], strides=[2],
              pads=[1, 1], ceil_mode=1)[0]
    assert got == ([1, 3, 5] if op == "MaxPool" else [1, 2.5, 4.5])


def test_same_lower_with_strides():
    """D6's SAME_LOWER bug is the reference evaluator's: onnxruntime pads the start."""
    got = run("MaxPool", [row([1, 2, 3, 4])], kernel_shape=[3], strides=[2],
              auto_pad="SAME_LOWER")[0]
    assert got == [2, 4]
    got = run("MaxPool", [row([1, 2, 3, 4, 5])], kernel_shape=[2], strides=[2],
              auto_pad="SAME_LOWER")[0]
    assert got == [1, 3, 5]


def test_auto_pad_same_ignores_the_dilation():
    """For exporters (lowering.onnx_auto_pad): 5 cells, window 2, dilation 2 (extent 3),
    SAME_UPPER: ceil(5 / 1) = 5 windows over pads (1, 1); onnxruntime pads as if the extent
    were 2, (0, 1), and gives 4. Explicit pads (pooladapt's node) are right."""
    x = row([1, 2, 3, 4, 5])
    assert run("MaxPool", [x], kernel_shape=[2], dilations=[2], auto_pad="SAME_UPPER")[0] == [
        3, 4, 5, 4]
    assert run("MaxPool", [x], kernel_shape=[2], dilations=[2], pads=[1, 1])[0] == [
        2, 3, 4, 5, 4]
    got = pa.pool1d(x, "max", 2, 1, "same", 2, data_format="NCW", **ORT)
    assert got.ravel().tolist() == [2, 3, 4, 5, 4]


def test_indices_count_over_the_whole_tensor():
    """D9: ONNX Indices are flat over N*C*H*W; pooladapt's are per plane."""
    x = np.zeros((2, 2, 2, 2), np.float32)
    x[:, :, 1, 0] = 1
    assert run("MaxPool", [x], 2, kernel_shape=[2, 2])[1] == [2, 6, 10, 14]
    _, idx = pa.pool2d(x, "max", 2, data_format="NCHW", return_indices=True, **ORT)
    assert idx.ravel().tolist() == [2, 2, 2, 2]
