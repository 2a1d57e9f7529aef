"""NumPy-backend specifics the conformance grid does not reach: inputs left untouched, odd
memory layouts, float16 accumulation, the speed routes combined and with small blocks of
batch, channels and rows against the oracle (tests/conformance/test_routes.py runs each route
alone), the tuning object, and peak memory on the ResNet stem with the routes and without.
"""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

import pooladapt as pa
from pooladapt import conformance, oracle
from pooladapt.backends import numpy as nb
from pooladapt.backends.numpy import fast
from pooladapt.spec import make_adaptive_spec, make_spec

RNG = np.random.default_rng(8)

# (mode, kwargs) on a 2-D input; sized so numpy.phases runs (>= Tuning.phase_min cells)
POOLS = [
    ("max", dict(window=3, stride=2, padding=1)),
    ("max", dict(window=3, stride=2, padding=1, return_indices=True)),
    ("max", dict(window=(2, 3), stride=(1, 2), dilation=(2, 1), ceil_mode=True)),
    ("avg", dict(window=3, stride=2, padding=1, ceil_mode=True)),
    ("avg", dict(window=(3, 2), stride=2, padding="same", count_include_pad=True)),
    ("lp", dict(window=2, stride=2, p=3.0)),
]
POOL_IDS = [f"{m}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for m, kw in POOLS]


def _data(shape, dtype=np.float32, nan=False):
    x = RNG.standard_normal(shape).astype(dtype)
    x[RNG.random(shape) < 0.05] = 0.5  # ties
    if nan:
        x[RNG.random(shape) < 0.01] = np.nan
    return x


def _check(got, want, exact: bool):
    if isinstance(want, tuple):
        np.testing.assert_array_equal(got[1], want[1])  # indices: exact
        got, want = got[0], want[0]
    assert got.dtype == np.float32
    if exact:
        np.testing.assert_array_equal(got, want.astype(np.float32))
    else:
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.fixture(scope="module", params=["channels_first", "channels_last"])
def stem(request):
    """A float32 input large enough for the stride-phase path, with ties and NaN."""
    fmt = request.param
    shape = (2, 8, 40, 41) if fmt == "channels_first" else (2, 40, 41, 8)
    return fmt, _data(shape, nan=True)


@pytest.mark.parametrize(("mode", "kw"), POOLS, ids=POOL_IDS)
def test_input_is_never_modified(stem, mode, kw):
    fmt, x = stem
    before = x.copy()
    pa.pool2d(x, mode, data_format=fmt, backend="numpy", **kw)
    np.testing.assert_array_equal(x, before)  # NaN compare equal here


def _layouts(x: np.ndarray, fmt: str):
    """The same logical array in other memory layouts (and read-only)."""
    readonly = x.copy()
    readonly.flags.writeable = False
    yield "read-only", readonly
    yield "fortran-order", np.asfortranarray(x)
    spatial = (2, 3) if fmt == "channels_first" else (1, 2)
    yield "negative-strides", np.flip(np.flip(x, spatial).copy(), spatial)
    wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype)
    wide[..., ::2] = x
    yield "every-other-element", wide[..., ::2]
    if fmt == "channels_first":  # NCHW seen through NHWC memory, and the other way round
        yield "nhwc-memory", np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
    else:
        yield "nchw-memory", np.moveaxis(np.ascontiguousarray(np.moveaxis(x, -1, 1)), 1, -1)


@pytest.mark.parametrize(("mode", "kw"), POOLS, ids=POOL_IDS)
def test_odd_layouts_match_the_oracle(stem, mode, kw):
    fmt, x = stem
    want = oracle.pool(x, make_spec(mode, ndim=2, data_format=fmt, **kw))
    for name, view in _layouts(x, fmt):
        assert np.array_equal(view, x, equal_nan=True), name
        assert not view.flags.c_contiguous or name == "read-only", name
        got = pa.pool2d(view, mode, data_format=fmt, backend="numpy", **kw)
        _check(got, want, exact=mode == "max")


@pytest.mark.parametrize(("ndim", "shape", "kw"), [
    (1, (3, 5, 4000), dict(window=5, stride=3, padding=2)),
    (1, (3, 4000, 5), dict(window=4, stride=4, ceil_mode=True)),
    (3, (1, 4, 12, 20, 22), dict(window=3, stride=2, padding=1)),
    (3, (1, 12, 20, 22, 4), dict(window=(2, 3, 3), stride=(1, 2, 2), dilation=(1, 2, 1))),
])
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_large_1d_and_3d_match_the_oracle(ndim, shape, kw, mode):
    fmt = "channels_first" if shape[1] < shape[-1] else "channels_last"
    x = _data(shape, nan=mode == "max")
    spec = make_spec(mode, ndim=ndim, data_format=fmt, return_indices=mode == "max", **kw)
    got = pa.Pool1D if ndim == 1 else pa.Pool3D
    _check(got(mode, data_format=fmt, return_indices=mode == "max", backend="numpy", **kw)(x),
           oracle.pool(x, spec), exact=mode == "max")


