"""MXNet 1.9.1's deviations from the canonical meaning, each with its workaround.

Each is named after its FRAMEWORK-NOTES.md entry or the measured behaviour, with the test in
``tests/mxnet/test_framework_notes.py`` that runs the raw MXNet op and pins it (the notes'
§1a rows: integers and dilation, lp's p, bfloat16; D4, D5, D11; oneDNN, detected here).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import mxnet as mx
import numpy as np

from pooladapt.lowering import Cover
from pooladapt.plan import AdaptivePlan, PoolPlan

nd = mx.nd

# ---------------------------------------------------------------------------- dtype gaps

POOLING_DTYPES = ("float16", "float32", "float64")
"""``Pooling`` takes floats only; integers raise "only support floating point types" (§1a;
test_integers_and_dilation_are_not_native): pooladapt takes the window's taps."""

NATIVE_LP = (1.0, 2.0, 3.0)
"""``Pooling``'s lp takes p of 1, 2 or 3 only (test_lp_supports_only_p_1_2_3_natively); it
keeps the sign (D11, test_d11_lp_keeps_the_sign), so pooladapt gives it ``|x|`` for odd p."""

ARRAY_DTYPES = frozenset(("float16", "float32", "float64", "uint8", "int8", "int32", "int64",
                          "bool"))
"""The NumPy dtypes MXNet 1.9.1 has arrays of (test_backend's stand-in tests)."""

WIDER = {"int16": "int32", "uint16": "int32", "uint32": "int64", "uint64": "int64"}
"""The integers MXNet lacks, each pooled as a wider one it has (``StandIn``)."""

BFLOAT16_REASON = ("MXNet 1.9.1 has no bfloat16 arrays (NumPy bfloat16 input raises "
                   "TypeError); cast to float32")

# ---------------------------------------------------------------------------- oneDNN


@functools.lru_cache(maxsize=1)
def onednn_pools() -> bool:
    """Whether oneDNN runs float32 channels-first pooling in this process (the build has it
    and ``MXNET_MKLDNN_ENABLED`` is not 0), told by what it computes: an average of integers
    whose sum is exact in any order, which oneDNN divides once and MXNet's own kernel sums
    cell by cell as x / count, off by an ulp (test_avg_kernels_divide_or_sum_quotients)."""
    probe = nd.array(np.array([85, 63, 51, 26, 30, 4, 7, 1, 17], np.float32).reshape(1, 1, 3, 3))
    with mx.autograd.pause():
        got = nd.Pooling(probe, kernel=(3, 3), pool_type="avg").asnumpy().item()
    return got == float(np.float32(284) / np.float32(9))


@contextlib.contextmanager
def recorded_input(x: Any, copy: bool = True) -> Iterator[Any]:
    """x ready for max ``Pooling`` whose gradient is recorded. oneDNN's max backward reads the
    argmax its forward stored, but that forward stores none outside training mode, and a
    view (a reshape or slice of another array) makes the forward run MXNet's own kernel,
    which stores none either: wrong cells got the gradient
    (test_onednn_max_gradient_needs_a_training_forward_of_a_plain_array). So the forward runs
    in training mode, and float32 input, which oneDNN pools, is copied (``copy``: it may
    reach oneDNN)."""
    if not mx.autograd.is_recording():
        yield x
        return
    if copy and x.dtype == np.float32 and onednn_pools():
        x = x.copy()
    if mx.autograd.is_training():
        yield x
        return
    with mx.autograd.train_mode():
        yield x


def onednn_divides_avg(plan: PoolPlan, acc: str) -> bool:
    """Whether oneDNN computes this avg as one native ``Pooling`` (float32, channels first, the
    plan's own symmetric pads, no ceil cells), dividing the window sum once; MXNet's own
    kernel sums x / count and is an ulp off, so the plain translation divides a window sum
    itself (test_avg_kernels_divide_or_sum_quotients)."""
    spec = plan.spec
    return (acc == "float32" and spec.channels_first and plan.symmetric_pads
            and not any(plan.ceil_extra) and all(d == 1 for d in spec.dilation)
            and onednn_pools())


def adaptive_avg(x: Any, plan: AdaptivePlan) -> Any:
    """``contrib.AdaptiveAvgPooling2D`` (PyTorch's bins) is 2-D channels first only
    (test_adaptive_avg_pooling_is_2d_channels_first): elsewhere one dim at a time, each in a
    ``(1, cells before, dim, cells after)`` view (no transpose; a box's mean is the mean of
    its rows' means)."""
    spec = plan.spec
    if spec.ndim == 2 and spec.data_format == "channels_first":
        return nd.contrib.AdaptiveAvgPooling2D(x, output_size=plan.out_size)
    for d in reversed(range(spec.ndim)):
        axis, shape = spec.spatial_axes[d], x.shape
        rest = math.prod(shape[axis + 1:])
        view = x.reshape((1, math.prod(shape[:axis]), shape[axis], rest))
        x = nd.contrib.AdaptiveAvgPooling2D(view, output_size=(plan.out_size[d], rest))
        x = x.reshape((*shape[:axis], plan.out_size[d], *shape[axis + 1:]))
    return x


