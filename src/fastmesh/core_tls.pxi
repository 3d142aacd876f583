# core_tls.pxi: TLS on the transport layer. Downstream: TlsAcceptor, the
# protocol a TLS listener's factory returns, runs the handshake itself
# (loop.start_tls), so that a failed one is counted by reason and a peer whose
# certificate does not carry an allowed SAN is refused before the codec (and
# so any upstream) sees a byte; in permissive mode it first peeks at the
# first byte to tell TLS from plaintext. Upstream: TlsUpstreamGate checks the
# server's SAN before the upstream connection writes anything. The settings
# (ready SSLContexts) come from the control side (control/tls.py) in
# TlsServerConf / TlsClientConf; the codecs never learn about any of it.

import logging as _logging
import ssl as _ssl
from uvloop.loop import SSLProtocol as _UvSSLProtocol
from fastmesh.security.peer import peer_identity as _peer_identity, \
    san_allowed as _san_allowed, handshake_failure as _handshake_failure, \
    xfcc_element as _xfcc_element, FAIL_SAN as _FAIL_SAN

# security.peer's FAIL_* reasons: offsets from ssl.connection_error.
cdef enum:
    TLS_FAIL_OTHER = 0
    TLS_FAIL_NO_CERT = 1
    TLS_FAIL_VERIFY = 2
    TLS_FAIL_SAN = 3

if _FAIL_SAN != TLS_FAIL_SAN:
    raise ImportError("fastmesh._core: security.peer FAIL_* out of step with core_tls.pxi")

cdef object _tls_log = _logging.getLogger("fastmesh.tls")
cdef double TLS_LOG_INTERVAL = 1.0     # at most one line per listener/cluster per second


cdef void tls_log(TlsLogState s, str where, str what):
    # A flood of bad handshakes must not become a flood of log lines.
    cdef double now = mono_now()
    if s.logged == 0 or now - s.logged >= TLS_LOG_INTERVAL:
        if s.unlogged:
            _tls_log.warning("%s: %s (and %d more since the last report)", where, what,
                             s.unlogged)
        else:
            _tls_log.warning("%s: %s", where, what)
        s.logged = now
        s.unlogged = 0
    else:
        s.unlogged += 1


cdef class TlsLogState:
    pass


@cython.final
cdef class TlsServerConf:
    """A TLS listener's settings (built by control/tls.py): one SSLContext
    per certificate, with the DNS names SNI selects it by; the first is the
    default. The holder is what the listener's handshakes read, so
    set_certificates() swaps what new handshakes get (certificate rotation)
    without touching established connections."""

    def __init__(self, list certificates, tuple san_matchers=(), bint permissive=False,
                 double handshake_timeout=10.0, str forward_client_cert="SANITIZE",
                 ccd=None, str by=""):
        self.log = TlsLogState()
        self.san_matchers = san_matchers
        self.permissive = permissive
        self.handshake_timeout = handshake_timeout
        self.fcc = forward_client_cert
        self.ccd = ccd
        self.by = by
        self.set_certificates(certificates)

    def set_certificates(self, list certificates):
        """[(dns_names, SSLContext), ...]: new handshakes use these."""
        if not certificates:
            raise ValueError("a TLS listener needs at least one certificate")
        exact = {}
        wild = {}
        for names, ctx in certificates:
            for n in names:
                n = n.lower()
                if n.startswith("*."):
                    wild.setdefault(n[2:], ctx)
                else:
                    exact.setdefault(n, ctx)
        ctx0 = certificates[0][1]
        # Always: besides picking a certificate it keeps the SNI on the
        # SSLObject (fastmesh_sni), which Python's ssl does not expose on the
        # server side (RBAC's requested_server_name reads it).
        ctx0.sni_callback = self._sni
        self.by_name = exact
        self.by_wildcard = wild
        self.context = ctx0

    def _sni(self, ssl_obj, server_name, ctx):
        # OpenSSL's servername callback: exact DNS SAN, then a "*." wildcard
        # for the first label, else the default certificate.
        if server_name:
            name = server_name.lower()
            ssl_obj.fastmesh_sni = name
            c = self.by_name.get(name)
            if c is None:
                dot = name.find(".")
                if dot > 0:
                    c = self.by_wildcard.get(name[dot + 1:])
            if c is not None and c is not ctx:
                ssl_obj.context = c
        return None

    def xfcc_for(self, peer):
        """The x-forwarded-client-cert element for a connection's peer."""
        c = self.ccd
        if c is None:
            return _xfcc_element(self.by, peer, subject=False, uri=False, dns=False,
                                 cert=False, chain=False)
        return _xfcc_element(self.by, peer, subject=c.subject, uri=c.uri, dns=c.dns,
                             cert=c.cert, chain=c.chain)


