"""torch.onnx.export of pooladapt's torch layers and functions, both exporters (dynamo and
TorchScript): run in onnxruntime, the exported graph gives the eager numbers (and the
oracle's); a plan ONNX expresses is its one ONNX pooling node (``lowering.onnx_pool_node``).
torch.export and torch.jit.trace keep working."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from pooladapt import api, lowering, oracle
from pooladapt.layers import torch as layers
from pooladapt.spec import make_adaptive_spec, make_global_spec, make_spec

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

GEN = torch.Generator().manual_seed(18)
EXPORTERS = ("dynamo", "torchscript")
SIZES = {1: (11,), 2: (11, 10), 3: (7, 6, 5)}
POOL_OPS = {"MaxPool", "AveragePool", "LpPool", "GlobalMaxPool", "GlobalAveragePool",
            "GlobalLpPool"}

# (mode, window, stride, padding, dilation, ceil_mode, count_include_pad, p, ndim): each
# plan ONNX expresses as one node (onnx_pool_node at the exporters' opsets)
ONE_NODE = [
    ("max", 3, 2, 1, 1, False, False, None, 2),
    ("max", 3, 2, ((0, 2), (1, 0)), 1, False, False, None, 2),  # asymmetric
    ("max", 3, 2, "same_lower", 2, False, False, None, 2),
    ("max", 3, 2, "same", 1, True, False, None, 1),
    ("max", 2, 2, 1, 1, True, False, None, 3),
    ("avg", 3, 2, 1, 1, False, True, None, 2),
    ("avg", 3, 2, 1, 1, True, False, None, 2),
    ("avg", 3, 2, ((0, 2), (1, 0)), 1, False, True, None, 2),
    ("avg", 3, 2, "same", 1, False, False, None, 1),
    ("avg", 2, 1, ((1, 0), (0, 1), (1, 1)), 1, True, True, None, 3),
    ("avg", 3, 2, 1, 2, False, False, None, 2),  # AveragePool's dilations: opset 19
    ("lp", 3, 2, 0, 1, False, False, 2, 2),
    ("lp", 3, 2, "same_lower", 1, True, False, 1, 2),
    ("lp", 2, 2, ((1, 0), (0, 1)), 2, False, False, 3, 2),
    ("lp", 2, 1, 1, 1, False, False, 2, 3),
]
# plans ONNX has no node for, or onnxruntime refuses: the traced translation
FALLBACK = [
    ("lp", 3, 2, 1, 1, False, False, 1.5, 2),  # p not an integer
    ("max", 2, 1, "same", 3, False, False, None, 1),  # pads >= kernel: onnxruntime refuses
]


def _export(model: torch.nn.Module, x: torch.Tensor, exporter: str, **kwargs) -> onnx.ModelProto:
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            return torch.onnx.export(model, (x,), dynamo=True, verbose=False,
                                     **kwargs).model_proto
        f = io.BytesIO()
        torch.onnx.export(model, (x,), f, dynamo=False, **kwargs)
        return onnx.load_from_string(f.getvalue())


def _run(proto: onnx.ModelProto, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_lp_fallback_sums_its_windows(exporter):
    """Issue 18: an exported ``LPPool2d(2, 3, stride=2)`` gave 1/3 of its eager result (the
    window sums' ``divisor_override`` is lost in ONNX; quirks.exported_window_sum)."""
    x = torch.randn(2, 3, 11, 10, generator=GEN)
    for model in (layers.LPPool2d(2, 3, stride=2), layers.LPPool2d(1.5, 3, stride=2),
                  layers.LPPool1d(3, 2, ceil_mode=True)):
        xi = x if model.ndim == 2 else x[:, :, 0]
        with torch.no_grad():
            eager = model(xi).numpy()
        (got,) = _run(_export(model, xi, exporter), xi)
        np.testing.assert_allclose(got, eager, rtol=1e-5, atol=1e-6)


class _Fn(torch.nn.Module):
    def __init__(self, spec, run) -> None:
        super().__init__()
        self.spec, self.run = spec, run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, self.spec)


def _pool_spec(case, data_format="channels_first"):
    mode, window, stride, padding, dilation, ceil, cip, p, ndim = case
    return make_spec(mode, window, stride, padding, dilation, ceil, cip, p=p,
                     data_format=data_format, ndim=ndim)


def _input(ndim: int, channels_first: bool = True) -> torch.Tensor:
    x = torch.randn((2, 3, *SIZES[ndim]), generator=GEN)
    return x if channels_first else x.movedim(1, -1).contiguous()


