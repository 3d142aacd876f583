"""Fixtures for the live proxy tests: origins, TCP echo servers, proxies and
clients, all on 127.0.0.1 with ephemeral ports, all stopped at teardown.

At teardown every proxy started through `start_proxy` is checked for leaks:
once the test's clients are closed, no downstream connection or request may
stay active, and nothing may have been reported to the loop's exception
handler (an exception escaping a protocol callback).
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.harness import Client, ProxyThread  # noqa: E402
from support.origin import Origin, TcpEchoServer  # noqa: E402


@pytest.fixture
def make_origin():
    started = []

    def make(name="origin", **kw):
        o = Origin(name, **kw).start()
        started.append(o)
        return o

    yield make
    for o in started:
        o.stop()


@pytest.fixture
def origin(make_origin):
    return make_origin("origin")


@pytest.fixture
def tcp_echo():
    s = TcpEchoServer().start()
    yield s
    s.stop()


@pytest.fixture
def clients():
    """connect(address, **kw) -> Client; every client is closed at teardown."""
    made = []

    def connect(address, **kw):
        c = Client(address, **kw)
        made.append(c)
        return c

    connect.all = made
    yield connect
    for c in made:
        c.close()


@pytest.fixture
def start_proxy(clients, request):
    """start_proxy(config_dict) -> a running ProxyThread (stopped at teardown,
    after a leak check)."""
    proxies = []

    def start(cfg, **kw):
        p = ProxyThread(cfg, **kw).start()
        proxies.append(p)
        return p

    yield start
    for c in clients.all:
        c.close()
    problems = []
    for p in proxies:
        try:
            try:
                p.wait_idle(timeout=3.0)
            except AssertionError:
                st = p.stats()
                problems.append(f"leak: downstream_cx_active={st['downstream_cx_active']} "
                                f"downstream_rq_active={st['downstream_rq_active']}")
            errs = [(c.get("message"), repr(c.get("exception"))) for c in p.loop_errors]
            if errs:
                problems.append(f"loop exception handler was called: {errs}")
        finally:
            p.stop()
    failed = getattr(request.node, "rep_call", None)
    if problems and not (failed is not None and failed.failed):
        pytest.fail("; ".join(problems))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
