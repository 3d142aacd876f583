# core_filter.pxi: HTTP filters, the chain that runs them, and the Python
# view of a request that Python filters get.
#
# A listener's HTTP filter chain is an ordered tuple of HttpFilter objects,
# the router last (filter_router.pxi). A stream runs the chain's
# request-headers hooks once its head is parsed (core_stream.pxi); each hook
# answers FILTER_CONTINUE, FILTER_STOP (it ended the request, usually with a
# local reply) or FILTER_PAUSE (the stream waits until Request.resume()).
# Response-headers and done hooks run as the response passes. Filters are
# shared by every stream of a listener: per-request state lives on the
# stream (or, for Python filters, on Request.state).
#
# Python filters subclass HttpFilter and define any of the methods
# on_request_headers(request), on_request_body(request, data),
# on_response_headers(request, status), on_response_body(request, data) and
# on_done(request); a coroutine returned by on_request_headers pauses the
# stream until it finishes. Body hooks see each chunk as it passes (they do
# not hold it back); a request-body hook may stop the request. Compiled
# filters override the cdef hooks (request_headers, request_body,
# response_headers, response_body, done) and set `hooks` themselves, and pay
# no Python call at all. A chain costs nothing for a hook no filter has:
# the listener keeps the union of its filters' hooks.

import asyncio as _asyncio
import inspect as _inspect



CONTINUE = FILTER_CONTINUE
STOP = FILTER_STOP
PAUSE = FILTER_PAUSE


cdef class HttpFilter:
    """Base class of HTTP filters (Envoy's StreamFilter, pingora's phases).

    Subclass it in Python and define any of::

        def on_request_headers(self, request) -> None | int | Awaitable
        def on_request_body(self, request, data: bytes) -> None | int
        def on_response_headers(self, request, status: int) -> None
        def on_response_body(self, request, data: bytes) -> None
        def on_done(self, request) -> None

    ``on_request_headers`` returns None or ``fastmesh.CONTINUE`` to go on,
    ``fastmesh.STOP`` after ``request.respond(...)``, ``fastmesh.PAUSE`` to
    hold the request until ``request.resume()``, or a coroutine (the request
    waits for it; it may call ``request.respond``). An exception answers 500.
    The body hooks get each chunk of the body as it goes through (a copy);
    ``on_request_body`` may end the request with ``request.respond(...)``
    and ``fastmesh.STOP`` (the upstream attempt is cancelled) as long as the
    response has not started. The response hooks run in reverse chain order.
    """

    def __cinit__(self, *args, **kwargs):
        self.name = type(self).__name__
        self.py_req = getattr(self, "on_request_headers", None)
        self.py_resp = getattr(self, "on_response_headers", None)
        self.py_done = getattr(self, "on_done", None)
        self.py_reqb = getattr(self, "on_request_body", None)
        self.py_respb = getattr(self, "on_response_body", None)
        if self.py_reqb is not None:
            self.hooks |= FH_REQUEST_BODY
        if self.py_respb is not None:
            self.hooks |= FH_RESPONSE_BODY
        if self.py_req is not None:
            self.hooks |= FH_REQUEST_HEADERS
        if self.py_resp is not None:
            self.hooks |= FH_RESPONSE_HEADERS
        if self.py_done is not None:
            self.hooks |= FH_DONE

    cdef int request_headers(self, ProxyStream s) except -1:
        # An exception, STOP without a response or an unknown code is the
        # chain's to answer (ProxyStream.run_request), as for compiled hooks;
        # here only what is Python's: None, a coroutine, respond() + None.
        cdef Request req = s.request_view()
        r = self.py_req(req)
        if r is None:
            r = FILTER_CONTINUE
        elif _inspect.isawaitable(r):
            req.await_filter(self, r)
            return FILTER_PAUSE
        elif type(r) is not int:
            raise TypeError(f"on_request_headers returned {r!r}")
        if r == FILTER_CONTINUE and s.replied:
            return FILTER_STOP
        return r

    cdef int request_body(self, ProxyStream s, const char* data, Py_ssize_t n) except -1:
        try:
            r = self.py_reqb(s.request_view(), data[:n])
        except Exception as exc:
            s.filter_error(self, exc)
            return FILTER_STOP
        if s.replied:
            return FILTER_STOP
        if r is None or r == FILTER_CONTINUE:
            return FILTER_CONTINUE
        if r == FILTER_STOP:
            s.filter_error(self, RuntimeError("filter returned STOP without a response"))
            return FILTER_STOP
        s.filter_error(self, TypeError(f"on_request_body returned {r!r}"))
        return FILTER_STOP

    cdef void response_body(self, ProxyStream s, const char* data, Py_ssize_t n):
        try:
            self.py_respb(s.request_view(), data[:n])
        except Exception as exc:
            s.worker.loop.call_exception_handler(
                {"message": f"fastmesh: filter {self.name} failed", "exception": exc})

    cdef void response_headers(self, ProxyStream s, int status):
        try:
            self.py_resp(s.request_view(), status)
        except Exception as exc:
            s.worker.loop.call_exception_handler(
                {"message": f"fastmesh: filter {self.name} failed", "exception": exc})

    cdef void done(self, ProxyStream s):
        try:
            self.py_done(s.request_view())
        except Exception as exc:
            s.worker.loop.call_exception_handler(
                {"message": f"fastmesh: filter {self.name} failed", "exception": exc})


