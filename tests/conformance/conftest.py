"""The backend fixture: ``POOLADAPT_TEST_BACKENDS`` (comma-separated) or ``--backend``.

A requested backend that does not import fails the run; it is never skipped.
"""

from __future__ import annotations

import os

import pytest

from pooladapt import dispatch


def pytest_addoption(parser):
    parser.addoption("--backend", action="append", default=None,
                     help="backend(s) to run the conformance suite on (default: numpy)")


def requested_backends(config) -> list[str]:
    names = config.getoption("--backend") or [
        n for n in os.environ.get("POOLADAPT_TEST_BACKENDS", "numpy").split(",") if n.strip()]
    return [dispatch.normalize_backend_name(n) for n in names]


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        names = requested_backends(metafunc.config)
        params = [pytest.param(n, id=n) for n in names]
        if metafunc.definition.get_closest_marker("autograd"):
            # gradients are not part of a backend's contract without autograd (NumPy):
            # such items are deselected, not skipped
            params = [pytest.param(n, id=n, marks=() if dispatch.load(n).BACKEND.supports_autograd
                                   else pytest.mark.no_autograd) for n in names]
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
