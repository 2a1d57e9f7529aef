"""The conformance case grid and runner, shared by ``pooladapt conformance`` and the tests.

A :class:`Case` is one call of a public entry point on one deterministic input. The runner
feeds the input to a backend *as that backend's own tensor* (the native path), converts the
answer back to NumPy and compares it with the oracle: max, indices and integer results must
be bit-exact, the rest within the tolerance of the dtype. Gradient cases compare the
backend's autograd with the oracle's vector-Jacobian product.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import pooladapt as pa
from pooladapt import dispatch, oracle
from pooladapt.spec import (
    make_adaptive_spec,
    make_global_spec,
    make_spec,
    make_unpool_spec,
)

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
            x = rng.integers(lo, hi + 1, size=shape)
            if self.values == "extremes":
                x = np.where(rng.random(shape) < 0.3, info.min, x)
                x = np.where(rng.random(shape) < 0.3, info.max, x)
            return x.astype(dtype)
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


def grid(level: str = "full", dtypes: tuple[str, ...] | None = None) -> list[Case]:
    """The case grid: ``full`` (the test suite) or ``quick`` (about a quarter of it, every
    feature tag of the full grid still present)."""
    cases = [*_pool_cases(), *_dtype_cases(), *_special_cases(), *_family_cases(),
             *_gradient_cases()]
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


# ---------------------------------------------------------------------------- the runner


@dataclass
class Result:
    case: Case
    backend: str
    passed: bool
    error: float = 0.0
    message: str = ""


def _entry(case: Case):
    kw = case.kwargs
    if case.kind == "pool":
        mode = kw.pop("mode")
        return getattr(pa, f"pool{case.ndim}d"), (mode,), kw
    if case.kind == "global":
        mode = kw.pop("mode")
        return getattr(pa, f"global_pool{case.ndim}d"), (mode,), kw
    if case.kind == "adaptive":
        mode, size = kw.pop("mode"), kw.pop("output_size")
        return getattr(pa, f"adaptive_pool{case.ndim}d"), (mode, size), kw
    raise ValueError(case.kind)


def expected(case: Case, x: np.ndarray):
    """The oracle's answer for ``case`` on input ``x``."""
    kw = case.kwargs
    if case.kind == "pool":
        return oracle.pool(x, make_spec(**kw, ndim=case.ndim))
    if case.kind == "global":
        return oracle.global_pool(x, make_global_spec(**kw, ndim=case.ndim))
    if case.kind == "adaptive":
        return oracle.adaptive_pool(x, make_adaptive_spec(**kw, ndim=case.ndim))
    spec = make_spec("max", **kw, return_indices=True, ndim=case.ndim)
    y, idx = oracle.pool(x, spec)
    plane = spec.plan(x.shape).in_size
    return oracle.max_unpool(y.astype(x.dtype), idx,
                             make_unpool_spec(plane, ndim=case.ndim,
                                              data_format=kw["data_format"]), plane)


def actual(case: Case, x: np.ndarray, backend: str, native: bool = True):
    """The backend's answer for ``case`` as NumPy, computed on the backend's own tensor type
    (``native``) or on the NumPy array with ``backend=``."""
    be = dispatch.load(backend).BACKEND
    put = be.from_numpy if native else (lambda a: a)
    choose = {} if native else {"backend": backend}
    if case.kind == "unpool":
        kw = case.kwargs
        fmt = kw.pop("data_format")
        spec = make_spec("max", **kw, return_indices=True, data_format=fmt, ndim=case.ndim)
        y, idx = oracle.pool(x, spec)
        plane = spec.plan(x.shape).in_size
        fn = getattr(pa, f"max_unpool{case.ndim}d")
        out = fn(put(y.astype(x.dtype)), put(idx), plane, data_format=fmt, **choose)
    else:
        fn, pos, kw = _entry(case)
        out = fn(put(x), *pos, **kw, **choose)
    if not native:
        return out
    if isinstance(out, tuple):
        return tuple(be.to_numpy(o) for o in out)
    return be.to_numpy(out)


