"""Load balancers: choose an endpoint of a cluster for one request.

Each worker's ClusterState (core_cluster.pxi) builds one LoadBalancer over
its endpoint list with `make_lb()`, and keeps it across snapshots while the
endpoints and the policy stay the same; the object is immutable except for
its in-flight counters and its random state. The data side calls the C
method `pick()` once per request (`pick_excluding()` when a retry must go to
another endpoint), then `request_started()` / `request_finished()` around
the upstream exchange. Endpoint i of a balancer is index i of the
cluster's endpoint list.

Policies (the names are the ones of the config file):

* ``round_robin``   smooth weighted round robin (nginx). With equal weights it
                    is a strict rotation. The cycle is precomputed, so a pick
                    is one array read.
* ``least_request`` power of two choices (Envoy): draw two distinct endpoints
                    by weight, keep the one with fewer in-flight requests per
                    unit of weight.
* ``random``        weighted random over cumulative weights, xorshift64*.
* ``ring_hash``     Envoy's ketama-style ring: every endpoint is hashed at
                    many points, xxh64(b"<key>_<i>"), in proportion to its
                    weight; a request goes to the first point at or after its
                    hash key.
* ``maglev``        Maglev lookup table (Google NSDI'16, weighted as Envoy
                    does); a request goes to table[hash_key % M].

Every array is allocated when the balancer is built and freed with it; pick()
allocates nothing, touches no Python object and cannot raise.
"""

from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport uint64_t, uint32_t, int64_t
from libc.stdlib cimport qsort
from libc.string cimport memcpy
import os

cdef extern from *:
    """
    /* xxHash64 (https://github.com/Cyan4973/xxHash, XXH64 specification,
       BSD-2), written out here so the data plane has no extra C dependency.
       Reads are memcpy-based so unaligned input is fine, and byte-swapped on
       big-endian hosts so the hash is the same everywhere (ring positions
       must not depend on the machine). */
    #include <stdint.h>
    #include <string.h>
    #define FM_P1 11400714785074694791ULL
    #define FM_P2 14029467366897019727ULL
    #define FM_P3 1609587929392839161ULL
    #define FM_P4 9650029242287828579ULL
    #define FM_P5 2870177450012600261ULL

    static inline uint64_t fm_rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

    static inline uint64_t fm_read64(const unsigned char* p) {
        uint64_t v; memcpy(&v, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap64(v);
    #endif
        return v;
    }
    static inline uint32_t fm_read32(const unsigned char* p) {
        uint32_t v; memcpy(&v, p, 4);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        v = __builtin_bswap32(v);
    #endif
        return v;
    }
    static inline uint64_t fm_xxh_round(uint64_t acc, uint64_t input) {
        acc += input * FM_P2;
        acc = fm_rotl64(acc, 31);
        return acc * FM_P1;
    }
    static inline uint64_t fm_xxh_merge(uint64_t acc, uint64_t val) {
        acc ^= fm_xxh_round(0, val);
        return acc * FM_P1 + FM_P4;
    }
    static uint64_t fm_xxh64(const char* input, size_t len, uint64_t seed) {
        const unsigned char* p = (const unsigned char*)input;
        const unsigned char* end = p + len;
        uint64_t h;
        if (len >= 32) {
            const unsigned char* limit = end - 32;
            uint64_t v1 = seed + FM_P1 + FM_P2, v2 = seed + FM_P2, v3 = seed, v4 = seed - FM_P1;
            do {
                v1 = fm_xxh_round(v1, fm_read64(p)); p += 8;
                v2 = fm_xxh_round(v2, fm_read64(p)); p += 8;
                v3 = fm_xxh_round(v3, fm_read64(p)); p += 8;
                v4 = fm_xxh_round(v4, fm_read64(p)); p += 8;
            } while (p <= limit);
            h = fm_rotl64(v1, 1) + fm_rotl64(v2, 7) + fm_rotl64(v3, 12) + fm_rotl64(v4, 18);
            h = fm_xxh_merge(h, v1); h = fm_xxh_merge(h, v2);
            h = fm_xxh_merge(h, v3); h = fm_xxh_merge(h, v4);
        } else {
            h = seed + FM_P5;
        }
        h += (uint64_t)len;
        while (p + 8 <= end) {
            h ^= fm_xxh_round(0, fm_read64(p));
            h = fm_rotl64(h, 27) * FM_P1 + FM_P4;
            p += 8;
        }
        if (p + 4 <= end) {
            h ^= (uint64_t)fm_read32(p) * FM_P1;
            h = fm_rotl64(h, 23) * FM_P2 + FM_P3;
            p += 4;
        }
        while (p < end) {
            h ^= (uint64_t)(*p) * FM_P5;
            h = fm_rotl64(h, 11) * FM_P1;
            p++;
        }
        h ^= h >> 33; h *= FM_P2;
        h ^= h >> 29; h *= FM_P3;
        h ^= h >> 32;
        return h;
    }

    /* xorshift64* (Vigna 2014): 3 shifts and a multiply, good enough for
       load balancing (not for anything secret). State must be nonzero. */
    static inline uint64_t fm_xorshift64s(uint64_t* s) {
        uint64_t x = *s;
        x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
        *s = x;
        return x * 2685821657736338717ULL;
    }

    /* Uniform in [0, n) without a division (Lemire): the high half of the
       128-bit product. */
    static inline uint64_t fm_range(uint64_t r, uint64_t n) {
    #if defined(__SIZEOF_INT128__)
        return (uint64_t)(((unsigned __int128)r * n) >> 64);
    #else
        return r % n;
    #endif
    }

    /* splitmix64 finalizer: remixes a hash key for a retry attempt. */
    static inline uint64_t fm_mix64(uint64_t z) {
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
    }
    """
    uint64_t fm_xxh64(const char* data, size_t n, uint64_t seed) nogil
    uint64_t fm_xorshift64s(uint64_t* s) nogil
    uint64_t fm_range(uint64_t r, uint64_t n) nogil
    uint64_t fm_mix64(uint64_t z) nogil


