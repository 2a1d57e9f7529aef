"""The torch backend's speed routes through the public switch (``pa.speed_routes``): each
route forced on where the grid has no case for it (NaN, infinities and integer extremes in
every dtype, random geometries, one channel), compared with the oracle bit for bit; ``auto``
taking each where its tuning says; ``off`` taking none; no cache replaying a decision made
under another setting; compiled graphs taking none. The grid itself runs under every setting
in tests/conformance/test_routes.py. Which route ran is seen in ``config.routes_taken`` (forced
routes) or in the torch functions called (``auto``/``off``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._dynamo.backends.common import aot_autograd
from torch.overrides import TorchFunctionMode

import pooladapt as pa
import pooladapt.backends.torch as tb
from pooladapt import config, conformance, oracle
from pooladapt.backends.torch import fast
from pooladapt.layers import torch as layers
from pooladapt.spec import make_adaptive_spec, make_spec
from pooladapt.testing.strategies import cases_with_inputs, pool_cases

RNG = np.random.default_rng(5)
FORMATS = ("channels_first", "channels_last")
ROUTES = tb.BACKEND.speed_routes
SEPARABLE, UNFOLD, CHANNELS_LAST = "torch.separable_max", "torch.unfold_max", \
    "torch.channels_last_max"
UNIT_CHANNEL, LIFT_1D, FIXUP_CHECK = "torch.unit_channel_view", "torch.lift_1d_max", \
    "torch.index_fixup_check"
SEPARABLE_GRAD = "torch.separable_max_grad"
SMALL = fast.tuning().separable_min // 8  # cells: no route's tuning takes these
LARGE = 2 * max(fast.tuning().separable_min, fast.tuning().channels_last_min)  # every route


@contextlib.contextmanager
def forced(*names: str):
    """Force the named routes on (the others off); forget earlier forced runs of any."""
    config.routes_taken.difference_update(ROUTES)
    with pa.speed_routes("on", only=names):
        yield


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


def _pool(x_np: np.ndarray, spec):
    return tb.BACKEND.pool(tb.BACKEND.from_numpy(x_np), spec.plan(x_np.shape))


class _Recorder(TorchFunctionMode):
    """The torch functions called, and the tensors handed to torch's pools."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []
        self.pooled: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        self.names.append(name)
        if "pool" in name:
            self.pooled.append(args[0])
        return func(*args, **(kwargs or {}))

    def pools(self, prefix: str) -> int:
        """Calls of torch's pools named ``prefix`` (with indices: ``..._with_indices``)."""
        return sum(n == prefix or n == f"{prefix}_with_indices" for n in self.names)


# ------------------------------------------------------------------ the separable max

GEOMETRIES = [  # (ndim, arguments, whether a dim's windows all lie inside: it can unfold)
    (2, dict(window=3, stride=2, padding=1), False),  # the ResNet stem
    (2, dict(window=2), True),
    (2, dict(window=3, stride=2, padding="same"), False),  # pads (1, 1) and (0, 1)
    (2, dict(window=3, stride=2, ceil_mode=True), True),  # height 13: the last window fits
    (2, dict(window=(4, 3), stride=(3, 1), padding=((3, 0), (0, 2)), ceil_mode=True), False),
    (2, dict(window=3, stride=1, padding=2, dilation=(2, 1)), False),  # all-padding windows
    (2, dict(window=(1, 3), stride=(2, 2)), True),  # one tap in a dim: a view, not a copy
    (2, dict(window=10, stride=2), True),  # the photo case
    (2, dict(window=(4, 5), stride=(1, 3), dilation=(2, 1)), True),
    (1, dict(window=4, stride=3, padding="same"), False),
    (1, dict(window=5, stride=2, dilation=2), True),
    (3, dict(window=2, stride=(1, 2, 2), padding=((1, 0), (0, 1), (1, 1))), True),  # width 12
]


@pytest.mark.parametrize("routes", [(SEPARABLE,), (UNFOLD,), (SEPARABLE, UNFOLD)], ids=str)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("ndim", "kw", "unfolds"), GEOMETRIES, ids=str)
def test_separable_max_equals_oracle(ndim, kw, unfolds, fmt, routes):
    spec = make_spec("max", **kw, ndim=ndim, data_format=fmt)
    # three channels: NHWC stays separable too (from four on torch's channels_last kernel)
    x_np = _special(_layout((2, 3, *(13, 12, 7)[:ndim]), fmt), "float32")
    with forced(*routes):
        got = _pool(x_np, spec)
    assert (SEPARABLE in config.routes_taken) == (SEPARABLE in routes)
    assert (UNFOLD in config.routes_taken) == (UNFOLD in routes and unfolds)
    _assert_equal(got, oracle.pool(x_np, spec))
    if fmt == "channels_last" and (SEPARABLE in routes or unfolds):  # the caller's layout
        assert got.is_contiguous()


