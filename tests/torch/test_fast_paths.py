"""The torch backend's size- and autograd-dependent routes, each forced and compared with the
oracle: the separable max (large eager CPU inputs without autograd), the one-call path of a
small float max, the data-dependent skip of the indices fix-ups; and the compiled graph's
layout ops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from torch._dynamo.backends.common import aot_autograd
from torch.overrides import TorchFunctionMode

import pooladapt as pa
import pooladapt.backends.torch as tb
from pooladapt import conformance, oracle
from pooladapt.layers import torch as layers
from pooladapt.spec import make_spec
from pooladapt.testing.strategies import cases_with_inputs, pool_cases

RNG = np.random.default_rng(5)
FORMATS = ("channels_first", "channels_last")


@pytest.fixture
def separable(monkeypatch):
    """Force the separable max on every size; count its calls."""
    calls = []
    real = tb._separable_max

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(tb, "_SEPARABLE_MIN", 0)
    monkeypatch.setattr(tb, "_separable_max", spy)
    return calls


def _special(shape, dtype: str) -> np.ndarray:
    """Small integers (many ties) with NaN, +-inf (floats) or the integer extremes sprinkled."""
    x = RNG.integers(-3, 4, size=shape).astype(conformance.np_dtype(dtype))
    flat = x.reshape(-1)
    cells = RNG.choice(flat.size, size=max(3, flat.size // 10), replace=False)
    if dtype.startswith(("float", "bfloat")):
        flat[cells[0::3]] = np.nan
        flat[cells[1::3]] = -np.inf
        flat[cells[2::3]] = np.inf
    else:
        info = np.iinfo(x.dtype)
        flat[cells[0::2]] = info.min
        flat[cells[1::2]] = info.max
    return x


def _layout(shape_cf, fmt):
    n, c, *spatial = shape_cf
    return tuple(shape_cf) if fmt == "channels_first" else (n, *spatial, c)


def _assert_equal(got: torch.Tensor, want: np.ndarray, dtype: str = "float32") -> None:
    """Bit-exact (a max picks an input value; the oracle gives floats as float64)."""
    got_np = tb.BACKEND.to_numpy(got)
    assert got_np.dtype == conformance.np_dtype(dtype) and got_np.shape == want.shape
    if want.dtype.kind == "f":
        got_np = got_np.astype(np.float64)
    np.testing.assert_array_equal(got_np, want)  # NaN == NaN here


# ------------------------------------------------------------------ the separable max

GEOMETRIES = [  # (ndim, arguments)
    (2, dict(window=3, stride=2, padding=1)),  # the ResNet stem
    (2, dict(window=2)),
    (2, dict(window=3, stride=2, padding="same")),  # pads (0, 1)
    (2, dict(window=3, stride=2, ceil_mode=True)),
    (2, dict(window=(4, 3), stride=(3, 1), padding=((3, 0), (0, 2)), ceil_mode=True)),
    (2, dict(window=3, stride=1, padding=2, dilation=(2, 1))),  # all-padding windows
    (2, dict(window=(1, 3), stride=(2, 2))),  # one tap in a dim: a view, not a copy
    (2, dict(window=10, stride=2)),  # the photo case: NCHW unfolds its windows
    (2, dict(window=(4, 5), stride=(1, 3), dilation=(2, 1))),  # unfolds, dilated
    (1, dict(window=4, stride=3, padding="same")),
    (1, dict(window=5, stride=2, dilation=2)),
    (3, dict(window=2, stride=(1, 2, 2), padding=((1, 0), (0, 1), (1, 1)))),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("ndim", "kw"), GEOMETRIES, ids=str)
def test_separable_max_equals_oracle(separable, ndim, kw, fmt):
    spec = make_spec("max", **kw, ndim=ndim, data_format=fmt)
    # three channels: NHWC stays separable too (from four on torch's channels_last kernel)
    x_np = _special(_layout((2, 3, *(13, 12, 7)[:ndim]), fmt), "float32")
    got = tb.BACKEND.pool(torch.from_numpy(x_np), spec.plan(x_np.shape))
    assert separable, "the separable max was not taken"
    _assert_equal(got, oracle.pool(x_np, spec))
    if fmt == "channels_last":
        assert got.is_contiguous()


@settings(max_examples=max(20, settings().max_examples // 2))
@given(example=cases_with_inputs(pool_cases()))
def test_separable_max_equals_oracle_on_random_specs(example):
    """The conformance fuzz's max cases (padding forms, ceil mode, dilation, every dtype,
    NaN/inf/extremes) through the separable max, forced on every size."""
    case, x_np = example  # any mode's geometry, pooled as a max without indices
    kw = {k: v for k, v in case.kwargs.items()
          if k not in ("mode", "p", "count_include_pad", "return_indices")}
    spec = make_spec("max", **kw, ndim=case.ndim)
    calls = []
    real = tb._separable_max
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tb, "_SEPARABLE_MIN", 0)
        mp.setattr(tb, "_separable_max", lambda *a: calls.append(1) or real(*a))
        got = tb.BACKEND.pool(tb.BACKEND.from_numpy(x_np), spec.plan(x_np.shape))
    want = oracle.pool(x_np, spec)
    if x_np.shape[1 if spec.channels_first else -1] and x_np.shape[0]:
        assert calls, "the separable max was not taken"
    _assert_equal(got, want, case.dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64", "int8", "uint8", "int16",
                                   "int32", "int64", "uint16", "uint32", "uint64"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_separable_max_is_exact_in_every_dtype(separable, dtype, fmt):
    spec = make_spec("max", 3, 2, "same", ndim=2, data_format=fmt)
    x_np = _special(_layout((2, 2, 11, 10), fmt), dtype)
    got = tb.BACKEND.pool(tb.BACKEND.from_numpy(x_np), spec.plan(x_np.shape))
    assert separable
    _assert_equal(got, oracle.pool(x_np, spec), dtype)


def test_large_contiguous_nchw_takes_the_separable_max_without_copies_or_padding():
    x_np = _special((2, 8, 48, 48), "float32")  # 36864 cells: above the threshold
    x = torch.from_numpy(x_np)
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    with _Recorder() as rec:
        y = tb.BACKEND.pool(x, spec.plan(x.shape))
    assert "maximum" in rec.names and "max_pool2d" not in rec.names, rec.names
    assert not {"pad", "contiguous", "clone", "copy_", "permute"} & set(rec.names), rec.names
    assert y.is_contiguous()
    _assert_equal(y, oracle.pool(x_np, spec))
    assert torch.equal(y.nan_to_num(), F.max_pool2d(x, 3, 2, 1).nan_to_num())


def test_large_windows_inside_the_input_reduce_by_unfolding(separable):
    x_np = _special((1, 3, 27, 40), "float32")
    spec = make_spec("max", 10, 2, ndim=2, data_format="channels_first")
    with _Recorder() as rec:
        y = tb.BACKEND.pool(torch.from_numpy(x_np), spec.plan(x_np.shape))
    assert rec.names.count("amax") == 2 and "maximum" not in rec.names, rec.names
    _assert_equal(y, oracle.pool(x_np, spec))


def test_channels_last_with_many_channels_keeps_torchs_kernel(separable):
    x = torch.randn(2, 9, 8, 4)  # NHWC, four channels
    y = pa.pool2d(x, "max", 3, 2, 1, data_format="channels_last")
    assert not separable
    assert torch.equal(y, F.max_pool2d(x.permute(0, 3, 1, 2), 3, 2, 1).permute(0, 2, 3, 1))


def test_non_contiguous_input(separable):
    base = torch.from_numpy(_special((2, 3, 14, 18), "float32"))
    x = base[:, :, 1::2, ::3]  # strided in both spatial dims
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    got = tb.BACKEND.pool(x, spec.plan(x.shape))
    assert separable
    _assert_equal(got, oracle.pool(x.numpy(), spec))


@pytest.mark.parametrize("fmt", FORMATS)
def test_autograd_keeps_torchs_kernel_and_the_first_maximum_gets_the_gradient(separable, fmt):
    x_np = RNG.integers(-2, 3, size=_layout((2, 3, 9, 8), fmt)).astype(np.float64)  # ties
    spec = make_spec("max", 3, 2, "same", ndim=2, data_format=fmt)
    g_np = RNG.standard_normal(spec.output_shape(x_np.shape))
    x = torch.from_numpy(x_np).requires_grad_(True)
    y = tb.BACKEND.pool(x, spec.plan(x.shape))
    assert not separable and y.requires_grad  # torch.maximum would split a tie's gradient
    y.backward(torch.from_numpy(g_np))
    np.testing.assert_array_equal(x.grad.numpy(), oracle.pool_vjp(x_np, spec, g_np))
    with torch.no_grad():  # nothing recorded: the separable max again
        got = tb.BACKEND.pool(x, spec.plan(x.shape))
    assert separable and not got.requires_grad
    _assert_equal(got, oracle.pool(x_np, spec), "float64")


def test_torch_compile_keeps_torchs_kernel(separable):
    torch._dynamo.reset()
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    x = torch.from_numpy(_special((2, 3, 9, 8), "float32"))
    got = torch.compile(lambda t: tb.pool_with_spec(t, spec), fullgraph=True)(x)
    assert not separable
    _assert_equal(got, oracle.pool(x.numpy(), spec))


# ------------------------------------------------------------------ the small float max


class _Recorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []
        self.pooled: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        self.names.append(name)
        if name == "max_pool2d":
            self.pooled.append(args[0])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("channels", [1, 3])
def test_small_channels_last_max_is_one_native_call(channels):
    x = torch.randn(2, 5, 6, channels)
    spec = make_spec("max", 2, ndim=2, data_format="channels_last")
    with _Recorder() as rec:
        y = tb.BACKEND.pool(x, spec.plan(x.shape))
    assert rec.names.count("max_pool2d") == 1 and "maximum" not in rec.names, rec.names
    assert not {"contiguous", "clone", "copy_", "pad"} & set(rec.names), rec.names
    if channels == 1:  # NCHW strides: torch's plain kernel, not the channels_last one
        assert rec.pooled[0].stride() == (30, 30, 6, 1)
    assert y.is_contiguous() and y.shape == (2, 2, 3, channels)
    assert torch.equal(y, F.max_pool2d(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1))
    _assert_equal(y, oracle.pool(x.numpy(), spec))


def test_small_max_with_autograd_and_odd_strides():
    x_np = RNG.integers(-2, 3, size=(1, 8, 6, 1)).astype(np.float64)
    spec = make_spec("max", 2, ndim=2, data_format="channels_last")
    x = torch.from_numpy(x_np).requires_grad_(True)
    y = tb.BACKEND.pool(x, spec.plan(x.shape))
    g_np = RNG.standard_normal(y.shape)
    y.backward(torch.from_numpy(g_np))
    np.testing.assert_array_equal(x.grad.numpy(), oracle.pool_vjp(x_np, spec, g_np))
    strided = torch.from_numpy(_special((1, 8, 12, 2), "float32"))[..., ::2, :1]
    got = tb.BACKEND.pool(strided, spec.plan(strided.shape))
    _assert_equal(got, oracle.pool(strided.numpy(), spec))


# ------------------------------------------------------------------ indices


@pytest.mark.parametrize("dtype", ["float32", "float16", "int16"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_indices_fixups_still_run_where_needed(dtype, fmt):
    # NaN and -inf (the dtype's minimum for integers) in windows, some of them all padding
    x_np = _special(_layout((2, 8, 24, 24), fmt), dtype)
    spec = make_spec("max", 3, 2, 2, dilation=2, return_indices=True, ndim=2, data_format=fmt)
    y, idx = tb.BACKEND.pool(tb.BACKEND.from_numpy(x_np), spec.plan(x_np.shape))
    want_y, want_idx = oracle.pool(x_np, spec)
    _assert_equal(y, want_y, dtype)
    np.testing.assert_array_equal(idx.numpy(), want_idx)
    clean = np.abs(RNG.standard_normal(x_np.shape)).astype(x_np.dtype)  # nothing to fix
    y, idx = tb.BACKEND.pool(tb.BACKEND.from_numpy(clean), spec.plan(clean.shape))
    want_y, want_idx = oracle.pool(clean, spec)
    _assert_equal(y, want_y, dtype)
    np.testing.assert_array_equal(idx.numpy(), want_idx)


# ------------------------------------------------------------------ compiled graphs


def _aten_ops(fn, x) -> list[str]:
    """The aten ops of ``fn``'s forward graph under torch.compile."""
    torch._dynamo.reset()
    ops: list[str] = []

    def record(gm, inputs):
        ops.extend(str(n.target).removeprefix("aten.").split(".")[0]
                   for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    torch.compile(fn, backend=aot_autograd(fw_compiler=record), fullgraph=True)(x)
    return ops


LAYOUT = {"permute", "transpose", "t", "clone", "contiguous", "copy", "_to_copy",
          "constant_pad_nd", "pad", "reflection_pad2d"}


@pytest.mark.parametrize(("mode", "kw", "pads"), [
    ("max", dict(window=3, stride=2, padding=1), 0),
    ("max", dict(window=3, stride=2, padding="same"), 0),  # low pad + ceil mode
    ("max", dict(window=3, stride=2, padding=((1, 0), (0, 1))), 0),  # extra windows cropped
    ("avg", dict(window=3, stride=2, padding="same"), 0),
    ("max", dict(window=3, padding=((2, 0), (0, 0))), 1),  # more than half the window
])
@pytest.mark.parametrize("fmt", FORMATS)
def test_compiled_graph_has_no_layout_op_the_plan_does_not_need(mode, kw, pads, fmt):
    spec = make_spec(mode, **kw, ndim=2, data_format=fmt)
    x = torch.randn(2, 3, 12, 11) if fmt == "channels_first" else torch.randn(2, 12, 11, 3)
    layer = (layers.MaxPool2d if mode == "max" else layers.AvgPool2d)
    for fn in (lambda t: tb.pool_with_spec(t, spec), _layer(layer, kw, fmt)):
        ops = _aten_ops(fn, x)
        # channels_last: one NC* view of the input and one of the output, no copy
        assert ops.count("permute") == (0 if fmt == "channels_first" else 2), ops
        assert ops.count("constant_pad_nd") == pads, ops
        assert not (LAYOUT - {"permute", "constant_pad_nd"}) & set(ops), ops


def _layer(cls, kw, fmt):
    kw = dict(kw)
    kernel, stride, padding = kw.pop("window"), kw.pop("stride", None), kw.pop("padding")
    if cls is layers.AvgPool2d:
        kw["count_include_pad"] = False  # as in the spec (torch's layer counts it by default)
    return cls(kernel, stride, padding, data_format=fmt, **kw)
