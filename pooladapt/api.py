"""The public entry points: ``Pool1D/2D/3D``, ``pool*d``, global, adaptive and unpool."""

from __future__ import annotations

import importlib
import math
import weakref
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from pooladapt import config, dispatch
from pooladapt.backends.base import Backend
from pooladapt.plan import PoolPlan, check_spatial
from pooladapt.spec import (
    AdaptiveSpec,
    FractionalSpec,
    GlobalSpec,
    Padding,
    PoolSpec,
    UnpoolSpec,
    check_rank,
    make_adaptive_spec,
    make_fractional_spec,
    make_global_spec,
    make_spec,
    make_unpool_spec,
)

_INT_KINDS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_FLOAT_KINDS = ("float16", "bfloat16", "float32", "float64")

# id(indices) -> (weakref to it, spatial size of the plane it indexes); feeds the unpool default.
_index_planes: dict[int, tuple[Any, tuple[int, ...]]] = {}


def _check_dtype(dtype: str, mode: str) -> None:
    if dtype in _FLOAT_KINDS:
        return
    if dtype in _INT_KINDS:
        if mode == "max":
            return
        raise TypeError(
            f"{mode} pooling needs a floating-point input, got {dtype}; cast it first "
            f"(e.g. x.astype('float32')), or use mode 'max', which supports integers"
        )
    raise TypeError(
        f"pooling supports float16, bfloat16, float32, float64 (and integers for max), "
        f"got dtype {dtype}"
    )


def _native_order(a: np.ndarray) -> np.ndarray:
    """A byte-swapped array (``>f4`` on a little-endian machine) as the same values in native
    byte order, which every framework expects; anything else unchanged."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _prepare(x: Any, backend: str | None, mode: str) -> tuple[Backend, Any, bool]:
    name, native = dispatch.resolve(x, backend)
    be = dispatch.load(name).BACKEND
    if not native:
        x = be.from_numpy_input(_native_order(np.asarray(x)))
    _check_dtype(be.dtype_name(x), mode)
    return be, x, native


def _finish(be: Backend, out: Any, native: bool) -> Any:
    if native:
        return out
    if isinstance(out, tuple):
        return tuple(be.to_numpy(o) for o in out)
    return be.to_numpy(out)


def _remember_plane(be: Backend, indices: Any, plane: tuple[int, ...]) -> None:
    if be.tracing(indices):  # a traced tensor's id() is not its id at run time
        return
    key = id(indices)
    def forget(_ref: Any, key: int = key) -> None:
        _index_planes.pop(key, None)

    try:
        ref = weakref.ref(indices, forget)
    except TypeError:
        return
    _index_planes[key] = (ref, plane)


def _plane_of(indices: Any) -> tuple[int, ...] | None:
    entry = _index_planes.get(id(indices))
    if entry is not None and entry[0]() is indices:
        return entry[1]
    return None


def run_pool(x: Any, spec: PoolSpec, backend: str | None = None) -> Any:
    """Pool ``x`` with a built spec on the backend chosen by the dispatch rules."""
    return _pool_once(x, spec, backend)[0]


def _pool_once(x: Any, spec: PoolSpec,
               backend: str | None) -> tuple[Any, tuple[Backend, PoolPlan] | None]:
    """The pooled result, and the backend call and plan to reuse: for a framework tensor, and
    for a NumPy array that a backend named by ``backend=`` takes as it is (with no name, the
    backend of NumPy input follows ``use_backend`` and is resolved on every call)."""
    be, xt, native = _prepare(x, backend, spec.mode)
    plan = spec.plan(tuple(xt.shape))
    out = _finish(be, be.pool(xt, plan), native)
    if spec.return_indices:
        _remember_plane(be, out[1], plan.in_size)
    reuse = native or (backend is not None and be.numpy_arrays and xt is x)
    return out, ((be, plan) if reuse else None)


_FAST_ENTRIES = 64  # distinct (tensor type, dtype, shape, backend) per layer before it forgets


class _PoolND:
    ndim: int = 0

    def __init__(
        self,
        mode: str,
        window: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: Padding = "valid",
        dilation: int | tuple[int, ...] = 1,
        ceil_mode: bool = False,
        count_include_pad: bool = False,
        p: float | None = None,
        data_format: str | None = None,
        return_indices: bool = False,
        *,
        backend: str | None = None,
    ) -> None:
        self.spec: PoolSpec = make_spec(
            mode, window, stride, padding, dilation, ceil_mode, count_include_pad, p,
            data_format, return_indices, ndim=self.ndim)
        self.backend = None if backend is None else config.normalize_backend_name(backend)
        # (type, dtype, shape, backend) of a framework tensor -> (backend.pool, plan): a repeat
        # call skips dispatch, dtype and shape checks, which ran on the first call.
        self._fast: dict[tuple[Any, ...], tuple[Backend, PoolPlan]] = {}

    def __call__(self, x: Any, backend: str | None = None) -> Any:
        """Pool ``x`` (NumPy array or framework tensor); see the class docstring."""
        if backend is None:
            backend = self.backend
        try:
            key: tuple[Any, ...] | None = (type(x), x.dtype, x.shape, backend)
            entry = self._fast.get(key)  # type: ignore[arg-type]
        except (AttributeError, TypeError):  # no shape, or an unhashable symbolic shape
            key = entry = None
        if entry is not None:
            out = entry[0].pool(x, entry[1])
            if self.spec.return_indices:
                _remember_plane(entry[0], out[1], entry[1].in_size)
            return out
        out, entry = _pool_once(x, self.spec, backend)
        if entry is not None and key is not None:
            if len(self._fast) >= _FAST_ENTRIES:
                self._fast.clear()
            self._fast[key] = entry
        return out

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Output shape for an input of ``shape`` (validates it)."""
        return self.spec.output_shape(tuple(shape))

    def __repr__(self) -> str:
        s = self.spec
        return (f"{type(self).__name__}({s.mode!r}, window={s.window}, stride={s.stride}, "
                f"padding={s.padding!r}, dilation={s.dilation}, ceil_mode={s.ceil_mode}, "
                f"count_include_pad={s.count_include_pad}, p={s.p}, "
                f"data_format={s.data_format!r}, return_indices={s.return_indices})")


