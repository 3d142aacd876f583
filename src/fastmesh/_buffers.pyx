"""Data-plane buffers.

ReadBuffer exports its free tail through the buffer protocol, so uvloop's
BufferedProtocol path reads socket data straight into it: no ``bytes`` object
per read. BufferPool keeps a free list of fixed-size ReadBuffers so that a
connection holds a buffer only while it has unprocessed bytes. OutBuf collects
what one read produces (a rewritten head plus body bytes) for a single write.
"""
cimport cython
from cpython.buffer cimport PyBuffer_FillInfo
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from libc.string cimport memcpy, memmove

# The free tail below which compact() moves pending bytes to the front:
# reading into a tiny tail would cost a syscall per few bytes.
DEF COMPACT_TAIL = 4096


@cython.final
@cython.freelist(64)
cdef class ReadBuffer:
    def __cinit__(self, Py_ssize_t size=32768):
        self.data = <char*>PyMem_Malloc(size)
        if self.data == NULL:
            raise MemoryError()
        self.cap = size
        self.start = 0
        self.end = 0
        self.exports = 0

    def __dealloc__(self):
        if self.data != NULL:
            PyMem_Free(self.data)
            self.data = NULL

    def __getbuffer__(self, Py_buffer* view, int flags):
        # The transport writes at the free tail; it tells us how much it wrote
        # through buffer_updated(n).
        PyBuffer_FillInfo(view, self, self.data + self.end, self.cap - self.end, 0, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer* view):
        self.exports -= 1

    def __len__(self):
        # The length of the buffer the transport gets (the free tail), as a
        # memoryview of it would say: uvloop's TLS transport sizes its reads
        # by len(get_buffer(...)) and reads nothing into a 0-length one.
        return self.cap - self.end

    cdef void compact(self) noexcept:
        cdef Py_ssize_t n = self.end - self.start
        if n == 0:
            self.start = 0
            self.end = 0
        elif self.start > 0 and self.cap - self.end < COMPACT_TAIL:
            memmove(self.data, self.data + self.start, n)
            self.start = 0
            self.end = n

    cdef int reserve(self, Py_ssize_t free_bytes, Py_ssize_t limit) except -1:
        cdef Py_ssize_t n = self.end - self.start
        cdef Py_ssize_t want
        cdef char* p
        if self.cap - self.end >= free_bytes:
            return 1
        if self.start > 0:
            memmove(self.data, self.data + self.start, n)
            self.start = 0
            self.end = n
            if self.cap - self.end >= free_bytes:
                return 1
        want = n + free_bytes
        if want > limit:
            want = limit
        if want <= self.cap:
            return 0
        if self.exports:
            return 0  # a transport holds a view: cannot move the memory now
        p = <char*>PyMem_Realloc(self.data, want)
        if p == NULL:
            raise MemoryError()
        self.data = p
        self.cap = want
        return 1 if self.cap - self.end >= free_bytes else 0

    def feed(self, data):
        """Append bytes (used by data_received() on loops without BufferedProtocol)."""
        cdef const unsigned char[:] mv = data
        cdef Py_ssize_t n = mv.shape[0]
        if n == 0:
            return
        if self.cap - self.end < n:
            self.reserve(n, self.end - self.start + n)
        memcpy(self.data + self.end, &mv[0], n)
        self.end += n

    def pending_bytes(self):
        return PyBytes_FromStringAndSize(self.data + self.start, self.end - self.start)


@cython.final
cdef class BufferPool:
    """A free list of same-size ReadBuffers (one pool per worker)."""

    def __cinit__(self, Py_ssize_t size=32768, int max_free=1024):
        self.free = []
        self.size = size
        self.max_free = max_free
        self.allocated = 0
        self.reused = 0

    cdef ReadBuffer acquire(self):
        cdef ReadBuffer b
        if self.free:
            b = <ReadBuffer>self.free[len(self.free) - 1]
            # Released from inside buffer_updated(), a buffer is still
            # exported until uvloop's callback returns (see release()); by
            # the next get_buffer() it is not, but never hand out one that is.
            if b.exports == 0:
                self.reused += 1
                self.free.pop()
                return b
        self.allocated += 1
        return ReadBuffer(self.size)

    cdef void release(self, ReadBuffer buf):
        # Grown buffers are dropped. A buffer may still be exported: uvloop
        # releases its view only after buffer_updated() returns, and that is
        # where connections give their buffer back, so refusing exported
        # buffers here dropped nearly every one (0 reuses in 4956 buffers
        # for 2000 keep-alive requests). The view is only released after
        # this, never written through, so keeping the buffer is safe;
        # acquire() skips one whose view is still held.
        if buf.cap != self.size or len(self.free) >= self.max_free:
            return
        buf.start = 0
        buf.end = 0
        self.free.append(buf)

    def acquire_py(self):
        return self.acquire()

    def release_py(self, ReadBuffer buf):
        self.release(buf)

    @property
    def free_count(self):
        return len(self.free)


@cython.final
cdef class OutBuf:
    def __cinit__(self, Py_ssize_t size=4096):
        self.data = <char*>PyMem_Malloc(size)
        if self.data == NULL:
            raise MemoryError()
        self.cap = size
        self.len = 0

    def __dealloc__(self):
        if self.data != NULL:
            PyMem_Free(self.data)

    cdef int reserve(self, Py_ssize_t extra) except -1:
        cdef Py_ssize_t want
        cdef char* p
        if self.len + extra <= self.cap:
            return 0
        want = self.cap * 2
        while want < self.len + extra:
            want *= 2
        p = <char*>PyMem_Realloc(self.data, want)
        if p == NULL:
            raise MemoryError()
        self.data = p
        self.cap = want
        return 0

    cdef int add(self, const char* p, Py_ssize_t n) except -1:
        if self.len + n > self.cap:
            self.reserve(n)
        memcpy(self.data + self.len, p, n)
        self.len += n
        return 0

    cdef int add_bytes(self, bytes b) except -1:
        return self.add(b, len(b))

    cdef int add_uint(self, unsigned long long v) except -1:
        cdef char tmp[24]
        cdef int i = 24
        if v == 0:
            return self.add("0", 1)
        while v:
            i -= 1
            tmp[i] = <char>(48 + v % 10)
            v //= 10
        return self.add(tmp + i, 24 - i)

    cdef int add_hex(self, unsigned long long v) except -1:
        cdef char tmp[20]
        cdef int i = 20
        cdef const char* digits = "0123456789abcdef"
        if v == 0:
            return self.add("0", 1)
        while v:
            i -= 1
            tmp[i] = digits[v & 15]
            v >>= 4
        return self.add(tmp + i, 20 - i)

    cdef bytes take(self):
        cdef bytes b = PyBytes_FromStringAndSize(self.data, self.len)
        self.len = 0
        return b

    def add_py(self, bytes b):
        self.add_bytes(b)

    def take_py(self):
        return self.take()
