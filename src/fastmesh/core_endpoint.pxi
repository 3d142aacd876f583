# core_endpoint.pxi: an Endpoint of a cluster and its connection pool
# (EndpointPool). Pools belong to the ClusterState (core_cluster.pxi), so a
# request only ever takes a connection its own cluster made.

# The EP_* health flags by name, for the Python side (control/health.py,
# outlier detection's logs, admin /clusters, tests).
HEALTH_FLAGS = {
    "failed_active_hc": EP_FAILED_ACTIVE_HC,
    "failed_outlier_check": EP_FAILED_OUTLIER_CHECK,
    "failed_eds_health": EP_FAILED_EDS_HEALTH,
    "pending_dynamic_removal": EP_PENDING_DYNAMIC_REMOVAL,
    "excluded_manual": EP_EXCLUDED_MANUAL,
}


@cython.final
cdef class EndpointPool:
    """Idle keep-alive HTTP/1.1 connections to one endpoint (LIFO: the most
    recently used connection is the least likely to have been closed by the
    upstream), and the HTTP/2 connections that can still open streams."""

    def __cinit__(self):
        self.idle = []
        self.h2conns = []
        self.h2_max_streams = 100

    cdef UpstreamH2 get_h2(self):
        cdef UpstreamH2 c
        for c in self.h2conns:
            if c.has_room():
                return c
        return None

    cdef UpstreamHttp get(self):
        cdef UpstreamHttp c
        while self.idle:
            c = <UpstreamHttp>self.idle.pop()
            c.in_pool = False
            if not c.closed:
                return c
        return None

    cdef void put(self, UpstreamHttp c):
        c.in_pool = True
        self.idle.append(c)

    cdef void close_all(self):
        cdef UpstreamHttp c
        cdef UpstreamH2 h
        idle, self.idle = self.idle, []
        for c in idle:
            c.in_pool = False
            c.close()
        for h in list(self.h2conns):
            h.drain()

    def __len__(self):
        return len(self.idle)


@cython.final
cdef class Endpoint:
    """One upstream address of a cluster, with that cluster's pool to it.
    Kept by its ClusterState while the address stays in the endpoint set."""

    def __init__(self, str host, int port, int index, int weight=1):
        self.host = host
        self.port = port
        self.index = index
        self.weight = weight
        self.pool = EndpointPool()
        self.lb_key = f"{host}:{port}".encode()

    @property
    def cx_active(self):
        """Its connections open or opening (admin /clusters)."""
        return self.ncx

    @property
    def excluded(self):
        """Not picked while the cluster is out of panic (any health flag)."""
        return self.health_flags != 0

    @property
    def idle_connections(self):
        return len(self.pool.idle)

    @property
    def h2_connections(self):
        return len(self.pool.h2conns)

    def __repr__(self):
        return f"Endpoint({self.host}:{self.port})"
