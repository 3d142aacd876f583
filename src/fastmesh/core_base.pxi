# core_base.pxi: the clock, random numbers, counters, the connection base
# class with its deadline, the snapshot types and the Worker.

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int CLOCK_MONOTONIC

cdef extern from "<unistd.h>" nogil:
    ssize_t c_write "write" (int fd, const void* buf, size_t n)

cdef extern from "<errno.h>" nogil:
    int errno
    int EAGAIN
    int EINTR


cdef inline double mono_now() noexcept nogil:
    # The vDSO makes this ~20 ns: cheaper than asking the loop through Python.
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


# xorshift128+ for weighted cluster picks and request ids: ids need to be
# unique, not secret, and os.urandom per request would be a syscall.
cdef uint64_t _rng_s0 = 0x9E3779B97F4A7C15
cdef uint64_t _rng_s1 = 0xBF58476D1CE4E5B9

cdef inline uint64_t rand64() noexcept nogil:
    global _rng_s0, _rng_s1
    cdef uint64_t x = _rng_s0
    cdef uint64_t y = _rng_s1
    _rng_s0 = y
    x ^= x << 23
    _rng_s1 = x ^ y ^ (x >> 17) ^ (y >> 26)
    return _rng_s1 + y

def seed_random(bytes seed16):
    """Seed the data plane's PRNG (each worker calls it with os.urandom(16))."""
    global _rng_s0, _rng_s1
    cdef const unsigned char* p = seed16
    cdef uint64_t a = 0, b = 0
    cdef int i
    for i in range(8):
        a = (a << 8) | p[i]
        b = (b << 8) | p[8 + i]
    _rng_s0 = a | 1
    _rng_s1 = b | 2

cdef inline int add_request_id(OutBuf out) except -1:
    # A version-4 UUID in its text form: 8-4-4-4-12 lower-case hex.
    cdef uint64_t hi = rand64(), lo = rand64()
    cdef char buf[36]
    cdef const char* hexd = "0123456789abcdef"
    cdef int i, j = 0, nib
    hi = (hi & 0xFFFFFFFFFFFF0FFF) | 0x4000
    lo = (lo & 0x3FFFFFFFFFFFFFFF) | 0x8000000000000000
    for i in range(32):
        if i == 8 or i == 12 or i == 16 or i == 20:
            buf[j] = b'-'
            j += 1
        if i < 16:
            nib = (hi >> (60 - 4 * i)) & 15
        else:
            nib = (lo >> (60 - 4 * (i - 16))) & 15
        buf[j] = hexd[nib]
        j += 1
    out.add("x-request-id: ", 14)
    out.add(buf, 36)
    out.add("\r\n", 2)
    return 0


@cython.final
cdef class Stats:
    """Worker-wide counters (Envoy's names where there is one)."""
    cdef public long long downstream_cx_total
    cdef public long long downstream_cx_active
    cdef public long long downstream_cx_http
    cdef public long long downstream_cx_tcp
    cdef public long long downstream_rq_total
    cdef public long long downstream_rq_active
    cdef public long long downstream_rq_1xx
    cdef public long long downstream_rq_2xx
    cdef public long long downstream_rq_3xx
    cdef public long long downstream_rq_4xx
    cdef public long long downstream_rq_5xx
    cdef public long long downstream_rq_rx_reset
    cdef public long long downstream_cx_protocol_error
    cdef public long long downstream_cx_idle_timeout
    cdef public long long downstream_rq_header_timeout
    cdef public long long downstream_cx_upgrades_total
    cdef public long long downstream_cx_drain_close
    cdef public long long loop_batch_sleeps      # set_batch_window: sleeps taken

    cdef inline void count_status(self, int status) noexcept:
        if status < 200:
            self.downstream_rq_1xx += 1
        elif status < 300:
            self.downstream_rq_2xx += 1
        elif status < 400:
            self.downstream_rq_3xx += 1
        elif status < 500:
            self.downstream_rq_4xx += 1
        else:
            self.downstream_rq_5xx += 1

    def as_dict(self):
        return {name: getattr(self, name) for name in STAT_NAMES}

STAT_NAMES = (
    "downstream_cx_total", "downstream_cx_active", "downstream_cx_http",
    "downstream_cx_tcp", "downstream_rq_total", "downstream_rq_active",
    "downstream_rq_1xx", "downstream_rq_2xx", "downstream_rq_3xx",
    "downstream_rq_4xx", "downstream_rq_5xx", "downstream_rq_rx_reset",
    "downstream_cx_protocol_error", "downstream_cx_idle_timeout",
    "downstream_rq_header_timeout", "downstream_cx_upgrades_total",
    "downstream_cx_drain_close", "loop_batch_sleeps",
)


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


cdef class Conn:
    """Base of every connection object: membership in the worker's timer list.

    The worker scans its list every tick and calls on_deadline() for the ones
    whose deadline passed: one periodic timer per worker instead of a timer
    handle per request.
    """
    cdef Worker worker
    cdef Conn prev
    cdef Conn next
    cdef bint linked
    cdef double deadline
    cdef int deadline_kind
    cdef object transport
    cdef int read_paused          # PAUSE_* bits
    cdef int fd                   # the socket, for direct writes (-1: none)
    cdef bint uv_pending          # the transport holds unsent bytes of ours
    cdef bint closed              # we closed (or aborted) it: the fd may be gone
    cdef bint flush_pending       # in the worker's `dirty` list (flush_later)

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
        if timeout > 0:
            self.deadline = mono_now() + timeout
            self.deadline_kind = kind
        else:
            self.deadline = 0
            self.deadline_kind = DL_NONE

    cdef void on_deadline(self, int kind):
        pass

    cdef void on_drain(self):
        pass

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


@cython.final
cdef class ListenerConf:
    """One listener's settings in a snapshot (built by the control side)."""
    cdef readonly str name
    cdef readonly str protocol          # "http" | "tcp"
    cdef readonly bint is_http
    cdef readonly Router router         # http
    cdef readonly tuple filters         # http: the filter chain, the router last
    cdef readonly int hooks             # http: union of the filters' hooks
    cdef readonly str cluster           # tcp: the cluster's name
    cdef readonly double idle_timeout
    cdef readonly double headers_timeout
    cdef readonly double stream_idle_timeout
    cdef readonly Py_ssize_t buffer_limit
    cdef readonly Py_ssize_t max_head_bytes
    cdef readonly int max_headers
    cdef readonly bint xff_append
    cdef readonly bint gen_request_id
    cdef readonly int h2_max_concurrent_streams     # HTTP/2 clients (core_h2.pxi)
    cdef readonly int h2_initial_stream_window
    cdef readonly int h2_initial_connection_window

    def __init__(self, str name, str protocol, Router router=None, str cluster=None,
                 double idle_timeout=3600.0, double headers_timeout=10.0,
                 double stream_idle_timeout=300.0, Py_ssize_t buffer_limit=1048576,
                 Py_ssize_t max_head_bytes=61440, int max_headers=100,
                 bint xff_append=True, bint gen_request_id=True,
                 int h2_max_concurrent_streams=100, int h2_initial_stream_window=65536,
                 int h2_initial_connection_window=1048576, filters=()):
        if protocol not in ("http", "tcp"):
            raise ValueError(f"listener {name}: protocol must be http or tcp")
        if protocol == "http" and router is None:
            raise ValueError(f"listener {name}: http listener needs a router")
        if protocol == "tcp" and cluster is None:
            raise ValueError(f"listener {name}: tcp listener needs a cluster")
        self.name = name
        self.protocol = protocol
        self.is_http = protocol == "http"
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


@cython.final
cdef class Snapshot:
    """An immutable, validated view of the config that the data plane runs on."""
    cdef readonly dict listeners        # name -> ListenerConf
    cdef readonly dict clusters         # name -> ClusterConf
    cdef readonly long version
    cdef readonly double drain_timeout

    def __init__(self, dict listeners, dict clusters, long version=0, double drain_timeout=10.0):
        self.listeners = dict(listeners)
        self.clusters = dict(clusters)
        self.version = version
        self.drain_timeout = drain_timeout


@cython.final
cdef class ListenerState:
    """A listener inside one worker: survives reloads; `conf` is swapped."""
    cdef readonly str name
    cdef readonly ListenerConf conf
    cdef readonly Worker worker

    def __init__(self, Worker worker, ListenerConf conf):
        self.worker = worker
        self.name = conf.name
        self.conf = conf

    def __call__(self):
        # The protocol factory handed to loop.create_server().
        if self.conf.is_http:
            return HttpDownstream.__new__(HttpDownstream, self)
        return TcpDownstream.__new__(TcpDownstream, self)


