"""The framework-neutral lowering constants, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pooladapt import lowering
from pooladapt.lowering import Cover, Tap
from pooladapt.spec import make_adaptive_spec, make_spec


def plan1(n, window, stride=None, padding="valid", dilation=1, ceil_mode=False):
    spec = make_spec("max", window, stride, padding, dilation, ceil_mode,
                     data_format="NCW", ndim=1)
    return spec.plan((1, 1, n))


def test_dtype_constants():
    assert lowering.lowest("int8") == -128 and lowering.lowest("uint64") == 0
    assert lowering.lowest("int64") == -(2**63) and lowering.lowest("float16") == -math.inf
    assert [lowering.accumulator(d) for d in ("float16", "bfloat16", "float32", "float64")] == [
        "float32", "float32", "float32", "float64"]


def test_taps_with_padding():
    # n=5, window 3, stride 2, pad 1: windows start at -1, 1, 3
    assert lowering.dim_taps(plan1(5, 3, 2, 1), 0) == (
        Tap(0, -1, 1, 3),  # reads -1 (padding), 1, 3
        Tap(1, 0, 0, 3),   # reads 0, 2, 4
        Tap(2, 1, 0, 2),   # reads 1, 3, 5 (past the input)
    )


def test_taps_of_all_padding_windows():
    # n=2, window 2, dilation 2 (extent 3), stride 1, pad 1: windows read (-1, 1) and (0, 2)
    taps = lowering.dim_taps(plan1(2, 2, 1, 1, dilation=2), 0)
    assert taps == (Tap(0, -1, 1, 2), Tap(1, 1, 0, 1))
    assert [t.reaches_all(2) for t in taps] == [False, False]


def test_window_cells_maps_and_first_real_taps():
    plan = plan1(4, 2, 2, 1)  # windows (-1, 0), (1, 2), (3, 4)
    flat, valid = lowering.window_cells(plan)
    assert flat.tolist() == [[0, 0], [1, 2], [3, 0]]
    assert valid.tolist() == [[False, True], [True, True], [True, False]]
    assert lowering.tap_index_maps(plan).tolist() == [[-1, 1, 3], [0, 2, -1]]
    assert lowering.first_real_taps(plan).tolist() == [[False, True, True], [True, False, False]]
    assert lowering.window_origins(plan).tolist() == [-1, 1, 3]
    with pytest.raises(ValueError):
        flat[0, 0] = 1  # cached constants are read-only


def test_two_dimensional_cells_are_row_major():
    spec = make_spec("max", (1, 2), (1, 2), data_format="NCHW", ndim=2)
    flat, valid = lowering.window_cells(spec.plan((1, 1, 2, 3)))  # windows (0, 0), (1, 0)
    assert flat.tolist() == [[0, 1], [3, 4]] and valid.all()
    spec = make_spec("max", 2, 2, 1, data_format="NCHW", ndim=2)
    origins = lowering.window_origins(spec.plan((1, 1, 3, 4)))  # rows -1, 1; columns -1, 1, 3
    assert origins.tolist() == [[-5, -3, -1], [3, 5, 7]]
    assert lowering.tap_offsets(spec.plan((1, 1, 3, 4))) == ((0, 0), (0, 1), (1, 0), (1, 1))


def test_bin_cells():
    spec = make_adaptive_spec("max", 2, data_format="NCW", ndim=1)
    flat, valid = lowering.bin_cells(spec.plan((1, 1, 3)))  # bins [0, 2) and [1, 3)
    assert flat.tolist() == [[0, 1], [1, 2]] and valid.all()
    spec = make_adaptive_spec("max", 3, data_format="NCW", ndim=1)
    flat, valid = lowering.bin_cells(spec.plan((1, 1, 4)))  # [0, 2) [1, 3) [2, 4)
    assert flat.tolist() == [[0, 1], [1, 2], [2, 3]]


@pytest.mark.parametrize("ceil, rule, want", [
    (False, "drop", 2), (True, "drop", 3), (True, "full", 3)])
def test_native_output_size(ceil, rule, want):
    # 5 cells, pad 1, window 3, stride 2: span 4 -> floor 3 windows... (5+2-3)/2 + 1 = 3
    assert lowering.native_output_size(5, 1, 3, 2, ceil, rule) == 3
    # 6 cells, window 3, stride 2: floor 2, ceil 3 (the third starts at 4, inside)
    assert lowering.native_output_size(6, 0, 3, 2, ceil, rule) == want


def test_ceil_rules_differ_on_a_window_starting_in_the_padding():
    # [1..5], window 2, stride 2, pad 1 (FRAMEWORK-NOTES D4): ceil gives 4 windows, the last
    # starting at 6 = n + pad, in the padding: PyTorch/ONNX drop it, MXNet's 'full' keeps it
    assert lowering.native_output_size(5, 1, 2, 2, True, "drop") == 3
    assert lowering.native_output_size(5, 1, 2, 2, True, "full") == 4


def test_symmetric_cover():
    # symmetric pads, floor: the native call as it is
    assert lowering.symmetric_cover(plan1(5, 2, 2, 1, ceil_mode=True), "drop", (1,)) == Cover(
        (1,), False, (3,), (0,), False)
    # (1, 0) padding: pad 1 on both sides gives one window too many, cropped
    assert lowering.symmetric_cover(plan1(5, 3, 2, ((1, 0),)), "drop", (1,)) == Cover(
        (1,), False, (3,), (0,), True)
    # ceil mode needed: 6 cells, window 3, stride 2
    assert lowering.symmetric_cover(plan1(6, 3, 2, ceil_mode=True), "drop", (1,)) == Cover(
        (0,), True, (3,), (0,), False)
    assert lowering.symmetric_cover(plan1(6, 3, 2, ceil_mode=True), None, (1,)) is None
    # (0, 2) padding with stride 1: no pad of 0 reaches; pad 2 does, its first 2 cropped
    plan = plan1(4, 3, 1, ((0, 2),))
    assert lowering.symmetric_cover(plan, "drop", (2,)) is None
    assert lowering.symmetric_cover(plan, "drop", (2,), skip_windows=True) == Cover(
        (2,), False, (6,), (2,), True)
    assert lowering.symmetric_cover(plan, "drop", (1,), skip_windows=True) is None


def test_same_and_valid_windows():
    assert lowering.same_windows(plan1(4, 3, 2, "same"))  # pads (0, 1)
    assert lowering.same_windows(plan1(4, 3, 2, ((0, 1),)))  # the same, spelled out
    assert not lowering.same_windows(plan1(4, 3, 2, 1))  # pads (1, 1): starts at -1
    assert lowering.same_windows(plan1(5, 3, 2, 1))  # 3/2/1 over an odd size is SAME
    assert lowering.valid_windows(plan1(5, 2, 2))
    assert not lowering.valid_windows(plan1(5, 2, 2, ((0, 1),)))  # a third window


def test_lp_steps_and_unpool_check():
    assert lowering.lp_steps(1.0) == (1.0, None)
    assert lowering.lp_steps(2.0) == (2.0, 0.5)
    assert lowering.lp_steps(4.0).root == 0.25
    lowering.check_unpool_index(5, (2, 3))
    with pytest.raises(ValueError, match=r"index \(6\) is outside the output plane \(2, 3\)"):
        lowering.check_unpool_index(6, (2, 3))


def test_maps_agree_with_the_oracle_windows():
    """A random 2-D plan: the tap maps name exactly the cells the oracle's windows read."""
    from pooladapt import oracle

    spec = make_spec("max", (2, 3), (2, 1), ((1, 0), (1, 1)), (1, 2), True,
                     data_format="NCHW", ndim=2)
    plan = spec.plan((1, 1, 5, 6))
    maps = lowering.tap_index_maps(plan)
    for o in np.ndindex(*plan.out_size):
        want = [c[0] * 6 + c[1] if kind == "real" else -1
                for c, kind in oracle._window(spec, plan, o)]
        assert maps[(slice(None), *o)].tolist() == want


def test_capabilities_come_from_the_backends_own_routing():
    """A backend's capabilities are its answers about the probe plans, not a hand list."""
    from pooladapt.backends.base import FAMILY_FEATURES, PLAN_PROBES, Backend

    class OnlySymmetric(Backend):  # native: no padding or symmetric padding, float32 only
        native_features = frozenset({"global"})
        emulated_features = frozenset({"unpool"})

        def lowers_natively(self, plan, dtype_name):
            if dtype_name == "bfloat16":
                return None
            return plan.symmetric_pads and dtype_name == "float32"

    caps = OnlySymmetric().capabilities()
    assert caps["symmetric_padding"] == caps["max"] == "native"
    assert caps["asymmetric_padding"] == caps["same"] == "emulated"  # same: pads (0, 1) on 8
    assert caps["integers"] == caps["float16"] == "emulated" and "bfloat16" not in caps
    assert caps["global"] == "native" and caps["unpool"] == "emulated" and "autograd" not in caps
    assert set(caps) <= set(PLAN_PROBES) | set(FAMILY_FEATURES)
