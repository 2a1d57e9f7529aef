"""Fractional max pooling on onnxruntime beyond the conformance suite (tests/conformance/
test_fractional.py runs the shared cases on it): the pooling is one valid ONNX graph per
dtype, reused for every plan and every draw; the values, indices and winners are the
oracle's for uint64 extremes, NaN and signed zeros; drawn samples follow NumPy's seed.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import pooladapt as pa
from pooladapt import oracle
from pooladapt.backends.onnxruntime import graphs
from pooladapt.spec import make_fractional_spec

ORT = dict(backend="onnxruntime")


@pytest.fixture(autouse=True)
def fresh_sessions():
    graphs.clear()
    yield
    graphs.clear()


def test_one_checked_onnx_graph_per_dtype_for_every_plan_and_draw():
    rng = np.random.default_rng(0)
    for shape, size in (((2, 3, 9, 8), (4, 5)), ((1, 2, 12, 7), (5, 3))):
        x = rng.standard_normal(shape).astype(np.float32)
        for _ in range(3):
            pa.fractional_max_pool2d(x, 2, size, data_format="channels_first", **ORT)
    x3 = rng.standard_normal((1, 2, 6, 5, 7)).astype(np.float32)
    pa.fractional_max_pool3d(x3, 2, (3, 4, 3), data_format="channels_first", **ORT)
    keys = [k for k in graphs.MODELS if k[0] == "fractional"]
    assert keys == [("fractional", "float32")]
    model = graphs.MODELS[keys[0]]
    onnx.checker.check_model(model, full_check=True)
    assert {n.op_type for n in model.graph.node} >= {"GatherElements", "ArgMax", "IsNaN"}
    pa.fractional_max_pool2d(x.astype(np.float16), 2, size, data_format="channels_first",
                             **ORT)
    assert ("fractional", "float32") in graphs.MODELS  # float16 runs in float32, exactly
    assert len([k for k in graphs.MODELS if k[0] == "fractional"]) == 1


def test_uint64_extremes_nan_and_signed_zeros_win_as_the_oracle_says():
    samples = np.random.default_rng(1).random((1, 2, 2))
    spec = make_fractional_spec(2, (3, 3), None, True, ndim=2, data_format="channels_first")
    top = np.iinfo(np.uint64).max
    xu = np.array([[[0, top, top - 1, 5], [top - 1, 2, 0, top], [1, 1, 1, 1], [0, 0, 0, 0]]] * 2,
                  np.uint64).reshape(1, 2, 4, 4)
    xf = np.array([[[-0.0, 0.0, -np.inf, np.nan], [0.0, -0.0, -np.inf, 1.0],
                    [np.nan, 2.0, -np.inf, -np.inf], [-np.inf, np.nan, -np.inf, -np.inf]]] * 2,
                  np.float64).reshape(1, 2, 4, 4)
    for x in (xu, xf):
        want_y, want_idx = oracle.fractional_max_pool(x, spec, samples)
        y, idx = pa.fractional_max_pool2d(x, 2, (3, 3), None, True, samples,
                                          data_format="channels_first", **ORT)
        assert y.dtype == x.dtype and idx.dtype == np.int64
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(y, want_y.astype(x.dtype))
        assert np.signbit(y).tolist() == np.signbit(want_y.astype(x.dtype)).tolist()


def test_drawn_samples_follow_numpy_s_global_seed():
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 8)).astype(np.float32)

    def draw():
        np.random.seed(4)
        return pa.fractional_max_pool2d(x, 2, (4, 4), return_indices=True,
                                        data_format="channels_first", **ORT)[1]

    np.testing.assert_array_equal(draw(), draw())
    np.random.seed(4)
    want = pa.fractional_max_pool2d(x, 2, (4, 4), return_indices=True,
                                    data_format="channels_first", backend="numpy")[1]
    np.testing.assert_array_equal(draw(), want)  # the NumPy backend's draw, the same windows
