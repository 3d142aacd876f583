"""Versioned, two-phase apply (docs/design.md): a reload reaches every worker
or none, the version shows in /stats and /config_dump, and the control
channel pairs answers by request id.

The process tests run the real `fastmesh run` with 2 workers (the helpers of
test_process.py); a worker is made to fail for a real cause, a lowered
RLIMIT_NOFILE, not through a hook in the code.
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import time

import pytest
from test_process import Fastmesh, write_config


def distinct_free_ports(n: int) -> list[int]:
    # free_port() closes its socket, so the kernel may hand the same port out
    # again: keep them all bound until all n are known.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()

from fastmesh.runtime.channel import Channel, answer
from fastmesh.runtime.supervisor import WorkerHandle

pytestmark = pytest.mark.timeout(60)


def wait_for(check, what: str, timeout: float = 15.0):
    """Poll `check()` until it returns something true, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def reload(fm: Fastmesh, outcome: str) -> dict:
    """SIGHUP, then wait until the supervisor counts one more reload with
    `outcome` ("ok" or "failed"); returns the stats after it."""
    before = fm.stats()
    fm.proc.send_signal(signal.SIGHUP)
    key = f"config_reloads_{outcome}"
    other = "config_reloads_failed" if outcome == "ok" else "config_reloads_ok"

    def done() -> dict | None:
        st = fm.stats()
        assert st[other] == before[other], f"the reload ended {other}: {st}"
        return st if st[key] == before[key] + 1 else None

    return wait_for(done, f"a reload ending {outcome}")


def bodies(fm: Fastmesh, n: int = 40) -> set[bytes]:
    """/version over `n` new connections: SO_REUSEPORT spreads them over
    both workers."""
    out = set()
    for _ in range(n):
        status, body, _ = fm.get("/version")
        assert status == 200
        out.add(body)
    return out


def dump(fm: Fastmesh) -> dict:
    return json.loads(fm.admin_get("/config_dump")[1])


def write_with_listeners(fm: Fastmesh, marker: str, ports: list[int]) -> None:
    """The test config with `marker` and one more listener per port."""
    write_config(fm.cfg, fm.port, fm.admin, fm.origin, marker=marker)
    extra = "".join(
        f"  - name: extra{i}\n"
        f"    address: 127.0.0.1\n"
        f"    port: {port}\n"
        f"    virtual_hosts:\n"
        f"      - name: all\n"
        f"        domains: [\"*\"]\n"
        f"        routes:\n"
        f"          - match: {{prefix: /}}\n"
        f"            direct_response: {{status: 200, body: \"extra\"}}\n"
        for i, port in enumerate(ports))
    text = fm.cfg.read_text()
    assert text.count("clusters:\n") == 1
    fm.cfg.write_text(text.replace("clusters:\n", extra + "clusters:\n"))


def accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def fastmesh(tmp_path, origin):
    fm = Fastmesh(tmp_path, origin.port, workers=2)
    yield fm
    fm.stop()


def test_a_good_reload_moves_every_worker_to_version_2(fastmesh):
    st = fastmesh.stats()
    assert (st["config_version"], st["worker_config_versions"]) == (1, [1, 1])
    assert dump(fastmesh)["version"] == 1
    assert bodies(fastmesh) == {b"v1"}

    write_config(fastmesh.cfg, fastmesh.port, fastmesh.admin, fastmesh.origin, marker="v2")
    st = reload(fastmesh, "ok")
    assert (st["config_version"], st["worker_config_versions"]) == (2, [2, 2])
    assert st["config_reload_error"] is None
    assert dump(fastmesh)["version"] == 2
    assert bodies(fastmesh) == {b"v2"}
    assert "config version 2 from" in fastmesh.output()


