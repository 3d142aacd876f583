"""What the xDS client holds per resource type: the accepted resources with
their versions (the last good config, kept while the server is away), the
last rejected update, and Envoy's xDS counters."""
from __future__ import annotations

import dataclasses
import time
from typing import Any

from google.protobuf.message import Message

from fastmesh.control.xds.resources import SHORT

# Envoy's per-subscription stats (cluster_manager.cds.*, listener_manager.lds.*, ...).
COUNTERS = ("update_attempt", "update_success", "update_rejected", "update_failure",
            "update_empty", "init_fetch_timeout")


@dataclasses.dataclass(slots=True)
class Entry:
    """One accepted resource."""

    name: str
    version: str                 # the resource's version (delta) or the response's (SotW)
    raw: bytes                   # as received: an unchanged resource is the same bytes
    last_updated: float          # time.time() when accepted
    msg: Message | None = None   # decoded (EDS: only when dumped)
    doc: dict[str, Any] | None = None     # proto3 JSON, made when first needed
    extra: Any = None            # per type: an EDS entry's endpoint list


@dataclasses.dataclass(slots=True)
class Rejected:
    """The last update of a type that was NACKed (Envoy's UpdateFailureState)."""

    version: str
    names: tuple[str, ...]
    details: str
    when: float
    docs: dict[str, dict[str, Any]]      # the rejected resources, for /config_dump


class TypeState:
    """One resource type's accepted set, subscription and counters."""

    def __init__(self, type_url: str) -> None:
        self.type_url = type_url
        self.short = SHORT[type_url]
        self.entries: dict[str, Entry] = {}
        self.version_info = ""           # the last accepted response's version
        self.nonce = ""                  # the last response's nonce (SotW ACK/NACK)
        self.received = False            # a first response arrived (initial fetch done)
        self.rejected: Rejected | None = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.last_update_time = 0.0      # when the last accepted update came

    def count(self, name: str) -> None:
        self.counters[name] += 1

    def accept(self, entries: dict[str, Entry], version_info: str) -> None:
        self.entries = entries
        self.version_info = version_info
        self.rejected = None
        self.last_update_time = time.time()
        self.count("update_success")
        if not entries:
            self.count("update_empty")

    def reject(self, version: str, names: tuple[str, ...], details: str,
               docs: dict[str, dict[str, Any]]) -> None:
        self.rejected = Rejected(version, names, details, time.time(), docs)
        self.count("update_rejected")
