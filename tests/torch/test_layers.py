"""PyTorch drop-in layers: equal to torch.nn's own layers over the arguments torch supports,
equal to the oracle for the extras, and usable with torch.compile, torch.export, state_dict
and pickle."""

from __future__ import annotations

import io
import itertools
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from pooladapt import oracle
from pooladapt.layers import torch as layers
from pooladapt.spec import make_adaptive_spec, make_spec

SIZES = {1: (9,), 2: (7, 6), 3: (5, 6, 4)}
GEN = torch.Generator().manual_seed(3)


def _input(ndim: int, size=None, dtype=torch.float32, positive=False) -> torch.Tensor:
    x = torch.randn((2, 3, *(size or SIZES[ndim])), generator=GEN, dtype=dtype)
    return x.abs() + 0.1 if positive else x


def _fits(ndim: int, k: int, p: int, d: int = 1) -> bool:
    """torch's own limits: padding at most half the window, a window inside the padded input."""
    return p <= k // 2 and all(n + 2 * p >= d * (k - 1) + 1 for n in SIZES[ndim])


def _assert_equal(ours, native, exact: bool) -> None:
    if isinstance(native, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(native)
        for o, n in zip(ours, native):
            _assert_equal(o, n, exact)
        return
    assert ours.dtype == native.dtype and ours.shape == native.shape
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(ours, native, equal_nan=True, **tol)


# ------------------------------------------------------------------ the native grids

MAX_GRID = [
    pytest.param(n, k, s, p, d, ceil, idx, id=f"{n}d-k{k}-s{s}-p{p}-d{d}"
                 f"{'-ceil' if ceil else ''}{'-idx' if idx else ''}")
    for n in (1, 2, 3)
    for k, s, p, d, ceil in itertools.product((2, 3), (None, 1, 2), (0, 1), (1, 2),
                                              (False, True))
    for idx in (ceil,)  # half the grid asks for indices
    if _fits(n, k, p, d)
]


@pytest.mark.parametrize(("ndim", "k", "s", "p", "d", "ceil", "idx"), MAX_GRID)
def test_max_pool_equals_torch(ndim, k, s, p, d, ceil, idx):
    x = _input(ndim)
    args = (k, s, p, d, idx, ceil)
    native = getattr(nn, f"MaxPool{ndim}d")(*args)
    ours = getattr(layers, f"MaxPool{ndim}d")(*args)
    _assert_equal(ours(x), native(x), exact=True)
    _assert_equal(ours(x[0]), native(x[0]), exact=True)  # unbatched input, as torch takes it


AVG_GRID = [
    pytest.param(n, k, s, p, ceil, cip, div, id=f"{n}d-k{k}-s{s}-p{p}{'-ceil' if ceil else ''}"
                 f"{'-cip' if cip else ''}{f'-div{div}' if div else ''}")
    for n in (1, 2, 3)
    for k, s, p, ceil, cip in itertools.product((2, 3), (None, 1, 2), (0, 1), (False, True),
                                                (True, False))
    for div in ((None, 2) if n > 1 and cip else (None,))
    if _fits(n, k, p) and (n != 3 or min(SIZES[3]) >= k)
]


@pytest.mark.parametrize(("ndim", "k", "s", "p", "ceil", "cip", "div"), AVG_GRID)
def test_avg_pool_equals_torch(ndim, k, s, p, ceil, cip, div):
    x = _input(ndim)
    args = (k, s, p, ceil, cip) + ((div,) if ndim > 1 else ())
    native = getattr(nn, f"AvgPool{ndim}d")(*args)
    ours = getattr(layers, f"AvgPool{ndim}d")(*args)
    _assert_equal(ours(x), native(x), exact=False)


def test_avg_pool_defaults_are_torchs():
    x = _input(2)
    # count_include_pad=True: corner windows divide by the full window, padding included
    _assert_equal(layers.AvgPool2d(3, 1, 1)(x), nn.AvgPool2d(3, 1, 1)(x), exact=False)
    assert layers.AvgPool2d(3).count_include_pad and layers.AvgPool2d(3).stride == 3


LP_GRID = [
    pytest.param(n, norm, k, s, id=f"{n}d-p{norm}-k{k}-s{s}")
    for n in (1, 2, 3) for norm in (1, 2, 3.5) for k, s in itertools.product((2, 3), (None, 1, 2))
    if all(size >= k for size in SIZES[n])
]


@pytest.mark.parametrize(("ndim", "norm", "k", "s"), LP_GRID)
def test_lp_pool_equals_torch_on_positive_input(ndim, norm, k, s):
    # torch keeps the sign of sum x**p (FRAMEWORK-NOTES D11): equal on positive input only
    x = _input(ndim, positive=True)
    native = getattr(nn, f"LPPool{ndim}d")(norm, k, s)
    ours = getattr(layers, f"LPPool{ndim}d")(norm, k, s)
    _assert_equal(ours(x), native(x), exact=False)


def test_lp_pool_ceil_mode_equals_torch_where_no_window_is_partial():
    x = _input(2, size=(7, 7), positive=True)  # (7 - 3) / 2 exact: ceil adds nothing partial
    _assert_equal(layers.LPPool2d(2, 3, 2, True)(x), nn.LPPool2d(2, 3, 2, True)(x), exact=False)


ADAPTIVE_SIZES = {1: [3, 9, 11], 2: [(3, 2), (7, 6), (4, None), 1, (9, 8)],
                  3: [(2, 3, 2), 1, (None, 4, 5), (6, 7, 5)]}
ADAPTIVE_GRID = [
    pytest.param(n, mode, size, id=f"{n}d-{mode}-{size}")
    for n in (1, 2, 3) for mode in ("Avg", "Max") for size in ADAPTIVE_SIZES[n]
]


@pytest.mark.parametrize(("ndim", "mode", "size"), ADAPTIVE_GRID)
def test_adaptive_pool_equals_torch(ndim, mode, size):
    x = _input(ndim)
    name = f"Adaptive{mode}Pool{ndim}d"
    if mode == "Max":
        for idx in (False, True):
            _assert_equal(getattr(layers, name)(size, idx)(x), getattr(nn, name)(size, idx)(x),
                          exact=True)
    else:
        _assert_equal(getattr(layers, name)(size)(x), getattr(nn, name)(size)(x), exact=False)


UNPOOL_GRID = [
    pytest.param(n, k, s, p, full, id=f"{n}d-k{k}-s{s}-p{p}{'-size' if full else ''}")
    for n in (1, 2, 3) for k, s, p in ((2, None, 0), (3, 2, 1), (2, 1, 1), (3, 3, 0))
    for full in (False, True)
    if _fits(n, k, p)
]


@pytest.mark.parametrize(("ndim", "k", "s", "p", "with_size"), UNPOOL_GRID)
def test_max_unpool_equals_torch(ndim, k, s, p, with_size):
    x = _input(ndim)
    y, idx = getattr(nn, f"MaxPool{ndim}d")(k, s, p, return_indices=True)(x)
    native = getattr(nn, f"MaxUnpool{ndim}d")(k, s, p)
    ours = getattr(layers, f"MaxUnpool{ndim}d")(k, s, p)
    size = x.shape[2:] if with_size else None
    try:
        want = native(y, idx, size)
    except RuntimeError:  # torch's default size is smaller than the pooled input: an index
        with pytest.raises(ValueError, match="outside"):  # falls outside, and we say so
            ours(y, idx, size)
        return
    _assert_equal(ours(y, idx, size), want, exact=True)
    _assert_equal(ours(y, idx, x.shape), native(y, idx, x.shape), exact=True)  # full shape


# ------------------------------------------------------------------ the extras, against the oracle


def _oracle(x: torch.Tensor, mode: str, ndim: int, **kw) -> np.ndarray:
    return oracle.pool(x.double().numpy(), make_spec(mode, **kw, ndim=ndim))


EXTRAS = [
    ("MaxPool", "max", dict(kernel_size=3, stride=2, padding="same"), {}),
    ("MaxPool", "max", dict(kernel_size=3, stride=2, padding="same_lower", ceil_mode=True), {}),
    ("MaxPool", "max", dict(kernel_size=3, stride=1, padding=2, dilation=2), {}),  # pad > k/2
    ("AvgPool", "avg", dict(kernel_size=3, stride=2, padding="same", count_include_pad=False),
     {}),
    ("AvgPool", "avg", dict(kernel_size=3, stride=2, padding="same"), {}),  # torch's cip default
    ("AvgPool", "avg", dict(kernel_size=2, stride=1, padding=1, dilation=2), {}),
    ("AvgPool", "avg", dict(kernel_size=3, padding=((0, 2),), ceil_mode=True), {"1d": True}),
    ("LPPool", "lp", dict(norm_type=2, kernel_size=2, stride=1, padding=1, dilation=2), {}),
    ("LPPool", "lp", dict(norm_type=3, kernel_size=3, stride=2, padding="same"), {}),
]


def _to_spec_args(mode: str, kw: dict, fmt: str) -> dict:
    spec = dict(window=kw["kernel_size"], stride=kw.get("stride"),
                padding=kw.get("padding", 0), dilation=kw.get("dilation", 1),
                ceil_mode=kw.get("ceil_mode", False), data_format=fmt)
    if mode == "avg":
        spec["count_include_pad"] = kw.get("count_include_pad", True)
    if mode == "lp":
        spec["p"] = kw["norm_type"]
    return spec


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
@pytest.mark.parametrize(("name", "mode", "kw", "only"), EXTRAS, ids=lambda v: str(v))
def test_extras_equal_the_oracle(name, mode, kw, only, fmt):
    for ndim in (1, 2, 3):
        if only and f"{ndim}d" not in only:
            continue
        x = _input(ndim, dtype=torch.float64)
        if fmt == "channels_last":
            x = x.movedim(1, -1).contiguous()
        layer = getattr(layers, f"{name}{ndim}d")(**kw, data_format=fmt)
        want = _oracle(x, mode, ndim, **_to_spec_args(mode, kw, fmt))
        np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-12, atol=1e-12)


