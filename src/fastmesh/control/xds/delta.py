"""Incremental ADS (``DeltaAggregatedResources``): the wire side.

The client subscribes and unsubscribes names per type (the wildcard CDS
and LDS subscribe to none in their first request, Envoy's legacy
wildcard); each response carries only the resources that changed, each
with its own version, and the names removed. A response is answered with
its nonce (ACK) or its nonce and ``error_detail`` (NACK). On a new stream
the first request of each type lists the versions held
(``initial_resource_versions``), so the server sends only what changed
while the stream was down.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from google.rpc import status_pb2

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from fastmesh.control.xds.resources import ORDER, WILDCARD
from fastmesh.control.xds.sotw import INVALID_ARGUMENT

if TYPE_CHECKING:
    from fastmesh.control.xds.client import XdsClient


class DeltaStream:
    """One DeltaAggregatedResources call."""

    def __init__(self, client: XdsClient, channel: grpc.aio.Channel) -> None:
        self.client = client
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.queue: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest] = asyncio.Queue()
        self.subscribed: dict[str, set[str]] = {}
        self.node_sent = False

    async def _requests(self) -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
        while True:
            yield await self.queue.get()

    def _send(self, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        if not self.node_sent or not self.client.settings.set_node_on_first_message_only:
            req.node.CopyFrom(self.client.settings.node)
            self.node_sent = True
        self.queue.put_nowait(req)

    def _initial(self, type_url: str) -> None:
        names = self.client.wanted(type_url)
        ts = self.client.types[type_url]
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url)
        if names is not None:
            req.resource_names_subscribe.extend(sorted(names))
        for name, entry in ts.entries.items():
            req.initial_resource_versions[name] = entry.version
        self.subscribed[type_url] = set(names or ())
        self._send(req)

    def _resubscribe(self) -> None:
        for t in ORDER:
            if t in WILDCARD:
                continue
            names = self.client.wanted(t) or set()
            if t not in self.subscribed:
                if names:
                    self._initial(t)
                continue
            old = self.subscribed[t]
            if names != old:
                req = discovery_pb2.DeltaDiscoveryRequest(
                    type_url=t, resource_names_subscribe=sorted(names - old),
                    resource_names_unsubscribe=sorted(old - names))
                self.subscribed[t] = set(names)
                self._send(req)

    async def run(self) -> bool:
        """Until the stream ends; whether any response came."""
        got = False
        for t in ORDER:
            if t in WILDCARD or self.client.wanted(t):
                self._initial(t)
        call = self.stub.DeltaAggregatedResources(self._requests())
        try:
            async for resp in call:
                got = True
                error = await self.client.on_response(
                    resp.type_url,
                    [(r.name, r.version, r.resource) for r in resp.resources
                     if r.HasField("resource")],
                    list(resp.removed_resources), resp.system_version_info, sotw=False)
                req = discovery_pb2.DeltaDiscoveryRequest(type_url=resp.type_url,
                                                          response_nonce=resp.nonce)
                if error is not None:
                    req.error_detail.CopyFrom(status_pb2.Status(code=INVALID_ARGUMENT,
                                                                message=error))
                self._send(req)
                self._resubscribe()
        finally:
            call.cancel()
        return got
