# cython: language_level=3
"""A per-worker hierarchical timer wheel with millisecond ticks.

Connection deadlines (idle, request head, response, connect, pool idle) are
re-armed on every bit of progress, so arming must cost a few field writes:
no allocation, no heap, no loop handle per timer. Entries are intrusive
(``Conn`` inherits from ``TimerEntry``), arm and cancel are O(1), and the wheel
keeps one loop handle for its earliest non-empty slot, none when idle.

Levels (tick = 1 ms), as in Varghese & Lauck's hashed hierarchical wheels and
the classic Linux timer wheel:

    level 0   256 slots x 1 ms          (the next 256 ms, exact)
    level 1    64 slots x 256 ms        (up to 16.4 s)
    level 2    64 slots x 16.384 s      (up to 17.5 min)
    level 3    64 slots x 17.5 min      (up to 18.6 h)
    overflow   one list, looked at every 18.6 h

An entry in a coarse slot is moved down ("cascaded") when the slot's range
begins, so every timer fires in its own millisecond, never early.

Lazy re-arm: moving a deadline later leaves the entry in its slot and only
writes ``t_due``; when the slot comes up, an entry whose ``t_due`` is still in
the future is re-inserted instead of fired. A deadline moved earlier than its
slot is moved. See docs/timers.md for the measured costs.
"""
cimport cython
from libc.stdint cimport int64_t, uint64_t, INT64_MAX

import time as _time


cdef extern from * nogil:
    int ctz64 "__builtin_ctzll" (unsigned long long x)


cdef enum:
    # Slot indices in TimerWheel.slots: level 0, then 64 per coarser level.
    L1_BASE = 256
    L2_BASE = 320
    L3_BASE = 384
    OVERFLOW = 448
    N_SLOTS = 449
    # log2 of one slot's span, per level.
    L1_SHIFT = 8
    L2_SHIFT = 14
    L3_SHIFT = 20
    TOP_SHIFT = 26        # level 3 covers deltas below 2**26 ms
    # Occupancy words in TimerWheel.bits.
    W_L1 = 4
    W_OVERFLOW = 7
    W_DETACHED = 8        # firing/spare lists: no real bit



cdef class TimerEntry:
    """Something with a deadline: the base of every connection.

    The wheel links armed entries through t_prev/t_next; a subclass overrides
    on_timer(kind).
    """

    cdef void on_timer(self, int kind):
        pass


@cython.final
cdef class _Slot(TimerEntry):
    pass


cdef _Slot new_slot(int word, uint64_t mask):
    cdef _Slot s = _Slot.__new__(_Slot)
    s.t_prev = s
    s.t_next = s
    s.word = word
    s.mask = mask
    return s


