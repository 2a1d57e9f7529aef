"""The benchmark cases: what is pooled, and the targets of issue 8 each one reports on.

Shapes are logical NCHW; a channels_last case pools the NHWC array holding the same values.
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
    compiled: bool = False  # also timed under the framework's compiler
    group: str = "native"  # tiny | native | features | head
    closest: dict[str, Any] | None = field(default=None, hash=False)
    # ^ kwargs of the closest native op, for a framework whose native op cannot express it

    @property
    def id(self) -> str:
        fmt = "NCHW" if self.data_format == "channels_first" else "NHWC"
        return f"{self.name} {fmt} {self.dtype}"

    def input_shape(self) -> tuple[int, ...]:
        n, c, *spatial = self.shape
        return (n, c, *spatial) if self.data_format == "channels_first" else (n, *spatial, c)

    def make_input(self, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.standard_normal(self.input_shape(), dtype=np.float32).astype(self.dtype)


STEM = (32, 64, 112, 112)
VGG = (32, 128, 56, 56)
PHOTO = (1, 3, 427, 640)


def cases(quick: bool = False) -> list[Case]:
    """Every case, both data formats; ``quick`` keeps one of each group (a smoke run)."""
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
                 closest=stem),
            Case("stem max ceil_mode", "pool", STEM, "max",
                 dict(window=3, stride=2, ceil_mode=True), **c, group="features",
                 closest=dict(window=3, stride=2, padding=1)),
            Case("stem avg 3/2/1 excl. pad", "pool", STEM, "avg", stem, **c, group="features",
                 closest=dict(stem, count_include_pad=True)),
            Case("vgg max 2/2 + indices", "pool", VGG, "max",
                 dict(window=2, return_indices=True), **c, group="features"),
        ]
    if quick:
        seen, keep = set(), []
        for case in out:
            if (case.group, case.data_format) not in seen or case.compiled:
                seen.add((case.group, case.data_format))
                keep.append(case)
        out = keep
    return out
