"""Parity with ``torch.nn``, generated from the native classes, not written by hand.

* Every layer of ``pooladapt.layers.torch`` that ``torch.nn`` also has: ``inspect.signature``
  compared parameter by parameter (name, kind, default), pooladapt's extras keyword-only after.
* Every sample input of torch's module database (``common_modules.module_db``, the entries
  whose name contains "Pool") run through the native module and pooladapt's side by side, and
  variants derived from each: a channels_last and a non-contiguous copy, an empty batch, zero
  channels, integer dtypes; for the max pools that return indices, ``MaxUnpool`` on their
  result. Compared: the exception class (ours must be an instance of torch's, raised when
  building or when calling as torch's), outputs (values, dtype, shape, memory format,
  requires_grad), input gradients, ``repr`` and ``state_dict``.
* Deliberate differences are strict xfails, listed in one place (:data:`DELIBERATE`), each
  with its reason; docs/frameworks/torch.md lists them too.
"""

from __future__ import annotations

import copy
import inspect
import re

import pytest
import torch
from torch import nn
from torch._prims_common import suggest_memory_format

from pooladapt.layers import torch as layers

common_modules = pytest.importorskip("torch.testing._internal.common_modules")

PAIRS = sorted(name for name in layers.__all__ if hasattr(nn, name))


def test_every_native_pooling_layer_has_a_drop_in():
    natives = {name for name in dir(nn) if re.search("Pool|Unpool", name)
               and not name.startswith("_") and isinstance(getattr(nn, name), type)}
    assert natives == set(PAIRS)


@pytest.mark.parametrize("name", PAIRS)
def test_signature_is_the_natives_with_keyword_only_extras(name):
    native = list(inspect.signature(getattr(nn, name)).parameters.values())
    ours = list(inspect.signature(getattr(layers, name)).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours[:len(native)]] == [
        (p.name, p.kind, p.default) for p in native]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in ours[len(native):])


# ------------------------------------------------------------------ deliberate differences

INTEGERS = ("int64", "int32", "uint8")
DELIBERATE: list[tuple[str, str, str]] = [
    # (layer name pattern, sample pattern "<desc>/<variant>", reason)
    ("^LPPool", r"^norm/(plain|channels_last|noncontig)$",
     "LPPool is (sum |x|**p) ** (1/p), the ONNX meaning (API.md §1); torch keeps the sign of "
     "sum x**p (FRAMEWORK-NOTES D11): NaN for p=1.5 on negative input"),
    ("^LPPool", r"/(int64|int32|uint8)$",
     "lp pooling on integers raises TypeError naming the cast (API.md §1); torch returns float"),
    ("^AvgPool", r"^(?!divisor).*/int64$",
     "avg pooling on integers raises TypeError naming the cast (API.md §1); torch's avg_pool "
     "takes int64 and truncates the mean (divisor_override is torch's own op: it does too)"),
    ("^(AdaptiveMaxPool|FractionalMaxPool|MaxUnpool)", r"/(int64|int32|uint8)$",
     "integer max pooling is exact (API.md §1), and so is its unpooling; torch has no integer "
     "kernel here and raises NotImplementedError"),
    ("^MaxPool1d", r"^(?!return_indices).*/(int64|int32|uint8)$",
     "integer max pooling is exact (API.md §1); torch's max_pool1d without indices has no "
     "integer kernel and raises NotImplementedError"),
    ("^AdaptiveAvgPool[12]d", r"^(?!no_batch_dim|one_output|single_1x1output).*/zero_channels$",
     "torch's backward of a batched adaptive average with zero channels raises RuntimeError "
     "(not for a 1x1 output, nor an unbatched input); pooladapt's gradient is the empty tensor"),
]


def _deliberate(name: str, sample: str) -> str | None:
    for layer_pattern, sample_pattern, reason in DELIBERATE:
        if re.search(layer_pattern, name) and re.search(sample_pattern, sample):
            return reason
    return None


# ------------------------------------------------------------------ the samples

DB = [info for info in common_modules.module_db if "Pool" in info.name]
VARIANTS = ("plain", "channels_last", "noncontig", "empty_batch", "zero_channels", *INTEGERS)


def _samples(info, dtype: torch.dtype) -> list:
    return list(info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                        training=True))


def _variant(x: torch.Tensor, variant: str, batched: bool) -> torch.Tensor | None:
    x = x.detach()
    if variant == "plain":
        return x.clone()
    if variant == "channels_last":
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
        return None if fmt is None else x.contiguous(memory_format=fmt)
    if variant == "noncontig":
        return torch.cat([x, x], dim=-1)[..., ::2]
    if variant == "empty_batch":
        return x[:0].clone() if batched else None
    if variant == "zero_channels":
        return x[:, :0].clone() if batched else x[:0].clone()
    return (x.abs() * 10).to(getattr(torch, variant))


def native_ndim(name: str) -> int:
    return int(re.search(r"(\d)d$", name).group(1))


def _cases():
    for info in DB:
        name = info.name.removeprefix("nn.")
        for dtype in info.dtypes:
            for i, sample in enumerate(_samples(info, dtype)):
                desc = sample.desc or str(i)
                (x,) = sample.forward_input.args
                for variant in VARIANTS:
                    if variant not in ("plain", "channels_last", "noncontig") and (
                            dtype != torch.float32):
                        continue  # the other variants once, from the float32 samples
                    if _variant(x, variant, x.dim() == native_ndim(name) + 2) is None:
                        continue  # no such variant of this input (channels_last of a 3-D one)
                    yield name, dtype, i, desc, variant
                    if "return_indices" in desc and name.startswith("MaxPool"):
                        yield name.replace("Pool", "Unpool"), dtype, i, desc, variant


