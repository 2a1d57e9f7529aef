"""PyTorch's own pooling ops against FRAMEWORK-NOTES.md, next to pooladapt's canonical answer.

Each test runs the raw torch op and asserts the documented native value (hand-computed from
the notes), so a change in PyTorch is noticed, then asserts what pooladapt gives instead.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import pooladapt as pa
from pooladapt.layers import torch as layers

CF = dict(data_format="channels_first")


def _row(values, dtype=torch.float32) -> torch.Tensor:
    """A (1, 1, 1, W) image with one row."""
    return torch.tensor(values, dtype=dtype).view(1, 1, 1, -1)


def _flat(t: torch.Tensor) -> list:
    return t.flatten().tolist()


def test_d1_tf_same_is_not_torch_symmetric_padding():
    x = _row([1.0, 2.0, 3.0, 4.0])
    k, s = (1, 3), (1, 2)
    # torch pads one cell on both sides: windows [pad,1,2] and [2,3,4]
    assert _flat(F.max_pool2d(x, k, s, (0, 1))) == [2.0, 4.0]
    assert _flat(F.avg_pool2d(x, k, s, (0, 1))) == [1.0, 3.0]  # (0+1+2)/3, (2+3+4)/3
    assert _flat(F.avg_pool2d(x, k, s, (0, 1), count_include_pad=False)) == [1.5, 3.0]
    # and cannot express SAME's (0, 1) at all
    with pytest.raises(TypeError):
        F.max_pool2d(x, k, s, padding="same")
    with pytest.raises(RuntimeError, match="at most half"):
        F.max_pool2d(x, (1, 2), (1, 2), (0, 2))
    # pooladapt: SAME pads (0, 1) per ONNX SAME_UPPER: windows [1,2,3] and [3,4,pad]
    assert _flat(pa.pool2d(x, "max", k, s, "same", **CF)) == [3.0, 4.0]
    assert _flat(pa.pool2d(x, "avg", k, s, "same", **CF)) == [2.0, 3.5]
    assert _flat(layers.MaxPool2d(k, s, "same")(x)) == [3.0, 4.0]
    # SAME_LOWER puts the odd cell first: windows [pad,1,2] and [2,3,4]
    assert _flat(pa.pool2d(x, "max", k, s, "same_lower", **CF)) == [2.0, 4.0]


def test_d2_padding_never_wins_a_max():
    x = -(torch.arange(16.0) + 1).view(1, 1, 4, 4)
    # d2l's zero pad of the top and left, then VALID, k=3, s=2: zeros win
    zero_padded = F.max_pool2d(F.pad(x, (1, 0, 1, 0)), 3, 2)
    assert _flat(zero_padded) == [0.0, 0.0, 0.0, -6.0]
    assert _flat(pa.pool2d(x, "max", 3, 2, ((1, 0), (1, 0)), **CF)) == [-1.0, -2.0, -5.0, -6.0]


def test_d3_count_include_pad_defaults_to_true_in_torch():
    ones = torch.ones(1, 1, 3, 3)
    first_row = [4 / 9, 6 / 9, 4 / 9]
    torch.testing.assert_close(F.avg_pool2d(ones, 3, 1, 1)[0, 0, 0], torch.tensor(first_row))
    torch.testing.assert_close(torch.nn.AvgPool2d(3, 1, 1)(ones)[0, 0, 0],
                               torch.tensor(first_row))
    # pooladapt: padding excluded by default (ONNX); the drop-in layer keeps torch's default
    assert _flat(pa.pool2d(ones, "avg", 3, 1, 1, **CF)) == [1.0] * 9
    torch.testing.assert_close(layers.AvgPool2d(3, 1, 1)(ones)[0, 0, 0], torch.tensor(first_row))
    # asymmetric SAME, count_include_pad: [1,2,3] / 3 and [3,4,pad] / 3
    x = _row([1.0, 2.0, 3.0, 4.0], torch.float64)
    y = pa.pool2d(x, "avg", (1, 3), (1, 2), "same", count_include_pad=True, **CF)
    assert _flat(y) == pytest.approx([2.0, 7 / 3])


def test_d4_ceil_mode_drops_a_window_that_starts_in_the_padding():
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    # 3 outputs, not 4: a 4th window would start at the right padding cell
    assert _flat(F.max_pool1d(x, 2, 2, 1, ceil_mode=True)) == [1.0, 3.0, 5.0]
    assert _flat(pa.pool1d(x, "max", 2, 2, 1, ceil_mode=True, **CF)) == [1.0, 3.0, 5.0]
    # 4x4 of 1..16, k=3, s=2, p=1, ceil, count_include_pad: the last column's windows hold
    # one real and one padded column; the cell past the padded input is not counted:
    # (1+2+5+6)/9, (2+3+4+6+7+8)/9, (4+8)/6
    x = (torch.arange(16.0, dtype=torch.float64) + 1).view(1, 1, 4, 4)
    want = [14 / 9, 30 / 9, 12 / 6]
    native = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=True)
    assert _flat(native[0, 0, 0]) == pytest.approx(want)
    ours = pa.pool2d(x, "avg", 3, 2, 1, ceil_mode=True, count_include_pad=True, **CF)
    assert _flat(ours[0, 0, 0]) == pytest.approx(want)


def test_d5_nan_propagates_in_torch_max_pooling():
    for values in ([math.nan, 1.0, 2.0, 3.0], [1.0, math.nan, 2.0, 3.0]):
        native = _flat(F.max_pool1d(torch.tensor([[values]]), 2))
        ours = _flat(pa.pool1d(torch.tensor([[values]]), "max", 2, **CF))
        for got in (native, ours):
            assert math.isnan(got[0]) and got[1] == 3.0


def test_d9_indices_are_flat_within_each_plane():
    x = torch.zeros(2, 2, 2, 2)
    x[:, :, 1, 0] = 1.0  # every plane's maximum at (h=1, w=0)
    _, native = F.max_pool2d(x, 2, return_indices=True)
    _, ours = pa.pool2d(x, "max", 2, return_indices=True, **CF)
    assert _flat(native) == _flat(ours) == [2, 2, 2, 2]
    # with padding the indices still address the unpadded 3x3 plane
    x = torch.arange(9.0).view(1, 1, 3, 3)
    _, native = F.max_pool2d(x, 2, 2, 1, return_indices=True)
    _, ours = pa.pool2d(x, "max", 2, 2, 1, return_indices=True, **CF)
    assert _flat(native) == _flat(ours) == [0, 2, 6, 8]


@pytest.mark.parametrize(("values", "window", "stride", "want"), [
    ([[1.0, 1.0], [1.0, 1.0]], (2, 2), None, [1.0, 0.0, 0.0, 0.0]),  # a uniform window
    ([[1.0, 3.0, 3.0, 2.0]], (1, 4), None, [0.0, 1.0, 0.0, 0.0]),
    ([[1.0, 2.0, 2.0, 1.0]], (1, 2), 1, [0.0, 2.0, 1.0, 0.0]),  # overlapping windows
])
def test_d10_tied_maxima_give_the_gradient_to_the_first(values, window, stride, want):
    x = torch.tensor([[values]], requires_grad=True)
    F.max_pool2d(x, window, stride).sum().backward()
    assert _flat(x.grad) == want
    x.grad = None
    pa.pool2d(x, "max", window, stride, **CF).sum().backward()
    assert _flat(x.grad) == want


def test_d10_reduce_based_max_splits_the_gradient_but_pooladapt_global_does_not():
    x = torch.ones(1, 1, 2, 2, requires_grad=True)
    x.amax(dim=(2, 3)).sum().backward()
    assert _flat(x.grad) == [0.25] * 4
    x.grad = None
    pa.global_pool2d(x, "max", **CF).sum().backward()
    assert _flat(x.grad) == [1.0, 0.0, 0.0, 0.0]


def test_d11_torch_lp_pool_keeps_the_sign():
    x = torch.tensor([[[-1.0, -2.0, -3.0, -4.0]]])
    assert _flat(F.lp_pool1d(x, 1.0, 4)) == [-10.0]
    assert math.isnan(F.lp_pool1d(x, 3.0, 4).item())  # (-100) ** (1/3)
    assert _flat(pa.pool1d(x, "lp", 4, p=1.0, **CF)) == [10.0]
    assert pa.pool1d(x, "lp", 4, p=3.0, **CF).item() == pytest.approx(100 ** (1 / 3))
    assert _flat(layers.LPPool1d(1, 4)(x)) == [10.0]


def test_lp_pool_with_ceil_mode_scales_a_partial_window_in_torch():
    # found while writing the layers: torch's lp_pool is avg_pool(x**p) * window, and a
    # partial last window's average is over the cells it has: 5 * 2 instead of 5
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0]]])
    assert _flat(torch.nn.LPPool1d(1, 2, 2, ceil_mode=True)(x)) == [3.0, 7.0, 10.0]
    assert _flat(layers.LPPool1d(1, 2, 2, ceil_mode=True)(x)) == [3.0, 7.0, 5.0]
