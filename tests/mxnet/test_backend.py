"""MXNet specifics of the backend: native arrays in and out, autograd, integers, misuse."""

from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd

import pooladapt as pa
from pooladapt import conformance, oracle
from pooladapt.backends.base import EMULATED, FEATURES, NATIVE
from pooladapt.backends.mxnet import BACKEND
from pooladapt.spec import make_spec

RNG = np.random.default_rng(42)


def _normal(shape, dtype="float32"):
    return RNG.standard_normal(shape).astype(dtype)


def test_nd_array_in_nd_array_out_same_dtype_and_context():
    x = nd.array(_normal((2, 3, 7, 6), "float64"), dtype="float64")
    y = pa.pool2d(x, "avg", 3, 2, "same", data_format="channels_first")
    assert isinstance(y, nd.NDArray) and y.dtype == np.float64 and y.context == x.context
    y, idx = pa.pool2d(x, "max", 3, 2, 1, return_indices=True, data_format="channels_first")
    assert isinstance(y, nd.NDArray) and isinstance(idx, nd.NDArray)
    assert idx.dtype == np.int64 and y.shape == idx.shape == (2, 3, 4, 3)
    up = pa.max_unpool2d(y, idx, data_format="channels_first")
    assert isinstance(up, nd.NDArray) and up.shape == x.shape
    g = pa.global_pool2d(x, "max", data_format="channels_first")
    assert isinstance(g, nd.NDArray) and g.shape == (2, 3)
    a = pa.adaptive_pool2d(x, "avg", (4, 5), data_format="channels_first")
    assert isinstance(a, nd.NDArray) and a.shape == (2, 3, 4, 5)


def test_mx_np_ndarray_in_mx_np_ndarray_out():
    x_np = _normal((2, 5, 6, 3))
    x = mx.np.array(x_np, dtype="float32")
    y = pa.pool2d(x, "max", 2, padding="same", data_format="channels_last")
    assert type(y) is mx.np.ndarray
    want = oracle.pool(x_np, make_spec("max", 2, padding="same", data_format="channels_last",
                                       ndim=2))
    np.testing.assert_array_equal(y.asnumpy(), want.astype(np.float32))


@pytest.mark.parametrize("mode", ["max", "avg", "lp"])
def test_autograd_through_pooladapt_equals_oracle_vjp(mode):
    # ties for max: the gradient goes to the first maximum of every window
    x_np = RNG.integers(-2, 3, size=(2, 3, 7, 6)).astype(np.float64)
    if mode != "max":
        x_np += _normal(x_np.shape, "float64")
    kw = dict(window=3, stride=2, padding="same_lower", data_format="channels_first")
    spec = make_spec(mode, **kw, ndim=2)
    g_np = _normal(spec.output_shape(x_np.shape), "float64")
    x = nd.array(x_np, dtype="float64")
    x.attach_grad()
    with mx.autograd.record():
        y = pa.pool2d(x, mode, **kw)
    y.backward(nd.array(g_np, dtype="float64"))
    np.testing.assert_allclose(x.grad.asnumpy(), oracle.pool_vjp(x_np, spec, g_np),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("other", ["torch", "numpy", "jax"])
def test_mx_array_with_another_backend_is_a_type_error(other):
    x = nd.ones((1, 1, 4, 4))
    with pytest.raises(TypeError, match="mxnet tensor"):
        pa.pool2d(x, "max", 2, backend=other)
    with pytest.raises(TypeError, match="mxnet tensor"):
        pa.pool2d(mx.np.ones((1, 1, 4, 4)), "max", 2, backend=other)


def test_avg_on_integers_is_a_type_error_naming_the_cast():
    with pytest.raises(TypeError, match="cast"):
        pa.pool2d(nd.ones((1, 1, 4, 4), dtype="int32"), "avg", 2)


def test_bfloat16_numpy_input_is_a_clear_type_error():
    bf16 = conformance.bfloat16_dtype()
    assert bf16 is not None, "backends/mxnet.txt pins ml_dtypes so that bfloat16 is tested"
    x = np.zeros((1, 1, 2, 2), dtype=bf16)
    with pytest.raises(TypeError, match="bfloat16.*float32"):
        pa.pool2d(x, "max", 2, backend="mxnet")
    assert "dtype:bfloat16" in BACKEND.known_deviations


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "int64"])
def test_integer_max_is_exact_with_indices(dtype):
    info = np.iinfo(dtype)
    x_np = RNG.integers(info.min, info.max, size=(2, 7, 6, 3), dtype=dtype, endpoint=True)
    x_np[0, :2, :2] = info.min  # a corner window of minima next to the padding
    kw = dict(window=3, stride=2, padding=1, data_format="channels_last",
              return_indices=True)
    y, idx = pa.pool2d(nd.array(x_np, dtype=dtype), "max", **kw)
    want, want_idx = oracle.pool(x_np, make_spec("max", **kw, ndim=2))
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y.asnumpy(), want)
    np.testing.assert_array_equal(idx.asnumpy(), want_idx)


