"""Gluon drop-in pooling layers: ``HybridBlock``s named, built and called like ``mxnet.gluon.nn``'s.

``MaxPool1D/2D/3D``, ``AvgPool1D/2D/3D``, ``GlobalMaxPool1D/2D/3D`` and ``GlobalAvgPool1D/2D/3D``
have the signature of Gluon's class of the same name (its positional parameters in its order,
with its names and defaults: ``MaxPool3D``'s ``ceil_mode`` comes before ``layout``, as in
Gluon), the same ``repr``, block name and ``_kwargs``, and pooladapt's extras after them,
keyword-only: ``dilation``; ``padding`` also takes ``'same'``, ``'same_lower'``, ``'valid'`` and
``(low, high)`` pairs. Results follow pooladapt's canonical semantics (API.md §1), which differ
from Gluon's on purpose in a few places (docs/frameworks/mxnet.md lists each with the test
that pins it): ``ceil_mode`` drops a last window that would start in the high-side padding
(Gluon's ``'full'`` convention keeps it, as -3.4e38 for max and 0 for avg), max pooling
propagates NaN and an all -inf window gives -inf (Gluon: skipped, the lowest finite value),
integer max pooling works, an empty batch gives an empty result, and bad arguments raise
when the layer is built.

    >>> from mxnet import nd
    >>> from pooladapt.layers.mxnet import MaxPool2D
    >>> MaxPool2D(3, 2, "same")(nd.arange(16).reshape((1, 1, 4, 4))).shape
    (1, 1, 2, 2)

Errors are Gluon's classes as well as pooladapt's: a layout or ``pool_size`` length Gluon's
constructor asserts on raises :class:`PoolingArgumentError` (a ``ValueError`` and an
``AssertionError``); what Gluon's ``Pooling`` rejects with ``MXNetError`` when it runs raises
:class:`PoolingValueError` or :class:`PoolingTypeError` (each also an ``MXNetError``).

The layers work imperatively, with ``hybridize()``, inside a hybridized parent block, with
``mx.np`` arrays, and ``export()`` to a symbol that ``SymbolBlock.imports`` runs (its output
named ``<prefix>fwd_output``, as Gluon's). A pooling plan depends on the input's spatial size,
so each traced graph is specialised to it: a hybridized layer, or the hybridized block
tracing it, re-traces its graph when an input of a new shape arrives (Gluon's own pooling
graphs need not, as they do not support ``same`` padding or the ceil-mode drop rule), and
when the speed-route setting (``pa.speed_routes``) differs from the one the graph was built
with; an exported graph keeps the spatial size it was traced with (any batch size). A
recorded max gradient is exact also outside training mode and on a view input (see
``recorded_input``), except in a hybridized parent's graph, which runs as a whole: there a
recording outside training mode, or a view given to the parent and pooled first, goes wrong
as with Gluon's own MaxPool2D.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from pooladapt.layers import require

require("mxnet", "mxnet")

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet.gluon import HybridBlock  # noqa: E402
from mxnet.gluon.block import _flatten  # noqa: E402

from pooladapt.api import _check_dtype  # noqa: E402
from pooladapt.backends.mxnet import BACKEND  # noqa: E402
from pooladapt.config import get_speed_routes  # noqa: E402
from pooladapt.spec import (  # noqa: E402
    GlobalSpec,
    PoolPlan,
    PoolSpec,
    check_rank,
    make_global_spec,
    make_spec,
)

__all__ = [
    "AvgPool1D", "AvgPool2D", "AvgPool3D", "GlobalAvgPool1D", "GlobalAvgPool2D",
    "GlobalAvgPool3D", "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPool3D", "MaxPool1D",
    "MaxPool2D", "MaxPool3D", "PoolingArgumentError", "PoolingTypeError", "PoolingValueError",
]

_LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}
_NUMERIC = (float, int, np.generic)  # what Gluon takes as one number for every dim
_GLUON_NAMES = {"window": "pool_size", "stride": "strides", "data_format": "layout"}


class PoolingArgumentError(ValueError, AssertionError):
    """A ``layout`` or ``pool_size`` Gluon's own constructor rejects with an assertion."""


