"""Fractional max pooling on JAX (PyTorch's meaning; JAX has none): every window's cells
gathered from its plane, one program per plan, eager or inside the caller's ``jax.jit``.

* **samples**: JAX has no global random state, so :func:`draw_samples` takes its key from
  NumPy's global generator (one 32-bit seed per call: ``np.random.seed`` makes a draw
  reproducible, as on the NumPy backend; TF and MXNet use their framework's global
  generator, which JAX has not). Inside a trace it raises: a key drawn while tracing would be
  a constant of the compiled program, the same windows at every call. Under ``jax.jit``
  pass ``random_samples`` (``jax.random.uniform(key, (N, C, ndim), dtype)``).
* **starts**: the plan's rule (``FractionalPlan.starts``) as JAX ops in the samples' dtype,
  one rounding per operation as NumPy and ATen do: ``alpha`` and ``arange`` are the plan's
  own constants; float16 and bfloat16 are computed in float32 and rounded to their precision
  after each operation with ``lax.reduce_precision`` (XLA may compute 16-bit arithmetic in
  float32 without those roundings; float32 holds 2p + 2 bits of a 16-bit float's p, so the
  double rounding is the 16-bit operation's own), then truncated to integers.
* **winner**: ``argmax`` of the cells' integer order keys (``quirks.order_key``: every NaN
  one key above +inf, -0.0 equal to 0.0, subnormals exact where XLA flushes them), which
  returns the first of equal keys: a window's first NaN, else its first maximum.
* **value**: gathered again from the plane at the winner, so the gradient goes to that cell
  only (the gather's transpose, a scatter-add).

Indices are int64 per-plane flat positions, in the input's layout, like the other pools'.
64-bit input and samples run in ``quirks.x64_scope``, as the backend's pools do.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pooladapt.backends.jax import ops, quirks
from pooladapt.plan import FRACTIONAL_SAMPLE_DIMS, FractionalPlan


def draw_samples(x: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
    """Uniform samples in [0, 1) from ``jax.random.uniform`` with a key seeded from NumPy's
    global generator, in x's floating dtype (float64 for integer input). A draw that rounds
    up to 1 takes the dtype's largest value below 1. Raises ValueError inside a trace."""
    if isinstance(x, jax.core.Tracer):
        raise ValueError(
            "fractional max pooling inside jax.jit (or another JAX trace) needs "
            "random_samples: JAX has no global random state, and samples drawn while tracing "
            "would be the same at every call; pass random_samples=jax.random.uniform(key, "
            f"{tuple(shape)!r}, dtype)")
    dtype = np.dtype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else np.dtype("float64")
    key = jax.random.key(int(np.random.randint(0, 2**32, dtype=np.uint64)))
    with quirks.x64_scope(dtype):
        u = jax.random.uniform(key, shape, dtype)
        return jnp.minimum(u, jnp.asarray(1 - jnp.finfo(dtype).epsneg, dtype))


_BITS = {np.dtype(jnp.float16): (5, 10), np.dtype(jnp.bfloat16): (8, 7)}
"""Exponent and mantissa bits of the 16-bit floats, whose arithmetic the starts emulate."""


def _starts(plan: FractionalPlan, u: jax.Array, d: int, itype: np.dtype) -> jax.Array:
    """Window starts (N, C, out) along spatial dim ``d`` for samples u (N, C): the plan's rule
    in u's dtype, 16-bit floats emulated in float32 rounded after each operation."""
    n, k, out = plan.in_size[d], plan.spec.window[d], plan.out_size[d]
    last = jnp.full((*u.shape, 1), n - k, itype)
    dtype = np.dtype(u.dtype)
    alpha = plan.alpha(d, dtype)
    if alpha is None:
        return last
    i = np.arange(out - 1, dtype=dtype)
    if dtype in _BITS:
        def rounded(v: jax.Array) -> jax.Array:
            return lax.reduce_precision(v, *_BITS[dtype])

        uf, a = u.astype(jnp.float32), np.float32(alpha)  # exact
        scaled = rounded(rounded(i.astype(np.float32) + uf[..., None]) * a)
        base = rounded(uf * a)
    else:
        scaled, base = (i + u[..., None]) * alpha, u * alpha
    first = scaled.astype(itype) - base.astype(itype)[..., None]
    return jnp.concatenate([first, last], axis=-1)


def window_cells(plan: FractionalPlan, samples: jax.Array, itype: np.dtype) -> jax.Array:
    """Per-plane flat indices of every window's cells, shape (N, C, windows, cells), windows
    and cells in row-major order."""
    spec, nd = plan.spec, plan.spec.ndim
    cells: jax.Array | int = 0
    for d in range(nd):
        u = samples[..., FRACTIONAL_SAMPLE_DIMS[nd].index(d)]
        pos = _starts(plan, u, d, itype)[..., None] + jnp.arange(spec.window[d], dtype=itype)
        pos = pos * math.prod(plan.in_size[d + 1:])  # (N, C, out_d, k_d)
        shape = [*pos.shape[:2]] + [1] * (2 * nd)
        shape[2 + d], shape[2 + nd + d] = plan.out_size[d], spec.window[d]
        cells = cells + pos.reshape(shape)
    out = jnp.asarray(cells)
    return out.reshape(*out.shape[:2], math.prod(plan.out_size), math.prod(spec.window))


@partial(jax.jit, static_argnames=("plan",))
def _pool(x: jax.Array, samples: jax.Array, plan: FractionalPlan) -> tuple[jax.Array, jax.Array]:
    """(values, int indices), both (N, C, *out) in NC* layout, for NC* ``x``."""
    n, c = x.shape[:2]
    flat = x.reshape(n, c, math.prod(plan.in_size))
    cells = window_cells(plan, samples[:n], ops.index_type(plan.in_size))
    values = jnp.take_along_axis(flat, cells.reshape(n, c, math.prod(cells.shape[2:])),
                                 axis=2).reshape(cells.shape)
    first = jnp.argmax(quirks.order_key(values), axis=-1)  # the first of the largest keys
    idx = jnp.take_along_axis(cells, first[..., None], axis=-1)[..., 0]  # (N, C, windows)
    y = jnp.take_along_axis(flat, idx, axis=2)  # from the plane: the gradient's one cell
    out = (n, c, *plan.out_size)
    return y.reshape(out), idx.reshape(out)


def fractional_max_pool(x: jax.Array, plan: FractionalPlan, samples: jax.Array) -> Any:
    spec = plan.spec
    cf = spec.data_format == "channels_first"
    with quirks.x64_scope(x.dtype, samples.dtype, ops.index_type(plan.in_size)):
        y, idx = _pool(x if cf else jnp.moveaxis(x, -1, 1), samples, plan)
        y = y if cf else jnp.moveaxis(y, 1, -1)
        if not spec.return_indices:
            return y
        return y, quirks.int64(idx if cf else jnp.moveaxis(idx, 1, -1))
