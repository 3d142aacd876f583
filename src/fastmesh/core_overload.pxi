# core_overload.pxi: overload protection for downstream connections, asked
# once per accepted connection (never per request):
#
#   - a listener's max_connections (Envoy's connection_limit filter):
#     the connection over the limit is closed at once, downstream_cx_overflow;
#   - overload_manager.global_downstream_max_connections (Envoy's name):
#     the same over all listeners of the worker, downstream_global_cx_overflow;
#   - the descriptor limit: the kernel gives a new socket the lowest free
#     descriptor, so a new fd numbered N proves N descriptors in use. At the
#     mark (overload_manager.file_descriptor_threshold of RLIMIT_NOFILE) the
#     worker closes idle keep-alive connections (between requests, or silent
#     since accept) oldest first, down to a lower mark; if none is idle, the
#     new connection is refused (downstream_cx_overload_reject), so that the
#     requests in flight keep the descriptors their upstream connections need,
#     and accepting stops (the runtime closes its servers but keeps the
#     listening sockets, so new connections wait in the kernel's backlog);
#     every OV_RECHECK seconds the worker counts its descriptors, sheds what
#     became idle, and accepts again once below the lower mark.
#     Without this, silent clients could hold every descriptor and every
#     honest connection would fail (libuv accepts and closes on EMFILE).
#
# Each limit logs one line at most every OV_LOG_INTERVAL seconds, with the
# number of hits since the previous line.

import logging as _logging
import os as _os

cdef object _ov_log = _logging.getLogger("fastmesh.overload")
cdef double OV_LOG_INTERVAL = 10.0
cdef double OV_RECHECK = 0.1


cdef void overload_log(Worker w, int which, str what):
    cdef double now = mono_now()
    w.ov_unlogged[which] += 1
    if w.ov_logged[which] == 0 or now - w.ov_logged[which] >= OV_LOG_INTERVAL:
        _ov_log.warning("%s (%d time(s) since the last report)", what, w.ov_unlogged[which])
        w.ov_logged[which] = now
        w.ov_unlogged[which] = 0


cdef bint admit_downstream(Conn c, ListenerState lst):
    # Called by connection_made once the connection is counted and linked.
    # False: it was refused (aborted; connection_lost will follow).
    cdef Worker w = lst.worker
    cdef Py_ssize_t lim = lst.conf.max_connections
    if lim > 0 and lst.st[DOWNSTREAM_CX_ACTIVE] > lim:
        lst.st[DOWNSTREAM_CX_OVERFLOW] += 1
        overload_log(w, OV_LOG_LISTENER,
                     f"listener {lst.name}: max_connections ({lim}) reached, connection refused")
        c.closed = True
        c.transport.abort()
        return False
    if w.ov_max_cx > 0 and w.cx_active() > w.ov_max_cx:
        lst.st[DOWNSTREAM_GLOBAL_CX_OVERFLOW] += 1
        overload_log(w, OV_LOG_GLOBAL,
                     f"global_downstream_max_connections ({w.ov_max_cx}) reached, "
                     f"connection refused on listener {lst.name}")
        c.closed = True
        c.transport.abort()
        return False
    if c.fd >= w.ov_fd_high and shed_idle(w, c, c.fd - w.ov_fd_low + 1) == 0:
        lst.st[DOWNSTREAM_CX_OVERLOAD_REJECT] += 1
        overload_log(w, OV_LOG_FD,
                     f"{c.fd + 1} of {w.ov_fd_limit} file descriptors in use and no idle "
                     f"connection to close: connection refused on listener {lst.name}")
        c.closed = True
        c.transport.abort()
        stop_accepting(w)
        return False
    return True


cdef void stop_accepting(Worker w):
    if w.ov_paused or w.accept_ctl is None or w.draining:
        return
    w.ov_paused = True
    w.st[OVERLOAD_STOP_ACCEPTING] = 1
    _ov_log.warning("file descriptors near the limit (%d): accepting stopped", w.ov_fd_limit)
    w.accept_ctl(False)
    w.loop.call_later(OV_RECHECK, _ov_recheck, w)


def _ov_recheck(Worker w):
    # While accepting is stopped: resume below the lower mark, else close
    # what became idle since and look again.
    cdef long n
    if not w.ov_paused:
        return
    try:
        n = len(_os.listdir("/proc/self/fd")) - 1     # minus listdir's own
    except OSError:
        n = 0                                         # cannot tell: resume
    if n < w.ov_fd_low or w.draining:
        w.ov_paused = False
        w.st[OVERLOAD_STOP_ACCEPTING] = 0
        if not w.draining:
            _ov_log.warning("%d file descriptors in use (limit %d): accepting again",
                            n, w.ov_fd_limit)
            w.accept_ctl(True)
        return
    shed_idle(w, None, n - w.ov_fd_low + 1)
    w.loop.call_later(OV_RECHECK, _ov_recheck, w)


cdef int shed_idle(Worker w, Conn keep, int want):
    # Close up to `want` idle downstream connections other than `keep`,
    # oldest first (the list is newest first: walk to its tail, then back).
    # Returns how many.
    cdef Conn c = w.conns
    cdef Conn prev
    cdef int n = 0
    if c is None:
        return 0
    while c.next is not None:
        c = c.next
    while c is not None and n < want:
        prev = c.prev
        if c is not keep and c.shed_idle():
            n += 1
        c = prev
    if n:
        overload_log(w, OV_LOG_FD,
                     f"file descriptors near the limit ({w.ov_fd_limit}): closed {n} idle "
                     f"connection(s), oldest first")
    return n