class PoolingValueError(ValueError, mx.base.MXNetError):
    """A bad argument or input Gluon's ``Pooling`` rejects with ``MXNetError`` when it runs
    (pooladapt raises when the layer is built, or when the input arrives)."""


class PoolingTypeError(TypeError, mx.base.MXNetError):
    """A wrong type Gluon's ``Pooling`` rejects with ``MXNetError`` when it runs (avg of
    integers, a float window)."""


def _gluon_error(err: ValueError | TypeError, where: str) -> Exception:
    """pooladapt's error as the Gluon-flavoured class, the arguments named as Gluon names them."""
    first, _, rest = str(err).partition(" ")
    msg = f"{where}: {_GLUON_NAMES.get(first, first)} {rest}"
    return (PoolingTypeError if isinstance(err, TypeError) else PoolingValueError)(msg)


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


def _named_fwd(y: Any) -> Any:
    """The graph ``y`` with its last op made again under the name ``fwd``, so that its output
    is ``<prefix>fwd_output`` as Gluon's own pooling graph's (an ``identity`` op named so
    would copy the output and its gradient)."""
    graph = json.loads(y.tojson())
    node = graph["nodes"][graph["heads"][0][0]]
    make = getattr(mx.sym, node["op"], None) or getattr(mx.sym._internal, node["op"], None)
    if len(graph["heads"]) != 1 or make is None:
        return y
    return make(*y.get_children(), name="fwd", **node.get("attrs", {}))