_POOL_DOC = """{n}-D pooling with one meaning on every backend (API.md §1).

    ``mode`` is ``"max"``, ``"avg"`` or ``"lp"``; ``stride=None`` means ``window``; ``padding``
    is ``"valid"``, ``"same"`` (= ``"same_upper"``, TensorFlow's rule), ``"same_lower"``, an int,
    one int per dim, or ``(low, high)`` pairs; padded cells never win a max and, unless
    ``count_include_pad``, are not counted by avg. ``ceil_mode`` follows ONNX/PyTorch.
    The spec is validated here, once; calling it pools a NumPy array or a framework tensor.

    >>> import numpy as np, pooladapt as pa
    >>> x = np.arange({size}, dtype=np.float32).reshape({shape})
    >>> pa.Pool{n}D("max", 2, data_format="channels_first")(x).ravel().tolist()
    {example}
    """


class Pool1D(_PoolND):
    __doc__ = _POOL_DOC.format(n=1, size=4, shape="(1, 1, 4)", example="[1.0, 3.0]")
    ndim = 1


class Pool2D(_PoolND):
    __doc__ = _POOL_DOC.format(n=2, size=16, shape="(1, 1, 4, 4)",
                               example="[5.0, 7.0, 13.0, 15.0]")
    ndim = 2


class Pool3D(_PoolND):
    __doc__ = _POOL_DOC.format(n=3, size=8, shape="(1, 1, 2, 2, 2)", example="[7.0]")
    ndim = 3


def _typed(value: Any) -> Any:
    """A cache key that tells 2 from 2.0 and True, also inside tuples."""
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_typed(v) for v in value))
    return (type(value), value)


_layer_cache: dict[Any, _PoolND] = {}


def _cached_layer(cls: type[_PoolND], args: tuple[Any, ...]) -> _PoolND:
    types = tuple(map(type, args))
    key = (cls, _typed(args) if tuple in types or list in types else (args, types))
    try:
        layer = _layer_cache.get(key)
    except TypeError:  # an unhashable argument: build uncached (its validation explains it)
        return cls(*args)
    if layer is None:
        layer = cls(*args)
        if len(_layer_cache) > 1024:
            _layer_cache.clear()
        _layer_cache[key] = layer
    return layer


class PoolFunction(Protocol):
    """``pool1d``/``pool2d``/``pool3d``: the functional form of ``Pool1D/2D/3D``."""

    def __call__(self, x: Any, mode: str, window: int | tuple[int, ...],
                 stride: int | tuple[int, ...] | None = None, padding: Padding = "valid",
                 dilation: int | tuple[int, ...] = 1, ceil_mode: bool = False,
                 count_include_pad: bool = False, p: float | None = None,
                 data_format: str | None = None, return_indices: bool = False, *,
                 backend: str | None = None) -> Any: ...


