"""Gluon drop-in layers: equal to Gluon's own layers wherever Gluon's semantics are canonical,
equal to the oracle for the extras and for Gluon's ceil-mode drop case, hybridizable."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd

from pooladapt import oracle
from pooladapt.backends.mxnet import BACKEND
from pooladapt.layers import mxnet as layers
from pooladapt.spec import make_global_spec, make_spec

RNG = np.random.default_rng(7)
LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}
SIZES = {1: (7,), 2: (7, 6), 3: (5, 6, 4)}
LOWEST32 = float(np.finfo(np.float32).min)


def _input(ndim: int, layout: str, size=None, dtype="float32") -> np.ndarray:
    size = size or SIZES[ndim]
    shape = (2, 3, *size) if layout.startswith("NC") else (2, *size, 3)
    return RNG.standard_normal(shape).astype(dtype)


def _oracle(x: np.ndarray, mode: str, ndim: int, **kw) -> np.ndarray:
    return oracle.pool(x, make_spec(mode, **kw, ndim=ndim))


def _check(got, want, mode: str) -> None:
    got = got.asnumpy() if hasattr(got, "asnumpy") else got
    assert got.shape == want.shape
    if mode == "max":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


NATIVE_GRID = [
    pytest.param(ndim, layout, mode, cip, k, s, p, ceil,
                 id=f"{ndim}d-{layout}-{mode}{'-cip' if cip else ''}-k{k}-s{s}-p{p}"
                    f"{'-ceil' if ceil else ''}")
    for ndim in (1, 2, 3) for layout in LAYOUTS[ndim]
    for mode, cip in (("max", None), ("avg", True), ("avg", False))
    for k, s, p, ceil in itertools.product((2, 3), (None, 1, 2), (0, 1), (False, True))
]


@pytest.mark.parametrize("ndim, layout, mode, cip, k, s, p, ceil", NATIVE_GRID)
def test_equals_gluon_where_gluon_is_canonical(ndim, layout, mode, cip, k, s, p, ceil):
    x_np = _input(ndim, layout)
    x = nd.array(x_np)
    name = f"{mode.capitalize()}Pool{ndim}D"
    kw = dict(pool_size=k, strides=s, padding=p, layout=layout, ceil_mode=ceil)
    if cip is not None:
        kw["count_include_pad"] = cip
    ours = getattr(layers, name)(**kw)(x).asnumpy()
    theirs = getattr(gluon.nn, name)(**kw)(x).asnumpy()
    want = _oracle(x_np, mode, ndim, window=k, stride=s, padding=p, ceil_mode=ceil,
                   data_format=layout, **({"count_include_pad": cip} if cip else {}))
    _check(ours, want.astype(np.float32), mode)
    if theirs.shape == ours.shape:
        _check(ours, theirs, mode)
        return
    # Gluon's ceil mode has no drop rule: its extra last window lies in the padding only and
    # gives the lowest float for max, 0 for avg (NaN in 3-D without count_include_pad)
    assert ceil and p > 0
    spatial = range(2, 2 + ndim) if layout.startswith("NC") else range(1, 1 + ndim)
    common = tuple(slice(0, n) for n in ours.shape)
    _check(ours, theirs[common], mode)
    filler = LOWEST32 if mode == "max" else np.nan if (ndim == 3 and not cip) else 0.0
    for axis in spatial:
        if theirs.shape[axis] == ours.shape[axis] + 1:
            extra = np.take(theirs, [-1], axis=axis)
            np.testing.assert_array_equal(extra, np.full_like(extra, filler))


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static_alloc"])
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("ndim, kw", [
    (2, dict(pool_size=(3, 2), strides=(2, 1), padding=(1, 0))),
    (2, dict(pool_size=(2, 3), strides=(1, 2), padding=(0, 1), ceil_mode=True)),
    (3, dict(pool_size=(2, 3, 2), strides=(2, 1, 2), padding=(1, 1, 0))),
])
def test_per_dim_arguments_equal_gluon_hybridized(ndim, kw, mode, static):
    name = f"{mode.capitalize()}Pool{ndim}D"
    ours = getattr(layers, name)(**kw)
    ours.hybridize(static_alloc=static, static_shape=static)
    x = nd.array(_input(ndim, LAYOUTS[ndim][0]))
    _check(ours(x), getattr(gluon.nn, name)(**kw)(x).asnumpy(), mode)


EXTRAS = [
    dict(pool_size=3, strides=2, padding="same"),
    dict(pool_size=3, strides=2, padding="same_lower"),
    dict(pool_size=2, strides=1, padding="valid", dilation=2),
    dict(pool_size=3, strides=2, padding=1, dilation=2, ceil_mode=True),
    dict(pool_size=2, strides=2, padding="asym", ceil_mode=True),
]


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
@pytest.mark.parametrize("extra", EXTRAS, ids=lambda e: "-".join(f"{k}={v}" for k, v in
                                                                 e.items()))
@pytest.mark.parametrize("mode, cip", [("max", None), ("avg", True), ("avg", False)])
@pytest.mark.parametrize("ndim, layout",
                         [(n, lay) for n in (1, 2, 3) for lay in LAYOUTS[n]])
def test_extras_equal_the_oracle(ndim, layout, mode, cip, extra, hybridize):
    kw = dict(extra, layout=layout)
    if kw["padding"] == "asym":
        kw["padding"] = ((0, 1), (1, 0), (1, 1))[:ndim]
    if cip is not None:
        kw["count_include_pad"] = cip
    block = getattr(layers, f"{mode.capitalize()}Pool{ndim}D")(**kw)
    if hybridize:
        block.hybridize()
    x_np = _input(ndim, layout)
    want = _oracle(x_np, mode, ndim, window=kw["pool_size"], stride=kw["strides"],
                   padding=kw["padding"], dilation=kw.get("dilation", 1),
                   ceil_mode=kw.get("ceil_mode", False), data_format=layout,
                   **({"count_include_pad": cip} if cip else {}))
    _check(block(nd.array(x_np)), want.astype(np.float32), mode)


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("ndim, layout", [(n, lay) for n in (1, 2, 3) for lay in LAYOUTS[n]])
def test_global_layers_equal_gluon_and_the_oracle(ndim, layout, mode, hybridize):
    name = f"Global{mode.capitalize()}Pool{ndim}D"
    block = getattr(layers, name)(layout=layout)
    if hybridize:
        block.hybridize()
    x_np = _input(ndim, layout)
    ours = block(nd.array(x_np))
    theirs = getattr(gluon.nn, name)(layout=layout)(nd.array(x_np))
    want = oracle.global_pool(x_np, make_global_spec(mode, ndim=ndim, keepdims=True,
                                                     data_format=layout))
    _check(ours, theirs.asnumpy(), mode)
    _check(ours, want.astype(np.float32), mode)


def test_defaults_are_gluons():
    x = nd.array(_input(2, "NCHW", (6, 6)))
    for name in ("MaxPool2D", "AvgPool2D"):
        _check(getattr(layers, name)()(x), getattr(gluon.nn, name)()(x).asnumpy(), "max")
    ones = nd.ones((1, 1, 3, 3))
    corner = layers.AvgPool2D(3, 1, 1)(ones).asnumpy()[0, 0, 0, 0]
    assert corner == pytest.approx(4 / 9)  # count_include_pad=True, as in Gluon
    assert layers.MaxPool3D()(nd.ones((1, 1, 4, 4, 4))).shape == (1, 1, 2, 2, 2)
    assert layers.MaxPool1D()(nd.ones((1, 1, 4))).shape == (1, 1, 2)


def test_hybridized_block_replans_when_the_spatial_size_changes():
    block = layers.AvgPool2D(3, 2, "same", count_include_pad=False)
    block.hybridize()
    for size in ((7, 6), (8, 9), (7, 6)):
        x_np = _input(2, "NCHW", size)
        want = _oracle(x_np, "avg", 2, window=3, stride=2, padding="same",
                       data_format="NCHW")
        _check(block(nd.array(x_np)), want.astype(np.float32), "avg")


def _net():
    net = gluon.nn.HybridSequential()
    net.add(layers.MaxPool2D(3, 2, "same", ceil_mode=True),
            layers.AvgPool2D(2, 1, ((0, 1), (1, 0)), count_include_pad=False),
            layers.GlobalMaxPool2D())
    return net


def _net_oracle(x_np):
    y = _oracle(x_np, "max", 2, window=3, stride=2, padding="same", ceil_mode=True,
                data_format="NCHW")
    y = _oracle(y, "avg", 2, window=2, stride=1, padding=((0, 1), (1, 0)), data_format="NCHW")
    return oracle.global_pool(y, make_global_spec("max", ndim=2, keepdims=True,
                                                  data_format="NCHW"))


def test_inside_a_hybridized_parent_block():
    x_np = _input(2, "NCHW", (9, 8))
    net = _net()
    net.initialize()
    imperative = net(nd.array(x_np)).asnumpy()
    net.hybridize()
    hybridized = net(nd.array(x_np)).asnumpy()
    np.testing.assert_allclose(imperative, _net_oracle(x_np), rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(hybridized, imperative)
    # another batch size reuses the traced graph
    doubled = net(nd.array(np.concatenate([x_np, x_np]))).asnumpy()
    np.testing.assert_array_equal(doubled[:2], imperative)


def test_the_hybridized_parent_retraces_for_another_spatial_size():
    net = _net()
    net.initialize()
    net.hybridize()
    for size in ((9, 8), (8, 9), (9, 9), (3, 24), (9, 8)):
        x_np = _input(2, "NCHW", size)
        np.testing.assert_allclose(net(nd.array(x_np)).asnumpy(), _net_oracle(x_np),
                                   rtol=2e-6, atol=2e-6, err_msg=str(size))


def test_gradient_through_a_hybridized_parent_equals_the_oracle_vjp():
    x_np = RNG.integers(-2, 3, size=(2, 3, 7, 6)).astype(np.float64)  # ties
    spec = make_spec("max", 3, 2, "same", ceil_mode=True, data_format="NCHW", ndim=2)
    net = gluon.nn.HybridSequential()
    net.add(layers.MaxPool2D(3, 2, "same", ceil_mode=True))
    net.hybridize()
    g_np = RNG.standard_normal(spec.output_shape(x_np.shape))
    x = nd.array(x_np, dtype="float64")
    x.attach_grad()
    with mx.autograd.record():
        y = net(x)
    y.backward(nd.array(g_np, dtype="float64"))
    np.testing.assert_allclose(x.grad.asnumpy(), oracle.pool_vjp(x_np, spec, g_np),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_mx_np_arrays(hybridize):
    block = layers.MaxPool2D(3, 2, "same")
    if hybridize:
        block.hybridize()
    x_np = _input(2, "NCHW")
    mx.npx.set_np()
    try:
        y = block(mx.np.array(x_np, dtype="float32"))
        assert type(y) is mx.np.ndarray
        got = y.asnumpy()
    finally:
        mx.npx.reset_np()
    want = _oracle(x_np, "max", 2, window=3, stride=2, padding="same", data_format="NCHW")
    _check(got, want.astype(np.float32), "max")


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float16", "float64"])
def test_dtypes_that_gluon_cannot_pool_or_pools_loosely(dtype):
    x_np = (RNG.integers(0, 255, size=(2, 3, 7, 6)) if dtype.startswith(("u", "i")) else
            RNG.standard_normal((2, 3, 7, 6))).astype(dtype)
    block = layers.MaxPool2D(3, 2, 1)
    block.hybridize()
    y = block(nd.array(x_np, dtype=dtype))
    assert y.dtype == np.dtype(dtype)
    want = _oracle(x_np, "max", 2, window=3, stride=2, padding=1, data_format="NCHW")
    np.testing.assert_array_equal(y.asnumpy(), want.astype(dtype))


def test_symbols_need_a_shape():
    block = layers.MaxPool2D(2)
    with pytest.raises(ValueError, match="shape"):
        block(mx.sym.var("data"))
    out = block(mx.sym.var("data", shape=(1, 1, 4, 4)))
    x_np = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    got = out.eval(data=nd.array(x_np))[0].asnumpy()
    np.testing.assert_array_equal(got.ravel(), [5, 7, 13, 15])


def test_bad_arguments_raise_at_construction_or_on_a_bad_input():
    with pytest.raises(ValueError, match="layout|data_format"):
        layers.MaxPool1D(2, layout="NHWC")
    with pytest.raises(ValueError, match="padding"):
        layers.AvgPool2D(2, padding=2)
    with pytest.raises(ValueError, match="expected a 4-D input"):
        layers.MaxPool2D(2)(nd.ones((1, 4, 4)))
    with pytest.raises(ValueError, match="expected a 5-D input"):
        layers.GlobalAvgPool3D()(nd.ones((1, 1, 4, 4)))


def test_the_backends_graph_is_the_layers_door_and_gives_no_indices_in_a_graph():
    plan = make_spec("max", 2, data_format="NCHW", ndim=2).plan((1, 1, 4, 4))
    x_np = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    graph = BACKEND.graph(mx.sym, mx.sym.var("x"), plan, "float32")
    np.testing.assert_array_equal(graph.eval(x=nd.array(x_np))[0].asnumpy().ravel(),
                                  [5, 7, 13, 15])
    indices = dataclasses.replace(plan.spec, return_indices=True).plan((1, 1, 4, 4))
    with pytest.raises(ValueError, match="return_indices needs mx.nd arrays"):
        BACKEND.graph(mx.sym, mx.sym.var("x"), indices, "float32")
    y, idx = BACKEND.graph(nd, nd.array(x_np), indices, "float32")
    assert idx.asnumpy().ravel().tolist() == [5, 7, 13, 15]


def test_without_mxnet_the_layers_module_names_the_extra():
    code = ("import sys; sys.modules['mxnet'] = None\n"
            "try:\n    import pooladapt.layers.mxnet\n"
            "except ImportError as err:\n    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install 'pooladapt[mxnet]'" in out, out
