"""Hypothesis: random specs and inputs, every backend equals the oracle."""

from __future__ import annotations

import pytest
from hypothesis import given

from pooladapt import conformance, dispatch
from pooladapt.testing.strategies import pool_cases, seeds

FLOATS = tuple(d for d in conformance.available_dtypes() if d not in conformance.INT_DTYPES)


@given(case=pool_cases(), seed=seeds())
def test_random_specs_match_oracle(backend, case, seed):
    deviations = dispatch.load(backend).BACKEND.known_deviations
    if f"dtype:{case.dtype}" in deviations:
        return  # a listed deviation is covered by its strict xfail in the grid
    result = conformance.run_case(case, backend, seed)
    assert result.passed, f"{case.id} (seed {seed}): {result.message}"


@pytest.mark.autograd
@given(case=pool_cases(dtypes=FLOATS, gradient=True), seed=seeds())
def test_random_gradients_match_oracle(backend, case, seed):
    if f"dtype:{case.dtype}" in dispatch.load(backend).BACKEND.known_deviations:
        return
    result = conformance.run_case(case, backend, seed)
    assert result.passed, f"{case.id} (seed {seed}): {result.message}"
