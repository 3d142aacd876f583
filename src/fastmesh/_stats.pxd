# The data plane's stats registry: counters and gauges in blocks of int64
# slots, latency histograms with fixed buckets. The hot path holds a block
# and writes `blk.v[SLOT] += 1`; nothing is looked up by name per request.
cimport cython
from libc.stdint cimport int64_t, uint64_t

cdef enum:
    HIST_NBOUNDS = 19                  # finite bucket bounds (Envoy's defaults)
    HIST_NBUCKETS = 20                 # plus the +Inf bucket


@cython.final
cdef class StatsBlock:
    cdef int64_t* v                    # one slot per name; its own allocation, never moved
    cdef readonly Py_ssize_t n         # number of slots
    cdef readonly str prefix           # "cluster", "listener", ...; "" for worker-wide
    cdef readonly tuple names          # slot names, in slot order
    cdef readonly tuple kinds          # "counter" | "gauge" per slot
    cdef readonly tuple labels         # ((label, value), ...) sorted by label


@cython.final
cdef class Histogram:
    cdef uint64_t buckets[HIST_NBUCKETS]   # per bucket, not cumulative; the last is +Inf
    cdef uint64_t count
    cdef double sum                    # seconds
    cdef readonly str prefix
    cdef readonly str name
    cdef readonly tuple labels

    cdef void record(self, double seconds) noexcept
        # O(1): a binary search over the C array of bounds, no Python.


@cython.final
cdef class StatsRegistry:
    cdef dict _blocks                  # (prefix, labels) -> StatsBlock
    cdef dict _histograms              # (prefix, name, labels) -> Histogram
    cdef dict _kinds                   # (prefix, name) -> counter|gauge|histogram: one kind per family

    cpdef StatsBlock block(self, str prefix, tuple names, tuple kinds, labels)
        # Get-or-create by (prefix, labels): the same object for the same key,
        # so a block (and pointers into it) survives config reloads.
    cpdef Histogram histogram(self, str prefix, str name, labels)
        # Get-or-create by (prefix, name, labels), likewise.
    cpdef void forget(self, str prefix, labels)
        # Drop the blocks and histograms of (prefix, labels) from the output
        # (a removed cluster); their objects live on while referenced.
    cpdef object snapshot(self)
        # Plain JSON-able data of every block and histogram (docs/stats.md).
    cpdef void reset_counters(self)
        # Counters and histograms to 0; gauges kept (Envoy's /reset_counters).
