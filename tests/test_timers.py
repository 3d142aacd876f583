"""The timer wheel (fastmesh._timers): never early, ordered, cancel, lazy
re-arm, cascades through every level, exceptions, the single loop handle.

Real-time tests run on a real event loop (uvloop, and stdlib asyncio as a
differential check of the wake logic) and wait on futures with a deadline.
Cascade tests drive the wheel with an explicit clock (`_advance(now_ms)`),
so a 70 s or 19 h timer is checked to the millisecond without waiting.
"""
import asyncio
import random
import time

import pytest
import uvloop

from fastmesh._timers import PyTimer, TimerEntry, TimerWheel

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
DEADLINE = 5.0          # no test waits longer than this for anything


class Timer(PyTimer):
    """A PyTimer that takes attributes (the tests note what they expect)."""


@pytest.fixture(params=sorted(LOOPS))
def run(request):
    """run(coro_fn) runs coro_fn(loop, wheel) on a fresh loop with a fresh
    wheel, bounded by DEADLINE, and returns its result."""
    loop = LOOPS[request.param]()
    errors = []
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))

    def run(fn, expect_errors=False):
        wheel = TimerWheel(loop)
        try:
            result = loop.run_until_complete(asyncio.wait_for(fn(loop, wheel), DEADLINE * 2))
        finally:
            wheel.close_py()
        if not expect_errors:
            assert errors == []
        return result, errors

    yield run
    loop.close()


def waiter(loop, n=1):
    """A callback for PyTimer that resolves a future after n firings (of any
    timers sharing it)."""
    fut = loop.create_future()
    count = [0]

    def cb(timer, kind):
        count[0] += 1
        if count[0] == n and not fut.done():
            fut.set_result(time.monotonic())

    return fut, cb


async def until(pred):
    # Polls a condition with a deadline (for states without an event).
    end = time.monotonic() + DEADLINE
    while not pred():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.002)


# ------------------------------------------------------------ real time


def test_accuracy_20ms_never_early(run):
    async def main(loop, w):
        out = []
        for _ in range(5):
            fut, cb = waiter(loop)
            t = PyTimer(cb)
            t0 = time.monotonic()
            w.arm_py(t, 7, 0.020)
            fired = await asyncio.wait_for(fut, DEADLINE)
            assert t.fired[0][0] == 7
            out.append(fired - t0)
        return out

    elapsed, _ = run(main)
    for e in elapsed:
        assert 0.020 <= e < 0.020 + 0.200, elapsed


def test_many_random_timers_fire_in_deadline_order_never_early(run):
    rnd = random.Random(1234)

    async def main(loop, w):
        n = 300
        fut, cb = waiter(loop, n)
        order = []
        timers = []
        for i in range(n):
            # up to 600 ms: beyond level 0 (256 ms) too, so real cascades happen
            delay = rnd.choice([0.001, 0.002, 0.01]) if i % 10 == 0 else rnd.uniform(0.001, 0.6)
            t = Timer(lambda tm, k: (order.append(tm), cb(tm, k)))
            t.t0 = time.monotonic()
            t.delay = delay
            w.arm_py(t, i, delay)
            t.want = t.due
            timers.append(t)
        await asyncio.wait_for(fut, DEADLINE)
        return timers, order

    (timers, order), _ = run(main)
    assert len(order) == len(timers) and set(map(id, order)) == set(map(id, timers))
    for t in timers:
        assert len(t.fired) == 1
        assert t.fired[0][1] - t.t0 >= t.delay, (t.delay, t.fired[0][1] - t.t0)
    dues = [t.want for t in order]
    assert dues == sorted(dues)


def test_cancel_prevents_firing(run):
    async def main(loop, w):
        fut, cb = waiter(loop)
        a, b = PyTimer(), PyTimer(cb)
        w.arm_py(a, 1, 0.02)
        w.arm_py(b, 2, 0.06)
        w.cancel_py(a)
        assert not a.armed and a.due == 0 and w.armed == 1
        w.cancel_py(a)                       # twice: nothing happens
        w.arm_py(a, 1, 0)                    # delay <= 0 also cancels (not armed: no-op)
        await asyncio.wait_for(fut, DEADLINE)
        return a, b

    (a, b), _ = run(main)
    assert a.fired == [] and len(b.fired) == 1


