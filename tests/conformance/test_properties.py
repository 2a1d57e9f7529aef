"""Hypothesis: random specs and inputs, every backend equals the oracle."""

from __future__ import annotations

import pytest
from hypothesis import given

from pooladapt import conformance
from pooladapt.strategies import pool_cases, seeds


@given(case=pool_cases(), seed=seeds())
def test_random_specs_match_oracle(backend, case, seed):
    deviations = conformance.dispatch.load(backend).BACKEND.known_deviations
    if f"dtype:{case.dtype}" in deviations:
        return  # a listed deviation is covered by its strict xfail in the grid
    result = conformance.run_case(case, backend, seed)
    assert result.passed, f"{case.id} (seed {seed}): {result.message}"


@pytest.mark.autograd
@given(case=pool_cases(dtypes=("float64",), for_gradient=True), seed=seeds())
def test_random_gradients_match_oracle(backend, case, seed):
    result = conformance.run_case(case, backend, seed)
    assert result.passed, f"{case.id} (seed {seed}): {result.message}"
