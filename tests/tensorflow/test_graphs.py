"""The TensorFlow backend's routes: eager and tf.function graphs, the NaN check both ways, the
NCHW kernel with and without a gradient tape, and what the traced graph holds (no pad or
transpose the plan does not need)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import pooladapt as pa
import pooladapt.backends.tensorflow as tfb
from pooladapt import conformance, oracle
from pooladapt.spec import make_spec

RNG = np.random.default_rng(5)
LAYOUT_OPS = {"Transpose", "ConjugateTranspose", "Pad", "PadV2", "MirrorPad"}


def _graph_ops(fn, *args) -> list[str]:
    graph = tf.function(fn).get_concrete_function(*args).graph.as_graph_def()
    return [n.op for n in graph.node] + [n.op for f in graph.library.function
                                         for n in f.node_def]


def _nchw_float32() -> bool:
    return tfb._nchw_kernel("MAX", tf.float32) and tfb._nchw_kernel("AVG", tf.float32)


# (pool2d positional args, keyword args, layout ops the plan needs)
STRUCTURE = {
    "max 3/2/1 NHWC": (("max", 3, 2, 1), {}, set()),
    "max same NHWC": (("max", 3, 2, "same"), {}, set()),
    "max ceil NHWC": (("max", 3, 2), dict(ceil_mode=True), set()),
    "avg 3/2/1 excl. pad NHWC": (("avg", 3, 2, 1), {}, set()),
    "avg same NHWC": (("avg", 3, 2, "same"), {}, set()),
    "avg count pad NHWC": (("avg", 3, 2, 1), dict(count_include_pad=True), set()),
    "max 2/2 NCHW": (("max", 2), dict(data_format="channels_first"), set()),
    "avg same NCHW": (("avg", 3, 2, "same"), dict(data_format="channels_first"), set()),
    # the NCHW kernels take no explicit padding: one pad, no transpose
    "max 3/2/1 NCHW": (("max", 3, 2, 1), dict(data_format="channels_first"), {"PadV2"}),
}


@pytest.mark.parametrize("name", STRUCTURE)
def test_tf_function_graph_holds_no_layout_op_the_plan_does_not_need(name):
    args, kw, needed = STRUCTURE[name]
    if kw.get("data_format") == "channels_first" and not _nchw_float32():
        pytest.skip("no NCHW pooling kernel here (oneDNN off): transposes are needed")
    shape = (2, 3, 8, 8) if kw.get("data_format") == "channels_first" else (2, 8, 8, 3)
    x = tf.zeros(shape)
    ops = _graph_ops(lambda t: pa.pool2d(t, *args, **kw), x)
    layout = {op for op in ops if op in LAYOUT_OPS}
    # the NaN check's branch (order keys) may transpose int keys; it is not on the fast path:
    # count only what the untaken-NaN path runs by looking outside the cond's branches
    main = tf.function(lambda t: pa.pool2d(t, *args, **kw)).get_concrete_function(x)
    main_ops = {n.op for n in main.graph.as_graph_def().node} & LAYOUT_OPS
    assert main_ops <= needed, (main_ops, ops)
    assert layout <= needed | {"Transpose"}  # the exact branch may transpose int keys


def test_stem_max_nhwc_graph_has_one_pool_and_no_pad_or_transpose_anywhere():
    ops = _graph_ops(lambda t: pa.pool2d(t, "max", 3, 2, 1), tf.zeros((2, 8, 8, 3)))
    assert not {op for op in ops if op in LAYOUT_OPS}
    assert ops.count("MaxPool") == 2  # the pool, and the exact (NaN) branch's pool of keys


def _special(shape, dtype) -> np.ndarray:
    x = RNG.standard_normal(shape)
    pick = RNG.random(shape)
    x[pick < 0.1] = np.nan
    x[(pick >= 0.1) & (pick < 0.25)] = -np.inf
    x[(pick >= 0.25) & (pick < 0.3)] = np.inf
    x[..., :3, :3] = -np.inf  # an all -inf window (channels last) / plane corner
    return x.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)


MAX_CASES = [  # (args, kwargs)
    (("max", 3, 2, 1), {}),
    (("max", 3, 2, "same"), {}),
    (("max", 3, 2), dict(ceil_mode=True)),
    (("max", 2), {}),
]


# layouts: channels last, and channels first on TF's NCHW kernel (a small tensor, or 8+
# channels) or transposed (fewer channels, not small)
LAYOUTS = {"NHWC": ("channels_last", 3, None), "NCHW-small": ("channels_first", 3, None),
           "NCHW-8-channels": ("channels_first", 8, 0), "NCHW-transposed": ("channels_first", 3, 0)}


def _layout(name: str, monkeypatch) -> tuple[str, tuple[int, ...]]:
    fmt, channels, small = LAYOUTS[name]
    if small is not None:
        monkeypatch.setattr(tfb, "_NCHW_SMALL", small)
    return fmt, (2, 7, 6, channels) if fmt == "channels_last" else (2, channels, 7, 6)


# graphs check with a sum (float16: its cells), eager with a minimum; XLA never takes the NCHW
# kernel, so its NCHW layouts are one route
ROUTES = [(d, lay, w) for w in ("eager-host", "eager-tf", "graph", "xla") for lay in LAYOUTS
          for d in ("float16", "bfloat16", "float32", "float64")
          if w.startswith("eager") or (d in ("float16", "float32")
                                       and (w == "graph" or lay in ("NHWC", "NCHW-small")))]


@pytest.mark.parametrize("dtype, layout, where", ROUTES)
def test_max_with_nan_and_inf_matches_the_oracle_on_every_route(dtype, layout, where,
                                                                 monkeypatch):
    monkeypatch.setattr(tfb, "_HOST_CHECK", 1 << 30 if where == "eager-host" else 0)
    fmt, shape = _layout(layout, monkeypatch)
    x = _special(shape, dtype)
    for args, kw in MAX_CASES:
        def fn(t, args=args, kw=kw):
            return pa.pool2d(t, *args, data_format=fmt, **kw)
        if where == "graph":
            fn = tf.function(fn)
        elif where == "xla":
            fn = tf.function(fn, jit_compile=True)
        got = fn(tf.constant(x)).numpy()
        want = oracle.pool(x, make_spec(*args, data_format=fmt, ndim=2, **kw))
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64))


@pytest.mark.parametrize("where", ["eager-host", "eager-tf"])
def test_clean_input_takes_the_native_result_on_both_eager_checks(where, monkeypatch):
    monkeypatch.setattr(tfb, "_HOST_CHECK", 1 << 30 if where == "eager-host" else 0)
    calls = []
    real = tfb._order_key
    monkeypatch.setattr(tfb, "_order_key", lambda t: calls.append(t) or real(t))
    x = RNG.standard_normal((2, 7, 6, 3)).astype(np.float32)
    x[0, 0, 0, 0] = np.inf  # +inf needs no exact path
    got = pa.pool2d(tf.constant(x), "max", 3, 2, 1)
    np.testing.assert_array_equal(got.numpy(), oracle.pool(x, make_spec("max", 3, 2, 1, ndim=2)))
    assert not calls
    x[1, 2, 3, 1] = np.nan
    pa.pool2d(tf.constant(x), "max", 3, 2, 1)
    assert calls  # the NaN sent it to the exact path


GRAD_CASES = [
    (("max", 3, 2, 1), {}),
    (("max", 2), {}),
    (("max", 3, 2, "same"), {}),
    (("avg", 3, 2, 1), {}),
    (("avg", 3, 2, "same"), {}),
    (("avg", 2), {}),
    (("lp", 3, 2, 1), dict(p=2.0)),
]


@pytest.mark.parametrize("layout, where", [(lay, w) for w in ("eager", "graph", "xla")
                                           for lay in LAYOUTS
                                           if w != "xla" or lay in ("NHWC", "NCHW-small")])
def test_gradients_match_the_oracle_on_every_route(layout, where, monkeypatch):
    fmt, shape = _layout(layout, monkeypatch)
    x = RNG.integers(-2, 3, size=shape).astype(np.float32)  # ties: first maximum
    for args, kw in GRAD_CASES:
        spec = make_spec(*args, data_format=fmt, ndim=2, **kw)
        g = RNG.standard_normal(spec.output_shape(shape)).astype(np.float32)

        def vjp(t, gt, args=args, kw=kw):
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = pa.pool2d(t, *args, data_format=fmt, **kw)
            return tape.gradient(y, t, output_gradients=gt)

        if where != "eager":
            vjp = tf.function(vjp, jit_compile=where == "xla")
        got = vjp(tf.constant(x), tf.constant(g)).numpy()
        want = oracle.pool_vjp(x.astype(np.float64), spec, g.astype(np.float64))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(args))


def test_nchw_kernel_without_a_tape_runs_no_custom_gradient(monkeypatch):
    if not _nchw_float32():
        pytest.skip("no NCHW pooling kernel here")
    seen = []
    real = tf.custom_gradient
    monkeypatch.setattr(tf, "custom_gradient", lambda f: seen.append(f) or real(f))
    x = tf.constant(RNG.standard_normal((2, 3, 8, 8)).astype(np.float32))
    ops = []
    real_raw = tf.raw_ops.MaxPool
    monkeypatch.setattr(tf.raw_ops, "MaxPool", lambda **kw: ops.append(kw) or real_raw(**kw))
    pa.pool2d(x, "max", 2, data_format="channels_first")
    assert not seen and [kw["data_format"] for kw in ops] == ["NCHW"]
    with tf.GradientTape() as tape:
        tape.watch(x)
        pa.pool2d(x, "max", 2, data_format="channels_first")
    assert seen


def test_plain_tf_function_called_inside_jit_compile_is_an_error_not_a_wrong_value():
    # documented limit: a graph traced outside XLA keeps MaxPool's explicit padding
    inner = tf.function(lambda t: pa.pool2d(t, "max", 3, 2, 1))
    x = tf.constant(RNG.standard_normal((1, 6, 6, 2)).astype(np.float32))
    inner(x)
    with pytest.raises((tf.errors.UnimplementedError, tf.errors.InvalidArgumentError)):
        tf.function(lambda t: inner(t), jit_compile=True)(x)


@pytest.mark.parametrize("case", [c for c in conformance.grid("quick")
                                  if c.kind in ("pool", "adaptive", "global")
                                  and not c.gradient], ids=lambda c: c.id)
def test_conformance_grid_under_tf_function(case):
    x = case.make_input()
    want = conformance.expected(case, x)
    fn, pos, kw = conformance._entry(case)
    got = tf.function(lambda t: fn(t, *pos, **kw))(tf.constant(x))
    for w, g, what in zip(want if isinstance(want, tuple) else (want,),
                          got if isinstance(got, tuple) else (got,), ("values", "indices")):
        ok, _, message = conformance.compare(case, w, g.numpy(), what)
        if not ok and case.features and any(f in tfb.BACKEND.known_deviations
                                             for f in case.features):
            pytest.xfail(message)
        assert ok, message


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
@pytest.mark.parametrize("where", ["eager", "graph", "xla"])
def test_padding_that_equals_tf_same_on_odd_sizes_matches_the_oracle(fmt, where):
    # padding 1 of a 3/2 window over 7 and 9 gives TF SAME's windows: one native SAME call
    shape = (2, 7, 9, 3) if fmt == "channels_last" else (2, 3, 7, 9)
    x = RNG.integers(-2, 3, size=shape).astype(np.float32)  # ties
    x.flat[5] = np.nan
    for mode, kw in (("avg", {}), ("avg", dict(count_include_pad=True)), ("max", {})):
        spec = make_spec(mode, 3, 2, 1, data_format=fmt, ndim=2, **kw)
        assert tfb._is_tf_same(spec.plan(shape))
        g = RNG.standard_normal(spec.output_shape(shape)).astype(np.float32)

        def run(t, gt, mode=mode, kw=kw):
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = pa.pool2d(t, mode, 3, 2, 1, data_format=fmt, **kw)
            return y, tape.gradient(y, t, output_gradients=gt)

        if where != "eager":
            run = tf.function(run, jit_compile=where == "xla")
        y, dx = run(tf.constant(x), tf.constant(g))
        np.testing.assert_allclose(y.numpy(), oracle.pool(x, spec), rtol=1e-6)
        clean = np.nan_to_num(x, nan=-5.0)  # gradients: no NaN, ties remain
        _, dx = run(tf.constant(clean), tf.constant(g))
        np.testing.assert_allclose(dx.numpy(), oracle.pool_vjp(clean, spec, g),
                                   rtol=1e-5, atol=1e-6)
