"""pooladapt's torch layers under DistributedDataParallel: 2 gloo processes on the CPU.

A small model built with ``pooladapt.layers.torch`` (max pooling with ``same`` padding and
ceil mode, indices and ``MaxUnpool2d``, LPPool, average with ``count_include_pad=False``,
adaptive max and average) is wrapped in DDP in two processes (this file run as a script, one
per rank, meeting through a ``file://`` rendezvous); each takes half the batch, and the
gradients DDP averages over the two equal the gradient one process takes over the whole
batch (to float rounding: the two halves are summed in another order).
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

from pooladapt.layers import torch as layers

WORLD = 2
BATCH = 4  # BATCH // WORLD rows per rank


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.max = layers.MaxPool2d(3, stride=2, padding="same", ceil_mode=True,
                                    return_indices=True)
        self.unpool = layers.MaxUnpool2d(3, stride=2, padding=1)
        self.lp = layers.LPPool2d(2, 2, stride=1)
        self.avg = layers.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.adaptive_max = layers.AdaptiveMaxPool2d((3, 2))
        self.adaptive_avg = layers.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * 3 * 2 + 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv(x))
        y, idx = self.max(x)
        x = x + self.unpool(y, idx, output_size=x.shape[-2:])
        x = self.avg(self.lp(x))
        return self.head(torch.cat([self.adaptive_max(x).flatten(1),
                                    self.adaptive_avg(x).flatten(1)], 1))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(18)
    return (torch.randn(BATCH, 3, 11, 10, generator=g, dtype=torch.float64),
            torch.randn(BATCH, 2, generator=g, dtype=torch.float64))


def _model() -> Net:
    torch.manual_seed(0)
    return Net().double()  # float64: a half batch's sums round apart from the whole's by ~1e-16


def _gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    nn.functional.mse_loss(model(x), target).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def _rank(rank: int, rendezvous: str, out: str) -> None:
    """One DDP process: its half of the batch; its averaged gradients saved to ``out``."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        model = nn.parallel.DistributedDataParallel(_model())
        x, target = _data()
        rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        gradients = _gradients(model, x[rows], target[rows])
        # DDP's reducer is freed while its process group lives: freed after
        # destroy_process_group, it hung now and then (1 run in ~10 here, and on CI).
        del model
        torch.save(gradients, out)
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_equal_the_single_process_gradients(tmp_path):
    env = dict(os.environ)
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the loopback: no network needed
    outs = [tmp_path / f"rank{r}.pt" for r in range(WORLD)]
    rendezvous = str(tmp_path / "rendezvous")
    procs = [subprocess.Popen([sys.executable, "-X", "faulthandler", __file__, str(r), rendezvous,
                               str(outs[r])], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(WORLD)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGABRT)  # faulthandler prints where it hung
            logs.append(p.communicate()[0])
    assert all(p.returncode == 0 for p in procs), "\n".join(
        f"rank {r} exited with {p.returncode}:\n{log}"
        for r, (p, log) in enumerate(zip(procs, logs)))

    want = _gradients(_model(), *_data())
    for out in outs:
        got = torch.load(out)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert any(w.abs().sum() > 0 for w in want)


def test_the_model_uses_pooladapt_layers():
    pooling = [m for m in _model().modules() if type(m).__module__ == layers.__name__]
    assert len(pooling) == 6


if __name__ == "__main__":
    if len(sys.argv) != 4:
        pytest.exit("usage: test_distributed.py RANK RENDEZVOUS_FILE OUT")
    _rank(int(sys.argv[1]), sys.argv[2], sys.argv[3])
