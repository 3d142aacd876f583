# core_listener.pxi: a listener's compiled settings (ListenerConf), the
# Snapshot that carries them with the clusters, and ListenerState, the live
# listener (the protocol factory) kept across snapshots by name.

@cython.final
cdef class ListenerConf:
    """One listener's settings in a snapshot (built by the control side)."""

    def __init__(self, str name, str protocol, Router router=None, str cluster=None,
                 double idle_timeout=3600.0, double headers_timeout=10.0,
                 double stream_idle_timeout=300.0, Py_ssize_t buffer_limit=1048576,
                 Py_ssize_t max_head_bytes=61440, int max_headers=100,
                 bint xff_append=True, bint gen_request_id=True,
                 int h2_max_concurrent_streams=100, int h2_initial_stream_window=65536,
                 int h2_initial_connection_window=1048576, filters=(),
                 Py_ssize_t max_connections=0, double first_byte_timeout=10.0,
                 bint trust_retry_headers=False, double max_stream_duration=0.0,
                 TlsServerConf tls=None, network_rbac=None, TracingConf tracing=None,
                 str address="", int port=0, bint bind_to_port=True,
                 bint use_original_dst=False, double protocol_detection_timeout=0.1):
        if protocol not in ("http", "tcp", "auto"):
            raise ValueError(f"listener {name}: protocol must be http, tcp or auto")
        if protocol != "tcp" and router is None:
            raise ValueError(f"listener {name}: {protocol} listener needs a router")
        if protocol != "http" and cluster is None:
            raise ValueError(f"listener {name}: {protocol} listener needs a cluster")
        self.name = name
        self.protocol = protocol
        self.is_http = protocol != "tcp"
        # core_detect.pxi: auto = the first bytes decide between the HTTP
        # codec (router) and the TCP proxy (cluster).
        self.detect = protocol == "auto"
        self.detect_timeout = protocol_detection_timeout
        self.address = address
        self.port = port
        self.bind_to_port = bind_to_port
        self.use_original_dst = use_original_dst
        self.inspect = self.detect or use_original_dst
        self.router = router
        self.cluster = cluster
        chain = []
        for f in filters:
            if not isinstance(f, HttpFilter):
                raise TypeError(f"listener {name}: filter {f!r} is not a fastmesh.HttpFilter")
            chain.append(f)
        if self.is_http:
            chain.append(RouterFilter())
        self.filters = tuple(chain)
        self.hooks = 0
        for f in chain:
            self.hooks |= (<HttpFilter>f).hooks
        self.idle_timeout = idle_timeout
        self.headers_timeout = headers_timeout
        self.stream_idle_timeout = stream_idle_timeout
        self.buffer_limit = buffer_limit
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self.xff_append = xff_append
        self.gen_request_id = gen_request_id
        self.h2_max_concurrent_streams = h2_max_concurrent_streams
        self.h2_initial_stream_window = h2_initial_stream_window
        self.h2_initial_connection_window = h2_initial_connection_window
        self.max_connections = max_connections
        self.first_byte_timeout = first_byte_timeout
        self.tls = tls
        if network_rbac is not None and not isinstance(network_rbac, NetworkRbac):
            raise TypeError(f"listener {name}: network_rbac must be a NetworkRbac")
        self.network_rbac = network_rbac
        self.trust_retry_headers = trust_retry_headers
        self.max_stream_duration = max_stream_duration
        self.tracing = tracing


@cython.final
cdef class Snapshot:
    """An immutable, validated view of the config that the data plane runs on."""

    def __init__(self, dict listeners, dict clusters, long version=0, double drain_timeout=10.0):
        self.listeners = dict(listeners)
        self.clusters = dict(clusters)
        self.version = version
        self.drain_timeout = drain_timeout
        # (address, port) -> name of the listeners a use_original_dst
        # listener hands connections to (core_detect.pxi).
        self.virtual = {(c.address, c.port): n for n, c in self.listeners.items()
                        if not (<ListenerConf>c).bind_to_port}


@cython.final
cdef class ListenerState:
    """A listener inside one worker: survives reloads; `conf` is swapped.
    Its connections count in its stats block (labels {listener: name})."""

    def __init__(self, Worker worker, ListenerConf conf):
        self.worker = worker
        self.name = conf.name
        self.conf = conf
        self.stats = worker.listener_block(conf.name)
        self.st = self.stats.v
        self.rq_time = worker.registry.histogram("listener", LISTENER_RQ_TIME,
                                                 (("listener", conf.name),))

    def __call__(self):
        # The protocol factory handed to loop.create_server().
        if self.conf.inspect:
            return ListenerInspector.__new__(ListenerInspector, self)   # core_detect.pxi
        if self.conf.tls is not None:
            return TlsAcceptor.__new__(TlsAcceptor, self, self.conf.tls)   # core_tls.pxi
        if self.conf.is_http:
            return HttpDownstream.__new__(HttpDownstream, self)
        return TcpDownstream.__new__(TcpDownstream, self)