def test_int64_beyond_float_precision_stays_exact():
    big = 2**62
    x_np = np.array([big + 1, big, big + 3, big + 2, -big - 1, -big], dtype=np.int64)
    y, idx = pa.pool1d(nd.array(x_np.reshape(1, 1, -1), dtype="int64"), "max", 2,
                       return_indices=True, data_format="channels_first")
    assert y.asnumpy().ravel().tolist() == [big + 1, big + 3, -big]
    assert idx.asnumpy().ravel().tolist() == [0, 2, 5]


def test_same_numpy_input_same_result_as_the_numpy_backend():
    for case in conformance.grid("quick"):
        if case.gradient or case.dtype == "bfloat16":
            continue
        x = case.make_input()
        ref = conformance.actual(case, x, "numpy", native=False)
        got = conformance.actual(case, x, "mxnet", native=False)
        if isinstance(ref, tuple):
            np.testing.assert_array_equal(got[1], ref[1], err_msg=case.id)
            got, ref = got[0], ref[0]
        assert isinstance(got, np.ndarray) and got.dtype == ref.dtype, case.id
        ok, _, msg = conformance.compare(case, ref, got)
        assert ok, f"{case.id}: {msg}"


def test_capabilities_cover_every_feature_but_bfloat16():
    caps = BACKEND.capabilities()
    assert set(caps) == set(FEATURES) - {"bfloat16"}
    assert set(caps.values()) <= {NATIVE, EMULATED}
    # one Pooling call with symmetric pads and a crop: same and ceil mode; taps: the rest
    assert caps["max"] == caps["same"] == caps["ceil_mode"] == NATIVE
    assert caps["dilation"] == caps["integers"] == caps["indices"] == caps["nan"] == EMULATED
    assert BACKEND.version() == mx.__version__


# ops that only an emulation puts in a graph: explicit padding, taps, a divisor map, powers
EMULATION = {"Concat", "add_n", "ElementWiseSum", "broadcast_div", "_power_scalar", "_greater"}


@pytest.mark.parametrize("mode, kw, size, native", [
    ("max", dict(window=3, stride=2, padding="same"), (7, 6), True),
    ("max", dict(window=3, stride=2, ceil_mode=True), (8, 8), True),
    ("max", dict(window=2, stride=2, padding=((0, 1), (0, 1))), (1, 1), False),  # no pad fits
    ("max", dict(window=2, dilation=2), (7, 6), False),
    ("avg", dict(window=3, stride=1, padding=1, count_include_pad=True), (7, 6), True),
    ("avg", dict(window=3, stride=1, padding=1), (7, 6), False),  # the divisor map
    ("lp", dict(window=2, p=2), (7, 6), True),
    ("lp", dict(window=2, p=4), (7, 6), False),
])
def test_lowers_natively_says_what_the_plain_graph_does(mode, kw, size, native):
    plan = make_spec(mode, **kw, data_format="NCHW", ndim=2).plan((2, 3, *size))
    assert BACKEND.lowers_natively(plan, "float32") is native
    with pa.speed_routes("off"):
        graph = BACKEND.graph(mx.sym, mx.sym.var("x"), plan, "float32")
    ops = {n["op"] for n in json.loads(graph.tojson())["nodes"]}
    assert (not ops & EMULATION) is native, ops
    assert BACKEND.lowers_natively(plan, "int32") is False
    assert BACKEND.lowers_natively(plan, "bfloat16") is None


@pytest.mark.parametrize("p, takes_abs", [(1, True), (2, False), (3, True)])
def test_native_lp_takes_abs_only_where_the_sign_counts(p, takes_abs):
    """``Pooling``'s lp keeps the sign (D11): |x| goes in for odd p; for p = 2 x * x is
    |x| * |x| and its gradient x / y, so x goes in as it is (one elementwise op fewer forward
    and backward, the MXNet lp training step's whole overhead)."""
    plan = make_spec("lp", 2, p=p, data_format="NCHW", ndim=2).plan((2, 3, 6, 6))
    graph = BACKEND.graph(mx.sym, mx.sym.var("x"), plan, "float32")
    ops = [n["op"] for n in json.loads(graph.tojson())["nodes"]]
    assert ops.count("Pooling") == 1 and ("abs" in ops) is takes_abs, ops
    x = np.random.default_rng(p).standard_normal((2, 3, 6, 6)).astype(np.float32)
    x[0, 0, :2, :2] = 0  # a window of zeros: value 0, gradient 0 (not NaN)
    t = nd.array(x)
    t.attach_grad()
    with mx.autograd.record():
        y = pa.pool2d(t, "lp", 2, p=p, data_format="NCHW")
    y.backward(nd.ones_like(y))
    spec = make_spec("lp", 2, p=p, data_format="NCHW", ndim=2)
    want = oracle.pool_vjp(x.astype(np.float64), spec, np.ones(y.shape))
    np.testing.assert_allclose(t.grad.asnumpy(), want, rtol=1e-5, atol=1e-6)
