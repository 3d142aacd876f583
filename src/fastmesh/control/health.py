"""Active health checking (Envoy's ``health_checks`` on a cluster).

Checks are not the hot path: this is plain asyncio on the control side. One
``HealthChecker`` runs per process that owns the config (the supervisor in
multi-worker mode, the process itself with ``--single-process`` or an
embedded ``Proxy``), never one per worker, so an origin sees one check per
interval whatever the number of workers. Each change of an endpoint's health
is reported as ``(cluster, host, port, healthy)`` to ``on_change``; the
runtime hands it to every worker, which sets the endpoint's
``EP_FAILED_ACTIVE_HC`` flag by address (``DataPlane.set_health``).

Envoy's semantics, which these follow:

- An endpoint of a cluster with a health check starts unhealthy and is
  checked at once; the first check decides alone (one success is enough at
  startup), later ones need ``healthy_threshold`` successes in a row to
  mark it healthy and ``unhealthy_threshold`` failures in a row to mark it
  unhealthy.
- A network failure (refused, reset, timed out) counts toward the
  threshold; an HTTP status outside ``expected_statuses`` or a gRPC status
  other than SERVING marks a healthy endpoint unhealthy at once.
- The next check starts ``interval`` (+ a random share of
  ``interval_jitter``) after the previous one started.
- HTTP checks speak the cluster's protocol: HTTP/1.1, or h2c when the
  cluster's ``protocol`` is http2 (``auto`` checks over HTTP/1.1).

Counters are Envoy's ``cluster.<name>.health_check.*`` (``blocks()`` gives
them in the stats snapshot format, admin/metrics.py merges them with the
workers' cluster blocks).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Callable
from typing import Any

from fastmesh.control.schema import ClusterConfig, Config, HealthCheckConfig
from fastmesh.control.tasks import cancel_and_wait

log = logging.getLogger("fastmesh.health")

Change = tuple[str, str, int, bool]      # (cluster, host, port, healthy)

# Envoy's health checker user agent.
USER_AGENT = "Envoy/HC"
MAX_STATUS_LINE = 8192

# Envoy's cluster.<name>.health_check.* stats that fastmesh counts.
COUNTERS = ("health_check.attempt", "health_check.success", "health_check.failure",
            "health_check.network_failure")
GAUGES = ("health_check.healthy",)


class CheckFailed(Exception):
    """A check's verdict: the endpoint answered, wrongly (``network`` False:
    Envoy's ACTIVE failure), or the exchange failed (``network`` True)."""

    def __init__(self, reason: str, *, network: bool) -> None:
        super().__init__(reason)
        self.network = network


# ---------------------------------------------------------------- the checks

async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    # Every check starts with a fresh connection; not getting one is a
    # network failure (Envoy counts those apart from a bad answer).
    try:
        return await asyncio.open_connection(host, port)
    except OSError as exc:
        raise CheckFailed(f"connect: {exc.strerror or exc}", network=True) from None


