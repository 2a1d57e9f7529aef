"""The PyTorch backend: torch tensors in, torch tensors out, autograd and torch.compile intact.

translate.py maps a plan onto torch's pooling ops (read it first); fast.py holds the speed
routes, quirks.py the torch behaviours worked around, compile.py what torch.compile needs.
This module is the backend object: conversions, dtype names, autograd, what it reports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from pooladapt.backends.base import Backend
from pooladapt.backends.torch import compile, family, fast, quirks, translate
from pooladapt.plan import PoolPlan


class TorchBackend(Backend):
    name = "torch"
    framework = "torch"
    supports_autograd = True
    known_deviations: dict[str, str] = {}
    speed_routes = fast.ROUTES
    native_features = frozenset({"nan", "global", "adaptive", "autograd", "compile"})
    # unpool is a scatter: torch's max_unpool rejects the -1 of a window of padding only
    emulated_features = frozenset({"unpool"})

    pool = staticmethod(translate.pool)
    global_pool = staticmethod(translate.global_pool)
    adaptive_pool = staticmethod(translate.adaptive_pool)
    max_unpool = staticmethod(family.max_unpool)

    def tracing(self, x: Any = None) -> bool:
        return compile.compiling()

    def version(self) -> str:
        return torch.__version__

    def lowers_natively(self, plan: PoolPlan, dtype_name: str) -> bool | None:
        """The translation's own choice (``translate.Lowered.native``): one torch pooling call
        (after a layout view, or a wider dtype for unsigned integers) or an emulation."""
        return translate.lowered(plan).native

    def from_numpy(self, a: np.ndarray) -> torch.Tensor:
        a = np.asarray(a)
        if not a.flags.writeable or any(s < 0 for s in a.strides):
            a = a.copy()
        if a.dtype.name == "bfloat16":  # ml_dtypes.bfloat16: same bits as torch.bfloat16
            return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(a.view(a.dtype.name))  # by name: torch refuses ulonglong

    def to_numpy(self, x: torch.Tensor) -> np.ndarray:
        x = x.detach().cpu().resolve_conj()
        if x.dtype == torch.bfloat16:
            import ml_dtypes

            return x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return x.numpy()

    def dtype_name(self, x: torch.Tensor) -> str:
        return quirks.dtype_name(x.dtype)

    def vjp(self, fn: Callable[[Any], Any], x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        (dx,) = torch.autograd.grad(fn(x), x, g)
        return dx


BACKEND = TorchBackend()

__all__ = ["BACKEND", "TorchBackend"]
