# filter_fault.pxi: envoy.filters.http.fault, injected delays and aborts for
# users testing their own resilience.
#
# For the requests its header matchers select, and for the configured
# fraction of them, a delay holds the request (FILTER_PAUSE; a FaultTimer on
# the worker's wheel resumes the chain) and an abort answers locally with an
# HTTP status, or for gRPC a trailers-only response with the grpc-status.
# A delay and an abort may both apply: the abort comes after the delay, as in
# Envoy. A client that leaves during a delay takes its timer with it
# (request_over -> fault_over). max_active_faults bounds the delays in
# progress in this worker; over it the request goes through unharmed
# (faults_overflow).

import re as _re


cdef enum:  # the stats block's slots (Envoy's http.<prefix>.fault.*)
    FAULT_DELAYS_INJECTED
    FAULT_ABORTS_INJECTED
    FAULT_ACTIVE_FAULTS
    FAULT_FAULTS_OVERFLOW
    FAULT_NSTATS

FAULT_STAT_NAMES = ("delays_injected", "aborts_injected", "active_faults", "faults_overflow")
FAULT_STAT_KINDS = ("counter", "counter", "gauge", "counter")

cdef enum:  # FaultSettings.headers kinds
    FH_EXACT = 0
    FH_PREFIX = 1
    FH_PRESENT = 2
    FH_REGEX = 3


@cython.final
cdef class FaultSettings:
    """One fault configuration (the listener's or a route's): seconds, per
    million requests. headers: [(name, kind, value, invert)] with kind
    "exact" | "prefix" | "present" | "regex" (value: bool for present)."""

    def __init__(self, double delay=0, uint32_t delay_ppm=0, int abort_status=0,
                 int abort_grpc=-1, uint32_t abort_ppm=0, headers=(), long max_active=-1):
        cdef list hs = []
        kinds = {"exact": FH_EXACT, "prefix": FH_PREFIX, "present": FH_PRESENT,
                 "regex": FH_REGEX}
        self.delay = delay
        self.delay_ppm = delay_ppm if delay > 0 else 0
        self.abort_status = abort_status
        self.abort_grpc = abort_grpc
        self.abort_ppm = abort_ppm if (abort_status or abort_grpc >= 0) else 0
        for name, kind, value, invert in headers:
            k = kinds[kind]
            if k == FH_REGEX:
                value = _re.compile(value.encode("latin-1") if isinstance(value, str) else value)
            elif k != FH_PRESENT:
                value = value.encode("latin-1") if isinstance(value, str) else bytes(value)
            hs.append((name.lower().encode("latin-1"), k, value, bool(invert)))
        self.headers = tuple(hs)
        self.max_active = max_active

    cdef bint matches(self, ProxyStream s):
        # Every header matcher holds (first value of the field; Envoy's
        # HeaderMatcher kinds, invert included).
        cdef bytes name
        cdef int kind
        cdef bint ok, invert
        cdef const char* v
        cdef Py_ssize_t n = 0
        for name, kind, value, invert in self.headers:
            v = s.rq_header(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), &n)
            if kind == FH_PRESENT:
                ok = (v != NULL) == <bint>value
            elif v == NULL:
                ok = False
            elif kind == FH_EXACT:
                ok = v[:n] == value
            elif kind == FH_PREFIX:
                ok = v[:n].startswith(value)
            else:
                ok = value.fullmatch(v[:n]) is not None
            if ok == invert:
                return False
        return True


@cython.final
cdef class FaultTimer(TimerEntry):
    """The end of one request's injected delay."""

    cdef void on_timer(self, int kind):
        cdef ProxyStream s = self.s
        cdef FaultFilter f = self.f
        if s is None:
            return
        fault_over(s)
        if not s.paused:
            return
        if self.abort:
            f.abort_request(s, self.c)
            s.paused = False
        else:
            s.resume_filters()


cdef void fault_over(ProxyStream s):
    # The delay ended or the request did: the timer goes, the count drops.
    cdef FaultTimer t = s.fault_timer
    s.fault_timer = None
    if t.t_wheel is not None:
        (<TimerWheel>t.t_wheel).cancel(t)
    t.s = None
    t.f.active -= 1
    t.f.st[FAULT_ACTIVE_FAULTS] = t.f.active


@cython.final
cdef class FaultFilter(HttpFilter):
    """envoy.filters.http.fault (made by control/builtin_filters.py)."""

    def __cinit__(self, *args, **kwargs):
        self.name = "envoy.filters.http.fault"
        self.hooks = FH_REQUEST_HEADERS

    def __init__(self, FaultSettings conf=None, str name=None):
        self.conf = conf
        if name is not None:
            self.name = name

    cdef int request_headers(self, ProxyStream s) except -1:
        cdef FaultSettings c = self.conf
        cdef object per_route = s.filter_config(self)
        cdef bint delay, abort
        cdef FaultTimer t
        if per_route is not None:
            c = <FaultSettings>per_route
        if c is None or (c.delay_ppm == 0 and c.abort_ppm == 0):
            return FILTER_CONTINUE
        if c.headers and not c.matches(s):
            return FILTER_CONTINUE
        if self.st == NULL:
            self.stats = s.worker.registry.block("fault", FAULT_STAT_NAMES, FAULT_STAT_KINDS,
                                                 {"filter": self.name})
            self.st = self.stats.v
        delay = roll(c.delay_ppm)
        abort = roll(c.abort_ppm)
        if not delay and not abort:
            return FILTER_CONTINUE
        if c.max_active >= 0 and self.active >= c.max_active:
            self.st[FAULT_FAULTS_OVERFLOW] += 1
            return FILTER_CONTINUE
        if delay:
            self.st[FAULT_DELAYS_INJECTED] += 1
            self.active += 1
            self.st[FAULT_ACTIVE_FAULTS] = self.active
            t = FaultTimer.__new__(FaultTimer)
            t.s = s
            t.f = self
            t.c = c
            t.abort = abort
            s.fault_timer = t
            s.worker.wheel.arm(t, 0, c.delay)
            return FILTER_PAUSE
        self.abort_request(s, c)
        return FILTER_STOP

    cdef void abort_request(self, ProxyStream s, FaultSettings c):
        self.st[FAULT_ABORTS_INJECTED] += 1
        if c.abort_grpc >= 0:
            # gRPC: a trailers-only response with this status (HTTP clients
            # that are not gRPC get 503).
            s.reply_grpc = c.abort_grpc
            s.filter_reply(c.abort_status or 503, b"fault filter abort")
        else:
            s.filter_reply(c.abort_status, b"fault filter abort")
