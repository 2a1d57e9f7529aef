"""Each framework's own pooling op for a benchmark case, its tensors, sync and compilers.

``Framework.native(case)`` returns ``(fn, how)``: ``how`` is ``"exact"`` when the native op
computes the case itself, ``"closest"`` when it cannot and the case names the nearest op the
framework does have (``Case.closest``), or None when the framework has nothing comparable.
``forward(fn, mode, ...)`` and ``train(fn, mode, ..., w)`` give a contender's call in a mode
(``"eager"`` or one of ``compilers``): the pooled output, or the gradient of
``sum(fn(x) * w)`` with respect to ``x`` written as each framework's users write it.
Frameworks are imported here only, each in its own benchmark process.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from benchmarks.cases import Case


def _pads(kw: dict[str, Any]) -> int | str:
    return kw.get("padding", 0)


def _ceil_extra(n: int, k: int, s: int, pad: int) -> int:
    """Cells past the padded input that ceil mode's last window reaches (square inputs)."""
    out = -(-(n + 2 * pad - k) // s) + 1
    return max(0, (out - 1) * s + k - (n + 2 * pad))


class Framework:
    name = ""
    compilers: tuple[str, ...] = ()  # modes besides "eager"
    train_dtypes: tuple[str, ...] = ()  # empty: no autograd (inference only)
    pooladapt_backend: str | None = None  # backend= for pooladapt (NumPy-array frameworks)
    drops_nan = False  # its max op suppresses NaN: exact on NaN-free data only

    def version(self) -> str:
        raise NotImplementedError

    def threads(self) -> int | None:
        """The framework's intra-op thread count, where it says."""
        return None

    def finite_only(self, case: Case) -> bool:
        """Whether the native op matches the case on NaN-free data only (its max drops NaN,
        so pooladapt pays for exact NaN propagation)."""
        return self.drops_nan and case.kind == "pool" and case.mode == "max"

    def tensor(self, a: np.ndarray, dtype: str | None = None) -> Any:
        raise NotImplementedError

    def sync(self, y: Any) -> None:
        """Wait until ``y`` is computed (asynchronous frameworks)."""

    def reset(self) -> None:
        """Forget compiled programs (each record compiles afresh, at one shape)."""

    def forward(self, fn: Callable, mode: str, case: Case, who: str) -> Callable:
        return fn

    def trainable(self, t: Any) -> Any:
        """``t`` made an input that gradients are taken with respect to."""
        return t

    def train(self, fn: Callable, mode: str, case: Case, who: str, w: Any) -> Callable:
        raise NotImplementedError

    def layout_ops(self, fn: Callable, x: Any) -> dict[str, int] | None:
        """Transposes and pads in the compiled graph of ``fn`` (None: not inspected)."""
        return None

    def native(self, case: Case, mode: str = "eager") -> tuple[Callable, str] | None:
        raise NotImplementedError


class NumpyOnly(Framework):
    name = "numpy"

    def version(self) -> str:
        return np.__version__

    def tensor(self, a, dtype=None):
        return a

    def native(self, case, mode="eager"):
        return None


class Torch(Framework):
    name, compilers = "torch", ("torch.compile",)
    train_dtypes = ("float32", "bfloat16", "float16")

    def __init__(self) -> None:
        self.torch = importlib.import_module("torch")
        self.F = importlib.import_module("torch.nn.functional")

    def version(self):
        return self.torch.__version__

    def threads(self):
        return self.torch.get_num_threads()

    def tensor(self, a, dtype=None):
        t = self.torch.from_numpy(a)
        return t if dtype in (None, str(a.dtype)) else t.to(getattr(self.torch, dtype))

    def reset(self):
        self.torch._dynamo.reset()

    def forward(self, fn, mode, case, who):
        return fn if mode == "eager" else self.torch.compile(fn)

    def trainable(self, t):
        return t.detach().requires_grad_(True)

    def train(self, fn, mode, case, who, w):
        f, grad = self.forward(fn, mode, case, who), self.torch.autograd.grad
        return lambda x: grad(f(x), x, w)[0]  # = d sum(f(x) * w) / dx

    def native(self, case, mode="eager"):
        F, kw, how = self.F, dict(case.kwargs), "exact"
        cf = case.data_format == "channels_first"
        if case.kind == "global":
            dims = (2, 3) if cf else (1, 2)
            return (lambda x: x.mean(dim=dims)), how
        if case.kind == "adaptive":
            op = partial(F.adaptive_avg_pool2d, output_size=kw["output_size"])
        else:
            if kw.get("padding") == "same" or (case.mode == "lp" and kw.get("padding")):
                kw, how = dict(case.closest), "closest"
            args = dict(kernel_size=kw["window"], stride=kw.get("stride"),
                        ceil_mode=kw.get("ceil_mode", False))
            if case.mode == "lp":
                op = partial(F.lp_pool2d, norm_type=kw.get("p", 2), **args)
            elif case.mode == "max":
                args["return_indices"] = kw.get("return_indices", False)
                op = partial(F.max_pool2d, padding=kw.get("padding", 0), **args)
            else:
                args["count_include_pad"] = kw.get("count_include_pad", False)
                op = partial(F.avg_pool2d, padding=kw.get("padding", 0), **args)
        if cf:
            return op, how

        def channels_last(x):  # NHWC data: an NCHW view in channels_last memory format
            y = op(x.permute(0, 3, 1, 2))
            if isinstance(y, tuple):
                return tuple(t.permute(0, 2, 3, 1) for t in y)
            return y.permute(0, 2, 3, 1)

        return channels_last, how


class TensorFlow(Framework):
    name, compilers = "tensorflow", ("tf.function", "tf.function+XLA")
    train_dtypes = ("float32", "bfloat16", "float16")
    drops_nan = True

    def __init__(self) -> None:
        self.tf = importlib.import_module("tensorflow")

    def version(self):
        return self.tf.__version__

    def threads(self):
        return self.tf.config.threading.get_intra_op_parallelism_threads() or None

    def tensor(self, a, dtype=None):
        t = self.tf.constant(a)
        return t if dtype in (None, str(a.dtype)) else self.tf.cast(t, dtype)

    def _wrap(self, fn, mode):
        if mode == "eager":
            return fn
        return self.tf.function(fn, jit_compile=mode.endswith("XLA"))

    def forward(self, fn, mode, case, who):
        return self._wrap(fn, mode)

    def train(self, fn, mode, case, who, w):
        tf = self.tf

        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fn(x)
            return tape.gradient(y, x, output_gradients=w)

        return self._wrap(step, mode)

    def layout_ops(self, fn, x):
        graph = self.tf.function(fn).get_concrete_function(x).graph.as_graph_def()
        types = [n.op for n in graph.node] + [n.op for f in graph.library.function
                                              for n in f.node_def]
        return {"transpose": sum(t in ("Transpose", "ConjugateTranspose") for t in types),
                "pad": sum(t in ("Pad", "PadV2", "MirrorPad") for t in types)}

    def _runs(self, op, case) -> bool:
        """Whether TF's CPU kernels take ``op`` on this layout (and its gradient, to train)."""
        tf = self.tf
        z = tf.zeros((1, *case.input_shape()[1:]), dtype=case.dtype)
        try:
            with tf.GradientTape() as tape:
                tape.watch(z)
                y = op(z)
            if case.phase == "train":
                tape.gradient(y, z)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
            return False
        return True

    def native(self, case, mode="eager"):
        tf, kw, how = self.tf, dict(case.kwargs), "exact"
        cf = case.data_format == "channels_first"
        if case.kind == "global":
            axes = [2, 3] if cf else [1, 2]
            return (lambda x: tf.reduce_mean(x, axis=axes)), how
        if case.kind == "adaptive":
            if case.closest is None:
                return None
            kw, how = dict(case.closest), "closest"
        pad = _pads(kw)
        if case.mode == "lp":
            how = "closest"  # no lp op: sqrt of the window sum of squares, as one writes it
        if kw.get("ceil_mode") or (case.mode == "avg" and pad not in (0, "valid", "same")):
            kw, how = dict(case.closest), "closest"
            pad = _pads(kw)
        if isinstance(pad, int) and pad and case.mode != "max":
            pad = "SAME"  # avg takes no explicit padding
        fmt = "NCHW" if cf else "NHWC"
        if isinstance(pad, int) and pad and mode.endswith("XLA"):
            # XLA takes no explicit pooling padding: pad with -inf, then pool VALID
            pads = [[0, 0], [0, 0], [pad, pad], [pad, pad]] if cf else [
                [0, 0], [pad, pad], [pad, pad], [0, 0]]
            op = partial(tf.nn.max_pool2d, ksize=kw["window"], data_format=fmt,
                         strides=kw.get("stride") or kw["window"], padding="VALID")
            return (lambda x: op(tf.pad(x, pads, constant_values=float("-inf")))), "closest"
        if isinstance(pad, int):
            pad = [[0, 0], [pad, pad], [pad, pad], [0, 0]] if pad else "VALID"
            if cf and pad != "VALID":
                pad = [pad[0], pad[3], pad[1], pad[2]]
        else:
            pad = pad.upper()
        args = dict(ksize=kw["window"], strides=kw.get("stride") or kw["window"], padding=pad)
        if kw.get("return_indices"):  # NHWC only
            nhwc = dict(args, padding=pad if isinstance(pad, str) else "VALID")
            op = partial(tf.nn.max_pool_with_argmax, **nhwc)
            if not cf:
                return op, how
            return (lambda x: tuple(tf.transpose(t, [0, 3, 1, 2]) for t in
                                    op(tf.transpose(x, [0, 2, 3, 1])))), how
        if case.mode == "lp":
            k2 = float(kw["window"] ** 2)

            def pool(x, **a):
                return tf.sqrt(tf.nn.avg_pool2d(tf.square(x), **a) * tf.cast(k2, x.dtype))
        else:
            pool = tf.nn.max_pool2d if case.mode == "max" else tf.nn.avg_pool2d
        op = partial(pool, data_format=fmt, **args)
        if cf and not self._runs(op, case):  # CPU kernels take NCHW only for some paddings
            nhwc = dict(args, data_format="NHWC",
                        padding=pad if isinstance(pad, str) else [pad[0], pad[2], pad[3], pad[1]])
            return (lambda x: tf.transpose(pool(tf.transpose(x, [0, 2, 3, 1]), **nhwc),
                                           [0, 3, 1, 2])), how
        return op, how


class Jax(Framework):
    name, compilers = "jax", ("jax.jit",)
    train_dtypes = ("float32", "bfloat16", "float16")

    def __init__(self) -> None:
        self.jax = importlib.import_module("jax")
        self.jnp = importlib.import_module("jax.numpy")
        self.lax = importlib.import_module("jax.lax")
        self.linen = importlib.import_module("flax.linen")

    def version(self):
        return self.jax.__version__

    def tensor(self, a, dtype=None):
        t = self.jax.device_put(a)
        return t if dtype in (None, str(a.dtype)) else t.astype(dtype)

    def sync(self, y):
        self.jax.block_until_ready(y)

    def forward(self, fn, mode, case, who):
        return fn if mode == "eager" else self.jax.jit(fn)

    def train(self, fn, mode, case, who, w):
        jnp = self.jnp
        grad = self.jax.grad(lambda x, w: jnp.sum(fn(x) * w))
        if mode != "eager":  # w an argument: a constant would fold a linear op's gradient away
            grad = self.jax.jit(grad)
        return lambda x: grad(x, w)

    def layout_ops(self, fn, x):
        counts = {"transpose": 0, "pad": 0}
        jax_core = importlib.import_module("jax.extend.core")

        def walk(jaxpr):
            for eqn in jaxpr.eqns:
                if eqn.primitive.name in counts:
                    counts[eqn.primitive.name] += 1
                for sub in jax_core.jaxprs_in_params(eqn.params):
                    walk(sub)

        walk(self.jax.make_jaxpr(fn)(x).jaxpr)
        return counts

    def native(self, case, mode="eager"):
        """``flax.linen.max_pool``/``avg_pool`` on channels-last data (the layout Flax pools),
        ``lax.reduce_window`` on channels-first data and for lp (Flax has no lp pool)."""
        jnp, lax, nn, kw, how = self.jnp, self.lax, self.linen, dict(case.kwargs), "exact"
        cf = case.data_format == "channels_first"
        axes = (2, 3) if cf else (1, 2)
        if case.kind == "global":
            return (lambda x: jnp.mean(x, axis=axes)), how
        if case.kind == "adaptive":
            if case.closest is None:
                return None
            kw, how = dict(case.closest), "closest"
        if kw.get("return_indices"):
            kw, how = {k: v for k, v in kw.items() if k != "return_indices"}, "closest"
        k = kw["window"]
        s = kw.get("stride") or k
        pad = _pads(kw)
        if pad == "same":
            spatial: Any = "SAME"
        else:
            extra = _ceil_extra(case.shape[2], k, s, pad) if kw.get("ceil_mode") else 0
            spatial = ((pad, pad + extra),) * 2
        include = bool(kw.get("count_include_pad"))
        if not cf and case.mode != "lp":
            if case.mode == "max":
                return partial(nn.max_pool, window_shape=(k, k), strides=(s, s),
                               padding=spatial), how
            return partial(nn.avg_pool, window_shape=(k, k), strides=(s, s), padding=spatial,
                           count_include_pad=include), how
        window = tuple(k if a in axes else 1 for a in range(4))
        strides = tuple(s if a in axes else 1 for a in range(4))
        padding = spatial if spatial == "SAME" else tuple(
            spatial[0] if a in axes else (0, 0) for a in range(4))

        def window_sum(x):
            return lax.reduce_window(x, 0.0, lax.add, window, strides,
                                     padding)

        if case.mode == "max":
            return (lambda x: lax.reduce_window(x, -np.inf, lax.max,
                                                window, strides, padding)), how
        if case.mode == "lp":
            return (lambda x: jnp.sqrt(window_sum(x * x))), how
        if include or not pad:
            return (lambda x: window_sum(x) / (k * k)), how

        def avg(x):  # what flax.linen.avg_pool(count_include_pad=False) does: two window sums
            ones = jnp.ones(tuple(x.shape[a] if a in axes else 1 for a in range(4)), x.dtype)
            return window_sum(x) / window_sum(ones)

        return avg, how


class MXNet(Framework):
    name, compilers = "mxnet", ("hybridize",)
    train_dtypes = ("float32", "float16")  # MXNet's mixed precision is float16
    drops_nan = True

    def __init__(self) -> None:
        self.mx = importlib.import_module("mxnet")

    def version(self):
        return self.mx.__version__

    def tensor(self, a, dtype=None):
        return self.mx.nd.array(a, dtype=dtype or a.dtype)

    def sync(self, y):
        for t in y if isinstance(y, tuple) else (y,):
            t.wait_to_read()

    def forward(self, fn, mode, case, who):
        """Eager ``fn``; hybridized, a Gluon block: pooladapt's drop-in layer
        (``pooladapt.layers.mxnet``), or a block calling ``F.Pooling`` as the native op."""
        if mode == "eager":
            return fn
        block = self._block(self._native(case)[0]) if who == "native" else self._layer(case)
        block.hybridize()
        return block

    def trainable(self, t):
        t.attach_grad()
        return t

    def train(self, fn, mode, case, who, w):
        f, autograd = self.forward(fn, mode, case, who), self.mx.autograd

        def step(x):
            with autograd.record():
                y = f(x)
            y.backward(w)
            return x.grad

        return step

    def _block(self, make: Callable) -> Any:
        class Native(self.mx.gluon.HybridBlock):
            def hybrid_forward(self, F, x):
                return make(F)(x)

        return Native()

    def _layer(self, case: Case) -> Any:
        layers = importlib.import_module("pooladapt.layers.mxnet")
        kw = dict(case.kwargs)
        if case.kind != "pool" or case.mode == "lp" or kw.get("return_indices"):
            raise NotImplementedError(f"no Gluon layer for {case.kind} {case.mode}")
        args = dict(pool_size=kw["window"], strides=kw.get("stride"),
                    padding=kw.get("padding", 0), ceil_mode=kw.get("ceil_mode", False),
                    layout="NCHW" if case.data_format == "channels_first" else "NHWC")
        if case.mode == "max":
            return layers.MaxPool2D(**args)
        return layers.AvgPool2D(**args, count_include_pad=kw.get("count_include_pad", False))

    def _native(self, case: Case) -> tuple[Callable, str]:
        """``(make, how)``: ``make(F)`` is the native op on ``F`` (``nd``, or ``sym`` in a
        hybridized graph)."""
        kw, how = dict(case.kwargs), "exact"
        cf = case.data_format == "channels_first"
        if case.kind == "global":
            axes = (2, 3) if cf else (1, 2)
            return (lambda F: partial(F.mean, axis=axes)), how
        if case.kind == "adaptive":
            def make(F):
                return partial(F.contrib.AdaptiveAvgPooling2D, output_size=kw["output_size"])
        else:
            if kw.get("padding") == "same" or kw.get("return_indices"):
                kw, how = dict(case.closest or {k: v for k, v in kw.items()
                                                if k != "return_indices"}), "closest"
            k, pad = kw["window"], kw.get("padding", 0)
            args = dict(kernel=(k, k), stride=(kw.get("stride") or k,) * 2, pad=(pad, pad),
                        pool_type=case.mode,
                        pooling_convention="full" if kw.get("ceil_mode") else "valid")
            if case.mode == "avg":
                args["count_include_pad"] = kw.get("count_include_pad", False)
            if case.mode == "lp":
                args["p_value"] = kw.get("p", 2)

            def make(F):
                return partial(F.Pooling, **args)
        if cf:
            return make, how

        def make_nhwc(F):
            op = make(F)
            return lambda x: F.transpose(op(F.transpose(x, (0, 3, 1, 2))), (0, 2, 3, 1))

        return make_nhwc, how

    def native(self, case, mode="eager"):
        make, how = self._native(case)
        return make(self.mx.nd), how


class OnnxRuntime(Framework):
    """onnxruntime: NumPy arrays in and out, inference only; the native op is the case's ONNX
    node (with Transposes around it for channels-last data) in its own session."""

    name, pooladapt_backend = "onnxruntime", "onnxruntime"

    def __init__(self) -> None:
        self.ort = importlib.import_module("onnxruntime")
        self.onnx = importlib.import_module("onnx")

    def version(self):
        return self.ort.__version__

    def tensor(self, a, dtype=None):
        return a

    def native(self, case, mode="eager"):
        helper, kw, how = self.onnx.helper, dict(case.kwargs), "exact"
        cf = case.data_format == "channels_first"
        if case.kind == "adaptive":
            if case.closest is None:
                return None
            kw, how = dict(case.closest), "closest"
        nodes, src = [], "x"
        if not cf:
            nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]))
            src = "xt"
        outputs = ["p"]
        if case.kind == "global":
            nodes += [helper.make_node("GlobalAveragePool", [src], ["g"]),
                      helper.make_node("Flatten", ["g"], ["y"], axis=1)]
        else:
            k = kw["window"]
            attrs: dict[str, Any] = dict(kernel_shape=[k, k], strides=[kw.get("stride") or k] * 2)
            pad = _pads(kw)
            if pad == "same":
                attrs["auto_pad"] = "SAME_UPPER"
            elif pad:
                attrs["pads"] = [pad] * 4
            if case.mode != "lp":
                attrs["ceil_mode"] = int(kw.get("ceil_mode", False))
            if case.mode == "avg":
                attrs["count_include_pad"] = int(kw.get("count_include_pad", False))
            if case.mode == "lp":
                attrs["p"] = int(kw.get("p", 2))
            if kw.get("return_indices"):
                outputs, how = ["p", "i"], "closest"  # ONNX's indices count N and C as well
            op = {"max": "MaxPool", "avg": "AveragePool", "lp": "LpPool"}[case.mode]
            nodes.append(helper.make_node(op, [src], outputs, **attrs))
            if cf:
                nodes[-1].output[0] = "y"
            else:
                nodes.append(helper.make_node("Transpose", ["p"], ["y"], perm=[0, 2, 3, 1]))
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(case.dtype))
        names = ["y"] + (["i"] if len(outputs) > 1 else [])
        graph = helper.make_graph(
            nodes, "native", [helper.make_tensor_value_info("x", elem, case.input_shape())],
            [helper.make_tensor_value_info(n, elem if n == "y" else self.onnx.TensorProto.INT64,
                                           None) for n in names])
        opsets = [helper.make_opsetid("", 21)]
        model = helper.make_model(graph, opset_imports=opsets,
                                  ir_version=helper.find_min_ir_version_for(opsets))
        session = self.ort.InferenceSession(model.SerializeToString(),
                                            providers=["CPUExecutionProvider"])
        if len(names) > 1:
            return (lambda x: tuple(session.run(names, {"x": x}))), how
        return (lambda x: session.run(names, {"x": x})[0]), how


FRAMEWORKS = {"numpy": NumpyOnly, "torch": Torch, "tensorflow": TensorFlow, "jax": Jax,
              "mxnet": MXNet, "onnxruntime": OnnxRuntime}
