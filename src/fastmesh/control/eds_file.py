"""Endpoint files: Envoy's path-based EDS (``type: eds`` with
``eds_config: {path_config_source: {path: <file>}}``).

The file holds a ``ClusterLoadAssignment`` in YAML or JSON, either bare
or inside a ``DiscoveryResponse`` (``resources: [...]``, what Envoy's own
path-based EDS reads), for example::

    cluster_name: catalog
    endpoints:
      - locality: {region: eu-west-1, zone: eu-west-1a}
        lb_endpoints:
          - endpoint: {address: {socket_address: {address: 10.0.0.5, port_value: 8080}}}
            health_status: HEALTHY
            load_balancing_weight: 2

A file is parsed whole, and only a file that parses whole replaces the
endpoints: a half-written or invalid file is logged and the last good set
keeps serving (control/discovery.py watches and re-reads it).
"""
from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any, NamedTuple

import yaml

__all__ = ["DiscoveredEndpoint", "EdsError", "parse_cluster_load_assignment"]

CLA_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
# Envoy's HealthStatus values; the ones that take an endpoint out of the
# balancer (DRAINING: no new requests, in-flight ones finish).
HEALTH_STATUSES = ("UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED")
UNHEALTHY_STATUSES = ("UNHEALTHY", "DRAINING", "TIMEOUT")
MAX_WEIGHT = 128


class EdsError(Exception):
    """An endpoint file that cannot be used; the message names the field."""


class DiscoveredEndpoint(NamedTuple):
    """One endpoint from a discovery source, with the metadata policies use.

    A named tuple, not a dataclass: made 10,000 times per large endpoint
    file (a third of a frozen dataclass's cost), and its first four items
    are what ClusterState.set_endpoints takes (host, port, weight, healthy),
    so a set goes to the data side without a conversion."""

    host: str
    port: int
    weight: int = 1
    healthy: bool = True            # False: EDS said UNHEALTHY, DRAINING or TIMEOUT
    health_status: str = "UNKNOWN"
    region: str = ""
    zone: str = ""
    sub_zone: str = ""
    priority: int = 0

    def wire(self) -> list[Any]:
        """The form sent to workers: [host, port, weight, healthy]."""
        return [self.host, self.port, self.weight, self.healthy]


def _get(obj: Any, key: str, kind: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    if not isinstance(obj, dict):
        raise EdsError(f"{where}: expected a mapping")
    if key not in obj:
        if default is None:
            raise EdsError(f"{where}.{key}: missing")
        return default
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise EdsError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, "
                       f"got {type(value).__name__}")
    return value


def _ip(host: str, where: str) -> str:
    # The canonical text of an IP address; inet_pton/ntop in C first (a
    # tenth of ipaddress's cost, 10,000 times per file), ipaddress to decide
    # what they refuse (and to refuse what ipaddress refuses: leading zeros).
    try:
        if "." in host and ":" not in host:
            canon = socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, host))
        else:
            canon = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, host))
        if canon == host:
            return canon
    except (OSError, ValueError):
        pass
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise EdsError(f"{where}.address: {host!r} is not an IP address") from None


def _canonical_ip(host: str) -> bool:
    # Whether host is an IP address written the canonical way (C only).
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.inet_ntop(family, socket.inet_pton(family, host)) == host
    except (OSError, ValueError):
        return False


def _checked_endpoint(lbe: Any, w: str, seen: set[tuple[str, int]]) -> tuple[str, int, int, str]:
    # One lb_endpoint checked field by field; EdsError names the field.
    ep = _get(lbe, "endpoint", dict, w)
    sa = _get(_get(ep, "address", dict, f"{w}.endpoint"), "socket_address", dict,
              f"{w}.endpoint.address")
    where = f"{w}.endpoint.address.socket_address"
    host = _ip(_get(sa, "address", str, where), where)
    port = _get(sa, "port_value", int, where)
    if not 1 <= port <= 65535:
        raise EdsError(f"{where}.port_value: {port} is not a port")
    if (host, port) in seen:
        raise EdsError(f"{where}: {host}:{port} is listed twice")
    status = _get(lbe, "health_status", str, w, "UNKNOWN")
    if status not in HEALTH_STATUSES:
        raise EdsError(f"{w}.health_status: {status!r} is not one of "
                       f"{', '.join(HEALTH_STATUSES)}")
    weight = _weight(lbe.get("load_balancing_weight", 1), f"{w}.load_balancing_weight")
    return host, port, weight, status


