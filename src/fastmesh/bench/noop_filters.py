"""No-op filters for the filter-cost scenario `h1-pyfilter` (docs/bench.md)
and perf/bench_filters.py: what one Python filter on the chain costs when it
does nothing.

Its Cython twin is `fastmesh._core:NoopFilter` (compiled hooks, no Python
call), used by `h1-cyfilter`.
"""
from __future__ import annotations

import fastmesh


class NoopPythonFilter(fastmesh.HttpFilter):
    """Lets every request through: one Python call per request, nothing else."""

    def on_request_headers(self, request):
        return None


def never_limiting_ratelimit() -> fastmesh.HttpFilter:
    """The built-in local rate limit with a bucket no load empties, by import
    path (perf/instructions_per_request.py --filter takes one): what looking
    at every request and taking a token costs (`h1-ratelimit` in the bench)."""
    from fastmesh import _core
    return _core.LocalRateLimitFilter(_core.RateLimitSettings(
        "bench", 1 << 30, 1 << 30, 1.0, filter_enabled_ppm=1_000_000,
        filter_enforced_ppm=1_000_000))
