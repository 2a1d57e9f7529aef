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

from pooladapt.layers import torch as layers

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

GEN = torch.Generator().manual_seed(18)
EXPORTERS = ("dynamo", "torchscript")


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
