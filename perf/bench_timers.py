"""pyperf microbenchmark: the timer wheel (fastmesh._timers) against what it
replaced and against a loop handle per timer.

The wheel numbers come from C loops in _timers (the `_bench_*` hooks), so they
are what a connection pays per call from Cython, without a Python call.

  arm+cancel           arm a 30 s deadline, cancel it (10k others armed)
  lazy re-arm          push an armed deadline later (per body chunk)
  re-arm later+earlier one lazy re-arm to 60 s + one move back to 50 ms
  fire 10k             10k entries at random ticks within 60 s, run to the end:
                       cascades, lazy checks and on_timer calls, per 10k
  idle wake, 10k armed a wake with nothing due: the bitmap search
  Conn.set_deadline        the wired path in _core (a linked Conn on a Worker's
                           wheel): lazy push later (per read or body chunk), and
                           cancel + arm (per request)
Baselines in the same run:
  old set_deadline         Conn.set_deadline before the wheel (clock + two field
                           writes; a model kept in _timers)
  old tick, 10k            the 100 ms Worker._tick before the wheel, walking 10k
                           connections (same model)
  uvloop call_later+cancel a TimerHandle per timer (Python calls)

    python perf/bench_timers.py --fast -o /tmp/timers.json
"""
import pyperf
import uvloop

from fastmesh import _core, _timers
from fastmesh._timers import TimerEntry, TimerWheel

loop = uvloop.new_event_loop()
wheel = TimerWheel(loop)
# A populated wheel: 10k connections with deadlines between 30 s and 90 s.
population = [TimerEntry() for _ in range(10000)]
for i, e in enumerate(population):
    wheel.arm_py(e, 1, 30.0 + i * 0.006)
entry = TimerEntry()

fire_wheel = TimerWheel(loop)
fire_entries = [TimerEntry() for _ in range(10000)]

worker = _core.Worker(loop)


def arm_cancel(loops):
    return _timers._bench_arm_cancel(wheel, entry, loops, 30.0)


def lazy_rearm(loops):
    return _timers._bench_rearm(wheel, entry, loops, 30.0)


def rearm_later_earlier(loops):
    return _timers._bench_rearm_earlier(wheel, entry, loops)


def fire_10k(loops):
    return _timers._bench_fire_all(fire_wheel, fire_entries, loops, 60000)


def idle_wake(loops):
    return _timers._bench_expire_idle(wheel, loops)


def arm_cancel_py(loops):
    arm, cancel = wheel.arm_py, wheel.cancel_py
    e = entry
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        arm(e, 1, 30.0)
        cancel(e)
    return pyperf.perf_counter() - t0


def conn_set_deadline_lazy(loops):
    return _core._bench_set_deadline(worker, loops, 30.0, False)


def conn_set_deadline_cancel_arm(loops):
    return _core._bench_set_deadline(worker, loops, 30.0, True)


def old_set_deadline(loops):
    return _timers._bench_old_set_deadline(loops, 30.0)


def old_tick_10k(loops):
    return _timers._bench_old_tick(10000, loops)


def noop():
    pass


def uvloop_call_later_cancel(loops):
    call_later = loop.call_later
    t0 = pyperf.perf_counter()
    for _ in range(loops):
        call_later(30.0, noop).cancel()
    return pyperf.perf_counter() - t0


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.bench_time_func("timers: wheel arm+cancel (C, 10k armed)", arm_cancel)
    runner.bench_time_func("timers: wheel lazy re-arm (C)", lazy_rearm)
    runner.bench_time_func("timers: wheel re-arm later+earlier (lazy + move, C)", rearm_later_earlier)
    runner.bench_time_func("timers: wheel fire 10k over 60 s (per 10k)", fire_10k)
    runner.bench_time_func("timers: wheel idle wake, 10k armed (C)", idle_wake)
    runner.bench_time_func("timers: wheel arm_py+cancel_py (Python calls)", arm_cancel_py)
    runner.bench_time_func("timers: Conn.set_deadline lazy push (C, _core)", conn_set_deadline_lazy)
    runner.bench_time_func("timers: Conn.set_deadline cancel+arm (C, _core)",
                           conn_set_deadline_cancel_arm)
    runner.bench_time_func("timers: baseline old set_deadline (C)", old_set_deadline)
    runner.bench_time_func("timers: baseline old tick walking 10k conns", old_tick_10k)
    runner.bench_time_func("timers: baseline uvloop call_later+cancel", uvloop_call_later_cancel)