async def _http_check(host: str, port: int, cluster: ClusterConfig, hc: HealthCheckConfig) -> None:
    # HTTP/1.1 GET on a fresh connection, closed after the status line: the
    # status is all Envoy looks at.
    http = hc.http
    assert http is not None
    reader, writer = await _connect(host, port)
    try:
        authority = http.host or cluster.name
        lines = [f"GET {http.path} HTTP/1.1", f"host: {authority}", f"user-agent: {USER_AGENT}",
                 "connection: close"]
        lines += [f"{k}: {v}" for k, v in http.request_headers_to_add]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            line = await reader.readuntil(b"\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
            raise CheckFailed(f"no response: {exc!r}", network=True) from None
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise CheckFailed(f"not an HTTP/1.x response: {line[:80]!r}", network=True)
        status = int(parts[1])
        if not any(a <= status < b for a, b in http.expected_statuses):
            raise CheckFailed(f"status {status}", network=False)
    finally:
        writer.close()


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2_DATA, _H2_HEADERS, _H2_RST, _H2_SETTINGS, _H2_PING, _H2_GOAWAY, _H2_CONT = 0, 1, 3, 4, 6, 7, 9
_H2_END_STREAM, _H2_ACK, _H2_END_HEADERS, _H2_PADDED, _H2_PRIORITY = 1, 1, 4, 8, 0x20


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (len(payload).to_bytes(3, "big") + bytes((kind, flags))
            + stream.to_bytes(4, "big") + payload)


async def _h2c_check(host: str, port: int, cluster: ClusterConfig, hc: HealthCheckConfig) -> None:
    # The same GET over HTTP/2 with prior knowledge, for clusters whose
    # protocol is http2 (Envoy uses the cluster's codec): one stream, the
    # :status of its final HEADERS decides. HPACK is the data plane's own.
    from fastmesh._hpack import Decoder, Encoder, HPACKError
    http = hc.http
    assert http is not None
    reader, writer = await _connect(host, port)
    try:
        authority = (http.host or cluster.name).encode()
        block = Encoder().encode(
            [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority),
             (b":path", http.path.encode()), (b"user-agent", USER_AGENT.encode())]
            + [(k.lower().encode(), v.encode()) for k, v in http.request_headers_to_add])
        writer.write(_H2_PREFACE + _h2_frame(_H2_SETTINGS, 0, 0)
                     + _h2_frame(_H2_HEADERS, _H2_END_STREAM | _H2_END_HEADERS, 1, block))
        dec = Decoder()
        pending = b""
        while True:
            try:
                head = await reader.readexactly(9)
                payload = await reader.readexactly(int.from_bytes(head[:3], "big"))
            except (asyncio.IncompleteReadError, OSError) as exc:
                raise CheckFailed(f"h2: no response: {exc!r}", network=True) from None
            kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            if kind == _H2_SETTINGS and not flags & _H2_ACK:
                writer.write(_h2_frame(_H2_SETTINGS, _H2_ACK, 0))
            elif kind == _H2_PING and not flags & _H2_ACK:
                writer.write(_h2_frame(_H2_PING, _H2_ACK, 0, payload))
            elif kind == _H2_GOAWAY or (kind == _H2_RST and stream == 1):
                raise CheckFailed("h2: stream refused or connection closed", network=True)
            elif kind in (_H2_HEADERS, _H2_CONT) and stream == 1:
                if kind == _H2_HEADERS:
                    pad = payload[0] if flags & _H2_PADDED else 0
                    payload = payload[1 if flags & _H2_PADDED else 0:len(payload) - pad]
                    if flags & _H2_PRIORITY:
                        payload = payload[5:]
                pending += payload
                if not flags & _H2_END_HEADERS:
                    continue
                try:
                    fields = dict((n, v) for n, v in dec.decode(pending))
                except HPACKError as exc:
                    raise CheckFailed(f"h2: bad header block: {exc}", network=True) from None
                pending = b""
                raw = fields.get(b":status", b"")
                if not raw.isdigit():
                    raise CheckFailed("h2: response without :status", network=True)
                status = int(raw)
                if 100 <= status < 200:
                    continue          # interim: the final head follows
                if not any(a <= status < b for a, b in http.expected_statuses):
                    raise CheckFailed(f"status {status}", network=False)
                return
    finally:
        writer.close()


async def _tcp_check(host: str, port: int, cluster: ClusterConfig, hc: HealthCheckConfig) -> None:
    # Connect; send; each receive block must appear in order, not
    # necessarily contiguous (Envoy's fuzzy match); the timeout bounds it.
    tcp = hc.tcp
    assert tcp is not None
    reader, writer = await _connect(host, port)
    try:
        if tcp.send:
            writer.write(tcp.send)
        got = b""
        pos = 0
        for block in tcp.receive:
            while True:
                at = got.find(block, pos)
                if at >= 0:
                    pos = at + len(block)
                    break
                data = await reader.read(65536)
                if not data:
                    raise CheckFailed(f"closed before {block.hex()!r} arrived", network=True)
                got += data
    except OSError as exc:
        raise CheckFailed(f"{exc.strerror or exc}", network=True) from None
    finally:
        writer.close()


