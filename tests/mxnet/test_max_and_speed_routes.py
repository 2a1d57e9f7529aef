"""The max and the speed routes: native ``Pooling`` with symmetric pads and a crop (or explicit
padding where none fits), the NaN/-inf check (a global average pooling, or read on the host)
with the exact fix of only the flagged batch rows, and every view route forced through
``pa.speed_routes``, each compared with the oracle, values and gradients. Regression:
recorded float32/float16 max gradients."""

from __future__ import annotations

import dataclasses
import itertools
import json

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

import pooladapt as pa
from pooladapt import config, oracle
from pooladapt.backends.mxnet import BACKEND, fast, quirks, translate
from pooladapt.layers import mxnet as layers
from pooladapt.spec import make_spec

RNG = np.random.default_rng(3)
SIZES = {1: [(9,), (1,)], 2: [(7, 6), (2, 1)], 3: [(5, 6, 4), (1, 2, 1)]}
PADDINGS = ["valid", "same", "same_lower", 1, (0, 2), (1, 2)]
VIEWS = (fast.FEW_CHANNELS, fast.FLAT_1D, fast.CHANNELS_LAST_VIEW, fast.SEPARABLE)


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


def _routes(setting: str):
    """``"off"``, ``"auto"``, or the route names (comma-separated) forced on alone."""
    if setting in ("off", "auto", "on"):
        return pa.speed_routes(setting)
    return pa.speed_routes("on", only=setting.split(","))


# how the NaN/inf rows are found: a global average pooling (plain), or read on the host
CHECKS = {"pooling": "off", "in place": fast.HOST_CHECK, "python": fast.PYTHON_CHECK}


def _vjp(plan, x: np.ndarray, g: np.ndarray, dtype: str) -> np.ndarray:
    got = BACKEND.vjp(lambda t: BACKEND.pool(t, plan), nd.array(x, dtype=dtype),
                      nd.array(g, dtype=dtype))
    assert got.dtype == np.dtype(dtype)
    return got.asnumpy()


def test_every_kind_of_native_call_is_in_the_grid():
    covers = [translate.native_cover(p) for _, _, p in PLANS]
    kinds = {None if c is None else (c.ceil, any(c.skip), c.crop) for c in covers}
    # valid/full convention, pads grown by a stride, a crop; explicit padding where none fits
    assert {(False, False, False), (True, False, False), (False, True, True),
            (True, False, True), None} <= kinds


VALUE_CASES = [
    *itertools.product(["float32"], ["finite", "one row", "all rows"],
                       ["python", "in place", "pooling"]),
    ("float16", "finite", "in place"), ("float16", "one row", "pooling"),
    ("float64", "all rows", "python"), ("float64", "one row", "pooling"),
]


@pytest.mark.parametrize("dtype, which, check", VALUE_CASES)
def test_values_equal_the_oracle(dtype, which, check):
    with _routes(CHECKS[check]):
        for spec, shape, plan in PLANS:
            x = _input(shape, dtype, which)
            got = BACKEND.pool(nd.array(x, dtype=dtype), plan).asnumpy()
            want = oracle.pool(x, spec).astype(dtype)
            assert got.dtype == want.dtype, (spec, shape)
            np.testing.assert_array_equal(got, want, err_msg=f"{spec} {shape}")


@pytest.mark.parametrize("which, check", [("finite", "python"), ("one row", "pooling"),
                                          ("all rows", "in place")])
def test_gradients_equal_the_oracle(which, check):
    """NaN and all -inf windows too: the gradient reaches their first NaN / real -inf."""
    with _routes(CHECKS[check]):
        for spec, shape, plan in PLANS[::2]:
            x = _input(shape, "float64", which)
            g = RNG.standard_normal(spec.output_shape(shape))
            np.testing.assert_allclose(_vjp(plan, x, g, "float64"),
                                       oracle.pool_vjp(x, spec, g), rtol=1e-12, atol=1e-12,
                                       err_msg=f"{spec} {shape}")


@pytest.mark.parametrize("routes", [*VIEWS, f"{fast.CHANNELS_LAST_VIEW},{fast.SEPARABLE}",
                                    f"{fast.FEW_CHANNELS},{fast.FLAT_1D}", "off"])
def test_every_view_equals_the_oracle(routes):
    """Each view forced on every plan (the grid's 2 channels and small windows take only some
    of them under auto): values in float32 and float16, gradients in float32."""
    for name in routes.split(","):
        config.routes_taken.discard(name)
    with _routes(routes):
        for dtype in ("float32", "float16"):
            for spec, shape, plan in PLANS:
                x = _input(shape, dtype, "one row")
                got = BACKEND.pool(nd.array(x, dtype=dtype), plan).asnumpy()
                np.testing.assert_array_equal(got, oracle.pool(x, spec).astype(dtype),
                                              err_msg=f"{spec} {shape}")
        for spec, shape, plan in PLANS[::3]:
            x = _input(shape, "float32", "finite")
            g = RNG.integers(-8, 9, size=spec.output_shape(shape)) / 4.0
            np.testing.assert_array_equal(_vjp(plan, x, g, "float32"),
                                          oracle.pool_vjp(x.astype(np.float64), spec, g),
                                          err_msg=f"{spec} {shape}")
    if routes != "off":
        assert set(routes.split(",")) <= config.routes_taken