def _check(model, x, exporter, expected, ops=None, **kwargs) -> list[str]:
    """Exported with ``exporter`` and run in onnxruntime: the eager result and ``expected``
    (the oracle's); with ``ops``, the graph's pooling nodes are exactly those."""
    with torch.no_grad():
        eager = model(x).numpy()
    proto = _export(model, x, exporter, **kwargs)
    (got,) = _run(proto, x)
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, eager, rtol=1e-5, atol=1e-5)
    types = [n.op_type for n in proto.graph.node]
    if ops is not None:
        assert [t for t in types if t in POOL_OPS] == ops, types
    return types


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("case", ONE_NODE, ids=str)
def test_expressible_plans_export_as_their_one_node(case, exporter):
    spec = _pool_spec(case)
    x = _input(spec.ndim)
    plan = spec.plan(tuple(x.shape))
    node = lowering.onnx_pool_node(plan)
    assert node is not None
    types = _check(_Fn(spec, api.run_pool), x, exporter, oracle.pool(x.numpy(), spec),
                   [node.op_type])  # both exporters' default opset: 20
    assert types == [node.op_type]  # the node and nothing else


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_channels_last_is_the_node_between_transposes(exporter):
    spec = _pool_spec(ONE_NODE[1], "channels_last")
    x = _input(2, channels_first=False)
    types = _check(_Fn(spec, api.run_pool), x, exporter, oracle.pool(x.numpy(), spec),
                   ["MaxPool"])
    assert types == ["Transpose", "MaxPool", "Transpose"]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_a_dilated_average_below_opset_19_traces_the_translation(exporter):
    """AveragePool has dilations from opset 19: asked for opset 18, the translation traces."""
    spec = _pool_spec(ONE_NODE[10])
    x = _input(2)
    _check(_Fn(spec, api.run_pool), x, exporter, oracle.pool(x.numpy(), spec), [],
           opset_version=18)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("case", FALLBACK, ids=str)
def test_plans_onnx_cannot_express_trace_the_translation(case, exporter):
    spec = _pool_spec(case)
    x = _input(spec.ndim)
    _check(_Fn(spec, api.run_pool), x, exporter, oracle.pool(x.numpy(), spec))


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("mode,p,keepdims", [("max", None, True), ("avg", None, False),
                                             ("lp", 2, True)])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_global_pools_export_as_their_node(mode, p, keepdims, ndim, exporter):
    spec = make_global_spec(mode, ndim=ndim, keepdims=keepdims, p=p,
                            data_format="channels_first")
    x = _input(ndim)
    node = lowering.onnx_global_node(spec)
    assert node is not None
    _check(_Fn(spec, api.run_global), x, exporter, oracle.global_pool(x.numpy(), spec),
           [node.op_type])


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("mode,size,ops", [
    ("avg", (11, 5), ["AveragePool"]), ("max", (1, 2), ["MaxPool"]),  # regular bins
    ("avg", (4, 3), []), ("max", (4, 3), [])])  # bins of unequal size
def test_adaptive_exports(mode, size, ops, exporter):
    """Issue 18: AdaptiveAvgPool2d of a non-divisible size failed with the TorchScript
    exporter; the dynamo exporter has no adaptive max (quirks.exported_adaptive_avg)."""
    spec = make_adaptive_spec(mode, size, ndim=2, data_format="channels_first")
    x = _input(2)
    _check(_Fn(spec, api.run_adaptive), x, exporter, oracle.adaptive_pool(x.numpy(), spec),
           ops)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_layers_export_as_one_node(exporter):
    x = _input(2)
    for model, op in ((layers.MaxPool2d(3, 2, padding=1), "MaxPool"),
                      (layers.AvgPool2d(3, 2, padding=1, ceil_mode=True), "AveragePool"),
                      (layers.LPPool2d(2, 3, stride=2), "LpPool"),
                      (layers.AdaptiveAvgPool2d((11, 5)), "AveragePool")):
        with torch.no_grad():
            eager = model(x).numpy()
        proto = _export(model, x, exporter)
        assert [n.op_type for n in proto.graph.node] == [op]
        np.testing.assert_allclose(_run(proto, x)[0], eager, rtol=1e-5, atol=1e-6)


def test_torch_export_and_jit_trace_keep_working():
    """Outside torch.onnx.export, nothing changes: torch.export and jit.trace give the eager
    numbers (the ONNX node is never traced there)."""
    x = _input(2)
    for model in (layers.LPPool2d(2, 3, stride=2), layers.MaxPool2d(3, 2, padding=1),
                  layers.AdaptiveAvgPool2d(4)):
        with torch.no_grad():
            eager = model(x)
            exported = torch.export.export(model.eval(), (x,)).module()(x)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(model, (x,))(x)
        torch.testing.assert_close(exported, eager)
        torch.testing.assert_close(traced, eager)
