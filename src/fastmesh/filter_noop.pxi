# filter_noop.pxi: NoopFilter, a compiled filter that does nothing.
#
# The smallest compiled filter, for two uses: the reference a Cython filter
# author copies (set `hooks`, override the cdef hook), and the benchmark of
# what a compiled filter costs on the chain (perf/bench_filters.py,
# `fastmesh bench --scenarios h1-cyfilter`).


@cython.final
cdef class NoopFilter(HttpFilter):
    """A compiled filter that lets every request through (config:
    ``import: fastmesh._core:NoopFilter``)."""

    def __cinit__(self, *args, **kwargs):
        self.name = "noop"
        self.hooks = FH_REQUEST_HEADERS

    cdef int request_headers(self, ProxyStream s) except -1:
        return FILTER_CONTINUE
