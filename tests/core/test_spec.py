"""PoolSpec validation (every bad-input class of API.md §1) and the resolved plan."""

from __future__ import annotations

import numpy as np
import pytest

import pooladapt as pa
from pooladapt.spec import make_adaptive_spec, make_spec, same_pads


def spec(mode="max", window=2, **kw):
    kw.setdefault("ndim", 2)
    return make_spec(mode, window, **kw)


# ------------------------------------------------------------------ argument normalisation


def test_stride_defaults_to_window_and_forms_normalise():
    s = spec("avg", (2, 3), padding=1, data_format="NCHW")
    assert s.stride == (2, 3) and s.padding == ((1, 1), (1, 1))
    assert s.data_format == "channels_first"
    assert spec(padding=(1, 0)).padding == ((1, 1), (0, 0))
    assert spec(window=3, padding=((0, 1), (2, 1))).padding == ((0, 1), (2, 1))
    assert spec(padding="SAME").padding == "same_upper"
    assert spec(padding="same").padding == spec(padding="same_upper").padding
    assert spec(mode="MAX").mode == "max"
    assert spec(window=np.int64(3), stride=np.int32(2)).window == (3, 3)
    assert make_spec("max", 2, data_format="NCW", ndim=1).data_format == "channels_first"
    assert make_spec("max", 2, data_format="NDHWC", ndim=3).data_format == "channels_last"


def test_spec_is_immutable_and_hashable():
    s = spec()
    with pytest.raises(AttributeError):
        s.mode = "avg"
    assert hash(s) == hash(spec())


def test_default_data_format_is_channels_last_and_configurable(monkeypatch):
    monkeypatch.delenv("POOLADAPT_DATA_FORMAT", raising=False)
    assert spec().data_format == "channels_last"
    monkeypatch.setenv("POOLADAPT_DATA_FORMAT", "channels_first")
    assert spec().data_format == "channels_first"
    pa.set_data_format("channels_last")
    try:
        assert spec().data_format == "channels_last"
    finally:
        pa.set_data_format(None)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    (dict(mode="median"), ValueError, "mode"),
    (dict(mode=3), TypeError, "mode"),
    (dict(window=0), ValueError, "window"),
    (dict(window=-2), ValueError, "window"),
    (dict(window=2.0), TypeError, "window"),
    (dict(window=True), TypeError, "window"),
    (dict(window=(2, 2, 2)), ValueError, "window"),
    (dict(stride=0), ValueError, "stride"),
    (dict(stride=1.5), TypeError, "stride"),
    (dict(dilation=0), ValueError, "dilation"),
    (dict(padding=2), ValueError, "padding"),  # at least as large as the window (2)
    (dict(padding=-1), ValueError, "padding"),
    (dict(padding="full"), ValueError, "padding"),
    (dict(padding=(1, 1, 1)), ValueError, "padding"),
    (dict(padding=((0, 1, 2), (0, 1))), ValueError, "padding"),
    (dict(padding=1.0), TypeError, "padding"),
    (dict(mode="max", count_include_pad=True), ValueError, "count_include_pad"),
    (dict(mode="lp", count_include_pad=True), ValueError, "count_include_pad"),
    (dict(mode="avg", return_indices=True), ValueError, "return_indices"),
    (dict(mode="max", p=3), ValueError, "p"),
    (dict(mode="lp", p=0), ValueError, "p"),
    (dict(mode="lp", p=float("inf")), ValueError, "p"),
    (dict(mode="lp", p="2"), TypeError, "p"),
    (dict(ceil_mode="yes"), TypeError, "ceil_mode"),
    (dict(data_format="NCDHW"), ValueError, "3-D layout"),
    (dict(data_format="channels_middle"), ValueError, "data_format"),
    (dict(data_format=1), TypeError, "data_format"),
])
def test_bad_arguments_raise_clear_errors(kwargs, error, words):
    kwargs = {"mode": "max", "window": 2, **kwargs}
    with pytest.raises(error, match=words) as info:
        make_spec(ndim=2, **kwargs)
    assert "got" in str(info.value)  # says what was received


