# core_timeouts.pxi: a stream's timeouts besides the route timeout (which
# the codecs arm when the request ends): the route's idle_timeout, the
# route's and the listener's max_stream_duration, and the gRPC grpc-timeout
# header when the route's max_stream_duration.grpc_timeout_header_max says
# to honour it (Envoy's RouteAction.MaxStreamDuration and
# common_http_protocol_options.max_stream_duration).
#
# The stream idle timeout is a stream field (idle_t) the codecs re-arm on
# every bit of progress; the route only changes its value. The stream
# duration is an absolute deadline from the request's start, so it cannot
# share the connection's single deadline (which progress keeps pushing
# later): it is a StreamTimer of its own on the worker's wheel, made only for
# a request that has one. Unconfigured, the router pays one test
# (route.timeouts / conf.max_stream_duration) and request_over one more.


@cython.final
cdef class RouteTimeouts:
    """A route's idle_timeout and max_stream_duration settings (seconds;
    negative means not set)."""

    def __init__(self, double idle_timeout=-1, double max_stream_duration=-1,
                 double grpc_timeout_header_max=-1, double grpc_timeout_header_offset=0):
        self.idle_timeout = idle_timeout
        self.max_stream_duration = max_stream_duration
        self.grpc_max = grpc_timeout_header_max
        self.grpc_offset = grpc_timeout_header_offset

    def __repr__(self):
        return (f"RouteTimeouts(idle_timeout={self.idle_timeout}, max_stream_duration="
                f"{self.max_stream_duration}, grpc_max={self.grpc_max}, "
                f"grpc_offset={self.grpc_offset})")


@cython.final
cdef class StreamTimer(TimerEntry):
    """The max_stream_duration deadline of one request."""

    cdef void on_timer(self, int kind):
        cdef ProxyStream s = self.s
        if s is not None:
            s.on_deadline(DL_MAX_DURATION)


cdef inline bint is_grpc(ProxyStream s):
    cdef Py_ssize_t n = 0
    cdef const char* v = s.rq_header("content-type", 12, &n)
    return v != NULL and n >= 16 and memcmp(v, b"application/grpc", 16) == 0


cdef void route_timeouts(ProxyStream s, Route route):
    # The route is chosen: its idle timeout replaces the listener's, and the
    # stream's duration deadline is armed, counted from the request's start.
    cdef RouteTimeouts t = <RouteTimeouts>route.timeouts if route.timeouts is not None else None
    cdef double d = s.conf.max_stream_duration
    cdef double g
    cdef const char* v
    cdef Py_ssize_t n = 0
    cdef StreamTimer timer
    if t is not None:
        if t.idle_timeout >= 0:
            s.idle_t = t.idle_timeout
        if t.max_stream_duration >= 0:
            d = t.max_stream_duration
        if t.grpc_max >= 0 and is_grpc(s):
            v = s.rq_header("grpc-timeout", 12, &n)
            g = parse_grpc_timeout(v, n) if v != NULL else 0
            if g > 0:
                # Envoy: the header, capped at the max (0: no cap), less the
                # offset; what is left replaces the stream duration.
                if t.grpc_max > 0 and g > t.grpc_max:
                    g = t.grpc_max
                if t.grpc_offset > 0:
                    g = g - t.grpc_offset if t.grpc_offset < g else 0
                d = g
    if d <= 0:
        return
    d -= mono_now() - s.rq_start
    if d < 0.001:
        d = 0.001
    # One timer per stream, kept across the requests of a keep-alive
    # connection: re-arming it is a few field writes when it still sits in
    # the wheel with an earlier slot (the wheel's lazy arm), where a new
    # timer per request cost an allocation and a full insert.
    timer = s.dur_timer
    if timer is None:
        timer = s.dur_timer = StreamTimer.__new__(StreamTimer)
    timer.s = s
    s.dur_armed = True
    if not s.worker.wheel.arm_lazy(timer, DL_MAX_DURATION, d):
        s.worker.wheel.arm(timer, DL_MAX_DURATION, d)


cdef void timeouts_over(ProxyStream s):
    # The request is over: its duration deadline goes (release_timer), and
    # the timer forgets the stream, so nothing keeps the stream alive.
    cdef StreamTimer timer = s.dur_timer
    s.dur_armed = False
    timer.s = None
    release_timer(s, timer)


cdef void count_timeout(ProxyStream s, int kind):
    # Which timeout ended the stream, as Envoy counts them.
    if kind == DL_RESPONSE:
        if s.cluster is not None:
            s.cluster.st[UPSTREAM_RQ_TIMEOUT] += 1
    elif kind == DL_STREAM_IDLE:
        s.lst.st[DOWNSTREAM_RQ_IDLE_TIMEOUT] += 1
    else:
        s.lst.st[DOWNSTREAM_RQ_MAX_DURATION_REACHED] += 1
