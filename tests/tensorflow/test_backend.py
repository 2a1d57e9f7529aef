"""The TensorFlow backend as TF users meet it: tf tensors in and out, GradientTape,
``tf.function(jit_compile=True)``, dynamic batch, dtypes, and the errors it raises."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import pooladapt as pa
from pooladapt import oracle
from pooladapt.backends.base import EMULATED, FEATURES, NATIVE, PLAN_PROBES
from pooladapt.backends.tensorflow import BACKEND
from pooladapt.spec import make_adaptive_spec, make_spec, make_unpool_spec

RNG = np.random.default_rng(11)

# one call per code path of the backend: (entry point, positional args, keyword args, ndim)
PATHS = {
    "max-native-valid": ("pool2d", ("max", 2), {}, 2),
    "max-native-same": ("pool2d", ("max", 3, 2, "same"), {}, 2),
    "max-padded-ceil": ("pool2d", ("max", 3, 2, 1), dict(ceil_mode=True), 2),
    "max-dilated-strided": ("pool2d", ("max", 2, 2, 1), dict(dilation=2), 2),
    "max-3d": ("pool3d", ("max", 2, (2, 1, 2), "same_lower"), {}, 3),
    "max-1d-channels-first": ("pool1d", ("max", 3, 2, ((0, 2),)),
                              dict(data_format="channels_first"), 1),
    "max-indices": ("pool2d", ("max", 3, 2, 1), dict(return_indices=True), 2),
    "avg-same": ("pool2d", ("avg", 3, 2, "same"), {}, 2),
    "avg-count-include-pad": ("pool2d", ("avg", 3, 2, 1),
                              dict(count_include_pad=True, ceil_mode=True), 2),
    "avg-3d-dilated": ("pool3d", ("avg", 2, 1, 1), dict(dilation=(1, 2, 1)), 3),
    "lp": ("pool2d", ("lp", 2, 1, ((1, 0), (0, 1))), dict(p=3.0), 2),
    "global-max": ("global_pool2d", ("max",), {}, 2),
    "global-lp": ("global_pool3d", ("lp",), dict(keepdims=True), 3),
    "adaptive-avg": ("adaptive_pool2d", ("avg", (3, 4)), {}, 2),
    "adaptive-max": ("adaptive_pool2d", ("max", (4, 3)), dict(return_indices=True), 2),
}


def _input(ndim: int, dtype=np.float32, channels_first: bool = False) -> np.ndarray:
    spatial = {1: (9,), 2: (7, 6), 3: (5, 6, 4)}[ndim]
    shape = (2, 3, *spatial) if channels_first else (2, *spatial, 3)
    return RNG.standard_normal(shape).astype(dtype)


def _call(name: str, x):
    fn, args, kw, _ = PATHS[name]
    return getattr(pa, fn)(x, *args, **kw)


def _input_for(name: str, dtype=np.float32) -> np.ndarray:
    kw, ndim = PATHS[name][2], PATHS[name][3]
    return _input(ndim, dtype, kw.get("data_format") == "channels_first")


@pytest.mark.parametrize("name", PATHS)
def test_tf_tensor_in_gives_tf_tensor_out_equal_to_numpy_backend(name):
    x = _input_for(name)
    got = _call(name, tf.constant(x))
    want = _call(name, x)  # NumPy in: the numpy backend
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        assert isinstance(g, tf.Tensor)
        assert g.dtype.name == str(w.dtype)
        assert g.device == tf.constant(x).device
        np.testing.assert_allclose(g.numpy(), w, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", PATHS)
def test_jit_compile_matches_eager_forward_and_gradient(name):
    x = tf.constant(_input_for(name))

    def forward(t):
        out = _call(name, t)
        return out[0] if isinstance(out, tuple) else out

    def grad(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = forward(t)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, t)

    for fn in (forward, grad):
        eager = fn(x).numpy()
        jitted = tf.function(fn, jit_compile=True)(x).numpy()
        np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "int8",
                                   "uint8", "int32", "int64", "uint16", "uint32", "uint64"])
def test_every_dtype_keeps_its_dtype_and_is_exact_for_max(dtype):
    npd = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    if np.issubdtype(np.dtype(npd), np.integer):
        info = np.iinfo(npd)
        x = RNG.integers(info.min, info.max, size=(2, 5, 6, 3), endpoint=True, dtype=npd)
    else:
        x = RNG.standard_normal((2, 5, 6, 3)).astype(npd)
    for ndim_fn, xin in ((pa.pool2d, x), (pa.pool3d, x[:, None].repeat(3, axis=1))):
        spec_nd = 2 if ndim_fn is pa.pool2d else 3
        y = ndim_fn(tf.constant(xin), "max", 3, 2, 1, ceil_mode=True)
        assert y.dtype.name == dtype
        want = oracle.pool(xin, make_spec("max", 3, 2, 1, ceil_mode=True, ndim=spec_nd))
        np.testing.assert_array_equal(y.numpy().astype(np.float64), want.astype(np.float64))


def test_float16_and_bfloat16_average_accumulates_in_float32():
    # 2048 + 1 + 1 ... in float16 would stall at 2048; float32 accumulation gets it right
    x = np.full((1, 1, 8, 1), 1.0, np.float16)
    x[0, 0, 0, 0] = 2048
    y = pa.pool2d(tf.constant(x), "avg", (1, 8))
    assert y.dtype == tf.float16
    assert float(y.numpy().ravel()[0]) == np.float16((2048 + 7) / 8)


def test_bfloat16_numpy_round_trip_uses_ml_dtypes():
    a = np.array([[1.5, -2.25]], dtype=ml_dtypes.bfloat16)
    t = BACKEND.from_numpy(a)
    assert t.dtype == tf.bfloat16 and BACKEND.dtype_name(t) == "bfloat16"
    back = BACKEND.to_numpy(t)
    assert back.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(back, a)


def test_gradient_tape_sends_ties_to_the_first_maximum_in_2d_and_3d():
    for shape, fn in (((1, 2, 2, 1), pa.pool2d), ((1, 2, 2, 2, 1), pa.pool3d)):
        x = tf.ones(shape)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x, "max", 2)
        g = tape.gradient(y, x).numpy().ravel()
        assert g.tolist() == [1.0] + [0.0] * (g.size - 1)


def test_gradient_of_channels_first_input_works_on_cpu():
    x = tf.constant(_input(2, channels_first=True))
    spec = make_spec("max", 3, 2, 1, data_format="channels_first", ndim=2)
    g = np.ones(spec.output_shape(tuple(x.shape)))
    dx = BACKEND.vjp(lambda t: pa.pool2d(t, "max", 3, 2, 1, data_format="channels_first"),
                     x, tf.constant(g, tf.float32))
    np.testing.assert_allclose(dx.numpy(), oracle.pool_vjp(x.numpy(), spec, g), atol=1e-6)


def test_nan_and_subnormals_survive_under_jit_compile():
    tiny = np.float32(1e-40)  # subnormal: TF's CPU kernels flush it to zero
    x = np.array([np.nan, 1, -0.0, tiny, 2, 3, np.nan, np.nan], np.float32).reshape(1, 8, 1)
    want = [np.nan, tiny, 3, np.nan]
    for fn in (lambda t: pa.pool1d(t, "max", 2), tf.function(lambda t: pa.pool1d(t, "max", 2),
                                                            jit_compile=True)):
        got = fn(tf.constant(x)).numpy().ravel()
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("return_indices", [False, True])
def test_nan_alone_survives_under_jit_compile(return_indices):
    # no subnormal or -inf beside it: only the NaN check can send it to the exact path
    x = RNG.standard_normal((2, 6, 5, 3)).astype(np.float32)
    x[1, 2, 3, 1] = np.nan
    fn = tf.function(lambda t: pa.pool2d(t, "max", 3, 2, 1, return_indices=return_indices),
                     jit_compile=True)
    got = fn(tf.constant(x))
    want = oracle.pool(x, make_spec("max", 3, 2, 1, return_indices=return_indices, ndim=2))
    for g, w in zip(got if return_indices else (got,), want if return_indices else (want,)):
        np.testing.assert_array_equal(g.numpy(), w)


def test_dynamic_batch_under_tf_function():
    @tf.function(input_signature=[tf.TensorSpec([None, 5, 6, 4, 3], tf.float64)])
    def pool(t):
        return pa.pool3d(t, "max", 2, 1, 1, dilation=(1, 2, 1))

    x = RNG.standard_normal((2, 5, 6, 4, 3))
    want = oracle.pool(x, make_spec("max", 2, 1, 1, dilation=(1, 2, 1), ndim=3))
    np.testing.assert_array_equal(pool(tf.constant(x)).numpy(), want)


def test_indices_round_trip_through_unpool():
    x = tf.constant(_input(2, channels_first=True))
    y, idx = pa.pool2d(x, "max", 3, 2, 1, return_indices=True, data_format="channels_first")
    assert idx.dtype == tf.int64
    restored = pa.max_unpool2d(y, idx, data_format="channels_first")  # plane remembered
    assert isinstance(restored, tf.Tensor)
    want = oracle.max_unpool(y.numpy(), idx.numpy(), make_unpool_spec(
        None, ndim=2, data_format="channels_first"), (7, 6))
    np.testing.assert_array_equal(restored.numpy(), want)


def test_unpool_index_outside_the_plane_is_a_value_error():
    y = tf.ones((1, 2, 2, 1))
    idx = tf.constant([[[[0], [1]], [[2], [99]]]], tf.int64)
    with pytest.raises(ValueError, match="outside the output plane"):
        pa.max_unpool2d(y, idx, (4, 4))


def test_adaptive_max_indices_match_the_oracle():
    x = RNG.integers(-2, 3, size=(2, 7, 5, 3)).astype(np.float32)  # ties
    y, idx = pa.adaptive_pool2d(tf.constant(x), "max", (3, 2), return_indices=True)
    wy, widx = oracle.adaptive_pool(x, make_adaptive_spec("max", (3, 2), ndim=2,
                                                          return_indices=True))
    np.testing.assert_array_equal(y.numpy(), wy)
    np.testing.assert_array_equal(idx.numpy(), widx)


def test_tf_tensor_with_another_backend_is_a_type_error():
    with pytest.raises(TypeError, match="tensorflow tensor"):
        pa.pool2d(tf.ones((1, 4, 4, 1)), "max", 2, backend="torch")


def test_integer_average_is_a_type_error_naming_the_cast():
    with pytest.raises(TypeError, match="cast"):
        pa.pool2d(tf.ones((1, 4, 4, 1), tf.int32), "avg", 2)


def test_capabilities_report_every_feature():
    caps = BACKEND.capabilities()
    assert set(caps) == set(FEATURES)
    assert BACKEND.version() == tf.__version__
    # ceil mode is MaxPool's explicit padding; layouts are native, a transpose aside
    assert {f for f, how in caps.items() if how == EMULATED} == {
        "lp", "dilation", "count_include_pad", "indices", "nan", "adaptive", "unpool"}


POOL_OPS = {"MaxPool", "AvgPool", "MaxPool3D", "AvgPool3D"}
EMULATION_OPS = {"Pad", "PadV2", "GatherV2", "Mul", "RealDiv", "Pow", "Square", "Abs", "Sqrt",
                 "DepthwiseConv2dNative", "StridedSlice", "Reshape", "Bitcast", "SelectV2"}


@pytest.mark.parametrize("feature", PLAN_PROBES)
def test_capabilities_are_the_translations_own_choice(feature):
    # native: the plain translation's traced forward pool is one TF pooling op (a transpose
    # and the NaN check aside); emulated: anything else
    kwargs, dtype = PLAN_PROBES[feature]
    spec = make_spec(**{"data_format": "channels_last", **kwargs}, ndim=2)
    shape = (1, 3, 8, 8) if spec.channels_first else (1, 8, 8, 3)
    with pa.speed_routes("off"):
        graph = tf.function(lambda t: BACKEND.pool(t, spec.plan(shape))).get_concrete_function(
            tf.zeros(shape, dtype)).graph.as_graph_def()
        native = BACKEND.capabilities()[feature] == NATIVE
    ops = [n.op for n in graph.node]
    assert native is (sum(op in POOL_OPS for op in ops) == 1 and not EMULATION_OPS & set(ops)), ops


def test_lowers_natively_follows_the_speed_route_setting():
    plan = make_spec("avg", 3, 2, "same", ndim=2).plan((1, 8, 8, 3))
    assert BACKEND.lowers_natively(plan, "float32") is True  # one SAME AvgPool
    with pa.speed_routes("off"):  # a padded copy and the divisor map
        assert BACKEND.lowers_natively(plan, "float32") is False
    assert BACKEND.lowers_natively(plan, "int32") is None


_QUIET = """
import numpy as np, tensorflow as tf, pooladapt as pa
for dtype in ("float16", "bfloat16", "float32", "float64"):
    for mode in ("max", "avg"):
        x = tf.cast(tf.random.normal((2, 3, 6, 6)), dtype)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = pa.pool2d(x, mode, 2, data_format="channels_first")
        tape.gradient(y, x)
        tf.function(lambda t: pa.pool2d(t, mode, 3, 2, 1, data_format="channels_first"))(x)
print("done")
"""


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_channels_first_pooling_logs_no_refused_kernel(onednn):
    # issue 20: a probe that ran TF's NCHW kernel where there is none made TF log "Local
    # rendezvous is aborting ... only supports NHWC" into the user's output
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "0"}
    run = subprocess.run([sys.executable, "-c", _QUIET], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "done" in run.stdout, run.stderr
    noisy = [line for line in run.stderr.splitlines()
             if "rendezvous" in line.lower() or "NHWC" in line]
    assert not noisy, noisy