cdef uint64_t hash_bytes(const char* data, Py_ssize_t n, uint64_t seed) noexcept nogil:
    return fm_xxh64(data, <size_t>n, seed)


def hash64(bytes data not None, seed=0):
    """xxHash64 of `data` (an int in [0, 2**64)), the hash the hash policies use."""
    cdef uint64_t s = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
    return hash_bytes(data, len(data), s)


# Limits taken from Envoy (ring_hash.proto, maglev.proto).
cdef enum:
    RING_MAX = 8388608          # 8M points
    MAGLEV_DEFAULT = 65537
    MAGLEV_MAX = 5000011
    # Round robin precomputes its cycle when it is at most this long (int32
    # each, so at most 256 KiB per balancer); longer cycles run the nginx loop
    # per pick.
    RR_SCHEDULE_MAX = 65536
    # pick_excluding() re-draws this many times before taking the next index.
    EXCLUDE_TRIES = 8


cdef uint64_t _seed_from(dict options):
    seed = options.get("seed") if options else None
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    cdef uint64_t s = fm_mix64(<uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF) + 0x9E3779B97F4A7C15ULL)
    return s if s != 0 else 0x9E3779B97F4A7C15ULL   # xorshift state must be nonzero


cdef list _check_weights(list weights):
    if weights is None:
        raise TypeError("weights must be a list of positive ints")
    out = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, int) or w <= 0 or w > 0xFFFFFFFF:
            raise ValueError(f"weights must be ints in [1, 2**32), got {w!r}")
        out.append(int(w))
    return out


cdef list _check_keys(list keys, Py_ssize_t n):
    if keys is None or len(keys) != n:
        raise ValueError("hash policies need one key (bytes) per endpoint")
    for k in keys:
        if not isinstance(k, bytes) or len(k) == 0:
            raise ValueError(f"endpoint keys must be non-empty bytes, got {k!r}")
    if len(set(keys)) != n:
        raise ValueError("endpoint keys must be unique")
    return keys


