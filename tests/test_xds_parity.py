"""Parity with Envoy on the same xDS feed: one management server
(tests/support/xds_server.py) feeds a real Envoy and fastmesh the same
resources (only each proxy's listener ports differ), then pushes changes.
After each step both proxies send the same requests to the same origins
(counted in the origins' own logs), both ACK or NACK the same versions of
the same types, and both keep serving while the server is gone. Both state
of the world and delta."""
from __future__ import annotations

import math
import shutil
from collections import Counter

import pytest

from support.harness import Client
from support.origin_proc import free_port
from support.served import poll
from support.xds_boot import XdsEnvoy, XdsMesh
from support.xds_resources import cla, eds_cluster, http_listener, route_config
from support.xds_server import CDS, EDS, LDS, RDS, XdsServer

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(shutil.which("envoy") is None, reason="envoy not installed")]

N = 40


class Side:
    """One proxy under the feed: its node id and its listener ports."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.ports = {"web": free_port(), "web2": free_port()}
        self.proc = None

    def listeners(self, names) -> dict:
        rc = {"web": "r1", "web2": "r2"}
        return {LDS: [http_listener(n, self.ports[n], rc[n]) for n in names]}


def send(side: Side, listener: str, n: int = N) -> list[str]:
    """n requests, tagged with the node in the path; the origin or status of each."""
    out = []
    try:
        c = Client(("127.0.0.1", side.ports[listener]))
    except ConnectionRefusedError:
        return ["refused"] * n
    try:
        for i in range(n):
            r = c.request("GET", f"/{side.node}/{listener}/{i}")
            out.append(r.header("x-origin").decode() if r.status == 200 else str(r.status))
            if r.status != 200:
                c.close()
                c = Client(("127.0.0.1", side.ports[listener]))
    finally:
        c.close()
    return out


def origin_log(origins, since: dict[str, int], node: str, listener: str) -> Counter:
    """How many requests of `node` on `listener` each origin served since
    `since` (its own log)."""
    prefix = f"/{node}/{listener}/"
    return Counter({o.name: sum(1 for r in o.received()[since[o.name]:]
                                if r.path.startswith(prefix))
                    for o in origins.values()}) + Counter()


def answers(xds: XdsServer, node: str, version: str) -> set[tuple[str, bool]]:
    return {(e.type_url, e.ack) for e in xds.events if e.node == node and e.version == version}


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_parity_with_envoy(tmp_path, make_origin, delta):
    origins = {n: make_origin(n) for n in ("a", "b", "c")}
    addr = {n: o.address for n, o in origins.items()}
    fm, env = Side("fastmesh"), Side("envoy")
    sides = (fm, env)
    xds = XdsServer().start()

    state = {"eps": {"ca": [addr["a"]], "cb": [addr["b"]]},
             "r1": [("/", "ca")], "r2": [("/", "ca")], "listeners": ["web"]}

    def push(version: str) -> None:
        eps = state["eps"]
        xds.set(version, {CDS: [eds_cluster(n) for n in eps],
                          EDS: [cla(n, e) for n, e in eps.items()],
                          RDS: [route_config("r1", state["r1"]), route_config("r2", state["r2"])]},
                per_node={s.node: s.listeners(state["listeners"]) for s in sides})

    def same_answers(version: str, expect_type: str, ack: bool = True) -> None:
        # Both proxies answered `version` of the type that changed, the same way.
        ok = xds.wait_for(lambda ev: all((expect_type, ack) in answers(xds, s.node, version)
                                         for s in sides), 20)
        assert ok, (version, answers(xds, fm.node, version), answers(xds, env.node, version))
        assert poll(lambda: answers(xds, fm.node, version) == answers(xds, env.node, version), 5), \
            (version, answers(xds, fm.node, version), answers(xds, env.node, version))

    def settle(listener: str, check) -> dict[str, Counter]:
        # Both proxies reach the expected routing (polled), then one round
        # whose origin logs are compared.
        for s in sides:
            assert poll(lambda: check(Counter(send(s, listener))), 20), \
                (s.node, send(s, listener), s.proc.output()[-3000:])
        since = {n: len(o.received()) for n, o in origins.items()}
        seen = {s.node: Counter(send(s, listener)) for s in sides}
        for s in sides:
            got = seen[s.node]
            assert check(got), (s.node, got)
            # The client's view is the origins' view.
            served = origin_log(origins, since, s.node, listener)
            assert served == Counter({k: v for k, v in got.items() if k in origins}), \
                (s.node, served, got)
        return seen

    def only(name: str):
        return lambda c: set(c) == {name}

    try:
        push("v1")
        fm.proc = XdsMesh(tmp_path, fm.node, xds.port, delta)
        env.proc = XdsEnvoy(tmp_path, env.node, xds.port, delta)
        settle("web", only("a"))
        for t in (CDS, EDS, LDS, RDS):
            same_answers("v1", t)

        # 1. Add an endpoint: round robin over a and c in both.
        state["eps"]["ca"] = [addr["a"], addr["c"]]
        push("v2")
        seen = settle("web", lambda c: set(c) == {"a", "c"} and min(c.values()) >= N // 4)
        assert seen[fm.node] == seen[env.node]          # round robin: N/2 each
        same_answers("v2", EDS)

        # 2. Remove an endpoint.
        state["eps"]["ca"] = [addr["c"]]
        push("v3")
        settle("web", only("c"))
        same_answers("v3", EDS)

        # 3. Change a route's weights: ca 1, cb 3.
        state["r1"] = [("/", {"ca": 1, "cb": 3})]
        push("v4")

        def quarter(c: Counter) -> bool:
            # c ~ Binomial(N, 1/4): within 4 standard deviations.
            sd = math.sqrt(N * 0.25 * 0.75)
            return set(c) <= {"b", "c"} and abs(c["c"] - N / 4) <= 4 * sd and c["b"] > 0
        settle("web", quarter)
        same_answers("v4", RDS)

        # 4. Add a listener (with its own route configuration).
        state["listeners"] = ["web", "web2"]
        push("v5")
        settle("web2", only("c"))
        same_answers("v5", LDS)

        # 5. Remove a cluster still in use: the route stays, both answer 503.
        state["r1"] = [("/", "cb")]
        push("v6")
        settle("web", only("b"))
        del state["eps"]["cb"]
        push("v7")
        settle("web", only("503"))
        settle("web2", only("c"))
        same_answers("v7", CDS)

        # 6. An invalid resource (an endpoint that is not an IP address):
        # both NACK it and keep serving the old endpoints.
        good = state["eps"]["ca"]
        state["eps"]["ca"] = [("not-an-ip", 80)]
        push("v8")
        same_answers("v8", EDS, ack=False)
        settle("web2", only("c"))
        state["eps"]["ca"] = good

        # 7. The server goes away: both keep serving the last good config.
        xds.stop()
        assert fm.proc.wait(lambda: xds.connected() == 0)
        settle("web2", only("c"))
        settle("web", only("503"))
        # ... and comes back: both reconnect and take the next version.
        xds.start()
        state["eps"]["cb"] = [addr["b"]]
        push("v9")
        settle("web", only("b"))
        same_answers("v9", CDS)
    finally:
        for s in sides:
            if s.proc is not None:
                s.proc.stop()
        xds.stop()
