"""The benchmark cases: what is pooled, in which phase, and the targets each one reports on.

Shapes are logical NCHW; a channels_last case pools the NHWC array holding the same values.
``forward`` cases time one pooling call (issue 8); ``train`` cases time a training step, the
gradient of ``sum(pool(x) * w)`` with respect to ``x`` for a fixed random cotangent ``w``
(issue 19).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # pool | global | adaptive
    shape: tuple[int, ...]  # N, C, H, W
    mode: str
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    data_format: str = "channels_first"
    dtype: str = "float32"
    compiled: bool = False  # forward: also timed under the framework's compilers
    group: str = "native"  # tiny | native | features | head
    closest: dict[str, Any] | None = field(default=None, hash=False)
    # ^ kwargs of the closest native op, for a framework whose native op cannot express it
    phase: str = "forward"  # forward | train (every train case is also timed compiled)

    @property
    def id(self) -> str:
        fmt = "NCHW" if self.data_format == "channels_first" else "NHWC"
        return f"{self.name} {fmt} {self.dtype} {self.phase}"

    def input_shape(self) -> tuple[int, ...]:
        n, c, *spatial = self.shape
        return (n, c, *spatial) if self.data_format == "channels_first" else (n, *spatial, c)

    def make_input(self, seed: int = 0) -> np.ndarray:
        """Standard normal data in the case's dtype (float32 for bfloat16: the framework
        casts, as NumPy has no bfloat16 of its own)."""
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(self.input_shape(), dtype=np.float32)
        return x if self.dtype == "bfloat16" else x.astype(self.dtype)


STEM = (32, 64, 112, 112)
VGG = (32, 128, 56, 56)
PHOTO = (1, 3, 427, 640)
TRAIN_DTYPES = ("float32", "bfloat16", "float16")  # each framework times those it trains in


def forward_cases() -> list[Case]:
    out: list[Case] = []
    stem = dict(window=3, stride=2, padding=1)
    for fmt in ("channels_first", "channels_last"):
        c = dict(data_format=fmt)
        out += [
            Case("tiny 1x1x4x4 max 2", "pool", (1, 1, 4, 4), "max", dict(window=2), **c,
                 compiled=True, group="tiny"),
            Case("resnet stem max 3/2/1", "pool", STEM, "max", stem, **c, compiled=True),
            Case("resnet stem max 3/2/1", "pool", STEM, "max", stem, **c, dtype="float16"),
            Case("vgg max 2/2", "pool", VGG, "max", dict(window=2), **c),
            Case("photo max 10/2", "pool", PHOTO, "max", dict(window=10, stride=2), **c),
            Case("photo avg 10/2", "pool", PHOTO, "avg", dict(window=10, stride=2), **c),
            Case("global avg head 2048x7x7", "global", (32, 2048, 7, 7), "avg", **c,
                 group="head"),
            Case("adaptive avg 14->7", "adaptive", (32, 512, 14, 14), "avg",
                 dict(output_size=7), **c, group="head", closest=dict(window=2)),
            Case("adaptive avg 13->7", "adaptive", (32, 512, 13, 13), "avg",
                 dict(output_size=7), **c, group="head"),
            Case("stem max 'same' (pads 0,1)", "pool", STEM, "max",
                 dict(window=3, stride=2, padding="same"), **c, group="features",
                 closest=stem, compiled=True),
            Case("stem max ceil_mode", "pool", STEM, "max",
                 dict(window=3, stride=2, ceil_mode=True), **c, group="features",
                 closest=dict(window=3, stride=2, padding=1)),
            Case("stem avg 3/2/1 excl. pad", "pool", STEM, "avg", stem, **c, group="features",
                 closest=dict(stem, count_include_pad=True)),
            Case("vgg max 2/2 + indices", "pool", VGG, "max",
                 dict(window=2, return_indices=True), **c, group="features"),
        ]
    return out


def train_cases() -> list[Case]:
    """The training steps: the issue-19 reference rows on the ResNet stem, every dtype a
    framework trains in for the plain max and avg, and the tiny call's overhead."""
    out: list[Case] = []
    stem = dict(window=3, stride=2, padding=1)
    same = dict(window=3, stride=2, padding="same")
    t = dict(phase="train")
    for fmt in ("channels_first", "channels_last"):
        c = dict(data_format=fmt, **t)
        out.append(Case("tiny 1x1x4x4 max 2", "pool", (1, 1, 4, 4), "max", dict(window=2),
                        **c, group="tiny"))
        out += [Case("resnet stem max 3/2/1", "pool", STEM, "max", stem, **c, dtype=d)
                for d in TRAIN_DTYPES]
        out.append(Case("stem max 'same' (pads 0,1)", "pool", STEM, "max", same, **c,
                        closest=stem))
        out += [Case("stem avg 3/2/1 excl. pad", "pool", STEM, "avg", stem, **c, dtype=d,
                     closest=dict(stem, count_include_pad=True)) for d in TRAIN_DTYPES]
        out.append(Case("stem avg 'same' excl. pad", "pool", STEM, "avg", same, **c,
                        closest=stem))
        out.append(Case("stem lp2 3/2", "pool", STEM, "lp", dict(window=3, stride=2, p=2), **c))
    return out


def cases(quick: bool = False) -> list[Case]:
    """Every case, both data formats and phases; ``quick`` keeps a smoke run's worth: one
    forward case per group and the compiled ones, the float32 tiny and stem-max training steps."""
    out = forward_cases() + train_cases()
    if quick:
        seen, keep = set(), []
        for case in out:
            if case.phase == "train":
                if case.dtype == "float32" and (case.group == "tiny" or
                                                case.name.startswith("resnet stem")):
                    keep.append(case)
            elif (case.group, case.data_format) not in seen or case.compiled:
                seen.add((case.group, case.data_format))
                keep.append(case)
        out = keep
    return out