def _exact(case: Case) -> bool:
    mode = case.kwargs.get("mode", "max")
    return case.kind == "unpool" or mode == "max" or case.dtype in INT_DTYPES


def compare(case: Case, want: np.ndarray, got: np.ndarray, what: str = "values",
            tolerance: np.ndarray | None = None):
    """(passed, worst error, message) for one output array. ``tolerance``: the allowed
    ``|got - want|`` per element (gradients: :func:`gradient_tolerance`)."""
    want = np.asarray(want)
    got = np.asarray(got)
    if got.shape != want.shape:
        return False, np.inf, f"{what}: shape {got.shape}, expected {want.shape}"
    if what == "indices":
        bad = got != want
        return (not bad.any(), float(bad.sum()),
                f"indices differ at {int(bad.sum())} positions" if bad.any() else "")
    if case.dtype in INT_DTYPES:
        if str(got.dtype) != case.dtype:
            return False, np.inf, f"{what}: dtype {got.dtype}, expected {case.dtype}"
        bad = got != want.astype(got.dtype)
        message = f"{int(bad.sum())} values differ" if bad.any() else ""
        return not bad.any(), float(bad.sum()), message
    if str(got.dtype) != case.dtype:
        return False, np.inf, f"{what}: dtype {got.dtype}, expected {case.dtype}"
    w = want.astype(np.float64)
    if not case.gradient:
        w = w.astype(np_dtype(case.dtype)).astype(np.float64)  # the exact answer, rounded
    g = got.astype(np.float64)
    nan_w, nan_g = np.isnan(w), np.isnan(g)
    if (nan_w != nan_g).any():
        return False, np.inf, f"{what}: NaN at {int((nan_w != nan_g).sum())} wrong positions"
    fin = ~nan_w
    if _exact(case) and not case.gradient:
        bad = w[fin] != g[fin]  # -0.0 == 0.0: the sign of a zero maximum is not specified
        if not bad.any():
            return True, 0.0, ""
        err = float(np.max(np.abs(np.nan_to_num(w[fin][bad] - g[fin][bad]))))  # no inf - inf
        return False, err, f"{what}: {int(bad.sum())} values not bit-exact"
    inf_mismatch = np.isinf(w[fin]) != np.isinf(g[fin])
    with np.errstate(invalid="ignore"):
        diff = np.abs(w[fin] - g[fin])
        diff = np.where(np.isinf(w[fin]) & (w[fin] == g[fin]), 0.0, diff)
    if tolerance is not None:
        limit = np.broadcast_to(tolerance, w.shape)[fin]
    else:
        rtol, atol = TOLERANCE[case.dtype]
        limit = atol + rtol * np.abs(np.where(np.isinf(w[fin]), 0.0, w[fin]))
    bad = (diff > limit) | inf_mismatch
    err = float(np.max(np.nan_to_num(diff, posinf=np.inf), initial=0.0))
    return not bad.any(), err, (f"{what}: {int(bad.sum())} values off, worst {err:.3g}"
                                if bad.any() else "")


def taps(case: Case, shape: tuple[int, ...]) -> int:
    """Input cells one output reads at most (the window, the plane, the largest bin)."""
    kw = case.kwargs
    if case.kind in ("pool", "unpool"):
        return math.prod(make_spec(**{"mode": "max", **kw}, ndim=case.ndim).window)
    if case.kind == "global":
        return math.prod(case.spatial)
    return math.prod(make_adaptive_spec(**kw, ndim=case.ndim).plan(shape).max_bin)


def cotangent(case: Case, shape: tuple[int, ...], seed: int = 7) -> np.ndarray:
    """A cotangent of the case's dtype: multiples of 1/4 in [-2, 2], exact in every float
    dtype, so the oracle and the backend start from the same numbers."""
    g = np.random.default_rng(seed).integers(-8, 9, size=shape) / 4.0
    return g.astype(np_dtype(case.dtype))


