"""The MXNet backend (1.9.1): ``mx.nd`` arrays and ``mx.np`` ndarrays, autograd, ``hybridize``.

``translate.py`` maps a plan onto MXNet's ops (read it first); ``fast.py`` holds the speed
routes, ``quirks.py`` MXNet's deviations and their workarounds, ``compile.py`` what a
hybridized graph needs, ``ops.py`` the array primitives. This module is the backend object:
conversions (NumPy integers MXNet has no arrays of pool through a wider stand-in), dtype
names, autograd, capabilities, and the one door for Gluon layers, :meth:`MXNetBackend.graph`.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from typing import Any

import mxnet as mx
import numpy as np

from pooladapt.backends.base import Backend
from pooladapt.backends.mxnet import fast, ops, quirks, translate
from pooladapt.plan import AdaptivePlan, PoolPlan
from pooladapt.spec import GlobalSpec, UnpoolSpec

nd = mx.nd


def _shallow(cls: type, a: Any) -> Any:
    """A new handle to a's array as an instance of ``cls`` (an ``nd.NDArray`` subclass)."""
    handle = mx.base.NDArrayHandle()
    mx.base.check_call(mx.base._LIB.MXShallowCopyNDArray(a.handle, ctypes.byref(handle)))
    return cls(handle=handle, writable=a.writable)


class IndexNDArray(nd.NDArray):
    """An ``mx.nd.NDArray`` of indices that accepts weak references (a plain one does not),
    so that ``max_unpool`` can default to the plane these indices came from."""


_TOP = np.uint64(1 << 63)


class StandIn(nd.NDArray):
    """NumPy input of an integer dtype MXNet has no arrays of (int16, uint16, uint32, uint64)
    given with ``backend="mxnet"``: its values in a wider dtype MXNet has, in the same order
    (uint64 as int64 with the top bit flipped), for max pooling, indices and unpool.
    ``decode`` gives the original dtype back (padding's minimum becomes the dtype's)."""

    source: np.dtype
    encoding: str  # "widened"; uint64: "flipped" (order kept) or "bits" (unpool: 0 kept)

    @classmethod
    def encode(cls, a: np.ndarray, encoding: str | None = None) -> StandIn:
        encoding = encoding or ("flipped" if a.dtype == np.uint64 else "widened")
        if encoding == "flipped":
            values = (a ^ _TOP).view(np.int64)
        elif encoding == "bits":
            values = np.ascontiguousarray(a).view(np.int64)
        else:
            values = a.astype(quirks.WIDER[a.dtype.name])
        return cls._of(nd.array(values, dtype=values.dtype), a.dtype, encoding)

    @classmethod
    def _of(cls, values: Any, source: np.dtype, encoding: str) -> StandIn:
        out = _shallow(cls, values)
        out.source, out.encoding = source, encoding
        return out

    def like(self, values: Any) -> StandIn:
        """``values`` (computed from this one, same encoding) as a stand-in."""
        return StandIn._of(values, self.source, self.encoding)

    def decode(self) -> np.ndarray:
        v = self.asnumpy()
        if self.encoding == "flipped":
            return v.view(np.uint64) ^ _TOP
        if self.encoding == "bits":
            return v.view(np.uint64)
        info = np.iinfo(self.source)
        return np.clip(v, info.min, info.max).astype(self.source)


