"""A real xDS management server for tests: grpcio, ADS over gRPC v3, both
state of the world (StreamAggregatedResources) and incremental
(DeltaAggregatedResources), fed the same resources.

The test sets a versioned snapshot (`set`); every connected client gets
what changed, as go-control-plane's snapshot cache sends it (SotW: the
whole set of a type, or the names asked for; delta: the resources whose
version changed and the names removed). Every ACK and NACK is recorded
(`events`, with the client's node id, the version it answers and the
error_detail of a NACK). `stop()` drops every stream and the port (the
management server going away); `start()` brings it back on the same port.
"""
from __future__ import annotations

import hashlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
ORDER = (CDS, EDS, LDS, RDS, SDS)
WILDCARD = (CDS, LDS)


@dataclass(frozen=True)
class Event:
    """One ACK or NACK a client sent."""

    node: str
    type_url: str
    version: str          # the snapshot version the answered response carried
    ack: bool
    error: str = ""
    delta: bool = False
    when: float = 0.0     # time.monotonic()


def _name(type_url: str, msg: Message) -> str:
    return msg.cluster_name if type_url == EDS else msg.name


def _pack(msg: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def _version(msg: Message) -> str:
    return hashlib.sha256(msg.SerializeToString(deterministic=True)).hexdigest()[:12]


class _Stream:
    """One client stream (either protocol)."""

    def __init__(self, server: XdsServer, delta: bool) -> None:
        self.server = server
        self.delta = delta
        self.out: queue.Queue[Message | None] = queue.Queue()
        self.node = ""
        self.nonces = itertools.count(1)
        self.sent: dict[str, str] = {}                 # nonce -> snapshot version
        # SotW: names asked for (None: wildcard) and the version last sent.
        self.names: dict[str, set[str] | None] = {}
        self.sent_version: dict[str, tuple[str, frozenset[str] | None]] = {}
        # Delta: subscriptions, wildcard types, what the client holds.
        self.subs: dict[str, set[str]] = {}
        self.wild: set[str] = set()
        self.known: dict[str, dict[str, str]] = {}
        self.closed = False

    # --- requests -----------------------------------------------------------------

    def on_request(self, req: Message) -> None:
        srv = self.server
        with srv.lock:
            if req.node.id:
                self.node = req.node.id
                srv.nodes.append(req.node)
            t = req.type_url
            if req.response_nonce and req.response_nonce in self.sent:
                nacked = req.HasField("error_detail") and req.error_detail.code != 0
                srv.events.append(Event(self.node, t, self.sent[req.response_nonce],
                                        not nacked, req.error_detail.message if nacked else "",
                                        self.delta, time.monotonic()))
                srv.cond.notify_all()
            if self.delta:
                first = t not in self.subs
                subs = self.subs.setdefault(t, set())
                if first:
                    self.known[t] = dict(req.initial_resource_versions)
                    if t in WILDCARD and not req.resource_names_subscribe:
                        self.wild.add(t)
                for n in req.resource_names_subscribe:
                    if n == "*":
                        self.wild.add(t)
                    else:
                        subs.add(n)
                for n in req.resource_names_unsubscribe:
                    subs.discard(n)
                    self.known.get(t, {}).pop(n, None)
                self._send_delta(t)
            else:
                names = None if t in WILDCARD and not req.resource_names \
                    else set(req.resource_names)
                changed = self.names.get(t, ...) != names
                self.names[t] = names
                if not req.response_nonce or changed:
                    self._send_sotw(t, force=True)

    # --- responses ----------------------------------------------------------------

    def _send_sotw(self, t: str, force: bool = False) -> None:
        if t not in self.names:
            return
        names = self.names[t]
        key = (self.server.version, frozenset(names) if names is not None else None)
        if not force and self.sent_version.get(t) == key:
            return
        res = self.server.resources(self.node, t)
        chosen = [m for n, m in res.items() if names is None or n in names]
        if names is not None and not chosen and not force:
            return
        nonce = str(next(self.nonces))
        self.sent[nonce] = self.server.version
        self.sent_version[t] = key
        self.out.put(discovery_pb2.DiscoveryResponse(
            version_info=self.server.version, type_url=t, nonce=nonce,
            resources=[_pack(m) for m in chosen]))

    def _send_delta(self, t: str) -> None:
        if t not in self.subs:
            return
        res = self.server.resources(self.node, t)
        known = self.known.setdefault(t, {})
        wanted = set(res) if t in self.wild else (self.subs[t] & set(res))
        add = []
        for n in sorted(wanted):
            v = _version(res[n])
            if known.get(n) != v:
                add.append(discovery_pb2.Resource(name=n, version=v, resource=_pack(res[n])))
                known[n] = v
        gone = [n for n in list(known) if n not in res
                and (t in self.wild or n in self.subs[t])]
        for n in gone:
            del known[n]
        if not add and not gone:
            return
        nonce = str(next(self.nonces))
        self.sent[nonce] = self.server.version
        self.out.put(discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=self.server.version, type_url=t, nonce=nonce,
            resources=add, removed_resources=gone))

    def push(self) -> None:
        for t in ORDER:
            if self.delta:
                self._send_delta(t)
            else:
                self._send_sotw(t)


