"""The onnxruntime backend's own behaviour: each plan runs as the mapping's one ONNX node, the
emulations take over exactly where quirks.py says, the capabilities and the CLI report."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import pooladapt as pa
from pooladapt import cli, dispatch, lowering, oracle
from pooladapt.backends.base import EMULATED, NATIVE
from pooladapt.backends.onnxruntime import BACKEND, graphs, quirks
from pooladapt.spec import make_spec

ORT = dict(backend="onnxruntime")


@pytest.fixture(autouse=True)
def fresh_sessions():
    graphs.clear()
    yield
    graphs.clear()


def models(kind: str) -> list[tuple[tuple, onnx.ModelProto]]:
    return [(key, model) for key, model in graphs.MODELS.items() if key[0] == kind]


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: (tuple(v) if isinstance(v := helper.get_attribute_value(a), list) else v)
            for a in node.attribute}


CASES = [  # (mode, kwargs, spatial size, data format)
    ("max", dict(window=(3, 2), stride=(2, 1), padding=((1, 0), (0, 1)), dilation=(1, 2),
                 return_indices=True), (6, 7), "channels_last"),
    ("avg", dict(window=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
     (4, 4), "channels_first"),
    ("lp", dict(window=2, stride=1, padding="same_lower", dilation=2, p=3.0), (5, 6),
     "channels_first"),
    ("max", dict(window=2, stride=2, ceil_mode=True), (5, 5), "channels_last"),
]


@pytest.mark.parametrize(("mode", "kw", "size", "fmt"), CASES)
def test_a_plan_runs_as_its_one_onnx_node(mode, kw, size, fmt):
    x = np.random.default_rng(0).standard_normal(
        (2, 3, *size) if fmt == "channels_first" else (2, *size, 3)).astype(np.float32)
    spec = make_spec(mode, **kw, data_format=fmt, ndim=2)
    got = pa.pool2d(x, mode, **kw, data_format=fmt, **ORT)
    want = oracle.pool(x, spec)
    for g, w in zip(got if spec.return_indices else (got,), want if spec.return_indices
                    else (want,)):
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-6)
    node = lowering.onnx_pool_node(spec.plan(x.shape))
    [(key, model)] = models("node")
    first = fmt == "channels_first"
    assert key == ("node", node, "float32", 4, first, 3, False)  # finite: the bare node
    onnx.checker.check_model(model, full_check=True)
    dims = [d.dim_value or None for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ([None, 3, None, None] if first else [None, None, None, 3])  # channels known
    nodes = list(model.graph.node)
    if first:
        [only] = nodes
    else:  # channels last: to NCHW before the node and each output back after it, in the graph
        before, only, *after = nodes
        assert before.op_type == "Transpose" and attributes(before) == {"perm": (0, 3, 1, 2)}
        assert list(only.input) == list(before.output)
        assert [(n.op_type, attributes(n), list(n.input)) for n in after] == [
            ("Transpose", {"perm": (0, 2, 3, 1)}, [out]) for out in only.output]
    assert only.op_type == node.op_type and attributes(only) == node.attrs
    assert len(only.output) == node.outputs and not models("gather")


def test_a_max_over_nan_or_minus_infinity_runs_the_safe_form():
    x = np.array([[[1.0, np.nan, -np.inf, -np.inf, 3.0, 2.0]]], np.float32)
    y = pa.pool1d(x, "max", 2, data_format="NCW", **ORT)
    assert np.isnan(y[0, 0, 0]) and y[0, 0, 1:].tolist() == [-np.inf, 3.0]
    [(key, model)] = models("node")
    assert key[-1] is True
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("MaxPool") == 2 and "IsNaN" in ops  # the node on x and on its NaN mask
    assert all(len(n.output) == 2 for n in model.graph.node if n.op_type == "MaxPool")
    graphs.clear()
    with pa.speed_routes("off"):  # no host check: the safe form whatever the values
        pa.pool1d(np.ones((1, 1, 4), np.float32), "max", 2, data_format="NCW", **ORT)
    [(key, _)] = models("node")
    assert key[-1] is True


@pytest.mark.parametrize(("dtype", "run_in"), [
    ("float16", "float16"), ("bfloat16", "float32"), ("int8", "int8"), ("uint16", "float32"),
    ("int32", "float64"), ("uint32", "float64"), ("float64", "float64")])
def test_max_runs_natively_or_in_an_exact_stand_in(dtype, run_in):
    x = np.arange(-12, 12).reshape(1, 2, 12)
    x = x.astype(np.dtype(dtype) if dtype != "bfloat16" else quirks_bf16())
    if dtype.startswith("uint"):
        x = x - x.min()
    y, idx = pa.pool1d(x, "max", 3, 2, 1, data_format="NCW", return_indices=True, **ORT)
    want = oracle.pool(x, make_spec("max", 3, 2, 1, data_format="NCW", return_indices=True,
                                    ndim=1))
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y, want[0])
    np.testing.assert_array_equal(idx, want[1])
    [(key, _)] = models("node")
    assert key[2] == run_in and not models("gather")


def quirks_bf16():
    import ml_dtypes

    return ml_dtypes.bfloat16


@pytest.mark.parametrize(("mode", "kw", "dtype", "why"), [
    ("avg", dict(window=3, stride=2, padding=1), "float64", "no float64 kernel (quirk 2)"),
    ("lp", dict(window=2, p=1.5), "float32", "a non-integer p: no ONNX node"),
    ("max", dict(window=2, stride=1, padding="same", dilation=3), "float32",
     "pads >= kernel (quirk 3)"),
    ("avg", dict(window=2, stride=1, padding=1, dilation=8), "float32",
     "a window of padding only (quirk 4)"),
    ("max", dict(window=3, stride=2, padding=1, return_indices=True), "int64",
     "no int64 kernel (quirk 2)"),
    ("max", dict(window=3, stride=1, padding=1, return_indices=True), "uint64",
     "no uint64 kernel (quirk 2)"),
])
def test_the_gather_graph_takes_over_where_the_node_cannot(mode, kw, dtype, why):
    rng = np.random.default_rng(1)
    x = rng.integers(-40, 40, (2, 3, 7)).astype(dtype) if "int" in dtype else (
        rng.standard_normal((2, 3, 7)).astype(dtype))
    if dtype == "uint64":
        x = x.astype(np.uint64) + np.uint64(2**63 - 20)  # past int64: the order must hold
    spec = make_spec(mode, **kw, data_format="NCW", ndim=1)
    got = pa.pool1d(x, mode, **kw, data_format="NCW", **ORT)
    want = oracle.pool(x, spec)
    assert spec.return_indices or mode != "avg" or "quirk 4" not in why or np.isnan(want).any()
    if spec.return_indices:
        np.testing.assert_array_equal(got[0], want[0], err_msg=why)
        np.testing.assert_array_equal(got[1], want[1], err_msg=why)
    else:
        assert got.dtype == x.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "float32" else 1e-12,
                                   err_msg=why)
    assert models("gather") and not models("node"), why


def test_global_pooling():
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 5)).astype(np.float32)
    got = pa.global_pool2d(x, "avg", data_format="NCHW", **ORT)
    np.testing.assert_allclose(got, x.mean(axis=(2, 3)), rtol=1e-6)
    [(key, _)] = models("node")
    assert key[1] == lowering.OnnxNode("GlobalAveragePool", ())
    graphs.clear()
    for keepdims in (False, True):  # channels last, transposed in the node's graph
        got = pa.global_pool2d(x.transpose(0, 2, 3, 1), "avg", keepdims=keepdims,
                               data_format="NHWC", **ORT)
        want = x.mean(axis=(2, 3))
        np.testing.assert_allclose(got, want[:, None, None, :] if keepdims else want,
                                   rtol=1e-6)
    [(key, _)] = models("node")
    assert key[-3:] == (False, 3, False)  # channels last, 3 channels, the bare node
    graphs.clear()
    got = pa.global_pool2d(x, "max", keepdims=True, data_format="NCHW", **ORT)
    np.testing.assert_array_equal(got, x.max(axis=(2, 3), keepdims=True))
    [(key, _)] = models("node")
    assert key[1].op_type == "MaxPool" and key[1].attrs["kernel_shape"] == (4, 5)  # quirk 8
    graphs.clear()
    got = pa.global_pool2d(x, "lp", p=3, data_format="NCHW", **ORT)
    np.testing.assert_allclose(got, (np.abs(x) ** 3).sum(axis=(2, 3)) ** (1 / 3), rtol=1e-5)
    [(key, _)] = models("node")
    assert key[1].op_type == "LpPool"  # quirk 7


def test_adaptive_and_unpool():
    x = np.random.default_rng(3).standard_normal((2, 5, 7, 3))
    y, idx = pa.adaptive_pool2d(x, "max", (3, 4), return_indices=True, **ORT)
    [(key, model)] = models("gather")
    first = model.graph.node[0]  # channels last: to NCHW, then flattened, in the graph
    assert key[-1] is False and first.op_type == "Transpose"
    assert attributes(first) == {"perm": (0, 3, 1, 2)}
    spec = pa.spec.make_adaptive_spec("max", (3, 4), return_indices=True,
                                      data_format="channels_last", ndim=2)
    want = oracle.adaptive_pool(x, spec)
    np.testing.assert_array_equal(y, want[0])
    np.testing.assert_array_equal(idx, want[1])
    back = pa.max_unpool2d(y, idx, (5, 7), **ORT)
    assert models("scatter")[0][0] == ("scatter", "int64")  # float64 scattered as its bits
    np.testing.assert_array_equal(back, pa.max_unpool2d(y, idx, (5, 7), backend="numpy"))


def test_capabilities_follow_the_translation():
    caps = BACKEND.capabilities()
    assert caps["max"] == caps["avg"] == caps["lp"] == caps["ceil_mode"] == NATIVE
    assert caps["dilation"] == caps["count_include_pad"] == caps["indices"] == NATIVE
    assert caps["float16"] == NATIVE  # float16 kernels for every op
    emulated = {f for f, how in caps.items() if how == EMULATED}
    assert emulated == {"channels_last", "nan", "adaptive", "unpool", "integers", "bfloat16"}
    assert "autograd" not in caps and not BACKEND.supports_autograd
    assert BACKEND.known_deviations == {}
    assert quirks.kernel_dtype("AveragePool", "bfloat16") == "float32"
    assert quirks.kernel_dtype("AveragePool", "float64") is None


def test_numpy_in_numpy_out_and_the_registry():
    assert "onnxruntime" in pa.available_backends()
    assert dispatch.PIP_EXTRAS["onnxruntime"] == "pip install 'pooladapt[onnx]'"
    assert BACKEND.version() == ort.__version__
    with pa.use_backend("onnxruntime"):
        out = pa.pool2d(np.ones((1, 4, 4, 1), np.float32), "avg", 2)
    assert type(out) is np.ndarray and models("node")
    code = ("import sys, numpy as np, pooladapt as pa; pa.pool2d(np.ones((1, 4, 4, 1)), 'max', 2);"
            "print('onnxruntime' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"  # NumPy input on the default backend needs no ORT


def test_the_session_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(graphs, "CACHE_SIZE", 3)
    x = np.ones((1, 1, 12), np.float32)
    for window in range(1, 6):
        pa.pool1d(x, "avg", window, data_format="NCW", **ORT)
    assert [key[1].attrs["kernel_shape"] for key, _ in models("node")] == [(3,), (4,), (5,)]


def test_cli_conformance_report(tmp_path, capsys):
    out = tmp_path / "report.json"
    code = cli.main(["conformance", "--backends", "onnxruntime", "--grid", "quick",
                     "--json", str(out)])
    assert code == 0, capsys.readouterr().out[-3000:]
    entry = json.loads(out.read_text())["backends"]["onnxruntime"]
    assert entry["version"] == ort.__version__ and entry["failed"] == 0
    assert entry["passed"] > 100 and entry["capabilities"]["nan"] == EMULATED


def test_a_stand_in_result_past_float16_rounds_to_inf_quietly():
    """Found by the fuzz: the gather graph computes float16 in float32; a result past
    float16's largest value becomes inf without NumPy's overflow warning (an error here)."""
    x = np.array([60000.0, 1.125, 0.125, -1.875, -1.5, -3.75, -3.5, -3.875, -2.625],
                 np.float16).reshape(1, 1, 3, 3)
    got = pa.global_pool2d(x, "lp", p=0.5, data_format="NCHW", **ORT)
    assert got.dtype == np.float16 and got.tolist() == [[np.inf]]
    assert models("gather")
    got = pa.pool1d(np.full((1, 1, 2), 60000.0, np.float16), "lp", 2, p=1.5,
                    data_format="NCW", **ORT)
    assert got.tolist() == [[[np.inf]]]
