"""What an Envoy bootstrap says about its xDS source: ``dynamic_resources``
with an ADS ``api_config_source`` (Envoy's names), and the ``node`` identity
sent to the management server.

Only ADS over gRPC v3 is supported: ``ads_config.api_type`` ``GRPC``
(state of the world) or ``DELTA_GRPC`` (incremental), ``cds_config`` and
``lds_config`` ``{ads: {}}``. The management server is named by
``grpc_services[].envoy_grpc.cluster_name`` (a static cluster: each of its
endpoints is an address to try) or ``google_grpc.target_uri``; several
grpc_services are tried in turn after a failure.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from fastmesh import __version__ as _fastmesh_version
from fastmesh.control.durations import parse_duration
from fastmesh.control.loader import ConfigError

from envoy.config.core.v3 import base_pb2

# Envoy's default ConfigSource.initial_fetch_timeout.
DEFAULT_INITIAL_FETCH_TIMEOUT = 15.0
API_TYPES = ("GRPC", "DELTA_GRPC")
USER_AGENT = "fastmesh"
# What fastmesh does with the resources, as Envoy advertises its own.
CLIENT_FEATURES = ("envoy.lb.does_not_support_overprovisioning",
                   "envoy.config.require-any-fields-contain-struct")


@dataclasses.dataclass(frozen=True)
class XdsSettings:
    """The ADS source of a bootstrap."""

    delta: bool                         # DELTA_GRPC
    targets: tuple[str, ...]            # host:port, tried in turn
    initial_fetch_timeout: float        # seconds; 0 = wait for ever
    node: base_pb2.Node
    set_node_on_first_message_only: bool = False


def is_xds_bootstrap(doc: Any) -> bool:
    """Whether `doc` (a parsed config file) is an Envoy bootstrap fed by xDS."""
    return isinstance(doc, Mapping) and isinstance(doc.get("dynamic_resources"), Mapping)


def _err(file: str | None, path: str, reason: str) -> ConfigError:
    return ConfigError(file, None, path, reason)


def _duration(value: Any, file: str | None, path: str) -> float:
    # Envoy's JSON form ("15s", "0.5s") or a number of seconds.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping):      # {seconds, nanos}
        return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    try:
        return parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise _err(file, path, f"not a duration: {exc}") from None


def node_of(doc: Mapping[str, Any], file: str | None = None) -> base_pb2.Node:
    """The bootstrap's ``node`` as Envoy sends it, with fastmesh as its
    user agent."""
    raw = doc.get("node") or {}
    node = base_pb2.Node()
    try:
        json_format.ParseDict({k: v for k, v in raw.items()
                               if k not in ("user_agent_name", "user_agent_version")},
                              node)
    except json_format.ParseError as exc:
        raise _err(file, "node", str(exc)) from None
    node.user_agent_name = USER_AGENT
    node.user_agent_version = _fastmesh_version
    node.client_features.extend(CLIENT_FEATURES)
    return node


def _static_cluster_targets(doc: Mapping[str, Any], name: str, file: str | None,
                            path: str) -> list[str]:
    for cl in (doc.get("static_resources") or {}).get("clusters") or ():
        if isinstance(cl, Mapping) and cl.get("name") == name:
            out = []
            for group in (cl.get("load_assignment") or {}).get("endpoints") or ():
                for lbe in group.get("lb_endpoints") or ():
                    sa = ((lbe.get("endpoint") or {}).get("address") or {}).get(
                        "socket_address") or {}
                    if "address" in sa and "port_value" in sa:
                        host = sa["address"]
                        out.append(f"[{host}]:{sa['port_value']}" if ":" in host
                                   else f"{host}:{sa['port_value']}")
            if not out:
                raise _err(file, path, f"static cluster {name!r} has no endpoints "
                           "(load_assignment) to reach the management server at")
            return out
    raise _err(file, path, f"no static cluster {name!r} (the management server's cluster "
               "must be in static_resources.clusters)")


def settings_of(doc: Mapping[str, Any], file: str | None = None) -> XdsSettings:
    """The ADS settings of an Envoy bootstrap (ConfigError names the field)."""
    dyn = doc["dynamic_resources"]
    ads = dyn.get("ads_config")
    if not isinstance(ads, Mapping):
        raise _err(file, "dynamic_resources.ads_config",
                   "fastmesh's xDS client speaks ADS only: give ads_config, with cds_config "
                   "and lds_config {ads: {}}")
    api_type = ads.get("api_type", "GRPC")
    if api_type not in API_TYPES:
        raise _err(file, "dynamic_resources.ads_config.api_type",
                   f"{api_type!r} is not supported; one of {', '.join(API_TYPES)}")
    if ads.get("transport_api_version", "V3") != "V3":
        raise _err(file, "dynamic_resources.ads_config.transport_api_version",
                   "only V3 is supported")
    timeout = DEFAULT_INITIAL_FETCH_TIMEOUT
    for key in ("cds_config", "lds_config"):
        src = dyn.get(key)
        if src is None:
            continue
        if not isinstance(src, Mapping) or "ads" not in src:
            raise _err(file, f"dynamic_resources.{key}",
                       "only {ads: {}} is supported (every resource over the ADS stream)")
        if "initial_fetch_timeout" in src:
            timeout = _duration(src["initial_fetch_timeout"], file,
                                f"dynamic_resources.{key}.initial_fetch_timeout")
    targets: list[str] = []
    services = ads.get("grpc_services") or ()
    if not services:
        raise _err(file, "dynamic_resources.ads_config.grpc_services",
                   "at least one grpc_service (envoy_grpc.cluster_name or google_grpc.target_uri)")
    for i, svc in enumerate(services):
        path = f"dynamic_resources.ads_config.grpc_services[{i}]"
        if "envoy_grpc" in svc:
            targets += _static_cluster_targets(doc, svc["envoy_grpc"].get("cluster_name"), file,
                                               path + ".envoy_grpc.cluster_name")
        elif "google_grpc" in svc:
            targets.append(svc["google_grpc"]["target_uri"])
        else:
            raise _err(file, path, "give envoy_grpc or google_grpc")
    return XdsSettings(delta=api_type == "DELTA_GRPC", targets=tuple(targets),
                       initial_fetch_timeout=timeout, node=node_of(doc, file),
                       set_node_on_first_message_only=bool(
                           ads.get("set_node_on_first_message_only", False)))


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A protobuf Struct of a mapping (node metadata in tests)."""
    s = struct_pb2.Struct()
    s.update(dict(value))
    return s