cdef _init_base(LoadBalancer self, str policy, Py_ssize_t n, dict options):
    # Called once from the subclass __init__ (a second call would leak the
    # first array, hence the guard).
    if self.active != NULL:
        raise RuntimeError("load balancer already initialised")
    if n > 0x7FFFFFFF:
        raise ValueError("too many endpoints")
    self.policy = policy
    self.n = <int>n
    self.rng = _seed_from(options)
    self.active = <int*>PyMem_Malloc(max(n, 1) * sizeof(int))
    if self.active == NULL:
        raise MemoryError()
    cdef Py_ssize_t i
    for i in range(n):
        self.active[i] = 0


cdef inline uint64_t _rand(LoadBalancer self) noexcept:
    return fm_xorshift64s(&self.rng)


cdef class LoadBalancer:
    """Base of the policies; picks nothing (-1). Build one with make_lb()."""

    def __cinit__(self, *args, **kwargs):
        self.n = 0
        self.active = NULL
        self.rng = 0x9E3779B97F4A7C15ULL
        self.uses_hash = False
        self.policy = ""

    def __dealloc__(self):
        PyMem_Free(self.active)

    cdef int pick(self, uint64_t hash_key) noexcept:
        return -1

    cdef int pick_excluding(self, uint64_t hash_key, int exclude) noexcept:
        # Generic retry: draw again (random policies draw fresh numbers, hash
        # policies get a remixed key) and fall back to the next index so the
        # call always ends.
        cdef int i, r = self.pick(hash_key)
        if r != exclude or self.n <= 1:
            return r
        for i in range(1, EXCLUDE_TRIES + 1):
            r = self.pick(fm_mix64(hash_key + <uint64_t>i))
            if r != exclude:
                return r
        return (exclude + 1) % self.n

    cdef void request_started(self, int idx) noexcept:
        if 0 <= idx < self.n:
            self.active[idx] += 1

    cdef void request_finished(self, int idx) noexcept:
        # Never negative: a finish without a start (e.g. after a config swap
        # moved the request to a new balancer) is ignored.
        if 0 <= idx < self.n and self.active[idx] > 0:
            self.active[idx] -= 1

    # --- Python-visible helpers (tests, admin) ---

    def pick_py(self, hash_key=0):
        """pick() from Python: the endpoint index, or -1 when empty."""
        return self.pick(<uint64_t>(int(hash_key) & 0xFFFFFFFFFFFFFFFF))

    def pick_excluding_py(self, hash_key, int exclude):
        """pick_excluding() from Python."""
        return self.pick_excluding(<uint64_t>(int(hash_key) & 0xFFFFFFFFFFFFFFFF), exclude)

    def started(self, int i):
        """request_started(i) from Python."""
        self.request_started(i)

    def finished(self, int i):
        """request_finished(i) from Python."""
        self.request_finished(i)

    def active_counts(self):
        """In-flight requests per endpoint, as a list."""
        return [self.active[i] for i in range(self.n)]

    def bench_picks(self, Py_ssize_t n, uint64_t seed=1):
        """Do n picks in a C loop (hash keys from a xorshift stream, so hash
        policies see different keys); returns a checksum of the indices."""
        cdef uint64_t s = seed if seed != 0 else 1
        cdef uint64_t acc = 0
        cdef Py_ssize_t i
        for i in range(n):
            acc += <uint64_t>self.pick(fm_xorshift64s(&s))
        return acc

    def __len__(self):
        return self.n

    def __repr__(self):
        return f"<{type(self).__name__} policy={self.policy!r} n={self.n}>"


# ---------------------------------------------------------------- round robin

