"""Misuse: every wrong argument is either accepted because it is unambiguous (NumPy integers,
strings in another case) or refused with an error that names the argument and what was given.

tests/core/test_spec.py covers the basic bad-argument classes of ``make_spec``; this module
covers the rest of the public surface (all entry points, every integer argument, the family,
backends and foreign tensors).
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import pooladapt as pa
from pooladapt import config
from pooladapt.spec import make_adaptive_spec, make_global_spec, make_spec, make_unpool_spec

X = np.arange(2 * 6 * 6 * 3, dtype=np.float64).reshape(2, 6, 6, 3) % 7  # NHWC


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("POOLADAPT_BACKEND", raising=False)
    monkeypatch.delenv("POOLADAPT_DATA_FORMAT", raising=False)
    pa.set_backend(None)
    pa.set_data_format(None)
    yield
    pa.set_backend(None)
    pa.set_data_format(None)


def raises(error, *words):
    """pytest.raises that also checks the message names every word (regex-escaped)."""
    return pytest.raises(error, match="(?s)" + "".join(f"(?=.*{re.escape(w)})" for w in words))


# ------------------------------------------------------------------ NumPy integers accepted


NP_INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
           np.intp]


@pytest.mark.parametrize("np_int", NP_INTS)
def test_numpy_integer_scalars_work_everywhere(np_int):
    n = np_int
    spec = make_spec("avg", (n(3), n(2)), stride=n(1), padding=((n(1), n(0)), n(1)),
                     dilation=(n(1), n(2)), ndim=2)
    assert spec == make_spec("avg", (3, 2), stride=1, padding=((1, 0), 1), dilation=(1, 2),
                             ndim=2)
    assert all(type(v) is int for v in spec.window + spec.stride + spec.dilation)
    got = pa.pool2d(X, "max", n(3), n(2), n(1))
    np.testing.assert_array_equal(got, pa.pool2d(X, "max", 3, 2, 1))
    assert make_adaptive_spec("max", (n(2), None), ndim=2).output_size == (2, None)
    assert make_unpool_spec(n(4), ndim=2).output_size == (4, 4)
    assert make_spec("lp", 2, p=n(3), ndim=2).p == 3.0


def test_numpy_integer_arrays_work_as_tuples_and_scalars():
    assert make_spec("max", np.array([2, 3]), stride=np.array(1), ndim=2).window == (2, 3)
    assert make_spec("max", np.array(2, dtype=np.uint8), ndim=1).window == (2,)
    assert make_adaptive_spec("avg", np.array(3), ndim=1).output_size == (3,)
    with raises(TypeError, "window", "float 2.0"):
        make_spec("max", np.array([2.0, 3.0]), ndim=2)
    with raises(TypeError, "window", "float64"):
        make_spec("max", np.array(2.0), ndim=2)
    with raises(TypeError, "window", "array([[2, 3]])"):
        make_spec("max", np.array([[2, 3]]), ndim=2)


# ------------------------------------------------------------------ floats and bools refused


NON_INTEGERS = [2.0, np.float32(1.0), True, np.True_, False, "2", None]


@pytest.mark.parametrize(("name", "value"), [
    (name, value) for name in ("window", "stride", "dilation", "padding") for value in NON_INTEGERS
    # stride=None means the window; a string padding is a rule (tested below)
    if not (name == "stride" and value is None) and not (name == "padding" and value == "2")])
def test_non_integers_are_refused_naming_the_argument(name, value):
    kwargs = {"window": 3, name: value}
    with raises(TypeError, name, repr(value)) as info:
        make_spec("max", ndim=2, **kwargs)
    assert type(value).__name__ in str(info.value)
    # the same value inside a tuple names the argument too
    kwargs = {"window": 3, name: (1, value)}
    with raises(TypeError, name, repr(value)):
        make_spec("max", ndim=2, **kwargs)


@pytest.mark.parametrize(("fn", "words"), [
    (lambda v: make_adaptive_spec("max", v, ndim=2), "output_size"),
    (lambda v: make_adaptive_spec("max", (2, v), ndim=2), "output_size"),
    (lambda v: make_unpool_spec(v, ndim=2), "output_size"),
    (lambda v: pa.max_unpool2d(X[:, :3, :3], X[:, :3, :3].astype(np.int64), (6, v)),
     "output_size"),
])
@pytest.mark.parametrize("value", [2.5, 4.0, True])
def test_non_integer_sizes_are_refused(fn, words, value):
    with raises(TypeError, words, repr(value)):
        fn(value)


@pytest.mark.parametrize(("kwargs", "name"), [
    (dict(ceil_mode=1), "ceil_mode"),
    (dict(ceil_mode=None), "ceil_mode"),
    (dict(return_indices="True"), "return_indices"),
    (dict(mode="avg", count_include_pad=0), "count_include_pad"),
])
def test_flags_must_be_bools(kwargs, name):
    kwargs = {"mode": "max", "window": 2, **kwargs}
    with raises(TypeError, name, "must be a bool", "got"):
        make_spec(ndim=2, **kwargs)
    with raises(TypeError, name):
        pa.Pool2D(**kwargs)
    assert make_spec(ndim=2, **{**kwargs, name: np.True_}).__getattribute__(name) is True


def test_global_and_adaptive_flags():
    with raises(TypeError, "keepdims", "int 1"):
        make_global_spec("max", keepdims=1, ndim=2)
    with raises(TypeError, "keepdims"):
        pa.global_pool2d(X, "max", "yes")
    with raises(ValueError, "p", "lp", "max"):
        pa.global_pool2d(X, "max", p=2)
    with raises(TypeError, "p", "bool"):
        pa.global_pool2d(X, "lp", p=True)
    with raises(ValueError, "return_indices", "avg"):
        pa.adaptive_pool2d(X, "avg", 2, return_indices=True)
    with raises(ValueError, "adaptive", "lp"):
        pa.adaptive_pool2d(X, "lp", 2)


def test_swapped_positional_arguments():
    with raises(TypeError, "mode", "int 2"):
        pa.Pool2D(2, "max")
    with raises(TypeError, "mode", "int 2"):
        pa.pool2d(X, 2, "max")
    with raises(TypeError, "output_size", "str"):
        pa.adaptive_pool2d(X, "max", "2")


# ------------------------------------------------------------------ strings in another case


@pytest.mark.parametrize(("given", "canonical"), [
    (dict(mode="MAX"), dict(mode="max")),
    (dict(mode=" Avg "), dict(mode="avg")),
    (dict(mode="LP"), dict(mode="lp")),
    (dict(padding="SAME"), dict(padding="same")),
    (dict(padding="Same_Upper"), dict(padding="same")),
    (dict(padding="SAME_LOWER"), dict(padding="same_lower")),
    (dict(padding="VALID"), dict(padding="valid")),
    (dict(data_format="nchw"), dict(data_format="channels_first")),
    (dict(data_format="Channels_Last"), dict(data_format="NHWC")),
    (dict(data_format=" CHANNELS_FIRST "), dict(data_format="NCHW")),
])
def test_strings_in_another_case_mean_the_same(given, canonical):
    base = dict(mode="max", window=3, stride=2)
    assert make_spec(**{**base, **given}, ndim=2) == make_spec(**{**base, **canonical}, ndim=2)


def test_strings_in_another_case_elsewhere(monkeypatch):
    assert make_global_spec("AVG", ndim=2, data_format="NCHW").mode == "avg"
    assert make_adaptive_spec("Max", 2, ndim=3, data_format="ncdhw").data_format == \
        "channels_first"
    assert make_unpool_spec(4, ndim=1, data_format="nwc").data_format == "channels_last"
    np.testing.assert_array_equal(pa.pool2d(X, "max", 2, backend=" NumPy "),
                                  pa.pool2d(X, "max", 2, backend="numpy"))
    pa.set_backend("NUMPY")
    assert pa.get_backend() == "numpy"
    with pa.use_backend("Np"):
        assert pa.get_backend() == "numpy"
    monkeypatch.setenv("POOLADAPT_BACKEND", "TF")
    pa.set_backend(None)
    assert pa.get_backend() == "tensorflow"


@pytest.mark.parametrize(("name", "want"), [
    ("NCHW", "channels_first"), ("ncw", "channels_first"), ("NCDHW", "channels_first"),
    ("nwc", "channels_last"), ("NDHWC", "channels_last"), ("Channels_Last", "channels_last"),
])
def test_default_data_format_takes_any_ranks_letters(monkeypatch, name, want):
    pa.set_data_format(name)
    assert config.default_data_format() == want
    assert make_spec("max", 2, ndim=1).data_format == want
    pa.set_data_format(None)
    monkeypatch.setenv("POOLADAPT_DATA_FORMAT", name)
    assert make_spec("max", 2, ndim=3).data_format == want


@pytest.mark.parametrize("name", ["NCHWD", "nc", "channels-first", "NHCW"])
def test_unknown_default_data_format(monkeypatch, name):
    with raises(ValueError, "data_format", repr(name)):
        pa.set_data_format(name)
    monkeypatch.setenv("POOLADAPT_DATA_FORMAT", name)
    with raises(ValueError, "POOLADAPT_DATA_FORMAT", repr(name)):
        make_spec("max", 2, ndim=2)


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    (dict(mode="maximum"), ValueError, ("mode", "'maximum'")),
    (dict(mode="mean"), ValueError, ("mode", "'mean'")),
    (dict(padding="SAMEUPPER"), ValueError, ("padding", "'SAMEUPPER'")),
    (dict(padding="full"), ValueError, ("padding", "'full'")),
    (dict(data_format="NCHW "), None, ()),  # surrounding spaces are harmless
])
def test_misspelt_strings_are_refused(kwargs, error, words):
    if error is None:
        make_spec("max", 2, ndim=2, **kwargs)
        return
    with raises(error, *words):
        make_spec(**{"mode": "max", "window": 2, **kwargs}, ndim=2)


# ------------------------------------------------------------------ tuple lengths and ranks


@pytest.mark.parametrize(("kwargs", "name", "given"), [
    (dict(window=(2, 2, 2)), "window", "(2, 2, 2)"),
    (dict(window=(2,)), "window", "(2,)"),
    (dict(stride=(1, 1, 1)), "stride", "(1, 1, 1)"),
    (dict(stride=(1,)), "stride", "(1,)"),
    (dict(dilation=(1, 2, 1)), "dilation", "(1, 2, 1)"),
    (dict(dilation=[1]), "dilation", "(1,)"),
    (dict(padding=((0, 1),)), "padding", "((0, 1),)"),
    (dict(padding=((0, 1), (1, 0), (0, 0))), "padding", "((0, 1), (1, 0), (0, 0))"),
    (dict(padding=((0, 1), (1, 0, 1))), "padding", "(1, 0, 1)"),
])
def test_mismatched_tuple_lengths(kwargs, name, given):
    kwargs = {"window": 3, **kwargs}
    with raises(ValueError, name, given):
        make_spec("max", ndim=2, **kwargs)
    with raises(ValueError, name):
        pa.pool2d(X, "max", **kwargs)


def test_mismatched_sizes_in_the_family():
    with raises(ValueError, "output_size", "(2, 2, 2)"):
        pa.adaptive_pool2d(X, "max", (2, 2, 2))
    with raises(ValueError, "output_size", "(4,)"):
        make_unpool_spec((4,), ndim=2)
    with raises(ValueError, "output_size", "(1, 3, 4)"):
        make_unpool_spec((1, 3, 4), ndim=2)  # neither spatial (2) nor full (4) values
    # the full output shape is accepted: its spatial part is used
    assert make_unpool_spec((2, 6, 6, 3), ndim=2, data_format="NHWC").output_size == (6, 6)
    assert make_unpool_spec((2, 3, 6, 5), ndim=2, data_format="NCHW").output_size == (6, 5)


@pytest.mark.parametrize(("ndim", "fmt", "rank"), [
    (2, "NCW", "1-D"), (2, "NWC", "1-D"), (2, "NCDHW", "3-D"), (1, "NHWC", "2-D"),
    (1, "NDHWC", "3-D"), (3, "NCHW", "2-D"), (3, "NLC", "1-D"),
])
def test_data_format_of_another_rank(ndim, fmt, rank):
    for build in (lambda: make_spec("max", 2, data_format=fmt, ndim=ndim),
                  lambda: make_global_spec("max", data_format=fmt, ndim=ndim),
                  lambda: make_adaptive_spec("max", 2, data_format=fmt, ndim=ndim),
                  lambda: make_unpool_spec(4, data_format=fmt, ndim=ndim)):
        with raises(ValueError, "data_format", repr(fmt), rank):
            build()


@pytest.mark.parametrize("shape", [(6, 6, 3), (1, 2, 6, 6, 3), (6,), ()])
def test_input_rank_that_does_not_match(shape):
    x = np.zeros(shape)
    for fn in (lambda: pa.pool2d(x, "max", 1), lambda: pa.global_pool2d(x, "avg"),
               lambda: pa.adaptive_pool2d(x, "max", 1),
               lambda: pa.max_unpool2d(x, x.astype(np.int64), (6, 6))):
        with raises(ValueError, "expected a 4-D input", "NHWC", str(shape)):
            fn()


def test_data_format_that_does_not_match_the_input_is_caught_where_it_shows():
    x = np.zeros((1, 3, 2, 2))  # NCHW by intent, read as NHWC: spatial (3, 2)
    with raises(ValueError, "larger than the padded input", "(3, 2)"):
        pa.pool2d(x, "max", 3)


# ------------------------------------------------------------------ padding against the window


@pytest.mark.parametrize(("window", "padding"), [
    (2, 2), (3, 3), ((3, 2), (1, 2)), (3, ((0, 3), (0, 0))), ((2, 4), ((1, 1), (4, 0))),
    (1, 1),
])
def test_padding_at_least_the_window_is_refused(window, padding):
    with raises(ValueError, "padding", "smaller than the window", "got padding"):
        make_spec("max", window, padding=padding, ndim=2)


def test_padding_just_below_the_window_is_accepted():
    spec = make_spec("max", (3, 2), padding=((2, 2), (1, 0)), dilation=3, ndim=2)
    assert spec.padding == ((2, 2), (1, 0))


# ------------------------------------------------------------------ backends


@pytest.mark.parametrize("name", ["caffe", "", "torch2", "jax-cuda"])
def test_unknown_backend_everywhere(name):
    for fn in (lambda: pa.pool2d(X, "max", 2, backend=name),
               lambda: pa.Pool2D("max", 2, backend=name),
               lambda: pa.global_pool2d(X, "max", backend=name),
               lambda: pa.adaptive_pool2d(X, "max", 2, backend=name),
               lambda: pa.max_unpool2d(X, X.astype(np.int64), (6, 6), backend=name),
               lambda: pa.set_backend(name),
               lambda: pa.use_backend(name).__enter__()):
        with raises(ValueError, "unknown backend", repr(name), "numpy", "torch"):
            fn()


@pytest.mark.parametrize("value", [3, ["torch"], b"torch"])
def test_backend_must_be_a_string(value):
    with raises(TypeError, "backend", type(value).__name__):
        pa.pool2d(X, "max", 2, backend=value)


def _fake(module: str, name: str = "Tensor"):
    cls = type(name, (), {"shape": (1, 4, 4, 1)})
    cls.__module__ = module
    return cls()


@pytest.mark.parametrize(("module", "owner", "other"), [
    ("torch", "torch", "jax"),
    ("torch.nn.parameter", "torch", "numpy"),
    ("tensorflow.python.framework.ops", "tensorflow", "torch"),
    ("jaxlib.xla_extension", "jax", "tensorflow"),
    ("jax._src.array", "jax", "mxnet"),
    ("mxnet.ndarray.ndarray", "mxnet", "numpy"),
])
def test_tensor_of_one_framework_with_backend_of_another(monkeypatch, module, owner, other):
    # No framework is imported for this: the error comes before any backend is loaded.
    for name in ("torch", "tensorflow", "jax", "mxnet"):
        monkeypatch.setitem(sys.modules, name, None)
    x = _fake(module)
    for fn in (lambda: pa.pool2d(x, "max", 2, backend=other),
               lambda: pa.Pool2D("avg", 2, backend=other)(x),
               lambda: pa.global_pool2d(x, "max", backend=other),
               lambda: pa.adaptive_pool2d(x, "avg", 2, backend=other),
               lambda: pa.max_unpool2d(x, x, (4, 4), backend=other)):
        with raises(TypeError, f"{owner} tensor", module, f"backend={other!r}", "own framework"):
            fn()
    # backend= its own framework: dispatched to it, which is not installed here
    with raises(ImportError, owner, "pip install"):
        pa.pool2d(x, "max", 2, backend=owner)


def test_unpool_values_and_indices_of_different_frameworks(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    y, idx = pa.pool2d(X, "max", 2, return_indices=True)
    with raises(TypeError, "indices", "a torch tensor", "numpy.ndarray"):
        pa.max_unpool2d(_fake("torch"), idx, (6, 6))
    with raises(TypeError, "indices", "a NumPy array", "jax._src.array.ArrayImpl"):
        pa.max_unpool2d(y, _fake("jax._src.array", "ArrayImpl"), (6, 6))


def test_foreign_tensor_with_use_backend_goes_to_its_own_framework(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pa.use_backend("numpy"), raises(ImportError, "torch", "pip install"):
        pa.pool2d(_fake("torch"), "max", 2)  # the context picks NumPy input's backend only


# ------------------------------------------------------------------ inputs that are not arrays


@pytest.mark.parametrize(("x", "words"), [
    (None, ("dtype object",)),
    ("abc", ("dtype <U3",)),
    ([[["a"]]], ("dtype <U1",)),
    (np.zeros((1, 2, 2, 1), dtype=np.complex64), ("complex64",)),
    (np.zeros((1, 2, 2, 1), dtype="datetime64[s]"), ("datetime64",)),
    (np.zeros((1, 2, 2, 1), dtype=object), ("dtype object",)),
])
def test_inputs_of_unsupported_types(x, words):
    with raises(TypeError, "pooling supports", *words):
        pa.pool2d(x, "max", 1)


def test_byte_swapped_input_is_accepted():
    x = X.astype(X.dtype.newbyteorder(">" if sys.byteorder == "little" else "<"))
    got = pa.pool2d(x, "avg", 2)
    assert got.dtype == np.float64 and got.dtype.isnative
    np.testing.assert_array_equal(got, pa.pool2d(X, "avg", 2))
    y, idx = pa.pool2d(x, "max", 2, return_indices=True)
    swapped = idx.astype(idx.dtype.newbyteorder(">" if sys.byteorder == "little" else "<"))
    np.testing.assert_array_equal(pa.max_unpool2d(y, swapped, (6, 6)),
                                  pa.max_unpool2d(y, idx, (6, 6)))


def test_unpool_misuse():
    y, idx = pa.pool2d(X, "max", 2, return_indices=True)
    with raises(TypeError, "indices", "float64"):
        pa.max_unpool2d(y, idx.astype(np.float64), (6, 6))
    with raises(ValueError, "indices", str(y.shape), str(idx[:, :2].shape)):
        pa.max_unpool2d(y, idx[:, :2], (6, 6))
    with raises(ValueError, "outside the output plane", "(2, 2)"):
        pa.max_unpool2d(y, idx, (2, 2))
    with raises(ValueError, "output_size"):
        pa.max_unpool2d(y, idx.copy())  # a copy is not the index array the pooling returned


# ------------------------------------------------------------------ repeated functional calls


def test_functional_calls_validate_every_time():
    """A valid call first: no cache of built specs may let an equal-comparing bad value
    (2.0 == 2, True == 1) through afterwards."""
    for good, bad, name in ((dict(window=2), dict(window=2.0), "window"),
                            (dict(window=1), dict(window=True), "window"),
                            (dict(window=2), dict(window=np.float64(2)), "window"),
                            (dict(window=1, stride=1), dict(window=1, stride=True), "stride"),
                            (dict(window=2, ceil_mode=True), dict(window=2, ceil_mode=1),
                             "ceil_mode"),
                            (dict(window=3, padding=1), dict(window=3, padding=1.0), "padding")):
        pa.pool2d(X, "max", **good)
        with raises(TypeError, name):
            pa.pool2d(X, "max", **bad)
    pa.pool2d(X, "avg", 2, count_include_pad=False)
    with raises(TypeError, "count_include_pad"):
        pa.pool2d(X, "avg", 2, count_include_pad=0)


def test_functional_calls_read_the_default_data_format_each_time(monkeypatch):
    x = np.zeros((1, 4, 6, 8))
    pa.set_data_format("channels_first")
    assert pa.pool2d(x, "max", 2).shape == (1, 4, 3, 4)
    pa.set_data_format("channels_last")
    assert pa.pool2d(x, "max", 2).shape == (1, 2, 3, 8)
    pa.set_data_format(None)
    monkeypatch.setenv("POOLADAPT_DATA_FORMAT", "NCHW")
    assert pa.pool2d(x, "max", 2).shape == (1, 4, 3, 4)
    monkeypatch.setenv("POOLADAPT_DATA_FORMAT", "NHWC")
    assert pa.pool2d(x, "max", 2).shape == (1, 2, 3, 8)


def test_functional_calls_take_unhashable_arguments():
    want = pa.pool2d(X, "avg", (2, 3), (1, 2), ((0, 1), (1, 0)))
    got = pa.pool2d(X, "avg", [2, 3], np.array([1, 2]), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(got, want)
