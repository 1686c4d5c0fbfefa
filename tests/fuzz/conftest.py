"""Fuzzing (issue 14): bad input gives a status or a ConfigError, never an unhandled exception.

Bounded for CI: ``max_examples`` 200 per test (override with ``CLIPCRAWL_FUZZ_EXAMPLES`` for a
longer local run) and no per-example deadline (the 2-core CI machine is noisy); each test takes
well under 20 s.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "clipcrawl-fuzz", max_examples=int(os.environ.get("CLIPCRAWL_FUZZ_EXAMPLES", "200")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    derandomize=os.environ.get("CLIPCRAWL_FUZZ_RANDOM") is None,  # reproducible in CI
)
FUZZ = settings.get_profile("clipcrawl-fuzz")
#: Tests whose examples each write a file and parse YAML/JSON: fewer examples, same < 20 s bound.
FUZZ_HEAVY = settings(FUZZ, max_examples=max(1, FUZZ.max_examples * 3 // 5))
