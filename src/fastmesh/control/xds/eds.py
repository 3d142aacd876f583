"""A ClusterLoadAssignment (EDS) as the endpoint set the data plane takes.

Read straight from the protobuf, not through JSON: a 10,000-endpoint push
is a few attribute reads per endpoint, no dict per endpoint. The checks are
those of an endpoint file (control/eds_file.py): IP addresses, ports,
weights 1-128, no endpoint twice; a bad assignment is rejected whole (the
xDS client NACKs it, the last good endpoints keep serving).
"""
from __future__ import annotations

import socket

from fastmesh.control.eds_file import MAX_WEIGHT, DiscoveredEndpoint, EdsError, _ip

from envoy.config.endpoint.v3 import endpoint_pb2

# envoy.config.core.v3.HealthStatus: the values that take an endpoint out
# of the balancer (UNHEALTHY, DRAINING, TIMEOUT).
_STATUS_NAMES = ("UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED")
_UNHEALTHY = frozenset((2, 3, 4))


def _canonical(host: str) -> bool:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.inet_ntop(family, socket.inet_pton(family, host)) == host
    except (OSError, ValueError):
        return False


def endpoints_of(cla: endpoint_pb2.ClusterLoadAssignment) -> list[DiscoveredEndpoint]:
    """The endpoints of `cla` (EdsError names the bad field)."""
    out: list[DiscoveredEndpoint] = []
    seen: set[tuple[str, int]] = set()
    for i, group in enumerate(cla.endpoints):
        loc = group.locality
        region, zone, sub_zone, priority = loc.region, loc.zone, loc.sub_zone, group.priority
        for j, lbe in enumerate(group.lb_endpoints):
            sa = lbe.endpoint.address.socket_address
            host, port = sa.address, sa.port_value
            weight = lbe.load_balancing_weight.value if lbe.HasField("load_balancing_weight") \
                else 1
            status = lbe.health_status
            if not _canonical(host) or not 1 <= port <= 65535 or not 1 <= weight <= MAX_WEIGHT \
                    or (host, port) in seen:
                where = f"endpoints[{i}].lb_endpoints[{j}]"
                if not lbe.endpoint.address.HasField("socket_address"):
                    raise EdsError(f"{where}.endpoint.address: only socket_address is supported")
                host = _ip(host, f"{where}.endpoint.address.socket_address")
                if not 1 <= port <= 65535:
                    raise EdsError(f"{where}.endpoint.address.socket_address.port_value: "
                                   f"{port} is not a port")
                if not 1 <= weight <= MAX_WEIGHT:
                    raise EdsError(f"{where}.load_balancing_weight: a weight is an integer "
                                   f"from 1 to {MAX_WEIGHT}")
                if (host, port) in seen:
                    raise EdsError(f"{where}.endpoint.address: {host}:{port} is listed twice")
            seen.add((host, port))
            out.append(DiscoveredEndpoint(
                host, port, weight, status not in _UNHEALTHY,
                _STATUS_NAMES[status] if status < len(_STATUS_NAMES) else "UNKNOWN",
                region, zone, sub_zone, priority))
    return out