def test_channels_last_layers_equal_channels_first_on_the_permuted_input():
    x = _input(2)
    for first, last in [
        (layers.MaxPool2d(3, 2, 1, return_indices=True),
         layers.MaxPool2d(3, 2, 1, return_indices=True, data_format="NHWC")),
        (layers.AvgPool2d(3, 2, 1), layers.AvgPool2d(3, 2, 1, data_format="NHWC")),
        (layers.AdaptiveMaxPool2d((3, 4), True),
         layers.AdaptiveMaxPool2d((3, 4), True, data_format="NHWC")),
    ]:
        want = first(x)
        got = last(x.permute(0, 2, 3, 1))
        for w, g in zip(want, got) if isinstance(want, tuple) else [(want, got)]:
            torch.testing.assert_close(g, w.permute(0, 2, 3, 1))
    y, idx = layers.MaxPool2d(2, return_indices=True, data_format="NHWC")(x.permute(0, 2, 3, 1))
    up = layers.MaxUnpool2d(2, data_format="NHWC")(y, idx, (7, 6))
    ny, nidx = nn.MaxPool2d(2, return_indices=True)(x)
    torch.testing.assert_close(up, nn.MaxUnpool2d(2)(ny, nidx, (7, 6)).permute(0, 2, 3, 1))