class GlobalPoolFunction(Protocol):
    """``global_pool1d``/``2d``/``3d``."""

    def __call__(self, x: Any, mode: str, keepdims: bool = False, *, p: float | None = None,
                 data_format: str | None = None, backend: str | None = None) -> Any: ...


class AdaptivePoolFunction(Protocol):
    """``adaptive_pool1d``/``2d``/``3d``."""

    def __call__(self, x: Any, mode: str, output_size: int | tuple[int | None, ...], *,
                 return_indices: bool = False, data_format: str | None = None,
                 backend: str | None = None) -> Any: ...


class UnpoolFunction(Protocol):
    """``max_unpool1d``/``2d``/``3d``."""

    def __call__(self, y: Any, indices: Any,
                 output_size: int | tuple[int, ...] | None = None, *,
                 data_format: str | None = None, backend: str | None = None) -> Any: ...


def _functional(cls: type[_PoolND]) -> PoolFunction:
    def pool(
        x: Any,
        mode: str,
        window: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: Padding = "valid",
        dilation: int | tuple[int, ...] = 1,
        ceil_mode: bool = False,
        count_include_pad: bool = False,
        p: float | None = None,
        data_format: str | None = None,
        return_indices: bool = False,
        *,
        backend: str | None = None,
    ) -> Any:
        args = (mode, window, stride, padding, dilation, ceil_mode, count_include_pad, p,
                data_format or config.default_data_format(), return_indices)
        return _cached_layer(cls, args)(x, backend)

    pool.__name__ = pool.__qualname__ = f"pool{cls.ndim}d"
    pool.__doc__ = (f"Functional form of :class:`{cls.__name__}`: "
                    f"``pool{cls.ndim}d(x, mode, window, ...)`` builds the spec and pools x.")
    return pool


pool1d = _functional(Pool1D)
pool2d = _functional(Pool2D)
pool3d = _functional(Pool3D)


# ---------------------------------------------------------------------------- the family


def run_global(x: Any, spec: GlobalSpec, backend: str | None = None) -> Any:
    be, xt, native = _prepare(x, backend, spec.mode)
    check_rank(tuple(xt.shape), spec.ndim, spec.data_format)
    # a graph tensor may have unknown (None) spatial sizes: global pooling needs no plan
    check_spatial(tuple(int(xt.shape[a]) for a in spec.spatial_axes if xt.shape[a] is not None))
    return _finish(be, be.global_pool(xt, spec), native)


def run_adaptive(x: Any, spec: AdaptiveSpec, backend: str | None = None) -> Any:
    be, xt, native = _prepare(x, backend, spec.mode)
    plan = spec.plan(tuple(xt.shape))
    if plan.uniform:  # every bin a regular window: the plain pool, native on every backend
        out = be.pool(xt, spec.uniform_pool_spec(plan).plan(tuple(xt.shape)))
    else:
        out = be.adaptive_pool(xt, plan)
    out = _finish(be, out, native)
    if spec.return_indices:
        _remember_plane(be, out[1], plan.in_size)
    return out


def run_unpool(y: Any, indices: Any, spec: UnpoolSpec, backend: str | None = None) -> Any:
    name, native = dispatch.resolve(y, backend)
    if dispatch.owner_of(indices) != (name if native else None):
        kind = f"a {name} tensor" if native else "a NumPy array"
        raise TypeError(f"indices must be {kind} like the pooled values, got "
                        f"{type(indices).__module__}.{type(indices).__name__}")
    be = dispatch.load(name).BACKEND
    plane = spec.output_size or _plane_of(indices)
    if plane is None:
        raise ValueError(
            "max_unpool needs output_size: these indices did not come from a pooladapt pooling "
            "call in this process (pass output_size=the spatial size of the pooled input)"
        )
    if not native:
        y = be.from_numpy_input(_native_order(np.asarray(y)))
        indices = be.from_numpy_input(_native_order(np.asarray(indices)))
    check_rank(tuple(y.shape), spec.ndim, spec.data_format)
    if tuple(indices.shape) != tuple(y.shape):
        raise ValueError(f"indices must have the shape of the pooled values {tuple(y.shape)!r}, "
                         f"got {tuple(indices.shape)!r}")
    if not be.dtype_name(indices).startswith(("int", "uint")):
        raise TypeError(f"indices must be integers, got dtype {be.dtype_name(indices)}")
    return _finish(be, be.max_unpool(y, indices, spec, tuple(plane)), native)