def _weight(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_WEIGHT:
        raise EdsError(f"{where}: a weight is an integer from 1 to {MAX_WEIGHT}")
    return v


# libyaml's loader when PyYAML has it: the pure-Python one takes seconds for
# a 10,000-endpoint file.
_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(text: str) -> Any:
    # JSON (what tools write, and a subset of YAML) through the json module:
    # 10,000 endpoints in milliseconds. Anything else, or JSON that does not
    # parse, through YAML (whose error names the line).
    stripped = text.lstrip()
    if not stripped:
        return None
    if stripped[0] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            pass
    try:
        return yaml.load(text, Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        raise EdsError(f"not YAML or JSON: {exc}") from None


def parse_cluster_load_assignment(text: str, cluster: str) -> list[DiscoveredEndpoint]:
    """The endpoints for `cluster` in an endpoint file's text. EdsError
    names what is wrong; nothing is returned unless the whole file is good."""
    doc = _load(text)
    if not isinstance(doc, dict):
        raise EdsError("expected a ClusterLoadAssignment (a mapping)")
    if "resources" in doc:
        resources = _get(doc, "resources", list, "")
        matching = [r for r in resources if isinstance(r, dict)
                    and r.get("cluster_name", cluster) == cluster]
        if len(matching) != 1:
            raise EdsError(f"resources: expected one ClusterLoadAssignment for {cluster!r}, "
                           f"found {len(matching)}")
        doc = matching[0]
        t = doc.get("@type", CLA_TYPE)
        if t != CLA_TYPE:
            raise EdsError(f"resources[].@type: expected {CLA_TYPE}, got {t!r}")
    name = doc.get("cluster_name", cluster)
    if name != cluster:
        raise EdsError(f"cluster_name: the file is for {name!r}, not {cluster!r}")
    out: list[DiscoveredEndpoint] = []
    seen: set[tuple[str, int]] = set()
    for i, group in enumerate(_get(doc, "endpoints", list, "", [])):
        gw = f"endpoints[{i}]"
        loc = _get(group, "locality", dict, gw, {})
        priority = _get(group, "priority", int, gw, 0)
        region, zone, sub_zone = (str(loc.get("region", "")), str(loc.get("zone", "")),
                                  str(loc.get("sub_zone", "")))
        for j, lbe in enumerate(_get(group, "lb_endpoints", list, gw, [])):
            # The common well-formed endpoint in a few dict lookups; anything
            # unusual (or wrong) goes through the checks that name the field.
            try:
                sa = lbe["endpoint"]["address"]["socket_address"]
                host, port = sa["address"], sa["port_value"]
                status = lbe.get("health_status", "UNKNOWN")
                weight = lbe.get("load_balancing_weight", 1)
                fast = (type(host) is str and type(port) is int and 1 <= port <= 65535
                        and type(weight) is int and 1 <= weight <= MAX_WEIGHT
                        and status in HEALTH_STATUSES
                        and _canonical_ip(host) and (host, port) not in seen)
            except (KeyError, TypeError, AttributeError):
                fast = False
            if not fast:
                host, port, weight, status = _checked_endpoint(lbe, f"{gw}.lb_endpoints[{j}]",
                                                               seen)
            seen.add((host, port))
            out.append(DiscoveredEndpoint(host, port, weight, status not in UNHEALTHY_STATUSES,
                                          status, region, zone, sub_zone, priority))
    return out


def dumps_cluster_load_assignment(cluster: str, endpoints: list[DiscoveredEndpoint]) -> str:
    """The JSON form of a ClusterLoadAssignment (tests, `fastmesh` tools)."""
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for e in endpoints:
        groups.setdefault((e.region, e.zone, e.sub_zone, e.priority), []).append({
            "endpoint": {"address": {"socket_address": {"address": e.host,
                                                        "port_value": e.port}}},
            "health_status": e.health_status, "load_balancing_weight": e.weight})
    return json.dumps({"cluster_name": cluster, "endpoints": [
        {"locality": {"region": r, "zone": z, "sub_zone": s}, "priority": p, "lb_endpoints": lbs}
        for (r, z, s, p), lbs in groups.items()]})
