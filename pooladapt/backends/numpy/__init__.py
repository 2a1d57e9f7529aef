"""The NumPy backend, the embedded default: vectorised, no framework needed.

translate.py maps a plan onto NumPy's ops (read it first), written with the primitives of
ops.py (a dim's taps as slices, a pass over them); fast.py holds the speed routes and their
tuning, quirks.py the NumPy behaviours worked around, fractional.py fractional max pooling.
This module is the backend object: conversions, dtype names, what it reports.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from pooladapt.backends.base import Backend
from pooladapt.backends.numpy import fast, translate
from pooladapt.backends.numpy.fast import DEFAULT_TUNING, Tuning, tuned, tuning
from pooladapt.plan import PoolPlan


class NumpyBackend(Backend):
    name = "numpy"
    framework = "numpy"
    numpy_arrays = True
    speed_routes = fast.ROUTES
    # NaN, global, adaptive and unpool are NumPy ops of the translation; no autograd or compiler
    native_features = frozenset({"nan", "global", "adaptive", "unpool"})

    pool = staticmethod(translate.pool)
    global_pool = staticmethod(translate.global_pool)
    adaptive_pool = staticmethod(translate.adaptive_pool)
    max_unpool = staticmethod(translate.max_unpool)

    def version(self) -> str:
        return np.__version__

    def lowers_natively(self, plan: PoolPlan, dtype_name: str) -> bool | None:
        """The translation's own answer: NumPy has no pooling op to fall back from, so
        ``translate.pool`` is the one realisation of every plan on every dtype (NumPy's own
        ops, no padded copy, no fix-up): native."""
        return True

    def from_numpy(self, a: np.ndarray) -> np.ndarray:
        return a

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def dtype_name(self, x: Any) -> str:
        return _dtype_name(np.asarray(x).dtype)


@lru_cache(maxsize=64)
def _dtype_name(dtype: np.dtype) -> str:
    return str(dtype)


BACKEND = NumpyBackend()

__all__ = ["BACKEND", "DEFAULT_TUNING", "NumpyBackend", "Tuning", "tuned", "tuning"]
