"""Port a small PyTorch CNN to Keras and to Flax, with and without pooladapt's layers.

The PyTorch model pools in ways Keras and Flax cannot express natively: max pooling with
``padding=1, ceil_mode=True``, average pooling that counts padding (``count_include_pad=True``,
PyTorch's default) and an adaptive average head to a size (3) that does not divide its input (5).
The weights are copied; the printed numbers are the largest absolute difference from the
PyTorch outputs on random input. With pooladapt the three models agree to float tolerance;
with each framework's own layers (the port a careful user would write) they drift.

Run: ``python examples/port_model.py`` (needs torch, keras, jax and flax: ``nox -s
integration`` has them). ``KERAS_BACKEND`` picks Keras's backend (default jax).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import linen as fnn  # noqa: E402

from pooladapt.layers import flax as pflax  # noqa: E402
from pooladapt.layers import keras as pkeras  # noqa: E402


class TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool1 = torch.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.conv2 = torch.nn.Conv2d(8, 16, 3)
        self.pool2 = torch.nn.AvgPool2d(3, stride=2, padding=1)  # count_include_pad=True
        self.head = torch.nn.AdaptiveAvgPool2d(3)
        self.fc = torch.nn.Linear(16 * 3 * 3, 10)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(self.head(x), 1))


def keras_model(weights, pooladapt: bool) -> keras.Model:
    """The same network in Keras (channels_last); weights in PyTorch's layout."""
    inputs = keras.Input((23, 23, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    if pooladapt:
        x = pkeras.MaxPooling2D(3, 2, padding=1, ceil_mode=True)(x)
    else:
        x = keras.layers.MaxPooling2D(3, 2, padding="same")(x)  # the shape fits, values do not
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv2")(x)
    if pooladapt:
        x = pkeras.AveragePooling2D(3, 2, padding=1, count_include_pad=True)(x)
        x = pkeras.AdaptiveAveragePooling2D(3)(x)
    else:
        x = keras.layers.AveragePooling2D(3, 2, padding="same")(x)  # padding never counted
        x = keras.layers.AdaptiveAveragePooling2D(3)(x)
    x = keras.layers.Permute((3, 1, 2))(x)  # flatten in PyTorch's (C, H, W) order
    outputs = keras.layers.Dense(10, name="fc")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.get_layer("conv1").set_weights([weights["conv1.weight"].transpose(2, 3, 1, 0),
                                          weights["conv1.bias"]])
    model.get_layer("conv2").set_weights([weights["conv2.weight"].transpose(2, 3, 1, 0),
                                          weights["conv2.bias"]])
    model.get_layer("fc").set_weights([weights["fc.weight"].T, weights["fc.bias"]])
    return model


class FlaxNet(fnn.Module):
    pooladapt: bool

    @fnn.compact
    def __call__(self, x):
        x = fnn.relu(fnn.Conv(8, (3, 3), padding=1, name="conv1")(x))
        if self.pooladapt:
            x = pflax.MaxPool((3, 3), (2, 2), padding=1, ceil_mode=True)(x)
        else:
            x = fnn.max_pool(x, (3, 3), (2, 2), padding="SAME")
        x = fnn.relu(fnn.Conv(16, (3, 3), padding="VALID", name="conv2")(x))
        if self.pooladapt:
            x = pflax.AvgPool((3, 3), (2, 2), padding=1)(x)  # Flax's default counts padding
            x = pflax.AdaptiveAvgPool(3)(x)
        else:
            x = fnn.avg_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
            x = fnn.avg_pool(x, (3, 3), (1, 1))  # a 5 -> 3 head from a plain window
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        return fnn.Dense(10, name="fc")(x)


def flax_params(weights) -> dict:
    def conv(name):
        return {"kernel": jnp.asarray(weights[f"{name}.weight"].transpose(2, 3, 1, 0)),
                "bias": jnp.asarray(weights[f"{name}.bias"])}

    return {"params": {"conv1": conv("conv1"), "conv2": conv("conv2"),
                       "fc": {"kernel": jnp.asarray(weights["fc.weight"].T),
                              "bias": jnp.asarray(weights["fc.bias"])}}}


def main() -> dict[str, float]:
    torch.manual_seed(0)
    net = TorchNet().eval()
    weights = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((4, 3, 23, 23)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    x_last = x.transpose(0, 2, 3, 1)
    diffs = {}
    for use in (True, False):
        label = "pooladapt" if use else "native"
        got = keras.ops.convert_to_numpy(keras_model(weights, use)(x_last))
        diffs[f"keras/{label}"] = float(np.abs(got - want).max())
        got = np.asarray(FlaxNet(use).apply(flax_params(weights), jnp.asarray(x_last)))
        diffs[f"flax/{label}"] = float(np.abs(got - want).max())
    print(f"Keras backend: {keras.backend.backend()}")
    print("max |output - PyTorch output| over a batch of 4 random 3x23x23 images")
    for key in ("keras/pooladapt", "flax/pooladapt", "keras/native", "flax/native"):
        print(f"  {key:<16} {diffs[key]:.3e}")
    return diffs


if __name__ == "__main__":
    main()
