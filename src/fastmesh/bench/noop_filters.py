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
