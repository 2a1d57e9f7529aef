"""Gluon drop-in pooling layers: ``HybridBlock``s named and configured like ``mxnet.gluon.nn``'s.

``MaxPool1D/2D/3D``, ``AvgPool1D/2D/3D``, ``GlobalMaxPool1D/2D/3D`` and ``GlobalAvgPool1D/2D/3D``
take Gluon's own arguments with Gluon's defaults (``pool_size``, ``strides=None``,
``padding=0``, ``layout='NCHW'``, ``ceil_mode=False``, ``count_include_pad=True`` for avg),
plus the canonical extras: ``padding='same'``/``'same_lower'``/``'valid'`` or ``(low, high)``
pairs, and ``dilation``. Results follow pooladapt's canonical semantics (API.md §1), which
differ from Gluon's in three places: ``ceil_mode`` drops a last window that would start in the
high-side padding (Gluon keeps it, as -3.4e38 for max and 0 for avg), max pooling propagates
NaN (Gluon suppresses it), and an all -inf window gives -inf (Gluon: the lowest finite value).

    >>> from mxnet import nd
    >>> from pooladapt.layers.mxnet import MaxPool2D
    >>> MaxPool2D(3, strides=2, padding="same")(nd.arange(16).reshape((1, 1, 4, 4))).shape
    (1, 1, 2, 2)

The layers work imperatively, with ``hybridize()``, inside a hybridized parent block, and with
``mx.np`` arrays. A pooling plan depends on the input's spatial size, so each traced graph is
specialised to it: a hybridized layer, or the hybridized block tracing it, re-traces its graph
when an input of a new shape arrives (Gluon's own pooling graphs need not, as they do not
support ``same`` padding or the ceil-mode drop rule), and when the speed-route setting
(``pa.speed_routes``) differs from the one the graph was built with. A recorded max gradient
is exact also outside training mode and on a view input (see ``recorded_input``), except in
a hybridized parent's graph, which runs as a whole: there a recording outside training mode,
or a view given to the parent and pooled first, goes wrong as with Gluon's own MaxPool2D.
"""

from __future__ import annotations

import inspect
from typing import Any

from pooladapt.layers import require

require("mxnet", "mxnet")

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet.gluon import HybridBlock  # noqa: E402
from mxnet.gluon.block import _flatten  # noqa: E402

from pooladapt.backends.mxnet import BACKEND  # noqa: E402
from pooladapt.config import get_speed_routes  # noqa: E402
from pooladapt.spec import (  # noqa: E402
    GlobalSpec,
    PoolPlan,
    check_rank,
    make_global_spec,
    make_spec,
)

__all__ = [
    "AvgPool1D", "AvgPool2D", "AvgPool3D", "GlobalAvgPool1D", "GlobalAvgPool2D",
    "GlobalAvgPool3D", "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPool3D", "MaxPool1D",
    "MaxPool2D", "MaxPool3D",
]

_LAYOUT = {1: "NCW", 2: "NCHW", 3: "NCDHW"}


