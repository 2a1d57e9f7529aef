"""The Keras drop-in layers, run once per Keras backend.

Not collected by itself: each entry file (tests/tensorflow/test_keras_layers.py,
tests/jax/test_keras_layers_jax.py, tests/torch/test_keras_layers_torch.py) sets
``KERAS_BACKEND`` before this module imports keras, then takes its tests.

What it protects: for every argument combination Keras supports natively, the pooladapt
layer equals the Keras layer (except where Keras itself departs from the canonical
semantics, which is asserted as such); the extras equal the oracle; shapes, gradients,
training, masking and ``.keras`` serialisation work on the backend.
"""

from __future__ import annotations

import itertools
import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from pooladapt import oracle
from pooladapt.layers import keras as pk
from pooladapt.spec import make_adaptive_spec, make_spec

BACKEND = keras.backend.backend()
RNG = np.random.default_rng(5)
SIZES = {1: (9,), 2: (7, 6), 3: (5, 6, 4)}
FORMATS = ("channels_last", "channels_first")
NAMES = {"max": "MaxPooling", "avg": "AveragePooling"}


def _input(ndim: int, fmt: str, values: str = "normal", size=None) -> np.ndarray:
    size = size or SIZES[ndim]
    shape = (2, 3, *size) if fmt == "channels_first" else (2, *size, 3)
    if values == "ties":
        return RNG.integers(-2, 3, size=shape).astype("float32")
    x = RNG.standard_normal(shape)
    return (-(np.abs(x) + 1) if values == "negative" else x).astype("float32")


def _np(t) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(t))


def _close(got, want, mode: str) -> None:
    got = _np(got)
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    if mode == "max":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_keras_runs_on_the_backend_the_entry_file_asked_for():
    assert os.environ["KERAS_BACKEND"] == BACKEND, (
        "keras was imported before the entry file set KERAS_BACKEND")


# ------------------------------------------------------------------ equal to Keras's own layers

POOLS = {1: (2, 3), 2: (2, (3, 2)), 3: (2, (3, 2, 2))}
STRIDES = {1: (None, 1, 2), 2: (None, 1, (2, 1)), 3: (None, 1, (1, 2, 2))}
NATIVE_GRID = [
    pytest.param(n, mode, pool, stride, pad, fmt,
                 id=f"{n}d-{mode}-k{pool}-s{stride}-{pad}-{fmt}".replace(" ", ""))
    for n in (1, 2, 3) for mode in ("max", "avg") for pool in POOLS[n] for stride in STRIDES[n]
    for pad in ("valid", "same") for fmt in FORMATS
]


def _keras_torch_same_average(x: np.ndarray, spec, plan) -> np.ndarray:
    """What Keras 3.15's torch backend computes for asymmetric 'same' average pooling (D3,
    fixed by keras#23233 after 3.15.1): the input replicate-padded, then averaged VALID."""
    start = 2 if spec.channels_first else 1
    pads = [(0, 0)] * x.ndim
    pads[start:start + spec.ndim] = plan.pads
    valid = make_spec("avg", spec.window, spec.stride, data_format=spec.data_format,
                      ndim=spec.ndim)
    return oracle.pool(np.pad(x, pads, mode="edge"), valid)


@pytest.mark.parametrize("ndim, mode, pool, strides, padding, fmt", NATIVE_GRID)
def test_layer_equals_the_keras_layer(ndim, mode, pool, strides, padding, fmt):
    x = _input(ndim, fmt)
    name = f"{NAMES[mode]}{ndim}D"
    ours = getattr(pk, name)(pool, strides, padding, fmt)
    native = getattr(keras.layers, name)(pool, strides, padding, fmt)
    spec = make_spec(mode, pool, strides, padding, data_format=fmt, ndim=ndim)
    plan = spec.plan(x.shape)
    if BACKEND == "torch" and mode == "avg" and padding == "same" and not plan.symmetric_pads:
        _close(native(x), _keras_torch_same_average(x, spec, plan), mode)
        _close(ours(x), oracle.pool(x, spec), mode)
        return
    want = _np(native(x))
    _close(ours(x), want, mode)
    assert tuple(ours.compute_output_shape(x.shape)) == want.shape