@settings(max_examples=max(20, settings().max_examples // 2))
@given(example=cases_with_inputs(pool_cases()),
       routes=st.sampled_from([(SEPARABLE,), (UNFOLD,), ROUTES]))
def test_separable_max_equals_oracle_on_random_specs(example, routes):
    """The conformance fuzz's max cases (padding forms, ceil mode, dilation, every dtype,
    NaN/inf/extremes) through the separable max, forced on every size."""
    case, x_np = example  # any mode's geometry, pooled as a max without indices
    kw = {k: v for k, v in case.kwargs.items()
          if k not in ("mode", "p", "count_include_pad", "return_indices")}
    spec = make_spec("max", **kw, ndim=case.ndim)
    with forced(*routes):
        got = _pool(x_np, spec)
    if SEPARABLE in routes and x_np.shape[1 if spec.channels_first else -1]:
        assert SEPARABLE in config.routes_taken
    _assert_equal(got, oracle.pool(x_np, spec), case.dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64", "int8", "uint8", "int16",
                                   "int32", "int64", "uint16", "uint32", "uint64"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_route_is_exact_in_every_dtype(dtype, fmt):
    for kw in (dict(window=3, stride=2, padding="same"), dict(window=4, stride=3),
               dict(window=3, stride=2, padding=1, return_indices=True)):
        spec = make_spec("max", **kw, ndim=2, data_format=fmt)
        x_np = _special(_layout((2, 9, 11, 10), fmt), dtype)
        want = oracle.pool(x_np, spec)
        for setting in ("on", "off"):
            with pa.speed_routes(setting):
                got = _pool(x_np, spec)
            if spec.return_indices:
                _assert_equal(got[0], want[0], dtype)
                np.testing.assert_array_equal(got[1].numpy(), want[1])
            else:
                _assert_equal(got, want, dtype)


def test_large_contiguous_nchw_takes_the_separable_max_without_copies_or_padding():
    x_np = _special((2, 8, 48, 48), "float32")
    assert x_np.size >= fast.tuning().separable_min
    x = torch.from_numpy(x_np)
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    with _Recorder() as rec:
        y = tb.BACKEND.pool(x, spec.plan(x.shape))
    assert "maximum" in rec.names and "max_pool2d" not in rec.names, rec.names
    assert not {"pad", "contiguous", "clone", "copy_", "permute"} & set(rec.names), rec.names
    assert y.is_contiguous()
    _assert_equal(y, oracle.pool(x_np, spec))
    assert torch.equal(y.nan_to_num(), F.max_pool2d(x, 3, 2, 1).nan_to_num())


def test_windows_inside_the_input_reduce_by_unfolding():
    x_np = _special((1, 3, 27, 40), "float32")
    spec = make_spec("max", 10, 2, ndim=2, data_format="channels_first")
    with forced(UNFOLD), _Recorder() as rec:
        y = _pool(x_np, spec)
    assert rec.names.count("amax") == 2 and "maximum" not in rec.names, rec.names
    _assert_equal(y, oracle.pool(x_np, spec))
    big = _special((1, 3, 120, 160), "float32")  # auto: so on a large NCHW input
    with _Recorder() as rec:
        y = _pool(big, spec)
    assert rec.names.count("amax") == 2 and "max_pool2d" not in rec.names, rec.names
    _assert_equal(y, oracle.pool(big, spec))


def test_channels_last_with_many_channels_keeps_torchs_kernel_unless_forced():
    x = torch.randn(2, 96, 96, 4)  # NHWC, four channels: torch's kernel vectorises over them
    assert x.numel() >= fast.tuning().separable_min
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_last")
    with _Recorder() as rec:
        y = tb.BACKEND.pool(x, spec.plan(x.shape))
    assert "max_pool2d" in rec.names and "maximum" not in rec.names, rec.names
    assert torch.equal(y, F.max_pool2d(x.permute(0, 3, 1, 2), 3, 2, 1).permute(0, 2, 3, 1))
    with forced(SEPARABLE):
        forced_y = tb.BACKEND.pool(x, spec.plan(x.shape))
    assert SEPARABLE in config.routes_taken and torch.equal(forced_y, y)


def test_non_contiguous_input():
    base = torch.from_numpy(_special((2, 3, 14, 18), "float32"))
    x = base[:, :, 1::2, ::3]  # strided in both spatial dims
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    for routes in ((SEPARABLE,), (CHANNELS_LAST,)):
        with forced(*routes):
            got = tb.BACKEND.pool(x, spec.plan(x.shape))
        assert set(routes) <= config.routes_taken
        _assert_equal(got, oracle.pool(x.numpy(), spec))


@pytest.mark.parametrize("fmt", FORMATS)
def test_autograd_keeps_torchs_kernel_and_the_first_maximum_gets_the_gradient(fmt):
    x_np = RNG.integers(-2, 3, size=_layout((2, 3, 9, 8), fmt)).astype(np.float64)  # ties
    spec = make_spec("max", 3, 2, "same", ndim=2, data_format=fmt)
    g_np = RNG.standard_normal(spec.output_shape(x_np.shape))
    x = torch.from_numpy(x_np).requires_grad_(True)
    with forced(SEPARABLE, UNFOLD):
        y = tb.BACKEND.pool(x, spec.plan(x.shape))
    # torch.maximum would split a tie's gradient: not even forced
    assert SEPARABLE not in config.routes_taken and y.requires_grad
    y.backward(torch.from_numpy(g_np))
    np.testing.assert_array_equal(x.grad.numpy(), oracle.pool_vjp(x_np, spec, g_np))
    with forced(SEPARABLE), torch.no_grad():  # nothing recorded: the separable max applies
        got = tb.BACKEND.pool(x, spec.plan(x.shape))
    assert SEPARABLE in config.routes_taken and not got.requires_grad
    _assert_equal(got, oracle.pool(x_np, spec), "float64")


# ------------------------------------------------------------------ the recorded-tap max (autograd)


def _grad_of(x_np: np.ndarray, spec, g_np: np.ndarray, *routes: str):
    """Values and input gradient of the pool through the backend, the named routes forced."""
    x = tb.BACKEND.from_numpy(x_np).requires_grad_(True)
    with forced(*routes):
        y = tb.BACKEND.pool(x, spec.plan(x.shape))
    y.backward(tb.BACKEND.from_numpy(g_np))
    return y, x.grad


def _assert_grad(got: torch.Tensor, x_np: np.ndarray, spec, g_np: np.ndarray) -> None:
    """The oracle's gradient: each window's to its first maximum (NaN first); the sum of a
    cell that wins several windows is rounded in the dtype, within the conformance bound
    (``conformance.gradient_tolerance``'s: each partial sum rounded, up to a window's taps)."""
    x64, dtype = x_np.astype(np.float64), str(x_np.dtype)
    want = oracle.pool_vjp(x64, spec, g_np.astype(np.float64))
    magnitude = oracle.pool_vjp(x64, spec, np.abs(g_np.astype(np.float64)))
    n = int(np.prod(spec.window))
    tol = 4 * (n + 2) * conformance.EPS[dtype] * magnitude + n * conformance.TINY[dtype]
    got_np = tb.BACKEND.to_numpy(got).astype(np.float64)
    assert np.array_equal(np.isnan(got_np), np.isnan(want))
    np.testing.assert_array_less(np.abs(np.nan_to_num(got_np - want)), tol + 1e-300)


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("ndim", "kw", "unfolds"), GEOMETRIES, ids=str)
def test_recorded_max_gradient_goes_to_the_first_maximum(ndim, kw, unfolds, fmt, dtype):
    """Ties, NaN, +-inf and windows of padding only, forward and gradient, every layout."""
    spec = make_spec("max", **kw, ndim=ndim, data_format=fmt)
    x_np = _special(_layout((2, 3, *(13, 12, 7)[:ndim]), fmt), dtype)
    g_np = RNG.standard_normal(spec.output_shape(x_np.shape)).astype(x_np.dtype)
    y, dx = _grad_of(x_np, spec, g_np, SEPARABLE_GRAD)
    assert SEPARABLE_GRAD in config.routes_taken
    _assert_equal(y.detach(), oracle.pool(x_np, spec), dtype)
    _assert_grad(dx, x_np, spec, g_np)
    assert dx.stride() == tb.BACKEND.from_numpy(x_np).stride()  # the input's layout


@settings(max_examples=max(20, settings().max_examples // 2))
@given(example=cases_with_inputs(pool_cases()))
def test_recorded_max_gradient_on_random_specs(example):
    case, x_np = example
    if x_np.dtype.kind != "f" and str(x_np.dtype) != "bfloat16":
        x_np = x_np.astype(np.float32)
    kw = {k: v for k, v in case.kwargs.items()
          if k not in ("mode", "p", "count_include_pad", "return_indices")}
    spec = make_spec("max", **kw, ndim=case.ndim)
    g_np = RNG.standard_normal(spec.output_shape(x_np.shape)).astype(x_np.dtype)
    y, dx = _grad_of(x_np, spec, g_np, SEPARABLE_GRAD)
    if x_np.shape[1 if spec.channels_first else -1] and x_np.size:
        assert SEPARABLE_GRAD in config.routes_taken
    _assert_equal(y.detach(), oracle.pool(x_np, spec), str(x_np.dtype))
    _assert_grad(dx, x_np, spec, g_np)


@pytest.mark.parametrize("dtype", ["float64", "float16"])
@pytest.mark.parametrize(("window", "dilation", "padding"), [
    ((1, 2, 1), (1, 2, 1), "same"),  # hypothesis: a NaN reached by one tap, under padding only
    ((1, 2, 1), (1, 1, 1), ((0, 0), (1, 1), (0, 0))),  # no tap reaches every output
    ((1, 2, 2), (1, 2, 1), ((0, 0), (1, 1), (1, 1))),  # both: NO_TAP from NaN, no NaN out
])
@pytest.mark.parametrize("value", [np.nan, -np.inf, 1.0])
def test_recorded_max_an_output_whose_taps_are_all_nan_or_padding(window, dilation, padding,
                                                                  dtype, value):
    """A dim that no tap starts may keep NO_TAP where its taps are all NaN and NaN is not taken
    over (no NaN in the result): that output's gradient goes to the spare cell."""
    spec = make_spec("max", window, 1, padding, dilation=dilation, ndim=3,
                     data_format="channels_first")
    for shape in ((1, 1, 1, 1, 1), (2, 1, 2, 1, 3)):
        x_np = np.full(shape, value, dtype)
        g_np = RNG.standard_normal(spec.output_shape(shape)).astype(dtype)
        y, dx = _grad_of(x_np, spec, g_np, SEPARABLE_GRAD)
        assert SEPARABLE_GRAD in config.routes_taken
        _assert_equal(y.detach(), oracle.pool(x_np, spec), dtype)
        _assert_grad(dx, x_np, spec, g_np)


def test_auto_leaves_a_small_recorded_max_to_torch():
    x = torch.randn(2, 8, 48, 48, requires_grad=True)
    assert fast.tuning().separable_min <= x.numel() < fast.tuning().grad_min
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    with _Recorder() as rec:
        tb.BACKEND.pool(x, spec.plan(x.shape))
    assert "max_pool2d" in rec.names and "maximum" not in rec.names


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(2, 3, 12, 10), (2, 3, 9, 7)])  # cells that pair up; not
def test_recorded_max_passes_an_infinite_or_nan_gradient_to_the_winner_alone(shape, dtype):
    """A product with the 0/1 mask would spread inf and NaN to every tap: the losers get 0."""
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    x_np = RNG.standard_normal(shape).astype(dtype)  # no ties: torch's kernel agrees
    g_np = RNG.standard_normal(spec.output_shape(shape)).astype(dtype)
    g_np.reshape(-1)[[0, 5, 9]] = [np.inf, -np.inf, np.nan]
    _, dx = _grad_of(x_np, spec, g_np, SEPARABLE_GRAD)
    assert SEPARABLE_GRAD in config.routes_taken
    x = torch.from_numpy(x_np).requires_grad_(True)
    F.max_pool2d(x, 3, 2, 1).backward(torch.from_numpy(g_np))
    torch.testing.assert_close(dx, x.grad, equal_nan=True)  # a cell that wins twice: sums


@pytest.mark.parametrize("fmt", FORMATS)
def test_recorded_max_gradient_of_the_gradient(fmt):
    """create_graph: the gradient is differentiable in the cotangent, as torch's is."""
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format=fmt)
    x_np = RNG.standard_normal(_layout((2, 3, 9, 8), fmt))  # no ties: torch's kernel agrees
    shape = spec.output_shape(x_np.shape)
    g_np, v = RNG.standard_normal(shape), torch.from_numpy(RNG.standard_normal(x_np.shape))
    perm, back = ((0, 3, 1, 2), (0, 2, 3, 1)) if fmt == "channels_last" else ((0, 1, 2, 3),) * 2
    grads = []
    for route in (True, False):  # the route forced; torch's max pool
        x = torch.from_numpy(x_np).requires_grad_(True)
        g = torch.from_numpy(g_np).requires_grad_(True)
        if route:
            with forced(SEPARABLE_GRAD):
                y = tb.BACKEND.pool(x, spec.plan(x.shape))
            assert SEPARABLE_GRAD in config.routes_taken
        else:
            y = F.max_pool2d(x.permute(perm), 3, 2, 1).permute(back)
        (dx,) = torch.autograd.grad(y, x, g, create_graph=True)
        grads.append((dx, *torch.autograd.grad((dx * v).sum(), g)))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want)