def _global_fn(ndim: int) -> GlobalPoolFunction:
    def global_pool(x: Any, mode: str, keepdims: bool = False, *, p: float | None = None,
                    data_format: str | None = None, backend: str | None = None) -> Any:
        spec = make_global_spec(mode, ndim=ndim, keepdims=keepdims, p=p, data_format=data_format)
        return run_global(x, spec, backend)

    global_pool.__name__ = global_pool.__qualname__ = f"global_pool{ndim}d"
    global_pool.__doc__ = (
        f"Pool every spatial dim of a {ndim}-D input at once (mode max/avg/lp); "
        "``keepdims`` keeps them as size 1.")
    return global_pool


def _adaptive_fn(ndim: int) -> AdaptivePoolFunction:
    def adaptive_pool(x: Any, mode: str, output_size: int | tuple[int | None, ...], *,
                      return_indices: bool = False, data_format: str | None = None,
                      backend: str | None = None) -> Any:
        spec = make_adaptive_spec(mode, output_size, ndim=ndim, data_format=data_format,
                                  return_indices=return_indices)
        return run_adaptive(x, spec, backend)

    adaptive_pool.__name__ = adaptive_pool.__qualname__ = f"adaptive_pool{ndim}d"
    adaptive_pool.__doc__ = (
        f"{ndim}-D adaptive max/avg pooling to ``output_size`` with PyTorch's bins: "
        "bin i spans floor(i*in/out) to ceil((i+1)*in/out).")
    return adaptive_pool


def _unpool_fn(ndim: int) -> UnpoolFunction:
    def max_unpool(y: Any, indices: Any, output_size: int | tuple[int, ...] | None = None, *,
                   data_format: str | None = None, backend: str | None = None) -> Any:
        spec = make_unpool_spec(output_size, ndim=ndim, data_format=data_format)
        return run_unpool(y, indices, spec, backend)

    max_unpool.__name__ = max_unpool.__qualname__ = f"max_unpool{ndim}d"
    max_unpool.__doc__ = (
        f"Inverse of {ndim}-D max pooling with ``return_indices=True``: zeros everywhere except "
        "the max positions. ``output_size`` defaults to the plane the pooling call inverted.")
    return max_unpool


global_pool1d, global_pool2d, global_pool3d = (_global_fn(n) for n in (1, 2, 3))
adaptive_pool1d, adaptive_pool2d, adaptive_pool3d = (_adaptive_fn(n) for n in (1, 2, 3))
max_unpool1d, max_unpool2d, max_unpool3d = (_unpool_fn(n) for n in (1, 2, 3))


# ------------------------------------------------------------------------ fractional max pooling

FRACTIONAL_BACKENDS: dict[str, str] = {
    "jax": "pooladapt.backends.jax.fractional",
    "mxnet": "pooladapt.backends.mxnet.fractional",
    "numpy": "pooladapt.backends.numpy.fractional",
    "onnxruntime": "pooladapt.backends.onnxruntime.fractional",
    "tensorflow": "pooladapt.backends.tensorflow.fractional",
    "torch": "pooladapt.backends.torch.family",
}
"""Backend name -> the module that realises fractional max pooling on it (``draw_samples``,
``fractional_max_pool``). The other backends raise NotImplementedError naming these."""

_fractional_loaded: dict[str, ModuleType] = {}


def fractional_backend(name: str) -> ModuleType:
    """The fractional max pooling module of backend ``name`` (imported once, with its
    framework); NotImplementedError for a backend that has none."""
    module = _fractional_loaded.get(name)
    if module is not None:
        return module
    if name not in FRACTIONAL_BACKENDS:
        raise NotImplementedError(
            f"fractional max pooling is not available on the {name!r} backend; it runs on "
            f"{', '.join(sorted(FRACTIONAL_BACKENDS))} (pass a tensor of one of them, or "
            "backend=...)")
    dispatch.load(name)
    module = _fractional_loaded[name] = importlib.import_module(FRACTIONAL_BACKENDS[name])
    return module


