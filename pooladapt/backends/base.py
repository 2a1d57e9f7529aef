"""The backend interface: what the core asks of a framework, nothing more.

A backend receives tensors of its own framework in the caller's data format together with
a resolved plan (``pooladapt.spec``) and maps the plan onto native ops. It never parses user
arguments, never re-derives padding or divisors and never re-validates: the plan is the
truth. Each backend module exposes one instance named ``BACKEND``.

Contract of every method (``x`` in the spec's data format, batch + channels + spatial dims):

* ``pool(x, plan)``: ``plan.spec.mode`` max/avg/lp; returns the pooled tensor of ``x``'s
  dtype, plus int64 per-plane flat indices when ``plan.spec.return_indices``. Padded cells
  never win a max and add 0 to sums; ``plan.ceil_extra`` cells are ignored entirely; avg
  divides by ``plan.divisor_map`` (``plan.uniform_divisor`` when every window shares one);
  NaN propagates in max; ties (value and gradient) go to the first maximum in row-major
  window order; an all-padding window (``plan.empty_windows``) gives -inf (dtype minimum for
  integers) with index -1 for max, 0 for lp and sum / divisor for avg (NaN when the divisor
  is 0), and passes no gradient.
* ``global_pool(x, spec)``: reduce every spatial dim (max/avg/lp), ``spec.keepdims``.
* ``adaptive_pool(x, plan)``: bins ``plan.starts``/``plan.ends``; ``plan.gather(d)`` gives
  gather indices and masks for a separable gather-and-reduce; max may return indices.
* ``max_unpool(y, indices, spec, out_size)``: zeros of spatial ``out_size`` with ``y`` scattered
  to ``indices`` (per-plane flat, row-major); negative indices are ignored.
* ``vjp(fn, x, g)``: the framework's autograd of ``fn`` (tensor -> tensor) at ``x`` with
  cotangent ``g`` (both framework tensors); None for a backend without autograd (NumPy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pooladapt.spec import AdaptivePlan, GlobalSpec, PoolPlan, UnpoolSpec

NATIVE = "native"
EMULATED = "emulated"

FEATURES: tuple[str, ...] = (
    "max", "avg", "lp", "symmetric_padding", "asymmetric_padding", "same", "ceil_mode",
    "dilation", "count_include_pad", "indices", "channels_first", "channels_last", "integers",
    "nan", "float16", "bfloat16", "global", "adaptive", "unpool", "autograd", "compile",
)
"""The feature names every backend's ``capabilities()`` reports (``pooladapt info``)."""


class Backend:
    """Base class; subclasses implement the methods below for one framework."""

    name: str = ""
    framework: str = ""

    def version(self) -> str:
        raise NotImplementedError

    def capabilities(self) -> dict[str, str]:
        """Feature -> ``"native"`` or ``"emulated"`` (how this backend realises it)."""
        return {}

    def from_numpy(self, a: np.ndarray) -> Any:
        raise NotImplementedError

    def from_numpy_input(self, a: np.ndarray) -> Any:
        """NumPy input given to this backend (``backend=``) as its tensor. A framework with no
        tensor of a's dtype (``from_numpy`` raises TypeError) may return a stand-in that
        ``dtype_name`` names as a's dtype, that its ops take, and whose results ``to_numpy``
        converts back to a's dtype."""
        return self.from_numpy(a)

    def to_numpy(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def dtype_name(self, x: Any) -> str:
        """NumPy-style dtype name: float32, bfloat16, int8, uint8, bool..."""
        raise NotImplementedError

    def pool(self, x: Any, plan: PoolPlan) -> Any:
        raise NotImplementedError

    def global_pool(self, x: Any, spec: GlobalSpec) -> Any:
        raise NotImplementedError

    def adaptive_pool(self, x: Any, plan: AdaptivePlan) -> Any:
        raise NotImplementedError

    def max_unpool(self, y: Any, indices: Any, spec: UnpoolSpec, out_size: tuple[int, ...]) -> Any:
        raise NotImplementedError

    supports_autograd: bool = False
    known_deviations: dict[str, str] = {}  # conformance feature -> why (strict xfail)
    speed_routes: tuple[str, ...] = ()
    """Names of this backend's speed routes: each is asked for with ``config.take_route(name,
    auto)`` only where it applies, so ``pa.speed_routes("on", only=name)`` forces it there and
    ``pa.speed_routes("off")`` leaves the plain translation of the plan."""

    def vjp(self, fn: Callable[[Any], Any], x: Any, g: Any) -> Any:
        raise NotImplementedError(f"backend {self.name!r} has no autograd")