class _GrpcProbe:
    """grpc.health.v1.Health/Check over one kept channel (grpcio's aio
    client; the two one-field messages are encoded here, so only grpcio is
    needed, imported when a cluster has a gRPC check)."""

    SERVING = 1

    def __init__(self, host: str, port: int, authority: str) -> None:
        import grpc   # optional dependency: only for grpc_health_check
        self.grpc = grpc
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.channel = grpc.aio.insecure_channel(
            target, options=[("grpc.default_authority", authority)])
        self.call = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=_encode_check_request,
            response_deserializer=_decode_check_response)

    async def check(self, service: str, timeout: float) -> None:
        try:
            status = await self.call(service, timeout=timeout)
        except self.grpc.aio.AioRpcError as exc:
            code = exc.code()
            # No answer at all is the network's failure; an answer with an
            # error status is the endpoint's.
            network = code in (self.grpc.StatusCode.UNAVAILABLE,
                               self.grpc.StatusCode.DEADLINE_EXCEEDED)
            raise CheckFailed(f"grpc {code.name}: {exc.details()}", network=network) from None
        if status != self.SERVING:
            raise CheckFailed(f"grpc serving status {status}", network=False)

    async def close(self) -> None:
        await self.channel.close()


def _encode_check_request(service: str) -> bytes:
    # HealthCheckRequest { string service = 1; }
    data = service.encode()
    return b"" if not data else b"\x0a" + _varint(len(data)) + data


def _decode_check_response(data: bytes) -> int:
    # HealthCheckResponse { ServingStatus status = 1; } (0 = UNKNOWN if absent)
    i, status = 0, 0
    while i < len(data):
        key, i = _read_varint(data, i)
        wire = key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
            if key >> 3 == 1:
                status = value
        elif wire == 2:
            n, i = _read_varint(data, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"bad protobuf wire type {wire}")
    return status


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


# ---------------------------------------------------------------- the checker

class _Target:
    """One endpoint of one cluster under one health check, and its state."""

    __slots__ = ("cluster", "host", "port", "hc", "cfg", "healthy", "first", "successes",
                 "failures", "task", "probe")

    def __init__(self, cfg: ClusterConfig, host: str, port: int) -> None:
        self.cfg = cfg
        self.cluster = cfg.name
        self.hc = cfg.health_checks[0]
        self.host = host
        self.port = port
        self.healthy = False      # Envoy: unhealthy until the first check passes
        self.first = True         # the first check decides alone
        self.successes = 0
        self.failures = 0
        self.task: asyncio.Task[None] | None = None
        self.probe: _GrpcProbe | None = None


