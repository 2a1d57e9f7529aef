"""torch.onnx.export: a plan ONNX expresses leaves torch as its one ONNX pooling node.

While ``torch.onnx.export`` traces (``torch.onnx.is_in_onnx_export()``), translate.py asks
this module first. Where ``lowering.onnx_pool_node`` (``onnx_global_node``; an adaptive plan
whose bins are regular windows as that pool) gives the plan's node at the exporter's opset
for the input's dtype, the node itself goes into the graph, on the NC* view (a channels_last
input adds a Transpose on each side):

* dynamo exporter (``dynamo=True``, the default): ``torch.onnx.ops.symbolic``, torch's public
  op that this exporter writes as the named ONNX node (its eager value is zeros: only the
  traced graph holds it, so ``verify=True`` reports a mismatch).
* TorchScript exporter (``dynamo=False``): an ``autograd.Function`` whose forward is the
  eager translation and whose ``symbolic`` writes the node.

Nothing to register and no argument to pass: ``torch.onnx.export(model, (x,))`` gives it.
Everything else (None here) traces the translation itself, the smallest correct graph torch
makes of it: no speed route, the index fix-ups always, lp window sums without avg_pool's
``divisor_override`` (quirks.exported_window_sum). It is None for: a dtype the ONNX op does
not take (integers but int8/uint8 in a max), windows of padding only, a non-integer ``p``,
indices (ONNX MaxPool's count over N*C*plane and break NaN ties otherwise), pads at least the
kernel (onnxruntime 1.32 rejects the node: onnxruntime quirk 3), a dilated average below
opset 19, and adaptive bins of unequal size. docs/frameworks/torch.md, "Deploying".
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import torch

from pooladapt import lowering
from pooladapt.backends.torch import quirks
from pooladapt.layouts import FROM_NC, TO_NC
from pooladapt.lowering import OnnxNode
from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan

DYNAMO_LEAST_OPSET = 18  # torchlib's: the dynamo exporter's model is at this opset or above

Compute = Callable[[torch.Tensor], torch.Tensor]


def exporting() -> bool:
    """True while ``torch.onnx.export`` traces (asked only where a trace is on: cheap eagerly)."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()) and (
        torch.onnx.is_in_onnx_export())


def opset() -> int:
    """The opset of the model ``torch.onnx.export`` is making. TorchScript exporter: its
    ``opset_version``. Dynamo exporter: its registry's (the requested opset, 18 at least),
    read from the frame of its ``export`` call (``opset_version`` reaches no traced code); 18
    where that frame is not found, which only costs a dilated average its one node."""
    if torch.jit.is_tracing():
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

        return int(GLOBALS.export_onnx_opset_version)
    if torch.compiler.is_dynamo_compiling():  # strict capture: no frames to read
        return DYNAMO_LEAST_OPSET
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "export" and "onnx" in frame.f_code.co_filename:
            version = getattr(frame.f_locals.get("registry"), "opset_version", None)
            if isinstance(version, int):
                return version
        frame = frame.f_back
    return DYNAMO_LEAST_OPSET


class _TorchScriptNode(torch.autograd.Function):
    """The eager translation, written by the TorchScript exporter as ``node``. The forward
    runs untraced: the exporter's peephole pass failed on the translation traced inside the
    function ("Argument passed to at() was not in the map", a dilated average or lp)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, node: OnnxNode, compute: Compute) -> torch.Tensor:
        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            return compute(x)
        finally:
            torch._C._set_tracing_state(state)

    @staticmethod
    def symbolic(g: Any, x: Any, node: OnnxNode, compute: Compute) -> Any:
        attrs = {f"{k}_{'s' if isinstance(v, str) else 'f' if isinstance(v, float) else 'i'}":
                 list(v) if isinstance(v, tuple) else v for k, v in node.attrs.items()}
        return g.op(node.op_type, x, **attrs)


def _emit(xc: torch.Tensor, node: OnnxNode, out_size: tuple[int, ...],
          compute: Compute) -> torch.Tensor:
    """``node`` on NC* ``xc`` in the exported graph; ``compute(xc)`` its eager value."""
    if torch.jit.is_tracing():
        return _TorchScriptNode.apply(xc, node, compute)
    attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in node.attrs.items()}
    return torch.onnx.ops.symbolic(node.op_type, (xc,), attrs, dtype=xc.dtype,
                                   shape=(*xc.shape[:2], *out_size))


def _no_channels(x: torch.Tensor, channels_first: bool) -> bool:
    """onnxruntime runs no pool over zero channels (onnxruntime quirk 5)."""
    return x.shape[1 if channels_first else -1] == 0


def _on_nc(x: torch.Tensor, channels_first: bool, node: OnnxNode, out_size: tuple[int, ...],
           compute: Compute) -> torch.Tensor:
    if channels_first:
        return _emit(x, node, out_size, compute)
    nd = x.dim()
    return _emit(x.permute(TO_NC[nd]), node, out_size,
                 lambda xc: compute(xc.permute(FROM_NC[nd])).permute(TO_NC[nd])
                 ).permute(FROM_NC[nd])


def pool(x: torch.Tensor, plan: PoolPlan, compute: Compute) -> torch.Tensor | None:
    """The plan's one ONNX node on ``x`` (``compute(x)``: the eager translation), or None."""
    node = lowering.onnx_exportable(
        lowering.onnx_pool_node(plan, opset(), quirks.dtype_name(x.dtype)))
    if node is None or _no_channels(x, plan.spec.channels_first):
        return None
    return _on_nc(x, plan.spec.channels_first, node, plan.out_size, compute)


def adaptive_pool(x: torch.Tensor, plan: AdaptivePlan, compute: Compute) -> torch.Tensor | None:
    """Bins of equal size are a pool's windows (``plan.as_pool_spec``): that pool's node."""
    if not plan.uniform or plan.spec.return_indices:
        return None
    shape = tuple(int(n) for n in x.shape)
    return pool(x, plan.as_pool_spec().plan(shape), compute)


def global_pool(x: torch.Tensor, spec: GlobalSpec, compute: Compute) -> torch.Tensor | None:
    """GlobalMaxPool, GlobalAveragePool or GlobalLpPool (its spatial dims kept as 1s, then
    flattened without ``keepdims``), or None."""
    node = lowering.onnx_global_node(spec, opset(), quirks.dtype_name(x.dtype))
    cf, nd = spec.data_format == "channels_first", spec.ndim
    if node is None or _no_channels(x, cf):
        return None
    kept = (1,) * nd

    def keep(t: torch.Tensor) -> torch.Tensor:  # the eager value with the 1s kept
        y = compute(t)
        return y if spec.keepdims else y.reshape(
            (*y.shape[:2], *kept) if cf else (y.shape[0], *kept, y.shape[1]))

    y = _on_nc(x, cf, node, kept, keep)
    return y if spec.keepdims else y.flatten(1)


def node_first(node: Callable[..., torch.Tensor | None]) -> Callable[[Callable], Callable]:
    """``fn(x, plan)``, but while ``torch.onnx.export`` traces, ``node(x, plan, compute)``
    first: the plan's one ONNX node where it has one (``compute``: the eager translation)."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def call(x: torch.Tensor, plan: Any) -> Any:
            if exporting():
                y = node(x, plan, lambda t: fn(t, plan))
                if y is not None:
                    return y
            return fn(x, plan)
        return call
    return wrap