def test_adaptive_oracle_on_channels_last():
    x = _input(3).movedim(1, -1).contiguous()
    got = layers.AdaptiveAvgPool3d((2, 4, 3), data_format="channels_last")(x)
    spec = make_adaptive_spec("avg", (2, 4, 3), ndim=3, data_format="channels_last")
    np.testing.assert_allclose(got.numpy(), oracle.adaptive_pool(x.numpy(), spec),
                               rtol=2e-6, atol=2e-6)


# ------------------------------------------------------------------ argument handling


def test_repr_matches_torch_for_torch_arguments():
    pairs = [("MaxPool2d", (3, 2, 1)), ("AvgPool2d", (3, 2, 1)), ("AvgPool1d", (2,)),
             ("LPPool2d", (2, 3)), ("AdaptiveAvgPool2d", ((4, None),)),
             ("AdaptiveMaxPool3d", (2,)), ("MaxUnpool2d", (2,)), ("MaxPool1d", (2, 1, 1, 2))]
    for name, args in pairs:
        assert repr(getattr(layers, name)(*args)) == repr(getattr(nn, name)(*args))
    assert repr(layers.AvgPool2d(3, padding="same", dilation=2, data_format="NHWC")) == (
        "AvgPool2d(kernel_size=3, stride=3, padding='same', dilation=2, "
        "data_format='channels_last')")


