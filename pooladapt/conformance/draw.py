"""Random conformance cases, drawn once for both random runs: the command line's ``--fuzz``
(NumPy's seeded Generator) and the hypothesis fuzz tests (``pooladapt.testing``, which shrinks
a failure to a small case).

Each ``draw_*_case`` takes a :class:`Chooser` and returns a valid :class:`Case`: any mode,
window, stride, dilation, padding form, ceil mode, layout, dtype and size the spec accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from pooladapt.conformance.cases import INT_DTYPES, Case, available_dtypes, features_of
from pooladapt.spec import make_spec

T = TypeVar("T")

LAYOUTS = ("channels_first", "channels_last")


class Chooser(Protocol):
    """Where the random choices come from; the first option is the simplest (shrinks to)."""

    def integer(self, lo: int, hi: int) -> int:
        """An int in [lo, hi]."""

    def choice(self, options: Sequence[T]) -> T: ...

    def reject(self) -> None:
        """Give up on this draw (the spec rejected it); never returns."""


class Rejected(Exception):
    """A draw the spec rejected (:meth:`NumpyChooser.reject`)."""


class NumpyChooser:
    """Choices from a NumPy Generator: reproducible from a seed."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def choice(self, options: Sequence[T]) -> T:
        return options[int(self.rng.integers(len(options)))]

    def reject(self) -> None:
        raise Rejected


def _dtype(ch: Chooser, mode: str, dtypes: Sequence[str] | None, gradient: bool) -> str:
    allowed = [d for d in (dtypes or available_dtypes())
               if (mode == "max" and not gradient) or d not in INT_DTYPES]
    if not allowed:
        ch.reject()
    return ch.choice(allowed)


def _values(ch: Chooser, dtype: str, gradient: bool) -> str:
    if dtype in INT_DTYPES:
        return ch.choice(("int", "extremes"))
    return ch.choice(("normal", "negative", "ties") + (() if gradient else ("nan", "extremes")))


def _batch(ch: Chooser) -> tuple[int, int]:
    return ch.integer(1, 2), ch.integer(1, 3)


def _p(ch: Chooser, gradient: bool) -> float:
    return ch.choice((1.0, 2.0, 3.0) + (() if gradient else (0.5, 1.5)))


def _padding(ch: Chooser, window: tuple[int, ...]) -> Any:
    kind = ch.choice(("valid", "same", "same_lower", "int", "per_dim", "pairs"))
    if kind == "int":
        return ch.integer(0, min(window) - 1)
    if kind == "per_dim":
        return tuple(ch.integer(0, k - 1) for k in window)
    if kind == "pairs":
        return tuple((ch.integer(0, k - 1), ch.integer(0, k - 1)) for k in window)
    return kind


def _checked(ch: Chooser, case: Case, mode: str = "max") -> Case:
    try:
        make_spec(**{"mode": mode, **case.kwargs}, ndim=case.ndim).plan(case.shape())
    except ValueError:
        ch.reject()
    return case


def draw_pool_case(ch: Chooser, dtypes: Sequence[str] | None = None, max_size: int = 8,
                   gradient: bool = False) -> Case:
    """A valid ``pool`` case. ``gradient``: differentiable inputs only (float dtypes, no NaN,
    p >= 1 for lp)."""
    ndim = ch.integer(1, 3)
    mode = ch.choice(("max", "avg", "lp"))
    window = tuple(ch.integer(1, 4) for _ in range(ndim))
    stride = None if ch.choice((True, False)) else tuple(ch.integer(1, 3) for _ in range(ndim))
    dilation = tuple(ch.integer(1, 3) for _ in range(ndim))
    padding = _padding(ch, window)
    extent = [d * (k - 1) + 1 for k, d in zip(window, dilation)]
    sizes = tuple(ch.integer(max(1, e - 2), max(e, max_size if ndim < 3 else 6))
                  for e in extent)
    layout = ch.choice(LAYOUTS)
    dtype = _dtype(ch, mode, dtypes, gradient)
    args: dict[str, Any] = dict(mode=mode, window=window, stride=stride, padding=padding,
                                dilation=dilation, ceil_mode=ch.choice((False, True)),
                                data_format=layout)
    if mode == "avg":
        args["count_include_pad"] = ch.choice((False, True))
    if mode == "lp":
        args["p"] = _p(ch, gradient)
    if mode == "max" and not gradient:
        args["return_indices"] = ch.choice((False, True))
    case = Case("pool", ndim, tuple(args.items()), sizes, dtype, _values(ch, dtype, gradient),
                _batch(ch), gradient=gradient)
    return _checked(ch, case, mode)