def _tracer() -> tuple[HybridBlock | None, dict[str, Any]]:
    """The hybridized block whose graph is being traced and the arrays it was called with, by
    symbol name. Gluon hands a traced child symbols without shapes, so this reads the locals
    of ``HybridBlock._get_graph`` (stable: MXNet 1.9.1 is the last release)."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code is HybridBlock._get_graph.__code__:
            args = [a for a in frame.f_locals.get("flatten_args", ()) if a is not None]
            syms = frame.f_locals.get("symbol_inputs", ())
            return frame.f_locals.get("self"), {s.name: a for s, a in zip(syms, args)}
        frame = frame.f_back
    return None, {}


def _symbol_shape(x: Any, feed: dict[str, Any]) -> tuple[tuple[int, ...], np.dtype] | None:
    _, shapes, _ = x.infer_shape_partial(**{k: a.shape for k, a in feed.items()})
    _, types, _ = x.infer_type_partial(**{k: a.dtype for k, a in feed.items()})
    shape = tuple(shapes[0]) if shapes and shapes[0] else ()
    if not shape or any(s <= 0 for s in shape):
        return None
    return shape, np.dtype(types[0] or np.float32)  # MXNet's default dtype


class _Pooling(HybridBlock):
    """A pooling block: subclasses say how to plan an input shape; the backend's ``graph``
    pools it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._key: tuple | None = None
        self._retrace_hook: Any = None

    def _alias(self) -> str:
        return "pool"

    def _plan(self, shape: tuple[int, ...]) -> PoolPlan:
        raise NotImplementedError

    def forward(self, x: Any) -> Any:
        if isinstance(x, mx.nd.NDArray):
            shape, dtype = tuple(x.shape), np.dtype(x.dtype)
        else:
            shape, dtype = self._trace(x)
        key = (self._plan(shape), dtype, get_speed_routes())  # a graph keeps its routes
        if key != self._key:
            self._key = key
            self._clear_cached_op()
        if (self._active and self._spec.mode == "max" and isinstance(x, mx.nd.NDArray)
                and mx.autograd.is_recording()):
            with BACKEND.recorded_input(x) as xr:  # the graph's max may pool x itself
                return super().forward(xr)
        return super().forward(x)

    def _trace(self, x: Any) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of a symbolic input; makes the tracing block re-trace its graph
        when it is later called with inputs that give this layer another shape."""
        tracer, feed = _tracer()
        found = _symbol_shape(x, feed)
        if found is None:
            raise ValueError(
                "pooladapt's Gluon layers need the input's shape: call the block, or the "
                "hybridized network holding it, on an array (a free symbol has no shape; "
                "give it one with mx.sym.var(name, shape=...))")
        if self._retrace_hook is not None:
            self._retrace_hook.detach()
            self._retrace_hook = None
        if tracer is not None:
            names = list(feed)
            routes = get_speed_routes()
            seen = {tuple((a.shape, a.dtype) for a in feed.values()): found}

            def retrace_on_new_shape(block: HybridBlock, args: tuple) -> None:
                arrays = [a for a in _flatten(args, "input")[0] if a is not None]
                key = tuple((a.shape, a.dtype) for a in arrays)
                if key not in seen:
                    try:
                        seen[key] = _symbol_shape(x, dict(zip(names, arrays)))
                    except mx.base.MXNetError:  # the graph's crops do not fit these shapes
                        seen[key] = None
                if seen[key] != found or get_speed_routes() != routes:
                    block._clear_cached_op()

            self._retrace_hook = tracer.register_forward_pre_hook(retrace_on_new_shape)
        return found

    def hybrid_forward(self, F: Any, x: Any) -> Any:
        plan, dtype, _ = self._key
        if isinstance(x, (mx.np.ndarray, mx.sym.np._Symbol)):
            return BACKEND.graph(F, x.as_nd_ndarray(), plan, dtype).as_np_ndarray()
        return BACKEND.graph(F, x, plan, dtype)


class _Pool(_Pooling):
    _mode = "max"
    _ndim = 2

    def __init__(self, pool_size: int | tuple[int, ...] | None, strides: Any, padding: Any,
                 layout: str | None, ceil_mode: bool, count_include_pad: bool,
                 dilation: int | tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._layout = (layout or _LAYOUT[self._ndim]).upper()
        self._spec = make_spec(self._mode, 2 if pool_size is None else pool_size, strides,
                               padding, dilation, ceil_mode, count_include_pad,
                               data_format=self._layout, ndim=self._ndim)

    def _plan(self, shape: tuple[int, ...]) -> PoolPlan:
        return self._spec.plan(shape)

    def __repr__(self) -> str:
        s = self._spec
        extra = f", count_include_pad={s.count_include_pad}" if s.mode == "avg" else ""
        return (f"{type(self).__name__}(size={s.window}, stride={s.stride}, "
                f"padding={s.padding!r}, dilation={s.dilation}, ceil_mode={s.ceil_mode}"
                f"{extra}, layout={self._layout})")


class _MaxPool(_Pool):
    """Max pooling; ``pool_size=None`` and ``layout=None`` mean Gluon's defaults (2 in every
    dim; ``NCW``/``NCHW``/``NCDHW``)."""

    def __init__(self, pool_size: int | tuple[int, ...] | None = None,
                 strides: int | tuple[int, ...] | None = None,
                 padding: int | str | tuple = 0, layout: str | None = None,
                 ceil_mode: bool = False, *, dilation: int | tuple[int, ...] = 1,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, layout, ceil_mode, False, dilation,
                         **kwargs)


class _AvgPool(_Pool):
    """Average pooling; ``pool_size=None`` and ``layout=None`` mean Gluon's defaults (2 in
    every dim; ``NCW``/``NCHW``/``NCDHW``). ``count_include_pad=True`` as in Gluon."""

    _mode = "avg"

    def __init__(self, pool_size: int | tuple[int, ...] | None = None,
                 strides: int | tuple[int, ...] | None = None,
                 padding: int | str | tuple = 0, layout: str | None = None,
                 ceil_mode: bool = False, count_include_pad: bool = True, *,
                 dilation: int | tuple[int, ...] = 1, **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, layout, ceil_mode, count_include_pad,
                         dilation, **kwargs)


class _GlobalPool(_Pooling):
    """Global pooling that keeps the spatial dims (size 1), as Gluon's does."""

    _mode = "max"
    _ndim = 2

    def __init__(self, layout: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._layout = (layout or _LAYOUT[self._ndim]).upper()
        self._spec: GlobalSpec = make_global_spec(self._mode, ndim=self._ndim, keepdims=True,
                                                  data_format=self._layout)

    def _plan(self, shape: tuple[int, ...]) -> PoolPlan:
        check_rank(shape, self._ndim, self._spec.data_format)
        return self._spec.pool_spec(tuple(shape[a] for a in self._spec.spatial_axes)).plan(shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layout={self._layout})"


class MaxPool1D(_MaxPool):
    """Drop-in ``gluon.nn.MaxPool1D`` (``NCW``/``NWC``), canonical semantics."""
    _ndim = 1


class MaxPool2D(_MaxPool):
    """Drop-in ``gluon.nn.MaxPool2D`` (``NCHW``/``NHWC``), canonical semantics."""
    _ndim = 2


class MaxPool3D(_MaxPool):
    """Drop-in ``gluon.nn.MaxPool3D`` (``NCDHW``/``NDHWC``), canonical semantics."""
    _ndim = 3


class AvgPool1D(_AvgPool):
    """Drop-in ``gluon.nn.AvgPool1D`` (``NCW``/``NWC``), canonical semantics."""
    _ndim = 1


class AvgPool2D(_AvgPool):
    """Drop-in ``gluon.nn.AvgPool2D`` (``NCHW``/``NHWC``), canonical semantics."""
    _ndim = 2


class AvgPool3D(_AvgPool):
    """Drop-in ``gluon.nn.AvgPool3D`` (``NCDHW``/``NDHWC``), canonical semantics."""
    _ndim = 3


class GlobalMaxPool1D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalMaxPool1D``: output ``(N, C, 1)`` (NCW) or ``(N, 1, C)``."""
    _ndim = 1


class GlobalMaxPool2D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalMaxPool2D``: the spatial dims become 1."""
    _ndim = 2


class GlobalMaxPool3D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalMaxPool3D``: the spatial dims become 1."""
    _ndim = 3


class GlobalAvgPool1D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalAvgPool1D``: output ``(N, C, 1)`` (NCW) or ``(N, 1, C)``."""
    _mode = "avg"
    _ndim = 1


class GlobalAvgPool2D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalAvgPool2D``: the spatial dims become 1."""
    _mode = "avg"
    _ndim = 2


class GlobalAvgPool3D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalAvgPool3D``: the spatial dims become 1."""
    _mode = "avg"
    _ndim = 3
