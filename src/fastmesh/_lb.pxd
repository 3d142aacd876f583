# Load-balancer selection over C arrays built once per config (per worker).
# The control side builds one LoadBalancer per cluster from the endpoint list;
# the data side calls pick() per request. Endpoint i of the LB is index i of
# the cluster's endpoint list.

from libc.stdint cimport uint64_t, uint32_t

cdef uint64_t hash_bytes(const char* data, Py_ssize_t n, uint64_t seed) noexcept nogil
    # xxHash64 of the bytes (the hash Envoy uses for ring hash and Maglev).

cdef class LoadBalancer:
    cdef readonly int n                 # number of endpoints
    cdef readonly str policy            # "round_robin", ...
    cdef readonly bint uses_hash        # ring_hash / maglev need a hash key
    cdef int* active                    # in-flight requests per endpoint (least_request
                                        # uses it; all policies keep it for stats)
    cdef uint64_t rng                   # xorshift state for random choices

    cdef int pick(self, uint64_t hash_key) noexcept
        # Index of the chosen endpoint in [0, n), -1 if n == 0. hash_key is
        # ignored by policies that do not hash.
    cdef int pick_excluding(self, uint64_t hash_key, int exclude) noexcept
        # Same, but avoids `exclude` when another endpoint can be chosen
        # (used when retrying after a failed connect).
    cdef void request_started(self, int idx) noexcept
    cdef void request_finished(self, int idx) noexcept
