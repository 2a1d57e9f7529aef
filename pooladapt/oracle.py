"""The NumPy oracle: the canonical semantics of API.md written to be read, not to be fast.

Every function loops over output cells and window taps explicitly and computes in float64
(integers stay exact for max). The padding and output size come from the shared plan
(``pooladapt.spec``); everything else (which taps count, the divisor, the winner of a max,
NaN, gradients) is spelled out here. Conformance compares each backend with these functions;
the tests check them against hand-computed values.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from pooladapt.plan import FRACTIONAL_SAMPLE_DIMS, fractional_starts
from pooladapt.spec import AdaptiveSpec, FractionalSpec, GlobalSpec, PoolSpec, UnpoolSpec


def _to_channels_first(x: np.ndarray, channels_first: bool) -> np.ndarray:
    return x if channels_first else np.moveaxis(x, -1, 1)


def _from_channels_first(x: np.ndarray, channels_first: bool) -> np.ndarray:
    return x if channels_first else np.moveaxis(x, 1, -1)


def _is_integer(x: np.ndarray) -> bool:
    return np.issubdtype(x.dtype, np.integer)


def _lowest(dtype: np.dtype):
    return np.iinfo(dtype).min if np.issubdtype(dtype, np.integer) else -np.inf


def _window(spec: PoolSpec, plan, out_pos: tuple[int, ...]):
    """Yield ``(coordinate, kind)`` for every tap of one window in row-major order.

    kind is ``"real"`` (inside the input), ``"pad"`` (inside the padding) or ``"extra"``
    (past the padded input, reached only through ceil mode).
    """
    per_dim = []
    for d in range(spec.ndim):
        start = out_pos[d] * spec.stride[d] - plan.pads[d][0]
        per_dim.append([start + t * spec.dilation[d] for t in range(spec.window[d])])
    for coord in itertools.product(*per_dim):
        if all(0 <= c < n for c, n in zip(coord, plan.in_size)):
            kind = "real"
        elif all(-lo <= c < n + hi for c, n, (lo, hi) in zip(coord, plan.in_size, plan.pads)):
            kind = "pad"
        else:
            kind = "extra"
        yield coord, kind


def _sum(values) -> float:
    """Exactly rounded sum; inf - inf is NaN as in IEEE arithmetic."""
    try:
        return math.fsum(values)
    except ValueError:
        return math.nan


def _window_max(values: list, coords: list, dtype):
    """First NaN if any, else the first maximum in window order. (value, coord or None)."""
    best, best_coord = _lowest(dtype), None
    for v, c in zip(values, coords):
        if isinstance(v, float) and math.isnan(v):
            return v, c
        if best_coord is None or v > best:
            best, best_coord = v, c
    return best, best_coord


def pool(x: np.ndarray, spec: PoolSpec):
    """Pool ``x`` (NumPy, spec's data format). Returns float64 (max on integers keeps the dtype);
    with ``return_indices`` also int64 per-plane flat indices (-1 for an all-padding window)."""
    x = np.asarray(x)
    plan = spec.plan(x.shape)
    xc = _to_channels_first(x, spec.channels_first)
    n_batch, n_chan = xc.shape[:2]
    integer_max = spec.mode == "max" and _is_integer(xc)
    out_dtype = xc.dtype if integer_max else np.float64
    y = np.zeros((n_batch, n_chan, *plan.out_size), dtype=out_dtype)
    idx = np.full((n_batch, n_chan, *plan.out_size), -1, dtype=np.int64)
    for n, c in itertools.product(range(n_batch), range(n_chan)):
        plane = xc[n, c] if integer_max else xc[n, c].astype(np.float64)
        for o in itertools.product(*(range(s) for s in plan.out_size)):
            taps = list(_window(spec, plan, o))
            real = [coord for coord, kind in taps if kind == "real"]
            values = [plane[coord].item() for coord in real]
            if spec.mode == "max":
                y[(n, c, *o)], winner = _window_max(values, real, xc.dtype)
                if winner is not None:
                    idx[(n, c, *o)] = np.ravel_multi_index(winner, plan.in_size)
            elif spec.mode == "avg":
                counted = taps if spec.count_include_pad else [t for t in taps if t[1] == "real"]
                divisor = sum(1 for _, kind in counted if kind != "extra")
                y[(n, c, *o)] = _sum(values) / divisor if divisor else math.nan
            else:
                y[(n, c, *o)] = _sum(abs(v) ** spec.p for v in values) ** (1.0 / spec.p)
    y = _from_channels_first(y, spec.channels_first)
    if spec.return_indices:
        return y, _from_channels_first(idx, spec.channels_first)
    return y


def pool_vjp(x: np.ndarray, spec: PoolSpec, grad_out: np.ndarray) -> np.ndarray:
    """Vector-Jacobian product of :func:`pool` (float64, shape of x): max sends each output's
    gradient to its winning cell, avg spreads it over the counted cells divided by the
    divisor, lp sends ``g * sign(x) * |x|**(p-1) / y**(p-1)`` (0 where x == 0 or y == 0)."""
    x = np.asarray(x, dtype=np.float64)
    plan = spec.plan(x.shape)
    xc = _to_channels_first(x, spec.channels_first)
    gc = _to_channels_first(np.asarray(grad_out, dtype=np.float64), spec.channels_first)
    dx = np.zeros_like(xc)
    for n, c in itertools.product(range(xc.shape[0]), range(xc.shape[1])):
        plane = xc[n, c]
        for o in itertools.product(*(range(s) for s in plan.out_size)):
            g = gc[(n, c, *o)]
            taps = list(_window(spec, plan, o))
            real = [coord for coord, kind in taps if kind == "real"]
            if spec.mode == "max":
                _, winner = _window_max([plane[r] for r in real], real, xc.dtype)
                if winner is not None:
                    dx[(n, c, *winner)] += g
            elif spec.mode == "avg":
                counted = taps if spec.count_include_pad else [t for t in taps if t[1] == "real"]
                divisor = sum(1 for _, kind in counted if kind != "extra")
                for r in real:
                    dx[(n, c, *r)] += g / divisor
            else:
                y = sum(abs(plane[r]) ** spec.p for r in real) ** (1.0 / spec.p)
                for r in real:
                    v = plane[r]
                    if y > 0 and v != 0:
                        slope = np.sign(v) * abs(v) ** (spec.p - 1) / y ** (spec.p - 1)
                        dx[(n, c, *r)] += g * slope
    return _from_channels_first(dx, spec.channels_first)


def global_pool(x: np.ndarray, spec: GlobalSpec) -> np.ndarray:
    """Reduce every spatial dim: max (NaN propagates), mean, or ``(sum |x|**p) ** (1/p)``."""
    x = np.asarray(x)
    axes = spec.spatial_axes
    if spec.mode == "max":  # in float64: ml_dtypes' bfloat16 max warns on NaN
        return np.max(x if _is_integer(x) else x.astype(np.float64), axis=axes,
                      keepdims=spec.keepdims)
    xf = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is NaN, |x|**p may be inf
        if spec.mode == "avg":
            return np.mean(xf, axis=axes, keepdims=spec.keepdims)
        return np.sum(np.abs(xf) ** spec.p, axis=axes, keepdims=spec.keepdims) ** (1.0 / spec.p)


def adaptive_pool(x: np.ndarray, spec: AdaptiveSpec):
    """Adaptive max/avg with PyTorch's bins; max ties and NaN as in :func:`pool`."""
    x = np.asarray(x)
    plan = spec.plan(x.shape)
    cf = spec.data_format == "channels_first"
    xc = _to_channels_first(x, cf)
    integer_max = spec.mode == "max" and _is_integer(xc)
    y = np.zeros((*xc.shape[:2], *plan.out_size), dtype=xc.dtype if integer_max else np.float64)
    idx = np.zeros(y.shape, dtype=np.int64)
    for n, c in itertools.product(range(xc.shape[0]), range(xc.shape[1])):
        plane = xc[n, c] if integer_max else xc[n, c].astype(np.float64)
        for o in itertools.product(*(range(s) for s in plan.out_size)):
            ranges = [range(plan.starts[d][o[d]], plan.ends[d][o[d]]) for d in range(spec.ndim)]
            cells = list(itertools.product(*ranges))
            values = [plane[cell].item() for cell in cells]
            if spec.mode == "max":
                y[(n, c, *o)], winner = _window_max(values, cells, xc.dtype)
                idx[(n, c, *o)] = np.ravel_multi_index(winner, plan.in_size)
            else:
                y[(n, c, *o)] = _sum(values) / len(values)
    y = _from_channels_first(y, cf)
    return (y, _from_channels_first(idx, cf)) if spec.return_indices else y


def adaptive_vjp(x: np.ndarray, spec: AdaptiveSpec, grad_out: np.ndarray) -> np.ndarray:
    """Vector-Jacobian product of :func:`adaptive_pool` (float64)."""
    x = np.asarray(x, dtype=np.float64)
    plan = spec.plan(x.shape)
    cf = spec.data_format == "channels_first"
    xc = _to_channels_first(x, cf)
    gc = _to_channels_first(np.asarray(grad_out, dtype=np.float64), cf)
    dx = np.zeros_like(xc)
    for n, c in itertools.product(range(xc.shape[0]), range(xc.shape[1])):
        for o in itertools.product(*(range(s) for s in plan.out_size)):
            ranges = [range(plan.starts[d][o[d]], plan.ends[d][o[d]]) for d in range(spec.ndim)]
            cells = list(itertools.product(*ranges))
            g = gc[(n, c, *o)]
            if spec.mode == "max":
                _, winner = _window_max([xc[(n, c, *cell)] for cell in cells], cells, xc.dtype)
                dx[(n, c, *winner)] += g
            else:
                for cell in cells:
                    dx[(n, c, *cell)] += g / len(cells)
    return _from_channels_first(dx, cf)


def max_unpool(y: np.ndarray, indices: np.ndarray, spec: UnpoolSpec,
               out_size: tuple[int, ...]) -> np.ndarray:
    """Zeros of spatial ``out_size`` with each ``y`` value written at its per-plane flat index;
    negative indices (all-padding windows) are skipped."""
    cf = spec.data_format == "channels_first"
    yc = _to_channels_first(np.asarray(y), cf)
    ic = _to_channels_first(np.asarray(indices), cf)
    plane_size = math.prod(out_size)
    out = np.zeros((*yc.shape[:2], plane_size), dtype=yc.dtype)
    for n, c in itertools.product(range(yc.shape[0]), range(yc.shape[1])):
        for pos in itertools.product(*(range(s) for s in yc.shape[2:])):
            i = int(ic[(n, c, *pos)])
            if i < 0:
                continue
            if i >= plane_size:
                raise ValueError(f"index {i} is outside the output plane {out_size!r}")
            out[n, c, i] = yc[(n, c, *pos)]
    return _from_channels_first(out.reshape(*yc.shape[:2], *out_size), cf)


# ------------------------------------------------------------------------ fractional max pooling


def _fractional_windows(spec: FractionalSpec, x_shape: tuple[int, ...], samples: np.ndarray):
    """Yield ``(n, c, output position, window cells in row-major order)`` of every window."""
    plan = spec.plan(x_shape)
    order = FRACTIONAL_SAMPLE_DIMS[spec.ndim]
    n_batch = x_shape[0]
    n_chan = x_shape[spec.channel_axis]
    for n, c in itertools.product(range(n_batch), range(n_chan)):
        starts = [fractional_starts(samples[n, c, order.index(d)], plan.in_size[d],
                                    plan.out_size[d], spec.window[d]) for d in range(spec.ndim)]
        for o in itertools.product(*(range(s) for s in plan.out_size)):
            ranges = [range(starts[d][o[d]], starts[d][o[d]] + spec.window[d])
                      for d in range(spec.ndim)]
            yield n, c, o, list(itertools.product(*ranges))


def fractional_max_pool(x: np.ndarray, spec: FractionalSpec, samples: np.ndarray):
    """Fractional max pooling with the given samples (N >= batch, C, ndim; their dtype is the
    window rule's precision): the max of every window (first NaN, else first maximum) and with
    ``return_indices`` its int64 per-plane flat index."""
    x = np.asarray(x)
    cf = spec.data_format == "channels_first"
    xc = _to_channels_first(x, cf)
    plan = spec.plan(x.shape)
    integer = _is_integer(xc)
    y = np.zeros((*xc.shape[:2], *plan.out_size), dtype=xc.dtype if integer else np.float64)
    idx = np.zeros(y.shape, dtype=np.int64)
    for n, c, o, cells in _fractional_windows(spec, x.shape, np.asarray(samples)):
        plane = xc[n, c] if integer else xc[n, c].astype(np.float64)
        y[(n, c, *o)], winner = _window_max([plane[cell].item() for cell in cells], cells,
                                            xc.dtype)
        idx[(n, c, *o)] = np.ravel_multi_index(winner, plan.in_size)
    y = _from_channels_first(y, cf)
    return (y, _from_channels_first(idx, cf)) if spec.return_indices else y


def fractional_vjp(x: np.ndarray, spec: FractionalSpec, samples: np.ndarray,
                   grad_out: np.ndarray) -> np.ndarray:
    """Vector-Jacobian product of :func:`fractional_max_pool` (float64): each output's gradient
    goes to its window's winning cell."""
    x = np.asarray(x, dtype=np.float64)
    cf = spec.data_format == "channels_first"
    xc = _to_channels_first(x, cf)
    gc = _to_channels_first(np.asarray(grad_out, dtype=np.float64), cf)
    dx = np.zeros_like(xc)
    for n, c, o, cells in _fractional_windows(spec, x.shape, np.asarray(samples)):
        _, winner = _window_max([xc[(n, c, *cell)] for cell in cells], cells, xc.dtype)
        dx[(n, c, *winner)] += gc[(n, c, *o)]
    return _from_channels_first(dx, cf)