cdef inline str _s(const char* p, Py_ssize_t n):
    return p[:n].decode("latin-1")


cdef bytes _header_name(name):
    b = name.encode("latin-1") if isinstance(name, str) else bytes(name)
    if not b or any(c <= 32 or c >= 127 or c == 58 for c in b):
        raise ValueError(f"invalid header name {name!r}")
    return b.lower()


# Fields the proxy writes itself (framing, connection management, the
# authority): a filter changing them would break the guarantee that the
# framing is the one we parsed.
cdef frozenset _PROXY_OWNED = frozenset([
    b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
    b"proxy-connection", b"te", b"upgrade", b"host"])


cdef bytes _filter_header_name(name):
    cdef bytes n = _header_name(name)
    if n in _PROXY_OWNED:
        raise ValueError(f"{n.decode()} is managed by the proxy; filters cannot set or remove it")
    return n


cdef bytes _header_value(value):
    b = value.encode("latin-1") if isinstance(value, str) else bytes(value)
    if b"\r" in b or b"\n" in b or b"\0" in b:
        raise ValueError("header values must not contain CR, LF or NUL")
    return b


@cython.final
@cython.freelist(64)
cdef class Request:
    """The request as Python filters see it. Valid while the request is in
    flight; afterwards its methods raise RuntimeError."""

    cdef inline ProxyStream live(self):
        if self.s is None:
            raise RuntimeError("the request is over")
        return self.s

    @property
    def method(self) -> str:
        cdef ProxyStream s = self.live()
        return _s(s.rq_method, s.rq_method_len)

    @property
    def path(self) -> str:
        """The request target's path with its query string."""
        cdef ProxyStream s = self.live()
        return _s(s.rq_path, s.rq_path_len + s.rq_query_len)

    @property
    def authority(self) -> str:
        cdef ProxyStream s = self.live()
        return _s(s.rq_host, s.rq_host_len)

    @property
    def protocol(self) -> str:
        cdef ProxyStream s = self.live()
        if s.from_h2:
            return "HTTP/2"
        return "HTTP/1.0" if (<HttpDownstream>s).req_minor == 0 else "HTTP/1.1"

    @property
    def client_address(self) -> str:
        return self.live().client_ip.decode("latin-1")

    @property
    def peer(self):
        """The client's verified TLS identity (fastmesh.security.peer.PeerIdentity:
        ``peer.uri`` is its SPIFFE ID), or None: plaintext, or no client
        certificate (core_tls.pxi)."""
        return self.live().peer

    @property
    def listener(self) -> str:
        return self.live().conf.name

    @property
    def state(self) -> dict:
        """A dict for the filters' own per-request data."""
        if self._state is None:
            self._state = {}
        return self._state

    @property
    def headers(self) -> list:
        """[(lower-case name, value)]: the client's fields without the ones
        filters removed, then the ones they added. Pseudo-headers are left
        out; hop-by-hop fields (dropped on the way upstream) and the proxy's
        own forwarding headers (added on the way) are not reflected."""
        cdef ProxyStream s = self.live()
        cdef int k
        cdef HeaderSlice* h
        out = []
        removed = s.rq_remove or ()
        for k in range(s.rq_n):
            h = &s.rq_hs[k]
            if h.name_len and s.rq_base[h.name_off] == b':':
                continue
            name = s.rq_base[h.name_off:h.name_off + h.name_len].lower()
            if name in removed:
                continue
            out.append((name.decode("latin-1"), _s(s.rq_base + h.value_off, h.value_len)))
        if s.rq_add is not None:
            for k in range(s.rq_add.n):
                h = &s.rq_add.hs[k]
                out.append((_s(s.rq_add.base() + h.name_off, h.name_len),
                            _s(s.rq_add.base() + h.value_off, h.value_len)))
        return out

    def get_header(self, name: str):
        """The first value of a header (any case), or None."""
        want = _header_name(name).decode("latin-1")
        for n, v in self.headers:
            if n == want:
                return v
        return None

    def add_header(self, name: str, value: str) -> None:
        """Add a request header toward the upstream."""
        cdef ProxyStream s = self.live()
        n = _filter_header_name(name)
        v = _header_value(value)
        if s.rq_add is None:
            s.rq_add = HeaderList()
        s.rq_add.add(n, len(n), v, len(v), 0)

    def remove_header(self, name: str) -> None:
        """Remove every field of this name toward the upstream."""
        cdef ProxyStream s = self.live()
        cdef HeaderList kept
        cdef int k
        cdef HeaderSlice* h
        n = _filter_header_name(name)
        if s.rq_remove is None:
            s.rq_remove = []
        if n not in s.rq_remove:
            s.rq_remove.append(n)
        if s.rq_add is not None:
            kept = HeaderList()
            for k in range(s.rq_add.n):
                h = &s.rq_add.hs[k]
                if not ci_equal(s.rq_add.base() + h.name_off, h.name_len, n, len(n)):
                    kept.add(s.rq_add.base() + h.name_off, h.name_len,
                             s.rq_add.base() + h.value_off, h.value_len, 0)
            s.rq_add = kept

    def set_header(self, name: str, value: str) -> None:
        """Replace a request header (remove all, add one)."""
        self.remove_header(name)
        self.add_header(name, value)

    def add_response_header(self, name: str, value: str) -> None:
        """Add a header to the response the client gets (upstream or local)."""
        cdef ProxyStream s = self.live()
        n = _filter_header_name(name)
        v = _header_value(value)
        if s.rs_add is None:
            s.rs_add = HeaderList()
        s.rs_add.add(n, len(n), v, len(v), 0)

    def respond(self, int status, body=b"", headers=None) -> None:
        """Answer the request from the proxy (a local reply); the upstream is
        not contacted. Return fastmesh.STOP (or nothing) afterwards."""
        cdef ProxyStream s = self.live()
        if not 200 <= status <= 599:
            raise ValueError("status must be 200..599")
        if isinstance(body, str):
            body = body.encode()
        if s.replied or s.resp_started:
            raise RuntimeError("the request was already answered")
        if s.resp_status:
            raise RuntimeError("respond() is for request hooks: the response is under way")
        for n, v in (headers.items() if hasattr(headers, "items") else headers or ()):
            self.add_response_header(n, v)
        s.filter_reply(status, bytes(body))

    def resume(self) -> None:
        """Continue a request a filter paused (after FILTER_PAUSE)."""
        cdef ProxyStream s = self.live()
        if s.paused:
            s.resume_filters()

    cdef void await_filter(self, HttpFilter f, object aw):
        self.task = _asyncio.ensure_future(aw)
        self.task.add_done_callback(lambda t, f=f: self._awaited(f, t))

    def _awaited(self, HttpFilter f, task):
        cdef ProxyStream s = self.s
        self.task = None
        if s is None or not s.paused:
            return          # the request ended while the filter waited
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            s.paused = False
            s.filter_error(f, exc)
            return
        r = task.result()
        if s.replied:
            s.paused = False
            return
        if r == FILTER_STOP:
            s.paused = False
            s.filter_error(f, RuntimeError("filter returned STOP without a response"))
            return
        if r == FILTER_PAUSE:
            return          # it will call resume() itself
        s.resume_filters()

    cdef void invalidate(self):
        self.s = None
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def __repr__(self):
        if self.s is None:
            return "<Request (over)>"
        return f"<Request {self.method} {self.path}>"