def test_keras_torch_same_average_departure_is_visible():
    """The D3 row: [1, 2, 3, 4], k(1, 3), s(1, 2), 'same' gives [2, 3.667] on Keras-torch."""
    x = np.array([1.0, 2.0, 3.0, 4.0], "float32").reshape(1, 1, 4, 1)
    native = _np(keras.layers.AveragePooling2D((1, 3), (1, 2), "same")(x)).ravel()
    want_native = [2.0, 11 / 3] if BACKEND == "torch" else [2.0, 3.5]
    np.testing.assert_allclose(native, want_native, rtol=1e-6)
    np.testing.assert_allclose(_np(pk.AveragePooling2D((1, 3), (1, 2), "same")(x)).ravel(),
                               [2.0, 3.5], rtol=1e-6)


@pytest.mark.parametrize("ndim, mode, keepdims, fmt", list(itertools.product(
    (1, 2, 3), ("max", "avg"), (False, True), FORMATS)))
def test_global_layer_equals_the_keras_layer(ndim, mode, keepdims, fmt):
    x = _input(ndim, fmt)
    name = f"Global{NAMES[mode]}{ndim}D"
    want = _np(getattr(keras.layers, name)(fmt, keepdims)(x))
    ours = getattr(pk, name)(fmt, keepdims)
    _close(ours(x), want, mode)
    assert tuple(ours.compute_output_shape(x.shape)) == want.shape


@pytest.mark.parametrize("ndim, mode, target, fmt", list(itertools.product(
    (1, 2, 3), ("max", "avg"), ("divides", "uneven", "larger"), FORMATS)))
def test_adaptive_layer_equals_the_keras_layer_and_the_oracle(ndim, mode, target, fmt):
    size = {1: (8,), 2: (8, 6), 3: (4, 6, 5)}[ndim]
    out = {"divides": tuple(s // 2 if s % 2 == 0 else s for s in size),
           "uneven": tuple(max(1, s - 3) for s in size),
           "larger": tuple(s + 1 for s in size)}[target]
    x = _input(ndim, fmt, size=size)
    name = f"Adaptive{'Max' if mode == 'max' else 'Average'}Pooling{ndim}D"
    ours = getattr(pk, name)(out, fmt)
    want = oracle.adaptive_pool(x, make_adaptive_spec(mode, out, ndim=ndim, data_format=fmt))
    _close(ours(x), want, mode)
    assert tuple(ours.compute_output_shape(x.shape)) == want.shape
    if not hasattr(keras.layers, name):  # older Keras 3 (the oldest-version session)
        pytest.skip(f"Keras {keras.__version__} has no {name}: checked against the oracle only")
    native = _np(getattr(keras.layers, name)(out, fmt)(x))
    if BACKEND == "jax" and target == "larger" and ndim > 1:
        # Keras 3.15's jax backend: bins of an output larger than the input come out NaN
        assert np.isnan(native).any()
        np.testing.assert_allclose(native[~np.isnan(native)], want[~np.isnan(native)],
                                   rtol=2e-6, atol=2e-6)
        return
    _close(native, want, mode)


def test_global_average_1d_masks_like_keras():
    x = _input(1, "channels_last")
    mask = np.array([[True] * 5 + [False] * 4, [True] * 9])
    want = _np(keras.layers.GlobalAveragePooling1D()(x, mask=mask))
    got = _np(pk.GlobalAveragePooling1D()(x, mask=mask))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got[0], x[0, :5].mean(axis=0), rtol=1e-6)


def test_defaults_are_keras_defaults():
    keras_layer, ours = keras.layers.MaxPooling2D(), pk.MaxPooling2D()
    assert ours.pool_size == keras_layer.pool_size == (2, 2)
    assert ours.strides == keras_layer.strides == (2, 2)
    assert ours.padding == keras_layer.padding == "valid"
    assert ours.data_format == keras_layer.data_format == keras.config.image_data_format()
    assert pk.MaxPooling3D().pool_size == keras.layers.MaxPooling3D().pool_size == (2, 2, 2)
    for cls in (pk.AveragePooling1D, keras.layers.AveragePooling1D):
        with pytest.raises(TypeError, match="pool_size"):
            cls()  # required in Keras
    assert pk.AveragePooling1D(2).count_include_pad is False
    assert pk.MaxPool2D is pk.MaxPooling2D and pk.GlobalAvgPool1D is pk.GlobalAveragePooling1D


