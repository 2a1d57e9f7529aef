"""Index converters and the oracle against ONNX's own reference evaluator (MaxPool opset 22)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import pooladapt as pa
from pooladapt import indices


def onnx_maxpool(x: np.ndarray, **attrs):
    node = helper.make_node("MaxPool", ["X"], ["Y", "I"], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None] * x.ndim),
         helper.make_tensor_value_info("I", TensorProto.INT64, [None] * x.ndim)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    onnx.checker.check_model(model)
    return ReferenceEvaluator(model).run(None, {"X": x})


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize(("kernel", "strides", "pads"), [
    ((2, 2), (2, 2), (0, 0, 0, 0)),
    ((3, 3), (2, 2), (1, 1, 1, 1)),
    ((2, 3), (1, 2), (0, 1, 1, 0)),
])
def test_indices_convert_to_onnx_reference(kernel, strides, pads, storage_order):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    want_y, want_i = onnx_maxpool(x, kernel_shape=kernel, strides=strides, pads=list(pads),
                                  storage_order=storage_order)
    padding = ((pads[0], pads[2]), (pads[1], pads[3]))
    y, idx = pa.pool2d(x, "max", kernel, strides, padding, data_format="NCHW",
                       return_indices=True)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(indices.to_onnx(idx, x.shape, "NCHW", storage_order), want_i)
    np.testing.assert_array_equal(indices.from_onnx(want_i, x.shape, "NCHW", storage_order), idx)


def test_ceil_mode_agrees_with_onnx_reference():
    # FRAMEWORK-NOTES D4: the ONNX reference drops the window that starts in the padding.
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 1, 5)
    want_y, _ = onnx_maxpool(x, kernel_shape=(1, 2), strides=(1, 2), pads=[0, 1, 0, 1],
                             ceil_mode=1)
    y = pa.pool2d(x, "max", (1, 2), (1, 2), ((0, 0), (1, 1)), ceil_mode=True,
                  data_format="NCHW")
    np.testing.assert_array_equal(y, want_y)
    assert y.ravel().tolist() == [1, 3, 5]
