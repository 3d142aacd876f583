# core_connect.pxi: UpstreamBase, the base of every upstream connection:
# connecting (with its timeout), the transport, backpressure toward the
# downstream peer.

cdef class UpstreamBase(Conn):
    """An upstream connection: the connect step shared by TCP and HTTP."""

    def __call__(self):
        # loop.create_connection() wants a protocol factory; we are the protocol.
        return self

    cdef void start_connect(self, Worker w, ClusterState c, Endpoint ep):
        self.cluster = c
        self.ep = ep
        self.link(w)
        c.st[UPSTREAM_CX_TOTAL] += 1
        self.cx_start = mono_now()
        cb_cx_opened(self)
        self.set_deadline(DL_CONNECT, c.conf.connect_timeout)
        if c.conf.tls is None:
            coro = w.loop.create_connection(self, ep.host, ep.port)
        else:
            coro = start_tls_connect(self, w, c.conf, ep)       # core_tls.pxi
        self.connect_task = w.loop.create_task(coro)
        self.connect_task.add_done_callback(self._connect_done)

    def _connect_done(self, fut):
        self.connect_task = None
        if self.closed:
            # We gave up on this connection ourselves (close() cancelled it).
            # connection_made() closes a transport that arrives after that.
            if fut.cancelled() or fut.exception() is not None:
                if self.connected:
                    # connection_made() ran, but the cancelled connect means
                    # no connection_lost() will follow: count it closed here.
                    self.connected = False
                    self.cluster.st[UPSTREAM_CX_ACTIVE] -= 1
                self.unlink()
                cb_cx_closed(self)
            return
        if fut.cancelled():
            self.cluster.st[UPSTREAM_CX_CONNECT_TIMEOUT] += 1
            self.closed = True
            self.unlink()
            cb_cx_closed(self)
            self.connect_failed(True)
            return
        exc = fut.exception()
        if exc is not None and self.cluster.conf.tls is not None and isinstance(
                exc, (_ssl.SSLError, ConnectionAbortedError)):
            count_upstream_tls_failure(self, exc)
        if exc is not None or self.tls_refused:
            # A refused server identity (TlsUpstreamGate) is a failed connect too.
            self.cluster.st[UPSTREAM_CX_CONNECT_FAIL] += 1
            self.closed = True
            self.unlink()
            cb_cx_closed(self)
            self.connect_failed(False)

    cdef void connect_failed(self, bint timeout):
        pass

    cdef inline void cx_made(self):
        # connection_made(): counted active; the connect (TLS handshake
        # included, when the cluster has tls) took this long. Once per
        # connection, not per request.
        self.cluster.st[UPSTREAM_CX_ACTIVE] += 1
        self.cluster.cx_connect_time.record(mono_now() - self.cx_start)

    cdef void on_deadline(self, int kind):
        if kind == DL_CONNECT:
            if self.connect_task is not None and not self.connected:
                self.connect_task.cancel()
        elif kind == DL_POOL_IDLE:
            self.close()

    cdef void close(self):
        if self.closed:
            return
        self.closed = True
        if self.connect_task is not None:
            self.connect_task.cancel()
        if self.transport is not None:
            self.transport.close()

    cdef void abort(self):
        if self.closed and self.transport is None:
            return
        self.closed = True
        if self.connect_task is not None:
            self.connect_task.cancel()
        if self.transport is not None:
            self.transport.abort()

    def get_buffer(self, Py_ssize_t sizehint):
        if self.rbuf is None:
            self.rbuf = self.worker.bufpool.acquire()
        elif self.rbuf.cap - self.rbuf.end < 1024:
            self.rbuf.compact()
            if self.rbuf.cap - self.rbuf.end < 1024:
                self.rbuf.reserve(16384, self.rbuf.cap + 65536)
        return self.rbuf

    cdef inline void release_rbuf(self):
        if self.rbuf is not None and self.rbuf.end == self.rbuf.start:
            self.worker.bufpool.release(self.rbuf)
            self.rbuf = None