# ------------------------------------------------------------------ the extras, against the oracle

EXTRAS = [
    ("MaxPooling2D", dict(pool_size=3, strides=2, padding=1, ceil_mode=True)),
    ("MaxPooling1D", dict(pool_size=3, strides=2, padding=((0, 2),))),
    ("MaxPooling3D", dict(pool_size=2, strides=1, padding="same_lower", dilation=(1, 2, 1))),
    ("MaxPooling2D", dict(pool_size=(2, 3), strides=(2, 1), padding=((1, 0), (2, 1)),
                          dilation=(2, 1), ceil_mode=True)),
    ("AveragePooling2D", dict(pool_size=3, strides=2, padding=1, count_include_pad=True,
                              ceil_mode=True)),
    ("AveragePooling2D", dict(pool_size=(2, 3), strides=(1, 2), padding=((1, 0), (0, 2)))),
    ("AveragePooling1D", dict(pool_size=2, strides=1, padding=1, dilation=3)),
    ("AveragePooling3D", dict(pool_size=2, strides=2, padding=(1, 0, 1),
                              count_include_pad=True)),
]
EXTRA_PARAMS = [pytest.param(name, kw, fmt, id=f"{name}-{i}-{fmt}")
                for i, (name, kw) in enumerate(EXTRAS) for fmt in FORMATS]


def _extra_spec(name: str, kw: dict, fmt: str):
    mode = "max" if name.startswith("Max") else "avg"
    args = dict(kw)
    return make_spec(mode, args.pop("pool_size"), args.pop("strides"), data_format=fmt,
                     ndim=int(name[-2]), **args)


@pytest.mark.parametrize("name, kw, fmt", EXTRA_PARAMS)
def test_extras_equal_the_oracle(name, kw, fmt):
    spec = _extra_spec(name, kw, fmt)
    layer = getattr(pk, name)(**kw, data_format=fmt)
    for values in ("normal", "negative"):  # negative: padding must act as -inf for max
        x = _input(spec.ndim, fmt, values)
        _close(layer(x), oracle.pool(x, spec), spec.mode)


@pytest.mark.parametrize("name, kw, fmt", EXTRA_PARAMS)
def test_symbolic_output_shape_matches_the_computed_one(name, kw, fmt):
    layer = getattr(pk, name)(**kw, data_format=fmt)
    x = _input(int(name[-2]), fmt)
    symbolic = layer(keras.Input(shape=x.shape[1:]))
    assert tuple(symbolic.shape) == (None, *_np(layer(x)).shape[1:])


