# The per-worker timer wheel (docs/timers.md): connection deadlines armed and
# cancelled in O(1) with no allocation, one loop handle per worker at most.
cimport cython
from libc.stdint cimport int64_t, uint64_t

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int CLOCK_MONOTONIC

cdef enum:
    # Deadlines are clamped to this many seconds (~31 years): the ns
    # arithmetic stays far from int64 overflow.
    MAX_DELAY = 1000000000
    # t_kind of an entry disarmed lazily (disarm_lazy); callers' kinds are >= 0.
    TIMER_DISARMED = -1


cdef inline int64_t mono_ns() noexcept nogil:
    # vDSO: ~20 ns, no system call. Python's time.monotonic() and libuv's
    # loop time read the same clock.
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef class TimerWheel

cdef class TimerEntry:
    # Intrusive: the links live in the entry (a connection inherits from it),
    # so arming allocates nothing. Only the wheel writes these fields.
    cdef TimerEntry t_prev
    cdef TimerEntry t_next
    cdef TimerWheel t_wheel          # the wheel it is armed in, or None
    cdef int64_t t_due               # wanted expiry, in wheel ticks (ms), 0 = not armed
    cdef int64_t t_slot_due          # the tick of the slot it currently sits in
    cdef int t_kind                  # caller's meaning of the timer (opaque to the wheel)

    cdef void on_timer(self, int kind)
        # Called once when due (the entry is already unarmed, so it may re-arm
        # itself). Default: nothing. An exception goes to the loop's
        # exception handler; the wheel goes on.

@cython.final
cdef class _Slot(TimerEntry):
    # The sentinel of one slot's circular list. `word`/`mask` locate its
    # occupancy bit in TimerWheel.bits, so unlinking the last entry of a slot
    # clears the bit without knowing which slot the entry was in.
    cdef int word
    cdef uint64_t mask

@cython.final
cdef class TimerWheel:
    cdef object loop
    cdef list slots                  # _Slot sentinels: 256 ms slots, 3 x 64 coarser, overflow
    cdef uint64_t bits[9]            # occupancy: words 0-3 level 0, 4-6 levels 1-3,
                                     # 7 overflow, 8 the firing list (never read)
    cdef _Slot firing                # the slot being fired, detached (callbacks may
                                     # cancel or re-arm entries in it)
    cdef _Slot spare                 # a slot being cascaded, detached
    cdef int64_t cur                 # next tick to process: every tick < cur is done
    cdef readonly int64_t armed      # entries armed
    cdef readonly object handle      # the loop's TimerHandle for wake_tick, or None
    cdef int64_t wake_tick           # tick `handle` wakes us at; INT64_MAX: none;
                                     # -1 while expiring (arm() then leaves the handle alone)
    cdef object wake_cb              # bound self._wake, made once
    cdef int64_t offset_ms           # added to the clock (tests move time forward)
    cdef bint closed

    cdef void arm(self, TimerEntry e, int kind, double delay)   # seconds; <= 0 cancels
    cdef void cancel(self, TimerEntry e) noexcept

    # The two per-request paths, inlined into callers in other modules (a
    # connection arms and disarms several times per request): no call, no
    # loop handle, a clock read and field writes.
    cdef inline bint arm_lazy(self, TimerEntry e, int kind, double delay) noexcept:
        # arm()'s common case: e is armed here and the new deadline is no
        # earlier than its slot (progress pushes deadlines later), so the
        # slot still comes up in time and fire() re-inserts e then. False:
        # call arm().
        cdef int64_t due
        if e.t_wheel is not self or not 0 < delay <= MAX_DELAY:
            return False
        due = (mono_ns() + self.offset_ms * 1000000 + <int64_t>(delay * 1e9)) // 1000000 + 1
        if e.t_slot_due > due:
            return False
        e.t_due = due
        e.t_kind = kind
        return True

    cdef inline void disarm_lazy(self, TimerEntry e) noexcept:
        # Cancel by forgetting the kind: e stays in its slot, and when that
        # comes up it is dropped (or re-inserted, if armed again meanwhile
        # with a later deadline: the usual case, as a connection goes from
        # one request to the next); it does not fire.
        if e.t_wheel is self:
            e.t_kind = TIMER_DISARMED
    cdef int64_t now_ms(self) noexcept      # CLOCK_MONOTONIC in ms
    cdef void close(self)          # cancel the loop handle; entries stay unarmed

    cdef void arm_at(self, TimerEntry e, int kind, int64_t due, int64_t now)
    cdef void insert(self, TimerEntry e) noexcept
    cdef void unlink(self, TimerEntry e) noexcept
    cdef void detach(self, _Slot s, _Slot into) noexcept
    cdef int64_t next_tick(self) noexcept
    cdef void expire(self, int64_t now)
    cdef void run(self, int64_t now)
    cdef void run_tick(self, int64_t t)
    cdef void cascade(self, int idx) noexcept
    cdef void fire(self, int64_t t)
    cdef void set_wake(self, int64_t tick)
