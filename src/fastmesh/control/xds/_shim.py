"""TEMPORARY: a minimal Envoy-resources -> native config translation, used
only until control/envoy (the envoy-config branch, the real translator)
is on main. Covers what tests/test_xds*.py push: HCM listeners (rds or
inline route_config: prefix/path/safe_regex matches, cluster,
weighted_clusters, direct_response, timeout), tcp_proxy, STATIC and EDS
(ads) clusters. Delete once fastmesh.control.envoy exists."""
from __future__ import annotations

from typing import Any

from fastmesh.control.loader import ConfigError

_LB = {"ROUND_ROBIN": "round_robin", "LEAST_REQUEST": "least_request", "RANDOM": "random",
       "RING_HASH": "ring_hash", "MAGLEV": "maglev"}
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3." \
      "HttpConnectionManager"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def _bad(path: str, reason: str) -> ConfigError:
    return ConfigError("xds", None, path, reason)


def _route(r: dict[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.get("name"):
        out["name"] = r["name"]
    m = r.get("match", {})
    if "prefix" in m:
        out["match"] = {"prefix": m["prefix"]}
    elif "path" in m:
        out["match"] = {"path": m["path"]}
    elif "safe_regex" in m:
        out["match"] = {"regex": m["safe_regex"]["regex"]}
    else:
        raise _bad(path + ".match", "needs prefix, path or safe_regex")
    if "route" in r:
        a = r["route"]
        if "cluster" in a:
            out["cluster"] = a["cluster"]
        elif "weighted_clusters" in a:
            # Weight 0: never picked (Envoy); native weights start at 1.
            out["weighted_clusters"] = [{"name": c["name"], "weight": int(c.get("weight", 1))}
                                        for c in a["weighted_clusters"]["clusters"]
                                        if int(c.get("weight", 1)) > 0]
        else:
            raise _bad(path + ".route", "needs cluster or weighted_clusters")
        if "timeout" in a:
            out["timeout"] = a["timeout"]
    elif "direct_response" in r:
        d = r["direct_response"]
        out["direct_response"] = {"status": int(d["status"])}
        body = d.get("body", {}).get("inline_string")
        if body is not None:
            out["direct_response"]["body"] = body
    else:
        raise _bad(path, "needs route or direct_response")
    return out


def _route_config(rc: dict[str, Any], path: str) -> list[dict[str, Any]]:
    return [{"name": vh["name"], "domains": vh.get("domains", ["*"]),
             "routes": [_route(r, f"{path}.virtual_hosts[{i}].routes[{j}]")
                        for j, r in enumerate(vh.get("routes", []))]
             or [{"match": {"prefix": "/"}, "direct_response": {"status": 404}}]}
            for i, vh in enumerate(rc.get("virtual_hosts", []))]


def _listener(lst: dict[str, Any], route_configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    name = lst["name"]
    sa = lst.get("address", {}).get("socket_address", {})
    out: dict[str, Any] = {"name": name, "address": sa.get("address", "0.0.0.0"),
                           "port": int(sa.get("port_value", 0))}
    chains = lst.get("filter_chains") or []
    if len(chains) != 1 or len(chains[0].get("filters", [])) != 1:
        raise _bad(f"listener {name}.filter_chains", "exactly one chain with one filter")
    f = chains[0]["filters"][0]
    tc = f.get("typed_config", {})
    if tc.get("@type") == HCM:
        out["protocol"] = "http"
        if "rds" in tc:
            rc = route_configs.get(tc["rds"]["route_config_name"], {})
        else:
            rc = tc.get("route_config", {})
        out["virtual_hosts"] = _route_config(rc, f"listener {name}.route_config")
        if not out["virtual_hosts"]:
            # Envoy with an empty route table answers 404: a vhost with no routes does too.
            out["virtual_hosts"] = [{"name": "none", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "direct_response": {"status": 404}}]}]
    elif tc.get("@type") == TCP:
        out["protocol"] = "tcp"
        out["cluster"] = tc["cluster"]
    else:
        raise _bad(f"listener {name}.filter_chains[0].filters[0].typed_config",
                   f"unsupported {tc.get('@type')}")
    return out


def _cluster(c: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c["name"], "lb": _LB.get(c.get("lb_policy", "ROUND_ROBIN"),
                                                           "round_robin")}
    if "connect_timeout" in c:
        out["connect_timeout"] = c["connect_timeout"]
    typ = c.get("type", "STATIC")
    if typ == "EDS":
        out["type"] = "eds"
        out["eds_config"] = {"ads": {}}
    else:
        out["endpoints"] = [
            {"address": lbe["endpoint"]["address"]["socket_address"]["address"],
             "port": int(lbe["endpoint"]["address"]["socket_address"]["port_value"])}
            for g in c.get("load_assignment", {}).get("endpoints", [])
            for lbe in g.get("lb_endpoints", [])]
    if "typed_extension_protocol_options" in c or "http2_protocol_options" in c:
        out["protocol"] = "http2"
    return out


def translate_resources(listeners: list[dict], clusters: list[dict],
                        route_configs: dict[str, dict], load_assignments: dict[str, dict],
                        secrets: dict[str, dict]) -> dict:
    try:
        return {"listeners": [_listener(x, route_configs) for x in listeners],
                "clusters": [_cluster(x) for x in clusters]}
    except (KeyError, TypeError, ValueError) as exc:
        raise _bad("", f"unsupported resource: {exc!r}") from None
