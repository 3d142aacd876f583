"""The xDS part of ``/config_dump``, in Envoy's shape: a ``configs`` list
with ClustersConfigDump, EndpointsConfigDump, ListenersConfigDump,
RoutesConfigDump and SecretsConfigDump, each dynamic resource with its
``version_info`` and ``last_updated``, and the last rejected update of a
type as ``error_state`` (Envoy's UpdateFailureState: ``failed_configuration``,
``last_update_attempt``, ``details``) on the resources it named."""
from __future__ import annotations

import datetime
from typing import Any

from fastmesh.control.xds.resources import CDS, EDS, LDS, PROTO, RDS, SDS, to_dict
from fastmesh.control.xds.state import Entry, TypeState

_DUMP = "type.googleapis.com/envoy.admin.v3."


def _ts(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def _doc(type_url: str, e: Entry) -> dict[str, Any]:
    if e.doc is None:         # EDS: made when dumped, not for every push
        if e.msg is None:
            e.msg = PROTO[type_url].FromString(e.raw)
        e.doc = to_dict(e.msg)
    return {"@type": type_url, **e.doc}


def _errors(ts: TypeState) -> dict[str, dict[str, Any]]:
    r = ts.rejected
    if r is None:
        return {}
    return {n: {"failed_configuration": {"@type": ts.type_url, **r.docs.get(n, {"name": n})},
                "last_update_attempt": _ts(r.when), "details": r.details,
                "version_info": r.version}
            for n in (r.names or ("",))}


def xds_configs(types: dict[str, TypeState], static_listeners: list[dict[str, Any]],
                static_clusters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``configs`` list of Envoy's /config_dump for the xDS resources."""
    cds, eds, lds, rds, sds = (types[t] for t in (CDS, EDS, LDS, RDS, SDS))

    def with_error(ts: TypeState, name: str, item: dict[str, Any]) -> dict[str, Any]:
        err = _errors(ts).get(name)
        if err is not None:
            item["error_state"] = err
        return item

    clusters = {
        "@type": _DUMP + "ClustersConfigDump",
        "version_info": cds.version_info,
        "static_clusters": [{"cluster": {"@type": CDS, **c}} for c in static_clusters],
        "dynamic_active_clusters": [
            with_error(cds, n, {"version_info": e.version, "cluster": _doc(CDS, e),
                                "last_updated": _ts(e.last_updated)})
            for n, e in sorted(cds.entries.items())],
        "dynamic_warming_clusters": [],
    }
    # Rejected resources that were never accepted (Envoy lists them too).
    for n, err in _errors(cds).items():
        if n not in cds.entries:
            clusters["dynamic_active_clusters"].append({"error_state": err})
    endpoints = {
        "@type": _DUMP + "EndpointsConfigDump",
        "dynamic_endpoint_configs": [
            with_error(eds, n, {"version_info": e.version, "endpoint_config": _doc(EDS, e),
                                "last_updated": _ts(e.last_updated)})
            for n, e in sorted(eds.entries.items())],
    }
    listeners = {
        "@type": _DUMP + "ListenersConfigDump",
        "version_info": lds.version_info,
        "static_listeners": [{"listener": {"@type": LDS, **x}} for x in static_listeners],
        "dynamic_listeners": [
            with_error(lds, n, {"name": n, "active_state": {
                "version_info": e.version, "listener": _doc(LDS, e),
                "last_updated": _ts(e.last_updated)}})
            for n, e in sorted(lds.entries.items())],
    }
    for n, err in _errors(lds).items():
        if n not in lds.entries:
            listeners["dynamic_listeners"].append({"name": n, "error_state": err})
    routes = {
        "@type": _DUMP + "RoutesConfigDump",
        "dynamic_route_configs": [
            with_error(rds, n, {"version_info": e.version, "route_config": _doc(RDS, e),
                                "last_updated": _ts(e.last_updated)})
            for n, e in sorted(rds.entries.items())],
    }
    secrets = {
        "@type": _DUMP + "SecretsConfigDump",
        # Key material is never shown (Envoy redacts it too).
        "dynamic_active_secrets": [
            {"name": n, "version_info": e.version, "last_updated": _ts(e.last_updated),
             "secret": {"@type": SDS, "name": n, "redacted": True}}
            for n, e in sorted(sds.entries.items())],
    }
    return [clusters, endpoints, listeners, routes, secrets]