class _Servicer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, server: XdsServer) -> None:
        self.server = server

    def _serve(self, delta: bool, requests: Iterable[Message],
               context: grpc.ServicerContext) -> Iterator[Message]:
        s = _Stream(self.server, delta)
        with self.server.lock:
            self.server.streams.append(s)

        def read() -> None:
            try:
                for req in requests:
                    s.on_request(req)
            except grpc.RpcError:
                pass
            finally:
                s.out.put(None)

        threading.Thread(target=read, daemon=True).start()
        context.add_callback(lambda: s.out.put(None))
        try:
            while True:
                msg = s.out.get()
                if msg is None or not context.is_active():
                    return
                yield msg
        finally:
            with self.server.lock:
                s.closed = True
                if s in self.server.streams:
                    self.server.streams.remove(s)

    def StreamAggregatedResources(self, request_iterator, context):  # noqa: N802
        return self._serve(False, request_iterator, context)

    def DeltaAggregatedResources(self, request_iterator, context):  # noqa: N802
        return self._serve(True, request_iterator, context)


class XdsServer:
    """An ADS management server on 127.0.0.1 (port 0: a free one)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.snapshot: dict[str, dict[str, Message]] = {t: {} for t in ORDER}
        # Per node id: resources of some types that replace the snapshot's
        # for that client (each proxy's listener port in the parity test).
        self.per_node: dict[str, dict[str, dict[str, Message]]] = {}
        self.version = ""
        self.events: list[Event] = []
        self.nodes: list[Message] = []
        self.streams: list[_Stream] = []
        self._grpc: grpc.Server | None = None

    def start(self) -> XdsServer:
        srv = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Servicer(self), srv)
        bound = srv.add_insecure_port(f"127.0.0.1:{self.port}")
        if not bound:
            raise OSError(f"cannot bind 127.0.0.1:{self.port}")
        self.port = bound
        srv.start()
        self._grpc = srv
        return self

    def stop(self) -> None:
        """Drop every stream and close the port."""
        if self._grpc is not None:
            self._grpc.stop(grace=0).wait()
            self._grpc = None
        with self.lock:
            for s in self.streams:
                s.out.put(None)
            self.streams.clear()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def resources(self, node: str, type_url: str) -> dict[str, Message]:
        """What `node` is served of a type."""
        own = self.per_node.get(node, {})
        return own[type_url] if type_url in own else self.snapshot.get(type_url, {})

    def set(self, version: str, resources: dict[str, Iterable[Message]],
            per_node: dict[str, dict[str, Iterable[Message]]] | None = None) -> None:
        """Serve `version`: the resources of each type given replace that
        type's (types not given keep theirs), `per_node` a node's own of
        some types; connected clients get what changed."""
        with self.lock:
            self.version = version
            before = {n: _version(m) for n, m in self.snapshot[CDS].items()}
            for t, msgs in resources.items():
                self.snapshot[t] = {_name(t, m): m for m in msgs}
            # A changed cluster warms again in Envoy until its endpoints come:
            # on a delta stream they are sent again with it (as Istio does).
            rewarm = {n for n, m in self.snapshot[CDS].items()
                      if n in before and before[n] != _version(m)}
            for st in self.streams:
                if st.delta:
                    for n in rewarm:
                        st.known.get(EDS, {}).pop(n, None)
            for node, types in (per_node or {}).items():
                own = self.per_node.setdefault(node, {})
                for t, msgs in types.items():
                    own[t] = {_name(t, m): m for m in msgs}
            for s in list(self.streams):
                s.push()

    def connected(self) -> int:
        with self.lock:
            return len(self.streams)

    def wait_for(self, pred: Callable[[list[Event]], bool], timeout: float = 10.0) -> bool:
        """Wait until `pred(events)` holds; whether it did."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not pred(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def answered(self, node: str, version: str, type_url: str | None = None) -> list[Event]:
        """The ACKs/NACKs `node` sent for `version` (of one type)."""
        with self.lock:
            return [e for e in self.events if e.node == node and e.version == version
                    and (type_url is None or e.type_url == type_url)]
