# core_detect.pxi: what a connection is, decided before a codec sees it
# (Envoy's listener filters original_dst, http_inspector and tls_inspector;
# Linkerd's protocol detection).
#
# A listener with use_original_dst (the "virtual outbound" listener that
# iptables redirects to) reads the original destination and hands the
# connection to the listener configured for that address and port
# (bind_to_port: false; Envoy's use_original_dst hand-off), or keeps it. A
# listener with protocol: auto then reads the first bytes: an HTTP/1.x
# request line or the HTTP/2 preface go to the HTTP codec, anything else
# (TLS included: passed through untouched) to the TCP proxy. A client that
# says nothing within protocol_detection_timeout is taken to wait for the
# server (MySQL, SMTP...): the TCP proxy connects at once and the server's
# greeting reaches it. Bytes read while deciding are replayed into the
# protocol that takes the connection, as TlsAcceptor's permissive mode does
# (core_tls.pxi), which decides TLS vs plaintext with detect_protocol too.

cdef const char* H2_PREFACE_C = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEF MAX_METHOD = 20          # longer than any registered method token


cdef int detect_protocol(const unsigned char* p, Py_ssize_t n) noexcept:
    """Sans-IO: the protocol the first n bytes of a connection show."""
    cdef Py_ssize_t i, m
    cdef unsigned char ch
    if n <= 0:
        return DETECT_NEED_MORE
    if p[0] == 0x16:
        # A TLS record of type handshake; the version byte (3) follows.
        if n >= 2 and p[1] != 0x03:
            return DETECT_TCP
        return DETECT_TLS
    if p[0] == b'P':
        m = n if n < 24 else 24
        if memcmp(p, H2_PREFACE_C, m) == 0:
            return DETECT_HTTP2 if n >= 24 else DETECT_NEED_MORE
    # HTTP/1.x: a method token (RFC 9110 tchar; registered methods are
    # upper-case letters, '-' and '_') then one space.
    for i in range(n if n < MAX_METHOD + 1 else MAX_METHOD + 1):
        ch = p[i]
        if ch == b' ':
            return DETECT_HTTP1 if i > 0 else DETECT_TCP
        if not ((b'A' <= ch <= b'Z') or ch == b'-' or ch == b'_'):
            return DETECT_TCP
    return DETECT_NEED_MORE if n <= MAX_METHOD else DETECT_TCP


def detect(data):
    """detect_protocol() from Python (tests): "need_more", "http1",
    "http2", "tls" or "tcp"."""
    cdef bytes b = bytes(data)
    return ("need_more", "http1", "http2", "tls", "tcp")[
        detect_protocol(<const unsigned char*>PyBytes_AS_STRING(b), len(b))]


cdef object listener_protocol(ListenerState lst):
    # What ListenerState.__call__ returns for a listener that inspects nothing.
    if lst.conf.tls is not None:
        return TlsAcceptor.__new__(TlsAcceptor, lst, lst.conf.tls)
    if lst.conf.is_http:
        return HttpDownstream.__new__(HttpDownstream, lst)
    return TcpDownstream.__new__(TcpDownstream, lst)


cdef ListenerState listener_for_dst(ListenerState lst, object dst):
    # The bind_to_port: false listener for the original destination: its
    # address and port, else the wildcard address with that port; else the
    # accepting listener itself.
    cdef dict v = lst.worker.snapshot.virtual
    if not v:
        return lst
    name = v.get(dst)
    if name is None:
        name = v.get(("0.0.0.0", dst[1]) if ":" not in dst[0] else ("::", dst[1]))
        if name is None:
            name = v.get(("::", dst[1]))
            if name is None:
                return lst
    return <ListenerState>lst.worker.listener_state(name)


cdef class ListenerInspector:
    """The protocol of a connection on an inspecting listener until the
    listener that serves it and its protocol are known."""

    def __cinit__(self, ListenerState lst):
        self.lst = lst

    def connection_made(self, transport):
        cdef ListenerState t = self.lst
        self.transport = transport
        if t.conf.use_original_dst:
            self.dst = read_original_dst(transport)
            if self.dst is not None:
                t = listener_for_dst(t, self.dst)
        self.target = t
        if t.conf.detect:
            # The first bytes come to data_received().
            self.timer = t.worker.loop.call_later(t.conf.detect_timeout, self._timeout)
            return
        self.hand(listener_protocol(t), None)

    cdef void hand(self, object p, object first):
        # The connection goes to p, as if p had accepted it (first: bytes
        # already read, replayed).
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if isinstance(p, Conn):
            (<Conn>p).orig_dst = self.dst
        self.transport.set_protocol(p)
        p.connection_made(self.transport)
        if isinstance(p, TlsAcceptor):
            if (<TlsAcceptor>p).down is not None:
                (<Conn>(<TlsAcceptor>p).down).orig_dst = self.dst
        elif (<Conn>p).closed:
            return
        if first is not None:
            p.data_received(first)

    cdef void decide(self, int kind):
        cdef ListenerState t = self.target
        first, self.first = self.first, None
        if kind == DETECT_HTTP1 or kind == DETECT_HTTP2:
            self.hand(HttpDownstream.__new__(HttpDownstream, t), first)
        else:
            # Opaque, TLS (passed through: the client's TLS session goes to
            # the original destination untouched), or silent.
            self.hand(TcpDownstream.__new__(TcpDownstream, t), first)

    def data_received(self, data):
        cdef bytes b
        cdef int kind
        if self.done:
            return
        b = data if self.first is None else self.first + data
        self.first = b
        kind = detect_protocol(<const unsigned char*>PyBytes_AS_STRING(b), len(b))
        if kind != DETECT_NEED_MORE:
            self.decide(kind)

    def _timeout(self):
        self.timer = None
        if not self.done:
            self.decide(DETECT_TCP)

    def eof_received(self):
        if self.done:
            return False
        if self.first is None:
            self.done = True
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            return False          # closed before a byte: nothing to serve
        # Half a method token then EOF: the TCP proxy passes both on.
        self.decide(DETECT_TCP)
        return self.transport.get_protocol().eof_received()

    def connection_lost(self, exc):
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass
