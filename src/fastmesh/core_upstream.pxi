# core_upstream.pxi: UpstreamRequest, one attempt of a request.
#
# The downstream stream (ProxyStream) is the request as the client sees it;
# each try at an upstream is an UpstreamRequest, as in Envoy's router
# (source/common/router/upstream_request.cc). It owns what belongs to one
# attempt: the cluster state it charges (from request_started to
# request_finished, whatever connection it ends up on), the balancer that
# picked the endpoint, the endpoint, the attempt number, and its place on an
# upstream connection (an UpstreamHttp, or a stream id on an UpstreamH2).
# A retry is a new UpstreamRequest; the failed one has ended by then.


@cython.final
@cython.freelist(64)
cdef class UpstreamRequest:
    """One attempt of a downstream request at one endpoint of one cluster."""

    cdef void begin(self, ProxyStream d, ClusterState c, int idx, int attempt):
        self.down = d
        self.cluster = c
        self.lb = c.lb
        self.ep = <Endpoint>c.endpoints[idx]
        self.lb_idx = idx
        self.attempt = attempt
        self.active = True
        self.prio = d.route.priority
        c.cb_rq[self.prio] += 1
        self.outcome = OUT_NONE
        self.lb.request_started(idx)
        c.st[UPSTREAM_RQ_TOTAL] += 1
        c.st[UPSTREAM_RQ_ACTIVE] += 1
        self.ep.rq_total += 1
        self.ep.rq_active += 1
        # A first attempt that starts in the callback that parsed the head
        # (no filter paused it) starts when the request did, give or take the
        # chain's microseconds: that clock read is reused.
        self.started = d.rq_start if attempt == 1 and not d.resumed else mono_now()

    cdef void end(self):
        # This attempt is over (response complete, failed, or abandoned):
        # give back what begin() took, once.
        cdef int64_t* st
        if self.active:
            self.active = False
            self.lb.request_finished(self.lb_idx)
            st = self.cluster.st          # (no reference taken around the write)
            st[UPSTREAM_RQ_ACTIVE] -= 1
            self.ep.rq_active -= 1
            self.cluster.cb_rq[self.prio] -= 1
            # The only cost without outlier_detection: a pointer test (no
            # local variable: that would take and drop a reference to None).
            if self.cluster.outlier is not None:
                self.cluster.outlier.report(self.ep, self.outcome)
            if self.trace is not None:
                trace_attempt_end(self)   # its client span (filter_tracing.pxi)

    cdef inline void response_complete(self) noexcept:
        # The upstream's response is all in (Envoy records upstream_rq_time
        # for complete responses only). The stream's downstream_rq_time ends
        # at the same moment: one clock read for both.
        cdef double now = mono_now()
        self.down.rs_end = now
        self.cluster.rq_time.record(now - self.started)

    cdef void attach(self, bint fresh):
        # Put this attempt on a connection of its cluster's pool for its
        # endpoint (a new one when `fresh` or none is idle).
        cdef UpstreamHttp up = None
        cdef UpstreamH2 c
        cdef ClusterState cl = self.cluster
        cdef Worker w = self.down.worker
        if cl.conf.protocol == PROTO_HTTP2 or (cl.conf.protocol == PROTO_AUTO
                                               and self.down.from_h2):
            c = self.ep.pool.get_h2()
            if c is None:
                if not cb_wait(self, True):   # circuit breakers: wait or overflow
                    return
                c = UpstreamH2.__new__(UpstreamH2)
                c.setup()
                self.ep.pool.h2conns.append(c)
                c.start_connect(w, cl, self.ep)
            else:
                cl.st[UPSTREAM_CX_REUSED] += 1
            c.attach(self)
            return
        if not fresh:
            up = self.ep.pool.get()
        if up is not None:
            cl.st[UPSTREAM_CX_REUSED] += 1
            up.begin(self)
            self.h1 = up
            self.down.upstream_ready(self)
        else:
            if not cb_wait(self, False):      # circuit breakers: wait or overflow
                return
            up = UpstreamHttp.__new__(UpstreamHttp)
            up.begin(self)
            self.h1 = up
            up.start_connect(w, cl, self.ep)

    cdef inline bint is_h2(self):
        return self.h2 is not None

    cdef void cancel(self):
        # The downstream gave up on this attempt (reset, timeout, disconnect).
        if self.cb_pending:
            cb_unqueue(self)
        if self.h1 is not None:
            self.h1.detach_and_abort()
        elif self.h2 is not None:
            self.h2.cancel(self)
        self.end()
