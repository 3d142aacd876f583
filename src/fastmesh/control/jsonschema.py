"""The config's JSON Schema, for editors (completion, checks as you type).

``fastmesh config --schema`` prints it. It is generated, not written: each
section's keys are the very tuples the validator accepts (``validation``'s
``_*_KEYS``; an unknown key is refused by both), the value types come from
the annotations of ``schema``'s dataclasses, the enums and defaults from
``schema``'s constants and dataclass defaults. So the schema cannot drift from
what ``fastmesh validate`` accepts by key; it is looser than the validator on
values (ranges, cross-references, addresses are checked by ``validate`` only).

Durations (``30s``, ``1m``, or seconds as a number) and sizes (``64KiB`` or
bytes) accept a string or a number.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from fastmesh import __version__
from fastmesh.control import schema as S
from fastmesh.control import validation as V

SCHEMA_ID = "https://fastmesh.dev/schema/config.json"

# Keys whose value is a size ("64KiB" or a number of bytes).
_SIZES = ("per_connection_buffer_limit", "per_request_buffer_limit_bytes")
# Key -> allowed values (schema's enums).
_ENUMS: dict[str, Sequence[str]] = {
    "lb": S.LB_POLICIES,
    "type": S.DISCOVERY_TYPES,
    "dns_lookup_family": S.DNS_LOOKUP_FAMILIES,
    "priority": S.ROUTING_PRIORITIES,
}


def _leaf(key: str, annotation: str, default: Any) -> dict[str, Any]:
    """The JSON Schema of one scalar field from its dataclass annotation."""
    base = annotation.replace(" | None", "").strip()
    out: dict[str, Any] = {}
    if base == "bool":
        out["type"] = "boolean"
    elif base == "str":
        out["type"] = "string"
    elif base == "int":
        out["type"] = ["integer", "string"] if key in _SIZES else "integer"
    elif base == "float":
        out["type"] = ["number", "string"]      # a duration: "30s" or seconds
    if key in _ENUMS and out.get("type") == "string":
        out["enum"] = list(_ENUMS[key])
    if default is not dataclasses.MISSING and isinstance(default, (bool, int, float, str)):
        out["default"] = default
    return out


def _object(keys: Sequence[str], *types: type, children: dict[str, dict[str, Any]] | None = None,
            required: Sequence[str] = (), description: str = "") -> dict[str, Any]:
    """A section: exactly ``keys``; each typed by the first dataclass in
    ``types`` with a field of that name, or by ``children``."""
    children = children or {}
    fields: dict[str, dataclasses.Field[Any]] = {}
    for t in types:
        for f in dataclasses.fields(t):
            fields.setdefault(f.name, f)
    props: dict[str, Any] = {}
    for key in keys:
        if key in children:
            props[key] = children[key]
        elif key in fields and isinstance(fields[key].type, str):
            props[key] = _leaf(key, fields[key].type, fields[key].default)
        else:
            props[key] = {}      # free-form here; `fastmesh validate` checks it
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a fastmesh config file."""
    header = _object(V._HEADER_KEYS, S.HeaderMatchConfig, required=("name",))
    match = _object(V._MATCH_KEYS, S.RouteMatchConfig, children={"headers": _array(header)})
    retry = _object(V._RETRY_KEYS, S.RetryPolicyConfig, children={
        "retry_on": {"type": ["string", "array"]},
        "retry_back_off": _object(V._BACK_OFF_KEYS, S.RetryPolicyConfig),
        "retriable_status_codes": _array({"type": "integer"}),
    })
    route = _object(V._ROUTE_KEYS, S.RouteConfig, children={
        "match": match,
        "retry_policy": retry,
        "weighted_clusters": _array(_object(("name", "weight"), S.WeightedClusterConfig,
                                            required=("name", "weight"))),
        "direct_response": _object(("status", "body"), S.DirectResponseConfig,
                                   required=("status",)),
        "max_stream_duration": _object(V._MAX_STREAM_DURATION_KEYS, S.MaxStreamDurationConfig),
    }, required=("match",))
    vhost = _object(V._VHOST_KEYS, S.VirtualHostConfig, children={
        "domains": _array({"type": "string"}),
        "routes": _array(route),
    }, required=("name", "domains", "routes"))
    http_filter = _object(V._HTTP_FILTER_KEYS, S.HttpFilterConfig, children={
        "import": {"type": "string", "description": "package.module:Attr of a user filter"},
    }, required=("name",))
    listener = _object(V._LISTENER_COMMON + V._LISTENER_HTTP, S.ListenerConfig, children={
        "address": {"type": "string", "default": S.DEFAULT_LISTENER_ADDRESS,
                    "description": "IP to bind; omitted: all interfaces "
                                   f"({S.DEFAULT_LISTENER_ADDRESS})"},
        "protocol": {"type": "string", "enum": list(S.PROTOCOLS), "default": "http"},
        "virtual_hosts": _array(vhost),
        "http2": _object(V._HTTP2_KEYS, S.Http2Config),
        "http_filters": _array(http_filter),
    }, required=("name", "port"))
    endpoint = _object(V._ENDPOINT_KEYS, S.EndpointConfig, required=("address", "port"))
    thresholds = _object(V._THRESHOLD_KEYS, S.ThresholdsConfig, children={
        "retry_budget": _object(V._RETRY_BUDGET_KEYS, S.RetryBudgetConfig),
    })
    health_check = _object(V._HEALTH_CHECK_KEYS, S.HealthCheckConfig, children={
        "http_health_check": _object(V._HTTP_HC_KEYS, S.HttpHealthCheckConfig),
        "tcp_health_check": _object(V._TCP_HC_KEYS),
        "grpc_health_check": _object(V._GRPC_HC_KEYS, S.GrpcHealthCheckConfig),
    })
    cluster = _object(V._CLUSTER_KEYS, S.ClusterConfig, S.DiscoveryConfig, children={
        "protocol": {"type": "string", "enum": list(S.UPSTREAM_PROTOCOLS), "default": "http1"},
        "endpoints": _array(endpoint),
        "circuit_breakers": _object(V._CB_KEYS, children={"thresholds": _array(thresholds)}),
        "health_checks": _array(health_check),
        "outlier_detection": _object(V._OD_KEYS, S.OutlierDetectionConfig),
    }, required=("name",))
    root = _object(V._ROOT_KEYS, S.Config, children={
        "admin": _object(V._ADMIN_KEYS, S.AdminConfig),
        "overload_manager": _object(V._OVERLOAD_KEYS, S.OverloadConfig),
        "listeners": _array(listener),
        "clusters": _array(cluster),
        "drain_timeout": {"type": ["number", "string"], "default": S.DEFAULT_DRAIN_TIMEOUT},
        "user": {"type": ["string", "integer"]},
        "group": {"type": ["string", "integer"]},
    }, required=("listeners",))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"fastmesh {__version__} config",
        "description": "Generated by `fastmesh config --schema` from the validator's key "
                       "tables; `fastmesh validate -c FILE` checks everything else.",
        **root,
    }