def test_recorded_max_leaves_torch_func_to_torch():
    """torch.func transforms have no rule for the route's autograd function: not taken."""
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    with forced(SEPARABLE_GRAD):
        got = torch.func.grad(lambda t: tb.BACKEND.pool(t, spec.plan(t.shape)).sum())(x)
    assert SEPARABLE_GRAD not in config.routes_taken
    want = torch.func.grad(lambda t: F.max_pool2d(t, 3, 2, 1).sum())(x)
    torch.testing.assert_close(got, want)


def test_recorded_max_pools_a_few_batch_items_at_a_time():
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    x_np = _special((5, 2, 9, 8), "float64")
    g_np = RNG.standard_normal(spec.output_shape(x_np.shape))
    with fast.tuned(grad_chunk=1):  # one at a time
        y, dx = _grad_of(x_np, spec, g_np, SEPARABLE_GRAD)
    _assert_equal(y.detach(), oracle.pool(x_np, spec), "float64")
    _assert_grad(dx, x_np, spec, g_np)


@pytest.mark.parametrize("threads", [1, 2])
def test_auto_takes_the_recorded_max_within_its_thread_count(threads):
    x = torch.randn(1, 16, 384, 384, requires_grad=True)
    assert x.numel() >= max(fast.tuning().grad_min, fast.tuning().grad_threaded_min)
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    with fast.tuned(grad_threads=threads), _Recorder() as rec:
        y = tb.BACKEND.pool(x, spec.plan(x.shape))
    taken = torch.get_num_threads() <= threads
    assert ("maximum" in rec.names) == taken and ("max_pool2d" in rec.names) != taken
    assert not {"contiguous", "clone", "pad"} & set(rec.names), rec.names  # NCHW throughout
    y.backward(torch.ones_like(y))
    want = x.detach().requires_grad_(True)
    F.max_pool2d(want, 3, 2, 1).backward(torch.ones_like(y))
    assert torch.equal(x.grad, want.grad)  # float32 data: no ties, the same sums