class MXNetBackend(Backend):
    name = "mxnet"
    framework = "mxnet"
    supports_autograd = True
    known_deviations = {
        "dtype:bfloat16": quirks.BFLOAT16_REASON,
        "int64_indices": "the MXNet 1.9.1 wheels are built without USE_INT64_TENSOR_SIZE: "
                         "no array can hold 2**31 elements, so no plane needs int64 indices",
    }
    native_features = frozenset({"global", "autograd", "compile"})
    emulated_features = frozenset({"nan", "adaptive", "unpool"})

    def version(self) -> str:
        return mx.__version__

    def lowers_natively(self, plan: PoolPlan, dtype_name: str) -> bool | None:
        if dtype_name == "bfloat16":
            return None
        return translate.lowers_natively(plan, dtype_name)

    @property
    def speed_routes(self) -> tuple[str, ...]:  # type: ignore[override]
        """The routes (fast.py); oneDNN's avg kernel only where oneDNN runs."""
        return fast.routes()

    def from_numpy(self, a: np.ndarray) -> Any:
        a = np.asarray(a)
        name = a.dtype.name
        if name == "bfloat16":
            raise TypeError(quirks.BFLOAT16_REASON)
        if name not in quirks.ARRAY_DTYPES:
            fix = (f"cast it to {quirks.WIDER[name]}, or pool the NumPy array with "
                   f"backend='mxnet' (max maps it exactly)" if name in quirks.WIDER
                   else "cast it")
            raise TypeError(f"MXNet 1.9.1 has no {name} arrays (it has "
                            f"{', '.join(sorted(quirks.ARRAY_DTYPES))}); {fix}")
        return nd.array(a, dtype=np.dtype(name))  # by name: MXNet knows int64, not longlong

    def from_numpy_input(self, a: np.ndarray) -> Any:
        a = np.asarray(a)
        return StandIn.encode(a) if a.dtype.name in quirks.WIDER else self.from_numpy(a)

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, StandIn):
            return x.decode()
        return x if isinstance(x, np.ndarray) else x.asnumpy()

    def dtype_name(self, x: Any) -> str:
        return x.source.name if isinstance(x, StandIn) else ops.dtype_name(x.dtype)

    def graph(self, F: Any, x: Any, plan: PoolPlan, dtype: Any) -> Any:
        """The pooling of ``plan`` on ``x``, an array of ``F`` (``mx.nd``, or ``mx.sym`` inside
        a hybridized block) of dtype ``dtype`` in the plan's layout: what Gluon layers build
        (``pooladapt.layers.mxnet``). A global pool's plan is ``GlobalSpec.pool_spec``'s (its
        spatial dims kept as 1s). The graph follows the speed-route setting of the call.
        Indices (``return_indices``) come from ``mx.nd`` arrays only.

        >>> from pooladapt.spec import make_spec
        >>> plan = make_spec("max", 2, data_format="NCHW", ndim=2).plan((1, 1, 4, 4))
        >>> BACKEND.graph(mx.sym, mx.sym.var("x"), plan, "float32").infer_shape(x=(1, 1, 4, 4))[1]
        [(1, 1, 2, 2)]
        """
        if plan.spec.return_indices and F is not nd:
            raise ValueError("return_indices needs mx.nd arrays: a graph (mx.sym) gives no "
                             "indices")
        return translate.pool_graph(F, x, plan, ops.dtype_name(dtype))

    def recorded_input(self, x: Any) -> contextlib.AbstractContextManager[Any]:
        """x (an ``mx.nd`` array) ready for a max pooling graph whose gradient is recorded:
        oneDNN's max gradient is wrong outside training mode and on a view (quirks.py)."""
        return quirks.recorded_input(x)

    @staticmethod
    def _on_nd_view(fn: Callable[[Any], Any], x: Any,
                    outputs: list[tuple[tuple[int, ...], Any]]) -> Any:
        """``fn`` of the ``mx.nd`` view of x (``mx.np`` input gets ``mx.np`` output, a stand-in
        a stand-in); ``outputs`` lists each output's (shape, dtype), made directly where x is
        empty."""
        is_np = isinstance(x, mx.np.ndarray)
        if x.size == 0:
            out = quirks.empty_outputs(x, outputs)
        else:
            out = fn(x.as_nd_ndarray() if is_np else x)
            out = out if isinstance(out, tuple) else (out,)
        if is_np:
            out = tuple(o.as_np_ndarray() for o in out)
        if isinstance(x, StandIn):
            out = (x.like(out[0]), *out[1:])
        if not is_np and len(out) == 2:  # a plain NDArray takes no weak reference (unpool)
            out = (out[0], _shallow(IndexNDArray, out[1]))
        return out if len(out) == 2 else out[0]

    @staticmethod
    def _outputs(x: Any, shape: tuple[int, ...], indices: bool):
        return [(shape, x.dtype)] + ([(shape, np.int64)] if indices else [])

    def pool(self, x: Any, plan: PoolPlan) -> Any:
        if type(x) is nd.NDArray and not plan.spec.return_indices and 0 not in x.shape:
            return translate.pool_graph(nd, x, plan, ops.dtype_name(x.dtype))  # the common call
        return self._on_nd_view(
            lambda t: translate.pool_graph(nd, t, plan, ops.dtype_name(t.dtype)), x,
            self._outputs(x, plan.output_shape(tuple(x.shape)), plan.spec.return_indices))

    def global_pool(self, x: Any, spec: GlobalSpec) -> Any:
        shape = tuple(x.shape)
        plan = spec.pool_spec(tuple(shape[a] for a in spec.spatial_axes)).plan(shape)
        kept = tuple(n for a, n in enumerate(plan.output_shape(shape))
                     if spec.keepdims or a not in spec.spatial_axes)

        def pool(t: Any) -> Any:
            y = translate.pool_graph(nd, t, plan, ops.dtype_name(t.dtype))
            return y if spec.keepdims else nd.squeeze(y, axis=spec.spatial_axes)

        return self._on_nd_view(pool, x, self._outputs(x, kept, False))

    def adaptive_pool(self, x: Any, plan: AdaptivePlan) -> Any:
        return self._on_nd_view(lambda t: translate.adaptive(t, plan), x, self._outputs(
            x, plan.output_shape(tuple(x.shape)), plan.spec.return_indices))

    def max_unpool(self, y: Any, indices: Any, spec: UnpoolSpec,
                   out_size: tuple[int, ...]) -> Any:
        if isinstance(indices, mx.np.ndarray):
            indices = indices.as_nd_ndarray()
        elif not isinstance(indices, nd.NDArray):
            indices = nd.array(np.asarray(indices), ctx=y.context, dtype="int64")
        if isinstance(y, StandIn) and y.encoding == "flipped":  # the empty cells must be 0
            y = StandIn.encode(y.decode(), "bits")
        shape = list(y.shape)
        for axis, size in zip(spec.spatial_axes, out_size):
            shape[axis] = size
        return self._on_nd_view(lambda t: translate.unpool(t, indices, spec, out_size), y,
                                self._outputs(y, tuple(shape), False))

    def vjp(self, fn: Callable[[Any], Any], x: Any, g: Any) -> Any:
        if x.size == 0:  # MXNet cannot attach a gradient to an empty array; it is empty
            fn(x)
            return nd.array(np.zeros(x.shape, x.dtype), ctx=x.context, dtype=x.dtype)
        x = x.copy()
        x.attach_grad()
        with mx.autograd.record():
            y = fn(x)
        y.backward(g)
        return x.grad


BACKEND = MXNetBackend()

__all__ = ["BACKEND", "IndexNDArray", "MXNetBackend", "StandIn"]
