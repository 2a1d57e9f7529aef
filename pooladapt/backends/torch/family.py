"""The family ops on torch: max unpooling (``pooladapt.family.max_unpool`` on torch's
primitives: a ``scatter`` into the plane, on a bit view where autograd has no kernel) and
fractional max pooling (PyTorch's ``fractional_max_pool2d/3d`` is the canonical meaning, so
its op computes it where it can).

* **native**: ``F.fractional_max_pool2d/3d`` with the samples, in eager calls, where torch takes
  them (floating input, samples of the input's dtype, a non-empty input, and in 3-D an output
  at least one cell smaller than torch's strict 3-D size check wants). Its windows, values,
  first-maximum indices and gradient are the contract's, except for NaN: torch's index (and
  gradient) goes to a window's *last* NaN, so an output holding NaN is computed again by the
  gather below.
* **gather** (everything else: integers, other sample dtypes, NaN, ``torch.compile``): every
  window's cells gathered from the plane (the starts computed from the samples in their own
  dtype, op by op as ATen does), the first NaN else the first maximum by ``argmax``, the value
  gathered again from the input (so autograd sends the gradient to that cell).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F

from pooladapt import family as shared
from pooladapt.backends.torch import quirks
from pooladapt.backends.torch.compile import compiling
from pooladapt.layouts import FROM_NC, TO_NC
from pooladapt.plan import FRACTIONAL_SAMPLE_DIMS, FractionalPlan


def draw_samples(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """torch's own draw (``torch.rand`` in the input's dtype, on its device), so a layer draws
    what ``torch.nn.FractionalMaxPool*d`` draws from the same generator state; float64 for
    integer input."""
    dtype = x.dtype if x.is_floating_point() else torch.float64
    return torch.rand(shape, dtype=dtype, device=x.device)


def _native_fits(xc: torch.Tensor, plan: FractionalPlan, samples: torch.Tensor) -> bool:
    strict = plan.spec.ndim == 3  # torch's 3-D check wants out + k - 1 < in
    return (not compiling() and xc.is_floating_point() and samples.dtype == xc.dtype
            and xc.numel() > 0 and all(o + k - 1 < n or not strict for o, k, n in zip(
                plan.out_size, plan.spec.window, plan.in_size)))


def fractional_max_pool(x: torch.Tensor, plan: FractionalPlan, samples: torch.Tensor):
    spec = plan.spec
    perm = None if spec.data_format == "channels_first" else TO_NC[x.dim()]
    xc = x if perm is None else x.permute(perm)
    y = idx = None
    if _native_fits(xc, plan, samples):
        fn = getattr(F, f"fractional_max_pool{spec.ndim}d")
        y, idx = fn(xc, spec.window, output_size=plan.out_size, return_indices=True,
                    _random_samples=samples)
        if bool(torch.isnan(y).any()):
            y = idx = None
    if y is None or idx is None:
        y, idx = _gather(xc, plan, samples[:xc.shape[0]])
    if perm is not None:
        y, idx = y.permute(FROM_NC[y.dim()]), idx.permute(FROM_NC[y.dim()])
    return (y, idx) if spec.return_indices else y


def _starts(u: torch.Tensor, n: int, out: int, k: int) -> torch.Tensor:
    """Window starts (..., out) along a dim of n cells for samples u: ATen's interval rule in
    u's dtype (each operation rounded to it)."""
    last = torch.full((*u.shape, 1), n - k, dtype=torch.int64, device=u.device)
    if out == 1:
        return last
    alpha = torch.full((), n - k, dtype=u.dtype, device=u.device) / (out - 1)
    i = torch.arange(out - 1, dtype=u.dtype, device=u.device)
    first = ((i + u[..., None]) * alpha).long() - (u * alpha).long()[..., None]
    return torch.cat([first, last], dim=-1)


def _gather(xc: torch.Tensor, plan: FractionalPlan, samples: torch.Tensor):
    spec, nd = plan.spec, plan.spec.ndim
    n, c = xc.shape[:2]
    cells = None
    for d in range(nd):
        u = samples[..., FRACTIONAL_SAMPLE_DIMS[nd].index(d)]
        k = spec.window[d]
        pos = _starts(u, plan.in_size[d], plan.out_size[d], k)[..., None] + torch.arange(
            k, device=xc.device)
        shape = [n, c] + [1] * (2 * nd)
        shape[2 + d], shape[2 + nd + d] = plan.out_size[d], k
        term = (pos * math.prod(plan.in_size[d + 1:])).reshape(shape)
        cells = term if cells is None else cells + term
    assert cells is not None
    cells = cells.reshape(n, c, *plan.out_size, math.prod(spec.window))
    plane, count = math.prod(plan.in_size), cells.numel() // max(n * c, 1)
    values = xc.reshape(n, c, plane).gather(2, cells.reshape(n, c, count)).view(cells.shape)
    if values.is_floating_point():
        nan = torch.isnan(values)
        winner = torch.where(nan.any(-1), nan.to(torch.uint8).argmax(-1), values.argmax(-1))
    else:
        winner = values.argmax(-1)
    winner = winner.unsqueeze(-1)
    return values.gather(-1, winner).squeeze(-1), cells.gather(-1, winner).squeeze(-1)


def _scatter(values: torch.Tensor, index: torch.Tensor, size: int, first: bool) -> torch.Tensor:
    """``scatter`` of (N, C, cells) rows into zeros with a spare last cell, cut off; on a bit
    view only where the dtype needs one (it has no autograd)."""
    bits = quirks.scatter_view(values.dtype)
    src = values if bits is None else values.view(bits)
    out = src.new_zeros((*index.shape[:2], size + 1)).scatter(2, index, src)[:, :, :size]
    return out if bits is None else out.view(values.dtype)


UNPOOL = shared.UnpoolOps(
    to_first=lambda a: a.permute(TO_NC[a.dim()]), to_last=lambda a: a.permute(FROM_NC[a.dim()]),
    shape=lambda a: tuple(a.shape), reshape=lambda a, shape: a.reshape(shape),
    as_index=lambda i: i.long(), where=torch.where, scatter=_scatter,
    top=lambda i: None if compiling() or not i.numel() else int(i.max()))  # eager only
max_unpool = partial(shared.max_unpool, UNPOOL)
