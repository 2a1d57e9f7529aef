"""Deploying Gluon models (issue 18): a hybridized block with pooladapt's Gluon layers exports
a symbol and its parameters (``HybridBlock.export``); ``SymbolBlock.imports`` runs them back
with the original's numbers and the oracle's (docs/deploying.md). The export keeps the
spatial size it was traced with: the symbol holds plain MXNet operators, planned for it."""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd

from pooladapt import oracle
from pooladapt.layers import mxnet as layers
from pooladapt.spec import make_global_spec, make_spec

RNG = np.random.default_rng(18)
BLOCKS = {  # name: (pooladapt block, its meaning as a spec, channels-first 2-D)
    "max same": (lambda: layers.MaxPool2D(3, 2, "same"), make_spec("max", 3, 2, "same", ndim=2,
                                                                   data_format="channels_first")),
    "max ceil": (lambda: layers.MaxPool2D(3, 2, 1, ceil_mode=True),
                 make_spec("max", 3, 2, 1, ceil_mode=True, ndim=2, data_format="channels_first")),
    "avg exclude": (lambda: layers.AvgPool2D(3, 1, 1, count_include_pad=False),
                    make_spec("avg", 3, 1, 1, count_include_pad=False, ndim=2,
                              data_format="channels_first")),
    "max dilated": (lambda: layers.MaxPool2D(2, 1, dilation=2),
                    make_spec("max", 2, 1, dilation=2, ndim=2, data_format="channels_first")),
    "global max": (lambda: layers.GlobalMaxPool2D(),
                   make_global_spec("max", ndim=2, data_format="channels_first", keepdims=True)),
}


def _input(shape=(2, 3, 9, 8)) -> np.ndarray:
    x = RNG.integers(-3, 4, size=shape).astype(np.float32)  # ties
    x[0, 0, :3, :3] = -np.inf
    x[1, 2, 4, 4] = np.inf
    return x


def _export(block, x: np.ndarray, path) -> gluon.SymbolBlock:
    block.initialize()
    block.hybridize()
    block(nd.array(x))
    block.export(str(path / "pooled"))
    return gluon.SymbolBlock.imports(str(path / "pooled-symbol.json"), ["data"],
                                     str(path / "pooled-0000.params"))


@pytest.mark.parametrize("name", BLOCKS)
def test_exported_block_runs_back_with_the_originals_numbers(name, tmp_path):
    make, spec = BLOCKS[name]
    x = _input()
    block = make()
    reloaded = _export(block, x, tmp_path)
    want = oracle.pool(x, spec) if hasattr(spec, "window") else oracle.global_pool(x, spec)
    got = block(nd.array(x)).asnumpy()
    np.testing.assert_array_equal(reloaded(nd.array(x)).asnumpy(), got)
    if spec.mode == "max":
        np.testing.assert_array_equal(got, want)
    else:  # a float32 mean against the oracle's, rounded once
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_exported_network_with_parameters_runs_back(tmp_path):
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(4, 3), layers.MaxPool2D(3, 2, "same"),
            layers.AvgPool2D(3, 1, 1, count_include_pad=False), layers.GlobalMaxPool2D())
    net.initialize(mx.init.Normal(1.0))
    net.hybridize()
    x = nd.array(RNG.standard_normal((2, 3, 16, 16)).astype(np.float32))
    want = net(x).asnumpy()
    net.export(str(tmp_path / "net"))
    reloaded = gluon.SymbolBlock.imports(str(tmp_path / "net-symbol.json"), ["data"],
                                         str(tmp_path / "net-0000.params"))
    np.testing.assert_allclose(reloaded(x).asnumpy(), want, rtol=1e-6, atol=1e-6)
    assert np.isfinite(want).all() and want.std() > 0  # the comparison saw real numbers


def test_exported_symbol_gradient_equals_the_oracle_vjp(tmp_path):
    make, spec = BLOCKS["max ceil"]
    x = _input()
    reloaded = _export(make(), x, tmp_path)
    g = RNG.standard_normal(spec.output_shape(x.shape)).astype(np.float32)
    t = nd.array(x)
    t.attach_grad()
    with mx.autograd.record():
        y = reloaded(t)
    y.backward(nd.array(g))
    finite = np.isfinite(x)
    want = oracle.pool_vjp(x.astype(np.float64), spec, g.astype(np.float64))
    np.testing.assert_allclose(t.grad.asnumpy()[finite], want[finite], rtol=1e-5, atol=1e-5)
