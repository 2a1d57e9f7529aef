"""Every backend against the oracle on the systematic case grid (forward and gradient)."""

from __future__ import annotations

import pytest

from pooladapt import conformance

CASES = conformance.grid("full")
FORWARD = [pytest.param(c, id=c.id) for c in CASES if not c.gradient]
GRADIENT = [pytest.param(c, id=c.id) for c in CASES if c.gradient]


@pytest.mark.parametrize("case", FORWARD)
def test_forward_matches_oracle(case, backend, known_deviation):
    known_deviation(case, backend)
    result = conformance.run_case(case, backend)
    assert result.passed, result.message


@pytest.mark.autograd
@pytest.mark.parametrize("case", GRADIENT)
def test_gradient_matches_oracle(case, backend, known_deviation):
    known_deviation(case, backend)
    result = conformance.run_case(case, backend)
    assert result.passed, result.message