def test_autograd_pools_contiguous_nchw_in_its_own_format():
    """The channels_last format would convert the gradient both ways: not taken in auto."""
    x = torch.randn(2, 16, 64, 64, requires_grad=True)
    assert x.numel() >= fast.tuning().channels_last_min
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    with pa.speed_routes("on", only=CHANNELS_LAST), _Recorder() as rec:
        tb.BACKEND.pool(x, spec.plan(x.shape))
    assert rec.pooled[0].is_contiguous(memory_format=torch.channels_last)  # forced: it can
    with _Recorder() as rec:
        tb.BACKEND.pool(x, spec.plan(x.shape))
    assert not any(t.is_contiguous(memory_format=torch.channels_last) for t in rec.pooled)


# ------------------------------------------------------------------ channels_last memory format


def test_large_contiguous_nchw_max_pools_in_channels_last_format_and_returns_its_own():
    x = torch.randn(2, 16, 64, 64)  # contiguous NCHW, many channels
    assert x.numel() >= fast.tuning().channels_last_min
    spec = make_spec("max", 3, 2, 1, return_indices=True, ndim=2, data_format="channels_first")
    want_y, want_idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    for setting, channels_last in (("auto", True), ("off", False)):
        with pa.speed_routes(setting), _Recorder() as rec:
            y, idx = tb.BACKEND.pool(x, spec.plan(x.shape))
        pooled = rec.pooled[0]
        assert pooled.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert pooled.is_contiguous() != channels_last
        assert y.is_contiguous() and idx.is_contiguous()
        assert torch.equal(y, want_y) and torch.equal(idx, want_idx)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int16", "int64",
                                   "uint16", "uint64"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_channels_last_format_forced_on_small_inputs_with_specials(dtype, ndim):
    spec = make_spec("max", 2, (1, 2, 2)[:ndim], ((1, 0), (0, 1), (1, 1))[:ndim],
                     return_indices=True, ndim=ndim, data_format="channels_first")
    x_np = _special((2, 3, *(6, 7, 5)[:ndim]), dtype)
    want_y, want_idx = oracle.pool(x_np, spec)
    with forced(CHANNELS_LAST):
        y, idx = _pool(x_np, spec)
    assert CHANNELS_LAST in config.routes_taken
    _assert_equal(y, want_y, dtype)
    np.testing.assert_array_equal(idx.numpy(), want_idx)


