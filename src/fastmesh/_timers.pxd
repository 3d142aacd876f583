# The per-worker timer wheel (docs/timers.md): connection deadlines armed and
# cancelled in O(1) with no allocation, one loop handle per worker at most.
cimport cython
from libc.stdint cimport int64_t, uint64_t

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