# ---------------------------------------------------------------------------- 'full' convention


def crop_to_plan(F: Any, y: Any, plan: PoolPlan, cover: Cover) -> Any:
    """The plan's windows of a native pool's ``y`` (``lowering.symmetric_cover``): MXNet's
    ``'full'`` convention has no drop rule and keeps a last window that starts in the high
    padding (D4, test_d4_full_convention_keeps_a_window_of_padding_only), and a pad grown by
    whole strides adds leading windows."""
    if not cover.crop:
        return y
    spec = plan.spec
    begin, end = [None] * (spec.ndim + 2), [None] * (spec.ndim + 2)
    for axis, skip, size in zip(spec.spatial_axes, cover.skip, plan.out_size):
        begin[axis], end[axis] = skip, skip + size
    return F.slice(y, begin=tuple(begin), end=tuple(end))


# ---------------------------------------------------------------------------- NaN and -inf in max


def nonfinite_rows(x: Any, host_values: np.ndarray | None | bool) -> np.ndarray | None:
    """The batch rows of x holding a NaN or an infinity, None when none does. MXNet's max
    skips NaN and gives the lowest finite value for a window of -inf (D5,
    test_d5_max_pooling_suppresses_nan, test_all_minus_inf_window_gives_the_lowest_finite_value):
    only these rows need :func:`restore_max`. ``host_values``: x read on the host (a speed
    route; None: all finite; False: not read), else one global average pooling finds them,
    where a NaN or an infinity makes its plane's mean non-finite (so does a float32 overflow
    in oneDNN's sum, which only costs the exact path)."""
    if host_values is None:
        return None
    s = x.shape
    if isinstance(host_values, np.ndarray):
        values = host_values
    else:
        view = x if len(s) == 4 else x.reshape((s[0], s[1], math.prod(s[2:-1]), s[-1]))
        with mx.autograd.pause():
            values = nd.Pooling(view, kernel=(1, 1), global_pool=True,
                                pool_type="avg").asnumpy()
    if np.isfinite(values).all():
        return None
    return np.flatnonzero(~np.isfinite(values.reshape(s[0], -1)).all(axis=1))


def restore_max(F: Any, x: Any, y: Any, max_pool: Callable[[Any], Any]) -> Any:
    """MXNet's max ``y = max_pool(x)`` made canonical: a window holding a NaN gives NaN, one
    of only -inf gives -inf. ``max_pool`` of a code map (1 = NaN, -1 = -inf, 0 = else) tells
    them apart, and sqrt(-code) * -inf maps 1 and -1 to the answer. The gradient of those
    windows is 0 here, as MXNet's own (the taps send it to their first NaN or -inf cell)."""
    code = max_pool((x != x) - (x == -math.inf))
    return F.where(code, F.sqrt(-code) * -math.inf, y)


def with_rows_fixed(x: Any, rows: np.ndarray | None, pool: Callable[[Any], Any],
                    exact: Callable[[Any], Any]) -> Any:
    """``pool(x)`` (one output or a tuple) with the batch ``rows`` replaced by ``exact`` of
    those rows; ``exact(x)`` alone where every row is listed."""
    if rows is not None and len(rows) == x.shape[0]:
        return exact(x)
    out = pool(x)
    if rows is None:
        return out
    rows = nd.array(rows, ctx=x.context, dtype="int64")
    fixed = exact(nd.take(x, rows))
    if not isinstance(out, tuple):
        return nd.contrib.index_copy(out, rows, fixed)
    return tuple(nd.contrib.index_copy(o, rows, f) for o, f in zip(out, fixed))


# ---------------------------------------------------------------------------- zero-size arrays


def empty_outputs(x: Any, outputs: list[tuple[tuple[int, ...], Any]]) -> tuple[Any, ...]:
    """The outputs of a call on an array with a zero-size batch or channel dim, made directly:
    MXNet's ops cannot run there, a 0 in their shapes means unknown
    (tests/conformance/test_edges.py::test_empty_batch_or_channels_give_empty_results)."""
    return tuple(nd.array(np.zeros(shape, dtype), ctx=x.context, dtype=dtype)
                 for shape, dtype in outputs)