cdef enum:
    # Requests in flight in a worker before it batches (set_batch_window).
    BATCH_MIN_ACTIVE = 32


@cython.final
cdef class Worker:
    """The per-process data plane: listeners, pools, timers, counters.

    Created once per worker process (or per embedded proxy). The control side
    calls apply(snapshot) to switch config; connections pick the new tables up
    at their next request.
    """
    cdef readonly object loop
    cdef readonly Snapshot snapshot
    cdef readonly dict listeners        # name -> ListenerState
    cdef readonly dict clusters         # name -> ClusterState (kept across snapshots)
    cdef BufferPool bufpool
    cdef readonly Stats stats
    cdef Conn conns                     # head of the timer list
    cdef readonly bint draining
    cdef object tick_handle
    cdef double tick_interval
    cdef list dirty                     # Conns whose flush_later waits for flush_dirty()
    cdef bint flush_scheduled
    # batching under load (set_batch_window; docs/design.md)
    cdef double batch_window            # seconds, 0 = off
    cdef bint batching                  # the _batch_round callback chain is running
    cdef long batch_activity            # defer_flush calls since the last round
    cdef double batch_woke              # when the last round ended

    def __init__(self, loop, double tick_interval=0.1, Py_ssize_t buffer_size=32768):
        self.loop = loop
        self.snapshot = None
        self.listeners = {}
        self.clusters = {}
        self.bufpool = BufferPool(buffer_size)
        self.stats = Stats()
        self.conns = None
        self.draining = False
        self.tick_interval = tick_interval
        self.tick_handle = None
        self.dirty = []
        self.flush_scheduled = False
        self.batch_window = 0
        self.batching = False

    # --- deferred writes -----------------------------------------------------

    cdef void defer_flush(self, Conn c):
        # One callback per loop iteration for the whole worker, however many
        # connections are dirty: it runs before the loop polls again, so every
        # connection gets one write per iteration. Measured against flushing at
        # the end of each read callback: h2 bench 84k vs 64k req/s (RESULTS.md).
        self.dirty.append(c)
        self.batch_activity += 1
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush_dirty)

    def _flush_dirty(self):
        self.flush_scheduled = False
        self.flush_dirty()
        if (self.batch_window > 0 and not self.batching
                and self.stats.downstream_rq_active >= BATCH_MIN_ACTIVE):
            self.batching = True
            self.batch_activity = 0
            self.batch_woke = mono_now()
            self.loop.call_soon(self._batch_round)

    def set_batch_window(self, double seconds):
        """Under load (BATCH_MIN_ACTIVE requests in flight and events still
        arriving), sleep `seconds` between event-loop polls instead of
        blocking in epoll. 0 turns it off. Only for a loop that serves
        nothing else: the sleep holds up every callback of the loop."""
        self.batch_window = seconds if seconds > 0 else 0

    def _batch_round(self):
        # Runs once per loop iteration while batching (its call_soon keeps the
        # next poll non-blocking). Whoever sends to a proxy asleep in
        # epoll_wait pays for waking it, on its own core: with many streams in
        # flight and a proxy that is mostly idle, that is one wakeup per packet.
        # Sleeping a fixed short time instead lets a batch pile up in the
        # sockets unannounced; the next poll takes all of it at once, and our
        # writes leave in larger batches too. Measured in perf/RESULTS.md.
        if self.dirty:
            self.flush_scheduled = False
            self.flush_dirty()
        if self.batch_activity == 0 or self.batch_window == 0:
            self.batching = False      # quiet again: back to blocking in epoll
            return
        self.batch_activity = 0
        # Busy for half a window since the last sleep: the work itself
        # batches, sleeping would only cost throughput. Few requests in
        # flight: a sleep would be added latency with little to batch.
        if (mono_now() - self.batch_woke < self.batch_window * 0.5
                and self.stats.downstream_rq_active >= BATCH_MIN_ACTIVE):
            self.stats.loop_batch_sleeps += 1
            _sleep(self.batch_window)
        self.batch_woke = mono_now()
        self.loop.call_soon(self._batch_round)

    cdef void flush_dirty(self):
        # Connections that asked for flush_later during this loop iteration.
        # A flush may dirty more (a stream pumped on one connection credits
        # another): loop until none is left.
        cdef Conn c
        while self.dirty:
            d, self.dirty = self.dirty, []
            for c in d:
                if c.flush_pending:
                    c.flush_deferred()

    # --- control ---------------------------------------------------------

    def apply(self, Snapshot snap):
        """Switch to a new snapshot. New requests use it at once; requests in
        flight finish on the tables they started with. Live state (cluster
        endpoints, balancers, pools, counters) is kept by name; clusters the
        snapshot no longer has drain and go. The snapshot is not modified."""
        cdef ClusterState cs
        cdef ListenerState ls
        for name, conf in snap.clusters.items():
            cs = self.clusters.get(name)
            if cs is None:
                self.clusters[name] = ClusterState(self, conf)
            else:
                cs.update(conf)
        for name in [n for n in self.clusters if n not in snap.clusters]:
            cs = self.clusters.pop(name)
            cs.remove()
        for name, conf in snap.listeners.items():
            ls = self.listeners.get(name)
            if ls is not None:
                ls.conf = conf
        self.snapshot = snap
        if self.tick_handle is None:
            self.tick_handle = self.loop.call_later(self.tick_interval, self._tick)

    def cluster(self, str name):
        """The live ClusterState called `name` (KeyError if none)."""
        return self.clusters[name]

    def set_endpoints(self, str cluster, endpoints):
        """Swap a cluster's endpoints ((ip, port, weight) tuples) without a
        new snapshot (discovery updates)."""
        (<ClusterState>self.clusters[cluster]).set_endpoints(endpoints)

    def listener_state(self, str name):
        """The ListenerState for `name` (the protocol factory for create_server)."""
        st = self.listeners.get(name)
        if st is None:
            st = ListenerState(self, self.snapshot.listeners[name])
            self.listeners[name] = st
        return st

    def drop_listener(self, str name):
        """A reload removed (or moved) this listener: its connections drain
        as on shutdown (HTTP/1.1: Connection: close after the current
        response; HTTP/2: two-phase GOAWAY), the rest of the worker goes on."""
        cdef Conn c, nxt
        st = self.listeners.pop(name, None)
        if st is None:
            return
        c = self.conns
        while c is not None:
            nxt = c.next
            if c.listener_of() is st:
                c.on_drain()
            c = nxt

    def start_drain(self):
        """Stop reusing connections: idle keep-alive connections close now,
        busy ones close after their current response (Connection: close)."""
        cdef Conn c, nxt
        self.draining = True
        c = self.conns
        while c is not None:
            nxt = c.next
            c.on_drain()
            c = nxt
        for cs in self.clusters.values():
            (<ClusterState>cs).drain_pools()

    def close_all(self):
        """Abort every connection (end of the drain period)."""
        cdef Conn c, nxt
        c = self.conns
        while c is not None:
            nxt = c.next
            if c.transport is not None:
                c.transport.abort()
            c.unlink()
            c = nxt
        if self.tick_handle is not None:
            self.tick_handle.cancel()
            self.tick_handle = None

    def connection_count(self):
        cdef Conn c = self.conns
        cdef long n = 0
        while c is not None:
            n += 1
            c = c.next
        return n

    def stats_dict(self):
        """Counters as plain data: worker-wide and per cluster."""
        d = self.stats.as_dict()
        clusters = {}
        for name, cs in self.clusters.items():
            clusters[name] = (<ClusterState>cs).st.as_dict()
        d["clusters"] = clusters
        d["buffers_allocated"] = self.bufpool.allocated
        d["buffers_reused"] = self.bufpool.reused
        return d

    def _tick(self):
        cdef double now = mono_now()
        cdef Conn c = self.conns
        cdef Conn nxt
        cdef int kind
        while c is not None:
            nxt = c.next
            if c.deadline_kind != DL_NONE and c.deadline <= now:
                kind = c.deadline_kind
                c.deadline_kind = DL_NONE
                c.deadline = 0
                try:
                    c.on_deadline(kind)
                except Exception as exc:  # a bug must not stop the timer
                    self.loop.call_exception_handler(
                        {"message": "fastmesh: deadline handler failed", "exception": exc})
            c = nxt
        self.tick_handle = self.loop.call_later(self.tick_interval, self._tick)
