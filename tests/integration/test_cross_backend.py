"""The same NumPy input gives the same answer on every installed backend (the config flag's
promise), through the NumPy path: ``backend=`` with NumPy in, NumPy out."""

from __future__ import annotations

import numpy as np
import pytest

import pooladapt as pa
from pooladapt import conformance

# Every backend this environment is meant to have: a missing one fails, never skips.
EXPECTED = ("numpy", "torch", "tensorflow", "jax")
CASES = [c for c in conformance.grid("quick") if not c.gradient and c.kind != "unpool"]


def test_every_expected_backend_is_installed():
    assert set(EXPECTED) <= set(pa.available_backends())


def _call(case, x, backend):
    fn, pos, kw = conformance.entry(case)
    return fn(x, *pos, **kw, backend=backend)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_same_numpy_input_same_result_everywhere(case):
    x = case.make_input()
    reference = _call(case, x, "numpy")
    for name in EXPECTED[1:]:
        got = _call(case, x, name)
        assert type(got) is type(reference), name
        if isinstance(reference, tuple):
            np.testing.assert_array_equal(got[1], reference[1], err_msg=f"{name} indices")
            got, ref = got[0], reference[0]
        else:
            ref = reference
        assert isinstance(got, np.ndarray) and got.dtype == ref.dtype, name
        ok, err, msg = conformance.compare(case, ref, got)
        assert ok, f"{name} differs from numpy: {msg}"
