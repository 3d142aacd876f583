# core_overload.pxd: declarations of core_overload.pxi (see _core.pxd)

cdef enum:  # Worker.ov_logged / ov_unlogged: one rate-limited log line per limit
    OV_LOG_LISTENER = 0
    OV_LOG_GLOBAL = 1
    OV_LOG_FD = 2
    OV_LOG_FIRST_BYTE = 3

cdef bint admit_downstream(Conn c, ListenerState lst)
cdef int shed_idle(Worker w, Conn keep, int want)
cdef void stop_accepting(Worker w)
cdef void overload_log(Worker w, int which, str what)
