"""The backend fixture: ``POOLADAPT_TEST_BACKENDS`` (comma-separated) or ``--backend``.

A requested backend that does not import fails the run; it is never skipped.
"""

from __future__ import annotations

import os

import pytest

from pooladapt import dispatch
from pooladapt.config import normalize_backend_name, use_backend


def pytest_addoption(parser):
    parser.addoption("--backend", action="append", default=None,
                     help="backend(s) to run the conformance suite on (default: numpy)")


def requested_backends(config) -> list[str]:
    names = config.getoption("--backend") or [
        n for n in os.environ.get("POOLADAPT_TEST_BACKENDS", "numpy").split(",") if n.strip()]
    return [normalize_backend_name(n) for n in names]


def route_settings(name: str) -> list[str]:
    """The speed-route settings a backend's grid runs under besides ``auto``: every route off,
    and each route forced on alone (none for a backend without routes: "off" is "auto")."""
    routes = dispatch.load(name).BACKEND.speed_routes
    return ["off", *(f"on:{route}" for route in routes)] if routes else []


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    names = requested_backends(metafunc.config)
    autograd = metafunc.definition.get_closest_marker("autograd") is not None

    def marks(name: str):
        # gradients are not part of a backend's contract without autograd (NumPy): such
        # items are deselected, not skipped
        if autograd and not dispatch.load(name).BACKEND.supports_autograd:
            return (pytest.mark.no_autograd,)
        return ()

    if "route" in metafunc.fixturenames:
        params = [pytest.param(n, r, id=f"{n}-{r}", marks=marks(n))
                  for n in names for r in route_settings(n)]
        metafunc.parametrize(("backend", "route"), params, scope="session")
    elif "forced_route" in metafunc.fixturenames:
        params = [pytest.param(n, r, id=f"{n}-{r}", marks=marks(n))
                  for n in names for r in dispatch.load(n).BACKEND.speed_routes]
        metafunc.parametrize(("backend", "forced_route"), params, scope="session")
    else:
        params = [pytest.param(n, id=n, marks=marks(n)) for n in names]
        metafunc.parametrize("backend", params, scope="session")


def pytest_collection_modifyitems(config, items):
    dropped = [item for item in items if item.get_closest_marker("no_autograd")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not item.get_closest_marker("no_autograd")]


@pytest.fixture
def known_deviation(request):
    """Mark the running case a strict xfail if its backend lists one of its features as a
    known deviation (``BACKEND.known_deviations``: feature -> reason)."""

    def apply(case, backend: str) -> None:
        deviations = dispatch.load(backend).BACKEND.known_deviations
        for feature in case.features:
            if feature in deviations:
                request.applymarker(pytest.mark.xfail(reason=deviations[feature], strict=True))
                return

    return apply


@pytest.fixture(scope="session", autouse=True)
def _backends_import(request):
    for name in requested_backends(request.config):
        dispatch.load(name)  # raises ImportError naming the extra: the run fails


@pytest.fixture(autouse=True)
def _numpy_input_goes_to_the_backend(request):
    """NumPy input in a test of backend B is pooled by B (a framework tensor goes to its own
    framework whatever the setting): a backend whose tensors are NumPy arrays (numpy,
    onnxruntime) is then tested on every path, not only where a test passes ``backend=``."""
    name = request.node.callspec.params.get("backend") if hasattr(request.node, "callspec") \
        else None
    if name is None:
        yield
        return
    with use_backend(name):
        yield