cdef class RoundRobinLB(LoadBalancer):
    """RoundRobinLB(weights: list[int], keys=None, options=None)

    Smooth weighted round robin (nginx): over one cycle of sum(weights)/gcd
    picks each endpoint is chosen exactly weight/gcd times, spread out rather
    than in bursts. The cycle is precomputed; the start point is random
    (seeded from options["seed"] if given) so workers do not move in lockstep.
    """
    cdef int* schedule          # the cycle, when short enough
    cdef Py_ssize_t sched_len
    cdef Py_ssize_t pos
    cdef int64_t* weight        # fallback: nginx loop per pick
    cdef int64_t* current
    cdef int64_t total

    def __cinit__(self, *args, **kwargs):
        self.schedule = NULL
        self.weight = NULL
        self.current = NULL

    def __dealloc__(self):
        PyMem_Free(self.schedule)
        PyMem_Free(self.weight)
        PyMem_Free(self.current)

    def __init__(self, list weights, list keys=None, dict options=None):
        from math import gcd
        ws = _check_weights(weights)
        cdef Py_ssize_t n = len(ws), i, k
        _init_base(self, "round_robin", n, options)
        if n == 0:
            return
        g = 0
        for w in ws:
            g = gcd(g, w)
        ws = [w // g for w in ws]
        self.total = sum(ws)
        self.weight = <int64_t*>PyMem_Malloc(n * sizeof(int64_t))
        self.current = <int64_t*>PyMem_Malloc(n * sizeof(int64_t))
        if self.weight == NULL or self.current == NULL:
            raise MemoryError()
        for i in range(n):
            self.weight[i] = ws[i]
            self.current[i] = 0
        if self.total <= RR_SCHEDULE_MAX:
            self.schedule = <int*>PyMem_Malloc(self.total * sizeof(int))
            if self.schedule == NULL:
                raise MemoryError()
            self.sched_len = self.total
            if self.total == n:
                # Equal weights: smooth WRR is plain index order (each step
                # the first of the equally rich wins), O(n) instead of the
                # O(n^2) of stepping it (10,000 endpoints: 0.1 ms, not 130).
                for k in range(n):
                    self.schedule[k] = <int>k
            else:
                for k in range(self.sched_len):
                    self.schedule[k] = self._swrr_step()
            self.pos = <Py_ssize_t>fm_range(_rand(self), <uint64_t>self.sched_len)
        else:
            # Random start for the online loop too: advance a random amount
            # within the first n steps.
            k = <Py_ssize_t>fm_range(_rand(self), <uint64_t>n)
            for i in range(k):
                self._swrr_step()

    cdef inline int _swrr_step(self) noexcept:
        # nginx ngx_http_upstream_get_peer: every endpoint gains its weight,
        # the richest is chosen and pays the total.
        cdef int i, best = 0
        cdef int64_t bestv
        for i in range(self.n):
            self.current[i] += self.weight[i]
        bestv = self.current[0]
        for i in range(1, self.n):
            if self.current[i] > bestv:
                bestv = self.current[i]
                best = i
        self.current[best] -= self.total
        return best

    cdef int pick(self, uint64_t hash_key) noexcept:
        cdef int r
        if self.n == 0:
            return -1
        if self.schedule != NULL:
            r = self.schedule[self.pos]
            self.pos += 1
            if self.pos == self.sched_len:
                self.pos = 0
            return r
        return self._swrr_step()


# -------------------------------------------------------------- weighted draws

cdef class _WeightedDraw(LoadBalancer):
    # Shared by random and least_request: one weighted draw is a uniform
    # number r in [0, total) and the first i with cum[i] > r.
    #
    # r = fm_range(u, total) for a random 64-bit u is monotone in u, so the
    # top `bits` bits of u already bound the answer from below: start[b] is
    # the answer for the smallest u of bucket b. With at least as many
    # buckets as endpoints the scan from there is ~1 step, so a draw costs
    # the same for 3 or 1000 endpoints (a binary search is log2(n) dependent
    # loads).
    cdef uint64_t* cum
    cdef int64_t* weight
    cdef uint64_t total
    cdef bint equal                # all weights equal: no search at all
    cdef uint32_t* start
    cdef int bits

    def __cinit__(self, *args, **kwargs):
        self.cum = NULL
        self.weight = NULL
        self.start = NULL

    def __dealloc__(self):
        PyMem_Free(self.cum)
        PyMem_Free(self.weight)
        PyMem_Free(self.start)

    cdef _init_weights(self, str policy, list weights, dict options):
        ws = _check_weights(weights)
        cdef Py_ssize_t n = len(ws), i, b, nb
        cdef uint64_t acc = 0, rmin
        _init_base(self, policy, n, options)
        if n == 0:
            return
        self.cum = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t))
        self.weight = <int64_t*>PyMem_Malloc(n * sizeof(int64_t))
        if self.cum == NULL or self.weight == NULL:
            raise MemoryError()
        for i in range(n):
            acc += <uint64_t>ws[i]
            self.cum[i] = acc
            self.weight[i] = ws[i]
        self.total = acc
        self.equal = len(set(ws)) == 1
        if self.equal:
            return
        self.bits = 1
        while (1 << self.bits) < 2 * n and self.bits < 16:
            self.bits += 1
        nb = (<Py_ssize_t>1) << self.bits
        self.start = <uint32_t*>PyMem_Malloc(nb * sizeof(uint32_t))
        if self.start == NULL:
            raise MemoryError()
        i = 0
        for b in range(nb):
            rmin = fm_range((<uint64_t>b) << (64 - self.bits), self.total)
            while self.cum[i] <= rmin:
                i += 1
            self.start[b] = <uint32_t>i

    cdef inline int _draw(self) noexcept:
        cdef uint64_t u, r
        cdef int i
        u = _rand(self)
        if self.equal:
            return <int>fm_range(u, <uint64_t>self.n)
        r = fm_range(u, self.total)
        i = self.start[u >> (64 - self.bits)]
        while self.cum[i] <= r:
            i += 1
        return i


