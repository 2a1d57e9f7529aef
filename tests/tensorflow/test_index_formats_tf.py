"""pooladapt.indices against the real tf.nn.max_pool_with_argmax."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import pooladapt as pa
from pooladapt import indices


@pytest.mark.parametrize("include_batch", [False, True])
@pytest.mark.parametrize(("window", "stride"), [(2, 2), (3, 2), ((2, 3), (1, 2))])
def test_converters_match_max_pool_with_argmax(window, stride, include_batch):
    x = np.random.default_rng(5).standard_normal((2, 7, 8, 3)).astype(np.float32)
    y_tf, arg = tf.nn.max_pool_with_argmax(x, window, stride, "VALID",
                                           include_batch_in_index=include_batch)
    y, idx = pa.pool2d(x, "max", window, stride, data_format="NHWC", return_indices=True)
    np.testing.assert_array_equal(y, y_tf.numpy())
    np.testing.assert_array_equal(
        indices.to_tf_argmax(idx, x.shape, "NHWC", include_batch), arg.numpy())
    np.testing.assert_array_equal(
        indices.from_tf_argmax(arg.numpy(), x.shape, "NHWC", include_batch), idx)