CASES = [
    pytest.param(name, dtype, i, variant, id=f"{name}-{str(dtype)[6:]}-{desc}-{variant}",
                 marks=() if (reason := _deliberate(name, f"{desc}/{variant}")) is None else
                 pytest.mark.xfail(reason=reason, strict=True))
    for name, dtype, i, desc, variant in _cases()
]


def _outcome(call):
    try:
        return call(), None
    except Exception as err:  # noqa: BLE001 - the class is what is compared
        return None, err


def _assert_same_error(ours: Exception | None, native: Exception | None, when: str) -> None:
    if native is None:
        assert ours is None, f"pooladapt raised {ours!r} {when}, torch did not"
    else:
        assert isinstance(ours, type(native)), (
            f"torch raised {type(native).__name__} {when}, pooladapt {ours!r}")


def _tensors(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, tuple) else [out]


def _assert_same_output(ours, native) -> None:
    assert type(ours) is type(native)
    for o, n in zip(_tensors(ours), _tensors(native), strict=True):
        assert (o.dtype, o.shape, o.requires_grad) == (n.dtype, n.shape, n.requires_grad)
        assert o.is_contiguous() == n.is_contiguous()
        assert suggest_memory_format(o) == suggest_memory_format(n)
        torch.testing.assert_close(o, n, equal_nan=True)


def _build(name: str, info_name: str, args, kwargs):
    if name.startswith("MaxUnpool"):  # the unpool of a MaxPool sample: its geometry
        kwargs = {k: v for k, v in kwargs.items() if k in ("stride", "padding")}
        args = args[:3]
    return (_outcome(lambda: getattr(nn, name)(*copy.deepcopy(args), **copy.deepcopy(kwargs))),
            _outcome(lambda: getattr(layers, name)(*copy.deepcopy(args),
                                                   **copy.deepcopy(kwargs))))


@pytest.mark.parametrize(("name", "dtype", "index", "variant"), CASES)
def test_module_db_sample(name, dtype, index, variant):
    info_name = f"nn.{name.replace('Unpool', 'Pool')}"
    info = next(i for i in DB if i.name == info_name)
    sample = _samples(info, dtype)[index]
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    (native, native_err), (ours, ours_err) = _build(name, info_name, args, kwargs)
    _assert_same_error(ours_err, native_err, "when built")
    if native is None:
        return
    native, ours = native.to(dtype), ours.to(dtype)
    assert repr(ours) == repr(native)
    native_state, our_state = native.state_dict(), ours.state_dict()
    assert native_state.keys() == our_state.keys()
    for key in native_state:
        assert torch.equal(our_state[key], native_state[key])

    (x,) = sample.forward_input.args
    batched = x.dim() == native_ndim(name) + 2
    x = _variant(x, variant, batched)
    if name.startswith("MaxUnpool"):  # unpool what the native max pool gives
        pool = getattr(nn, name.replace("Unpool", "Pool"))(*args, **kwargs)
        y, idx = _outcome(lambda: pool(x))[0] or (None, None)
        if y is None:
            pytest.skip("torch's max pool refuses this input")
        inputs = (y.detach(),), (idx,)
    else:
        inputs = (x,), ()
    native_x = inputs[0][0].clone().requires_grad_(inputs[0][0].is_floating_point())
    our_x = inputs[0][0].clone().requires_grad_(inputs[0][0].is_floating_point())
    native_out, native_err = _outcome(lambda: native(native_x, *inputs[1]))
    our_out, ours_err = _outcome(lambda: ours(our_x, *inputs[1]))
    _assert_same_error(ours_err, native_err, "when called")
    if native_out is None:
        return
    _assert_same_output(our_out, native_out)
    value = _tensors(native_out)[0]
    if value.requires_grad:
        grad = torch.randn_like(value, dtype=value.dtype)
        native_grad, native_err = _outcome(lambda: torch.autograd.grad(
            value, native_x, grad, allow_unused=True)[0])
        our_grad, ours_err = _outcome(lambda: torch.autograd.grad(
            _tensors(our_out)[0], our_x, grad, allow_unused=True)[0])
        _assert_same_error(ours_err, native_err, "in backward")
        assert (native_grad is None) == (our_grad is None)
        if native_grad is not None:
            assert our_grad.dtype == native_grad.dtype
            torch.testing.assert_close(our_grad, native_grad, equal_nan=True)


ERROR_CASES = [
    pytest.param(info.name.removeprefix("nn."), i, id=f"{info.name[3:]}-error{i}")
    for info in DB if info.module_error_inputs_func is not None
    for i, _ in enumerate(info.module_error_inputs_func(info, device="cpu", dtype=torch.float32,
                                                        requires_grad=False, training=True))
]


@pytest.mark.parametrize(("name", "index"), ERROR_CASES)
def test_module_db_error_input(name, index):
    info = next(i for i in DB if i.name == f"nn.{name}")
    error = info.module_error_inputs_func(info, device="cpu", dtype=torch.float32,
                                          requires_grad=False, training=True)[index]
    sample = error.module_error_input
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    (native, native_err), (ours, ours_err) = _build(name, info.name, args, kwargs)
    _assert_same_error(ours_err, native_err, "when built")
    if native is None:
        return
    fargs = sample.forward_input.args
    _, native_err = _outcome(lambda: native(*fargs))
    _, ours_err = _outcome(lambda: ours(*fargs))
    assert isinstance(native_err, error.error_type)  # torch's own, as the database says
    _assert_same_error(ours_err, native_err, "when called")
