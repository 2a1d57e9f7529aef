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


# ---------------------------------------------------------------------------- the plan's ONNX node


def onnx_plan(mode, window, stride=None, padding="valid", dilation=1, ceil_mode=False, size=(5,),
              **kw):
    fmt = {1: "NCW", 2: "NCHW", 3: "NCDHW"}[len(size)]
    spec = make_spec(mode, window, stride, padding, dilation, ceil_mode, data_format=fmt,
                     ndim=len(size), **kw)
    return spec.plan((1, 1, *size))


def test_onnx_node_of_a_max_pool_with_indices():
    # pads in ONNX order: every dim's begin, then every dim's end
    plan = onnx_plan("max", (3, 2), (2, 1), ((1, 0), (0, 1)), (1, 2), size=(6, 7),
                     return_indices=True)
    node = lowering.onnx_pool_node(plan)
    assert node == lowering.OnnxNode("MaxPool", (
        ("kernel_shape", (3, 2)), ("strides", (2, 1)), ("pads", (1, 0, 0, 1)),
        ("dilations", (1, 2)), ("ceil_mode", 0)), outputs=2)
    assert lowering.onnx_pool_gap(plan) is None


@pytest.mark.parametrize("kw, exportable", [
    (dict(mode="max", window=3, stride=2, padding=1), True),
    (dict(mode="max", window=3, stride=2, padding=1, return_indices=True), False),  # 2 outputs
    # dilation 3: the window spans 4 cells, so `same` pads (1, 2): 2 >= kernel 2
    (dict(mode="max", window=2, stride=1, padding="same", dilation=3, size=(4,)), False),
    (dict(mode="avg", window=3, stride=1, padding=((0, 2),)), True),  # 2 < 3
])
def test_an_exportable_node_has_one_output_and_pads_below_its_kernel(kw, exportable):
    node = lowering.onnx_pool_node(onnx_plan(**kw))
    assert node is not None
    assert (lowering.onnx_exportable(node) is node) is exportable
    assert lowering.onnx_exportable(None) is None


def test_onnx_node_of_same_padding_is_explicit():
    # n=4, window 3, stride 2: total padding 1, at the end (same_upper) or the start (lower)
    upper = lowering.onnx_pool_node(onnx_plan("avg", 3, 2, "same", size=(4,)))
    lower = lowering.onnx_pool_node(onnx_plan("avg", 3, 2, "same_lower", size=(4,)))
    assert upper.attrs["pads"] == (0, 1) and lower.attrs["pads"] == (1, 0)
    assert "auto_pad" not in upper.attrs and upper.attrs["count_include_pad"] == 0
    assert lowering.onnx_auto_pad(onnx_plan("avg", 3, 2, "same_lower", size=(4,)).spec) == (
        "SAME_LOWER")
    assert lowering.onnx_auto_pad(onnx_plan("max", 3, 2, ((1, 1),)).spec) is None


def test_onnx_ceil_mode_only_where_it_adds_a_window():
    # n=5, window 2, stride 2, pad 1: windows start at -1, 1, 3; ceil would add one at 5,
    # which starts in the right padding and is dropped: floor's count, no ceil_mode needed
    plan = onnx_plan("avg", 2, 2, 1, ceil_mode=True, count_include_pad=True)
    assert plan.out_size == (3,)
    assert lowering.onnx_pool_node(plan).attrs["ceil_mode"] == 0
    # n=4, window 3, stride 2, pad 1: floor 2 windows, ceil 3 (the last reads 3, 4 and 5: a
    # ceil cell past the end padding, which no divisor counts)
    plan = onnx_plan("avg", 3, 2, 1, ceil_mode=True, count_include_pad=True, size=(4,))
    assert plan.out_size == (3,) and plan.ceil_extra == (1,)
    for opset in (10, 18, 22):
        node = lowering.onnx_pool_node(plan, opset)
        assert node.attrs["ceil_mode"] == 1 and node.attrs["pads"] == (1, 1)
    assert lowering.onnx_pool_node(plan, 9) is None  # no ceil_mode before opset 10
    assert "count_include_pad" in lowering.onnx_pool_gap(plan, 9)


def test_onnx_ceil_cells_fold_into_the_end_pads_before_the_op_has_ceil_mode():
    # n=5, window 3, stride 3, ceil: windows 0-2 and 3-5, the last with 1 ceil cell
    plan = onnx_plan("lp", 3, 3, ceil_mode=True, p=1.0)
    assert plan.out_size == (2,) and plan.ceil_extra == (1,)
    assert lowering.onnx_pool_node(plan, 17).attrs == {
        "kernel_shape": (3,), "strides": (3,), "pads": (0, 1), "p": 1}  # no ceil_mode in 17
    assert lowering.onnx_pool_node(plan).attrs["ceil_mode"] == 1
    assert lowering.onnx_pool_node(onnx_plan("max", 3, 3, ceil_mode=True), 9).attrs[
        "pads"] == (0, 1)
    assert lowering.onnx_pool_node(onnx_plan("avg", 3, 3, ceil_mode=True), 9).attrs == {
        "kernel_shape": (3,), "strides": (3,), "pads": (0, 1), "count_include_pad": 0}