BAD_TORCH_ARGUMENTS = [  # each raises when the layer is called, as torch's layer does
    (lambda: layers.MaxPool2d(2, padding=2), ValueError, "padding must be smaller"),
    (lambda: layers.MaxPool2d(2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: layers.AvgPool2d(3, padding="same", divisor_override=4), ValueError,
     "divisor_override"),
    (lambda: layers.AvgPool2d(3, padding=1, dilation=2, divisor_override=4), ValueError,
     "divisor_override"),
    (lambda: layers.AvgPool2d(2, divisor_override=0), ValueError, "divisor_override"),
    (lambda: layers.LPPool2d(0, 2), ValueError, "p must be"),
    (lambda: layers.MaxPool2d(2.0), TypeError, "window must be an integer"),
    (lambda: layers.AdaptiveAvgPool2d(0), ValueError, "output_size must be >= 1"),
]


@pytest.mark.parametrize(("build", "error", "match"), BAD_TORCH_ARGUMENTS)
def test_bad_torch_arguments_raise_when_the_layer_is_called(build, error, match):
    layer = build()  # torch builds these layers and raises in forward: so do they
    with pytest.raises(error, match=match) as info:
        layer(torch.ones(1, 1, 6, 6))
    assert isinstance(info.value, RuntimeError)  # and torch's class: RuntimeError
    with pytest.raises(error, match=match):  # the same error again on the next call
        layer(torch.ones(1, 1, 6, 6))


def test_extras_and_torchs_construction_checks_raise_when_the_layer_is_built():
    with pytest.raises(ValueError, match="data_format"):
        layers.MaxPool2d(2, data_format="NCDHW")
    with pytest.raises(ValueError, match="exactly one of output_size and output_ratio"):
        layers.FractionalMaxPool2d(2)  # torch's constructor checks this too
    with pytest.raises(ValueError, match="between 0 and 1"):
        layers.FractionalMaxPool3d(2, output_ratio=1.5)


def test_a_wrong_rank_names_both_layouts_in_torchs_words():
    with pytest.raises(ValueError, match=r"non-empty 3D or 4D \(batch mode\) tensor") as info:
        layers.MaxPool2d(2)(torch.zeros(1, 1, 1, 4, 4))
    assert isinstance(info.value, RuntimeError) and "(C, H, W) or (N, C, H, W)" in str(info.value)
    with pytest.raises(RuntimeError, match=r"\(H, W, C\) or \(N, H, W, C\)"):
        layers.AvgPool2d(2, data_format="NHWC")(torch.zeros(4, 4))


def test_layers_pool_through_the_api_and_its_checks():
    # the API's dtype check, raised as torch's class for a dtype it lacks a kernel for
    with pytest.raises(TypeError, match="cast") as info:
        layers.AvgPool2d(2)(torch.ones(1, 1, 4, 4, dtype=torch.int32))
    assert isinstance(info.value, NotImplementedError)
    with pytest.raises(TypeError, match="integers"):
        layers.MaxUnpool2d(2)(torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2))


