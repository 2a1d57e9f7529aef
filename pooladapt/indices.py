"""Converters between pooladapt's canonical max-pool indices and other frameworks' formats.

Canonical (PyTorch's): for every output cell, the row-major flat index of its maximum inside
its own (unpadded) spatial plane, ``h * W + w`` in 2-D; the index array has the layout of the
pooled output.

* TensorFlow ``tf.nn.max_pool_with_argmax`` (NHWC only): ``(h * W + w) * C + c``, plus
  ``b * H * W * C`` with ``include_batch_in_index=True``; its index array is NHWC.
* ONNX ``MaxPool`` ``Indices``: flat over the whole NC* tensor, ``(n * C + c) * H * W + p``
  where ``p`` is ``h * W + w`` (``storage_order=0``) or ``w * H + h`` (``storage_order=1``,
  column-major inside the plane, plane offset still row-major); its index array is NC*.

Every function takes the *input* shape of the pooling (to know C and the plane) and its
``data_format``, and works on NumPy arrays.
"""

from __future__ import annotations

import math

import numpy as np

from pooladapt.spec import check_rank, normalize_data_format


def _geometry(input_shape: tuple[int, ...], data_format: str | None):
    ndim = len(input_shape) - 2
    if ndim not in (1, 2, 3):
        raise ValueError(f"input_shape must be batch + channels + 1 to 3 spatial dims, "
                         f"got {tuple(input_shape)!r}")
    fmt = normalize_data_format(data_format, ndim)
    check_rank(tuple(input_shape), ndim, fmt)
    if fmt == "channels_first":
        n, c, *plane = input_shape
    else:
        n, *plane, c = input_shape
    return fmt, int(n), int(c), tuple(int(s) for s in plane)


def _channels_last(idx: np.ndarray, fmt: str) -> np.ndarray:
    return np.moveaxis(idx, 1, -1) if fmt == "channels_first" else idx


def _channels_first(idx: np.ndarray, fmt: str) -> np.ndarray:
    return idx if fmt == "channels_first" else np.moveaxis(idx, -1, 1)


def _check_indices(idx, n: int, c: int, fmt: str, ndim: int) -> np.ndarray:
    idx = np.asarray(idx)
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
    check_rank(idx.shape, ndim, fmt)
    return idx.astype(np.int64, copy=False)


def to_tf_argmax(indices, input_shape, data_format: str | None = None,
                 include_batch_in_index: bool = False) -> np.ndarray:
    """Canonical indices -> TensorFlow ``max_pool_with_argmax`` indices (NHWC array)."""
    fmt, n, c, plane = _geometry(input_shape, data_format)
    idx = _channels_last(_check_indices(indices, n, c, fmt, len(plane)), fmt)
    ch = np.arange(c, dtype=np.int64)
    out = idx * c + ch
    if include_batch_in_index:
        batch = np.arange(idx.shape[0], dtype=np.int64).reshape((-1,) + (1,) * (idx.ndim - 1))
        out = out + batch * (math.prod(plane) * c)
    return out


def from_tf_argmax(argmax, input_shape, data_format: str | None = None,
                   include_batch_in_index: bool = False) -> np.ndarray:
    """TensorFlow ``max_pool_with_argmax`` indices (NHWC) -> canonical, in ``data_format``."""
    fmt, n, c, plane = _geometry(input_shape, data_format)
    arg = np.asarray(argmax).astype(np.int64)
    check_rank(arg.shape, len(plane), "channels_last")
    if include_batch_in_index:
        arg = arg % (math.prod(plane) * c)
    canonical = arg // c
    return np.moveaxis(canonical, -1, 1) if fmt == "channels_first" else canonical


def _swap_storage(p: np.ndarray, plane: tuple[int, ...]) -> np.ndarray:
    """Row-major flat index in ``plane`` -> column-major flat index of the same cell."""
    coords = np.unravel_index(p, plane)
    return np.ravel_multi_index(coords, plane, order="F")


def to_onnx(indices, input_shape, data_format: str | None = None,
            storage_order: int = 0) -> np.ndarray:
    """Canonical indices -> ONNX ``MaxPool`` ``Indices`` (NC* array)."""
    fmt, n, c, plane = _geometry(input_shape, data_format)
    if storage_order not in (0, 1):
        raise ValueError(f"storage_order must be 0 or 1, got {storage_order!r}")
    idx = _channels_first(_check_indices(indices, n, c, fmt, len(plane)), fmt)
    if storage_order == 1:
        idx = _swap_storage(idx, plane)
    nb = idx.shape[0]
    offset = (np.arange(nb, dtype=np.int64)[:, None] * c + np.arange(c, dtype=np.int64)[None])
    offset = offset.reshape((nb, c) + (1,) * len(plane)) * math.prod(plane)
    return idx + offset


def from_onnx(onnx_indices, input_shape, data_format: str | None = None,
              storage_order: int = 0) -> np.ndarray:
    """ONNX ``MaxPool`` ``Indices`` (NC*) -> canonical, in ``data_format``."""
    fmt, n, c, plane = _geometry(input_shape, data_format)
    if storage_order not in (0, 1):
        raise ValueError(f"storage_order must be 0 or 1, got {storage_order!r}")
    idx = np.asarray(onnx_indices).astype(np.int64)
    check_rank(idx.shape, len(plane), "channels_first")
    p = idx % math.prod(plane)
    if storage_order == 1:
        coords = np.unravel_index(p, plane, order="F")
        p = np.ravel_multi_index(coords, plane)
    return p if fmt == "channels_first" else np.moveaxis(p, 1, -1)