cdef class RandomLB(_WeightedDraw):
    """RandomLB(weights: list[int], keys=None, options=None)

    Weighted random: endpoint i with probability weights[i] / sum(weights).
    options["seed"] makes the sequence reproducible (tests).
    """

    def __init__(self, list weights, list keys=None, dict options=None):
        self._init_weights("random", weights, options)

    cdef int pick(self, uint64_t hash_key) noexcept:
        if self.n == 0:
            return -1
        return self._draw()


cdef class LeastRequestLB(_WeightedDraw):
    """LeastRequestLB(weights: list[int], keys=None, options=None)

    Power of two choices (Envoy's least_request with choice_count 2): two
    distinct endpoints are drawn by weight and the one with fewer in-flight
    requests per unit of weight wins; on a tie the first draw wins, so with
    nothing in flight the choice is plain weighted random.
    """

    def __init__(self, list weights, list keys=None, dict options=None):
        self._init_weights("least_request", weights, options)

    cdef int pick(self, uint64_t hash_key) noexcept:
        cdef int a, b, t
        if self.n <= 1:
            return self.n - 1           # -1 when empty, 0 with one endpoint
        a = self._draw()
        # Distinct candidates: with two endpoints this always compares both.
        # A few re-draws are enough; a heavy endpoint keeps winning the draw
        # only when the others are negligible anyway.
        b = self._draw()
        t = 0
        while b == a and t < 4:
            b = self._draw()
            t += 1
        if b == a:
            b = (a + 1) % self.n
        # active[b]/w[b] < active[a]/w[a], compared without division
        if <int64_t>self.active[b] * self.weight[a] < <int64_t>self.active[a] * self.weight[b]:
            return b
        return a


# ------------------------------------------------------------------ ring hash

cdef struct RingEntry:
    uint64_t hash
    int idx


