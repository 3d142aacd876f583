"""The xDS resource types fastmesh subscribes to: type URLs, their proto
classes (xds-protos), and the conversion of a resource to the proto3-JSON
dict the Envoy translator (control/envoy) reads.

Importing this module loads the generated protobufs of the resources and of
the extensions their ``typed_config`` may carry (HTTP connection manager,
router, TCP proxy, TLS transport sockets, ...): ``Any`` fields can only be
turned into JSON when their type is in the descriptor pool.
"""
from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
# Imported for their descriptors only (typed_config of the resources above).
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# Envoy's order for one ADS stream: a cluster's endpoints before the
# listeners and routes that use it (docs/xds.md, "Warming").
ORDER = (CDS, EDS, LDS, RDS, SDS)
# Wildcard subscriptions (every resource the server has); the others name
# the resources they want.
WILDCARD = (CDS, LDS)

PROTO: dict[str, type[Message]] = {
    CDS: cluster_pb2.Cluster,
    EDS: endpoint_pb2.ClusterLoadAssignment,
    LDS: listener_pb2.Listener,
    RDS: route_pb2.RouteConfiguration,
    SDS: secret_pb2.Secret,
}

SHORT = {CDS: "cds", EDS: "eds", LDS: "lds", RDS: "rds", SDS: "sds"}


class ResourceError(Exception):
    """A resource that cannot be decoded; the message names it."""


def decode(type_url: str, packed: any_pb2.Any) -> Message:
    """The resource inside `packed`, which must be of `type_url`."""
    if packed.type_url != type_url:
        raise ResourceError(f"a {packed.type_url} resource in a {type_url} response")
    msg = PROTO[type_url]()
    try:
        msg.ParseFromString(packed.value)
    except DecodeError as exc:
        raise ResourceError(f"cannot decode {type_url}: {exc}") from None
    return msg


def name_of(type_url: str, msg: Message) -> str:
    """The name a resource is known by (a ClusterLoadAssignment's cluster_name)."""
    return msg.cluster_name if type_url == EDS else msg.name   # type: ignore[attr-defined]


def to_dict(msg: Message) -> dict[str, Any]:
    """proto3 JSON with the proto's field names: the input of
    control/envoy's translate_resources, and what /config_dump shows."""
    try:
        return MessageToDict(msg, preserving_proto_field_name=True)
    except (TypeError, KeyError) as exc:     # an Any of a type we did not load
        raise ResourceError(f"{type(msg).__name__}: {exc}") from None
