"""The conformance cases: dtypes, the :class:`Case` (one entry-point call on one deterministic
input) and the systematic grid, plus the feature tags a case exercises.

A case is plain data (its ``repr`` rebuilds it), so a failing case is reproduced by pasting it.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pooladapt.spec import make_spec

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
GRADIENT_DTYPES = ("float64", "float32", "float16", "bfloat16")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")

# Unit roundoff and smallest normal number of each float dtype.
EPS = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
TINY = {"float64": 2.0**-1022, "float32": 2.0**-126, "float16": 2.0**-14, "bfloat16": 2.0**-126}

# (rtol, atol) for forward results that are not bit-exact.
TOLERANCE = {
    "float64": (1e-9, 1e-12),
    "float32": (2e-5, 2e-6),
    "float16": (2e-3, 2e-3),
    "bfloat16": (1.6e-2, 1.6e-2),
}

GEOMETRIES: dict[int, list[dict[str, Any]]] = {
    1: [dict(window=2), dict(window=3, stride=2), dict(window=3, stride=1),
        dict(window=2, stride=1, dilation=2), dict(window=3, stride=2, dilation=2)],
    2: [dict(window=2), dict(window=(3, 2), stride=(2, 1)), dict(window=3, stride=1),
        dict(window=(2, 3), stride=(1, 2), dilation=(2, 1)), dict(window=3, stride=2, dilation=2)],
    3: [dict(window=2), dict(window=(3, 2, 2), stride=(2, 1, 2)),
        dict(window=2, stride=1, dilation=(1, 2, 1))],
}
SIZES = {1: [(9,), (10,)], 2: [(6, 7), (7, 6)], 3: [(5, 6, 5), (6, 5, 5)]}
PADDINGS: dict[str, Any] = {
    "valid": "valid",
    "same": "same",
    "same_lower": "same_lower",
    "int": 1,
    "per_dim": (1, 0, 1),
    "pairs": ((0, 1), (1, 0), (1, 1)),
}


def bfloat16_dtype() -> Any:
    """ml_dtypes' bfloat16 if installed (it comes with jax and tensorflow), else None."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes.bfloat16


def np_dtype(name: str) -> Any:
    if name == "bfloat16":
        bf16 = bfloat16_dtype()
        if bf16 is None:
            raise TypeError("bfloat16 NumPy arrays need the ml_dtypes package")
        return np.dtype(bf16)
    return np.dtype(name)


@dataclass(frozen=True)
class Case:
    """One entry-point call on one deterministic input."""

    kind: str  # pool | global | adaptive | unpool
    ndim: int
    args: tuple[tuple[str, Any], ...]
    spatial: tuple[int, ...]
    dtype: str = "float32"
    values: str = "normal"  # normal | negative | ties | nan | int | extremes
    batch: tuple[int, int] = (2, 3)
    gradient: bool = False
    features: tuple[str, ...] = field(default=(), compare=False)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)

    @property
    def data_format(self) -> str:
        return self.kwargs.get("data_format", "channels_last")

    @property
    def id(self) -> str:
        parts = [self.kind, f"{self.ndim}d"]
        for k, v in self.args:
            text = str(v).replace(" ", "")
            parts.append(f"{k}={text}")
        parts += [f"in={'x'.join(map(str, self.spatial))}", self.dtype, self.values]
        if self.batch != (2, 3):
            parts.append(f"batch={self.batch[0]}x{self.batch[1]}")
        if self.gradient:
            parts.append("grad")
        return "-".join(parts)

    def shape(self) -> tuple[int, ...]:
        n, c = self.batch
        if self.data_format == "channels_first":
            return (n, c, *self.spatial)
        return (n, *self.spatial, c)

    def make_input(self, seed: int = 0) -> np.ndarray:
        """The case's input as a NumPy array of its dtype, in its data format."""
        rng = np.random.default_rng(zlib.crc32(self.id.encode()) + seed)
        shape = self.shape()
        dtype = np_dtype(self.dtype)
        if self.values == "int" or self.dtype in INT_DTYPES:
            info = np.iinfo(dtype)
            lo, hi = max(info.min, -50), min(info.max, 50)
            x = rng.integers(lo, hi + 1, size=shape).astype(dtype)
            if self.values == "extremes":  # in the dtype: NumPy 1 promotes uint64 with int64
                x = np.where(rng.random(shape) < 0.3, np.array(info.min, dtype), x)
                x = np.where(rng.random(shape) < 0.3, np.array(info.max, dtype), x)
            return x
        if self.values == "ties":
            x = rng.integers(-2, 3, size=shape).astype(np.float64)
        elif self.values == "negative":
            x = -(np.abs(rng.standard_normal(shape)) + 1.0)
        else:
            x = rng.standard_normal(shape)
            if self.dtype in ("float16", "bfloat16"):
                x = np.round(x * 8) / 8
            if self.values == "nan":
                x[rng.random(shape) < 0.15] = np.nan
            if self.values == "extremes":
                special = np.array([np.inf, -np.inf, -0.0, 5e-324 if self.dtype == "float64"
                                    else 1e-40])
                pick = rng.random(shape) < 0.2
                x[pick] = rng.choice(special, size=int(pick.sum()))
        return x.astype(dtype)