def _fractional_samples(be: Backend, samples: Any, native: bool, name: str,
                        expected: tuple[int | None, int, int]) -> Any:
    """``random_samples`` checked (type, dtype, shape; values in [0, 1) outside a trace) and
    as a tensor of the backend."""
    if dispatch.owner_of(samples) != (name if native else None):
        kind = f"a {name} tensor" if native else "a NumPy array"
        raise TypeError(f"random_samples must be {kind} like the input, got "
                        f"{type(samples).__module__}.{type(samples).__name__}")
    if not native:
        samples = be.from_numpy_input(_native_order(np.asarray(samples)))
    dtype = be.dtype_name(samples)
    if dtype not in _FLOAT_KINDS:
        raise TypeError(f"random_samples must be floating point (their dtype is the window "
                        f"rule's precision), got dtype {dtype}")
    shape = tuple(samples.shape)
    batch, channels, ndim = expected
    short = batch is not None and shape[0] is not None and shape[0] < batch
    if len(shape) != 3 or short or shape[1] != channels or shape[2] != ndim:
        least = "the batch" if batch is None else batch
        raise ValueError(f"random_samples must have shape (N >= {least}, {channels}, {ndim}): "
                         f"(batch, channels, one sample per spatial dim), got {shape!r}")
    if not be.tracing(samples) and math.prod(shape):
        values = be.to_numpy(samples).astype(np.float64)
        if not (values.min() >= 0 and values.max() < 1):
            raise ValueError(f"random_samples must lie in [0, 1), got values from "
                             f"{values.min()!r} to {values.max()!r}")
    return samples


def run_fractional(x: Any, spec: FractionalSpec, random_samples: Any = None,
                   backend: str | None = None) -> Any:
    """Fractional max pooling of ``x`` with a built spec (samples drawn when None)."""
    be, xt, native = _prepare(x, backend, "max")
    impl = fractional_backend(be.name)
    shape = tuple(xt.shape)
    plan = spec.plan(shape)
    batch = shape[0] if shape[0] is None else int(shape[0])  # None: a graph's unknown batch
    expected = (batch, int(shape[spec.channel_axis]), spec.ndim)
    samples = (impl.draw_samples(xt, expected) if random_samples is None else
               _fractional_samples(be, random_samples, native, be.name, expected))
    out = _finish(be, impl.fractional_max_pool(xt, plan, samples), native)
    if spec.return_indices:
        _remember_plane(be, out[1], plan.in_size)
    return out


class FractionalPoolFunction(Protocol):
    """``fractional_max_pool2d``/``3d``."""

    def __call__(self, x: Any, kernel_size: int | tuple[int, ...],
                 output_size: int | tuple[int, ...] | None = None,
                 output_ratio: float | tuple[float, ...] | None = None,
                 return_indices: bool = False, random_samples: Any = None, *,
                 data_format: str | None = None, backend: str | None = None) -> Any: ...


def _fractional_fn(ndim: int) -> FractionalPoolFunction:
    def fractional_max_pool(x: Any, kernel_size: int | tuple[int, ...],
                            output_size: int | tuple[int, ...] | None = None,
                            output_ratio: float | tuple[float, ...] | None = None,
                            return_indices: bool = False, random_samples: Any = None, *,
                            data_format: str | None = None, backend: str | None = None) -> Any:
        spec = make_fractional_spec(kernel_size, output_size, output_ratio, return_indices,
                                    ndim=ndim, data_format=data_format)
        return run_fractional(x, spec, random_samples, backend)

    fractional_max_pool.__name__ = fractional_max_pool.__qualname__ = (
        f"fractional_max_pool{ndim}d")
    order = "width, height" if ndim == 2 else "depth, height, width"
    fractional_max_pool.__doc__ = (
        f"{ndim}-D fractional max pooling (PyTorch's): windows of ``kernel_size`` placed so "
        "that ``output_size`` (or ``output_ratio`` of the input) fit, by one sample u in "
        "[0, 1) per batch item, channel and dim: along a dim of n cells, window i < out - 1 "
        "starts at int((i + u) * alpha) - int(u * alpha), alpha = (n - k) / (out - 1), the "
        "last at n - k, computed in the samples' dtype. ``random_samples`` has shape "
        f"(batch, channels, {ndim}), its last axis in the order {order} (torch's); drawn "
        "uniformly in the input's dtype when None. Max ties and NaN as in ``pool*d``.")
    return fractional_max_pool


fractional_max_pool2d, fractional_max_pool3d = (_fractional_fn(n) for n in (2, 3))