def gradient_tolerance(case: Case, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The allowed ``|got - exact|`` of each input cell's gradient in the case's dtype.

    A cell's gradient is a sum of up to ``taps`` cotangents times local slopes, each product
    and each partial sum rounded in the input dtype: the bound scales with the sum of their
    magnitudes (the vector-Jacobian product of ``|g|``, on ``|x|`` for lp, whose slope has
    the sign of x), not with the result, which may cancel to 0. A gradient sent to a wrong
    cell, a wrong divisor or a cotangent lost breaks it: there the magnitude is 0 or the
    error is a whole term.
    """
    mode = case.kwargs.get("mode")
    xs = np.abs(x.astype(np.float64)) if mode == "lp" else x
    magnitude = expected_vjp(case, xs, np.abs(g.astype(np.float64)))
    n = taps(case, x.shape)
    p = float(case.kwargs.get("p", 2.0)) if mode == "lp" else 1.0
    return 4 * (n + 2) * max(1.0, p) * EPS[case.dtype] * magnitude + n * TINY[case.dtype]


def expected_vjp(case: Case, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The oracle's vector-Jacobian product for ``case`` at ``x`` with cotangent ``g``."""
    kw = case.kwargs
    kw.pop("return_indices", None)
    if case.kind == "pool":
        return oracle.pool_vjp(x, make_spec(**kw, ndim=case.ndim), g)
    if case.kind == "adaptive":
        return oracle.adaptive_vjp(x, make_adaptive_spec(**kw, ndim=case.ndim), g)
    spec = make_global_spec(**kw, ndim=case.ndim)
    # global pooling is a pool whose window is the whole plane
    full = make_spec(spec.mode, case.spatial, p=spec.p if spec.mode == "lp" else None,
                     data_format=spec.data_format, ndim=case.ndim)
    if not spec.keepdims:
        g = np.expand_dims(g, axis=spec.spatial_axes)
    return oracle.pool_vjp(x, full, g)


def run_case(case: Case, backend: str, seed: int = 0) -> Result:
    """Run one case on one backend and compare it with the oracle."""
    try:
        x = case.make_input(seed)
        if case.gradient:
            return _run_gradient(case, backend, x)
        want = expected(case, x)
        got = actual(case, x, backend)
    except Exception as err:  # a crash is a failure, reported with its message
        return Result(case, backend, False, np.inf, f"{type(err).__name__}: {err}")
    if isinstance(want, tuple):
        if not isinstance(got, tuple) or len(got) != 2:
            return Result(case, backend, False, np.inf, "expected (values, indices)")
        ok1, e1, m1 = compare(case, want[0], got[0])
        ok2, e2, m2 = compare(case, want[1], got[1], "indices")
        return Result(case, backend, ok1 and ok2, max(e1, e2), "; ".join(m for m in (m1, m2) if m))
    ok, err, msg = compare(case, want, got)
    return Result(case, backend, ok, err, msg)


def _run_gradient(case: Case, backend: str, x: np.ndarray) -> Result:
    be = dispatch.load(backend).BACKEND
    if not be.supports_autograd:
        return Result(case, backend, False, np.inf, f"{backend} has no autograd")
    values_only = Case(case.kind, case.ndim,
                       tuple((k, v) for k, v in case.args if k != "return_indices"),
                       case.spatial, case.dtype, case.values, case.batch)
    fn, pos, kw = _entry(values_only)
    g = cotangent(case, np.shape(expected(values_only, x)))
    dx = be.vjp(lambda t: fn(t, *pos, **kw), be.from_numpy(x), be.from_numpy(g))
    want = expected_vjp(case, x, g)
    ok, err, msg = compare(case, want, be.to_numpy(dx), "gradient",
                           gradient_tolerance(case, x, g))
    return Result(case, backend, ok, err, msg)


def reproducer(case: Case, backend: str) -> str:
    """A command that re-runs one case."""
    return (f"python -c \"from pooladapt import conformance as c; "
            f"print(c.run_case(c.case_by_id({case.id!r}), {backend!r}))\"")


def case_by_id(case_id: str) -> Case:
    for case in grid("full"):
        if case.id == case_id:
            return case
    raise KeyError(case_id)
