"""The JAX backend as JAX users meet it: jax arrays in and out, ``jax.grad``/``jax.jvp``,
``jax.jit`` (with the jaxpr it compiles to), 64-bit data without x64, dtypes, and its errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from jax import lax

import pooladapt as pa
from pooladapt import oracle
from pooladapt.backends.base import EMULATED, FEATURES, NATIVE
from pooladapt.backends.jax import BACKEND
from pooladapt.spec import make_adaptive_spec, make_spec, make_unpool_spec

RNG = np.random.default_rng(5)

# one call per code path of the backend: (entry point, positional args, keyword args, ndim)
PATHS = {
    "max-valid": ("pool2d", ("max", 2), {}, 2),
    "max-same-channels-first": ("pool2d", ("max", 3, 2, "same"),
                                dict(data_format="channels_first"), 2),
    "max-padded-ceil": ("pool2d", ("max", 3, 2, 1), dict(ceil_mode=True), 2),
    "max-dilated": ("pool2d", ("max", 2, 2, 1), dict(dilation=2), 2),
    "max-3d-same-lower": ("pool3d", ("max", 2, (2, 1, 2), "same_lower"), {}, 3),
    "max-1d-pairs": ("pool1d", ("max", 3, 2, ((0, 2),)), dict(data_format="channels_first"), 1),
    "max-indices": ("pool2d", ("max", 3, 2, 1), dict(return_indices=True), 2),
    "avg-same": ("pool2d", ("avg", 3, 2, "same"), {}, 2),
    "avg-count-include-pad-ceil": ("pool2d", ("avg", 3, 2, 1),
                                   dict(count_include_pad=True, ceil_mode=True), 2),
    "avg-3d-dilated": ("pool3d", ("avg", 2, 1, 1), dict(dilation=(1, 2, 1)), 3),
    "lp": ("pool2d", ("lp", 2, 1, ((1, 0), (0, 1))), dict(p=3.0), 2),
    "lp-1": ("pool1d", ("lp", 3, 2, 1), dict(p=1.0), 1),
    "global-max": ("global_pool2d", ("max",), {}, 2),
    "global-lp": ("global_pool3d", ("lp",), dict(keepdims=True), 3),
    "adaptive-avg": ("adaptive_pool2d", ("avg", (3, 4)), {}, 2),
    "adaptive-max": ("adaptive_pool2d", ("max", (4, 3)), dict(return_indices=True), 2),
}


def _input(name: str, dtype=np.float32) -> np.ndarray:
    kw, ndim = PATHS[name][2], PATHS[name][3]
    spatial = {1: (9,), 2: (7, 6), 3: (5, 6, 4)}[ndim]
    cf = kw.get("data_format") == "channels_first"
    return RNG.standard_normal((2, 3, *spatial) if cf else (2, *spatial, 3)).astype(dtype)


def _call(name: str, x):
    fn, args, kw, _ = PATHS[name]
    return getattr(pa, fn)(x, *args, **kw)


def _values(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", PATHS)
def test_jax_array_in_gives_jax_array_out_equal_to_numpy_backend(name):
    x = _input(name)
    got = _call(name, jnp.asarray(x))
    want = _call(name, x)
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        assert isinstance(g, jax.Array)
        assert g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", PATHS)
def test_jit_matches_eager_forward_and_gradient(name):
    x = jnp.asarray(_input(name))

    def loss(t):
        y = _values(_call(name, t))
        return jnp.sum(y * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape))

    eager = _call(name, x)
    jitted = jax.jit(lambda t: _call(name, t))(x)
    for e, j in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(loss))(x)),
                               np.asarray(jax.grad(loss)(x)), rtol=1e-6)


def _primitives(jaxpr) -> set[str]:
    """Every primitive in a jaxpr, sub-jaxprs (custom_jvp, cond, pjit) included."""
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    names |= _primitives(inner)
    return names


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
@pytest.mark.parametrize("mode, kw, native_op", [
    ("max", dict(window=3, stride=2, padding="same"), "reduce_window_max"),
    ("max", dict(window=3, stride=2, padding=((0, 1), (2, 0)), ceil_mode=True, dilation=2),
     "reduce_window_max"),
    ("avg", dict(window=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
     "reduce_window_sum"),
    ("avg", dict(window=(2, 3), stride=1, padding="same_lower", dilation=(2, 1)),
     "reduce_window_sum"),
    ("lp", dict(window=2, stride=1, padding=1, p=3.0), "reduce_window_sum"),
])
def test_jitted_jaxpr_is_one_reduce_window_without_pad_or_transpose(fmt, mode, kw, native_op):
    shape = (2, 3, 9, 8) if fmt == "channels_first" else (2, 9, 8, 3)
    jaxpr = jax.make_jaxpr(lambda t: pa.pool2d(t, mode, data_format=fmt, **kw))(
        jnp.zeros(shape, jnp.float32))
    prims = _primitives(jaxpr.jaxpr)
    assert native_op in prims
    assert not prims & {"pad", "transpose", "gather", "scatter", "scatter-add"}, prims


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
def test_jaxprs_of_indices_and_uniform_adaptive_need_no_pad_transpose_or_gather(fmt):
    shape = (2, 3, 8, 8) if fmt == "channels_first" else (2, 8, 8, 3)
    x = jnp.zeros(shape, jnp.float32)
    indices = _primitives(jax.make_jaxpr(
        lambda t: pa.pool2d(t, "max", 2, data_format=fmt, return_indices=True))(x).jaxpr)
    assert not indices & {"pad", "transpose", "gather", "scatter", "reduce_window"}, indices
    adaptive = _primitives(jax.make_jaxpr(  # 8 -> 4: uniform bins, a plain 2x2 avg pool
        lambda t: pa.adaptive_pool2d(t, "avg", 4, data_format=fmt))(x).jaxpr)
    assert "reduce_window_sum" in adaptive
    assert not adaptive & {"pad", "transpose", "gather", "scatter"}, adaptive


def test_numpy_float64_and_int64_are_exact_without_enabling_x64():
    assert not jax.config.jax_enable_x64
    x = RNG.standard_normal((1, 1, 9)) * 1e-3 + 1.0  # float32 would round these
    x[0, 0, 4] = 1.0 + 2.0**-40
    y = pa.pool1d(x, "max", 3, backend="jax", data_format="channels_first")
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, oracle.pool(x, make_spec("max", 3, data_format="NCW",
                                                              ndim=1)))
    z = pa.pool1d(x, "avg", 3, backend="jax", data_format="channels_first")
    assert z.dtype == np.float64
    np.testing.assert_allclose(z, x.reshape(1, 1, 3, 3).mean(-1), rtol=1e-15)
    big = np.array([[[2**53 + 1, 2**53, -(2**62), 2**62 + 1]]], dtype=np.int64)
    assert pa.pool1d(big, "max", 2, backend="jax", data_format="NCW").tolist() == [
        [[2**53 + 1, 2**62 + 1]]]
    assert not jax.config.jax_enable_x64  # the scope did not leak


@pytest.mark.parametrize("dtype", ["int64", "uint64"])
@pytest.mark.parametrize("where", ["eager", "jit", "jit-with-x64"])
def test_64_bit_integer_jax_arrays_are_exact_with_x64_off(dtype, where):
    # arrays made under the caller's jax.enable_x64 keep 64 bits; pooling them with x64 off
    # (eager or in the caller's jit) or in a jit with x64 on must not truncate them
    info = np.iinfo(dtype)
    values = [info.max, info.max - 1, info.min, 2**53 + 1, 2**53, info.min + 1, 7, info.max]
    x = np.array(values, dtype=dtype).reshape(1, 1, 8)
    with jax.enable_x64(True):
        t = jnp.asarray(x)

    def run(a):
        y, idx = pa.pool1d(a, "max", 3, 2, 1, data_format="NCW", return_indices=True)
        top = pa.global_pool1d(a, "max", data_format="NCW")
        ay, aidx = pa.adaptive_pool1d(a, "max", 3, data_format="NCW", return_indices=True)
        return y, idx, top, ay, aidx, pa.max_unpool1d(y, idx, 8, data_format="NCW")

    assert not jax.config.jax_enable_x64
    if where == "eager":
        got = run(t)
    elif where == "jit":
        got = jax.jit(run)(t)
    else:
        with jax.enable_x64(True):
            got = jax.jit(run)(t)
    y, idx, top, ay, aidx, back = (np.asarray(a) for a in got)
    # windows (pad, 0, 1), (1, 2, 3), (3, 4, 5), (5, 6, 7); bins [0, 3), [2, 6), [5, 8)
    assert y.dtype == top.dtype == ay.dtype == back.dtype == np.dtype(dtype)
    assert y.ravel().tolist() == [info.max, info.max - 1, 2**53 + 1, info.max]
    assert idx.dtype == np.int64 and idx.ravel().tolist() == [0, 1, 3, 7]
    assert top.ravel().tolist() == [info.max]
    assert ay.ravel().tolist() == [info.max, 2**53 + 1, info.max]
    assert aidx.ravel().tolist() == [0, 3, 7]
    assert back.ravel().tolist() == [info.max, info.max - 1, 0, 2**53 + 1, 0, 0, 0, info.max]
    for mode in ("avg", "lp"):
        with pytest.raises(TypeError, match=f"{dtype}.*cast"):
            pa.pool1d(t, mode, 2, data_format="NCW")


def test_float64_gradient_through_backend_vjp_without_x64():
    x = RNG.standard_normal((1, 4, 4, 1))
    spec = make_spec("avg", 3, 1, 1, data_format="channels_last", ndim=2)
    g = np.ones((1, 4, 4, 1))
    dx = BACKEND.vjp(lambda t: pa.pool2d(t, "avg", 3, 1, 1), BACKEND.from_numpy(x),
                     BACKEND.from_numpy(g))
    assert dx.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(dx), oracle.pool_vjp(x, spec, g), rtol=1e-14)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "int8", "uint8", "int32"])
def test_every_dtype_keeps_its_dtype_and_max_is_exact(dtype):
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    x = (RNG.integers(0, 100, (2, 7, 6, 3)) if dtype.startswith(("int", "uint"))
         else RNG.standard_normal((2, 7, 6, 3))).astype(np_dtype)
    y, idx = pa.pool2d(jnp.asarray(x), "max", 3, 2, 1, return_indices=True)
    assert y.dtype == jnp.dtype(np_dtype)
    assert idx.dtype == jnp.int64  # API.md: int64 indices, even with x64 off
    want, want_idx = oracle.pool(x, make_spec("max", 3, 2, 1, return_indices=True, ndim=2))
    np.testing.assert_array_equal(np.asarray(y).astype(np.float64), want.astype(np.float64))
    np.testing.assert_array_equal(np.asarray(idx), want_idx)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_average_accumulates_in_float32(dtype):
    # a float16 sum of 60000 + 60000 overflows to inf; the mean of the window is 0
    x = jnp.asarray([60000.0, 60000.0, -60000.0, -60000.0], dtype).reshape(1, 1, 4)
    y = pa.pool1d(x, "avg", 4, data_format="channels_first")
    assert y.dtype == dtype and float(y.ravel()[0]) == 0.0
    # 300**2 overflows float16 as well; the L2 norm of the window is 600
    z = pa.pool1d(jnp.full((1, 1, 4), 300.0, dtype), "lp", 4, data_format="channels_first")
    assert z.dtype == dtype and float(z.ravel()[0]) == 600.0


def test_gradient_sends_ties_to_the_first_maximum_with_and_without_dilation():
    x = jnp.ones((1, 1, 4, 4))
    for kw in (dict(), dict(dilation=2, stride=1)):  # JAX itself has no VJP for dilated max
        g = jax.grad(lambda t, kw=kw: pa.pool2d(t, "max", 2, data_format="NCHW", **kw).sum())(x)
        want = oracle.pool_vjp(np.ones((1, 1, 4, 4)),
                               make_spec("max", 2, data_format="NCHW", ndim=2, **kw),
                               np.ones((1, 1, *pa.pool2d(np.ones((1, 1, 4, 4)), "max", 2,
                                                        data_format="NCHW", **kw).shape[2:])))
        np.testing.assert_array_equal(np.asarray(g), want)
    row = jnp.asarray([1.0, 2.0, 2.0, 1.0]).reshape(1, 1, 4)
    g = jax.grad(lambda t: pa.pool1d(t, "max", 2, 1, data_format="NCW").sum())(row)
    assert np.asarray(g).ravel().tolist() == [0.0, 2.0, 1.0, 0.0]


def test_gradient_at_a_nan_window_goes_to_the_first_nan():
    row = jnp.asarray([1.0, np.nan, 2.0, np.nan]).reshape(1, 1, 4)
    g = jax.grad(lambda t: pa.pool1d(t, "max", 4, data_format="NCW").sum())(row)
    assert np.asarray(g).ravel().tolist() == [0.0, 1.0, 0.0, 0.0]  # JAX alone: the last NaN


def test_forward_mode_jvp_of_max_pooling():
    x = jnp.asarray([[[3.0, 1.0, 3.0, 5.0, 5.0]]])
    t = jnp.asarray([[[10.0, 20.0, 30.0, 40.0, 50.0]]])
    _, tangent = jax.jvp(lambda v: pa.pool1d(v, "max", 3, 1, dilation=1, data_format="NCW"),
                         (x,), (t,))
    assert np.asarray(tangent).ravel().tolist() == [10.0, 40.0, 40.0]
    _, tangent = jax.jvp(lambda v: pa.pool1d(v, "max", 2, 1, dilation=2, data_format="NCW"),
                         (x,), (t,))
    assert np.asarray(tangent).ravel().tolist() == [10.0, 40.0, 50.0]


def test_lp_gradient_is_zero_not_nan_where_the_window_is_zero():
    x = jnp.zeros((1, 1, 4))
    for p in (1.0, 2.0, 3.0):
        g = jax.grad(lambda t, p=p: pa.pool1d(t, "lp", 2, p=p, data_format="NCW").sum())(x)
        assert np.asarray(g).tolist() == [[[0.0] * 4]]


@pytest.mark.parametrize("dtype, tiny", [(jnp.float32, 2.0**-149), (jnp.bfloat16, 2.0**-133),
                                         (jnp.float16, 2.0**-24)])
def test_subnormal_indices_and_global_max_are_exact_under_jit(dtype, tiny):
    # XLA on CPU flushes subnormals to zero in every float op and comparison (jax#16200);
    # the indices compare integer keys, and global max gathers the value at its index
    x = jnp.asarray([tiny, 0.0, -tiny, -3 * tiny, 3 * tiny, tiny], dtype).reshape(1, 1, 6)
    idx = jax.jit(lambda t: pa.pool1d(t, "max", 2, data_format="NCW", return_indices=True))(x)
    assert np.asarray(idx[1]).ravel().tolist() == [0, 2, 4]
    assert np.asarray(idx[0], np.float64).ravel().tolist() == [tiny, -tiny, 3 * tiny]
    y = jax.jit(lambda t: pa.global_pool1d(t, "max", data_format="NCW"))(x)
    assert np.asarray(y, np.float64).ravel().tolist() == [3 * tiny]
    if dtype == jnp.float16:  # computed in float32, where these are normal: never flushed
        y = jax.jit(lambda t: pa.pool1d(t, "max", 2, data_format="NCW"))(x)
        assert np.asarray(y, np.float64).ravel().tolist() == [tiny, -tiny, 3 * tiny]


def _xla_flushes(dtype) -> bool:
    """Whether XLA here flushes dtype's smallest subnormal in the raw ops the backend runs: a
    reduce_window max in the dtype, or a window sum in its accumulation type (float16 and
    bfloat16 sum in float32)."""
    tiny = float(jnp.finfo(dtype).smallest_subnormal)
    acc = jnp.float64 if dtype == jnp.float64 else jnp.float32
    with jax.enable_x64(dtype == jnp.float64):
        x = jnp.full((2,), tiny, dtype)
        top = lax.reduce_window(x, -jnp.inf, lax.max, (2,), (2,), "VALID")
        total = lax.reduce_window(x.astype(acc), 0.0, lax.add, (2,), (2,), "VALID")
        return float(top[0]) != tiny or float(total[0]) != 2 * tiny


def test_subnormal_deviations_are_the_dtypes_xla_flushes_here():
    # derived from what XLA does on this machine (jax#16200: every float op on CPU flushes),
    # never from the machine the list was written on; the grid's xfails are strict
    flushed = {name for name in ("float16", "bfloat16", "float32", "float64")
               if _xla_flushes(jnp.dtype(name))}
    assert set(BACKEND.known_deviations) == {f"subnormals:{name}" for name in flushed}
    assert all("subnormal" in reason for reason in BACKEND.known_deviations.values())


def test_the_backend_has_no_speed_routes():
    # one translation of every plan: the grid with routes "off" runs the same code
    assert BACKEND.speed_routes == ()


def test_indices_round_trip_through_unpool_under_jit():
    x = _input("max-indices")

    @jax.jit
    def roundtrip(t):
        y, idx = pa.pool2d(t, "max", 3, 2, 1, return_indices=True)
        return pa.max_unpool2d(y, idx, (7, 6))

    spec = make_spec("max", 3, 2, 1, return_indices=True, ndim=2)
    y, idx = oracle.pool(x, spec)
    want = oracle.max_unpool(y.astype(np.float32), idx,
                             make_unpool_spec((7, 6), ndim=2), (7, 6))
    np.testing.assert_array_equal(np.asarray(roundtrip(jnp.asarray(x))), want)
    y, idx = pa.pool2d(jnp.asarray(x), "max", 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(np.asarray(pa.max_unpool2d(y, idx)), want)  # remembered plane


def test_unpool_gradient_flows_to_the_pooled_values():
    y = jnp.asarray([[[[1.0, 2.0]]]])
    idx = jnp.asarray([[[[3, -1]]]])
    g = jax.grad(lambda t: (pa.max_unpool2d(t, idx, (2, 2), data_format="NCHW") *
                            jnp.arange(4.0).reshape(1, 1, 2, 2)).sum())(y)
    assert np.asarray(g).ravel().tolist() == [3.0, 0.0]


def test_unpool_index_outside_the_plane_is_a_value_error():
    with pytest.raises(ValueError, match="outside the output plane"):
        pa.max_unpool2d(jnp.ones((1, 1, 1, 1)), jnp.asarray([[[[9]]]]), (2, 2),
                        data_format="NCHW")


def test_adaptive_max_indices_and_gradient_match_the_oracle():
    x = RNG.integers(-2, 3, (2, 7, 5, 3)).astype(np.float32)  # many ties
    spec = make_adaptive_spec("max", (3, 4), ndim=2, return_indices=True)
    y, idx = pa.adaptive_pool2d(jnp.asarray(x), "max", (3, 4), return_indices=True)
    want, want_idx = oracle.adaptive_pool(x, spec)
    np.testing.assert_array_equal(np.asarray(y), want)
    np.testing.assert_array_equal(np.asarray(idx), want_idx)
    g = RNG.standard_normal(want.shape)
    _, pull = jax.vjp(lambda t: pa.adaptive_pool2d(t, "max", (3, 4)), jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(pull(jnp.asarray(g, jnp.float32))[0]),
                               oracle.adaptive_vjp(x, make_adaptive_spec("max", (3, 4), ndim=2),
                                                   g), rtol=1e-6)


def test_jax_array_with_another_backend_is_a_type_error():
    with pytest.raises(TypeError, match="jax tensor"):
        pa.pool2d(jnp.ones((1, 4, 4, 1)), "max", 2, backend="torch")


def test_integer_average_is_a_type_error_naming_the_cast():
    with pytest.raises(TypeError, match="cast"):
        pa.pool2d(jnp.ones((1, 4, 4, 1), jnp.int32), "avg", 2)


def test_bad_rank_is_a_value_error_under_jit_too():
    with pytest.raises(ValueError, match="expected a 4-D input"):
        jax.jit(lambda t: pa.pool2d(t, "max", 2))(jnp.ones((4, 4, 1)))


def test_capabilities_report_every_feature():
    caps = BACKEND.capabilities()
    assert set(caps) == set(FEATURES)
    assert set(caps.values()) <= {NATIVE, EMULATED}
    assert caps["max"] == caps["ceil_mode"] == caps["dilation"] == caps["channels_first"] == NATIVE
    assert caps["indices"] == caps["unpool"] == EMULATED
    assert BACKEND.version() == jax.__version__
    assert BACKEND.dtype_name(jnp.ones(2, jnp.bfloat16)) == "bfloat16"


def test_bfloat16_numpy_round_trip_uses_ml_dtypes():
    a = np.asarray([1.5, -2.25], dtype=ml_dtypes.bfloat16)
    t = BACKEND.from_numpy(a)
    assert t.dtype == jnp.bfloat16
    back = BACKEND.to_numpy(t)
    assert back.dtype == ml_dtypes.bfloat16 and back.tolist() == a.tolist()


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
@pytest.mark.parametrize("batch", [(2, 3), (0, 3), (2, 0)])
def test_unpool_matches_the_oracle_with_skipped_and_repeated_indices(fmt, batch):
    n, c = batch
    cf = fmt == "channels_first"
    shape = (n, c, 2, 3) if cf else (n, 2, 3, c)
    y = RNG.standard_normal(shape).astype(np.float32)
    idx = RNG.integers(-1, 20, shape).astype(np.int64)  # -1: skipped; repeats: equal values
    y = np.where(idx >= 0, idx * 0.5, y).astype(np.float32)
    want = oracle.max_unpool(y, idx, make_unpool_spec((4, 5), ndim=2, data_format=fmt), (4, 5))
    for call in (lambda a, b: pa.max_unpool2d(a, b, (4, 5), data_format=fmt),
                 jax.jit(lambda a, b: pa.max_unpool2d(a, b, (4, 5), data_format=fmt))):
        got = call(jnp.asarray(y), jnp.asarray(idx))
        assert isinstance(got, jax.Array) and got.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(got), want)


def test_unpool_under_jit_drops_an_index_outside_the_plane():
    idx = jnp.asarray([[[[9, 1]]]])  # 9 is outside a 2x2 plane: no check under jit, dropped
    got = jax.jit(lambda a, b: pa.max_unpool2d(a, b, (2, 2), data_format="NCHW"))(
        jnp.asarray([[[[5.0, 7.0]]]]), idx)
    assert np.asarray(got).ravel().tolist() == [0.0, 7.0, 0.0, 0.0]


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
def test_unpool_jaxpr_is_one_scatter_without_transpose_or_gather(fmt):
    shape = (2, 3, 4, 4) if fmt == "channels_first" else (2, 4, 4, 3)
    jaxpr = jax.make_jaxpr(lambda a, b: pa.max_unpool2d(a, b, (8, 8), data_format=fmt))(
        jnp.zeros(shape), jnp.zeros(shape, jnp.int32))
    eqns = [e.primitive.name for e in jaxpr.jaxpr.eqns[0].params["jaxpr"].eqns]
    assert eqns.count("scatter") == 1, eqns
    assert not _primitives(jaxpr.jaxpr) & {"transpose", "gather", "pad"}


def test_eager_calls_drop_the_compiled_programs_past_the_bound():
    # each compiled CPU program holds MBs and memory maps; thousands crashed XLA (fuzz run)
    from pooladapt.backends import jax as jax_backend

    first = jnp.asarray(_input("max-valid"))
    want = np.asarray(pa.pool2d(first, "max", 2))
    sizes = iter(range(41, 60))  # new shapes: each eager call traces and compiles once
    with jax_backend.tuned(max_programs=2):
        while jax_backend.traced_programs() != 0:  # past the bound: the next call drops
            pa.pool2d(jnp.ones((1, next(sizes), 1, 1)), "max", 1)
        for count in (1, 2):
            pa.pool2d(jnp.ones((1, next(sizes), 1, 1)), "max", 1)
            assert jax_backend.traced_programs() == count
        pa.pool2d(jnp.ones((1, next(sizes), 1, 1)), "max", 1)  # the third passes the bound
        assert jax_backend.traced_programs() == 0  # the caches were dropped
        np.testing.assert_array_equal(np.asarray(pa.pool2d(first, "max", 2)), want)
        assert jax_backend.traced_programs() == 1  # compiled again
        jax.jit(lambda t: pa.pool2d(t, "max", 3))(first)  # traced inside the caller's jit
        assert jax_backend.traced_programs() == 2
        jax.jit(lambda t: pa.pool2d(t, "max", (3, 2)))(first)  # never dropped while traced
        assert jax_backend.traced_programs() == 3


def test_max_programs_is_a_validated_scoped_knob():
    from pooladapt.backends import jax as jax_backend

    assert jax_backend.tuning() == jax_backend.DEFAULT_TUNING
    assert jax_backend.DEFAULT_TUNING.max_programs == 256
    with jax_backend.tuned(max_programs=7) as inside:
        assert jax_backend.tuning() == inside and inside.max_programs == 7
    assert jax_backend.tuning() == jax_backend.DEFAULT_TUNING
    for bad, error, match in ((-1, ValueError, "max_programs must be >= 0, got -1"),
                              (2.0, TypeError, "max_programs must be an int, got float"),
                              (True, TypeError, "max_programs must be an int, got bool")):
        with pytest.raises(error, match=match), jax_backend.tuned(max_programs=bad):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="max_program"), jax_backend.tuned(max_program=3):
        pass  # pragma: no cover