def _input_gradient(layer, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """d(sum(layer(x) * g))/dx with the Keras backend's own autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            y = layer(t)
        return tape.gradient(y, t, output_gradients=tf.constant(g)).numpy()
    if BACKEND == "jax":
        import jax

        _, pull = jax.vjp(layer, jax.numpy.asarray(x))
        return np.asarray(pull(jax.numpy.asarray(g))[0])
    import torch

    t = torch.tensor(x, requires_grad=True)
    layer(t).backward(torch.tensor(g))
    return t.grad.numpy()


@pytest.mark.parametrize("name, kw, fmt", EXTRA_PARAMS[::3])
def test_input_gradient_equals_the_oracle_vjp(name, kw, fmt):
    spec = _extra_spec(name, kw, fmt)
    x = _input(spec.ndim, fmt, "ties").astype("float64").astype("float32")
    layer = getattr(pk, name)(**kw, data_format=fmt)
    g = RNG.standard_normal(spec.output_shape(x.shape)).astype("float32")
    got = _input_gradient(layer, x, g)
    np.testing.assert_allclose(got, oracle.pool_vjp(x, spec, g), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ models: training, saving


def _model(fmt: str = "channels_last") -> keras.Model:
    shape = (8, 7, 3) if fmt == "channels_last" else (3, 8, 7)
    inp = keras.Input(shape=shape)
    # the convolution runs channels-last: TF's CPU Conv2D has no NCHW kernel without oneDNN
    h = inp if fmt == "channels_last" else keras.layers.Permute((2, 3, 1))(inp)
    h = keras.layers.Conv2D(4, 3, padding="same")(h)
    if fmt == "channels_first":
        h = keras.layers.Permute((3, 1, 2))(h)
    h = pk.MaxPooling2D(3, 2, padding=1, ceil_mode=True, data_format=fmt)(h)
    h = pk.AveragePooling2D(2, 1, padding=((0, 1), (1, 0)), count_include_pad=True,
                            data_format=fmt)(h)
    h = pk.AdaptiveAveragePooling2D((3, 2), data_format=fmt)(h)
    h = pk.AdaptiveMaxPooling2D((2, None), data_format=fmt)(h)
    h = pk.GlobalMaxPooling2D(data_format=fmt, keepdims=True)(h)
    h = pk.GlobalAveragePooling2D(data_format=fmt)(h)
    return keras.Model(inp, keras.layers.Dense(2)(h))


@pytest.mark.parametrize("fmt", FORMATS)
def test_keras_file_round_trip_gives_the_same_outputs(tmp_path, fmt):
    model = _model(fmt)
    x = RNG.standard_normal((4, *model.input_shape[1:])).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(_np(loaded(x)), _np(model(x)))
    pooling = [layer for layer in loaded.layers if type(layer).__module__ == pk.__name__]
    assert len(pooling) == 6


@pytest.mark.parametrize("name, kw, fmt", EXTRA_PARAMS[:4])
def test_config_round_trip_and_registration(name, kw, fmt):
    cls = getattr(pk, name)
    layer = cls(**kw, data_format=fmt)
    assert keras.saving.get_registered_name(cls) == f"pooladapt>{name}"
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is cls and clone.spec == layer.spec
    x = _input(int(name[-2]), fmt)
    np.testing.assert_array_equal(_np(clone(x)), _np(layer(x)))


def test_a_model_trains_through_the_layers():
    model = _model()
    model.compile(optimizer="sgd", loss="mse", jit_compile=BACKEND != "torch")
    x = RNG.standard_normal((8, 8, 7, 3)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, np.zeros((8, 2), "float32"), epochs=2, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(model.get_weights()[0], before[0])  # the conv got gradients


def test_variable_spatial_size():
    inp = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(4, 3, data_format="channels_last")
    head = keras.Model(inp, pk.GlobalAveragePooling2D()(features(inp)))
    windowed = keras.Model(inp, pk.MaxPooling2D(3, 2, 1)(inp))
    for size in ((8, 8), (10, 6)):
        x = RNG.standard_normal((2, *size, 3)).astype("float32")
        want = _np(features(x)).mean(axis=(1, 2))
        np.testing.assert_allclose(head.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
        try:
            got = windowed.predict(x, verbose=0)
        except ValueError as err:  # Keras-TF may trace with unknown sizes: no plan then
            assert BACKEND == "tensorflow" and "static spatial sizes" in str(err)
            continue
        spec = make_spec("max", 3, 2, 1, data_format="channels_last", ndim=2)
        np.testing.assert_array_equal(got, oracle.pool(x, spec))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="only TF graphs have unknown sizes")
def test_unknown_spatial_sizes_are_a_clear_error():
    import tensorflow as tf

    layer = pk.MaxPooling2D(3, 2, 1)
    traced = tf.function(layer, input_signature=[tf.TensorSpec([None, None, 6, 3])])
    with pytest.raises(ValueError, match="MaxPooling2D needs static spatial sizes"):
        traced.get_concrete_function()


def test_output_is_the_backends_own_tensor():
    y = pk.MaxPooling2D(padding="same")(ops.convert_to_tensor(_input(2, "channels_last")))
    assert ops.is_tensor(y)
    assert type(y).__module__.split(".")[0] in {"tensorflow": ("tensorflow",),
                                                "jax": ("jax", "jaxlib"),
                                                "torch": ("torch",)}[BACKEND]


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="count_include_pad"):
        pk.MaxPooling2D(count_include_pad=True)
    with pytest.raises(ValueError, match="padding"):
        pk.AveragePooling2D(2, padding=2)
    with pytest.raises(ValueError, match="expected"):
        pk.MaxPooling2D()(np.zeros((2, 4, 4), "float32"))
