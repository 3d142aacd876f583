# core_clock.pxi: the clock, random numbers (xorshift128+) and request ids.

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int CLOCK_MONOTONIC

cdef extern from "<unistd.h>" nogil:
    ssize_t c_write "write" (int fd, const void* buf, size_t n)

cdef extern from "<errno.h>" nogil:
    int errno
    int EAGAIN
    int EINTR


cdef inline double mono_now() noexcept nogil:
    # The vDSO makes this ~20 ns: cheaper than asking the loop through Python.
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


# xorshift128+ for weighted cluster picks and request ids: ids need to be
# unique, not secret, and os.urandom per request would be a syscall.
cdef uint64_t _rng_s0 = 0x9E3779B97F4A7C15
cdef uint64_t _rng_s1 = 0xBF58476D1CE4E5B9

cdef inline uint64_t rand64() noexcept nogil:
    global _rng_s0, _rng_s1
    cdef uint64_t x = _rng_s0
    cdef uint64_t y = _rng_s1
    _rng_s0 = y
    x ^= x << 23
    _rng_s1 = x ^ y ^ (x >> 17) ^ (y >> 26)
    return _rng_s1 + y

def seed_random(bytes seed16):
    """Seed the data plane's PRNG (each worker calls it with os.urandom(16))."""
    global _rng_s0, _rng_s1
    cdef const unsigned char* p = seed16
    cdef uint64_t a = 0, b = 0
    cdef int i
    for i in range(8):
        a = (a << 8) | p[i]
        b = (b << 8) | p[8 + i]
    _rng_s0 = a | 1
    _rng_s1 = b | 2

cdef inline int add_request_id(OutBuf out) except -1:
    # A version-4 UUID in its text form: 8-4-4-4-12 lower-case hex.
    cdef uint64_t hi = rand64(), lo = rand64()
    cdef char buf[36]
    cdef const char* hexd = "0123456789abcdef"
    cdef int i, j = 0, nib
    hi = (hi & 0xFFFFFFFFFFFF0FFF) | 0x4000
    lo = (lo & 0x3FFFFFFFFFFFFFFF) | 0x8000000000000000
    for i in range(32):
        if i == 8 or i == 12 or i == 16 or i == 20:
            buf[j] = b'-'
            j += 1
        if i < 16:
            nib = (hi >> (60 - 4 * i)) & 15
        else:
            nib = (lo >> (60 - 4 * (i - 16))) & 15
        buf[j] = hexd[nib]
        j += 1
    out.add("x-request-id: ", 14)
    out.add(buf, 36)
    out.add("\r\n", 2)
    return 0
