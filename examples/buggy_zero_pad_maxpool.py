"""A deliberately buggy max pool, caught by ``pooladapt conformance --against``.

``zero_pad_max_pool`` pads with zeros before a VALID max pool, as the TensorFlow and JAX cells
of the classic textbook chapter do (``tf.pad(X, paddings, "CONSTANT")``): a padded zero then
wins every window that holds only negative numbers. ``max_pool`` is the same code padding
with ``-inf`` (the dtype's minimum for integers), which is correct. Check either with::

    pooladapt conformance --against examples/buggy_zero_pad_maxpool.py:zero_pad_max_pool
    pooladapt conformance --against examples/buggy_zero_pad_maxpool.py:max_pool

Both follow the ``--against`` calling convention ``fn(x, spec) -> array``: ``x`` a NumPy array
in ``spec.data_format``, ``spec`` a validated ``pooladapt.PoolSpec``; features they do not
implement (modes other than max) raise ``NotImplementedError`` and are skipped, and they return
the values alone when ``spec.return_indices`` asks for indices (only the values are checked).
Running this file checks both and prints the verdicts.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

import pooladapt


def _max_pool(x: np.ndarray, spec: pooladapt.PoolSpec, fill: float | int) -> np.ndarray:
    if spec.mode != "max":
        raise NotImplementedError("this example implements max pooling only")
    plan = spec.plan(x.shape)  # resolved pads (incl. same and ceil mode) and output size
    pad_width = [(0, 0)] * x.ndim
    for axis, pads in zip(spec.spatial_axes, plan.total_pads):
        pad_width[axis] = pads
    padded = np.pad(x, pad_width, constant_values=np.array(fill).astype(x.dtype))
    out = None
    for offsets in itertools.product(*(range(k) for k in spec.window)):
        index = [slice(None)] * x.ndim
        for axis, o, d, s, n in zip(spec.spatial_axes, offsets, spec.dilation, spec.stride,
                                    plan.out_size):
            index[axis] = slice(o * d, o * d + s * (n - 1) + 1, s)
        tap = padded[tuple(index)]
        out = tap if out is None else np.maximum(out, tap)  # np.maximum propagates NaN
    return out


def zero_pad_max_pool(x: np.ndarray, spec: pooladapt.PoolSpec) -> np.ndarray:
    """BUGGY: zero padding, as ``tf.pad(..., "CONSTANT")`` + a VALID max pool."""
    return _max_pool(x, spec, 0)


def max_pool(x: np.ndarray, spec: pooladapt.PoolSpec) -> np.ndarray:
    """Correct: padded cells are -inf (the dtype minimum for integers), so they never win."""
    fill = np.iinfo(x.dtype).min if np.issubdtype(x.dtype, np.integer) else -np.inf
    return _max_pool(x, spec, fill)


if __name__ == "__main__":
    from pooladapt import cli

    here = Path(__file__).resolve()
    # the textbook's negative-input trap: window 3, padding 1, stride 2 on -(1..16)
    x = -np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    spec = pooladapt.make_spec("max", 3, stride=2, padding=1, ndim=2)
    print("zero padding :", zero_pad_max_pool(x, spec)[0, :, :, 0].tolist())
    print("-inf padding :", max_pool(x, spec)[0, :, :, 0].tolist())
    verdicts = {}
    for name in ("zero_pad_max_pool", "max_pool"):
        verdicts[name] = cli.main(["conformance", "--show", "3",
                                   "--against", f"{here}:{name}"])
    print({name: "FAILS" if code else "passes" for name, code in verdicts.items()})
    sys.exit(0 if verdicts == {"zero_pad_max_pool": 1, "max_pool": 0} else 1)
