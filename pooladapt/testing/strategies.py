"""Hypothesis strategies for random pooling cases and inputs (the fuzz tests, your own tests).

The cases come from the same drawing code as the command line's ``--fuzz``
(``pooladapt.conformance.draw``), driven by hypothesis, so a failure shrinks to a small spec;
:func:`inputs` draws an input for a case with a few special cells (NaN, infinities, signed
zeros, subnormals, integer extremes). Needs hypothesis, a test dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import TypeVar

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from pooladapt.conformance import (
    INT_DTYPES,
    Case,
    draw_adaptive_case,
    draw_global_case,
    draw_pool_case,
    draw_unpool_case,
    np_dtype,
)

T = TypeVar("T")


class _HypothesisChooser:
    """A ``pooladapt.conformance.Chooser`` over hypothesis' ``draw``."""

    def __init__(self, draw) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def reject(self) -> None:
        assume(False)


def _cases(draw_case, **defaults):
    @st.composite
    def strategy(draw, dtypes: Sequence[str] | None = None, **kw) -> Case:
        return draw_case(_HypothesisChooser(draw), dtypes, **{**defaults, **kw})

    strategy.__doc__ = draw_case.__doc__
    return strategy


pool_cases = _cases(draw_pool_case)
global_cases = _cases(draw_global_case)
adaptive_cases = _cases(draw_adaptive_case)
unpool_cases = _cases(draw_unpool_case)


def seeds() -> st.SearchStrategy[int]:
    return st.integers(0, 2**16)


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
