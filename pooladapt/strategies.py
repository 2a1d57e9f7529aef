"""Hypothesis strategies for random pooling specs and inputs (tests, fuzzing, the CLI).

Imported only by test code: hypothesis is a test dependency, not a runtime one.
"""

from __future__ import annotations

from hypothesis import assume
from hypothesis import strategies as st

from pooladapt.conformance import Case, available_dtypes


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


__all__ = ["pool_cases", "seeds"]
