# core_worker.pxd: declarations of core_worker.pxi (see _core.pxd)

cdef enum:
    # Requests in flight in a worker before it batches (set_batch_window).
    BATCH_MIN_ACTIVE = 32

cdef class Worker:
    cdef readonly object loop
    cdef readonly Snapshot snapshot
    cdef readonly dict listeners        # name -> ListenerState
    cdef readonly dict clusters         # name -> ClusterState (kept across snapshots)
    cdef BufferPool bufpool
    cdef readonly StatsRegistry registry  # every block and histogram (core_counters.pxi)
    cdef readonly StatsBlock wstats     # the worker's own block (prefix "")
    cdef int64_t* st                    # wstats.v
    cdef list ds_blocks                 # the listeners' blocks (rq_active)
    cdef Conn conns                     # every live connection (drain, close_all, counts)
    cdef readonly TimerWheel wheel      # every connection deadline (Conn.set_deadline)
    cdef readonly bint draining
    cdef list dirty                     # Conns whose flush_later waits for flush_dirty()
    cdef bint flush_scheduled
    # batching under load (set_batch_window; docs/design.md)
    cdef double batch_window            # seconds, 0 = off
    cdef bint batching                  # the _batch_round callback chain is running
    cdef long batch_activity            # defer_flush calls since the last round
    cdef double batch_woke              # when the last round ended
    # overload protection (core_overload.pxi)
    cdef int ov_fd_high                 # a new socket's fd at or above this: act (INT_MAX: off)
    cdef int ov_fd_low                  # shed idle connections down to this fd count
    cdef long ov_max_cx                 # global_downstream_max_connections (0: none)
    cdef readonly int ov_fd_limit       # RLIMIT_NOFILE's soft limit when set_overload ran
    cdef double ov_logged[4]            # when each limit was last logged (OV_LOG_*)
    cdef long ov_unlogged[4]            # hits since then
    cdef readonly bint ov_paused        # accepting stopped (the descriptor mark)
    cdef object accept_ctl              # the runtime's stop/resume accepting: fn(accepting)
    cdef public bint istio              # Istio's standard metrics on (core_istio.pxi)
    cdef dict istio_local               # ... their histograms of requests no cluster served

    cdef void defer_flush(self, Conn c)
    cdef void flush_dirty(self)
    cdef StatsBlock listener_block(self, str name)
    cdef long long rq_active(self)
    cdef long long cx_active(self)