def test_int8_never_takes_the_channels_last_format():
    # torch's channels_last int8 kernels index planes with int8: above 127 cells they fail
    x_np = _special((1, 2, 12, 12), "int8")
    spec = make_spec("max", 2, ndim=2, data_format="channels_first")
    with forced(CHANNELS_LAST):
        y = _pool(x_np, spec)
    assert CHANNELS_LAST not in config.routes_taken
    _assert_equal(y, oracle.pool(x_np, spec), "int8")


# ------------------------------------------------------------------ one channel


def test_small_channels_last_max_is_one_native_call():
    for channels in (1, 3):
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


@pytest.mark.parametrize("mode", ["max", "avg", "lp"])
def test_one_channel_view_only_where_the_route_is_taken(mode):
    x = torch.randn(2, 5, 6, 1)
    spec = make_spec(mode, 2, ndim=2, data_format="channels_last")
    for setting, strides in (("off", (30, 1, 6, 1)), (f"on:{UNIT_CHANNEL}", (30, 30, 6, 1))):
        mode_, _, only = setting.partition(":")
        with pa.speed_routes(mode_, only=only or None), _Recorder() as rec:
            y = tb.BACKEND.pool(x, spec.plan(x.shape))
        if mode != "lp":  # (lp pools |x|**p, a new tensor)
            assert rec.pooled[0].stride() == strides, (setting, rec.names)
        np.testing.assert_allclose(y.numpy(), oracle.pool(x.numpy(), spec), rtol=1e-6,
                                   atol=1e-6)


