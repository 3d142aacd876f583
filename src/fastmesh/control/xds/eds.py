"""A ClusterLoadAssignment (EDS) as the endpoint set the data plane takes.

Read from the resource's wire bytes by ``fastmesh._eds_wire`` (compiled):
a 10,000-endpoint push is one pass in C, no protobuf object per field. The
checks are those of an endpoint file (control/eds_file.py): canonical IP
addresses, ports, weights 1-128, no endpoint twice; a bad assignment is
rejected whole (the xDS client NACKs it, the last good endpoints keep
serving).
"""
from __future__ import annotations

from fastmesh import _eds_wire
from fastmesh.control.eds_file import DiscoveredEndpoint, EdsError


def endpoints_of(data: bytes) -> tuple[str, list[DiscoveredEndpoint]]:
    """(cluster_name, endpoints) of a serialized ClusterLoadAssignment;
    EdsError names the bad field."""
    try:
        return _eds_wire.parse(data, DiscoveredEndpoint)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EdsError(str(exc)) from None