# ---------------------------------------------------------------------------- the grid


def _pad_arg(name: str, ndim: int) -> Any:
    value = PADDINGS[name]
    return value[:ndim] if isinstance(value, tuple) else value


def _pick(options, key: str, salt: str):
    """A deterministic choice per case and per attribute, independent across attributes (a
    shared ``i % n`` cycle would tie layouts to dtypes and values)."""
    return options[zlib.crc32(f"{key}/{salt}".encode()) % len(options)]


def _pool_cases() -> Iterator[Case]:
    for ndim in (1, 2, 3):
        geoms, sizes = GEOMETRIES[ndim], SIZES[ndim]
        for mode, pad_name, ceil, fmt in itertools.product(
                ("max", "avg", "lp"), PADDINGS, (False, True),
                ("channels_first", "channels_last")):
            for cip in ((False, True) if mode == "avg" else (False,)):
                key = f"{ndim}/{mode}/{pad_name}/{ceil}/{fmt}/{cip}"
                geom = _pick(geoms, key, "geometry")
                args: dict[str, Any] = dict(mode=mode, **geom, padding=_pad_arg(pad_name, ndim),
                                            ceil_mode=ceil, data_format=fmt)
                features = [f"{ndim}d", f"padding:{pad_name}", f"layout:{fmt}", f"mode:{mode}"]
                if ceil:
                    features.append("ceil_mode")
                if "dilation" in geom:
                    features.append("dilation")
                if mode == "avg":
                    args["count_include_pad"] = cip
                    if cip:
                        features.append("count_include_pad")
                if mode == "max" and _pick((True, False), key, "indices"):
                    args["return_indices"] = True
                    features.append("indices")
                if mode == "lp":
                    args["p"] = _pick((2.0, 1.0, 3.0), key, "p")
                dtype = _pick(("float32", "float64", "float32", "float16"), key, "dtype")
                values = _pick(("normal", "negative", "ties", "normal"), key, "values")
                features.append(f"dtype:{dtype}")
                if values == "ties":
                    features.append("ties")
                yield Case("pool", ndim, tuple(args.items()), _pick(sizes, key, "size"), dtype,
                           values, features=tuple(features))


def _dtype_cases() -> Iterator[Case]:
    for dtype, fmt in itertools.product(FLOAT_DTYPES + INT_DTYPES,
                                        ("channels_first", "channels_last")):
        modes = ("max",) if dtype in INT_DTYPES else ("max", "avg", "lp")
        for mode in modes:
            args: dict[str, Any] = dict(mode=mode, window=3, stride=2, padding=1,
                                        data_format=fmt)
            if mode == "max":
                args["return_indices"] = True
            values = "extremes" if dtype in INT_DTYPES else "normal"
            yield Case("pool", 2, tuple(args.items()), (7, 6), dtype, values,
                       features=(f"dtype:{dtype}", f"layout:{fmt}", f"mode:{mode}", "2d"))


