"""State-of-the-world ADS (``StreamAggregatedResources``): the wire side.

Per type, a request names the resources wanted (none for the wildcard CDS
and LDS) with the last accepted ``version_info``; each response holds the
whole set of that type (CDS, LDS) or every wanted resource (EDS, RDS,
SDS) and is answered with an ACK (its version and nonce) or a NACK (the
previous version, its nonce and ``error_detail``). On a new stream the
requests carry the versions held, so a server that has nothing new sends
nothing new. The node goes in the first request (or every request unless
``set_node_on_first_message_only``), as Envoy does.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc

from google.rpc import status_pb2

from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from fastmesh.control.xds.resources import ORDER, WILDCARD

if TYPE_CHECKING:
    from fastmesh.control.xds.client import XdsClient

INVALID_ARGUMENT = 3    # google.rpc.Code, what Envoy puts in a NACK's error_detail


class SotwStream:
    """One StreamAggregatedResources call."""

    def __init__(self, client: XdsClient, channel: grpc.aio.Channel) -> None:
        self.client = client
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.queue: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        self.sent: dict[str, set[str] | None] = {}      # names last requested, by type
        self.node_sent = False

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            yield await self.queue.get()

    def request(self, type_url: str, error: str | None = None) -> None:
        ts = self.client.types[type_url]
        names = self.client.wanted(type_url)
        req = discovery_pb2.DiscoveryRequest(
            version_info=ts.version_info, response_nonce=ts.nonce, type_url=type_url,
            resource_names=sorted(names) if names is not None else [])
        if not self.node_sent or not self.client.settings.set_node_on_first_message_only:
            req.node.CopyFrom(self.client.settings.node)
            self.node_sent = True
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=INVALID_ARGUMENT, message=error))
        self.sent[type_url] = names
        self.queue.put_nowait(req)

    def _resubscribe(self) -> None:
        # Named types whose wanted set changed (a new EDS cluster, a listener
        # naming a new route configuration).
        for t in ORDER:
            if t in WILDCARD:
                continue
            names = self.client.wanted(t)
            if names != self.sent.get(t, set()) and (names or t in self.sent):
                self.request(t)

    async def run(self) -> bool:
        """Until the stream ends; whether any response came."""
        got = False
        for t in ORDER:
            if t in WILDCARD or self.client.wanted(t):
                self.request(t)
        call = self.stub.StreamAggregatedResources(self._requests())
        try:
            async for resp in call:
                got = True
                ts = self.client.types.get(resp.type_url)
                error = await self.client.on_response(
                    resp.type_url, [("", resp.version_info, r) for r in resp.resources], (),
                    resp.version_info, sotw=True)
                if ts is None:
                    continue
                ts.nonce = resp.nonce
                self.request(resp.type_url, error)   # ACK: the new version; NACK: the old
                self._resubscribe()
        finally:
            call.cancel()
        return got