def test_float16_avg_accumulates_in_float32():
    x = np.full((1, 2, 6, 6), 60000, dtype=np.float16)  # a float16 sum of two would overflow
    for y in (pa.pool2d(x, "avg", 2, data_format="channels_first", backend="numpy"),
              pa.pool2d(x, "avg", 3, stride=1, padding=1, data_format="channels_first",
                        backend="numpy"),
              pa.global_pool2d(x, "avg", data_format="channels_first", backend="numpy"),
              pa.adaptive_pool2d(x, "avg", 4, data_format="channels_first", backend="numpy")):
        assert y.dtype == np.float16
        np.testing.assert_array_equal(y, 60000)


def test_float16_lp_accumulates_in_float32():
    x = np.full((1, 1, 4, 4), 300, dtype=np.float16)  # 300**2 overflows float16
    y = pa.pool2d(x, "lp", 2, data_format="channels_first", backend="numpy")
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, 600)


def test_float16_large_input_matches_the_oracle():
    x = _data((2, 40, 40, 16), dtype=np.float16)
    for mode in ("max", "avg"):
        spec = make_spec(mode, 3, 2, 1, data_format="channels_last", ndim=2)
        want = oracle.pool(x, spec).astype(np.float16)
        got = pa.pool2d(x, mode, 3, 2, 1, data_format="channels_last", backend="numpy")
        assert got.dtype == np.float16
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                   rtol=2e-3, atol=2e-3)
        if mode == "max":
            np.testing.assert_array_equal(got, want)


# The routes together and with blocks small enough to split batch items, channels and rows
# (what the grid's tiny inputs never reach with the default block size): (routes, tuning).
PATHS = {
    "all-routes-forced": ("on", {}),
    "small-blocks": ("auto", dict(block_bytes=64)),
    "channel-blocks-with-phases": ("on:numpy.blocks,numpy.phases", dict(block_bytes=200)),
    "row-blocks-with-phases": ("on:numpy.blocks,numpy.phases", dict(block_bytes=1)),
    "threads-on-small-blocks": ("on", dict(block_bytes=64, threads=3)),
}


@pytest.fixture(scope="module")
def grid_answers():
    """(case, input, oracle answer) for every forward pool and adaptive case of the grid."""
    out = []
    for case in conformance.grid("full"):
        if case.kind in ("pool", "adaptive") and not case.gradient:
            x = case.make_input(0)
            out.append((case, x, conformance.expected(case, x)))
    return out


def _mismatch(case, want, got) -> str:
    pairs = zip(want, got, ("values", "indices")) if isinstance(want, tuple) else [
        (want, got, "values")]
    return "; ".join(msg for w, g, what in pairs for ok, _, msg in [
        conformance.compare(case, w, g, what)] if not ok)


@pytest.mark.parametrize("path", list(PATHS))
def test_every_path_passes_the_grid(path, grid_answers):
    routes, changes = PATHS[path]
    mode, _, only = routes.partition(":")
    with pa.speed_routes(mode, only=only.split(",") if only else None), fast.tuned(**changes):
        failed = [f"{case.id}: {msg}" for case, x, want in grid_answers
                  for msg in [_mismatch(case, want, conformance.actual(case, x, "numpy"))]
                  if msg]
    assert not failed, "\n".join(failed[:10])


@pytest.mark.parametrize(("budget", "want"), [
    (10_000, [((slice(0, 2),), 0, 10), ((slice(2, 4),), 0, 10)]),
    (1600, [((slice(b, b + 1), slice(c, c + 2)), 0, 10) for b in range(4) for c in (0, 2, 4)]),
    (300, [((slice(b, b + 1), slice(c, c + 1)), o, min(o + 3, 10)) for b in range(4)
           for c in range(6) for o in (0, 3, 6, 9)]),
])
def test_blocks_split_batch_then_channels_then_rows(budget, want):
    plan = make_spec("max", 3, 2, 1, data_format="channels_first", ndim=2).plan((4, 6, 20, 20))
    # first intermediate: 20 * 4 bytes per output row, 800 per channel, 4800 per item
    assert list(fast.blocks(plan, (4, 6, 20, 20), 4, budget)) == want