def test_onnx_attributes_by_opset():
    dilated = onnx_plan("avg", 2, 1, dilation=2)
    assert lowering.onnx_pool_node(dilated, 18) is None
    assert "opset 19" in lowering.onnx_pool_gap(dilated, 18)
    assert lowering.onnx_pool_node(dilated, 19).attrs["dilations"] == (2,)
    assert "dilations" not in lowering.onnx_pool_node(onnx_plan("avg", 2), 18).attrs
    assert lowering.onnx_pool_node(onnx_plan("max", 2, dilation=2), 10) is not None
    assert lowering.onnx_pool_node(onnx_plan("lp", 2, dilation=2, p=3), 17) is None
    assert set(lowering.onnx_pool_node(onnx_plan("max", 2), 8).attrs) == {
        "kernel_shape", "strides", "pads"}
    for bad in (6, 22.0, "22", True):
        with pytest.raises(ValueError, match="opset"):
            lowering.onnx_pool_node(onnx_plan("max", 2), bad)


def test_onnx_lp_needs_an_integer_p():
    assert lowering.onnx_pool_node(onnx_plan("lp", 2, p=3.0)).attrs["p"] == 3
    plan = onnx_plan("lp", 2, p=1.5)
    assert lowering.onnx_pool_node(plan) is None
    assert "integer" in lowering.onnx_pool_gap(plan) and "1.5" in lowering.onnx_pool_gap(plan)


def test_onnx_dtypes():
    plan = onnx_plan("max", 2)
    assert lowering.onnx_dtypes("MaxPool") == (
        "float16", "float32", "float64", "bfloat16", "int8", "uint8")
    assert lowering.onnx_dtypes("AveragePool", 21) == ("float16", "float32", "float64")
    assert lowering.onnx_pool_node(plan, 12, "uint8") is not None
    assert lowering.onnx_pool_node(plan, 11, "int8") is None
    assert lowering.onnx_pool_node(plan, 21, "bfloat16") is None
    assert "not int32" in lowering.onnx_pool_gap(plan, 22, "int32")
    assert lowering.onnx_pool_node(onnx_plan("avg", 2), 22, "int8") is None


def test_onnx_windows_of_padding_only():
    # n=2, window 2, dilation 3, padding 1: the only window's taps (-1 and 2) are padding
    kw = dict(window=2, stride=1, padding=1, dilation=3, size=(2,))
    assert lowering.onnx_pool_node(onnx_plan("max", **kw)) is None
    assert "padding only" in lowering.onnx_pool_gap(onnx_plan("avg", **kw))
    # defined: 0 / (the window's 2 cells) and the 0-norm
    assert lowering.onnx_pool_node(onnx_plan("avg", **kw, count_include_pad=True)) is not None
    assert lowering.onnx_pool_node(onnx_plan("lp", **kw)) is not None


def test_onnx_global_nodes():
    from pooladapt.spec import make_global_spec

    def spec(mode, p=None):
        return make_global_spec(mode, p=p, data_format="NCHW", ndim=2)

    assert lowering.onnx_global_node(spec("max")) == lowering.OnnxNode("GlobalMaxPool", ())
    assert lowering.onnx_global_node(spec("avg"), 7).op_type == "GlobalAveragePool"
    assert lowering.onnx_global_node(spec("lp")).attrs == {"p": 2}
    assert lowering.onnx_global_node(spec("lp", 0.5)) is None
    assert "integer" in lowering.onnx_global_gap(spec("lp", 0.5))
    assert lowering.onnx_global_node(spec("max"), dtype="int8") is None
    assert lowering.onnx_global_gap(spec("avg"), dtype="float64") is None


def _onnx_cases():
    """Plans over a small geometry grid, in every mode."""
    import itertools

    for (mode, extra), (window, stride), padding, dilation, ceil, size in itertools.product(
            (("max", {}), ("max", {"return_indices": True}), ("avg", {}),
             ("avg", {"count_include_pad": True}), ("lp", {"p": 1.0}), ("lp", {"p": 3.0})),
            ((2, 2), (3, 2), (3, 1), (2, 3)), ("valid", "same", "same_lower", ((1, 0),), 1),
            (1, 2), (False, True), ((5,), (6,))):
        try:
            plan = onnx_plan(mode, window, stride, padding, dilation, ceil, size, **extra)
        except ValueError:
            continue
        yield plan