# ------------------------------------------------------------------ compile, export, state


def _model(pool: nn.Module, second: nn.Module, head: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), pool, nn.ReLU(), second, head,
                         nn.Flatten(), nn.Linear(4 * 2 * 3, 5))


def _native_and_ours():
    native = _model(nn.MaxPool2d(3, 2, 1, ceil_mode=True), nn.AvgPool2d(2, 1, 1),
                    nn.AdaptiveAvgPool2d((2, 3)))
    ours = _model(layers.MaxPool2d(3, 2, 1, ceil_mode=True), layers.AvgPool2d(2, 1, 1),
                  layers.AdaptiveAvgPool2d((2, 3)))
    return native, ours


def test_swapping_torch_layers_in_a_model_changes_nothing_forward_or_backward():
    native, ours = _native_and_ours()
    x = _input(2, size=(11, 9))
    torch.testing.assert_close(ours(x), native(x), rtol=1e-6, atol=1e-6)
    ours(x).square().sum().backward()
    native(x).square().sum().backward()
    for a, b in zip(ours.parameters(), native.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_layers_compile_fullgraph():
    torch._dynamo.reset()
    _, ours = _native_and_ours()
    model = nn.Sequential(ours, nn.Unflatten(1, (1, 5)),
                          layers.LPPool1d(2, 2, 1, padding="same"),
                          layers.AdaptiveMaxPool1d(3))
    compiled = torch.compile(model, fullgraph=True)
    for size in ((11, 9), (12, 10)):
        x = _input(2, size=size)
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)
    dynamic = torch.compile(model, fullgraph=True, dynamic=True)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 11, 9, generator=GEN)
        torch.testing.assert_close(dynamic(x), model(x), rtol=1e-5, atol=1e-6)
    y, idx = torch.compile(layers.MaxPool3d(2, 1, 1, return_indices=True), fullgraph=True)(
        _input(3))
    up = torch.compile(layers.MaxUnpool3d(2, 1, 1), fullgraph=True)(y, idx, SIZES[3])
    torch.testing.assert_close(up, nn.MaxUnpool3d(2, 1, 1)(y, idx, SIZES[3]))


def test_layers_export_with_a_dynamic_batch():
    _, ours = _native_and_ours()
    x = _input(2, size=(11, 9))
    exported = torch.export.export(ours, (x,), dynamic_shapes=({0: torch.export.Dim("b")},))
    for batch in (1, 2, 5):  # a plan depends on the spatial sizes only
        xb = torch.randn(batch, 3, 11, 9, generator=GEN)
        torch.testing.assert_close(exported.module()(xb), ours(xb))
    same = torch.export.export(layers.MaxPool2d(3, 2, "same", return_indices=True), (x,))
    for got, want in zip(same.module()(x), layers.MaxPool2d(3, 2, "same",
                                                            return_indices=True)(x)):
        torch.testing.assert_close(got, want)


def test_state_dict_save_load_and_pickle():
    native, ours = _native_and_ours()
    assert ours.state_dict().keys() == native.state_dict().keys()  # the pools hold no state
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    _, fresh = _native_and_ours()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    x = _input(2, size=(11, 9))
    torch.testing.assert_close(fresh(x), ours(x))
    for layer in (layers.MaxPool2d(3, 2, "same_lower", return_indices=True),
                  layers.LPPool3d(2.5, 2, padding=1, dilation=2, data_format="NDHWC"),
                  layers.AvgPool2d(3, 2, 1, divisor_override=4), layers.MaxUnpool1d(2),
                  layers.AdaptiveMaxPool2d((3, None), True)):
        clone = pickle.loads(pickle.dumps(layer))
        assert type(clone) is type(layer) and clone.spec == layer.spec
        assert repr(clone) == repr(layer)
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    whole = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(whole(x), ours(x))