def test_one_worker_failing_to_prepare_leaves_every_worker_on_the_old_version(fastmesh):
    pid = fastmesh.stats()["worker_pids"][1]
    ports = distinct_free_ports(20)
    write_with_listeners(fastmesh, "v2", ports)
    # Worker 1 may open 10 more files: binding the 20 new listeners fails
    # there (EMFILE), and only there. The 10 leave room for the traffic below.
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")) + 10, hard))
    try:
        st = reload(fastmesh, "failed")
        assert "worker 1: " in st["config_reload_error"]
        assert "Too many open files" in st["config_reload_error"]
        assert "worker 0" not in st["config_reload_error"]
        assert (st["config_version"], st["worker_config_versions"]) == (1, [1, 1])
        d = dump(fastmesh)
        assert d["version"] == 1 and [lc["name"] for lc in d["listeners"]] == ["web"]
        out = fastmesh.output()
        assert "failed, every worker keeps serving version 1: worker 1: " in out
        # Both workers dropped what they had staged: worker 0 all 20 sockets,
        # worker 1 those it bound before running out of descriptors.
        assert [p for p in ports if accepts(p)] == []
        assert bodies(fastmesh) == {b"v1"}
        assert fastmesh.stats()["worker_pids"][1] == pid   # not crashed
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))

    st = reload(fastmesh, "ok")
    assert (st["config_version"], st["worker_config_versions"]) == (2, [2, 2])
    assert dump(fastmesh)["version"] == 2
    assert bodies(fastmesh) == {b"v2"}
    assert all(accepts(p) for p in ports)


def test_a_restarted_worker_gets_the_committed_version(fastmesh):
    write_config(fastmesh.cfg, fastmesh.port, fastmesh.admin, fastmesh.origin, marker="v2")
    reload(fastmesh, "ok")
    pids = fastmesh.stats()["worker_pids"]
    os.kill(pids[0], signal.SIGKILL)

    def restarted() -> dict | None:
        # Both workers answer again: a stats request may still have caught
        # the old one dying, or the new one just before it was ready.
        st = fastmesh.stats()
        done = (st["worker_restarts_total"] == 1 and st["workers_ready"] == 2
                and None not in st["worker_config_versions"])
        return st if done else None

    st = wait_for(restarted, "the worker's restart")
    assert st["worker_pids"][0] != pids[0]
    assert (st["config_version"], st["worker_config_versions"]) == (2, [2, 2])
    assert bodies(fastmesh) == {b"v2"}


def test_single_process_shows_the_version_too(tmp_path, origin):
    fm = Fastmesh(tmp_path, origin.port, single=True)
    try:
        assert (fm.stats()["config_version"], dump(fm)["version"]) == (1, 1)
        write_config(fm.cfg, fm.port, fm.admin, fm.origin, marker="v2")
        st = reload(fm, "ok")
        assert (st["config_version"], dump(fm)["version"]) == (2, 2)
        assert bodies(fm, 5) == {b"v2"}
    finally:
        fm.stop()


# --- the channel: answers paired by id ---------------------------------------

async def _handle_with_peer(peer):
    """A ready WorkerHandle whose worker is the coroutine `peer(channel)`."""
    a, b = socket.socketpair()
    handle = WorkerHandle(1)
    handle.attach(await Channel.open(a))
    handle.ready = True
    task = asyncio.create_task(peer(await Channel.open(b)))
    return handle, task


def test_a_late_answer_is_not_taken_for_the_next_one():
    async def peer(chan: Channel) -> None:
        first = await chan.recv()
        second = await chan.recv()      # sent after `first` timed out
        # The late answer to the first request comes before the second's.
        await chan.send(answer(first, stats={"answers": "first"}))
        await chan.send(answer(second, stats={"answers": "second"}))
        assert await chan.recv() is None

    async def main() -> None:
        handle, task = await _handle_with_peer(peer)
        a = await handle.request({"op": "stats"}, 0.2)
        assert a == {"ok": False, "error": "no answer to stats within 0.2s"}
        b = await handle.request({"op": "stats"}, 5.0)
        assert b["ok"] and b["stats"] == {"answers": "second"}
        handle.detach()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())


def test_answers_out_of_order_reach_their_requests_and_eof_fails_the_rest():
    async def peer(chan: Channel) -> None:
        reqs = [await chan.recv() for _ in range(3)]
        for req in reversed(reqs[:2]):
            await chan.send(answer(req, version=req["version"]))
        chan.close()                    # the third never gets an answer

    async def main() -> None:
        handle, task = await _handle_with_peer(peer)
        answers = await asyncio.wait_for(asyncio.gather(*(
            handle.request({"op": "commit", "version": v}, 30.0) for v in (1, 2, 3))), 10)
        assert [a.get("version") for a in answers] == [1, 2, None]
        assert answers[2] == {"ok": False, "error": "the worker's channel closed"}
        await task
        handle.detach()

    asyncio.run(main())