@cython.final
cdef class TimerWheel:
    """The timers of one worker (one event loop)."""

    def __cinit__(self, loop):
        cdef int i
        self.loop = loop
        self.slots = []
        for i in range(L1_BASE):
            self.slots.append(new_slot(i >> 6, (<uint64_t>1) << (i & 63)))
        for i in range(L1_BASE, OVERFLOW):
            self.slots.append(new_slot(W_L1 + (i - L1_BASE) // 64,
                                       (<uint64_t>1) << ((i - L1_BASE) & 63)))
        self.slots.append(new_slot(W_OVERFLOW, 1))
        for i in range(9):
            self.bits[i] = 0
        self.firing = new_slot(W_DETACHED, 0)
        self.spare = new_slot(W_DETACHED, 0)
        self.offset_ms = 0
        self.cur = self.now_ms()
        self.armed = 0
        self.handle = None
        self.wake_tick = INT64_MAX
        self.wake_cb = self._wake
        self.closed = False

    # --- the C API -----------------------------------------------------------

    cdef int64_t now_ms(self) noexcept:
        return mono_ns() // 1000000 + self.offset_ms

    cdef void arm(self, TimerEntry e, int kind, double delay):
        cdef int64_t now_ns
        if delay <= 0:
            self.cancel(e)
            return
        if delay > MAX_DELAY:
            delay = MAX_DELAY
        now_ns = mono_ns() + self.offset_ms * 1000000
        # The first whole ms strictly after now + delay: the wheel fires a
        # tick once the clock reads it, so the entry can never fire early.
        self.arm_at(e, kind, (now_ns + <int64_t>(delay * 1e9)) // 1000000 + 1,
                    now_ns // 1000000)

    cdef void arm_at(self, TimerEntry e, int kind, int64_t due, int64_t now):
        if self.closed:
            return
        if e.t_wheel is self:
            if e.t_slot_due <= due:
                # Lazy re-arm, the common case (progress on a connection
                # pushes its deadline later): the slot comes up no later than
                # the new deadline and fire() re-inserts the entry then.
                e.t_due = due
                e.t_kind = kind
                return
            self.unlink(e)           # earlier than its slot: move it
        else:
            if e.t_wheel is not None:
                e.t_wheel.cancel(e)
            e.t_wheel = self
            self.armed += 1
        e.t_due = due
        e.t_kind = kind
        if self.cur < now < self.wake_tick:
            # No slot comes up before the pending wake, so the ticks up to
            # now are all empty: skipping them lets this entry land in its
            # exact level-0 slot rather than cascade down from a coarse one.
            self.cur = now
        self.insert(e)
        if e.t_slot_due < self.wake_tick:
            self.set_wake(e.t_slot_due)

    cdef void cancel(self, TimerEntry e) noexcept:
        # The loop handle is left alone: if nothing else is armed it fires
        # once, finds nothing and is not renewed. Cancelling it here would cost
        # a Python call on the path that runs per request.
        if e.t_wheel is not self:
            if e.t_wheel is not None:
                e.t_wheel.cancel(e)
            return
        self.unlink(e)
        e.t_wheel = None
        e.t_due = 0
        e.t_slot_due = 0
        self.armed -= 1

    cdef void close(self):
        cdef _Slot s
        cdef TimerEntry e
        self.closed = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.wake_tick = INT64_MAX
        for s in self.slots + [self.firing, self.spare]:
            while s.t_next is not s:
                e = s.t_next
                self.cancel(e)

    # --- the lists -----------------------------------------------------------

    cdef void insert(self, TimerEntry e) noexcept:
        # Into the slot for e.t_due relative to cur (the level follows from
        # how far ahead it is), at the tail: entries of one tick fire in the
        # order they were armed.
        cdef int64_t t = e.t_due
        cdef int64_t delta, sd
        cdef int idx
        cdef _Slot s
        cdef TimerEntry tail
        if t < self.cur:
            t = self.cur
        delta = t - self.cur
        if delta < (1 << L1_SHIFT):
            idx = t & 255
            sd = t
        elif delta < (1 << L2_SHIFT):
            idx = L1_BASE + ((t >> L1_SHIFT) & 63)
            sd = (t >> L1_SHIFT) << L1_SHIFT
        elif delta < (1 << L3_SHIFT):
            idx = L2_BASE + ((t >> L2_SHIFT) & 63)
            sd = (t >> L2_SHIFT) << L2_SHIFT
        elif delta < (1 << TOP_SHIFT):
            idx = L3_BASE + ((t >> L3_SHIFT) & 63)
            sd = (t >> L3_SHIFT) << L3_SHIFT
        else:
            idx = OVERFLOW
            sd = ((self.cur >> TOP_SHIFT) + 1) << TOP_SHIFT
        e.t_slot_due = sd
        s = <_Slot>self.slots[idx]
        tail = s.t_prev
        e.t_prev = tail
        e.t_next = s
        tail.t_next = e
        s.t_prev = e
        self.bits[s.word] |= s.mask

    cdef void unlink(self, TimerEntry e) noexcept:
        cdef TimerEntry p = e.t_prev
        cdef TimerEntry n = e.t_next
        p.t_next = n
        n.t_prev = p
        if p is n:
            # Only the sentinel is left: the slot is empty.
            self.bits[(<_Slot>p).word] &= ~(<_Slot>p).mask
        e.t_prev = None
        e.t_next = None

    cdef void detach(self, _Slot s, _Slot into) noexcept:
        # Move s's whole list to the (empty) sentinel `into`, in O(1).
        cdef TimerEntry first = s.t_next
        cdef TimerEntry last = s.t_prev
        if first is s:
            return
        into.t_next = first
        first.t_prev = into
        into.t_prev = last
        last.t_next = into
        s.t_next = s
        s.t_prev = s
        self.bits[s.word] &= ~s.mask

    # --- expiry --------------------------------------------------------------

    cdef int64_t next_tick(self) noexcept:
        # The tick of the earliest non-empty slot, from the occupancy bitmaps:
        # a few word tests and ctz, never a walk over slots or entries.
        cdef int64_t best = INT64_MAX, cur = self.cur, blk, t
        cdef int i0 = cur & 255, w = i0 >> 6, b = i0 & 63, k, ww, r, level, shift
        cdef uint64_t m
        # Level 0: slot i holds the tick in [cur, cur + 256) that is i mod 256.
        m = self.bits[w] & ((~(<uint64_t>0)) << b)
        if m:
            best = cur + (((w << 6) + ctz64(m) - i0) & 255)
        else:
            for k in range(1, 5):
                ww = (w + k) & 3
                m = self.bits[ww]
                if k == 4:
                    m &= ((<uint64_t>1) << b) - 1
                if m:
                    best = cur + (((ww << 6) + ctz64(m) - i0) & 255)
                    break
        # Level L: slot j holds the block (of 2**shift ticks) that is j mod 64
        # among the 64 blocks starting at or after cur.
        for level in range(1, 4):
            m = self.bits[W_L1 + level - 1]
            if m:
                shift = L1_SHIFT + 6 * (level - 1)
                blk = (cur + ((<int64_t>1) << shift) - 1) >> shift
                r = blk & 63
                if r:
                    m = (m >> r) | (m << (64 - r))
                t = (blk + ctz64(m)) << shift
                if t < best:
                    best = t
        if self.bits[W_OVERFLOW]:
            t = ((cur + ((<int64_t>1) << TOP_SHIFT) - 1) >> TOP_SHIFT) << TOP_SHIFT
            if t < best:
                best = t
        return best

    cdef void expire(self, int64_t now):
        # Process, in order, every non-empty slot whose tick is <= now,
        # jumping over empty ticks.
        cdef int64_t t
        while self.armed:
            t = self.next_tick()
            if t > now:
                break
            self.run_tick(t)
        if self.cur <= now:
            self.cur = now + 1

    cdef void run_tick(self, int64_t t):
        cdef int i
        cdef TimerEntry e
        self.cur = t
        # Coarse slots whose range starts at t come down first (top level
        # first: an entry may go down several levels), so that entries due at
        # t itself are in the level-0 slot before it fires.
        if (t & (((<int64_t>1) << TOP_SHIFT) - 1)) == 0:
            self.cascade(OVERFLOW)
        if (t & (((<int64_t>1) << L3_SHIFT) - 1)) == 0:
            self.cascade(L3_BASE + ((t >> L3_SHIFT) & 63))
        if (t & (((<int64_t>1) << L2_SHIFT) - 1)) == 0:
            self.cascade(L2_BASE + ((t >> L2_SHIFT) & 63))
        if (t & 255) == 0:
            self.cascade(L1_BASE + ((t >> L1_SHIFT) & 63))
        self.cur = t + 1
        self.fire(t)

    cdef void cascade(self, int idx) noexcept:
        # Re-insert relative to cur == the slot's first tick: they land in
        # finer levels (or, re-armed later meanwhile, wherever t_due says).
        # Detached first: an overflow entry may go back to the overflow list.
        cdef _Slot sp = self.spare
        cdef TimerEntry e
        self.detach(<_Slot>self.slots[idx], sp)
        while sp.t_next is not sp:
            e = sp.t_next
            self.unlink(e)
            self.insert(e)

    cdef void fire(self, int64_t t):
        cdef _Slot f = self.firing
        cdef TimerEntry e
        cdef int kind
        # Detached, because a callback may arm something for t + 256, which
        # is this very slot again.
        self.detach(<_Slot>self.slots[t & 255], f)
        try:
            while f.t_next is not f:
                e = f.t_next
                self.unlink(e)
                if e.t_due > t:
                    self.insert(e)        # re-armed later meanwhile (lazy)
                    continue
                kind = e.t_kind
                e.t_wheel = None
                e.t_due = 0
                e.t_slot_due = 0
                self.armed -= 1
                if kind == TIMER_DISARMED:
                    continue              # disarmed lazily (disarm_lazy): nothing to do
                try:
                    e.on_timer(kind)
                except Exception as exc:  # one failing entry must not stop the others
                    self.loop.call_exception_handler({
                        "message": "fastmesh: timer callback failed",
                        "exception": exc,
                        "timer": e,
                    })
        finally:
            # Only on a BaseException (KeyboardInterrupt...): what is left
            # fires on the next tick instead of being lost.
            while f.t_next is not f:
                e = f.t_next
                self.unlink(e)
                self.insert(e)

    # --- the loop handle ----------------------------------------------------

    cdef void set_wake(self, int64_t tick):
        # One handle, for the earliest non-empty slot. libuv's timer fires
        # when uv_now (ms, floored, refreshed by uvloop when the timer
        # starts) reaches now_ms + delay, i.e. exactly at `tick`; an early
        # wake (stdlib asyncio) only finds nothing due and re-arms.
        if self.handle is not None:
            if tick == self.wake_tick:
                return
            self.handle.cancel()
            self.handle = None
        self.wake_tick = tick
        if tick == INT64_MAX:
            return
        tick -= self.now_ms()
        self.handle = self.loop.call_later(tick * 0.001 if tick > 0 else 0, self.wake_cb)

    def _wake(self):
        self.handle = None
        self.run(self.now_ms())

    cdef void run(self, int64_t now):
        cdef int64_t t
        if self.wake_tick == -1:
            return                   # re-entered from a callback
        self.wake_tick = -1          # arm() leaves the handle to us meanwhile
        try:
            self.expire(now)
        finally:
            self.wake_tick = INT64_MAX
            if self.handle is not None:
                self.handle.cancel()
                self.handle = None
            if self.armed and not self.closed:
                self.set_wake(self.next_tick())

    # --- Python API (control side, tests, benchmarks) -------------------------

    def __init__(self, loop):
        pass

    def arm_py(self, TimerEntry e, int kind, double delay):
        self.arm(e, kind, delay)

    def cancel_py(self, TimerEntry e):
        self.cancel(e)

    def arm_lazy_py(self, TimerEntry e, int kind, double delay):
        """arm_lazy() (True: taken) for tests."""
        return self.arm_lazy(e, kind, delay)

    def disarm_lazy_py(self, TimerEntry e):
        self.disarm_lazy(e)

    def now_ms_py(self):
        return self.now_ms()

    def close_py(self):
        self.close()

    def _arm_at(self, TimerEntry e, int kind, int64_t due):
        """Test hook: arm for tick `due` (ms on the wheel's clock)."""
        self.arm_at(e, kind, due, self.now_ms())

    def _advance(self, int64_t now):
        """Test hook: run the wheel as if its clock read `now` (ms), then move
        its clock so that it reads at least `now` from here on."""
        cdef int64_t d = now - mono_ns() // 1000000
        if d > self.offset_ms:
            self.offset_ms = d
        self.run(now)

    def _next_tick(self):
        """Test hook: the tick of the earliest non-empty slot, None if none."""
        cdef int64_t t = self.next_tick()
        return None if t == INT64_MAX else t

    @property
    def wake_at(self):
        """The tick the loop handle wakes the wheel at, None without one."""
        return None if self.handle is None else self.wake_tick


cdef class PyTimer(TimerEntry):
    """A timer for tests: records (kind, time.monotonic()) per firing in
    `fired` and then calls `callback(timer, kind)` if set."""
    cdef public list fired
    cdef public object callback

    def __init__(self, callback=None):
        self.fired = []
        self.callback = callback

    cdef void on_timer(self, int kind):
        self.fired.append((kind, _time.monotonic()))
        if self.callback is not None:
            self.callback(self, kind)

    @property
    def armed(self):
        return self.t_wheel is not None

    @property
    def due(self):
        return self.t_due

    @property
    def slot_due(self):
        return self.t_slot_due

    @property
    def kind(self):
        return self.t_kind


# --- benchmark hooks (perf/bench_timers.py): C loops, so that the numbers are
# what a connection pays, not the cost of a Python call ------------------------

def _bench_arm_cancel(TimerWheel w, TimerEntry e, long loops, double delay):
    cdef long i
    cdef int64_t t0 = mono_ns()
    for i in range(loops):
        w.arm(e, 1, delay)
        w.cancel(e)
    return (mono_ns() - t0) * 1e-9


def _bench_rearm(TimerWheel w, TimerEntry e, long loops, double delay):
    # The entry stays armed; every call pushes its deadline later (the
    # per-body-chunk case): the lazy path.
    cdef long i
    cdef int64_t t0 = mono_ns()
    for i in range(loops):
        w.arm(e, 1, delay)
    t0 = mono_ns() - t0
    w.cancel(e)
    return t0 * 1e-9


def _bench_rearm_earlier(TimerWheel w, TimerEntry e, long loops):
    # Alternating a long and a short deadline: every short one is a move.
    cdef long i
    cdef int64_t t0 = mono_ns()
    for i in range(loops):
        w.arm(e, 1, 60.0)
        w.arm(e, 1, 0.05)
    t0 = mono_ns() - t0
    w.cancel(e)
    return t0 * 1e-9


cdef class _OldConn:
    # What core_conn.pxi's Conn did before the wheel, for the baseline.
    cdef _OldConn next
    cdef double deadline
    cdef int deadline_kind


def _bench_old_set_deadline(long loops, double delay):
    cdef _OldConn c = _OldConn()
    cdef long i
    cdef int64_t t0 = mono_ns()
    for i in range(loops):
        c.deadline = mono_ns() * 1e-9 + delay
        c.deadline_kind = 1
    return (mono_ns() - t0) * 1e-9


def _bench_old_tick(long n, long loops):
    # The 100 ms tick of the pre-wheel Worker._tick walking n connections,
    # none due.
    cdef _OldConn head = None, c
    cdef long i
    cdef double now
    cdef int64_t t0
    for i in range(n):
        c = _OldConn()
        c.deadline = 1e12
        c.deadline_kind = 1
        c.next = head
        head = c
    t0 = mono_ns()
    for i in range(loops):
        now = mono_ns() * 1e-9
        c = head
        while c is not None:
            if c.deadline_kind != 0 and c.deadline <= now:
                c.deadline_kind = 0
            c = c.next
    return (mono_ns() - t0) * 1e-9


def _bench_fire_all(TimerWheel w, list entries, long loops, int64_t span):
    # Arm every entry at a pseudo-random tick within `span` ms, then run the
    # wheel to the end of the span; only the run is timed: cascades, lazy
    # checks and firing (TimerEntry's no-op on_timer) for len(entries).
    cdef uint64_t x = 88172645463325252
    cdef int64_t now, total = 0, t0
    cdef long i
    cdef TimerEntry e
    for i in range(loops):
        # The wheel's own time, which the previous run moved past the clock.
        now = w.now_ms()
        if now < w.cur:
            now = w.cur
        for e in entries:
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            w.arm_at(e, 1, now + 1 + <int64_t>(x % <uint64_t>span), now)
        t0 = mono_ns()
        w.run(now + span)
        total += mono_ns() - t0
    return total * 1e-9


def _bench_expire_idle(TimerWheel w, long loops):
    # A wake that finds nothing due, whatever is armed: the bitmap search.
    cdef long i
    cdef int64_t t0 = mono_ns()
    for i in range(loops):
        w.expire(w.now_ms())
    return (mono_ns() - t0) * 1e-9
