"""One program, any framework: change the config flag, get the same numbers.

::

    POOLADAPT_BACKEND=numpy      python examples/swap_backend.py
    POOLADAPT_BACKEND=torch      python examples/swap_backend.py
    POOLADAPT_BACKEND=tensorflow python examples/swap_backend.py
    POOLADAPT_BACKEND=jax        python examples/swap_backend.py

Every run prints the same lines after the first (the backend's name): the features where the
frameworks' own pooling ops disagree (padding with negative input, ``same`` padding,
``count_include_pad``, ceil mode, lp, indices, global and adaptive pooling), computed by the
selected framework on a NumPy input. Values are printed rounded to 4 decimals.
"""

from __future__ import annotations

import json

import numpy as np

import pooladapt as pa


def show(label: str, y: np.ndarray) -> None:
    y = np.asarray(y)
    values = y if y.dtype.kind in "iu" else np.round(y.astype(np.float64), 4) + 0.0  # no -0.0
    print(f"{label}: {json.dumps(values.tolist())}")


def main() -> None:
    print(f"backend: {pa.get_backend()}")
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1) - 8  # -8 .. 7, channels_last

    def plane(y: np.ndarray) -> np.ndarray:
        return y[0, :, :, 0]

    show("max window 3 stride 2 padding 1", plane(pa.pool2d(x, "max", 3, stride=2, padding=1)))
    show("avg window 3 stride 2 padding 1", plane(pa.pool2d(x, "avg", 3, stride=2, padding=1)))
    show("avg window 3 stride 2 padding 1 count_include_pad",
         plane(pa.pool2d(x, "avg", 3, stride=2, padding=1, count_include_pad=True)))
    show("max window 3 stride 2 same", plane(pa.pool2d(x, "max", 3, stride=2, padding="same")))
    show("max window 3 stride 2 same_lower",
         plane(pa.pool2d(x, "max", 3, stride=2, padding="same_lower")))
    show("max window 3 stride 2 ceil_mode",
         plane(pa.pool2d(x, "max", 3, stride=2, ceil_mode=True)))
    show("lp p=2 window 2", plane(pa.pool2d(x, "lp", 2, p=2)))
    values, indices = pa.pool2d(x, "max", 2, return_indices=True)
    show("max window 2 values", plane(values))
    show("max window 2 indices", plane(indices))
    show("global avg", pa.global_pool2d(x, "avg")[0])
    show("global max", pa.global_pool2d(x, "max")[0])
    show("adaptive avg 3x3", plane(pa.adaptive_pool2d(x, "avg", (3, 3))))


if __name__ == "__main__":
    main()
