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

from pooladapt.plan import AdaptivePlan, PoolPlan
from pooladapt.spec import GlobalSpec, UnpoolSpec, make_spec

NATIVE = "native"
EMULATED = "emulated"

FEATURES: tuple[str, ...] = (
    "max", "avg", "lp", "symmetric_padding", "asymmetric_padding", "same", "ceil_mode",
    "dilation", "count_include_pad", "indices", "channels_first", "channels_last", "integers",
    "nan", "float16", "bfloat16", "global", "adaptive", "unpool", "autograd", "compile",
)
"""The feature names every backend's ``capabilities()`` reports (``pooladapt info``)."""

PLAN_PROBES: dict[str, tuple[dict[str, Any], str]] = {
    "max": (dict(mode="max", window=2), "float32"),
    "avg": (dict(mode="avg", window=2), "float32"),
    "lp": (dict(mode="lp", window=2), "float32"),
    "symmetric_padding": (dict(mode="max", window=3, stride=1, padding=1), "float32"),
    "asymmetric_padding": (dict(mode="max", window=3, stride=1, padding=((0, 1), (1, 0))),
                           "float32"),
    "same": (dict(mode="max", window=3, stride=2, padding="same"), "float32"),
    "ceil_mode": (dict(mode="max", window=3, stride=2, ceil_mode=True), "float32"),
    "dilation": (dict(mode="max", window=2, dilation=2), "float32"),
    "count_include_pad": (dict(mode="avg", window=3, stride=1, padding=1,
                               count_include_pad=True), "float32"),
    "indices": (dict(mode="max", window=2, return_indices=True), "float32"),
    "channels_first": (dict(mode="max", window=2, data_format="channels_first"), "float32"),
    "channels_last": (dict(mode="max", window=2, data_format="channels_last"), "float32"),
    "integers": (dict(mode="max", window=2), "int32"),
    "float16": (dict(mode="max", window=2), "float16"),
    "bfloat16": (dict(mode="max", window=2), "bfloat16"),
}
"""Feature -> a 2-D plan (on a 1x8x8x3 input, channels last unless said) and dtype that shows
how a backend realises it: ``capabilities()`` asks the backend's own routing about each."""

FAMILY_FEATURES: tuple[str, ...] = ("nan", "global", "adaptive", "unpool", "autograd", "compile")
"""Features that are not one plan: a backend declares which it realises natively."""


class Backend:
    """Base class; subclasses implement the methods below for one framework."""

    name: str = ""
    framework: str = ""
    numpy_arrays: bool = False  # its tensors are NumPy arrays (from_numpy/to_numpy identities)

    def version(self) -> str:
        raise NotImplementedError

    def capabilities(self) -> dict[str, str]:
        """Feature -> ``"native"`` or ``"emulated"`` (how this backend realises it), derived
        from the backend's own routing: :meth:`lowers_natively` on each of ``PLAN_PROBES``, and
        ``native_features`` for the rest (absent: not available, e.g. autograd on NumPy)."""
        caps = {}
        for feature, (kwargs, dtype) in PLAN_PROBES.items():
            kwargs = {"data_format": "channels_last", **kwargs}
            spec = make_spec(**kwargs, ndim=2)
            shape = (1, 3, 8, 8) if spec.channels_first else (1, 8, 8, 3)
            native = self.lowers_natively(spec.plan(shape), dtype)
            if native is not None:
                caps[feature] = NATIVE if native else EMULATED
        for feature in FAMILY_FEATURES:
            if feature in self.native_features:
                caps[feature] = NATIVE
            elif feature in self.emulated_features:
                caps[feature] = EMULATED
        return caps

    def lowers_natively(self, plan: PoolPlan, dtype_name: str) -> bool | None:
        """True when this backend runs ``plan`` on ``dtype_name`` input as the framework's own
        pooling op (a layout change aside), False when it emulates it (explicit padding, taps,
        a divisor map, a fix-up); None when it cannot run it at all."""
        raise NotImplementedError

    native_features: frozenset[str] = frozenset()
    """Of ``FAMILY_FEATURES``, those the framework's own ops realise as pooladapt means them."""
    emulated_features: frozenset[str] = frozenset()
    """Of ``FAMILY_FEATURES``, those this backend realises by emulation."""

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

    def tracing(self, x: Any = None) -> bool:
        """True while the framework's compiler traces the call (its tensors are stand-ins whose
        identity does not last to run time and whose values cannot be read: no index plane is
        remembered for them, no sample is checked); ``x``, a tensor of the call, tells it where
        the framework knows a trace by its tensors (JAX)."""
        return False

    supports_autograd: bool = False
    known_deviations: dict[str, str] = {}  # conformance feature -> why (strict xfail)
    speed_routes: tuple[str, ...] = ()
    """Names of this backend's speed routes: each is asked for with ``config.take_route(name,
    auto)`` only where it applies, so ``pa.speed_routes("on", only=name)`` forces it there and
    ``pa.speed_routes("off")`` leaves the plain translation of the plan."""

    def vjp(self, fn: Callable[[Any], Any], x: Any, g: Any) -> Any:
        raise NotImplementedError(f"backend {self.name!r} has no autograd")