def test_speed_routes_are_declared():
    assert nb.BACKEND.speed_routes == ("numpy.blocks", "numpy.phases", "numpy.threads")


@pytest.mark.parametrize(("changes", "error", "match"), [
    (dict(block_bytes=0), ValueError, r"block_bytes must be >= 1, got 0"),
    (dict(threads=0), ValueError, r"threads must be >= 1, got 0"),
    (dict(short_run=-1), ValueError, r"short_run must be >= 0, got -1"),
    (dict(phase_min=2.5), TypeError, r"phase_min must be an int, got float 2.5"),
    (dict(parallel_bytes=True), TypeError, r"parallel_bytes must be an int, got bool"),
    (dict(block_size=64), TypeError, r"block_size"),
])
def test_bad_tuning_is_refused_naming_the_field(changes, error, match):
    with pytest.raises(error, match=match), fast.tuned(**changes):
        pass  # pragma: no cover
    assert fast.tuning() == fast.DEFAULT_TUNING


def test_tuned_holds_inside_its_block_and_thread_only():
    seen = {}
    with fast.tuned(block_bytes=64, threads=2) as inside:
        assert fast.tuning() == inside
        assert (inside.block_bytes, inside.threads) == (64, 2)
        assert inside.short_run == fast.DEFAULT_TUNING.short_run  # the rest unchanged
        other = threading.Thread(target=lambda: seen.setdefault("tuning", fast.tuning()))
        other.start()
        other.join()
    assert seen["tuning"] == fast.DEFAULT_TUNING
    assert fast.tuning() == fast.DEFAULT_TUNING


@pytest.mark.parametrize(("ndim", "shape", "size"), [
    (1, (2, 3, 50), 7), (2, (2, 13, 13, 5), (7, 5)), (2, (2, 4, 9, 20), (4, 6)),
    (3, (1, 3, 7, 9, 8), (3, 4, 5)),
])
@pytest.mark.parametrize(("mode", "dtype"), [("max", "float32"), ("max", "float16"),
                                           ("max", "int8"), ("avg", "float32"),
                                           ("avg", "float16")])
def test_non_uniform_adaptive_matches_the_oracle(ndim, shape, size, mode, dtype):
    fmt = "channels_first" if shape[1] < shape[-1] else "channels_last"
    x = RNG.integers(-100, 100, shape).astype(dtype) if dtype == "int8" else _data(
        shape, dtype=np.dtype(dtype), nan=mode == "max")
    want = oracle.adaptive_pool(x, make_adaptive_spec(mode, size, ndim=ndim, data_format=fmt))
    fn = {1: pa.adaptive_pool1d, 2: pa.adaptive_pool2d, 3: pa.adaptive_pool3d}[ndim]
    got = fn(x, mode, size, data_format=fmt, backend="numpy")
    assert got.dtype == x.dtype
    if mode == "max":
        np.testing.assert_array_equal(got, want.astype(x.dtype))
    else:
        tol = 2e-3 if dtype == "float16" else 2e-5
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=tol, atol=tol)


def test_uniform_adaptive_equals_the_oracle_with_indices():
    x = _data((2, 3, 12, 18), nan=True)
    spec = make_adaptive_spec("max", (4, 6), ndim=2, data_format="channels_first",
                              return_indices=True)
    got = pa.adaptive_pool2d(x, "max", (4, 6), return_indices=True,
                             data_format="channels_first", backend="numpy")
    _check(got, oracle.adaptive_pool(x, spec), exact=True)


@pytest.mark.parametrize("routes", ["auto", "off"])
@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
def test_resnet_stem_peak_memory(fmt, routes):
    """With numpy.blocks (auto) the call allocates at most the output plus one output-sized
    temporary; the plain translation ("off") holds the whole first intermediate (twice the
    output), which shows the switch reaches the blocks."""
    shape = (32, 64, 112, 112) if fmt == "channels_first" else (32, 112, 112, 64)
    x = np.zeros(shape, dtype=np.float32)
    pool = pa.Pool2D("max", 3, 2, 1, data_format=fmt, backend="numpy")
    with pa.speed_routes(routes):
        tracemalloc.start()
        try:
            y = pool(x)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert y.nbytes == x.nbytes // 4
    np.testing.assert_array_equal(y, 0)
    message = f"peak {peak / 2**20:.1f} MiB for a {y.nbytes / 2**20} MiB output"
    if routes == "auto":
        assert peak <= 2 * y.nbytes, message
    else:
        assert peak >= 3 * y.nbytes, message
