"""Every speed route of the backend forced on alone, and every route off, on the whole grid.

``test_grid.py`` runs the grid with the routes where their thresholds put them (``auto``);
here each route runs it wherever it applies, whatever the size, and the plain translation
runs it with no route at all. A route that no grid case reaches fails
``test_forcing_a_route_reaches_it``, so a forced run cannot pass by doing nothing.
"""

from __future__ import annotations

import pytest

import pooladapt as pa
from pooladapt import config, conformance

CASES = conformance.grid("full")
FORWARD = [pytest.param(c, id=c.id) for c in CASES if not c.gradient]
GRADIENT = [pytest.param(c, id=c.id) for c in CASES if c.gradient]


def _routes(setting: str):
    mode, _, only = setting.partition(":")
    return pa.speed_routes(mode, only=only or None)


@pytest.mark.parametrize("case", FORWARD)
def test_forward_matches_oracle(case, backend, route, known_deviation):
    known_deviation(case, backend)
    with _routes(route):
        result = conformance.run_case(case, backend)
    assert result.passed, result.message


@pytest.mark.autograd
@pytest.mark.parametrize("case", GRADIENT)
def test_gradient_matches_oracle(case, backend, route, known_deviation):
    known_deviation(case, backend)
    with _routes(route):
        result = conformance.run_case(case, backend)
    assert result.passed, result.message


def test_forcing_a_route_reaches_it(backend, forced_route):
    name = forced_route
    config.routes_taken.discard(name)
    with pa.speed_routes("on", only=name):
        for case in CASES:
            conformance.run_case(case, backend)
            if name in config.routes_taken:
                return
    pytest.fail(f"no grid case took the speed route {name!r} forced on: the grid does not "
                f"test it (add a case it applies to)")