@pytest.mark.parametrize("dtype, which, check", [
    ("float32", "finite", "in place"), ("float32", "one row", "pooling"),
    ("float16", "one row", "in place"), ("float64", "all rows", "pooling")])
def test_indices_equal_the_oracle(dtype, which, check):
    """Native max plus the first tap equal to it; flagged rows take the taps."""
    with _routes(CHECKS[check]):
        for spec, shape, _ in PLANS[::2]:
            spec = dataclasses.replace(spec, return_indices=True)
            x = _input(shape, dtype, which)
            got, got_idx = BACKEND.pool(nd.array(x, dtype=dtype), spec.plan(shape))
            want, want_idx = oracle.pool(x, spec)
            assert got.dtype == np.dtype(dtype) and got_idx.dtype == np.int64
            np.testing.assert_array_equal(got.asnumpy(), want.astype(dtype), err_msg=f"{spec}")
            np.testing.assert_array_equal(got_idx.asnumpy(), want_idx, err_msg=f"{spec} {shape}")


def test_the_pooling_check_flags_an_infinity_in_a_large_plane():
    x = RNG.standard_normal((4, 3, 40, 50)).astype(np.float32)
    x[2, 1, 39, 49] = np.inf
    x[3, 0, 0, 0] = -np.inf
    with pa.speed_routes("off"):
        assert fast.host_values(nd.array(x)) is False
        assert quirks.nonfinite_rows(nd.array(x), False).tolist() == [2, 3]
        # oneDNN's float32 sum overflows and flags the rows (only the exact path runs); MXNet's
        # own kernel sums x / count and does not
        x[:] = 1e38
        rows = quirks.nonfinite_rows(nd.array(x), False)
        want = [0, 1, 2, 3] if quirks.onednn_pools() else None
        assert (None if rows is None else rows.tolist()) == want


def _flagged_rows(x):
    return quirks.nonfinite_rows(x, fast.host_values(x))


