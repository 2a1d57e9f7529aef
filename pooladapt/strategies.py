"""Hypothesis strategies for random pooling specs and inputs (tests, fuzzing, the CLI).

Imported only by test code: hypothesis is a test dependency, not a runtime one.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from pooladapt.conformance import INT_DTYPES, Case, available_dtypes, np_dtype


@st.composite
def pool_cases(draw, dtypes: tuple[str, ...] | None = None, max_size: int = 8,
               for_gradient: bool = False) -> Case:
    """A valid random ``pool`` case: any mode, geometry, padding form, layout and dtype.

    ``for_gradient`` keeps to differentiable inputs: no NaN, and p >= 1 for lp.
    """
    ndim = draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["max", "avg", "lp"]))
    window = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    stride = draw(st.none() | st.tuples(*[st.integers(1, 3)] * ndim))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    kind = draw(st.sampled_from(["valid", "same", "same_lower", "int", "pairs"]))
    if kind == "int":
        padding = draw(st.integers(0, min(window) - 1))
    elif kind == "pairs":
        padding = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1)))
                        for k in window)
    else:
        padding = kind
    extent = [d * (k - 1) + 1 for k, d in zip(window, dilation)]
    sizes = tuple(draw(st.integers(max(1, e - 2), max(e, max_size if ndim < 3 else 6)))
                  for e in extent)
    layout = draw(st.sampled_from(["channels_first", "channels_last"]))
    allowed = [d for d in (dtypes or available_dtypes())
               if mode == "max" or d.startswith(("float", "bfloat"))]
    dtype = draw(st.sampled_from(allowed))
    args: dict = dict(mode=mode, window=window, stride=stride, padding=padding,
                      dilation=dilation, ceil_mode=draw(st.booleans()), data_format=layout)
    if mode == "avg":
        args["count_include_pad"] = draw(st.booleans())
    if mode == "lp":
        args["p"] = draw(st.sampled_from([1.0, 2.0, 3.0] + ([] if for_gradient else [0.5])))
    if mode == "max":
        args["return_indices"] = draw(st.booleans())
    kinds = ["normal", "negative", "ties"] + ([] if for_gradient else ["nan"])
    values = draw(st.sampled_from(kinds))
    batch = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    case = Case("pool", ndim, tuple(args.items()), sizes, dtype, values, batch,
                gradient=for_gradient, features=("hypothesis",))
    from pooladapt.spec import make_spec

    try:
        make_spec(**args, ndim=ndim).plan(case.shape())
    except ValueError:
        assume(False)
    return case


def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**16)


def _dtype(draw, mode: str, dtypes: tuple[str, ...] | None) -> str:
    allowed = [d for d in (dtypes or available_dtypes())
               if mode == "max" or d.startswith(("float", "bfloat"))]
    return draw(st.sampled_from(allowed))


def _batch(draw) -> tuple[int, int]:
    return draw(st.integers(1, 2)), draw(st.integers(1, 3))


@st.composite
def global_cases(draw, dtypes: tuple[str, ...] | None = None, max_size: int = 6,
                 for_gradient: bool = False) -> Case:
    """A random ``global`` case: mode, keepdims, p, layout, dtype and spatial size."""
    ndim = draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["max", "avg", "lp"]))
    args: dict = dict(mode=mode, keepdims=draw(st.booleans()),
                      data_format=draw(st.sampled_from(["channels_first", "channels_last"])))
    if mode == "lp":
        args["p"] = draw(st.sampled_from([1.0, 2.0, 3.0] + ([] if for_gradient else [0.5])))
    sizes = tuple(draw(st.integers(1, max_size if ndim < 3 else 4)) for _ in range(ndim))
    return Case("global", ndim, tuple(args.items()), sizes, _dtype(draw, mode, dtypes),
                batch=_batch(draw), gradient=for_gradient, features=("hypothesis",))


@st.composite
def adaptive_cases(draw, dtypes: tuple[str, ...] | None = None, max_size: int = 7,
                   for_gradient: bool = False) -> Case:
    """A random ``adaptive`` case: output sizes below, equal to and above the input, or None."""
    ndim = draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["max", "avg"]))
    cap = max_size if ndim < 3 else 4
    sizes = tuple(draw(st.integers(1, cap)) for _ in range(ndim))
    output = tuple(draw(st.none() | st.integers(1, s + 2)) for s in sizes)
    args: dict = dict(mode=mode, output_size=output,
                      data_format=draw(st.sampled_from(["channels_first", "channels_last"])))
    if mode == "max":
        args["return_indices"] = draw(st.booleans())
    return Case("adaptive", ndim, tuple(args.items()), sizes, _dtype(draw, mode, dtypes),
                batch=_batch(draw), gradient=for_gradient, features=("hypothesis",))


@st.composite
def unpool_cases(draw, dtypes: tuple[str, ...] | None = None, max_size: int = 7) -> Case:
    """A random ``unpool`` case: the geometry of the max pool whose indices are inverted."""
    ndim = draw(st.integers(1, 3))
    window = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    stride = draw(st.none() | st.tuples(*[st.integers(1, 3)] * ndim))
    padding = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in window)
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    cap = max_size if ndim < 3 else 4
    sizes = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2), max(cap, d * (k - 1) + 1)))
                  for k, d in zip(window, dilation))
    args: dict = dict(window=window, stride=stride, padding=padding, dilation=dilation,
                      ceil_mode=draw(st.booleans()),
                      data_format=draw(st.sampled_from(["channels_first", "channels_last"])))
    case = Case("unpool", ndim, tuple(args.items()), sizes, _dtype(draw, "max", dtypes),
                batch=_batch(draw), features=("hypothesis",))
    from pooladapt.spec import make_spec

    try:
        make_spec("max", **args, ndim=ndim).plan(case.shape())
    except ValueError:
        assume(False)
    return case


def _tiny(dtype: str) -> float:
    """The smallest positive subnormal of a float dtype."""
    mantissa, min_exp = {"float16": (10, -14), "bfloat16": (7, -126), "float32": (23, -126),
                         "float64": (52, -1022)}[dtype]
    return 2.0 ** (min_exp - mantissa)


def _float_specials(dtype: str) -> list[float]:
    tiny = _tiny(dtype)
    return [math.nan, math.inf, -math.inf, -0.0, 0.0, tiny, -tiny, 3 * tiny, 60000.0, -60000.0,
            32768.0]


def _int_specials(dtype: str) -> list[int]:
    info = np.iinfo(dtype)
    edges = [int(info.min), int(info.min) + 1, int(info.max), int(info.max) - 1, 0]
    return edges + ([2**53, 2**53 + 1, -(2**53) - 1] if dtype == "int64" else [])


_KINDS = st.sampled_from(["ties", "real", "constant"])


@cache
def _values(dtype: str, specials: bool) -> st.SearchStrategy:
    if dtype in INT_DTYPES:
        return st.sampled_from(_int_specials(dtype))
    return st.sampled_from(_float_specials(dtype) if specials else [0.0, -0.0, 1.0, -2.5])


@lru_cache(maxsize=4096)  # building strategies costs more than drawing from them
def _cells(size: int, dtype: str) -> st.SearchStrategy:
    return st.lists(st.tuples(st.integers(0, size - 1), _values(dtype, True)), max_size=4)


@st.composite
def inputs(draw, case: Case, specials: bool | None = None) -> np.ndarray:
    """An input array for ``case``: a seeded base plus a few drawn special cells.

    The base is ties (eighths), arbitrary floats in [-4, 4] (the full range for integers)
    or one repeated value. Unless the case is a gradient case or ``specials`` is False, up
    to four cells then get NaN, +-inf, +-0.0, subnormals of the dtype or +-60000 (which
    float16 holds but a float16 sum of two does not); integers get their dtype's extremes
    (and 2**53 + 1 for int64). Hypothesis shrinks the specials, their cells and the kind.
    """
    shape = case.shape()
    size = math.prod(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if specials is None:
        specials = not case.gradient
    integer = case.dtype in INT_DTYPES
    values = _values(case.dtype, specials)
    kind = draw(_KINDS)
    if kind == "constant":
        x = np.full(shape, draw(values), dtype=case.dtype if integer else np.float64)
    elif integer:
        info = np.iinfo(case.dtype)
        lo, hi = (info.min, info.max) if kind == "real" else (max(-3, info.min), 3)
        x = rng.integers(lo, hi, size=shape, endpoint=True, dtype=case.dtype)
    elif kind == "ties":
        x = rng.integers(-32, 33, size=shape) / 8
    else:
        x = rng.uniform(-4, 4, size=shape).astype(np.float32).astype(np.float64)
    if not integer:
        x = x.astype(np_dtype(case.dtype))
    if specials and size:
        cells = draw(_cells(size, case.dtype))
        flat = x.reshape(-1)
        for cell, value in cells:
            flat[cell] = value
    return x


@st.composite
def cases_with_inputs(draw, cases: st.SearchStrategy[Case]) -> tuple[Case, np.ndarray]:
    """A case and an input drawn for it."""
    case = draw(cases)
    return case, draw(inputs(case))


__all__ = ["adaptive_cases", "cases_with_inputs", "global_cases", "inputs", "pool_cases",
           "seeds", "unpool_cases"]
