"""The TensorFlow backend's speed routes, eager and in tf.function graphs: each route is taken
where it is forced on and never where routes are off (seen in the traced graph or in the TF
calls made), ``auto`` follows ``fast.tuning()``, every route setting matches the oracle with NaN and
-inf and in its gradient, and the traced graph holds no pad or transpose the plan does not
need. Routes are set with ``pa.speed_routes``; every graph is traced inside its setting."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import pooladapt as pa
from pooladapt import config, conformance, oracle
from pooladapt.backends.tensorflow import BACKEND, fast
from pooladapt.spec import make_spec

RNG = np.random.default_rng(5)
LAYOUT_OPS = {"Transpose", "ConjugateTranspose", "Pad", "PadV2", "MirrorPad"}
NCHW_ROUTE = "tensorflow.nchw_kernel"
HAS_NCHW = NCHW_ROUTE in BACKEND.speed_routes
needs_nchw = pytest.mark.skipif(not HAS_NCHW, reason="TF has no NCHW pooling kernel here "
                                "(oneDNN off): the route is not listed")


def _graph(fn, *args) -> tf.compat.v1.GraphDef:
    return tf.function(fn).get_concrete_function(*args).graph.as_graph_def()


def _graph_ops(fn, *args) -> list[str]:
    graph = _graph(fn, *args)
    return [n.op for n in graph.node] + [n.op for f in graph.library.function
                                         for n in f.node_def]


def _pool_nodes(fn, *args) -> list[tf.compat.v1.NodeDef]:
    graph = _graph(fn, *args)
    return [n for n in [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
            if n.op in ("MaxPool", "AvgPool")]


def _routes(setting: str):
    mode, _, only = setting.partition(":")
    return pa.speed_routes(mode, only=only or None)


# ------------------------------------------------------------------ each route, on and off


def _counting(monkeypatch, module, name: str) -> list:
    """Count the calls of a TensorFlow function (``module.name``)."""
    calls, real = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **kw: calls.append(1) or real(*a, **kw))
    return calls


def _nchw_taken(monkeypatch) -> bool:
    # the main graph: the NaN branch pools integer keys, which have no NCHW kernel
    graph = _graph(lambda t: pa.pool2d(t, "max", 2, data_format="channels_first"),
                   tf.zeros((2, 3, 8, 8)))
    ops = {n.op for n in graph.node}
    assert "MaxPool" in ops
    return "Transpose" not in ops


def _same_taken(monkeypatch) -> bool:
    nodes = _pool_nodes(lambda t: pa.pool2d(t, "avg", 3, 2, "same"), tf.zeros((2, 8, 8, 3)))
    return any(n.attr["padding"].s == b"SAME" for n in nodes)


def _depthwise_taken(monkeypatch) -> bool:
    ops = _graph_ops(lambda t: pa.pool2d(t, "avg", 3, 2, 1, count_include_pad=True),
                     tf.zeros((2, 8, 8, 3)))
    return "DepthwiseConv2dNative" in ops


def _raw_op_taken(monkeypatch) -> bool:
    calls = _counting(monkeypatch, tf.raw_ops, "MaxPool")  # tf.nn's wrapper calls no raw op
    pa.pool2d(tf.zeros((2, 8, 8, 3)), "max", 2)
    return bool(calls)


def _taps_taken(monkeypatch) -> bool:
    ops = _graph_ops(lambda t: pa.pool2d(t, "max", 3, 2, 1, return_indices=True)[1],
                     tf.zeros((2, 8, 8, 3)))
    return "MaxPool" in ops  # the gather path runs no pool


def _host_check_taken(monkeypatch) -> bool:
    calls = _counting(monkeypatch, tf, "reduce_sum")
    pa.pool2d(tf.zeros((2, 8, 8, 3)), "max", 2)
    return not calls


TAKEN = {NCHW_ROUTE: _nchw_taken, "tensorflow.native_same": _same_taken,
         "tensorflow.depthwise_sum": _depthwise_taken, "tensorflow.raw_op": _raw_op_taken,
         "tensorflow.indices_taps": _taps_taken, "tensorflow.host_nan_check": _host_check_taken}


def test_every_listed_route_has_a_check_here():
    assert set(BACKEND.speed_routes) <= set(TAKEN)
    assert set(TAKEN) - set(BACKEND.speed_routes) <= {NCHW_ROUTE}


@pytest.mark.parametrize("route", BACKEND.speed_routes)
def test_a_route_is_taken_forced_on_and_never_with_routes_off(route, monkeypatch):
    # on, off, on again: no cache may carry a route decision from one setting to the next
    for setting, want in ((f"on:{route}", True), ("off", False), (f"on:{route}", True),
                          ("on", True)):
        config.routes_taken.discard(route)
        with _routes(setting), monkeypatch.context() as patch:
            assert TAKEN[route](patch) is want, setting
        assert (route in config.routes_taken) is want, setting


@needs_nchw
def test_auto_takes_the_nchw_kernel_with_enough_channels_or_a_small_tensor(monkeypatch):
    calls = []
    real = tf.raw_ops.MaxPool
    monkeypatch.setattr(tf.raw_ops, "MaxPool", lambda **kw: calls.append(kw) or real(**kw))
    few = fast.tuning().nchw_channels - 1
    side = int(np.sqrt(fast.tuning().nchw_small / few)) + 2  # a plane just past "small"
    shapes = {(1, few, 4, 4): "NCHW", (1, few, side, side): "NHWC",
              (1, few + 1, side, side): "NCHW"}
    for shape, want in shapes.items():
        calls.clear()
        with pa.speed_routes("auto"):
            pa.pool2d(tf.zeros(shape), "max", 2, data_format="channels_first")
        assert [kw.get("data_format", "NHWC") for kw in calls] == [want], shape


def test_auto_checks_a_small_cpu_tensor_for_nan_on_the_host(monkeypatch):
    calls = _counting(monkeypatch, tf, "reduce_sum")
    side = int(np.sqrt(fast.tuning().host_check)) + 1
    with pa.speed_routes("auto"):
        pa.pool2d(tf.zeros((1, 4, 4, 1)), "max", 2)
        assert not calls
        pa.pool2d(tf.zeros((1, side, side, 1)), "max", 2)
        assert len(calls) == 1
        with fast.tuned(host_check=15):  # 16 cells are past it now
            pa.pool2d(tf.zeros((1, 4, 4, 1)), "max", 2)
    assert len(calls) == 2


def test_the_tuning_is_changed_per_block_and_checked():
    with fast.tuned(nchw_channels=1) as inner:
        assert fast.tuning() is inner and inner.nchw_channels == 1
    assert fast.tuning().nchw_channels == fast.Tuning().nchw_channels
    with pytest.raises(TypeError), fast.tuned(no_such_threshold=1):
        pass
    with pytest.raises(ValueError), fast.tuned(host_check=-1):
        pass


# ------------------------------------------------------------------ the graph's layout ops

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
    if kw.get("data_format") == "channels_first" and not HAS_NCHW:
        pytest.skip("no NCHW pooling kernel here (oneDNN off): transposes are needed")
    shape = (2, 3, 8, 8) if kw.get("data_format") == "channels_first" else (2, 8, 8, 3)
    x = tf.zeros(shape)
    with pa.speed_routes("auto"):
        ops = _graph_ops(lambda t: pa.pool2d(t, *args, **kw), x)
        # the NaN check's branch (order keys) may transpose int keys; it is not on the fast
        # path: count only what the untaken-NaN path runs by looking outside the cond's branches
        main_ops = {n.op for n in _graph(lambda t: pa.pool2d(t, *args, **kw), x).node}
    layout = {op for op in ops if op in LAYOUT_OPS}
    assert main_ops & LAYOUT_OPS <= needed, (main_ops, ops)
    assert layout <= needed | {"Transpose"}  # the exact branch may transpose int keys


def test_stem_max_nhwc_graph_has_one_pool_and_no_pad_or_transpose_anywhere():
    with pa.speed_routes("auto"):
        ops = _graph_ops(lambda t: pa.pool2d(t, "max", 3, 2, 1), tf.zeros((2, 8, 8, 3)))
    assert not {op for op in ops if op in LAYOUT_OPS}
    assert ops.count("MaxPool") == 2  # the pool, and the exact (NaN) branch's pool of keys


@pytest.mark.parametrize("setting", ["off", "auto"])
def test_channels_first_max_transposes_at_most_once_in_and_once_out(setting):
    # the NaN check's exact branch pools the input already transposed (it used to transpose
    # it again, and its result back again); the NCHW kernel transposes nothing on the main path
    with _routes(setting):
        graph = _graph(lambda t: pa.pool2d(t, "max", 3, 2, 1, data_format="channels_first"),
                       tf.zeros((2, 3, 8, 8)))
    ops = [n.op for n in graph.node]
    every = ops + [n.op for f in graph.library.function for n in f.node_def]
    assert every.count("Transpose") <= 2, every
    if setting == "auto" and HAS_NCHW:
        assert "Transpose" not in ops, ops


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_training_graph_reaches_the_input_once_on_the_native_kernels(mode, layout):
    # the max's NaN branch used to add zeros (its tf.cond gradient) to MaxPool's gradient, an
    # AddN over the whole input; with oneDNN the NCHW gradient is TF's own, not a transposed
    # custom gradient (the benchmark's training step: 1.2-5x native before)
    if layout == "channels_first" and not HAS_NCHW:
        pytest.skip("no NCHW pooling kernel here (oneDNN off): transposes are needed")
    shape = (2, 3, 8, 8) if layout == "channels_first" else (2, 8, 8, 3)

    def step(t, w):
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = pa.pool2d(t, mode, 3, 2, "same", data_format=layout)
        return tape.gradient(y, t, output_gradients=w)

    w = tf.zeros(make_spec(mode, 3, 2, "same", data_format=layout, ndim=2).output_shape(shape))
    with pa.speed_routes("auto"):
        main_ops = [n.op for n in _graph(step, tf.zeros(shape), w).node]
    assert "AddN" not in main_ops, main_ops
    assert not set(main_ops) & LAYOUT_OPS, main_ops
    grads = [op for op in main_ops if op.endswith("PoolGrad")]
    assert grads == ["MaxPoolGrad" if mode == "max" else "AvgPoolGrad"], main_ops


# ------------------------------------------------------------------ every setting, exact

SETTINGS = ["auto", "off", "on"]


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
    (("max", 3, 2, 1), dict(return_indices=True)),
]
LAYOUTS = {"NHWC": ("channels_last", (2, 7, 6, 3)), "NCHW": ("channels_first", (2, 3, 7, 6))}


def _traced(fn, where: str):
    if where == "eager":
        return fn
    return tf.function(fn, jit_compile=where == "xla")


# graphs check with a sum (float16: its cells), eager with a minimum
MAX_ROUTES = [(d, lay, w, s) for s in SETTINGS for w in ("eager", "graph", "xla") for lay in LAYOUTS
              for d in ("float16", "bfloat16", "float32", "float64")
              if w == "eager" or d in ("float16", "float32")]


@pytest.mark.parametrize("dtype, layout, where, setting", MAX_ROUTES)
def test_max_with_nan_and_inf_matches_the_oracle_on_every_route(dtype, layout, where, setting):
    fmt, shape = LAYOUTS[layout]
    x = _special(shape, dtype)
    for args, kw in MAX_CASES:
        with _routes(setting):  # traced inside the setting
            got = _traced(lambda t, args=args, kw=kw: pa.pool2d(t, *args, data_format=fmt, **kw),
                          where)(tf.constant(x))
        want = oracle.pool(x, make_spec(*args, data_format=fmt, ndim=2, **kw))
        for g, w in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            np.testing.assert_array_equal(g.numpy().astype(np.float64), w.astype(np.float64),
                                          err_msg=str(args))


@pytest.mark.parametrize("setting", ["off", "on:tensorflow.host_nan_check"])
def test_clean_input_takes_the_native_result_on_both_eager_checks(setting, monkeypatch):
    keys = _counting(monkeypatch, tf, "bitcast")  # the exact path's order keys
    x = RNG.standard_normal((2, 7, 6, 3)).astype(np.float32)
    x[0, 0, 0, 0] = np.inf  # +inf needs no exact path
    with _routes(setting):
        got = pa.pool2d(tf.constant(x), "max", 3, 2, 1)
        np.testing.assert_array_equal(got.numpy(),
                                      oracle.pool(x, make_spec("max", 3, 2, 1, ndim=2)))
        assert not keys
        x[1, 2, 3, 1] = np.nan
        pa.pool2d(tf.constant(x), "max", 3, 2, 1)
    assert keys  # the NaN sent it to the exact path


@pytest.mark.parametrize("cells", [(1, 4, 4, 1), (2, 40, 40, 8)])  # host check, TF's sum
def test_eager_clean_input_runs_no_op_of_the_exact_path(cells, monkeypatch):
    grads = _counting(monkeypatch, tf, "stop_gradient")  # the exact path's first op
    sums = _counting(monkeypatch, tf, "reduce_sum")
    mins = _counting(monkeypatch, tf, "reduce_min")
    x = RNG.standard_normal(cells).astype(np.float32)
    with pa.speed_routes("auto"):
        pa.pool2d(tf.constant(x), "max", 2)
        assert not grads
        big = np.full(cells, 3e38, np.float32)  # a sum that overflows to +inf: the minimum
        np.testing.assert_array_equal(pa.pool2d(tf.constant(big), "max", 2).numpy(),
                                      big[:, ::2, ::2, :])
        assert not grads
        assert len(mins) == (1 if sums else 0)  # only the +inf sum asked the minimum


GRAD_CASES = [
    (("max", 3, 2, 1), {}),
    (("max", 2), {}),
    (("max", 3, 2, "same"), {}),
    (("avg", 3, 2, 1), {}),
    (("avg", 3, 2, 1), dict(count_include_pad=True)),
    (("avg", 3, 2, "same"), {}),
    (("avg", 2), {}),
    (("lp", 3, 2, 1), dict(p=2.0)),
]


@pytest.mark.parametrize("layout, where, setting", [
    (lay, w, s) for s in SETTINGS for w in ("eager", "graph", "xla") for lay in LAYOUTS])
def test_gradients_match_the_oracle_on_every_route(layout, where, setting):
    fmt, shape = LAYOUTS[layout]
    x = RNG.integers(-2, 3, size=shape).astype(np.float32)  # ties: first maximum
    for args, kw in GRAD_CASES:
        spec = make_spec(*args, data_format=fmt, ndim=2, **kw)
        g = RNG.standard_normal(spec.output_shape(shape)).astype(np.float32)

        def vjp(t, gt, args=args, kw=kw):
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = pa.pool2d(t, *args, data_format=fmt, **kw)
            return tape.gradient(y, t, output_gradients=gt)

        with _routes(setting):
            got = _traced(vjp, where)(tf.constant(x), tf.constant(g)).numpy()
        want = oracle.pool_vjp(x.astype(np.float64), spec, g.astype(np.float64))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(args))


@needs_nchw
def test_nchw_kernel_without_a_tape_runs_no_custom_gradient(monkeypatch):
    seen = _counting(monkeypatch, tf, "custom_gradient")
    x = tf.constant(RNG.standard_normal((2, 3, 8, 8)).astype(np.float32))
    ops = []
    real_raw = tf.raw_ops.MaxPool
    monkeypatch.setattr(tf.raw_ops, "MaxPool", lambda **kw: ops.append(kw) or real_raw(**kw))
    with _routes(f"on:{NCHW_ROUTE}"):
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


def _entry(case: conformance.Case, t):
    kw = case.kwargs
    mode = kw.pop("mode")
    if case.kind == "adaptive":
        return getattr(pa, f"adaptive_pool{case.ndim}d")(t, mode, kw.pop("output_size"), **kw)
    prefix = "global_" if case.kind == "global" else ""
    return getattr(pa, f"{prefix}pool{case.ndim}d")(t, mode, **kw)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("case", [c for c in conformance.grid("quick")
                                  if c.kind in ("pool", "adaptive", "global")
                                  and not c.gradient], ids=lambda c: c.id)
def test_conformance_grid_under_tf_function(case, setting):
    x = case.make_input()
    want = conformance.expected(case, x)
    with _routes(setting):
        got = tf.function(lambda t: _entry(case, t))(tf.constant(x))
    for w, g, what in zip(want if isinstance(want, tuple) else (want,),
                          got if isinstance(got, tuple) else (got,), ("values", "indices")):
        ok, _, message = conformance.compare(case, w, g.numpy(), what)
        if not ok and any(f in BACKEND.known_deviations for f in case.features):
            pytest.xfail(message)
        assert ok, message


@pytest.mark.parametrize("setting", ["off", "on:tensorflow.native_same"])
@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
@pytest.mark.parametrize("where", ["eager", "graph", "xla"])
def test_padding_that_equals_tf_same_on_odd_sizes_matches_the_oracle(fmt, where, setting):
    # padding 1 of a 3/2 window over 7 and 9 gives TF SAME's windows: one native SAME call
    config.routes_taken.discard("tensorflow.native_same")
    shape = (2, 7, 9, 3) if fmt == "channels_last" else (2, 3, 7, 9)
    x = RNG.integers(-2, 3, size=shape).astype(np.float32)  # ties
    x.flat[5] = np.nan
    for mode, kw in (("avg", {}), ("avg", dict(count_include_pad=True)), ("max", {})):
        spec = make_spec(mode, 3, 2, 1, data_format=fmt, ndim=2, **kw)
        g = RNG.standard_normal(spec.output_shape(shape)).astype(np.float32)

        def run(t, gt, mode=mode, kw=kw):
            with tf.GradientTape() as tape:
                tape.watch(t)
                y = pa.pool2d(t, mode, 3, 2, 1, data_format=fmt, **kw)
            return y, tape.gradient(y, t, output_gradients=gt)

        clean = np.nan_to_num(x, nan=-5.0)  # gradients: no NaN, ties remain
        with _routes(setting):
            traced = _traced(run, where)
            y, _ = traced(tf.constant(x), tf.constant(g))
            _, dx = traced(tf.constant(clean), tf.constant(g))
        np.testing.assert_allclose(y.numpy(), oracle.pool(x, spec), rtol=1e-6)
        np.testing.assert_allclose(dx.numpy(), oracle.pool_vjp(clean, spec, g),
                                   rtol=1e-5, atol=1e-6)
    if setting != "off" and where != "xla":  # avg excluding padding: SAME wherever traced
        assert "tensorflow.native_same" in config.routes_taken
