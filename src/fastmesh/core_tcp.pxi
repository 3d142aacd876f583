# core_tcp.pxi: connecting upstream, and the TCP proxy (connection splicing).
#
# Both sides are BufferedProtocols reading into pooled buffers. Backpressure:
# when one side's write buffer passes its high watermark the transport calls
# pause_writing() on that side's protocol, which pauses reading on the other
# side; resume_writing() undoes it. Half-close is passed through: EOF from one
# side becomes write_eof() on the other, and the pair closes once both
# directions have ended.

@cython.final
cdef class TcpUpstream(UpstreamBase):

    def connection_made(self, transport):
        self.set_transport(transport)
        self.connected = True
        self.cx_made()
        transport.set_write_buffer_limits(self.cluster.conf.buffer_limit)
        self.set_deadline(DL_NONE, 0)
        if self.cluster.outlier is not None:
            self.cluster.outlier.report(self.ep, OUT_CONNECT_OK)
        if self.closed or self.down is None or self.down.closed:
            self.closed = True
            transport.close()
            return
        self.down.upstream_ready()

    def buffer_updated(self, Py_ssize_t n):
        cdef ReadBuffer b = self.rbuf
        b.end += n
        if self.down is not None and not self.down.closed:
            self.down.send(b.data + b.start, b.end - b.start)
            self.down.touch()
        b.start = b.end = 0
        self.release_rbuf()

    def data_received(self, bytes data):
        if self.down is not None and not self.down.closed:
            self.down.send(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
            self.down.touch()

    def eof_received(self):
        self.eof_in = True
        if self.down is not None and not self.down.closed:
            self.down.half_close_from_upstream()
            return True
        return False

    def pause_writing(self):
        if self.down is not None:
            self.down.pause_read(PAUSE_PEER)

    def resume_writing(self):
        if self.down is not None:
            self.down.resume_read(PAUSE_PEER)

    def connection_lost(self, exc):
        self.closed = True
        if self.connected:
            self.cluster.st[UPSTREAM_CX_ACTIVE] -= 1
        self.connected = False
        self.transport = None
        self.unlink()
        cb_cx_closed(self)
        if self.rbuf is not None:
            self.rbuf.start = self.rbuf.end = 0
            self.release_rbuf()
        if self.down is not None and not self.down.closed:
            # The upstream is gone: flush what we have and close downstream.
            self.down.close()
        self.down = None

    cdef void connect_failed(self, bint timeout):
        if self.cluster.outlier is not None:
            self.cluster.outlier.report(self.ep, OUT_TIMEOUT if timeout else OUT_CONNECT_FAILED)
        if self.down is not None:
            self.down.close()
            self.down = None


cdef inline void half_close(object transport):
    # TLS transports cannot send a lone EOF (close_notify ends the whole
    # session): there the half-close becomes a close, after the data.
    if transport.can_write_eof():
        transport.write_eof()
    else:
        transport.close()


@cython.final
cdef class TcpDownstream(Conn):

    def __cinit__(self, ListenerState lst):
        self.lst = lst

    def connection_made(self, transport):
        cdef Worker w = self.lst.worker
        cdef ListenerConf conf = self.lst.conf
        cdef ClusterState c = w.clusters.get(conf.cluster)
        cdef int idx
        cdef uint64_t h = 0
        cdef bytes ip
        self.set_transport(transport)
        self.conf = conf
        self.link(w)
        self.lst.st[DOWNSTREAM_CX_TOTAL] += 1
        self.lst.st[DOWNSTREAM_CX_ACTIVE] += 1
        self.lst.st[DOWNSTREAM_CX_TCP] += 1
        transport.set_write_buffer_limits(conf.buffer_limit)
        if not admit_downstream(self, self.lst):
            return
        if conf.network_rbac is not None and network_rbac_denies(
                <NetworkRbac>conf.network_rbac, self):
            self.close()         # envoy.filters.network.rbac: before any upstream connect
            return
        if c is None:
            self.close()
            return
        if c.odst is not None:
            # ORIGINAL_DST: where the client meant to go (core_original_dst.pxi).
            idx = odst_index(c, self.orig_dst) if self.orig_dst is not None else -1
        else:
            if c.conf.hash_kind == HASH_SOURCE_IP:
                peer = transport.get_extra_info("peername")
                ip = (peer[0] if peer else "").encode()
                h = hash_bytes(ip, len(ip), 0)
            else:
                h = rand64()
            idx = c.pick(h, -1)
        if idx < 0:
            c.st[UPSTREAM_CX_NONE_HEALTHY] += 1
            self.close()
            return
        # Nothing is read until the upstream is connected: the kernel's
        # receive buffer holds early bytes, so we never buffer them ourselves.
        self.pause_read(PAUSE_CONNECT)
        self.up = TcpUpstream.__new__(TcpUpstream)
        self.up.down = self
        self.up.start_connect(w, c, <Endpoint>c.endpoints[idx])

    cdef void upstream_ready(self):
        self.touch()
        # Bytes (and an EOF) that arrived before the upstream was connected.
        self.forward()
        if self.eof_in:
            if not self.closed:
                half_close(self.up.transport)
            return
        self.resume_read(PAUSE_CONNECT)

    cdef inline void touch(self):
        self.set_deadline(DL_IDLE, self.conf.idle_timeout)

    def get_buffer(self, Py_ssize_t sizehint):
        if self.rbuf is None:
            self.rbuf = self.worker.bufpool.acquire()
        elif self.rbuf.cap - self.rbuf.end < 1024:
            self.rbuf.compact()
            if self.rbuf.cap - self.rbuf.end < 1024:
                self.rbuf.reserve(16384, self.rbuf.cap + 65536)
        return self.rbuf

    def buffer_updated(self, Py_ssize_t n):
        self.rbuf.end += n
        self.forward()

    def data_received(self, data):
        if self.rbuf is None:
            self.rbuf = self.worker.bufpool.acquire()
        self.rbuf.feed(data)
        self.forward()

    cdef void forward(self):
        # Pass the buffered bytes upstream. Until the upstream is connected
        # they stay in rbuf: uvloop starts reading right after connection_made()
        # even though it paused reading, so early bytes do arrive here.
        cdef ReadBuffer b = self.rbuf
        if b is None or b.end == b.start:
            return
        if self.up is None or self.up.transport is None:
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self.up.send(b.data + b.start, b.end - b.start)
        self.touch()
        b.start = b.end = 0
        self.worker.bufpool.release(b)
        self.rbuf = None

    def eof_received(self):
        self.eof_in = True
        if self.up is not None and self.up.transport is None and not self.up.closed:
            return True    # still connecting: upstream_ready() passes the EOF on
        if self.up is not None and self.up.transport is not None and not self.up.closed:
            if self.up.eof_in:
                half_close(self.up.transport)
                self.close()
                return False
            half_close(self.up.transport)
            return True
        return False

    cdef void half_close_from_upstream(self):
        if self.closed:
            return
        if self.eof_in:
            self.close()
        else:
            half_close(self.transport)

    def pause_writing(self):
        if self.up is not None:
            self.up.pause_read(PAUSE_PEER)

    def resume_writing(self):
        if self.up is not None:
            self.up.resume_read(PAUSE_PEER)

    cdef void on_deadline(self, int kind):
        self.lst.st[DOWNSTREAM_CX_IDLE_TIMEOUT] += 1
        if self.transport is not None:
            self.transport.abort()
        if self.up is not None:
            self.up.abort()

    cdef ListenerState listener_of(self):
        return self.lst

    cdef void on_drain(self):
        pass  # TCP streams run until they end or the drain period is over

    cdef void close(self):
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if self.up is not None:
            self.up.close()

    def connection_lost(self, exc):
        cdef Worker w = self.worker
        self.closed = True
        self.transport = None
        if w is not None:
            self.lst.st[DOWNSTREAM_CX_ACTIVE] -= 1
        self.unlink()
        if self.rbuf is not None:
            self.rbuf = None
        if self.up is not None:
            self.up.down = None
            self.up.close()
            self.up = None
