# core_conn.pxd: declarations of core_conn.pxi (see _core.pxd)

# Read-pause reasons: reading a transport stops while any reason holds.
cdef enum:
    PAUSE_PEER = 1       # the other side's write buffer is above its high watermark
    PAUSE_BUFFER = 2     # our read buffer holds bytes we cannot process yet
    PAUSE_CONNECT = 4    # the upstream is still connecting
    PAUSE_WRITE = 8      # our own writes toward this peer are above the high
                         # watermark: new requests would only add output

# What a connection's deadline means when it passes.
cdef enum:
    DL_NONE = 0
    DL_IDLE = 1          # nothing happened for idle_timeout
    DL_HEADERS = 2       # request head not complete within request_headers_timeout
    DL_RESPONSE = 3      # route timeout: response not complete in time
    DL_CONNECT = 4       # upstream connect timeout
    DL_POOL_IDLE = 5     # pooled upstream connection unused for too long
    DL_DRAIN = 6
    DL_FIRST_BYTE = 7    # nothing received since accept (first_byte_timeout)
    DL_STREAM_IDLE = 8   # no progress either way for the stream idle timeout
                         # (the route's idle_timeout, else stream_idle_timeout)
    DL_MAX_DURATION = 9  # max_stream_duration (a StreamTimer, core_timeouts.pxi)

cdef class Conn(TimerEntry):
    cdef Worker worker
    cdef Conn prev
    cdef Conn next
    cdef bint linked
    cdef object transport
    cdef int read_paused          # PAUSE_* bits
    cdef int fd                   # the socket, for direct writes (-1: none)
    cdef bint uv_pending          # the transport holds unsent bytes of ours
    cdef bint closed              # we closed (or aborted) it: the fd may be gone
    cdef bint flush_pending       # in the worker's `dirty` list (flush_later)
    cdef object orig_dst          # downstream: (ip, port) dialled before an iptables
                                  # redirect (core_original_dst.pxi); None: not intercepted

    cdef inline void set_transport(self, object transport)
    cdef int send(self, const char* p, Py_ssize_t n) except -1
    cdef void flush_later(self)
    cdef void flush_deferred(self)
    cdef inline void link(self, Worker w)
    cdef inline void unlink(self)
    cdef inline void set_deadline(self, int kind, double timeout)
    cdef inline int deadline_kind(self) noexcept
    cdef void on_timer(self, int kind)
    cdef void on_deadline(self, int kind)
    cdef void on_drain(self)
    cdef bint shed_idle(self)
    cdef ListenerState listener_of(self)
    cdef inline void pause_read(self, int why)
    cdef inline void resume_read(self, int why)
