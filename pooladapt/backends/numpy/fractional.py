"""Fractional max pooling on NumPy: every window's cells gathered from its plane at once.

The window starts come from the plan (``FractionalPlan.starts``: torch's rule in the samples'
dtype); each window's flat cell indices are a broadcast sum of one term per spatial dim, so the
whole pooling is one ``take_along_axis`` and an ``argmax`` (NumPy's argmax returns the first
NaN, else the first maximum: the contract's winner).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pooladapt import lowering
from pooladapt.plan import FractionalPlan


def draw_samples(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Uniform samples in [0, 1) from NumPy's global generator, in x's floating dtype (float64
    for integer input)."""
    dtype = x.dtype if x.dtype.kind in "fV" else np.dtype(np.float64)
    u = np.random.random(shape)
    if dtype == np.float64:
        return u
    u = u.astype(dtype)
    # rounding to a narrower dtype may reach 1.0: such samples take the dtype's largest below 1
    if dtype.kind == "V":  # bfloat16 exists only where ml_dtypes is installed
        import ml_dtypes
        epsneg = float(ml_dtypes.finfo(dtype).epsneg)
    else:
        epsneg = float(np.finfo(dtype).epsneg)
    return np.where(u.astype(np.float32) >= 1, np.asarray(1 - epsneg, dtype=dtype), u)


def window_cells(plan: FractionalPlan, samples: np.ndarray) -> np.ndarray:
    """int64 per-plane flat indices of every window's cells, shape (N, C, *out, cells)."""
    spec, nd = plan.spec, plan.spec.ndim
    starts = plan.starts(samples)
    strides = lowering.plane_strides(plan.in_size)
    cells: np.ndarray | int = 0
    for d in range(nd):
        pos = starts[d][..., None] + np.arange(spec.window[d])  # (N, C, out_d, k_d)
        shape = [*pos.shape[:2]] + [1] * (2 * nd)
        shape[2 + d], shape[2 + nd + d] = plan.out_size[d], spec.window[d]
        cells = cells + (pos * strides[d]).reshape(shape)
    out = np.asarray(cells)
    return out.reshape(*out.shape[:2 + nd], math.prod(spec.window))


def fractional_max_pool(x: np.ndarray, plan: FractionalPlan, samples: np.ndarray) -> Any:
    spec = plan.spec
    cf = spec.data_format == "channels_first"
    xc = x if cf else np.moveaxis(x, -1, 1)
    n, c = xc.shape[:2]
    cells = window_cells(plan, np.asarray(samples)[:n])
    flat = xc.reshape(n, c, math.prod(plan.in_size))
    count = math.prod(plan.out_size) * math.prod(spec.window)
    values = np.take_along_axis(flat, cells.reshape(n, c, count), axis=2).reshape(cells.shape)
    keys = values.astype(np.float32) if values.dtype.name in lowering.HALF_DTYPES else values
    winner = np.argmax(keys, axis=-1)[..., None] if values.size else np.zeros(
        cells.shape[:-1] + (1,), np.int64)
    y = np.take_along_axis(values, winner, axis=-1)[..., 0]
    y = y if cf else np.moveaxis(y, 1, -1)
    if not spec.return_indices:
        return y
    idx = np.take_along_axis(cells, winner, axis=-1)[..., 0]
    return y, (idx if cf else np.moveaxis(idx, 1, -1))
