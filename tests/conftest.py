"""Hypothesis profiles: ``dev`` (default), ``ci`` (bounded), ``fuzz`` (the long run: 10,000
examples per test, or ``POOLADAPT_FUZZ_EXAMPLES``)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("ci", max_examples=120, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=int(os.environ.get("POOLADAPT_FUZZ_EXAMPLES",
                                                                 10_000)), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
