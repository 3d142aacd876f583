# Buffers of the data plane: pooled read buffers that uvloop reads straight
# into (BufferedProtocol), and a growable output buffer that collects
# everything one read produces so that it leaves in one transport.write().

cdef class ReadBuffer:
    cdef char* data
    cdef Py_ssize_t cap          # allocated bytes
    cdef Py_ssize_t start        # first unconsumed byte
    cdef Py_ssize_t end          # one past the last byte written by the transport
    cdef int exports             # live buffer-protocol views (uvloop holds one per read)

    cdef inline Py_ssize_t pending(self) noexcept:
        return self.end - self.start
    cdef void compact(self) noexcept
        # Move unconsumed bytes to the front when the free tail is small.
    cdef int reserve(self, Py_ssize_t free_bytes, Py_ssize_t limit) except -1
        # Make at least free_bytes of tail space, growing up to `limit` total.
        # Returns 0 when the buffer cannot grow that far (caller treats the
        # input as too large), 1 otherwise.

cdef class BufferPool:
    cdef list free                # ReadBuffers of `size` bytes, ready for reuse
    cdef readonly Py_ssize_t size
    cdef readonly int max_free
    cdef readonly long allocated  # stats: buffers made / reused
    cdef readonly long reused

    cdef ReadBuffer acquire(self)
    cdef void release(self, ReadBuffer buf)

cdef class OutBuf:
    cdef char* data
    cdef Py_ssize_t len
    cdef Py_ssize_t cap

    cdef int reserve(self, Py_ssize_t extra) except -1
    cdef int add(self, const char* p, Py_ssize_t n) except -1
    cdef int add_bytes(self, bytes b) except -1
    cdef int add_uint(self, unsigned long long v) except -1
    cdef int add_hex(self, unsigned long long v) except -1
    cdef inline void clear(self) noexcept:
        self.len = 0
    cdef bytes take(self)
        # The collected bytes as one bytes object; the buffer is emptied.