@pytest.mark.parametrize("check", ["python", "in place"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_in_place_check_reads_the_finished_input(check, dtype):
    config.routes_taken.discard(CHECKS[check])
    with _routes(CHECKS[check]):
        x = nd.ones((2, 3, 4, 4), dtype=dtype)
        y = x * 2
        y[1, 2, 3, 3] = np.nan  # a pending write: the check waits for it
        assert _flagged_rows(y).tolist() == [1]
        y[0, 0, 0, 0] = -np.inf
        assert _flagged_rows(y).tolist() == [0, 1]
        assert _flagged_rows(nd.ones((2, 3, 4, 4), dtype=dtype) * 3e38) is None
    assert CHECKS[check] in config.routes_taken


def test_auto_follows_the_tuning():
    """auto takes the separable max from ``Tuning.separable_cells`` on: two ``Pooling`` nodes
    instead of one in a hybridized graph, for the values and for the NaN code map."""
    x_np = _input((2, 12, 12, 3), "float32", "one row")
    want = oracle.pool(x_np, make_spec("max", 10, 1, data_format="NHWC", ndim=2))
    for cells, pools in ((100, 4), (101, 2)):
        block = layers.MaxPool2D(10, 1, layout="NHWC")
        block.hybridize()
        with pa.speed_routes("auto"), fast.tuned(separable_cells=cells):
            np.testing.assert_array_equal(block(nd.array(x_np)).asnumpy(), want)
        nodes = json.loads(block._cached_graph[1].tojson())["nodes"]
        assert sum(n["op"] == "Pooling" for n in nodes) == pools, cells


def test_tuning_is_scoped_and_checked():
    before = fast.tuning()
    with fast.tuned(few_channels=2) as inner:
        assert fast.tuning() is inner and inner.few_channels == 2
        assert inner.separable_cells == before.separable_cells
    assert fast.tuning() is before
    with pytest.raises(TypeError, match="few_channels must be an int"):
        fast.Tuning(few_channels=2.5)
    with pytest.raises(ValueError, match="host_check must be >= 0"):
        fast.Tuning(host_check=-1)
    with pytest.raises(TypeError), fast.tuned(no_such_threshold=1):
        pass


# ------------------------------------------------------------------ recorded gradients

REGRESSION = [
    pytest.param(shape, k, s, p, ceil, fmt, id=f"{'x'.join(map(str, shape))}-k{k}s{s}p{p}"
                 f"{'-ceil' if ceil else ''}-{fmt}")
    for shape in ((2, 3, 7, 6), (2, 16, 9, 9), (1, 1, 8, 8), (4, 64, 14, 14))
    for k, s, p, ceil in ((2, 2, 0, False), (3, 2, 1, True), (3, 1, 1, False), (2, 1, 0, True))
    for fmt in ("channels_first", "channels_last")
]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape, k, s, p, ceil, fmt", REGRESSION)
def test_recorded_max_gradient_is_exact(shape, k, s, p, ceil, fmt, dtype):
    """Reported: float32 gradients went to wrong cells (few channels in the batch, every
    channels-last shape): oneDNN's backward read an argmax its forward, run on a view by
    MXNet's own kernel, never stored. Loss sum(y * w) against the float64 VJP of the same
    rounded input, under auto, with every route off and with every route on."""
    if fmt == "channels_last":
        shape = (shape[0], *shape[2:], shape[1])
    x = RNG.standard_normal(shape).astype(dtype)
    spec = make_spec("max", k, s, p, ceil_mode=ceil, data_format=fmt, ndim=2)
    w = RNG.integers(-8, 9, size=spec.output_shape(shape)) / 4.0
    want = oracle.pool_vjp(x.astype(np.float64), spec, w)
    for setting in ("auto", "off", "on"):
        t = nd.array(x, dtype=dtype)
        t.attach_grad()
        with _routes(setting), mx.autograd.record():
            y = pa.pool2d(t, "max", k, s, p, ceil_mode=ceil, data_format=fmt)
            loss = (y * nd.array(w, dtype=dtype)).sum()
        loss.backward()
        assert t.grad.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(t.grad.asnumpy().astype(np.float64), want,
                                      err_msg=setting)


@pytest.mark.parametrize("how", ["train_mode=False", "a view", "hybridized train_mode=False",
                                 "hybridized view"])
@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
def test_recorded_max_gradient_is_exact_outside_training_and_on_a_view(how, fmt):
    """oneDNN's forward stores no argmax in inference mode, nor on a view (MXNet's own
    kernel runs it): the backward read a stale one. Both reach users: gradients of an
    input in inference mode (saliency maps), and x.reshape(...) before the pooling."""
    base = RNG.standard_normal((4, 16, 9, 9)).astype(np.float32)
    x_np = base.reshape(8, 8, 9, 9)
    if fmt == "channels_last":
        x_np = np.ascontiguousarray(x_np.transpose(0, 2, 3, 1))
        base = x_np.reshape(4, 16, 9, 9)
    spec = make_spec("max", 3, 2, 1, data_format=fmt, ndim=2)
    w = RNG.integers(-8, 9, size=spec.output_shape(x_np.shape)) / 4.0
    block = layers.MaxPool2D(3, 2, 1, layout="NCHW" if fmt == "channels_first" else "NHWC")
    if how.startswith("hybridized"):
        block.hybridize()
    t = nd.array(base if how.endswith("view") else x_np)
    t.attach_grad()
    with mx.autograd.record(train_mode=not how.endswith("train_mode=False")):
        u = t.reshape(x_np.shape) if how.endswith("view") else t
        y = block(u)
        assert y.shape == w.shape
        loss = (y * nd.array(w)).sum()
    loss.backward()
    got = t.grad.asnumpy().reshape(x_np.shape).astype(np.float64)
    np.testing.assert_array_equal(got, oracle.pool_vjp(x_np.astype(np.float64), spec, w))


# ------------------------------------------------------------------ hybridized graphs


def _graph_ops(block) -> set[str]:
    return {n["op"] for n in json.loads(block._cached_graph[1].tojson())["nodes"]}


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
    ops = _graph_ops(block)
    assert "Pooling" in ops
    assert not ops & {"transpose", "Concat", "concat", "Pad", "pad"}, ops


def test_hybridized_graph_is_built_with_the_routes_set_when_called():
    """A graph built with the channels-last view reshapes; with routes off it pools in the
    NHWC layout (no reshape); a change of setting rebuilds it."""
    block = layers.MaxPool2D(3, 2, 1, layout="NHWC")
    block.hybridize()
    x_np = _input((2, 7, 6, 3), "float32", "one row")
    want = oracle.pool(x_np, make_spec("max", 3, 2, 1, data_format="NHWC", ndim=2))
    for setting, reshapes in (("off", False), (fast.CHANNELS_LAST_VIEW, True), ("off", False)):
        with _routes(setting):
            np.testing.assert_array_equal(block(nd.array(x_np)).asnumpy(), want)
        assert ("Reshape" in _graph_ops(block)) is reshapes, setting