def test_onnx_nodes_pass_the_checker_and_match_the_reference_evaluator():
    """Every node is a valid model at its opset (onnx.checker, full shape inference); where the
    ONNX reference evaluator is a safe oracle, it gives the oracle's answer. It is not safe
    (onnx 1.23.2, besides FRAMEWORK-NOTES D6) for ceil_mode=1 (AveragePool over [1, 2, 3, 4],
    window 3, stride 3 gives [1.5, 3]; LpPool p=1 counts a ceil cell as a copy of the last)
    nor for MaxPool with stride 1 and padding (an IndexError, or the pads read per dim)."""
    import onnx
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    from pooladapt import oracle

    checked = compared = 0
    for plan in _onnx_cases():
        for opset in (10, 12, 18, 19, 22):
            node = lowering.onnx_pool_node(plan, opset)
            if node is None:
                continue
            shape = (1, 2, *plan.in_size)
            outs = ["Y", "I"][:node.outputs]
            graph = helper.make_graph(
                [helper.make_node(node.op_type, ["X"], outs, **node.attrs)], "g",
                [helper.make_tensor_value_info("X", TensorProto.DOUBLE, shape)],
                [helper.make_tensor_value_info(o, TensorProto.DOUBLE if o == "Y"
                                               else TensorProto.INT64, [None] * 3)
                 for o in outs])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
            onnx.checker.check_model(model, full_check=True)
            checked += 1
            attrs = node.attrs
            if attrs.get("ceil_mode") or (node.op_type == "MaxPool" and 1 in plan.spec.stride):
                continue
            x = np.random.default_rng(checked).standard_normal(shape)
            got = ReferenceEvaluator(model).run(None, {"X": x})
            want = oracle.pool(x, plan.spec)
            if node.outputs == 2:
                np.testing.assert_array_equal(got[0], want[0], err_msg=str(node))
                np.testing.assert_array_equal(got[1] % plan.in_size[0], want[1])
            else:
                np.testing.assert_allclose(got[0], want, rtol=1e-12, err_msg=str(node))
            compared += 1
    assert checked > 1000 and compared > 300, (checked, compared)


# ------------------------------------------------------------------ plans as plain values (torch)


def test_plan_values_are_the_specs_fields_and_the_spatial_size():
    spec = make_spec("lp", (3, 2), 2, ((1, 0), (0, 1)), ceil_mode=True, p=3.0, ndim=2,
                     data_format="channels_first")
    plan = spec.plan((1, 1, 7, 5))
    kind, fields, in_size = lowering.plan_values(plan)
    assert kind == "PoolSpec" and in_size == (7, 5)
    assert fields == ("lp", 2, (3, 2), (2, 2), (1, 1), ((1, 0), (0, 1)), True, False, 3.0,
                      "channels_first", False)
    assert all(type(v) in (str, int, bool, float, tuple) for v in fields)
    assert lowering.plan_from_values((kind, fields, in_size)) is plan  # the core's cached plan


def test_plan_values_of_an_adaptive_plan_round_trip():
    plan = make_adaptive_spec("max", (3, None), ndim=2, return_indices=True).plan((2, 7, 4, 1))
    values = lowering.plan_values(plan)
    assert values == ("AdaptiveSpec", ("max", 2, (3, None), "channels_last", True), (7, 4))
    assert lowering.plan_from_values(values) is plan
    assert lowering.plan_from_values(values).out_size == (3, 4)


def test_plan_values_take_index_like_sizes_and_name_what_they_cannot_rebuild():
    spec = make_spec("max", 2, ndim=1)
    values = lowering.plan_values(spec.plan((1, np.int64(6), 1)))  # a NumPy size: a plain int
    assert values[2] == (6,) and type(values[2][0]) is int
    with pytest.raises(ValueError, match="GlobalSpec"):
        lowering.plan_from_values(("GlobalSpec", (), (4,)))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_holds_nan_or_minus_inf_on_every_two_byte_pattern_and_the_specials(dtype):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dt = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    if dt.itemsize == 2:  # every bit pattern, judged through float64
        cells = np.arange(1 << 16, dtype=np.uint16).view(dt)
    else:
        cells = np.array([0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, np.nan, -np.nan,
                          np.finfo(dt).min, np.finfo(dt).tiny / 2], dt)
    with np.errstate(invalid="ignore"):  # ml_dtypes' cast of a NaN warns
        wide = cells.astype(np.float64)
    bad = np.isnan(wide) | (wide == -np.inf)
    assert bad.sum() >= 2  # some NaN and -inf among them
    for cell, want in zip(cells, bad):
        block = np.array([[1.0, 2.0], [3.0, 0.0]], dt)
        block[1, 1] = cell
        assert lowering.holds_nan_or_minus_inf(block) == want, (dtype, cell)
        assert lowering.holds_nan_or_minus_inf(block.T) == want  # strided
    assert not lowering.holds_nan_or_minus_inf(np.zeros((0, 3), dt))
    with pytest.raises(TypeError, match="float array, got dtype int16"):
        lowering.holds_nan_or_minus_inf(np.zeros(3, np.int16))  # its bits mean nothing here
    big = np.zeros((3, 100_001), dt)  # many blocks of the 2-byte check: the last cell counts
    for last, want in ((np.nan, True), (-np.inf, True), (np.inf, False), (-1.0, False)):
        big[-1, -1] = last
        assert lowering.holds_nan_or_minus_inf(big) == want, (dtype, last)
        assert lowering.holds_nan_or_minus_inf(big[:, ::-1]) == want  # a strided view