def _special_cases() -> Iterator[Case]:
    for ndim, fmt in itertools.product((1, 2, 3), ("channels_first", "channels_last")):
        size = SIZES[ndim][0]
        for mode in ("max", "avg", "lp"):
            args = dict(mode=mode, window=2, stride=1, padding=1, data_format=fmt)
            if mode == "max":
                args["return_indices"] = True
            yield Case("pool", ndim, tuple(args.items()), size, "float32", "nan",
                       features=("nan", f"{ndim}d", f"layout:{fmt}", f"mode:{mode}"))
            yield Case("pool", ndim, tuple(args.items()), size, "float64", "extremes",
                       features=("edge_values", f"{ndim}d", f"layout:{fmt}", f"mode:{mode}"))
        # all-padding windows: dilation 3 over a size-2 dim with one cell of padding each side
        for mode in ("max", "avg", "lp"):
            args = dict(mode=mode, window=2, stride=1, padding=1, dilation=3, data_format=fmt)
            if mode == "max":
                args["return_indices"] = True
            yield Case("pool", ndim, tuple(args.items()), (2,) * ndim, "float32", "negative",
                       features=("all_padding", f"{ndim}d", f"layout:{fmt}", f"mode:{mode}"))
        # the window equals the padded input
        args = dict(mode="avg", window=tuple(s + 2 for s in size), padding=1,
                    count_include_pad=True, data_format=fmt)
        yield Case("pool", ndim, tuple(args.items()), size, "float64", "normal",
                   features=("window=padded_input", f"{ndim}d", f"layout:{fmt}"))


