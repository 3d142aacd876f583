# core_conn.pxi: Conn, the base of every connection object: read pauses,
# its deadline (an entry of the worker's timer wheel), membership in the
# worker's connection list.




cdef class Conn(TimerEntry):
    """Base of every connection object: one deadline, membership in the
    worker's connection list.

    A Conn is its own entry in the worker's timer wheel (_timers, inherited:
    arming allocates nothing), so one loop handle per worker serves every
    deadline and each fires in its own millisecond; the wheel calls
    on_timer(), which hands over to on_deadline(). The list (prev/next) is
    for what needs every connection: drain, close_all, connection_count.
    """

    cdef inline void set_transport(self, object transport):
        # The transport layer: plaintext sockets get the direct-write fast
        # path (send() below); anything that transforms bytes (TLS, whose
        # transport still reports the raw socket) must go through the
        # transport, so fd stays -1 there.
        self.transport = transport
        self.uv_pending = False
        sock = transport.get_extra_info("socket")
        if sock is None or transport.get_extra_info("ssl_object") is not None:
            self.fd = -1
        else:
            self.fd = sock.fileno()

    cdef int send(self, const char* p, Py_ssize_t n) except -1:
        # Write straight to the socket when the transport has nothing queued:
        # the common case costs one write(2) and no Python object. Whatever
        # the kernel does not take (or any error, which the transport will then
        # report through connection_lost) goes through transport.write(), and
        # from then on everything does, until its buffer has drained, so bytes
        # never overtake each other.
        cdef ssize_t r = 0
        if n <= 0 or self.transport is None:
            return 0
        if self.closed:
            # After close() uvloop may have released the fd already: only the
            # transport knows what to do with late bytes.
            self.transport.write(PyBytes_FromStringAndSize(p, n))
            return 0
        if self.uv_pending:
            if self.transport.get_write_buffer_size():
                self.transport.write(PyBytes_FromStringAndSize(p, n))
                return 0
            self.uv_pending = False
        if self.fd >= 0:
            while True:
                r = c_write(self.fd, p, n)
                if r >= 0 or errno != EINTR:
                    break
            if r == n:
                return 0
            if r < 0:
                r = 0
        self.uv_pending = True
        self.transport.write(PyBytes_FromStringAndSize(p + r, n - r))
        return 0

    cdef void flush_later(self):
        # Output for this connection will be produced by more events of this
        # loop iteration (several streams, several reads): serialise and write
        # it once, when the iteration's callbacks are done (Worker.flush_dirty).
        if not self.flush_pending and self.worker is not None:
            self.flush_pending = True
            self.worker.defer_flush(self)

    cdef void flush_deferred(self):
        # What flush_later postponed: subclasses with buffered output.
        self.flush_pending = False

    cdef inline void link(self, Worker w):
        self.worker = w
        self.next = w.conns
        if w.conns is not None:
            w.conns.prev = self
        w.conns = self
        self.linked = True

    cdef inline void unlink(self):
        if not self.linked:
            return
        # Unlinked means gone: its deadline must not fire later (nor the
        # wheel keep it alive until then).
        if self.t_wheel is not None:
            self.t_wheel.cancel(self)
        if self.prev is not None:
            self.prev.next = self.next
        else:
            self.worker.conns = self.next
        if self.next is not None:
            self.next.prev = self.prev
        self.prev = None
        self.next = None
        self.linked = False

    cdef inline void set_deadline(self, int kind, double timeout):
        # Runs several times per request and on every body chunk, so both
        # directions take the wheel's inlined lazy paths when they can:
        # pushing an armed deadline later is a clock read and two field
        # writes, clearing one is one write (the entry stays in its slot,
        # which is where the next request's deadline will want it anyway).
        # Only linked connections arm: one that left the list is gone.
        cdef TimerWheel w
        if timeout > 0 and self.linked:
            w = self.worker.wheel
            if not w.arm_lazy(self, kind, timeout):
                w.arm(self, kind, timeout)
        elif self.t_wheel is not None:
            (<TimerWheel>self.t_wheel).disarm_lazy(self)

    cdef inline int deadline_kind(self) noexcept:
        # DL_* of the armed deadline, DL_NONE if none.
        return self.t_kind if self.t_wheel is not None and self.t_kind >= 0 else DL_NONE

    cdef void on_timer(self, int kind):
        self.on_deadline(kind)

    cdef void on_deadline(self, int kind):
        pass

    cdef void on_drain(self):
        pass

    cdef bint shed_idle(self):
        # Overload (core_overload.pxi): close this connection if it is an
        # idle downstream one, and say so. Others are never shed.
        return False

    cdef ListenerState listener_of(self):
        # Downstream connections answer with the listener they came in on.
        return None

    cdef inline void pause_read(self, int why):
        if self.read_paused == 0 and self.transport is not None:
            self.transport.pause_reading()
        self.read_paused |= why

    cdef inline void resume_read(self, int why):
        if self.read_paused & why:
            self.read_paused &= ~why
            if self.read_paused == 0 and self.transport is not None:
                self.transport.resume_reading()


def _bench_set_deadline(Worker w, long loops, double delay, bint cancel):
    """perf/bench_timers.py: Conn.set_deadline as connections call it, on
    w's wheel, from C. cancel=False: an armed deadline pushed later (per read
    or body chunk); True: cancelled and armed again (per request)."""
    cdef Conn c = Conn.__new__(Conn)
    cdef long i
    cdef double t0
    c.link(w)
    t0 = mono_now()
    if cancel:
        for i in range(loops):
            c.set_deadline(DL_NONE, 0)
            c.set_deadline(DL_RESPONSE, delay)
    else:
        for i in range(loops):
            c.set_deadline(DL_RESPONSE, delay)
    t0 = mono_now() - t0
    c.unlink()
    return t0
