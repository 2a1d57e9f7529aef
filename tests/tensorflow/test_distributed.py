"""pooladapt's Keras layers under ``tf.distribute.MirroredStrategy`` on 2 logical CPUs.

The logical CPUs exist only if they are configured before TensorFlow starts its devices, so
the check runs in a fresh interpreter (this file run as a script). A Keras model with
``pooladapt.layers.keras`` layers (max pooling with padding and ceil mode, average with
``same``, adaptive max, global average and max) is built in the strategy's scope; each
replica takes half the batch inside ``strategy.run``, and the gradients summed over the two
replicas equal the gradient the same model takes over the whole batch outside the strategy
(to float rounding: the halves are summed in another order).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

REPLICAS = 2
BATCH = 4

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                reason="needs tensorflow")


def _worker() -> None:
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)

    import keras

    from pooladapt.layers import keras as layers

    assert keras.backend.backend() == "tensorflow"
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in tf.config.list_logical_devices("CPU")])
    assert strategy.num_replicas_in_sync == REPLICAS, strategy.extended.worker_devices

    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((11, 10, 3))
        t = keras.layers.Conv2D(4, 3, activation="tanh")(inputs)
        t = layers.MaxPooling2D(3, strides=2, padding=1, ceil_mode=True)(t)
        t = layers.AveragePooling2D(2, strides=1, padding="same")(t)
        t = keras.layers.Concatenate()([
            keras.layers.Flatten()(layers.AdaptiveMaxPooling2D((3, 2))(t)),
            layers.GlobalAveragePooling2D()(t), layers.GlobalMaxPooling2D()(t)])
        model = keras.Model(inputs, keras.layers.Dense(2)(t))

    rng = np.random.default_rng(18)
    x = tf.constant(rng.standard_normal((BATCH, 11, 10, 3)), tf.float32)
    y = tf.constant(rng.standard_normal((BATCH, 2)), tf.float32)

    def gradients(xb, yb):
        with tf.GradientTape() as tape:
            per_example = tf.reduce_mean(tf.square(model(xb) - yb), axis=1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=BATCH)
        return tape.gradient(loss, model.trainable_variables)

    rows = BATCH // REPLICAS

    def half(ctx):
        i = ctx.replica_id_in_sync_group
        return x[i * rows:(i + 1) * rows], y[i * rows:(i + 1) * rows]

    xs, ys = (strategy.experimental_distribute_values_from_function(
        lambda ctx, k=k: half(ctx)[k]) for k in (0, 1))

    @tf.function
    def step(xs, ys):
        per_replica = strategy.run(gradients, args=(xs, ys))
        local = [strategy.experimental_local_results(g) for g in per_replica]
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None), local

    got, local = step(xs, ys)
    want = gradients(x, y)  # one process, the whole batch, the same variables
    assert len(got) == len(want) == len(model.trainable_variables)
    for g, w, parts in zip(got, want, local):
        assert len(parts) == REPLICAS
        assert not np.array_equal(parts[0].numpy(), parts[1].numpy())  # two halves
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)
    assert any(np.abs(w.numpy()).sum() > 0 for w in want)
    pooling = [la for la in model.layers if type(la).__module__ == layers.__name__]
    assert len(pooling) == 5, pooling
    print("DISTRIBUTED-OK")


def test_mirrored_strategy_gradients_equal_the_single_process_gradients():
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                         timeout=240)
    assert run.returncode == 0 and "DISTRIBUTED-OK" in run.stdout, (
        f"{run.stdout}\n{run.stderr[-6000:]}")


if __name__ == "__main__":
    _worker()
