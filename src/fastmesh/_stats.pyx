"""The data plane's stats registry.

A worker has one StatsRegistry. The control side asks it for blocks and
histograms by name and labels (get-or-create, so they survive config
reloads); the hot path keeps the objects it was given and writes C memory:
``blk.v[SLOT] += 1`` for a counter or gauge, ``h.record(seconds)`` for a
latency. ``snapshot()`` turns everything into plain data that crosses the
worker's JSON channel; ``fastmesh.admin.metrics`` sums the workers' snapshots
and renders them (Prometheus, Envoy's /stats text). Design: docs/stats.md.

A worker runs one event loop in one thread, so nothing here is locked.
"""
cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset

import re

# Envoy's default histogram bucket bounds (milliseconds: 0.5, 1, 5, ... 3600000),
# kept in seconds, the unit of record() and of Prometheus' `le`. Each literal is
# the same double as the Python float of the same text, so a value equal to a
# bound in Python lands in that bound's bucket (buckets are `<= le`).
cdef double BOUNDS[HIST_NBOUNDS]
BOUNDS[:] = [0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
             2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0]

HISTOGRAM_BOUNDS = tuple([BOUNDS[i] for i in range(HIST_NBOUNDS)])
KINDS = ("counter", "gauge")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Stat names may be dotted, as Envoy's are (circuit_breakers.default.cx_open,
# outlier_detection.ejections_active): each part a name. Prometheus gets
# underscores (admin.metrics). Prefixes and labels stay plain names.
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


