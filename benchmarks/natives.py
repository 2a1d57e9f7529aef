"""Each framework's own pooling op for a benchmark case, its tensors, sync and compiler.

``Framework.native(case)`` returns ``(fn, how)``: ``how`` is ``"exact"`` when the native op
computes the case itself, ``"closest"`` when it cannot and the case names the nearest op the
framework does have (``Case.closest``), or None when the framework has nothing comparable.
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
    compiler = ""

    def version(self) -> str:
        raise NotImplementedError

    def tensor(self, a: np.ndarray) -> Any:
        raise NotImplementedError

    def sync(self, y: Any) -> None:
        """Wait until ``y`` is computed (asynchronous frameworks)."""

    def compile(self, fn: Callable) -> Callable | None:
        return None

    def layout_ops(self, fn: Callable, x: Any) -> dict[str, int] | None:
        """Transposes and pads in the compiled graph of ``fn`` (None: not inspected)."""
        return None

    def native(self, case: Case) -> tuple[Callable, str] | None:
        raise NotImplementedError


class NumpyOnly(Framework):
    name = "numpy"

    def version(self) -> str:
        return np.__version__

    def tensor(self, a):
        return a

    def native(self, case):
        return None


class Torch(Framework):
    name, compiler = "torch", "torch.compile"

    def __init__(self) -> None:
        self.torch = importlib.import_module("torch")
        self.F = importlib.import_module("torch.nn.functional")

    def version(self):
        return self.torch.__version__

    def tensor(self, a):
        return self.torch.from_numpy(a)

    def compile(self, fn):
        return self.torch.compile(fn)

    def native(self, case):
        F, kw, how = self.F, dict(case.kwargs), "exact"
        cf = case.data_format == "channels_first"
        if case.kind == "global":
            dims = (2, 3) if cf else (1, 2)
            return (lambda x: x.mean(dim=dims)), how
        if case.kind == "adaptive":
            op = partial(F.adaptive_avg_pool2d, output_size=kw["output_size"])
        else:
            if kw.get("padding") == "same":
                kw, how = dict(case.closest), "closest"
            args = dict(kernel_size=kw["window"], stride=kw.get("stride"),
                        padding=kw.get("padding", 0), ceil_mode=kw.get("ceil_mode", False))
            if case.mode == "max":
                args["return_indices"] = kw.get("return_indices", False)
                op = partial(F.max_pool2d, **args)
            else:
                args["count_include_pad"] = kw.get("count_include_pad", False)
                op = partial(F.avg_pool2d, **args)
        if cf:
            return op, how

        def channels_last(x):  # NHWC data: an NCHW view in channels_last memory format
            y = op(x.permute(0, 3, 1, 2))
            if isinstance(y, tuple):
                return tuple(t.permute(0, 2, 3, 1) for t in y)
            return y.permute(0, 2, 3, 1)

        return channels_last, how


class TensorFlow(Framework):
    name, compiler = "tensorflow", "tf.function"

    def __init__(self) -> None:
        self.tf = importlib.import_module("tensorflow")

    def version(self):
        return self.tf.__version__

    def tensor(self, a):
        return self.tf.constant(a)

    def compile(self, fn):
        return self.tf.function(fn)

    def layout_ops(self, fn, x):
        graph = self.tf.function(fn).get_concrete_function(x).graph.as_graph_def()
        types = [n.op for n in graph.node] + [n.op for f in graph.library.function
                                              for n in f.node_def]
        return {"transpose": sum(t in ("Transpose", "ConjugateTranspose") for t in types),
                "pad": sum(t in ("Pad", "PadV2", "MirrorPad") for t in types)}

    def native(self, case):
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
        if kw.get("ceil_mode") or (case.mode == "avg" and pad not in (0, "valid", "same")):
            kw, how = dict(case.closest), "closest"
            pad = _pads(kw)
        if isinstance(pad, int) and pad and case.mode == "avg":
            pad = "SAME"  # avg takes no explicit padding
        if isinstance(pad, int):
            pad = [[0, 0], [pad, pad], [pad, pad], [0, 0]] if pad else "VALID"
            if cf and pad != "VALID":
                pad = [pad[0], pad[3], pad[1], pad[2]]
        else:
            pad = pad.upper()
        fmt = "NCHW" if cf else "NHWC"
        args = dict(ksize=kw["window"], strides=kw.get("stride") or kw["window"], padding=pad)
        if kw.get("return_indices"):  # NHWC only
            nhwc = dict(args, padding=pad if isinstance(pad, str) else "VALID")
            op = partial(tf.nn.max_pool_with_argmax, **nhwc)
            if not cf:
                return op, how
            return (lambda x: tuple(tf.transpose(t, [0, 3, 1, 2]) for t in
                                    op(tf.transpose(x, [0, 2, 3, 1])))), how
        pool = tf.nn.max_pool2d if case.mode == "max" else tf.nn.avg_pool2d
        op = partial(pool, data_format=fmt, **args)
        if cf:
            try:  # TF's CPU kernels take NCHW only for some paddings
                op(tf.zeros((1, *case.shape[1:]), dtype=case.dtype))
            except tf.errors.InvalidArgumentError:
                nhwc = dict(args, padding=[pad[0], pad[2], pad[3], pad[1]])
                return (lambda x: tf.transpose(pool(tf.transpose(x, [0, 2, 3, 1]), **nhwc),
                                               [0, 3, 1, 2])), how
        return op, how


class Jax(Framework):
    name, compiler = "jax", "jax.jit"

    def __init__(self) -> None:
        self.jax = importlib.import_module("jax")
        self.jnp = importlib.import_module("jax.numpy")
        self.lax = importlib.import_module("jax.lax")

    def version(self):
        return self.jax.__version__

    def tensor(self, a):
        return self.jax.device_put(a)

    def sync(self, y):
        self.jax.block_until_ready(y)

    def compile(self, fn):
        return self.jax.jit(fn)

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

    def native(self, case):
        jnp, lax, kw, how = self.jnp, self.lax, dict(case.kwargs), "exact"
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
        window = tuple(k if a in axes else 1 for a in range(4))
        strides = tuple(s if a in axes else 1 for a in range(4))
        pad = _pads(kw)
        if pad == "same":
            padding: Any = "SAME"
        else:
            extra = _ceil_extra(case.shape[2], k, s, pad) if kw.get("ceil_mode") else 0
            padding = tuple((pad, pad + extra) if a in axes else (0, 0) for a in range(4))
        if case.mode == "max":
            return (lambda x: lax.reduce_window(x, -jnp.inf, lax.max, window, strides,
                                                padding)), how
        if kw.get("count_include_pad") or not pad:
            size = k * k
            return (lambda x: lax.reduce_window(x, 0.0, lax.add, window, strides, padding)
                    / size), how

        def avg(x):  # flax.linen.avg_pool(count_include_pad=False): a second window sum
            total = lax.reduce_window(x, 0.0, lax.add, window, strides, padding)
            ones = jnp.ones(tuple(x.shape[a] if a in axes else 1 for a in range(4)))
            count = lax.reduce_window(ones.astype(x.dtype), 0.0, lax.add, window, strides,
                                      padding)
            return total / count

        return avg, how


class MXNet(Framework):
    name = "mxnet"

    def __init__(self) -> None:
        self.mx = importlib.import_module("mxnet")

    def version(self):
        return self.mx.__version__

    def tensor(self, a):
        return self.mx.nd.array(a, dtype=a.dtype)

    def sync(self, y):
        for t in y if isinstance(y, tuple) else (y,):
            t.wait_to_read()

    def native(self, case):
        nd, kw, how = self.mx.nd, dict(case.kwargs), "exact"
        cf = case.data_format == "channels_first"
        if case.kind == "global":
            axes = (2, 3) if cf else (1, 2)
            return (lambda x: nd.mean(x, axis=axes)), how
        if case.kind == "adaptive":
            op = partial(nd.contrib.AdaptiveAvgPooling2D, output_size=kw["output_size"])
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
            op = partial(nd.Pooling, **args)
        if cf:
            return op, how
        return (lambda x: nd.transpose(op(nd.transpose(x, (0, 3, 1, 2))), (0, 2, 3, 1))), how


FRAMEWORKS = {"numpy": NumpyOnly, "torch": Torch, "tensorflow": TensorFlow, "jax": Jax,
              "mxnet": MXNet}