def test_padding_one_dim_pair_needs_explicit_nesting():
    with pytest.raises(ValueError, match=r"\(\(low, high\),\)"):
        make_spec("max", 3, padding=(1, 2), ndim=1)
    assert make_spec("max", 3, padding=((1, 2),), ndim=1).padding == ((1, 2),)


@pytest.mark.parametrize("shape", [(4, 4), (1, 4, 4), (1, 1, 1, 4, 4)])
def test_wrong_input_rank_names_expected_shape(shape):
    s = spec(data_format="channels_first")
    with pytest.raises(ValueError, match=r"expected a 4-D input \(NCHW") as info:
        s.plan(shape)
    assert str(shape) in str(info.value)


def test_window_larger_than_padded_input():
    with pytest.raises(ValueError, match="larger than the padded input"):
        spec(window=5, padding=1, data_format="NCHW").plan((1, 1, 2, 2))
    with pytest.raises(ValueError, match="larger than the padded input"):
        spec(window=2, dilation=3, data_format="NCHW").plan((1, 1, 3, 3))


def test_public_entry_points_raise_for_bad_input():
    x = np.zeros((1, 4, 4, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="unknown backend"):
        pa.pool2d(x, "max", 2, backend="caffe")
    with pytest.raises(TypeError, match="cast"):
        pa.pool2d(x.astype(np.int32), "avg", 2)
    with pytest.raises(TypeError, match="cast"):
        pa.pool2d(x.astype(np.uint8), "lp", 2)
    with pytest.raises(TypeError, match="bool"):
        pa.pool2d(x.astype(bool), "max", 2)
    with pytest.raises(TypeError, match="complex"):
        pa.pool2d(x.astype(np.complex64), "max", 2)
    with pytest.raises(ValueError, match="expected a 4-D input"):
        pa.pool2d(x[0], "max", 2)
    with pytest.raises(ValueError, match="adaptive"):
        make_adaptive_spec("lp", 2, ndim=2)
    with pytest.raises(ValueError, match="output_size"):
        make_adaptive_spec("max", 0, ndim=2)


# ------------------------------------------------------------------ the plan


def _out(in_size, window, stride=None, padding=0, ceil=False, dilation=1):
    s = make_spec("max", window, stride, padding, dilation, ceil, data_format="NCW", ndim=1)
    plan = s.plan((1, 1, in_size))
    return plan.out_size[0], plan.pads[0], plan.ceil_extra[0]


@pytest.mark.parametrize(("args", "want"), [
    ((4, 3, 2, "same"), (2, (0, 1), 0)),          # TF SAME: odd cell at the end
    ((4, 3, 2, "same_lower"), (2, (1, 0), 0)),    # ONNX SAME_LOWER: odd cell at the start
    ((4, 3, 1, "same"), (4, (1, 1), 0)),          # total 2: one each side
    ((5, 2, 2, 1, True), (3, (1, 1), 0)),         # ceil: the window starting in padding dropped
    ((4, 2, 2, 0, True), (2, (0, 0), 0)),
    ((5, 2, 2, 0, True), (3, (0, 0), 1)),         # ceil adds a window reaching one extra cell
    ((10, 3, 1, 0, False, 2), (6, (0, 0), 0)),     # dilation: extent 5
    ((7, 3, 3, "same"), (3, (1, 1), 0)),          # ceil(7/3) = 3; total (2*3+3-7) = 2
    ((6, 1, 3, "same"), (2, (0, 0), 0)),          # negative total clips to zero
])
def test_output_size_padding_and_ceil_rules(args, want):
    assert _out(*args) == want


def test_divisor_rules_and_map():
    # 1-D, in 6, k3 s2 p1 ceil: windows [-1,2),[1,4),[3,6),[5,8); cell 6 is padding and
    # cell 7 is past the padded input: real counts 2,3,3,1; padded counts 3,3,3,2.
    base = dict(window=3, stride=2, padding=1, ceil_mode=True, data_format="NCW", ndim=1)
    exc = make_spec("avg", **base).plan((1, 1, 6))
    inc = make_spec("avg", count_include_pad=True, **base).plan((1, 1, 6))
    assert exc.counts == ((2, 3, 3, 1),) and inc.counts == ((3, 3, 3, 2),)
    assert exc.ceil_extra == (1,)
    assert exc.uniform_divisor is None
    assert make_spec("avg", 2, ndim=2).plan((1, 4, 4, 1)).uniform_divisor == 4
    two_d = make_spec("avg", 3, 2, 1, ndim=2, data_format="NCHW").plan((1, 1, 4, 4))
    np.testing.assert_array_equal(two_d.divisor_map, [[4, 6], [6, 9]])


def test_same_rule_puts_the_odd_cell_high_or_low():
    # in 5, window 2, stride 2: ceil(5/2) = 3 windows need 2*2+2 = 6 cells, one of padding
    assert same_pads(5, 2, 2, lower=False) == (0, 1)
    assert same_pads(5, 2, 2, lower=True) == (1, 0)
    assert same_pads(7, 3, 3, lower=False) == (1, 1)  # total 2 splits evenly
    assert same_pads(6, 1, 3, lower=True) == (0, 0)


def test_empty_windows_map_windows_of_padding_only():
    # H = 2, window 2, dilation 3 (extent 4), 'same': pads (1, 2); row 0's taps are -1 and 2
    # (both padding), row 1's are 0 and 3. W = 3, window 1: every column holds a cell.
    plan = spec("avg", (2, 1), stride=1, padding="same", dilation=(3, 1),
                data_format="NCHW").plan((1, 1, 2, 3))
    assert plan.pads == ((1, 2), (0, 0)) and plan.all_padding_windows
    np.testing.assert_array_equal(plan.empty_windows, [[True] * 3, [False] * 3])
    assert plan.divisor_map[0].tolist() == [0, 0, 0]  # avg over them is 0 / 0
    full = spec("max", 2, padding=1, data_format="NCHW").plan((1, 1, 4, 4))
    assert not full.all_padding_windows and not full.empty_windows.any()
    assert full.empty_windows.shape == full.out_size


def test_output_shape_of_both_layouts():
    s = spec("max", 3, stride=2, padding=1, data_format="channels_last")
    assert pa.Pool2D("max", 3, 2, 1, data_format="NHWC").output_shape((8, 7, 5, 3)) == (8, 4, 3, 3)
    assert s.output_shape((8, 7, 5, 3)) == (8, 4, 3, 3)
    t = spec("max", 3, stride=2, padding=1, data_format="channels_first")
    assert t.output_shape((8, 3, 7, 5)) == (8, 3, 4, 3)


def test_functional_spec_cache_tells_ints_from_floats_and_bools():
    x = np.zeros((1, 4, 4, 1), dtype=np.float32)
    assert pa.pool2d(x, "max", 2).shape == (1, 2, 2, 1)  # caches window=2
    for window in (2.0, True, (2.0, 2), (True, 2)):
        with pytest.raises(TypeError, match="window"):
            pa.pool2d(x, "max", window)


def test_functional_spec_cache_follows_the_default_data_format():
    x = np.zeros((1, 1, 4, 6), dtype=np.float32)
    assert pa.pool2d(x, "max", 1).shape == (1, 1, 4, 6)
    pa.set_data_format("channels_first")
    try:
        assert pa.pool2d(x, "max", 2).shape == (1, 1, 2, 3)
    finally:
        pa.set_data_format(None)
    with pytest.raises(ValueError, match="larger than the padded input"):
        pa.pool2d(x, "max", 2)  # channels_last again: a spatial dim of size 1
