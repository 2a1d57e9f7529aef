"""The Keras pooling notebook ("합성곱신경망의 풀링 연산") reproduced through pooladapt.

The notebook builds Keras models around ``MaxPooling2D``/``AveragePooling2D``; here each step is
one pooladapt call, on any backend chosen by the config flag::

    python examples/keras_notebook.py                               # NumPy, the default
    POOLADAPT_BACKEND=tensorflow python examples/keras_notebook.py  # or torch, jax, mxnet
    python examples/keras_notebook.py --out pooled.png              # where the figure goes

It prints the 4x4 example, the 4x4x3 per-channel example and, for a real photo (scikit-learn's
bundled ``flower.jpg``, loaded offline), max and avg pooling at window 2 and window 10 with
stride 2, and saves the photo and the four pooled versions side by side as one PNG.
Needs matplotlib and scikit-learn (in backends/numpy.txt).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import pooladapt as pa

DEFAULT_OUT = Path(__file__).resolve().parent / "output" / "keras_notebook_pooling.png"


def show(label: str, y: np.ndarray) -> None:
    print(f"{label}: {json.dumps(np.asarray(y, dtype=np.float64).tolist())}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG figure")
    args = parser.parse_args(argv)
    print(f"backend: {pa.get_backend()}")

    # Keras: MaxPooling2D(strides=2) / AveragePooling2D(strides=2), pool_size defaults to 2
    max_pool = pa.Pool2D("max", 2, stride=2, data_format="channels_last")
    avg_pool = pa.Pool2D("avg", 2, stride=2, data_format="channels_last")

    values = np.array([[1, 3, 2, 1], [2, 9, 1, 1], [1, 3, 2, 3], [2, 6, 1, 2]])
    x = values.reshape(1, 4, 4, 1).astype(np.float32)  # Keras feeds float32
    show("4x4 max 2x2 stride 2", max_pool(x)[0, :, :, 0])
    show("4x4 avg 2x2 stride 2", avg_pool(x)[0, :, :, 0])

    # 3-D data: pooling is per channel
    in0 = np.array([[1, 4, 2, 0], [2, 3, 1, 0], [3, 1, 2, 3], [4, 3, 2, 1]])
    in1 = np.array([[1, 7, 2, 1], [3, 2, 1, 9], [0, 1, 5, 1], [4, 6, 2, 4]])
    in2 = np.array([[1, 5, 2, 1], [3, 2, 1, 9], [0, 1, 3, 1], [4, 6, 2, 7]])
    x3 = np.stack([in0, in1, in2], axis=-1).reshape(1, 4, 4, 3).astype(np.float32)
    show("4x4x3 max per channel (C, H, W)", np.moveaxis(max_pool(x3)[0], -1, 0))
    show("4x4x3 avg per channel (C, H, W)", np.moveaxis(avg_pool(x3)[0], -1, 0))

    # a real photo
    from sklearn.datasets import load_sample_images

    photo = load_sample_images().images[1]  # flower.jpg, (427, 640, 3) uint8
    batch = photo[None].astype(np.float32)
    print(f"photo: shape {list(photo.shape)}")
    pooled = {}
    for window in (2, 10):
        for mode in ("max", "avg"):
            y = pa.Pool2D(mode, window, stride=2, data_format="channels_last")(batch)[0]
            label = f"photo {mode} window {window} stride 2"
            pooled[label] = y
            print(f"{label}: shape {list(y.shape)} mean {float(np.mean(y, dtype=np.float64))!r}")
    save_figure(photo, pooled, args.out)
    print(f"figure: {args.out}")


def save_figure(photo: np.ndarray, pooled: dict[str, np.ndarray], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(pooled), figsize=(4 * (1 + len(pooled)), 3.4))
    axes[0].imshow(photo)
    axes[0].set_title(f"original {photo.shape[0]}x{photo.shape[1]}")
    for ax, (label, y) in zip(axes[1:], pooled.items()):
        ax.imshow(np.clip(y / 255.0, 0.0, 1.0))
        ax.set_title(f"{label.removeprefix('photo ')}\n{y.shape[0]}x{y.shape[1]}")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
