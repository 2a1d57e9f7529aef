"""PyTorch specifics of the backend: tensors in and out, autograd, torch.compile, integers,
memory formats, the native path, and the torch quirks the backend works around."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import pooladapt as pa
from pooladapt import conformance, oracle
from pooladapt.backends.base import EMULATED, FEATURES, NATIVE
from pooladapt.backends.torch import BACKEND
from pooladapt.spec import make_adaptive_spec, make_spec

RNG = np.random.default_rng(11)
CF = dict(data_format="channels_first")


def _normal(shape, dtype="float32") -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


# ------------------------------------------------------------------ tensors in, tensors out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_torch_tensor_in_torch_tensor_out_same_dtype_and_device(dtype):
    x = torch.randn(2, 3, 7, 6, dtype=dtype)
    for mode in ("max", "avg", "lp"):
        y = pa.pool2d(x, mode, 3, 2, "same", **CF)
        assert isinstance(y, torch.Tensor) and y.dtype == dtype and y.device == x.device
        assert y.shape == (2, 3, 4, 3)
    y, idx = pa.pool2d(x, "max", 3, 2, 1, return_indices=True, **CF)
    assert idx.dtype == torch.int64 and idx.shape == y.shape
    up = pa.max_unpool2d(y, idx, **CF)
    assert isinstance(up, torch.Tensor) and up.dtype == dtype and up.shape == x.shape
    assert pa.global_pool2d(x, "avg", **CF).shape == (2, 3)
    a = pa.adaptive_pool2d(x, "avg", (4, 5), **CF)
    assert isinstance(a, torch.Tensor) and a.dtype == dtype and a.shape == (2, 3, 4, 5)


@pytest.mark.parametrize("other", ["jax", "numpy", "tensorflow"])
def test_torch_tensor_with_another_backend_is_a_type_error(other):
    x = torch.ones(1, 1, 4, 4)
    with pytest.raises(TypeError, match="torch tensor"):
        pa.pool2d(x, "max", 2, backend=other)
    with pytest.raises(TypeError, match="torch tensor"):
        pa.global_pool2d(x, "max", backend=other)


def test_avg_on_integer_tensor_is_a_type_error_naming_the_cast():
    with pytest.raises(TypeError, match="cast"):
        pa.pool2d(torch.ones(1, 1, 4, 4, dtype=torch.int32), "avg", 2)


def test_bfloat16_round_trips_through_numpy():
    bf16 = conformance.bfloat16_dtype()
    a = np.array([[1.5, -2.25, 3e38, 1e-38]], dtype=bf16)
    t = BACKEND.from_numpy(a)
    assert t.dtype == torch.bfloat16
    assert t.float().tolist() == a.astype(np.float32).tolist()
    back = BACKEND.to_numpy(t)
    assert back.dtype == bf16 and back.tobytes() == a.tobytes()
    assert BACKEND.dtype_name(t) == "bfloat16"


def test_numpy_input_through_the_torch_backend_gives_numpy():
    x = _normal((2, 6, 5, 3))
    y = pa.pool2d(x, "avg", 3, 2, "same", backend="torch")
    want = oracle.pool(x, make_spec("avg", 3, 2, "same", ndim=2, data_format=None))
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=2e-6, atol=2e-6)


# ------------------------------------------------------------------ memory formats


def test_channels_last_input_is_pooled_without_a_layout_copy():
    x = torch.randn(2, 9, 8, 16)  # NHWC, contiguous
    calls = []

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    with Spy():
        y = pa.pool2d(x, "max", 3, 2, 1, data_format="channels_last")
    # (permute makes the NC* view; a copy would show as contiguous, clone or copy_)
    assert not [c for c in calls if c in ("contiguous", "clone", "copy_")], calls
    assert y.is_contiguous() and y.shape == (2, 5, 4, 16)
    assert torch.equal(y, F.max_pool2d(x.permute(0, 3, 1, 2), 3, 2, 1).permute(0, 2, 3, 1))


def test_contiguous_nchw_max_pool_keeps_values_and_format():
    # pooled internally in channels_last memory format (faster on CPU): nothing else changes
    x = torch.randn(2, 16, 64, 64)
    y = pa.pool2d(x, "max", 3, 2, 1, **CF)
    assert y.is_contiguous() and torch.equal(y, F.max_pool2d(x, 3, 2, 1))
    y, idx = pa.pool2d(x, "max", 3, 2, 1, return_indices=True, **CF)
    ny, nidx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert idx.is_contiguous() and torch.equal(y, ny) and torch.equal(idx, nidx)


class _Recorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(("mode", "kw"), [
    ("max", dict(window=3, stride=2, padding="same")),  # pads (0, 1): low pad + ceil mode
    ("max", dict(window=3, stride=2, padding="same_lower")),  # (1, 0): crop the extra window
    ("max", dict(window=(3, 2), stride=1, padding=1, dilation=2)),
    ("avg", dict(window=3, stride=2, padding="same")),  # padding excluded: torch's own rule
    ("avg", dict(window=3, stride=1, padding=1, count_include_pad=True, ceil_mode=True)),
])
def test_plans_torch_expresses_run_without_explicit_padding(mode, kw):
    x = torch.randn(2, 3, 12, 11)
    with _Recorder() as rec:
        y = pa.pool2d(x, mode, **kw, **CF)
    assert "pad" not in rec.names, rec.names
    spec = make_spec(mode, **kw, ndim=2, **CF)
    want = oracle.pool(x.numpy(), spec)
    np.testing.assert_allclose(y.numpy(), want, rtol=2e-6, atol=2e-6)
    # capabilities read the same routing: one torch call with its own divisor rule
    assert BACKEND.lowers_natively(spec.plan(tuple(x.shape)), "float32")


def test_plans_torch_cannot_pad_are_padded_explicitly_and_reported_emulated():
    x = torch.randn(2, 3, 12, 11)
    for kw in (dict(window=3, stride=2, padding=((2, 0), (0, 2))),  # more than half the window
               dict(window=3, stride=1, padding=2, dilation=2)):  # half the extent
        spec = make_spec("max", **kw, ndim=2, **CF)
        with _Recorder() as rec:
            y, idx = pa.pool2d(x, "max", **kw, return_indices=True, **CF)
        assert "pad" in rec.names, rec.names
        assert not BACKEND.lowers_natively(spec.plan(tuple(x.shape)), "float32")
        want, want_idx = oracle.pool(x.numpy(), make_spec("max", **kw, return_indices=True,
                                                          ndim=2, **CF))
        np.testing.assert_array_equal(y.numpy(), want)
        np.testing.assert_array_equal(idx.numpy(), want_idx)


def test_asymmetric_count_include_pad_sums_natively_and_divides_by_the_map():
    x = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    with _Recorder() as rec:
        y = pa.pool2d(x, "avg", 3, 2, "same", count_include_pad=True, **CF)
    assert "pad" not in rec.names and "avg_pool2d" in rec.names
    # same pads (0, 1) per dim: the last row/column of windows holds 2 real cells of 3
    np.testing.assert_allclose(y[0, 0].numpy(), [[1, 2 / 3], [2 / 3, 4 / 9]])
    spec = make_spec("avg", 3, 2, "same", count_include_pad=True, ndim=2, **CF)
    assert not BACKEND.lowers_natively(spec.plan((1, 1, 4, 4)), "float64")  # a divisor map


# ------------------------------------------------------------------ autograd


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
@pytest.mark.parametrize("mode", ["max", "avg", "lp"])
def test_autograd_through_pool2d_equals_oracle_vjp(mode, fmt):
    x_np = RNG.integers(-2, 3, size=(2, 3, 7, 6)).astype(np.float64)  # ties for max
    if mode != "max":
        x_np += _normal(x_np.shape, "float64")
    if fmt == "channels_last":
        x_np = np.moveaxis(x_np, 1, -1)
    kw = dict(window=3, stride=2, padding="same_lower", data_format=fmt)
    if mode == "lp":
        kw["dilation"] = 2
    spec = make_spec(mode, **kw, ndim=2)
    g_np = _normal(spec.output_shape(x_np.shape), "float64")
    x = _t(x_np).requires_grad_(True)
    y = pa.pool2d(x, mode, **kw)
    assert y.requires_grad
    y.backward(_t(g_np))
    np.testing.assert_allclose(x.grad.numpy(), oracle.pool_vjp(x_np, spec, g_np),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
def test_lp_gradient_at_zero_is_zero_not_nan(p):
    x_np = np.array([[[0.0, 0.0, 0.0, 2.0, -1.0, 0.0]]])
    spec = make_spec("lp", 2, p=p, ndim=1, **CF)
    x = _t(x_np).requires_grad_(True)
    y = pa.pool1d(x, "lp", 2, p=p, **CF)  # windows: all zero, one zero cell, none
    g = np.ones(spec.output_shape(x_np.shape))
    y.backward(_t(g))
    np.testing.assert_allclose(x.grad.numpy(), oracle.pool_vjp(x_np, spec, g), rtol=1e-12)
    assert not torch.isnan(x.grad).any()


def test_global_max_gradient_goes_to_the_first_maximum():
    x = torch.tensor([[[[1.0, 3.0], [3.0, 2.0]]]], requires_grad=True)
    pa.global_pool2d(x, "max", **CF).sum().backward()
    assert x.grad.flatten().tolist() == [0.0, 1.0, 0.0, 0.0]


# ------------------------------------------------------------------ torch.compile


COMPILE_SPECS = [  # (mode, arguments, data format)
    ("max", dict(window=3, stride=2, padding=1), "channels_first"),
    ("max", dict(window=3, stride=2, padding="same", return_indices=True), "channels_last"),
    ("max", dict(window=2, stride=1, padding=((0, 1), (1, 0)), dilation=2,
                 return_indices=True), "channels_first"),
    ("avg", dict(window=3, stride=2, padding=((0, 1), (1, 1)), count_include_pad=True),
     "channels_last"),
    ("avg", dict(window=2, stride=1, padding=1, dilation=2), "channels_first"),
    ("lp", dict(window=3, stride=2, padding="same", p=3.0), "channels_last"),
]


def _assert_same(got, want, exact: bool) -> None:
    if isinstance(got, tuple):
        _assert_same(got[0], want[0], exact)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
        return
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, want, equal_nan=True, **tol)


@pytest.mark.parametrize(("mode", "kw", "fmt"), COMPILE_SPECS, ids=lambda v: str(v))
def test_torch_compile_fullgraph_equals_eager_across_shapes(mode, kw, fmt):
    torch._dynamo.reset()
    pool = pa.Pool2D(mode, **kw, data_format=fmt)
    compiled = torch.compile(lambda t: pool(t), fullgraph=True)
    for shape in ((2, 3, 9, 10), (1, 4, 11, 12)):  # the second compiles with dynamic sizes
        x = torch.randn(*shape)
        x = x if fmt == "channels_first" else x.movedim(1, -1).contiguous()
        x[0, 0, 0, 1] = math.nan
        _assert_same(compiled(x), pool(x), exact=mode == "max")


def test_torch_compile_of_the_public_api_and_its_gradient():
    torch._dynamo.reset()

    def f(t):
        y, idx = pa.pool2d(t, "max", 3, 2, "same", return_indices=True, **CF)
        return pa.pool2d(y, "avg", 2, padding=((0, 1), (1, 0)), **CF), idx

    x = torch.randn(2, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(f)
    y, idx = compiled(x)
    ey, eidx = f(x)
    assert torch.allclose(y, ey) and torch.equal(idx, eidx)
    g = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, g)
    (edx,) = torch.autograd.grad(ey, x, g)
    assert torch.allclose(dx, edx)


def test_the_public_api_compiles_with_dynamic_sizes():
    """Spatial sizes are specialised (a plan depends on them); the batch stays dynamic."""
    torch._dynamo.reset()

    def f(t):
        y, idx = pa.pool2d(t, "max", 3, 2, "same", return_indices=True, **CF)
        return (pa.pool2d(y, "lp", 2, padding=((0, 1), (1, 0)), p=2.5, **CF), idx,
                pa.adaptive_pool2d(t, "max", (4, 3), return_indices=True, **CF)[1])

    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    for shape in ((2, 3, 9, 10), (3, 3, 9, 10), (1, 2, 11, 8)):
        x = torch.randn(*shape, dtype=torch.float64)
        for got, want in zip(compiled(x), f(x)):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_plan_built_while_tracing_reaches_host_code_empty():
    """Why compile.py hands host code a plan's plain values: a plan dynamo builds while it
    traces (``spec.plan`` runs in the trace) reaches a function marked
    ``assume_constant_result`` as an empty shell, without its fields (torch 2.13)."""
    torch._dynamo.reset()
    seen = []

    @torch.compiler.assume_constant_result
    def host(plan):
        seen.append(hasattr(plan, "out_size"))
        return 1

    spec = make_spec("max", 2, ndim=2, **CF)
    out = torch.compile(lambda t: t + host(spec.plan(tuple(t.shape))), fullgraph=True)(
        torch.zeros(1, 1, 4, 4))
    assert seen == [False] and out.sum() == 16


def test_torch_compile_of_adaptive_global_and_unpool():
    torch._dynamo.reset()

    def f(t):
        y, idx = pa.adaptive_pool2d(t, "max", (4, 3), return_indices=True, **CF)
        up = pa.max_unpool2d(y, idx, t.shape[2:], **CF)
        return pa.global_pool2d(up, "lp", p=2.0, **CF) + pa.adaptive_pool2d(
            t, "avg", 1, **CF).flatten(1)

    x = torch.randn(2, 3, 9, 7)
    assert torch.allclose(torch.compile(f)(x), f(x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ integers


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64", "uint16",
                                   "uint32", "uint64"])
@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
def test_integer_max_is_exact_with_indices(dtype, fmt):
    info = np.iinfo(dtype)
    x_np = RNG.integers(info.min, info.max, size=(2, 3, 14, 12), dtype=dtype, endpoint=True)
    x_np[0, :, :2, :2] = info.min  # a corner window of minima next to the padding
    if fmt == "channels_last":
        x_np = np.ascontiguousarray(np.moveaxis(x_np, 1, -1))
    for padding in (1, ((0, 2), (2, 1))):  # native, then explicit padding with the minimum
        kw = dict(window=3, stride=2, padding=padding, data_format=fmt, return_indices=True)
        y, idx = pa.pool2d(_t(x_np), "max", **kw)
        want, want_idx = oracle.pool(x_np, make_spec("max", **kw, ndim=2))
        assert BACKEND.dtype_name(y) == dtype
        np.testing.assert_array_equal(BACKEND.to_numpy(y), want)
        np.testing.assert_array_equal(idx.numpy(), want_idx)
    g = pa.global_pool2d(_t(x_np), "max", data_format=fmt)
    np.testing.assert_array_equal(BACKEND.to_numpy(g), x_np.max(axis=(1, 2) if fmt ==
                                                                "channels_last" else (2, 3)))


def test_int64_beyond_float_precision_stays_exact():
    big = 2**62
    x = torch.tensor([big + 1, big, big + 3, big + 2, -big - 1, -big]).view(1, 1, -1)
    y, idx = pa.pool1d(x, "max", 2, return_indices=True, **CF)
    assert y.flatten().tolist() == [big + 1, big + 3, -big]
    assert idx.flatten().tolist() == [0, 2, 5]
    a, aidx = pa.adaptive_pool1d(x, "max", 4, return_indices=True, **CF)
    assert a.flatten().tolist() == [big + 1, big + 3, big + 2, -big]
    assert aidx.flatten().tolist() == [0, 2, 3, 5]


# ------------------------------------------------------------------ torch quirks worked around


def test_nan_index_is_the_first_nan_where_torch_reports_the_last():
    x = torch.tensor([[[math.nan, 1.0, math.nan, 2.0]]])
    _, native_idx = F.max_pool1d(x, 4, return_indices=True)
    assert native_idx.item() == 2  # torch: the last NaN of the window
    y, idx = pa.pool1d(x, "max", 4, return_indices=True, **CF)
    assert math.isnan(y.item()) and idx.item() == 0
    _, native_idx = F.adaptive_max_pool1d(x, 1, return_indices=True)
    assert native_idx.item() == 2
    _, idx = pa.adaptive_pool1d(x, "max", 1, return_indices=True, **CF)
    assert idx.item() == 0


def test_all_minus_inf_window_index_is_its_first_real_cell_in_3d():
    x = torch.full((1, 2, 2, 3, 2), -math.inf)  # C=2 so channels_last_3d differs
    x[:, :, 0] = 1.0
    kw = dict(window=2, stride=1, padding=1)
    native_y, native_idx = F.max_pool3d(x.contiguous(memory_format=torch.channels_last_3d),
                                        return_indices=True, **{"kernel_size": 2, "stride": 1,
                                                                 "padding": 1})
    y, idx = pa.pool3d(x, "max", **kw, return_indices=True, **CF)
    want, want_idx = oracle.pool(x.numpy(), make_spec("max", **kw, return_indices=True,
                                                      ndim=3, **CF))
    assert torch.equal(y, native_y) and np.array_equal(idx.numpy(), want_idx)
    # torch's channels_last 3-D kernel drops the depth term of an all -inf window's index
    assert not np.array_equal(native_idx.numpy(), want_idx)


def test_int8_channels_last_planes_above_127_cells():
    x = torch.randint(-100, 100, (1, 12, 12, 3), dtype=torch.int8)  # NHWC
    with pytest.raises(RuntimeError, match="integer_t"):
        F.max_pool2d(x.permute(0, 3, 1, 2), 2)  # torch indexes the plane with int8
    y = pa.pool2d(x, "max", 2, data_format="channels_last")
    want = oracle.pool(x.numpy(), make_spec("max", 2, data_format="channels_last", ndim=2))
    np.testing.assert_array_equal(y.numpy(), want)


def test_avg_pool3d_rejects_a_window_larger_than_the_input():
    x = torch.randn(1, 2, 2, 3, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="smaller than kernel"):
        F.avg_pool3d(x, 3, 1, 1)
    assert F.avg_pool2d(x[:, :, 0, :2], 3, 1, 1).shape == (1, 2, 2, 3)  # 2-D takes it
    kw = dict(window=3, stride=1, padding=1, count_include_pad=True)
    spec = make_spec("avg", **kw, ndim=3, **CF)
    assert not BACKEND.lowers_natively(spec.plan(tuple(x.shape)), "float64")
    np.testing.assert_allclose(pa.pool3d(x, "avg", **kw, **CF).numpy(),
                               oracle.pool(x.numpy(), spec), rtol=1e-12, atol=1e-12)


def test_torch_pads_at_most_half_the_window_not_half_its_extent():
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="half of kernel size"):
        F.max_pool2d(x, 3, 1, 2, dilation=2)  # the dilated extent is 5
    spec = make_spec("max", 3, 1, 2, 2, ndim=2, **CF)
    assert not BACKEND.lowers_natively(spec.plan(tuple(x.shape)), "float64")
    np.testing.assert_array_equal(pa.pool2d(x, "max", 3, 1, 2, 2, **CF).numpy(),
                                  oracle.pool(x.numpy(), spec))


def test_unpool_scatters_where_torch_max_unpool_rejects_an_empty_windows_index():
    y, idx = torch.tensor([[[[1.0, 2.0]]]]), torch.tensor([[[[-1, 3]]]])
    with pytest.raises(RuntimeError, match="invalid max index"):
        F.max_unpool2d(y, idx, (1, 2), output_size=(1, 4))
    out = pa.max_unpool2d(y, idx, (1, 4), **CF)
    assert out.flatten().tolist() == [0.0, 0.0, 0.0, 2.0]
    assert BACKEND.capabilities()["unpool"] == EMULATED


def test_half_precision_avg_sums_in_float32():
    x = torch.full((1, 2, 2, 3, 4), 30000.0, dtype=torch.float16)
    with pytest.raises(NotImplementedError):
        F.avg_pool3d(x, 2)  # torch's CPU avg_pool3d has no float16 kernel
    assert torch.isinf(F.adaptive_avg_pool3d(x, (2, 3, 1))).all()  # sums in float16
    assert (pa.pool3d(x, "avg", 2, **CF) == 30000).all()
    assert (pa.adaptive_pool3d(x, "avg", (2, 3, 1), **CF) == 30000).all()
    assert (pa.global_pool3d(x, "avg", **CF) == 30000).all()


def test_empty_batch_and_zero_channels():
    for shape in ((0, 3, 5, 4), (2, 0, 5, 4)):
        x = torch.zeros(shape)
        y, idx = pa.pool2d(x, "max", 2, padding="same", return_indices=True, **CF)
        assert y.shape == idx.shape == (*shape[:2], 3, 2)
        assert pa.adaptive_pool2d(x, "avg", 2, **CF).shape == (*shape[:2], 2, 2)


# ------------------------------------------------------------------ reporting


def test_capabilities_and_version():
    caps = BACKEND.capabilities()
    assert set(caps) == set(FEATURES)
    assert set(caps.values()) <= {NATIVE, EMULATED}
    assert caps["max"] == caps["ceil_mode"] == caps["indices"] == caps["compile"] == NATIVE
    assert caps["lp"] == caps["asymmetric_padding"] == EMULATED
    assert BACKEND.version() == torch.__version__
    assert BACKEND.supports_autograd


def test_adaptive_plan_through_the_backend_directly():
    x = torch.randn(2, 3, 7, 5)
    spec = make_adaptive_spec("avg", (3, 2), ndim=2, **CF)
    np.testing.assert_allclose(BACKEND.adaptive_pool(x, spec.plan(tuple(x.shape))).numpy(),
                               oracle.adaptive_pool(x.numpy(), spec), rtol=2e-6, atol=2e-6)