def _one_channel_cases(gradient: bool) -> list[conformance.Case]:
    """The grid's channels_last pool cases with one channel (the grid has three)."""
    return [conformance.Case(c.kind, c.ndim, c.args, c.spatial, c.dtype, c.values, (2, 1),
                             c.gradient, c.features)
            for c in conformance.grid("full")
            if c.kind == "pool" and c.data_format == "channels_last" and c.gradient == gradient]


@pytest.mark.parametrize("gradient", [False, True], ids=["forward", "gradient"])
@pytest.mark.parametrize("setting", ["off", f"on:{UNIT_CHANNEL}", "on"])
def test_one_channel_grid_cases_under_every_setting(setting, gradient):
    mode, _, only = setting.partition(":")
    cases = _one_channel_cases(gradient)
    config.routes_taken.difference_update(ROUTES)
    with pa.speed_routes(mode, only=only or None):
        failed = [(c.id, r.message) for c in cases
                  if not (r := conformance.run_case(c, "torch")).passed]
    assert not failed, failed[:5]
    assert (UNIT_CHANNEL in config.routes_taken) == (mode == "on")


# ------------------------------------------------------------------ 1-D as 2-D


@pytest.mark.parametrize("fmt", FORMATS)
def test_1d_max_lifts_to_2d_where_taken(fmt):
    x_np = _special(_layout((2, 3, 17), fmt), "float32")
    spec = make_spec("max", 3, 2, 1, return_indices=True, ndim=1, data_format=fmt)
    want_y, want_idx = oracle.pool(x_np, spec)
    strided = fmt == "channels_last"  # the NC* view of NLC is strided: torch would copy it
    for setting, lifted in (("auto", strided), ("off", False), (f"on:{LIFT_1D}", True)):
        mode, _, only = setting.partition(":")
        with pa.speed_routes(mode, only=only or None), _Recorder() as rec:
            y, idx = _pool(x_np, spec)
        assert bool(rec.pools("max_pool2d")) == lifted, (setting, rec.names)
        assert bool(rec.pools("max_pool1d")) != lifted, (setting, rec.names)
        _assert_equal(y, want_y)
        np.testing.assert_array_equal(idx.numpy(), want_idx)