cdef int _ring_cmp(const void* a, const void* b) noexcept nogil:
    # By hash, then endpoint index, so equal hashes sort the same everywhere.
    cdef const RingEntry* x = <const RingEntry*>a
    cdef const RingEntry* y = <const RingEntry*>b
    if x.hash < y.hash:
        return -1
    if x.hash > y.hash:
        return 1
    return (x.idx > y.idx) - (x.idx < y.idx)


cdef class RingHashLB(LoadBalancer):
    """RingHashLB(weights: list[int], keys: list[bytes], options=None)

    Envoy's ring hash. options: minimum_ring_size (default 1024),
    maximum_ring_size (default and cap 8388608). The ring holds
    ceil(scale) points where scale = min(ceil(min_w * min_size) / min_w,
    max_size) and min_w is the smallest normalised weight, so the lightest
    endpoint still gets ~min_size * min_w points; endpoint i's points are
    xxh64(keys[i] + b"_" + str(j)) for j = 0, 1, ...
    """
    # Sorted point hashes and, in a parallel array, their endpoints: the
    # search touches only the dense hash array (8 bytes a point).
    cdef uint64_t* hashes
    cdef int* owner
    cdef Py_ssize_t ring_size
    # Bucket index over the top `bits` bits of the hash: bucket[b] is the
    # first point whose hash has top bits >= b (2**bits + 1 entries). With
    # about one point per bucket a lookup is one index read and a scan of
    # ~1 point instead of log2(ring) dependent loads.
    cdef uint32_t* bucket
    cdef int bits

    def __cinit__(self, *args, **kwargs):
        self.hashes = NULL
        self.owner = NULL
        self.bucket = NULL
        self.ring_size = 0

    def __dealloc__(self):
        PyMem_Free(self.hashes)
        PyMem_Free(self.owner)
        PyMem_Free(self.bucket)

    def __init__(self, list weights, list keys, dict options=None):
        from math import ceil
        ws = _check_weights(weights)
        cdef Py_ssize_t n = len(ws)
        keys = _check_keys(keys, n)
        opts = options or {}
        min_size = opts.get("minimum_ring_size", 1024)
        max_size = opts.get("maximum_ring_size", RING_MAX)
        if not (isinstance(min_size, int) and isinstance(max_size, int)
                and 1 <= min_size <= max_size <= RING_MAX):
            raise ValueError("need 1 <= minimum_ring_size <= maximum_ring_size <= 8388608")
        _init_base(self, "ring_hash", n, options)
        self.uses_hash = True
        if n == 0:
            return
        # Same arithmetic as Envoy's RingHashLoadBalancer::Ring (doubles), so
        # rings of the same endpoints have the same points.
        total = float(sum(ws))
        min_norm = min(ws) / total
        scale = min(ceil(min_norm * min_size) / min_norm, float(max_size))
        cap = <Py_ssize_t>ceil(scale) + n         # + n: rounding slack
        cdef RingEntry* ring = <RingEntry*>PyMem_Malloc(cap * sizeof(RingEntry))
        if ring == NULL:
            raise MemoryError()
        cdef double current = 0.0, target = 0.0, cumw = 0.0
        cdef Py_ssize_t count = 0, i, j, t, klen, dlen
        cdef bytes key
        cdef char* buf
        cdef char digits[24]
        cdef uint64_t v
        maxkey = max(len(k) for k in keys)
        buf = <char*>PyMem_Malloc(maxkey + 24)
        try:
            if buf == NULL:
                raise MemoryError()
            for i in range(n):
                key = keys[i]
                klen = len(key)
                memcpy(buf, <const char*>key, klen)
                buf[klen] = b'_'
                # Envoy adds scale * w / total per endpoint; from the
                # cumulative weight instead, so float error cannot add a
                # point at the end (the last target is exactly scale).
                cumw += ws[i]
                target = scale * cumw / total
                j = 0
                while current < target and count < cap:
                    # decimal j after "<key>_", written without a str object
                    v = <uint64_t>j
                    dlen = 0
                    while True:
                        digits[dlen] = <char>(48 + v % 10)
                        dlen += 1
                        v //= 10
                        if v == 0:
                            break
                    for t in range(dlen):
                        buf[klen + 1 + t] = digits[dlen - 1 - t]
                    ring[count].hash = hash_bytes(buf, klen + 1 + dlen, 0)
                    ring[count].idx = <int>i
                    count += 1
                    j += 1
                    current += 1.0
            qsort(ring, count, sizeof(RingEntry), _ring_cmp)
            self.hashes = <uint64_t*>PyMem_Malloc(max(count, 1) * sizeof(uint64_t))
            self.owner = <int*>PyMem_Malloc(max(count, 1) * sizeof(int))
            if self.hashes == NULL or self.owner == NULL:
                raise MemoryError()
            for j in range(count):
                self.hashes[j] = ring[j].hash
                self.owner[j] = ring[j].idx
            self.ring_size = count
            self._build_index()
        finally:
            PyMem_Free(buf)
            PyMem_Free(ring)

    cdef _build_index(self):
        cdef int bits = 1
        cdef Py_ssize_t nb, b, p = 0
        while (1 << bits) < self.ring_size and bits < 20:    # <= 4 MiB of index
            bits += 1
        nb = (<Py_ssize_t>1) << bits
        self.bucket = <uint32_t*>PyMem_Malloc((nb + 1) * sizeof(uint32_t))
        if self.bucket == NULL:
            raise MemoryError()
        self.bits = bits
        for b in range(nb + 1):
            while p < self.ring_size and <Py_ssize_t>(self.hashes[p] >> (64 - bits)) < b:
                p += 1
            self.bucket[b] = <uint32_t>p

    cdef inline Py_ssize_t _find(self, uint64_t h) noexcept:
        # First point with hash >= h, wrapping past the end to point 0.
        # Points of h's bucket are the only candidates; if all are < h the
        # answer is the first point of a later bucket, bucket[b + 1].
        cdef uint64_t b = h >> (64 - self.bits)
        cdef Py_ssize_t p = self.bucket[b], end = self.bucket[b + 1]
        while p < end and self.hashes[p] < h:
            p += 1
        return p if p < self.ring_size else 0

    cdef int pick(self, uint64_t hash_key) noexcept:
        if self.ring_size == 0:
            return -1
        return self.owner[self._find(hash_key)]

    cdef int pick_excluding(self, uint64_t hash_key, int exclude) noexcept:
        # Walk the ring to the next point of another endpoint (what a
        # consistent-hash retry should do: the key's next owner).
        cdef Py_ssize_t p, k
        if self.ring_size == 0:
            return -1
        p = self._find(hash_key)
        if self.n <= 1 or self.owner[p] != exclude:
            return self.owner[p]
        for k in range(self.ring_size):
            p += 1
            if p == self.ring_size:
                p = 0
            if self.owner[p] != exclude:
                return self.owner[p]
        return exclude

    @property
    def ring_points(self):
        """Number of points on the ring."""
        return self.ring_size

    def ring_counts(self):
        """Points per endpoint (tests: proportional to weight)."""
        out = [0] * self.n
        for k in range(self.ring_size):
            out[self.owner[k]] += 1
        return out