def test_arm_with_non_positive_delay_cancels(run):
    async def main(loop, w):
        fut, cb = waiter(loop)
        a, b = PyTimer(), PyTimer(cb)
        w.arm_py(a, 1, 0.02)
        w.arm_py(b, 2, 0.06)
        w.arm_py(a, 1, -1.0)
        assert not a.armed
        await asyncio.wait_for(fut, DEADLINE)
        return a

    a, _ = run(main)
    assert a.fired == []


def test_lazy_rearm_later_fires_at_new_time_not_old(run):
    async def main(loop, w):
        fut_a, cb_a = waiter(loop)
        fut_b, cb_b = waiter(loop)
        a, b = PyTimer(cb_a), PyTimer(cb_b)
        w.arm_py(a, 1, 0.03)
        slot = a.slot_due
        t0 = time.monotonic()
        w.arm_py(a, 9, 0.15)                 # later: a field write, same slot
        assert a.slot_due == slot and a.due > slot and a.kind == 9
        w.arm_py(b, 2, 0.06)                 # after a's old time
        await asyncio.wait_for(fut_b, DEADLINE)
        assert a.fired == []                 # its old slot came up: re-inserted
        assert a.armed
        fired = await asyncio.wait_for(fut_a, DEADLINE)
        return a, fired - t0

    (a, elapsed), _ = run(main)
    assert len(a.fired) == 1 and a.fired[0][0] == 9
    assert elapsed >= 0.15


def test_rearm_earlier_moves_and_fires_early_enough(run):
    async def main(loop, w):
        fut, cb = waiter(loop)
        a = PyTimer(cb)
        w.arm_py(a, 1, 30.0)
        slot = a.slot_due
        t0 = time.monotonic()
        w.arm_py(a, 2, 0.03)
        assert a.slot_due < slot and a.slot_due == a.due
        fired = await asyncio.wait_for(fut, DEADLINE)
        return a, fired - t0

    (a, elapsed), _ = run(main)
    assert a.fired[0][0] == 2
    assert 0.03 <= elapsed < 0.03 + 0.2


def test_exception_in_callback_does_not_stop_the_others(run):
    async def main(loop, w):
        fut, cb = waiter(loop, 2)

        def boom(tm, k):
            raise RuntimeError("boom")

        a, bad, c = PyTimer(cb), PyTimer(boom), PyTimer(cb)
        for t in (a, bad, c):                # all in the same millisecond slot
            w._arm_at(t, 1, w.now_ms_py() + 20)
        await asyncio.wait_for(fut, DEADLINE)
        # and the wheel still works afterwards
        fut2, cb2 = waiter(loop)
        d = PyTimer(cb2)
        w.arm_py(d, 1, 0.01)
        await asyncio.wait_for(fut2, DEADLINE)
        return a, bad, c, d

    (a, bad, c, d), errors = run(main, expect_errors=True)
    assert all(len(t.fired) == 1 for t in (a, bad, c, d))
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], RuntimeError)
    assert errors[0]["timer"] is bad


def test_callback_may_rearm_itself(run):
    async def main(loop, w):
        fut = loop.create_future()

        def again(tm, k):
            if len(tm.fired) < 4:
                w.arm_py(tm, k + 1, 0.01)
            else:
                fut.set_result(None)

        t = PyTimer(again)
        t0 = time.monotonic()
        w.arm_py(t, 1, 0.01)
        await asyncio.wait_for(fut, DEADLINE)
        return t, t0

    (t, t0), _ = run(main)
    assert [k for k, _ in t.fired] == [1, 2, 3, 4]
    prev = t0
    for _, at in t.fired:
        assert at - prev >= 0.01
        prev = at