cdef inline Py_ssize_t bucket_of(double x) noexcept:
    # The first bucket whose bound is >= x (HIST_NBOUNDS: the +Inf bucket).
    cdef Py_ssize_t lo = 0, hi = HIST_NBOUNDS, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if x <= BOUNDS[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _check_name(str what, str name):
    if _NAME.match(name) is None:
        raise ValueError(f"stats: {what} {name!r} is not a name ([A-Za-z_][A-Za-z0-9_]*)")


def _check_stat_name(str name):
    if _DOTTED.match(name) is None:
        raise ValueError(f"stats: stat {name!r} is not a name "
                         "([A-Za-z_][A-Za-z0-9_]*, parts joined by '.')")


def normalize_labels(labels):
    """None, a dict or pairs -> ((label, value), ...) sorted by label.

    Values become str. Label names follow Prometheus' rules; `le` is kept
    for histogram buckets and `__*` for Prometheus itself."""
    if labels is None:
        return ()
    items = labels.items() if isinstance(labels, dict) else labels
    out = []
    seen = set()
    for key, value in items:
        key = str(key)
        _check_name("label", key)
        if key == "le" or key.startswith("__"):
            raise ValueError(f"stats: label name {key!r} is reserved")
        if key in seen:
            raise ValueError(f"stats: label {key!r} given twice")
        seen.add(key)
        out.append((key, str(value)))
    out.sort()
    return tuple(out)


@cython.final
cdef class StatsBlock:
    """Counters and gauges that share a prefix and a label set, one int64 slot
    per name. The slot array is allocated once and never moves: a pointer
    taken from it stays valid as long as the block lives."""

    def __cinit__(self, str prefix, tuple names, tuple kinds, labels=None):
        cdef Py_ssize_t n = len(names)
        if prefix:                      # "": worker- or process-wide, no prefix in any name
            _check_name("prefix", prefix)
        if len(kinds) != n:
            raise ValueError(f"stats: {prefix}: {n} names but {len(kinds)} kinds")
        if len(set(names)) != n:
            raise ValueError(f"stats: {prefix}: a slot name is given twice")
        if len({str(x).replace(".", "_") for x in names}) != n:
            # Prometheus writes a dot as "_": a.b and a_b would be one family.
            raise ValueError(f"stats: {prefix}: two slot names differ only in '.' and '_'")
        for name, kind in zip(names, kinds):
            _check_stat_name(name)
            if kind not in KINDS:
                raise ValueError(f"stats: {prefix}.{name}: kind must be counter or gauge, not {kind!r}")
        # At least one slot so that v is never NULL.
        self.v = <int64_t*>PyMem_Calloc(n if n > 0 else 1, sizeof(int64_t))
        if self.v == NULL:
            raise MemoryError()
        self.n = n
        self.prefix = prefix
        self.names = tuple([str(x) for x in names])
        self.kinds = tuple([str(x) for x in kinds])
        self.labels = normalize_labels(labels)

    def __dealloc__(self):
        if self.v != NULL:
            PyMem_Free(self.v)
            self.v = NULL

    def slot(self, str name):
        """The slot index of `name` (for code that binds slots at setup time)."""
        return self.names.index(name)

    def value(self, str name):
        return self.v[self.names.index(name)]

    def add_py(self, Py_ssize_t slot, int64_t n=1):
        """Python-level `v[slot] += n` (control side, tests)."""
        if slot < 0 or slot >= self.n:
            raise IndexError(slot)
        self.v[slot] += n

    def set_py(self, Py_ssize_t slot, int64_t value):
        """Python-level `v[slot] = value` (gauges owned by the control side)."""
        if slot < 0 or slot >= self.n:
            raise IndexError(slot)
        self.v[slot] = value

    def as_dict(self):
        return {self.names[i]: self.v[i] for i in range(self.n)}

    def __repr__(self):
        return f"<StatsBlock {self.prefix} {dict(self.labels)} {self.as_dict()}>"


@cython.final
cdef class Histogram:
    """A latency histogram with Envoy's default bucket bounds plus +Inf."""

    def __cinit__(self, str prefix, str name, labels=None):
        if prefix:
            _check_name("prefix", prefix)
        _check_name("histogram", name)
        memset(self.buckets, 0, sizeof(self.buckets))
        self.count = 0
        self.sum = 0.0
        self.prefix = prefix
        self.name = name
        self.labels = normalize_labels(labels)

    cdef void record(self, double seconds) noexcept:
        if seconds != seconds:          # NaN: no bucket, and it would poison the sum
            return
        if seconds < 0.0:               # a clock step; latencies are not negative
            seconds = 0.0
        self.buckets[bucket_of(seconds)] += 1
        self.count += 1
        self.sum += seconds

    def record_py(self, double seconds):
        self.record(seconds)

    def as_dict(self):
        return {
            "prefix": self.prefix,
            "name": self.name,
            "labels": [list(kv) for kv in self.labels],
            "bounds": list(HISTOGRAM_BOUNDS),
            "buckets": [self.buckets[i] for i in range(HIST_NBUCKETS)],
            "count": self.count,
            "sum": self.sum,
        }


@cython.final
cdef class StatsRegistry:
    """A worker's blocks and histograms, by name and labels."""

    def __cinit__(self):
        self._blocks = {}
        self._histograms = {}
        self._kinds = {}

    cpdef StatsBlock block(self, str prefix, tuple names, tuple kinds, labels):
        key = (prefix, normalize_labels(labels))
        cdef StatsBlock blk = self._blocks.get(key)
        if blk is not None:
            if blk.names != names or blk.kinds != kinds:
                raise ValueError(f"stats: block {prefix} {dict(key[1])} exists with other slots")
            return blk
        blk = StatsBlock(prefix, names, kinds, key[1])
        # One kind per metric family: Prometheus has one TYPE per name, so
        # cluster.upstream_rq_active cannot be a gauge in one block and a
        # counter in another. Counters get a _total suffix there, so counters
        # x and x_total would have one name.
        new = {name: kind for name, kind in zip(names, kinds)}
        for name, kind in new.items():
            if self._kinds.get((prefix, name), kind) != kind:
                raise ValueError(f"stats: {prefix}.{name} is already a {self._kinds[(prefix, name)]}")
            twin = name[:-6] if name.endswith("_total") else name + "_total"
            if kind == "counter" and "counter" in (new.get(twin), self._kinds.get((prefix, twin))):
                raise ValueError(f"stats: counters {prefix}.{name} and {prefix}.{twin} "
                                 "would have the same Prometheus name")
        for name, kind in new.items():
            self._kinds[(prefix, name)] = kind
        self._blocks[key] = blk
        return blk

    cpdef Histogram histogram(self, str prefix, str name, labels):
        key = (prefix, name, normalize_labels(labels))
        cdef Histogram h = self._histograms.get(key)
        if h is not None:
            return h
        if self._kinds.get((prefix, name), "histogram") != "histogram":
            raise ValueError(f"stats: {prefix}.{name} is already a {self._kinds[(prefix, name)]}")
        h = Histogram(prefix, name, key[2])
        self._kinds[(prefix, name)] = "histogram"
        self._histograms[key] = h
        return h

    cpdef void forget(self, str prefix, labels):
        # The hot path may still write the forgotten objects (requests in
        # flight hold them): that is why they are only unlisted, never freed
        # here. A later block() or histogram() for the key makes new ones.
        cdef tuple key = normalize_labels(labels)
        self._blocks.pop((prefix, key), None)
        for hkey in [k for k in self._histograms if k[0] == prefix and k[2] == key]:
            del self._histograms[hkey]

    cpdef object snapshot(self):
        cdef StatsBlock blk
        cdef Histogram h
        blocks = []
        for blk in self._blocks.values():
            blocks.append({
                "prefix": blk.prefix,
                "labels": [list(kv) for kv in blk.labels],
                "values": blk.as_dict(),
                "kinds": dict(zip(blk.names, blk.kinds)),
            })
        return {
            "blocks": blocks,
            "histograms": [h.as_dict() for h in self._histograms.values()],
        }

    cpdef void reset_counters(self):
        cdef StatsBlock blk
        cdef Histogram h
        cdef Py_ssize_t i
        for blk in self._blocks.values():
            for i in range(blk.n):
                if blk.kinds[i] == "counter":
                    blk.v[i] = 0
        for h in self._histograms.values():
            memset(h.buckets, 0, sizeof(h.buckets))
            h.count = 0
            h.sum = 0.0

    def __len__(self):
        return len(self._blocks) + len(self._histograms)


# ---------------------------------------------------------------- benchmarks
# Loops timed by perf/bench_stats.py. The compiler barrier after each write
# stands for the rest of the hot path: without it GCC folds `n` increments of
# one slot into one add and the loop measures nothing.

cdef extern from *:
    """
    static inline void fastmesh_stats_barrier(void) { __asm__ __volatile__("" ::: "memory"); }
    """
    void barrier "fastmesh_stats_barrier"() noexcept nogil


@cython.final
cdef class _FieldStats:
    # The baseline: a fixed cdef field, as _core counted before the registry.
    cdef long long upstream_rq_total


def _bench_inc(StatsBlock b, Py_ssize_t slot, Py_ssize_t n):
    """n increments of one slot of a block, as the hot path does them."""
    cdef Py_ssize_t i
    if slot < 0 or slot >= b.n:
        raise IndexError(slot)
    for i in range(n):
        b.v[slot] += 1
        barrier()


def _bench_field_inc(Py_ssize_t n):
    """Baseline: n increments of a cdef field."""
    cdef _FieldStats st = _FieldStats()
    cdef Py_ssize_t i
    for i in range(n):
        st.upstream_rq_total += 1
        barrier()
    return st.upstream_rq_total


def _bench_record(Histogram h, Py_ssize_t n):
    """n records spread over every bucket (so the search is not always the same)."""
    cdef double vals[64]
    cdef Py_ssize_t i
    for i in range(64):
        # 0.2 ms .. ~1.5 h on a log scale: every bucket, +Inf included.
        vals[i] = 0.0002 * (1.35 ** i)
    for i in range(n):
        h.record(vals[i & 63])
        barrier()
