"""Fractional max pooling against torch itself: the core's window rule is ATen's for thousands
of random geometries and samples in every float dtype, the drop-in layers give torch's values,
indices and gradients for the same samples (and draw the samples torch draws), and the two
places where torch differs from the contract are pinned: its index of a NaN window (the last
NaN) and its stricter 3-D size check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pooladapt import dispatch, oracle
from pooladapt.layers import torch as layers
from pooladapt.spec import make_fractional_spec

TORCH = dispatch.load("torch").BACKEND
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _geometries(ndim: int, count: int, seed: int):
    g = torch.Generator().manual_seed(seed)

    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    made = 0
    while made < count:
        size = [draw(2, 16 if ndim == 2 else 8) for _ in range(ndim)]
        kernel = [draw(1, min(3, n)) for n in size]
        # torch's 3-D check is strict (out + k - 1 < in), its 2-D one is not
        most = [n - k + (1 if ndim == 2 else 0) for n, k in zip(size, kernel)]
        if min(most) >= 1:
            made += 1
            yield size, kernel, [draw(1, m) for m in most]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("ndim", [2, 3])
def test_the_window_rule_is_atens(ndim, dtype):
    """On an increasing input each window's maximum is its last cell, so torch's indices show
    its windows: they equal the oracle's (the core's rule) for every geometry and sample."""
    fn = getattr(F, f"fractional_max_pool{ndim}d")
    planes = 0
    for i, (size, kernel, out) in enumerate(_geometries(ndim, 150, seed=ndim)):
        cells = int(np.prod(size))
        if cells > 256 and dtype in (torch.float16, torch.bfloat16):
            continue  # bfloat16 holds integers up to 256 exactly: larger planes would tie
        x = torch.arange(cells, dtype=torch.float64).view(1, 1, *size).expand(2, 3, *size)
        samples = torch.rand(2, 3, ndim, generator=torch.Generator().manual_seed(i),
                             dtype=torch.float64).to(dtype)
        _, idx = fn(x.to(dtype), kernel, output_size=out, return_indices=True,
                    _random_samples=samples)
        spec = make_fractional_spec(kernel, out, None, True, ndim=ndim,
                                    data_format="channels_first")
        _, want = oracle.fractional_max_pool(x.numpy(), spec, TORCH.to_numpy(samples))
        np.testing.assert_array_equal(idx.numpy(), want, err_msg=f"{size} {kernel} {out}")
        planes += 6
    assert planes >= 300  # enough geometries survived the 16-bit limit


LAYER_CASES = [
    pytest.param(2, (2, 3, 9, 8), dict(kernel_size=2, output_size=(4, 5)), id="2d-size"),
    pytest.param(2, (3, 7, 11), dict(kernel_size=(2, 3), output_ratio=0.5), id="2d-unbatched"),
    pytest.param(2, (1, 2, 12, 5), dict(kernel_size=3, output_size=(7, 1),
                                        return_indices=True), id="2d-indices"),
    pytest.param(3, (2, 2, 9, 8, 7), dict(kernel_size=2, output_size=(3, 4, 5),
                                          return_indices=True), id="3d-indices"),
    pytest.param(3, (2, 7, 6, 9), dict(kernel_size=(1, 2, 3), output_ratio=(0.5, 0.6, 0.4)),
                 id="3d-unbatched-ratio"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(("ndim", "shape", "kwargs"), LAYER_CASES)
def test_layers_equal_torch_for_the_same_samples(ndim, shape, kwargs, dtype):
    name = f"FractionalMaxPool{ndim}d"
    batch = shape[0] if len(shape) == ndim + 2 else 1
    chans = shape[1] if len(shape) == ndim + 2 else shape[0]
    for seed in range(5):
        samples = torch.rand(batch, chans, ndim, generator=torch.Generator().manual_seed(seed),
                             dtype=dtype)
        native = getattr(nn, name)(**kwargs, _random_samples=samples)
        ours = getattr(layers, name)(**kwargs, _random_samples=samples)
        x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
        xn, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
        want, got = native(xn), ours(xo)
        for w, o in zip(want if isinstance(want, tuple) else (want,),
                        got if isinstance(got, tuple) else (got,)):
            assert (o.dtype, o.shape) == (w.dtype, w.shape)
            torch.testing.assert_close(o, w, rtol=0, atol=0)
        g = torch.randn_like(want[0] if isinstance(want, tuple) else want)
        (want[0] if isinstance(want, tuple) else want).backward(g)
        (got[0] if isinstance(got, tuple) else got).backward(g)
        torch.testing.assert_close(xo.grad, xn.grad, rtol=0, atol=0)


def test_layers_draw_the_samples_torch_draws():
    for native, ours, x in ((nn.FractionalMaxPool2d(2, output_ratio=0.5),
                             layers.FractionalMaxPool2d(2, output_ratio=0.5),
                             torch.randn(4, 3, 10, 9)),
                            (nn.FractionalMaxPool3d(2, output_size=3),
                             layers.FractionalMaxPool3d(2, output_size=3),
                             torch.randn(3, 8, 7, 9))):  # unbatched: torch draws one row
        torch.manual_seed(7)
        want = native(x)
        torch.manual_seed(7)
        got = ours(x)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_torch_indexes_the_last_nan_and_pooladapt_the_first():
    x = torch.tensor([[[[np.nan, 1.0, np.nan, 2.0]]]])
    samples = torch.zeros(1, 1, 2)  # one window of the whole row
    _, native = F.fractional_max_pool2d(x, (1, 4), output_size=(1, 1), return_indices=True,
                                        _random_samples=samples)
    assert native.item() == 2  # torch: every NaN replaces the maximum, the last one stays
    y, ours = layers.FractionalMaxPool2d((1, 4), (1, 1), return_indices=True,
                                         _random_samples=samples)(x)
    assert ours.item() == 0 and torch.isnan(y).all()
    xg = x.clone().requires_grad_()
    layers.FractionalMaxPool2d((1, 4), (1, 1), _random_samples=samples)(xg).sum().backward()
    assert xg.grad.tolist() == [[[[1.0, 0.0, 0.0, 0.0]]]]  # the gradient follows the index


def test_torch_refuses_a_3d_size_whose_windows_fit_and_pooladapt_pools_it():
    # out + k - 1 == in: windows 0..3 of size 2 over 5 cells fit; torch's 3-D check wants
    # out + k - 1 < in (its 2-D check takes it)
    x = torch.randn(1, 2, 5, 5, 5)
    samples = torch.rand(1, 2, 3)
    with pytest.raises(RuntimeError, match="too large relative to input"):
        F.fractional_max_pool3d(x, 2, output_size=(4, 4, 4), _random_samples=samples)
    got = layers.FractionalMaxPool3d(2, (4, 4, 4), _random_samples=samples)(x)
    spec = make_fractional_spec(2, (4, 4, 4), ndim=3, data_format="channels_first")
    np.testing.assert_array_equal(got.numpy(), oracle.fractional_max_pool(
        x.numpy(), spec, samples.numpy()).astype(np.float32))


def test_integer_input_pools_exactly_where_torch_has_no_kernel():
    x = torch.randint(-2**62, 2**62, (2, 3, 9, 8), dtype=torch.int64)
    samples = torch.rand(2, 3, 2, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        nn.FractionalMaxPool2d(2, (4, 4), _random_samples=samples)(x)
    got = layers.FractionalMaxPool2d(2, (4, 4), _random_samples=samples)(x)
    spec = make_fractional_spec(2, (4, 4), ndim=2, data_format="channels_first")
    np.testing.assert_array_equal(got.numpy(), oracle.fractional_max_pool(
        x.numpy(), spec, samples.numpy()))


def test_compiled_layer_equals_eager():
    torch._dynamo.reset()
    samples = torch.rand(2, 3, 2)
    layer = layers.FractionalMaxPool2d(3, output_ratio=(0.5, 0.7), return_indices=True,
                                       _random_samples=samples)
    x = torch.randn(2, 3, 11, 10)
    x[0, 1, 2:5, 3] = np.nan
    compiled = torch.compile(layer, fullgraph=True)
    for got, want in zip(compiled(x), layer(x)):
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_state_dict_and_repr_are_torchs():
    samples = torch.rand(1, 3, 2)
    native = nn.FractionalMaxPool2d(2, output_ratio=0.5, _random_samples=samples)
    ours = layers.FractionalMaxPool2d(2, output_ratio=0.5, _random_samples=samples)
    assert repr(ours) == repr(native) == "FractionalMaxPool2d()"
    assert ours.state_dict().keys() == native.state_dict().keys() == {"_random_samples"}
    assert (ours.kernel_size, ours.output_ratio, ours.output_size) == (
        native.kernel_size, native.output_ratio, native.output_size)
    assert repr(layers.FractionalMaxPool3d(2, 3, data_format="NDHWC")) == (
        "FractionalMaxPool3d(data_format='channels_last')")