def test_one_handle_only_while_armed(run):
    async def main(loop, w):
        assert w.handle is None and w.wake_at is None     # idle: nothing scheduled
        fut, cb = waiter(loop)
        a, b = PyTimer(), PyTimer(cb)
        w.arm_py(a, 1, 5.0)
        first = w.handle
        assert first is not None and w.wake_at == a.slot_due
        w.arm_py(b, 1, 0.02)                 # earlier than the pending wake
        assert w.wake_at == b.due and w.handle is not first
        assert first.cancelled()
        w.arm_py(a, 1, 6.0)                  # lazy: the handle is untouched
        assert w.wake_at == b.due
        await asyncio.wait_for(fut, DEADLINE)
        # a is still armed: one handle, for a's slot
        assert w.wake_at == w._next_tick() == a.slot_due
        w.cancel_py(a)
        assert w.armed == 0
        # cancel leaves the handle; arming and cancelling a short one then
        # lets the stale wake run once, find nothing and schedule nothing
        c = PyTimer()
        w.arm_py(c, 1, 0.01)
        w.cancel_py(c)
        await until(lambda: w.handle is None)
        assert w.wake_at is None and w._next_tick() is None and w.armed == 0
        return a, c

    (a, c), _ = run(main)
    assert a.fired == [] and c.fired == []


def test_close_cancels_the_handle_and_unarms(run):
    async def main(loop, w):
        a = PyTimer()
        w.arm_py(a, 1, 0.01)
        h = w.handle
        w.close_py()
        assert h.cancelled() and w.handle is None
        assert not a.armed and w.armed == 0
        w.arm_py(a, 1, 0.01)                 # a closed wheel arms nothing
        assert not a.armed and w.handle is None
        return a

    a, _ = run(main)
    assert a.fired == []


def test_plain_timer_entry_default_on_timer_is_a_noop(run):
    async def main(loop, w):
        fut, cb = waiter(loop)
        e = TimerEntry()
        w.arm_py(e, 1, 0.01)
        s = PyTimer(cb)
        w.arm_py(s, 1, 0.03)
        await asyncio.wait_for(fut, DEADLINE)
        return w.armed

    armed, _ = run(main)
    assert armed == 0


# ----------------------------------------------------- explicit clock


@pytest.fixture
def wheel():
    loop = uvloop.new_event_loop()
    w = TimerWheel(loop)
    yield w
    w.close_py()
    loop.close()


def test_cascade_2s_and_70s_to_the_millisecond(wheel):
    w = wheel
    now = w.now_ms_py()
    # A deadline on a coarse slot's own first tick sits in that slot exactly
    # (slot_due == due, no cascade to test): start from a tick where neither
    # deadline does (it failed about 1 run in 256 on the live clock).
    while (now + 2000) % 256 == 0 or (now + 70000) % 16384 == 0:
        now += 1
    w._advance(now)
    a, b = PyTimer(), PyTimer()
    w._arm_at(a, 1, now + 2000)              # level 1
    w._arm_at(b, 2, now + 70000)             # level 2
    assert a.slot_due < a.due and b.slot_due < b.due    # both in coarse slots
    w._advance(now + 1999)
    assert a.fired == [] and b.fired == []
    w._advance(now + 2000)
    assert [k for k, _ in a.fired] == [1] and b.fired == []
    w._advance(now + 69999)
    assert b.fired == [] and b.slot_due == now + 70000   # cascaded down to level 0
    w._advance(now + 70000)
    assert [k for k, _ in b.fired] == [2]
    assert w.armed == 0 and w._next_tick() is None


@pytest.mark.parametrize("delta", [1, 255, 256, 257, 16383, 16384, 16385, 1 << 20,
                                   (1 << 20) + 1, (1 << 26) - 1, 1 << 26, (1 << 26) + 7,
                                   3 * (1 << 26) + 12345])
