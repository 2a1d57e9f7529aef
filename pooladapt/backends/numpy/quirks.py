"""NumPy (and ml_dtypes) behaviours the translation works around, one small function each.

Each docstring names what NumPy does (measured with NumPy 2.4 and ml_dtypes 0.6 on x86
CPUs) and the test that pins it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from pooladapt import lowering


@lru_cache(maxsize=64)
def max_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a max is computed in: float32 for float16 and bfloat16, which is exact (every
    16-bit float is a float32), their own otherwise. NumPy's float16 ``maximum`` converts
    element by element and has no vector loop; float32's has one
    (``test_float16_large_input_matches_the_oracle``, tests/core/test_numpy_backend.py)."""
    return np.dtype(np.float32) if dtype.name in lowering.HALF_DTYPES else dtype


def quiet() -> np.errstate:
    """NumPy's floating-point warnings off inside a ``with`` block. The values they warn about
    are the contract's: ml_dtypes' bfloat16 max warns "invalid" on NaN, a window whose
    divisor is 0 is 0 / 0 = NaN, and an avg or lp past float16's range is inf. The tests turn
    warnings into errors, so the conformance grid's NaN, empty-window and float16 cases pin
    it."""
    return np.errstate(invalid="ignore", divide="ignore", over="ignore")