class HealthChecker:
    """Runs every cluster's health check against its endpoints and reports
    each change of health to ``on_change`` (a batch of ``Change``)."""

    def __init__(self, on_change: Callable[[list[Change]], None]) -> None:
        self.on_change = on_change
        self.targets: dict[tuple[str, str, int], _Target] = {}
        self.stats: dict[str, dict[str, int]] = {}
        self._lock = asyncio.Lock()
        self._stopped = False

    async def update(self, config: Config) -> None:
        """Check what ``config`` says from now on: endpoints that stay keep
        their state (and their schedule unless their check changed), new ones
        are checked at once, removed ones are forgotten."""
        async with self._lock:
            if self._stopped:
                return
            wanted: dict[tuple[str, str, int], ClusterConfig] = {}
            for cfg in config.clusters:
                if not cfg.health_checks:
                    continue
                for ep in cfg.endpoints:
                    host = await _resolve(ep.address, ep.port)
                    if host is not None:
                        wanted[(cfg.name, host, ep.port)] = cfg
            for key in [k for k in self.targets if k not in wanted]:
                await self._drop(self.targets.pop(key))
            for key, cfg in wanted.items():
                t = self.targets.get(key)
                if t is not None and t.hc == cfg.health_checks[0] and t.cfg.name == cfg.name:
                    t.cfg = cfg
                    continue
                if t is not None:         # the check changed: its state stays
                    await self._drop(t)
                    t.cfg, t.hc = cfg, cfg.health_checks[0]
                else:
                    t = _Target(cfg, key[1], key[2])
                    self.targets[key] = t
                t.task = asyncio.create_task(self._run(t), name=f"health {key}")
            names = {cfg.name for cfg in config.clusters if cfg.health_checks}
            self.stats = {n: self.stats.get(n) or dict.fromkeys(COUNTERS, 0) for n in names}

    async def stop(self) -> None:
        """Cancel every check."""
        async with self._lock:
            self._stopped = True
            for t in self.targets.values():
                await self._drop(t)
            self.targets.clear()

    async def _drop(self, t: _Target) -> None:
        await cancel_and_wait(t.task)
        t.task = None
        if t.probe is not None:
            await t.probe.close()
            t.probe = None

    def table(self) -> list[Change]:
        """The health of every checked endpoint (for a worker that starts
        or restarts: it assumes unhealthy until told)."""
        return [(t.cluster, t.host, t.port, t.healthy) for t in self.targets.values()]

    def blocks(self) -> list[dict[str, Any]]:
        """Per cluster block (prefix "cluster", label cluster=name), in the
        stats registry snapshot format (docs/stats.md)."""
        healthy: dict[str, int] = dict.fromkeys(self.stats, 0)
        for t in self.targets.values():
            if t.healthy and t.cluster in healthy:
                healthy[t.cluster] += 1
        out = []
        for name, values in self.stats.items():
            vals: dict[str, int] = {**values, "health_check.healthy": healthy[name]}
            out.append({"prefix": "cluster", "labels": [["cluster", name]], "values": vals,
                        "kinds": {k: "gauge" if k in GAUGES else "counter" for k in vals}})
        return out

    async def _run(self, t: _Target) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._check_once(t)
            hc = t.hc
            delay = hc.interval + (random.uniform(0, hc.interval_jitter) if hc.interval_jitter else 0)
            # The interval runs from the check's start, so a slow endpoint
            # is not checked less often (bounded below by zero).
            await asyncio.sleep(max(0.0, started + delay - loop.time()))

    async def _check_once(self, t: _Target) -> None:
        st = self.stats.setdefault(t.cluster, dict.fromkeys(COUNTERS, 0))
        st["health_check.attempt"] += 1
        hc = t.hc
        try:
            if hc.grpc is not None:
                if t.probe is None:
                    t.probe = _GrpcProbe(t.host, t.port, hc.grpc.authority or t.cluster)
                await t.probe.check(hc.grpc.service_name, hc.timeout)
            else:
                if hc.http is None:
                    fn = _tcp_check
                elif t.cfg.protocol == "http2":
                    fn = _h2c_check
                else:
                    fn = _http_check
                try:
                    await asyncio.wait_for(fn(t.host, t.port, t.cfg, hc), hc.timeout)
                except asyncio.TimeoutError:
                    raise CheckFailed(f"no answer within {hc.timeout:g}s", network=True) from None
        except CheckFailed as exc:
            st["health_check.failure"] += 1
            if exc.network:
                st["health_check.network_failure"] += 1
            self._failed(t, str(exc), immediate=not exc.network)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a check must never stop checking
            if t.first:   # e.g. grpcio missing: say so once, not every interval
                log.error("cluster %s: cannot check %s:%d: %r", t.cluster, t.host, t.port, exc)
            st["health_check.failure"] += 1
            st["health_check.network_failure"] += 1
            self._failed(t, repr(exc), immediate=False)
            return
        st["health_check.success"] += 1
        t.failures = 0
        first, t.first = t.first, False
        if not t.healthy:
            t.successes += 1
            if first or t.successes >= hc.healthy_threshold:
                t.healthy = True
                t.successes = 0
                log.info("cluster %s: endpoint %s:%d is healthy", t.cluster, t.host, t.port)
                self.on_change([(t.cluster, t.host, t.port, True)])

    def _failed(self, t: _Target, reason: str, *, immediate: bool) -> None:
        t.successes = 0
        t.first = False
        if not t.healthy:
            return
        t.failures += 1
        if immediate or t.failures >= t.hc.unhealthy_threshold:
            t.healthy = False
            t.failures = 0
            log.warning("cluster %s: endpoint %s:%d is unhealthy: %s",
                        t.cluster, t.host, t.port, reason)
            self.on_change([(t.cluster, t.host, t.port, False)])


async def _resolve(address: str, port: int) -> str | None:
    # The address the data side keys the endpoint by (compile.py's
    # _resolve: the first getaddrinfo answer), without blocking the loop.
    try:
        ipaddress.ip_address(address)
        return address
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(address, port,
                                                             type=socket.SOCK_STREAM)
    except OSError as exc:
        log.error("health check: cannot resolve %r: %s", address, exc)
        return None
    return str(infos[0][4][0])
