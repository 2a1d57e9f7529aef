"""Index format converters against the formats measured in FRAMEWORK-NOTES D9."""

from __future__ import annotations

import numpy as np
import pytest

import pooladapt as pa
from pooladapt import indices


def d9_input():
    # x of shape (2,2,2,2) NCHW, each plane's max at (h=1, w=0)
    x = np.zeros((2, 2, 2, 2), dtype=np.float32)
    x[:, :, 1, 0] = 1
    return x


def test_canonical_d9():
    _, idx = pa.pool2d(d9_input(), "max", 2, data_format="NCHW", return_indices=True)
    assert idx.ravel().tolist() == [2, 2, 2, 2]


def test_tf_argmax_format_with_and_without_batch():
    x = d9_input()
    _, idx = pa.pool2d(x, "max", 2, data_format="NCHW", return_indices=True)
    tf_idx = indices.to_tf_argmax(idx, x.shape, "NCHW")
    assert tf_idx.shape == (2, 1, 1, 2)  # NHWC
    assert tf_idx.ravel().tolist() == [4, 5, 4, 5]
    tf_b = indices.to_tf_argmax(idx, x.shape, "NCHW", include_batch_in_index=True)
    assert tf_b.ravel().tolist() == [4, 5, 12, 13]
    np.testing.assert_array_equal(indices.from_tf_argmax(tf_idx, x.shape, "NCHW"), idx)
    np.testing.assert_array_equal(
        indices.from_tf_argmax(tf_b, x.shape, "NCHW", include_batch_in_index=True), idx)


def test_onnx_format_both_storage_orders():
    x = d9_input()
    _, idx = pa.pool2d(x, "max", 2, data_format="NCHW", return_indices=True)
    onnx0 = indices.to_onnx(idx, x.shape, "NCHW")
    assert onnx0.ravel().tolist() == [2, 6, 10, 14]
    onnx1 = indices.to_onnx(idx, x.shape, "NCHW", storage_order=1)
    assert onnx1.ravel().tolist() == [1, 5, 9, 13]
    np.testing.assert_array_equal(indices.from_onnx(onnx0, x.shape, "NCHW"), idx)
    np.testing.assert_array_equal(indices.from_onnx(onnx1, x.shape, "NCHW", storage_order=1), idx)


def test_round_trips_channels_last_3d():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 6, 3))
    _, idx = pa.pool3d(x, "max", 2, data_format="NDHWC", return_indices=True)
    for order in (0, 1):
        back = indices.from_onnx(indices.to_onnx(idx, x.shape, "NDHWC", order), x.shape,
                                 "NDHWC", order)
        np.testing.assert_array_equal(back, idx)
    for batch in (False, True):
        tf_idx = indices.to_tf_argmax(idx, x.shape, "NDHWC", batch)
        np.testing.assert_array_equal(indices.from_tf_argmax(tf_idx, x.shape, "NDHWC", batch), idx)


def test_bad_arguments():
    x = d9_input()
    _, idx = pa.pool2d(x, "max", 2, data_format="NCHW", return_indices=True)
    with pytest.raises(ValueError, match="storage_order"):
        indices.to_onnx(idx, x.shape, "NCHW", storage_order=2)
    with pytest.raises(TypeError, match="integers"):
        indices.to_onnx(idx.astype(float), x.shape, "NCHW")
    with pytest.raises(ValueError, match="expected a 4-D input"):
        indices.to_tf_argmax(idx[0], x.shape, "NCHW")