def _family_cases() -> Iterator[Case]:
    for ndim, fmt in itertools.product((1, 2, 3), ("channels_first", "channels_last")):
        size = SIZES[ndim][1]
        for mode, keep in itertools.product(("max", "avg", "lp"), (False, True)):
            args: dict[str, Any] = dict(mode=mode, keepdims=keep, data_format=fmt)
            values = "nan" if mode == "max" and keep else "normal"
            yield Case("global", ndim, tuple(args.items()), size, "float32", values,
                       features=("global", f"{ndim}d", f"layout:{fmt}", f"mode:{mode}"))
        for mode, out in itertools.product(("max", "avg"), ("divides", "uneven", "larger")):
            target = {"divides": tuple(s // (2 if s % 2 == 0 else s) for s in size),
                      "uneven": tuple(max(1, s - 2) for s in size),
                      "larger": tuple(s + 1 for s in size)}[out]
            args = dict(mode=mode, output_size=target, data_format=fmt)
            if mode == "max":
                args["return_indices"] = True
            yield Case("adaptive", ndim, tuple(args.items()), size, "float32",
                       "ties" if mode == "max" else "normal",
                       features=("adaptive", f"{ndim}d", f"layout:{fmt}", f"mode:{mode}"))
        for geom in GEOMETRIES[ndim][:2]:
            args = dict(**geom, padding=1 if geom["window"] != 1 else 0, data_format=fmt)
            yield Case("unpool", ndim, tuple(args.items()), size, "float32", "normal",
                       features=("unpool", f"{ndim}d", f"layout:{fmt}"))


def _gradient_cases() -> Iterator[Case]:
    """Every float32 pool and family case (unpool has no gradient) as a gradient case in every
    float dtype: people train in float32, float16 and bfloat16, not only float64."""
    for case in itertools.chain(_pool_cases(), _family_cases()):
        if case.kind == "unpool" or case.dtype != "float32":
            continue
        values = "ties" if case.kwargs.get("mode") == "max" else "normal"
        features = tuple(f for f in case.features if not f.startswith("dtype:"))
        for dtype in GRADIENT_DTYPES:
            yield Case(case.kind, case.ndim, case.args, case.spatial, dtype, values,
                       gradient=True,
                       features=(*features, f"dtype:{dtype}", "gradient", f"gradient:{dtype}"))


def _one_channel_cases() -> Iterator[Case]:
    """One channel, channels last: a layout whose strides are also those of channels first
    (frameworks pick kernels by strides), forward and gradient."""
    for ndim, mode in itertools.product((1, 2, 3), ("max", "avg")):
        args: dict[str, Any] = dict(mode=mode, window=3, stride=2, padding=1,
                                    data_format="channels_last")
        if mode == "max":
            args["return_indices"] = True
        features = ("one_channel", f"{ndim}d", "layout:channels_last", f"mode:{mode}")
        size = SIZES[ndim][0]
        yield Case("pool", ndim, tuple(args.items()), size, "float32", "ties", (2, 1),
                   features=(*features, "dtype:float32", "ties"))
        args.pop("return_indices", None)
        for dtype in ("float32", "float16"):
            yield Case("pool", ndim, tuple(args.items()), size, dtype,
                       "ties" if mode == "max" else "normal", (2, 1), gradient=True,
                       features=(*features, f"dtype:{dtype}", "gradient", f"gradient:{dtype}"))


def grid(level: str = "full", dtypes: tuple[str, ...] | None = None) -> list[Case]:
    """The case grid: ``full`` (the test suite) or ``quick`` (about a quarter of it, every
    feature tag of the full grid still present)."""
    cases = [*_pool_cases(), *_dtype_cases(), *_special_cases(), *_one_channel_cases(),
             *_family_cases(), *_gradient_cases()]
    if dtypes is not None:
        cases = [c for c in cases if c.dtype in dtypes]
    if level == "quick":
        # a hash sample (every n-th case would alias with the grid's i % 2 / i % 4 cycles),
        # plus the first case of any feature the sample missed
        keep = {c.id for c in cases if zlib.crc32(c.id.encode()) % 4 == 0}
        seen = {f for c in cases if c.id in keep for f in c.features}
        for c in cases:
            if not seen.issuperset(c.features):
                keep.add(c.id)
                seen.update(c.features)
        cases = [c for c in cases if c.id in keep]
    elif level != "full":
        raise ValueError(f"grid level must be 'quick' or 'full', got {level!r}")
    return cases


def available_dtypes() -> tuple[str, ...]:
    names = FLOAT_DTYPES + INT_DTYPES
    return names if bfloat16_dtype() is not None else tuple(n for n in names if n != "bfloat16")


def case_by_id(case_id: str) -> Case:
    for case in grid("full"):
        if case.id == case_id:
            return case
    raise KeyError(case_id)


def features_of(case: Case, x: np.ndarray) -> set[str]:
    """The feature tags a case exercises on input ``x`` (a random case's tags; matched
    against ``known_deviations``)."""
    kw = case.kwargs
    mode = kw.get("mode", "max")
    tags = {f"{case.ndim}d", f"dtype:{case.dtype}", f"mode:{mode}",
            f"layout:{kw['data_format']}"}
    if case.kind != "pool":
        tags.add(case.kind)
    if case.gradient:
        tags.update(("gradient", f"gradient:{case.dtype}"))
    for flag in ("ceil_mode", "count_include_pad"):
        if kw.get(flag):
            tags.add(flag)
    if kw.get("return_indices") or case.kind == "unpool":
        tags.add("indices")
    if np.any(np.asarray(kw.get("dilation", 1)) > 1):
        tags.add("dilation")
    padding = kw.get("padding")
    if isinstance(padding, str):
        tags.add("padding:" + padding)
    elif isinstance(padding, tuple):
        tags.add("padding:pairs" if isinstance(padding[0], tuple) else "padding:per_dim")
    elif padding is not None:
        tags.add("padding:int")
    if case.kind in ("pool", "unpool"):
        spec = make_spec(**{"mode": "max", **kw}, ndim=case.ndim)
        if spec.plan(x.shape).all_padding_windows:
            tags.add("all_padding")
    if case.dtype not in INT_DTYPES:
        xf = x.astype(np.float64)
        if np.isnan(xf).any():
            tags.add("nan")
        subnormal = (xf != 0) & (np.abs(xf) < TINY[case.dtype])
        if subnormal.any():
            tags.update(("subnormals", f"subnormals:{case.dtype}"))
        if (np.isinf(xf) | subnormal | np.signbit(xf) & (xf == 0)).any():
            tags.add("edge_values")
    if mode == "max" and np.unique(x).size < x.size:
        tags.add("ties")
    return tags
