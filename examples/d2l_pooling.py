"""The classic textbook pooling chapter (d2l.ai, "Pooling"), every cell through pooladapt.

The chapter writes each cell four times (MXNet, PyTorch, TensorFlow, JAX), with
channels-first tensors for the first two and channels-last for the others. Here each cell is
one pooladapt call, run on the backend chosen by the config flag, in both layouts::

    python examples/d2l_pooling.py                          # NumPy, the embedded default
    POOLADAPT_BACKEND=torch python examples/d2l_pooling.py  # or tensorflow, jax, mxnet

Its last cell is the chapter's trap: the TensorFlow and JAX cells pad with
``tf.pad(..., "CONSTANT")`` (zeros) before a VALID max pool. On positive input that matches
PyTorch; on negative input the padded zeros win the max. pooladapt's padding never wins.
"""

from __future__ import annotations

import json

import numpy as np

import pooladapt as pa


def show(label: str, y: np.ndarray) -> None:
    print(f"{label}: {json.dumps(np.asarray(y, dtype=np.float64).tolist())}")


def both_layouts(label: str, x_nchw: np.ndarray, mode: str, **kwargs) -> None:
    """One cell in the PyTorch/MXNet layout (NCHW) and in the TensorFlow/JAX layout (NHWC)."""
    y = pa.pool2d(x_nchw, mode, data_format="channels_first", **kwargs)
    show(f"{label} [NCHW]", y[0])  # (C, H, W)
    x_nhwc = np.moveaxis(x_nchw, 1, -1)
    y = pa.pool2d(x_nhwc, mode, data_format="channels_last", **kwargs)
    show(f"{label} [NHWC]", np.moveaxis(y[0], -1, 0))  # printed as (C, H, W) too


def main() -> None:
    print(f"backend: {pa.get_backend()}")

    # the 3x3 input of the figure, pooled with a 2x2 window and stride 1 (the chapter's pool2d)
    x = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]], dtype=np.float32)
    both_layouts("max 2x2 stride 1", x[None, None], "max", window=2, stride=1)
    both_layouts("avg 2x2 stride 1", x[None, None], "avg", window=2, stride=1)

    # padding and stride: arange(16) as a 1x1x4x4 tensor
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    both_layouts("window 3, stride defaults to window", x, "max", window=3)
    both_layouts("window 3, padding 1, stride 2", x, "max", window=3, padding=1, stride=2)
    both_layouts("window (2, 3), padding (0, 1), stride (2, 3)", x, "max", window=(2, 3),
                 padding=(0, 1), stride=(2, 3))

    # multiple channels: X and X + 1 concatenated on the channel axis
    x2 = np.concatenate([x, x + 1], axis=1)
    both_layouts("two channels, window 3, padding 1, stride 2", x2, "max", window=3,
                 padding=1, stride=2)

    # the trap: the TF/JAX cells' recipe (zero-pad top/left, then VALID) on negative input
    neg = -(x + 1)  # -1 .. -16
    nhwc = np.moveaxis(neg, 1, -1)
    zero_padded = np.pad(nhwc, ((0, 0), (1, 0), (1, 0), (0, 0)), mode="constant")
    recipe = pa.pool2d(zero_padded, "max", window=3, stride=2, padding="valid")
    show("negative input, d2l TF/JAX recipe (zero padding)", recipe[0, :, :, 0])
    y = pa.pool2d(nhwc, "max", window=3, stride=2, padding=1)
    show("negative input, pooladapt padding=1", y[0, :, :, 0])


if __name__ == "__main__":
    main()