@cython.final
cdef class TlsClientConf:
    """A cluster's TLS origination (built by control/tls.py)."""

    def __init__(self, context, str sni=None, tuple san_matchers=()):
        self.context = context
        self.sni = sni or ""
        self.san_matchers = san_matchers
        self.log = TlsLogState()

    def set_context(self, context):
        """Certificate rotation: new upstream connections use `context`;
        established ones (in the pools) keep theirs."""
        self.context = context


cdef class TlsAcceptor:
    """The protocol of one accepted connection on a TLS listener until its
    handshake is done: then the connection goes to the listener's normal
    protocol (HttpDownstream / TcpDownstream) over the TLS transport, and we
    call its connection_made() ourselves.

    The TLS protocol (uvloop's SSLProtocol, what loop.start_tls() makes) is
    put in front of the socket synchronously, inside connection_made():
    uvloop starts reading as soon as that returns, and start_tls(), a
    coroutine, would come a loop iteration later, after the ClientHello may
    have been read. Until the handshake is done this object is the TLS
    transport's application protocol and keeps early application bytes.

    In permissive mode the first bytes decide (Envoy's tls_inspector): a
    TLS client speaks first with a handshake record (content type 22). The
    first chunk read is replayed into whichever protocol takes the
    connection, so nothing is lost and nothing waits on a timer."""

    def __cinit__(self, ListenerState lst, TlsServerConf tls):
        self.lst = lst
        self.tls = tls

    def connection_made(self, transport):
        self.raw = transport
        self.down = lst_protocol(self.lst)
        if self.tls.permissive:
            # Sniffing: the first chunk comes to data_received() below.
            self.timer = self.lst.worker.loop.call_later(self.tls.handshake_timeout,
                                                         self._detect_timeout)
        else:
            self.start_handshake(None)

    cdef void start_handshake(self, object first):
        cdef Py_ssize_t off = 0, n
        loop = self.lst.worker.loop
        self.tls_started = True
        waiter = loop.create_future()
        sslp = _UvSSLProtocol(loop, self, self.tls.context, waiter, True, None,
                              call_connection_made=False,
                              ssl_handshake_timeout=self.tls.handshake_timeout)
        self.raw.set_protocol(sslp)
        sslp.connection_made(self.raw)
        self.app = sslp._get_app_transport()
        waiter.add_done_callback(self._handshake_done)
        if first is not None:
            # Replay what the sniffing read (SSLProtocol is a BufferedProtocol).
            n = len(first)
            while off < n and not self.app.is_closing():
                buf = sslp.get_buffer(n - off)
                k = min(len(buf), n - off)
                buf[:k] = first[off:off + k]
                sslp.buffer_updated(k)
                off += k

    def _detect_timeout(self):
        self.timer = None
        if not self.tls_started and self.down is not None:
            self.down = None
            self.lst.st[SSL_CONNECTION_ERROR] += 1
            tls_log(self.tls.log, f"listener {self.lst.name}",
                    "no first byte within the detection timeout")
            self.raw.abort()

    cdef void plaintext(self, object first):
        # The normal protocol, as if there were no TLS on this listener, with
        # the sniffed chunk replayed (both protocols take data_received()).
        p = self.down
        self.down = None
        set_peer(p, None, self.tls)
        self.raw.set_protocol(p)
        p.connection_made(self.raw)
        if not (<Conn>p).closed:
            p.data_received(first)

    def _handshake_done(self, fut):
        cdef ListenerState lst = self.lst
        cdef int reason
        tr = self.app
        self.app = None
        if fut.cancelled():
            self.raw.abort()
            return
        exc = fut.exception()
        if exc is not None:
            reason, text = _handshake_failure(exc)
            lst.st[SSL_CONNECTION_ERROR + reason] += 1
            tls_log(self.tls.log, f"listener {lst.name}", f"TLS handshake failed: {text}")
            self.raw.abort()
            return
        ssl_obj = tr.get_extra_info("ssl_object")
        peer = _peer_identity(ssl_obj.getpeercert(True))
        if self.tls.san_matchers and peer is not None and not _san_allowed(
                self.tls.san_matchers, peer):
            # A trusted CA signed it, but not for a peer this listener takes.
            lst.st[SSL_CONNECTION_ERROR + TLS_FAIL_SAN] += 1
            tls_log(self.tls.log, f"listener {lst.name}",
                    f"peer certificate SANs {list(peer.uris + peer.dns)} match no "
                    "match_typed_subject_alt_names entry")
            tr.abort()
            return
        lst.st[SSL_HANDSHAKE] += 1
        if ssl_obj.session_reused:
            lst.st[SSL_SESSION_REUSED] += 1
        if self.lost:
            return
        p = self.down
        self.down = None
        set_peer(p, peer, self.tls)
        tr.set_protocol(p)
        p.connection_made(tr)
        if self.early is not None:
            early, self.early = self.early, None
            p.data_received(early)
        if self.eof and not p.eof_received():
            tr.close()

    def data_received(self, data):
        if not self.tls_started:
            # Permissive: the first chunk of a connection decides.
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.down is None:
                return
            if detect_protocol(<const unsigned char*>PyBytes_AS_STRING(data),
                               PyBytes_GET_SIZE(data)) == DETECT_TLS:   # core_detect.pxi
                self.start_handshake(data)
            else:
                self.plaintext(data)
            return
        # The TLS transport's application bytes, between the end of the
        # handshake and _handshake_done (the same loop iteration): kept.
        self.early = data if self.early is None else self.early + data

    def eof_received(self):
        if not self.tls_started:
            return False       # closed before a byte: nothing to serve
        self.eof = True
        return True

    def connection_lost(self, exc):
        self.lost = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass


cdef object lst_protocol(ListenerState lst):
    # The listener's plaintext protocol object (not yet connected).
    if lst.conf.is_http:
        return HttpDownstream.__new__(HttpDownstream, lst)
    return TcpDownstream.__new__(TcpDownstream, lst)


cdef void set_peer(object p, object peer, TlsServerConf tls):
    # The verified identity stays on the connection (routing, policy, logs);
    # what happens to x-forwarded-client-cert is decided here, once per
    # connection, and our element is made here too (Envoy's
    # forward_client_cert_details; "mTLS" means the client presented a
    # verified certificate).
    cdef HttpDownstream h
    if isinstance(p, HttpDownstream):
        h = <HttpDownstream>p
        h.peer = peer
        h.xfcc_mode = xfcc_mode_of(tls.fcc, peer is not None)
        if h.xfcc_mode == XFCC_SET or h.xfcc_mode == XFCC_APPEND:
            h.xfcc = tls.xfcc_for(peer).encode("latin-1")
    elif p is not None:
        (<TcpDownstream>p).peer = peer


cdef int xfcc_mode_of(str fcc, bint mtls):
    if fcc == "ALWAYS_FORWARD_ONLY":
        return XFCC_PASS
    if fcc == "FORWARD_ONLY":
        return XFCC_PASS if mtls else XFCC_STRIP
    if fcc == "SANITIZE_SET":
        return XFCC_SET if mtls else XFCC_STRIP
    if fcc == "APPEND_FORWARD":
        return XFCC_APPEND if mtls else XFCC_STRIP
    return XFCC_STRIP          # SANITIZE, the default


cdef class TlsUpstreamGate:
    """The protocol of a TLS upstream connection until its handshake is
    done: it checks the server's certificate against the cluster's SAN
    matchers, then hands the connection to the upstream object, so a server
    with the wrong identity gets no byte of a request."""

    def __cinit__(self, UpstreamBase up, TlsClientConf tls):
        self.up = up
        self.tls = tls

    def __call__(self):
        return self

    def connection_made(self, transport):
        cdef UpstreamBase up = self.up
        cdef ClusterState c = up.cluster
        ssl_obj = transport.get_extra_info("ssl_object")
        if self.tls.san_matchers:
            peer = _peer_identity(ssl_obj.getpeercert(True))
            if peer is None or not _san_allowed(self.tls.san_matchers, peer):
                c.st[SSL_CONNECTION_ERROR_UP + TLS_FAIL_SAN] += 1
                tls_log(self.tls.log, f"cluster {c.name}",
                        f"{up.ep.host}:{up.ep.port}: server certificate SANs "
                        f"{list(peer.uris + peer.dns) if peer else []} match no "
                        "match_typed_subject_alt_names entry")
                up.tls_refused = True
                transport.abort()
                return
        c.st[SSL_HANDSHAKE_UP] += 1
        if ssl_obj.session_reused:
            c.st[SSL_SESSION_REUSED_UP] += 1
        transport.set_protocol(up)
        up.connection_made(transport)

    def data_received(self, data):
        pass

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        pass


cdef inline object start_tls_connect(UpstreamBase up, Worker w, ClusterConf conf, Endpoint ep):
    # The upstream's create_connection() over TLS; the gate takes the
    # connection first (core_connect.pxi).
    cdef TlsClientConf t = conf.tls
    return w.loop.create_connection(TlsUpstreamGate(up, t), ep.host, ep.port,
                                    ssl=t.context, server_hostname=t.sni,
                                    ssl_handshake_timeout=conf.connect_timeout)


cdef void count_upstream_tls_failure(UpstreamBase up, object exc):
    cdef ClusterState c = up.cluster
    cdef int reason
    reason, text = _handshake_failure(exc)
    c.st[SSL_CONNECTION_ERROR_UP + reason] += 1
    tls_log((<TlsClientConf>c.conf.tls).log, f"cluster {c.name}",
            f"{up.ep.host}:{up.ep.port}: TLS handshake failed: {text}")