class _Pooling(HybridBlock):
    """A pooling block: subclasses say how to plan an input shape; the backend's ``graph``
    pools it. ``_kwargs`` and ``repr`` are Gluon's."""

    _mode = "max"
    _ndim = 2
    _spec: PoolSpec | GlobalSpec

    def __init__(self, layout: str, pool_size: tuple, strides: Any, padding: Any,
                 ceil_mode: bool, global_pool: bool, count_include_pad: bool | None, /,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._key: tuple | None = None
        self._retrace_hook: Any = None
        if strides is None:
            strides = pool_size
        if isinstance(strides, _NUMERIC):
            strides = (strides,) * len(pool_size)
        if isinstance(padding, _NUMERIC):
            padding = (padding,) * len(pool_size)
        self._kwargs = {
            "kernel": pool_size, "stride": strides, "pad": padding, "global_pool": global_pool,
            "pool_type": self._mode, "layout": layout,
            "pooling_convention": "full" if ceil_mode else "valid"}
        if count_include_pad is not None:
            self._kwargs["count_include_pad"] = count_include_pad

    def _alias(self) -> str:
        return "pool"

    def _plan(self, shape: tuple[int, ...]) -> PoolPlan:
        raise NotImplementedError

    def __repr__(self) -> str:
        s = ("{name}(size={kernel}, stride={stride}, padding={pad}, ceil_mode={ceil_mode}"
             ", global_pool={global_pool}, pool_type={pool_type}, layout={layout}")
        s = s.format(name=type(self).__name__,
                     ceil_mode=self._kwargs["pooling_convention"] == "full", **self._kwargs)
        dilation = getattr(self._spec, "dilation", ())
        return s + (f", dilation={dilation})" if any(d != 1 for d in dilation) else ")")

    def forward(self, x: Any) -> Any:
        if isinstance(x, mx.nd.NDArray):
            shape, dtype = tuple(x.shape), x.dtype
        elif isinstance(x, mx.sym.Symbol):
            shape, dtype = self._trace(x)
        else:
            return super().forward(x)  # Gluon's own error
        try:
            plan = self._plan(shape)
            _check_dtype(BACKEND.dtype_name(x) if isinstance(x, mx.nd.NDArray)
                         else np.dtype(dtype).name, self._spec.mode)
        except (ValueError, TypeError) as err:
            raise _gluon_error(err, type(self).__name__) from None
        if 0 in shape:  # an empty batch or no channels: the empty result (MXNet cannot run)
            return BACKEND.pool(x, plan)
        key = (plan, dtype, get_speed_routes())  # a graph keeps its routes
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
            raise PoolingValueError(
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
        is_np = isinstance(x, (mx.np.ndarray, mx.sym.np._Symbol))
        y = BACKEND.graph(F, x.as_nd_ndarray() if is_np else x, plan, dtype)
        y = _named_fwd(y) if F is mx.sym else y
        return y.as_np_ndarray() if is_np else y


class _Pool(_Pooling):
    def __init__(self, pool_size: Any, strides: Any, padding: Any, layout: str,
                 ceil_mode: bool, count_include_pad: bool | None, dilation: Any, /,
                 **kwargs: Any) -> None:
        ndim, name = self._ndim, type(self).__name__
        if layout not in _LAYOUTS[ndim]:
            raise PoolingArgumentError(
                f"{name}: only {' and '.join(_LAYOUTS[ndim])} layouts are valid for {ndim}D "
                f"Pooling, got layout={layout!r}")
        if isinstance(pool_size, _NUMERIC):
            pool_size = (pool_size,) * ndim
        if isinstance(pool_size, (list, tuple)) and len(pool_size) != ndim:
            raise PoolingArgumentError(
                f"{name}: pool_size must be a number or a list of {ndim} ints, got "
                f"{pool_size!r}")
        if count_include_pad is None:  # max: Gluon passes it on from **kwargs (and ignores it)
            count_include_pad = kwargs.pop("count_include_pad", None)
        super().__init__(layout, pool_size, strides, padding, ceil_mode, False,
                         count_include_pad, **kwargs)
        try:
            self._spec = make_spec(self._mode, pool_size, strides, padding, dilation, ceil_mode,
                                   bool(count_include_pad), data_format=layout, ndim=ndim)
        except (ValueError, TypeError) as err:
            raise _gluon_error(err, name) from None

    def _plan(self, shape: tuple[int, ...]) -> PoolPlan:
        return self._spec.plan(shape)


class _GlobalPool(_Pooling):
    """Global pooling that keeps the spatial dims (size 1), as Gluon's does."""

    def __init__(self, layout: str, **kwargs: Any) -> None:
        ndim = self._ndim
        if layout not in _LAYOUTS[ndim]:
            raise PoolingArgumentError(
                f"{type(self).__name__}: only {' and '.join(_LAYOUTS[ndim])} layouts are valid "
                f"for {ndim}D Pooling, got layout={layout!r}")
        super().__init__(layout, (1,) * ndim, None, 0, True, True, None, **kwargs)
        self._spec = make_global_spec(self._mode, ndim=ndim, keepdims=True, data_format=layout)

    def _plan(self, shape: tuple[int, ...]) -> PoolPlan:
        check_rank(shape, self._ndim, self._spec.data_format)
        return self._spec.pool_spec(tuple(shape[a] for a in self._spec.spatial_axes)).plan(shape)


class MaxPool1D(_Pool):
    """Drop-in ``gluon.nn.MaxPool1D`` (``NCW``/``NWC``), canonical semantics."""

    _ndim = 1

    def __init__(self, pool_size: Any = 2, strides: Any = None, padding: Any = 0,
                 layout: str = "NCW", ceil_mode: bool = False, *, dilation: Any = 1,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, layout, ceil_mode, None, dilation,
                         **kwargs)


class MaxPool2D(_Pool):
    """Drop-in ``gluon.nn.MaxPool2D`` (``NCHW``/``NHWC``), canonical semantics."""

    _ndim = 2

    def __init__(self, pool_size: Any = (2, 2), strides: Any = None, padding: Any = 0,
                 layout: str = "NCHW", ceil_mode: bool = False, *, dilation: Any = 1,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, layout, ceil_mode, None, dilation,
                         **kwargs)


class MaxPool3D(_Pool):
    """Drop-in ``gluon.nn.MaxPool3D`` (``NCDHW``/``NDHWC``), canonical semantics."""

    _ndim = 3

    def __init__(self, pool_size: Any = (2, 2, 2), strides: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, layout: str = "NCDHW", *, dilation: Any = 1,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, layout, ceil_mode, None, dilation,
                         **kwargs)


class AvgPool1D(_Pool):
    """Drop-in ``gluon.nn.AvgPool1D`` (``NCW``/``NWC``), canonical semantics."""

    _mode = "avg"
    _ndim = 1

    def __init__(self, pool_size: Any = 2, strides: Any = None, padding: Any = 0,
                 layout: str = "NCW", ceil_mode: bool = False, count_include_pad: bool = True,
                 *, dilation: Any = 1, **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, layout, ceil_mode, count_include_pad,
                         dilation, **kwargs)


class AvgPool2D(_Pool):
    """Drop-in ``gluon.nn.AvgPool2D`` (``NCHW``/``NHWC``), canonical semantics."""

    _mode = "avg"
    _ndim = 2

    def __init__(self, pool_size: Any = (2, 2), strides: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, layout: str = "NCHW", count_include_pad: bool = True,
                 *, dilation: Any = 1, **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, layout, ceil_mode, count_include_pad,
                         dilation, **kwargs)


class AvgPool3D(_Pool):
    """Drop-in ``gluon.nn.AvgPool3D`` (``NCDHW``/``NDHWC``), canonical semantics."""

    _mode = "avg"
    _ndim = 3

    def __init__(self, pool_size: Any = (2, 2, 2), strides: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, layout: str = "NCDHW",
                 count_include_pad: bool = True, *, dilation: Any = 1,
                 **kwargs: Any) -> None:
        super().__init__(pool_size, strides, padding, layout, ceil_mode, count_include_pad,
                         dilation, **kwargs)


class GlobalMaxPool1D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalMaxPool1D``: output ``(N, C, 1)`` (NCW) or ``(N, 1, C)``."""

    _ndim = 1

    def __init__(self, layout: str = "NCW", **kwargs: Any) -> None:
        super().__init__(layout, **kwargs)


class GlobalMaxPool2D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalMaxPool2D``: the spatial dims become 1."""

    _ndim = 2

    def __init__(self, layout: str = "NCHW", **kwargs: Any) -> None:
        super().__init__(layout, **kwargs)


class GlobalMaxPool3D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalMaxPool3D``: the spatial dims become 1."""

    _ndim = 3

    def __init__(self, layout: str = "NCDHW", **kwargs: Any) -> None:
        super().__init__(layout, **kwargs)


class GlobalAvgPool1D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalAvgPool1D``: output ``(N, C, 1)`` (NCW) or ``(N, 1, C)``."""

    _mode = "avg"
    _ndim = 1

    def __init__(self, layout: str = "NCW", **kwargs: Any) -> None:
        super().__init__(layout, **kwargs)


class GlobalAvgPool2D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalAvgPool2D``: the spatial dims become 1."""

    _mode = "avg"
    _ndim = 2

    def __init__(self, layout: str = "NCHW", **kwargs: Any) -> None:
        super().__init__(layout, **kwargs)


class GlobalAvgPool3D(_GlobalPool):
    """Drop-in ``gluon.nn.GlobalAvgPool3D``: the spatial dims become 1."""

    _mode = "avg"
    _ndim = 3

    def __init__(self, layout: str = "NCDHW", **kwargs: Any) -> None:
        super().__init__(layout, **kwargs)
