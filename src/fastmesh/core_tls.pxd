# core_tls.pxd: declarations of core_tls.pxi (see _core.pxd)

# ProxyStream.xfcc_mode. Plaintext listeners (no tls key) stay XFCC_PASS: the
# header builder does not look for the header at all there.
cdef enum:
    XFCC_PASS = 0      # forwarded as it came
    XFCC_STRIP = 1     # removed
    XFCC_SET = 2       # removed, ours instead
    XFCC_APPEND = 3    # ours appended to what came (or alone)


cdef class TlsLogState:
    cdef double logged
    cdef long unlogged

cdef class TlsServerConf:
    cdef readonly object context        # the default SSLContext (its sni_callback picks)
    cdef readonly dict by_name          # exact DNS SAN -> SSLContext
    cdef readonly dict by_wildcard      # "example.com" of "*.example.com" -> SSLContext
    cdef readonly tuple san_matchers    # security.peer.SanMatcher: the peer must match one
    cdef readonly bint permissive       # tls_mode: permissive (plaintext accepted too)
    cdef readonly double handshake_timeout
    cdef readonly str fcc               # forward_client_cert_details
    cdef readonly object ccd            # set_current_client_cert_details (or None)
    cdef readonly str by                # our own URI SAN (XFCC By=)
    cdef TlsLogState log

cdef class TlsClientConf:
    cdef readonly object context        # the client SSLContext (verification on)
    cdef readonly str sni               # "" = no SNI
    cdef readonly tuple san_matchers    # the server must match one
    cdef TlsLogState log

cdef class TlsAcceptor:
    cdef ListenerState lst
    cdef TlsServerConf tls
    cdef object raw                     # the TCP transport
    cdef object app                     # the TLS transport, until the handshake is done
    cdef object timer                   # permissive: no first byte in time
    cdef object down                    # the listener's protocol, connected after the handshake
    cdef object early                   # application bytes before it was
    cdef bint eof
    cdef bint tls_started               # start_tls owns the raw transport now
    cdef bint lost

    cdef void start_handshake(self, object first)
    cdef void plaintext(self, object first)

cdef class TlsUpstreamGate:
    cdef UpstreamBase up
    cdef TlsClientConf tls

cdef object lst_protocol(ListenerState lst)
cdef void set_peer(object p, object peer, TlsServerConf tls)
cdef int xfcc_mode_of(str fcc, bint mtls)
cdef object start_tls_connect(UpstreamBase up, Worker w, ClusterConf conf, Endpoint ep)
cdef void count_upstream_tls_failure(UpstreamBase up, object exc)
cdef void tls_log(TlsLogState s, str where, str what)