def test_every_level_fires_exactly_at_its_tick(wheel, delta):
    w = wheel
    now = w.now_ms_py()
    t = PyTimer()
    w._arm_at(t, 1, now + delta)
    w._advance(now + delta - 1)
    assert t.fired == [] and t.armed
    w._advance(now + delta)
    assert len(t.fired) == 1 and not t.armed


def test_lazy_rearm_across_levels(wheel):
    w = wheel
    now = w.now_ms_py()
    t = PyTimer()
    w._arm_at(t, 1, now + 100)
    w._arm_at(t, 2, now + 100000)            # lazy: stays in the 100 ms slot
    assert t.slot_due == now + 100
    w._advance(now + 100)                    # slot comes up: re-inserted
    assert t.fired == [] and t.armed and t.slot_due > now + 100
    w._advance(now + 99999)
    assert t.fired == []
    w._advance(now + 100000)
    assert [k for k, _ in t.fired] == [2]


@pytest.mark.parametrize("seed", range(6))
def test_model(wheel, seed):
    """Random arms, re-arms (later and earlier), cancels and advances at
    every scale, against a model: an entry fires in the first advance whose
    target reaches its latest deadline, once, and the fires of one advance
    come in deadline order."""
    rnd = random.Random(seed)
    w = wheel
    step = [0]
    fires = []

    def record(tm, kind):
        fires.append((step[0], tm.ident, tm.expect))

    timers = []
    for i in range(60):
        t = Timer(record)
        t.ident = i
        t.expect = None
        timers.append(t)
    expected = {}                            # ident -> due (armed per the model)
    scales = [3, 300, 20000, 2000000, 200000000]
    for _ in range(1500):
        op = rnd.random()
        now = w.now_ms_py()
        if op < 0.55:
            t = rnd.choice(timers)
            due = now + 1 + rnd.randrange(rnd.choice(scales))
            w._arm_at(t, 1, due)
            t.expect = due
            expected[t.ident] = due
        elif op < 0.7:
            t = rnd.choice(timers)
            w.cancel_py(t)
            t.expect = None
            expected.pop(t.ident, None)
        else:
            step[0] += 1
            target = now + rnd.randrange(rnd.choice(scales))
            w._advance(target)
            mine = [f for f in fires if f[0] == step[0]]
            want = sorted(i for i, due in expected.items() if due <= target)
            assert sorted(i for _, i, _ in mine) == want
            dues = [d for _, _, d in mine]
            assert dues == sorted(dues)
            for i in want:
                del expected[i]
            assert w.armed == len(expected)
            for t in timers:
                assert t.armed == (t.ident in expected)
    assert len(fires) == len(set((s, i) for s, i, _ in fires))


def test_lazy_disarm_and_rearm(run):
    # The per-request paths a connection takes: disarm by forgetting the kind
    # (the entry stays in its slot and does not fire), then arm again later
    # than the slot (two field writes), which fires at the new deadline; an
    # earlier deadline is refused by the lazy path (arm() moves the entry).
    async def main(loop, w):
        fut, cb = waiter(loop)
        a, b = PyTimer(), PyTimer(cb)
        w.arm_py(a, 1, 0.02)
        w.disarm_lazy_py(a)
        assert a.armed                         # still in its slot...
        assert not w.arm_lazy_py(a, 2, 0.001)  # (earlier than its slot: not lazy)
        w.arm_py(b, 3, 0.06)
        await asyncio.wait_for(fut, DEADLINE)  # b fired at 60 ms
        assert a.fired == [] and not a.armed   # ...a's slot passed: dropped, not fired
        fut2, cb2 = waiter(loop)
        c = PyTimer(cb2)
        w.arm_py(c, 4, 0.02)
        t0 = time.monotonic()
        assert w.arm_lazy_py(c, 5, 0.05)       # later than its slot: lazy
        await asyncio.wait_for(fut2, DEADLINE)
        return c, time.monotonic() - t0

    (c, waited), _ = run(main)
    assert [k for k, _ in c.fired] == [5] and waited >= 0.05
