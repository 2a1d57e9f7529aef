"""The max route: native ``Pooling`` in oneDNN-friendly views with native pads and a crop, the
NaN/-inf check (read in place for small arrays, a global average pooling for large ones) and
the exact fix of only the flagged batch rows, each forced and compared with the oracle."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
from mxnet import nd

from pooladapt import oracle
from pooladapt.backends import mxnet as mxb
from pooladapt.backends.mxnet import BACKEND
from pooladapt.layers import mxnet as layers
from pooladapt.spec import make_spec

RNG = np.random.default_rng(3)
SIZES = {1: [(9,), (1,)], 2: [(7, 6), (2, 1)], 3: [(5, 6, 4), (1, 2, 1)]}
PADDINGS = ["valid", "same", "same_lower", 1, (0, 2), (1, 2)]


def _plans():
    for ndim, fmt, k, s, pad, ceil in itertools.product(
            (1, 2, 3), ("channels_first", "channels_last"), (2, 3), (1, 3), PADDINGS,
            (False, True)):
        try:
            spec = make_spec("max", k, s, pad, ceil_mode=ceil, data_format=fmt, ndim=ndim)
        except ValueError:
            continue
        for size in SIZES[ndim]:
            shape = (3, 2, *size) if fmt == "channels_first" else (3, *size, 2)
            try:
                yield spec, shape, spec.plan(shape)
            except ValueError:
                continue


PLANS = list(_plans())


def _input(shape, dtype, which: str) -> np.ndarray:
    """Ties in -3..2; ``which``: finite, one row with NaN and -inf, every row."""
    x = RNG.integers(-3, 3, size=shape).astype(dtype)
    rows = {"finite": [], "one row": [1], "all rows": [0, 1, 2]}[which]
    for r in rows:
        x[r].flat[: x[r].size // 2] = -np.inf
        x[r].flat[RNG.integers(0, x[r].size)] = np.nan
    if which == "all rows":
        x[2] = -np.inf
    return x


def _force(check: str, monkeypatch) -> None:
    """Take one NaN/inf check: summed in Python, read into NumPy, a global pooling."""
    monkeypatch.setattr(mxb, "_PYTHON_CHECK", 1 << 30 if check == "python" else 0)
    if check == "pooling":
        monkeypatch.setattr(mxb, "_HOST_CHECK", 0)


def test_every_route_kind_is_in_the_grid():
    kinds = {(r[1], any(r[2]), r[4] is not None) for r in map(mxb._max_route,
                                                              (p for _, _, p in PLANS))}
    # valid/full convention, a hand-padded high side, a crop
    assert {("valid", False, False), ("full", False, False), ("valid", False, True),
            ("full", False, True), ("valid", True, False)} <= kinds


VALUE_CASES = [
    *itertools.product(["float32"], ["finite", "one row", "all rows"],
                       ["python", "in place", "pooling"]),
    ("float16", "finite", "in place"), ("float16", "one row", "pooling"),
    ("float64", "all rows", "python"), ("float64", "one row", "pooling"),
]


@pytest.mark.parametrize("dtype, which, check", VALUE_CASES)
def test_values_equal_the_oracle(dtype, which, check, monkeypatch):
    _force(check, monkeypatch)
    for spec, shape, plan in PLANS:
        x = _input(shape, dtype, which)
        got = BACKEND.pool(nd.array(x, dtype=dtype), plan).asnumpy()
        want = oracle.pool(x, spec).astype(dtype)
        assert got.dtype == want.dtype, (spec, shape)
        np.testing.assert_array_equal(got, want, err_msg=f"{spec} {shape}")


@pytest.mark.parametrize("which, check", [("finite", "python"), ("one row", "pooling"),
                                          ("all rows", "in place")])
def test_gradients_equal_the_oracle(which, check, monkeypatch):
    """NaN and all -inf windows too: the gradient reaches their first NaN / real -inf."""
    _force(check, monkeypatch)
    for spec, shape, plan in PLANS[::2]:
        x = _input(shape, "float64", which)
        g = RNG.standard_normal(spec.output_shape(shape))
        got = BACKEND.vjp(lambda t, plan=plan: BACKEND.pool(t, plan),
                          nd.array(x, dtype="float64"), nd.array(g, dtype="float64"))
        np.testing.assert_allclose(got.asnumpy(), oracle.pool_vjp(x, spec, g), rtol=1e-12,
                                   atol=1e-12, err_msg=f"{spec} {shape}")


@pytest.mark.parametrize("few, separable", [(0, 99), (99, 1)])
def test_every_view_equals_the_oracle(few, separable, monkeypatch):
    """Channels first direct or with the channels in the batch; channels-last 2-d in one
    pass or two (the grid's 2 channels and small windows take only one of each)."""
    monkeypatch.setattr(mxb, "_FEW_CHANNELS", few)
    monkeypatch.setattr(mxb, "_SEPARABLE", separable)
    for spec, shape, plan in PLANS:
        x = _input(shape, "float32", "one row")
        got = BACKEND.pool(nd.array(x), plan).asnumpy()
        np.testing.assert_array_equal(got, oracle.pool(x, spec).astype(np.float32),
                                      err_msg=f"{spec} {shape}")
    for spec, shape, plan in PLANS[::4]:
        x = _input(shape, "float64", "finite")
        g = RNG.standard_normal(spec.output_shape(shape))
        got = BACKEND.vjp(lambda t, plan=plan: BACKEND.pool(t, plan),
                          nd.array(x, dtype="float64"), nd.array(g, dtype="float64"))
        np.testing.assert_allclose(got.asnumpy(), oracle.pool_vjp(x, spec, g), rtol=1e-12,
                                   atol=1e-12, err_msg=f"{spec} {shape}")


@pytest.mark.parametrize("dtype, which, check", [
    ("float32", "finite", "in place"), ("float32", "one row", "pooling"),
    ("float16", "one row", "in place"), ("float64", "all rows", "pooling")])
def test_indices_equal_the_oracle(dtype, which, check, monkeypatch):
    """Native max plus the first tap equal to it; flagged rows take the taps."""
    _force(check, monkeypatch)
    for spec, shape, _ in PLANS[::2]:
        spec = dataclasses.replace(spec, return_indices=True)
        x = _input(shape, dtype, which)
        got, got_idx = BACKEND.pool(nd.array(x, dtype=dtype), spec.plan(shape))
        want, want_idx = oracle.pool(x, spec)
        assert got.dtype == np.dtype(dtype) and got_idx.dtype == np.int64
        np.testing.assert_array_equal(got.asnumpy(), want.astype(dtype), err_msg=f"{spec}")
        np.testing.assert_array_equal(got_idx.asnumpy(), want_idx, err_msg=f"{spec} {shape}")


def test_the_pooling_check_flags_an_infinity_in_a_large_plane(monkeypatch):
    monkeypatch.setattr(mxb, "_HOST_CHECK", 0)
    x = RNG.standard_normal((4, 3, 40, 50)).astype(np.float32)
    x[2, 1, 39, 49] = np.inf
    x[3, 0, 0, 0] = -np.inf
    assert mxb._nonfinite_rows(nd.array(x)).tolist() == [2, 3]
    x[:] = 1e38  # a float32 overflow flags the rows: only the exact path runs
    assert mxb._nonfinite_rows(nd.array(x)).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("check", ["python", "in place"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_in_place_check_reads_the_finished_input(check, dtype, monkeypatch):
    _force(check, monkeypatch)
    x = nd.ones((2, 3, 4, 4), dtype=dtype)
    y = x * 2
    y[1, 2, 3, 3] = np.nan  # a pending write: the check waits for it
    assert mxb._nonfinite_rows(y).tolist() == [1]
    y[0, 0, 0, 0] = -np.inf
    assert mxb._nonfinite_rows(y).tolist() == [0, 1]
    assert mxb._nonfinite_rows(nd.ones((2, 3, 4, 4), dtype=dtype) * 3e38) is None


@pytest.mark.parametrize("layout, ndim", [("NCW", 1), ("NWC", 1), ("NHWC", 2), ("NCHW", 2),
                                          ("NDHWC", 3)])
def test_hybridized_graph_has_no_transpose_or_pad(layout, ndim):
    block = getattr(layers, f"MaxPool{ndim}D")(3, 2, "same", layout=layout)
    block.hybridize()
    size = (6, 7, 5)[:ndim]
    shape = (2, 3, *size) if layout.startswith("NC") else (2, *size, 3)
    x_np = _input(shape, "float16", "one row")
    got = block(nd.array(x_np, dtype="float16")).asnumpy()
    want = oracle.pool(x_np, make_spec("max", 3, 2, "same", data_format=layout, ndim=ndim))
    np.testing.assert_array_equal(got, want.astype(np.float16))
    ops = {n["op"] for n in json.loads(block._cached_graph[1].tojson())["nodes"]}
    assert "Pooling" in ops
    assert not ops & {"transpose", "Concat", "concat", "Pad", "pad"}, ops