def test_small_max_with_autograd_and_odd_strides():
    x_np = RNG.integers(-2, 3, size=(1, 8, 6, 1)).astype(np.float64)
    spec = make_spec("max", 2, ndim=2, data_format="channels_last")
    x = torch.from_numpy(x_np).requires_grad_(True)
    y = tb.BACKEND.pool(x, spec.plan(x.shape))
    g_np = RNG.standard_normal(y.shape)
    y.backward(torch.from_numpy(g_np))
    np.testing.assert_array_equal(x.grad.numpy(), oracle.pool_vjp(x_np, spec, g_np))
    strided = torch.from_numpy(_special((1, 8, 12, 2), "float32"))[..., ::2, :1]
    for setting in ("auto", "off", "on"):
        with pa.speed_routes(setting):
            got = tb.BACKEND.pool(strided, spec.plan(strided.shape))
        _assert_equal(got, oracle.pool(strided.numpy(), spec))


# ------------------------------------------------------------------ index fix-ups


@pytest.mark.parametrize("setting", ["auto", "off", "on"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int16"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_indices_fixups_run_where_needed(dtype, fmt, setting):
    # NaN and -inf (the dtype's minimum for integers) in windows, some of them all padding
    x_np = _special(_layout((2, 8, 24, 24), fmt), dtype)
    spec = make_spec("max", 3, 2, 2, dilation=2, return_indices=True, ndim=2, data_format=fmt)
    clean = np.abs(RNG.standard_normal(x_np.shape)).astype(x_np.dtype)  # nothing to fix
    for x in (x_np, clean):
        with pa.speed_routes(setting):
            y, idx = _pool(x, spec)
        want_y, want_idx = oracle.pool(x, spec)
        _assert_equal(y, want_y, dtype)
        np.testing.assert_array_equal(idx.numpy(), want_idx)


def test_indices_fixups_are_skipped_only_after_the_check():
    x = torch.rand(2, 3, 8, 8)  # no NaN, no -inf: nothing to fix
    spec = make_spec("max", 2, return_indices=True, ndim=2, data_format="channels_first")
    adaptive = make_adaptive_spec("max", (3, 3), return_indices=True, ndim=2,
                                  data_format="channels_first")
    want = F.max_pool2d(x, 2, return_indices=True)
    want_adaptive = F.adaptive_max_pool2d(x, (3, 3), return_indices=True)
    for setting, pools in (("auto", 1), ("off", 2), (f"on:{FIXUP_CHECK}", 1)):
        mode, _, only = setting.partition(":")
        with pa.speed_routes(mode, only=only or None), _Recorder() as rec:
            got = tb.BACKEND.pool(x, spec.plan(x.shape))
            got_adaptive = tb.BACKEND.adaptive_pool(x, adaptive.plan(x.shape))
        # the plain translation pools the NaN positions as well
        assert rec.pools("max_pool2d") == pools, (setting, rec.names)
        assert rec.pools("adaptive_max_pool2d") == pools, (setting, rec.names)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
        assert all(torch.equal(a, b) for a, b in zip(got_adaptive, want_adaptive))


@pytest.mark.parametrize("setting", ["auto", "off", "on"])
def test_adaptive_nan_index_is_the_first_nan(setting):
    x = torch.tensor([[[1.0, float("nan"), 3.0, float("nan"), 0.0, 2.0]]])
    with pa.speed_routes(setting):
        y, idx = pa.adaptive_pool1d(x, "max", 2, return_indices=True,
                                    data_format="channels_first")
    assert torch.isnan(y).all() and idx.tolist() == [[[1, 3]]]


# ------------------------------------------------------------------ the switch itself


def test_off_takes_the_plain_translation():
    """Inputs where ``auto`` takes every route but the index check run without any under
    ``off``: torch's max pools on the permuted views, no conversion, no fix-up skipped."""
    cl = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_last")
    cf = make_spec("max", 10, 2, ndim=2, data_format="channels_first")
    one_d = make_spec("max", 3, 2, 1, ndim=1, data_format="channels_last")
    inputs = [(cf, torch.randn(2, 16, 64, 64)), (cl, torch.randn(1, 40, 48, 1)),
              (one_d, torch.randn(2, 30, 3)), (cf, torch.randn(1, 3, 120, 160))]
    for spec, x in inputs:
        with pa.speed_routes("off"), _Recorder() as rec:
            y = tb.BACKEND.pool(x, spec.plan(x.shape))
        assert not {"maximum", "amax", "unfold", "contiguous", "clone", "view"} & set(
            rec.names), rec.names
        assert [n for n in rec.names if "pool" in n] == [f"max_pool{spec.ndim}d"], rec.names
        view = x if spec.channels_first else x.movedim(-1, 1)
        assert rec.pooled[0].stride() == view.stride()
        _assert_equal(y, oracle.pool(x.numpy(), spec))


def test_no_cache_replays_a_decision_made_under_another_setting():
    spec = make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first")
    layer = layers.MaxPool2d(3, 2, 1)  # through pa.Pool2D's cache of plans
    large, small = torch.randn(2, 8, 48, 48), torch.randn(1, 2, 8, 8)
    runs = [("auto", large, True), ("off", large, False), ("auto", large, True),
            ("auto", small, False), (f"on:{SEPARABLE}", small, True), ("auto", small, False),
            ("off", large, False)]
    for pool in (lambda x: pa.pool2d(x, "max", 3, 2, 1, data_format="channels_first"),
                 lambda x: tb.BACKEND.pool(x, spec.plan(x.shape)), layer):
        for setting, x, separable in runs:
            mode, _, only = setting.partition(":")
            with pa.speed_routes(mode, only=only or None), _Recorder() as rec:
                y = pool(x)
            assert ("maximum" in rec.names) == separable, (setting, x.shape, rec.names)
            assert torch.equal(y, F.max_pool2d(x, 3, 2, 1))


ENV_SCRIPT = """
import torch
from torch.overrides import TorchFunctionMode
import pooladapt as pa

class Names(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.add(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))

with Names() as rec:
    pa.pool2d(torch.randn(2, 8, 48, 48), "max", 3, 2, 1, data_format="channels_first")
print("maximum" in rec.names)
"""


@pytest.mark.parametrize(("setting", "separable"), [("off", False), ("auto", True),
                                                    (f"on:{UNFOLD}", False)])
def test_the_environment_variable_sets_the_routes(setting, separable):
    """``POOLADAPT_SPEED_ROUTES`` is read when pooladapt is imported: a fresh interpreter each,
    pooling an input ``auto`` takes the separable max for (forcing another route turns it
    off)."""
    env = {**os.environ, "POOLADAPT_SPEED_ROUTES": setting}
    done = subprocess.run([sys.executable, "-c", ENV_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == str(separable)


def test_every_route_asked_for_is_declared_and_reached():
    """Forced on, these inputs reach each route; no route outside ``speed_routes`` is asked."""
    config.routes_taken.difference_update(ROUTES)
    calls = [
        (make_spec("max", 4, ndim=2, data_format="channels_first"), (2, 3, 8, 8), False),
        (make_spec("max", 3, 2, 1, return_indices=True, ndim=2, data_format="channels_first"),
         (2, 3, 8, 8), False),
        (make_spec("max", 3, 2, 1, ndim=2, data_format="channels_last"), (2, 8, 8, 1), False),
        (make_spec("max", 3, 2, 1, return_indices=True, ndim=1, data_format="channels_last"),
         (2, 9, 3), False),
        (make_spec("max", 3, 2, 1, ndim=2, data_format="channels_first"), (2, 3, 8, 8), True),
    ]
    with pa.speed_routes("on"):
        for spec, shape, grad in calls:
            tb.BACKEND.pool(torch.randn(shape, requires_grad=grad), spec.plan(shape))
    assert config.routes_taken == set(ROUTES)


# ------------------------------------------------------------------ compiled graphs


def test_torch_compile_takes_no_route_even_forced():
    torch._dynamo.reset()
    pool = pa.Pool2D("max", 3, 2, 1, data_format="channels_first")
    spec = pool.spec
    x = torch.from_numpy(_special((2, 3, 9, 8), "float32"))
    config.routes_taken.difference_update(ROUTES)
    with pa.speed_routes("on"):
        got = torch.compile(lambda t: pool(t), fullgraph=True)(x)
    assert not config.routes_taken
    _assert_equal(got, oracle.pool(x.numpy(), spec))


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
    pool = pa.Pool2D(mode, **kw, data_format=fmt)
    x = torch.randn(2, 3, 12, 11) if fmt == "channels_first" else torch.randn(2, 12, 11, 3)
    layer = (layers.MaxPool2d if mode == "max" else layers.AvgPool2d)
    for fn in (lambda t: pool(t), _layer(layer, kw, fmt)):
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


def test_tuning_is_checked_and_changed_per_block():
    before = fast.tuning()
    with fast.tuned(grad_chunk=7) as inside:
        assert fast.tuning().grad_chunk == 7 == inside.grad_chunk
        assert inside.grad_min == before.grad_min  # the rest unchanged
    assert fast.tuning() == before
    with pytest.raises(ValueError, match="grad_chunk must be >= 0"), fast.tuned(grad_chunk=-1):
        pass
    with pytest.raises(TypeError), fast.tuned(no_such_threshold=1):
        pass