# --------------------------------------------------------------------- maglev

cdef bint _is_prime(uint64_t m):
    cdef uint64_t d = 3
    if m < 2:
        return False
    if m % 2 == 0:
        return m == 2
    while d * d <= m:
        if m % d == 0:
            return False
        d += 2
    return True


cdef class MaglevLB(LoadBalancer):
    """MaglevLB(weights: list[int], keys: list[bytes], options=None)

    Maglev consistent hashing. options: table_size (a prime, default 65537,
    at most 5000011). Endpoint i fills the table along its permutation
    offset + j * skip (mod M) with offset = xxh64(key, 0) % M and
    skip = xxh64(key, 1) % (M - 1) + 1; in round k it takes a slot only if
    k * weight >= its target, which grows by max(weight) per slot taken, so
    slots are proportional to weight (Envoy's weighted Maglev).
    """
    cdef int* table
    cdef uint64_t table_size

    def __cinit__(self, *args, **kwargs):
        self.table = NULL
        self.table_size = 0

    def __dealloc__(self):
        PyMem_Free(self.table)

    def __init__(self, list weights, list keys, dict options=None):
        ws = _check_weights(weights)
        cdef Py_ssize_t n = len(ws), i, filled
        keys = _check_keys(keys, n)
        opts = options or {}
        m = opts.get("table_size", MAGLEV_DEFAULT)
        if not isinstance(m, int) or m < 2 or m > MAGLEV_MAX or not _is_prime(m):
            raise ValueError("maglev table_size must be a prime <= 5000011")
        _init_base(self, "maglev", n, options)
        self.uses_hash = True
        if n == 0:
            return
        cdef uint64_t M = <uint64_t>m
        self.table_size = M
        self.table = <int*>PyMem_Malloc(M * sizeof(int))
        cdef uint64_t* offset = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t))
        cdef uint64_t* skip = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t))
        cdef uint64_t* nxt = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t))
        cdef uint64_t* target = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t))
        cdef uint64_t* w = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t))
        cdef uint64_t maxw = 0, it, c
        cdef bytes key
        try:
            if not (self.table and offset and skip and nxt and target and w):
                raise MemoryError()
            for c in range(M):
                self.table[c] = -1
            for i in range(n):
                key = keys[i]
                offset[i] = hash_bytes(key, len(key), 0) % M
                skip[i] = hash_bytes(key, len(key), 1) % (M - 1) + 1
                nxt[i] = 0
                target[i] = 0
                w[i] = <uint64_t>ws[i]
                if w[i] > maxw:
                    maxw = w[i]
            filled = 0
            it = 1
            while <uint64_t>filled < M:
                for i in range(n):
                    if <uint64_t>filled >= M:
                        break
                    # An endpoint of max weight takes a slot every round, one
                    # of a third of it every third round (integers: exact).
                    if it * w[i] < target[i]:
                        continue
                    target[i] += maxw
                    c = (offset[i] + skip[i] * nxt[i]) % M
                    while self.table[c] >= 0:
                        nxt[i] += 1
                        c = (offset[i] + skip[i] * nxt[i]) % M
                    self.table[c] = <int>i
                    nxt[i] += 1
                    filled += 1
                it += 1
        finally:
            PyMem_Free(offset)
            PyMem_Free(skip)
            PyMem_Free(nxt)
            PyMem_Free(target)
            PyMem_Free(w)

    cdef int pick(self, uint64_t hash_key) noexcept:
        if self.table_size == 0:
            return -1
        return self.table[hash_key % self.table_size]

    def table_counts(self):
        """Table slots per endpoint (tests: proportional to weight)."""
        out = [0] * self.n
        for c in range(self.table_size):
            out[self.table[c]] += 1
        return out


# -------------------------------------------------------------------- factory

_POLICIES = {
    "round_robin": RoundRobinLB,
    "least_request": LeastRequestLB,
    "random": RandomLB,
    "ring_hash": RingHashLB,
    "maglev": MaglevLB,
}


def make_lb(str policy, list weights, list keys, dict options=None):
    """make_lb(policy, weights, keys, options=None) -> LoadBalancer

    policy: "round_robin" | "least_request" | "random" | "ring_hash" | "maglev"
    weights: one positive int per endpoint (index i = endpoint i).
    keys: one identity bytes per endpoint (e.g. b"10.0.0.1:8080"); required
          by ring_hash and maglev, ignored (may be None) otherwise.
    options: per-policy settings (see each class) plus "seed" (int) for a
          reproducible random state.
    Raises ValueError on an unknown policy or bad weights/keys/options.
    """
    cls = _POLICIES.get(policy)
    if cls is None:
        raise ValueError(f"unknown load-balancing policy {policy!r}; "
                         f"expected one of {sorted(_POLICIES)}")
    return cls(weights, keys, options)
