"""Wrapper: the benchmarks' shared helpers live in `recursa.evals.perf.common`."""

from recursa.evals.perf.common import *  # noqa: F403
