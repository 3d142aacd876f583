# core_worker.pxi: the Worker, the per-process data plane: it applies
# snapshots, keeps listener and cluster state by name, owns the timer wheel,
# the connection list and the stats registry, and runs the batching.



@cython.final
cdef class Worker:
    """The per-process data plane: listeners, pools, timers, counters.

    Created once per worker process (or per embedded proxy). The control side
    calls apply(snapshot) to switch config; connections pick the new tables up
    at their next request.
    """

    def __init__(self, loop, Py_ssize_t buffer_size=32768):
        self.loop = loop
        self.snapshot = None
        self.listeners = {}
        self.clusters = {}
        self.bufpool = BufferPool(buffer_size)
        self.registry = StatsRegistry()
        self.wstats = self.registry.block("", WORKER_NAMES, WORKER_KINDS, None)
        self.st = self.wstats.v
        self.istio = False
        self.istio_local = {}
        self.ds_blocks = []
        self.conns = None
        self.wheel = TimerWheel(loop)
        self.draining = False
        self.dirty = []
        self.flush_scheduled = False
        self.batch_window = 0
        self.batching = False
        self.ov_fd_high = INT_MAX
        self.ov_fd_low = INT_MAX
        self.ov_max_cx = 0
        self.ov_fd_limit = 0

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
                and self.rq_active() >= BATCH_MIN_ACTIVE):
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
                and self.rq_active() >= BATCH_MIN_ACTIVE):
            self.st[LOOP_BATCH_SLEEPS] += 1
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
        """Abort every connection (end of the drain period) and close the
        timer wheel: the worker serves nothing after this."""
        cdef Conn c, nxt
        c = self.conns
        while c is not None:
            nxt = c.next
            if c.transport is not None:
                c.transport.abort()
            c.unlink()
            c = nxt
        self.wheel.close()

    def connection_count(self):
        cdef Conn c = self.conns
        cdef long n = 0
        while c is not None:
            n += 1
            c = c.next
        return n

    # --- stats ---------------------------------------------------------------

    cdef StatsBlock listener_block(self, str name):
        # Get-or-create: a listener that comes back (a reload) counts on.
        cdef StatsBlock b = self.registry.block("listener", LISTENER_NAMES, LISTENER_KINDS,
                                                (("listener", name),))
        if b not in self.ds_blocks:
            self.ds_blocks.append(b)
        return b

    cdef long long rq_active(self):
        # Requests in flight on all listeners (the batching's load signal):
        # summed here, once per loop iteration at most, rather than kept
        # per request in a second, worker-wide gauge.
        cdef StatsBlock b
        cdef long long n = 0
        for b in self.ds_blocks:
            n += b.v[DOWNSTREAM_RQ_ACTIVE]
        return n

    cdef long long cx_active(self):
        # Downstream connections on all listeners (overload checks only).
        cdef StatsBlock b
        cdef long long n = 0
        for b in self.ds_blocks:
            n += b.v[DOWNSTREAM_CX_ACTIVE]
        return n

    def set_overload(self, long global_max_connections=0, double fd_threshold=0.95):
        """Overload protection (core_overload.pxi): at most
        `global_max_connections` downstream connections (0: no limit), and,
        once `fd_threshold` of RLIMIT_NOFILE is in use, close idle keep-alive
        connections oldest first and refuse new ones while none is idle
        (0: off)."""
        self.ov_max_cx = global_max_connections if global_max_connections > 0 else 0
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fd_threshold <= 0 or soft == resource.RLIM_INFINITY or soft > INT_MAX:
            self.ov_fd_limit = 0
            self.ov_fd_high = self.ov_fd_low = INT_MAX
            return
        self.ov_fd_limit = soft
        self.ov_fd_high = <int>(soft * fd_threshold)
        # Shed a little more than needed, so that not every accept walks
        # the connection list: down to 5 % of the limit below the mark.
        self.ov_fd_low = self.ov_fd_high - max(1, soft // 20)

    def set_accept_control(self, fn):
        """`fn(accepting: bool)` stops or resumes accepting on every
        listener of this worker (the runtime owns the servers); the overload
        protection calls it at the descriptor mark."""
        self.accept_ctl = fn

    def stats(self):
        """The registry's snapshot: every block and histogram as plain,
        JSON-able data (docs/stats.md); admin.metrics merges and renders it."""
        self.st[BUFFERS_ALLOCATED] = self.bufpool.allocated
        self.st[BUFFERS_REUSED] = self.bufpool.reused
        cdef ClusterState cs
        for cs in self.clusters.values():
            cb_refresh(cs)                # breaker gauges are computed on read
        trace_stats(self)                 # the tracing sinks' counters (filter_tracing.pxi)
        snap = self.registry.snapshot()
        # remaining_* exist only for priorities with track_remaining (Envoy)
        untracked = {name: [p for p in CB_PRIORITIES
                            if not cs.conf.breakers.limits(p)["track_remaining"]]
                     for name, cs in self.clusters.items()}
        for blk in snap.get("blocks", ()):
            if blk.get("prefix") == "cluster":
                skip = untracked.get(dict(blk["labels"]).get("cluster"), CB_PRIORITIES)
                for name in [n for n in blk["values"] if n in CB_REMAINING_NAMES
                             and n.split(".")[1] in skip]:
                    del blk["values"][name]
                    blk["kinds"].pop(name, None)
        return snap