def draw_global_case(ch: Chooser, dtypes: Sequence[str] | None = None, max_size: int = 6,
                     gradient: bool = False) -> Case:
    """A ``global`` case: mode, keepdims, p, layout, dtype and spatial size."""
    ndim = ch.integer(1, 3)
    mode = ch.choice(("max", "avg", "lp"))
    args: dict[str, Any] = dict(mode=mode, keepdims=ch.choice((False, True)),
                                data_format=ch.choice(LAYOUTS))
    if mode == "lp":
        args["p"] = _p(ch, gradient)
    sizes = tuple(ch.integer(1, max_size if ndim < 3 else 4) for _ in range(ndim))
    dtype = _dtype(ch, mode, dtypes, gradient)
    return Case("global", ndim, tuple(args.items()), sizes, dtype,
                _values(ch, dtype, gradient), _batch(ch), gradient=gradient)


def draw_adaptive_case(ch: Chooser, dtypes: Sequence[str] | None = None, max_size: int = 7,
                       gradient: bool = False) -> Case:
    """An ``adaptive`` case: output sizes below, equal to and above the input, or None."""
    ndim = ch.integer(1, 3)
    mode = ch.choice(("max", "avg"))
    sizes = tuple(ch.integer(1, max_size if ndim < 3 else 4) for _ in range(ndim))
    output = tuple(None if ch.choice((True, False)) else ch.integer(1, s + 2) for s in sizes)
    args: dict[str, Any] = dict(mode=mode, output_size=output, data_format=ch.choice(LAYOUTS))
    if mode == "max" and not gradient:
        args["return_indices"] = ch.choice((False, True))
    dtype = _dtype(ch, mode, dtypes, gradient)
    return Case("adaptive", ndim, tuple(args.items()), sizes, dtype,
                _values(ch, dtype, gradient), _batch(ch), gradient=gradient)


def draw_unpool_case(ch: Chooser, dtypes: Sequence[str] | None = None,
                     max_size: int = 7) -> Case:
    """An ``unpool`` case: the geometry of the max pool whose indices are inverted."""
    ndim = ch.integer(1, 3)
    window = tuple(ch.integer(1, 3) for _ in range(ndim))
    stride = None if ch.choice((True, False)) else tuple(ch.integer(1, 3) for _ in range(ndim))
    padding = tuple((ch.integer(0, k - 1), ch.integer(0, k - 1)) for k in window)
    dilation = tuple(ch.integer(1, 2) for _ in range(ndim))
    cap = max_size if ndim < 3 else 4
    sizes = tuple(ch.integer(max(1, d * (k - 1) + 1 - 2), max(cap, d * (k - 1) + 1))
                  for k, d in zip(window, dilation))
    args: dict[str, Any] = dict(window=window, stride=stride, padding=padding,
                                dilation=dilation, ceil_mode=ch.choice((False, True)),
                                data_format=ch.choice(LAYOUTS))
    dtype = _dtype(ch, "max", dtypes, False)
    case = Case("unpool", ndim, tuple(args.items()), sizes, dtype, _values(ch, dtype, False),
                _batch(ch))
    return _checked(ch, case)


DRAWS = {"pool": draw_pool_case, "global": draw_global_case, "adaptive": draw_adaptive_case}


def random_cases(n: int, seed: int = 0, dtypes: Sequence[str] | None = None,
                 gradients: bool = False) -> list[Case]:
    """``n`` random cases drawn from ``seed``: pooling (most), global and adaptive, tagged with
    the features they exercise and ``fuzz``. With ``gradients`` about a third are gradient
    cases, in the float dtypes among ``dtypes``."""
    ch = NumpyChooser(np.random.default_rng(seed))
    floats = [d for d in (dtypes or available_dtypes()) if d not in INT_DTYPES]
    cases: list[Case] = []
    for _ in range(50 * n + 100):
        if len(cases) >= n:
            break
        kind = ch.choice(("pool", "pool", "pool", "global", "adaptive"))
        gradient = gradients and bool(floats) and ch.integer(0, 2) == 0
        try:
            case = DRAWS[kind](ch, dtypes, gradient=gradient)
        except Rejected:
            continue
        tags = ("fuzz", *sorted(features_of(case, case.make_input())))
        cases.append(Case(case.kind, case.ndim, case.args, case.spatial, case.dtype,
                          case.values, case.batch, case.gradient, features=tags))
    return cases
