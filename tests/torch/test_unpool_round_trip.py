"""Pool with indices then unpool: equal to PyTorch's own max_pool2d/max_unpool2d pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pooladapt as pa


@pytest.mark.parametrize(("window", "stride", "padding"),
                         [(2, 2, 0), (3, 2, 1), ((2, 3), (2, 1), (1, 0))])
@pytest.mark.parametrize("as_numpy", [False, True])
def test_round_trip_matches_torch_max_unpool2d(window, stride, padding, as_numpy):
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    want_y, want_idx = F.max_pool2d(x, window, stride, padding, return_indices=True)
    want = F.max_unpool2d(want_y, want_idx, window, stride, padding, output_size=x.shape[2:])
    src = x.numpy() if as_numpy else x
    y, idx = pa.pool2d(src, "max", window, stride, padding, data_format="NCHW",
                       return_indices=True)
    got = pa.max_unpool2d(y, idx, data_format="NCHW")  # plane remembered from the pooling
    np.testing.assert_array_equal(np.asarray(idx), want_idx.numpy())
    np.testing.assert_array_equal(np.asarray(got), want.numpy())
