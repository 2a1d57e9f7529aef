"""Repeat calls: a layer remembers what it resolved for a tensor's type, dtype and shape, and
that memory never lets a changed input skip a check or reuse the wrong plan.

Each test pools the backend's own tensors (``from_numpy``) twice or more through one layer
(and through the functional form, which keeps one layer per argument set), and compares with
the oracle on every call.
"""

from __future__ import annotations

import numpy as np
import pytest

import pooladapt as pa
from pooladapt import dispatch, oracle
from pooladapt.spec import make_spec


def _spec(*args, **kw):
    return make_spec(*args, ndim=2, **kw)


def _np(backend: str, y):
    return dispatch.load(backend).BACKEND.to_numpy(y)


def test_a_new_shape_gets_its_own_plan(backend):
    be = dispatch.load(backend).BACKEND
    layer = pa.Pool2D("avg", 3, stride=2, padding="same", data_format="channels_first")
    rng = np.random.default_rng(0)
    for shape in [(1, 2, 7, 7), (1, 2, 8, 5), (1, 2, 7, 7), (2, 1, 4, 9)]:
        x = rng.standard_normal(shape).astype(np.float32)
        want = oracle.pool(x, layer.spec)
        got = _np(backend, layer(be.from_numpy(x)))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_new_dtype_is_checked_again(backend):
    be = dispatch.load(backend).BACKEND
    layer = pa.Pool2D("avg", 2, data_format="channels_first")
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(_np(backend, layer(be.from_numpy(x))),
                                  [[[[2.5, 4.5], [10.5, 12.5]]]])
    with pytest.raises(TypeError, match="floating-point"):
        layer(be.from_numpy(x.astype(np.int32)))


def test_a_shape_too_small_raises_after_a_good_one(backend):
    be = dispatch.load(backend).BACKEND
    layer = pa.Pool2D("max", 3, data_format="channels_first")
    layer(be.from_numpy(np.zeros((1, 1, 3, 3), np.float32)))
    with pytest.raises(ValueError, match="larger than the padded input"):
        layer(be.from_numpy(np.zeros((1, 1, 2, 3), np.float32)))
    with pytest.raises(ValueError, match="4-D input"):
        layer(be.from_numpy(np.zeros((1, 3, 3), np.float32)))


def test_a_foreign_backend_is_refused_on_every_call(backend):
    be = dispatch.load(backend).BACKEND
    other = "torch" if backend != "torch" else "jax"
    layer = pa.Pool2D("max", 2, data_format="channels_first")
    x = be.from_numpy(np.zeros((1, 1, 4, 4), np.float32))
    layer(x)
    if dispatch.owner_of(x) is None:  # NumPy arrays (numpy, onnxruntime) may go to any
        return  # backend; a framework tensor may not
    for _ in range(2):
        with pytest.raises(TypeError, match="pooled by its own framework"):
            layer(x, backend=other)


def test_indices_of_a_repeat_call_still_feed_unpool(backend):
    be = dispatch.load(backend).BACKEND
    layer = pa.Pool2D("max", 2, data_format="channels_first", return_indices=True)
    x = np.array([[[[1, 5, 2, 0], [3, 4, 8, 7], [0, 0, 1, 1], [9, 0, 1, 2]]]], np.float32)
    for _ in range(3):
        y, idx = layer(be.from_numpy(x))
        # the unpool default output size is the plane this call pooled
        z = _np(backend, pa.max_unpool2d(y, idx, data_format="channels_first"))
        np.testing.assert_array_equal(z, [[[[0, 5, 0, 0], [0, 0, 8, 0], [0, 0, 0, 0],
                                            [9, 0, 0, 2]]]])


def test_the_functional_form_tells_argument_sets_apart(backend):
    be = dispatch.load(backend).BACKEND
    x = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)
    xt = be.from_numpy(x)
    for kw in [dict(window=2), dict(window=3), dict(window=2, stride=1),
               dict(window=3, padding=1), dict(window=3, padding=1, ceil_mode=True),
               dict(window=2)]:
        want = oracle.pool(x, _spec("max", data_format="channels_first", **kw))
        got = _np(backend, pa.pool2d(xt, "max", data_format="channels_first", **kw))
        np.testing.assert_array_equal(got, want)


def test_numpy_input_is_remembered_only_for_a_named_backend_that_takes_it_as_it_is(backend):
    be = dispatch.load(backend).BACKEND
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    want = oracle.pool(x, _spec("max", 2, data_format="channels_first"))
    named = pa.Pool2D("max", 2, data_format="channels_first", backend=backend)
    for _ in range(2):
        np.testing.assert_array_equal(named(x), want)
    # NumPy-array backends (numpy, onnxruntime) reuse the call; the others convert every time
    assert bool(named._fast) is be.numpy_arrays
    swapped = x.astype(">f4")  # byte-swapped: converted, so never remembered
    np.testing.assert_array_equal(named(swapped), want)
    assert all(key[1] != swapped.dtype for key in named._fast)
    unnamed = pa.Pool2D("max", 2, data_format="channels_first")
    with pa.use_backend(backend):
        np.testing.assert_array_equal(unnamed(x), want)
    assert not unnamed._fast  # use_backend may change: NumPy input is resolved on every call
