"""Hypothesis: random specs and inputs, every backend equals the oracle."""

from __future__ import annotations

import pytest
from hypothesis import assume, given

from pooladapt import conformance, dispatch
from pooladapt.testing.strategies import pool_cases, seeds

FLOATS = tuple(d for d in conformance.available_dtypes() if d not in conformance.INT_DTYPES)


def _not_a_listed_deviation(backend: str, case, seed: int) -> None:
    """Skip an example that exercises a listed deviation (its strict xfail in the grid
    covers it): the case's features on the very input the seed makes."""
    deviations = set(dispatch.load(backend).BACKEND.known_deviations)
    assume(not conformance.features_of(case, case.make_input(seed)) & deviations)


@given(case=pool_cases(), seed=seeds())
def test_random_specs_match_oracle(backend, case, seed):
    _not_a_listed_deviation(backend, case, seed)
    result = conformance.run_case(case, backend, seed)
    assert result.passed, f"{case.id} (seed {seed}): {result.message}"


@pytest.mark.autograd
@given(case=pool_cases(dtypes=FLOATS, gradient=True), seed=seeds())
def test_random_gradients_match_oracle(backend, case, seed):
    _not_a_listed_deviation(backend, case, seed)
    result = conformance.run_case(case, backend, seed)
    assert result.passed, f"{case.id} (seed {seed}): {result.message}"
