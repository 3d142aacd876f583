"""EDS pushes read from the wire bytes (fastmesh._eds_wire via
control/xds/eds.py), checked against the generated protobuf classes as the
oracle: the same endpoints, localities, weights and health, and the same
refusals."""
from __future__ import annotations

import pytest
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as epc
from envoy.config.endpoint.v3 import endpoint_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from fastmesh.control.eds_file import DiscoveredEndpoint, EdsError
from fastmesh.control.xds.eds import endpoints_of

STATUS = ("UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED")


def oracle(msg: endpoint_pb2.ClusterLoadAssignment) -> list[DiscoveredEndpoint]:
    out = []
    for g in msg.endpoints:
        for lbe in g.lb_endpoints:
            sa = lbe.endpoint.address.socket_address
            w = lbe.load_balancing_weight.value if lbe.HasField("load_balancing_weight") else 1
            out.append(DiscoveredEndpoint(sa.address, sa.port_value, w,
                                          lbe.health_status not in (2, 3, 4),
                                          STATUS[lbe.health_status], g.locality.region,
                                          g.locality.zone, g.locality.sub_zone, g.priority))
    return out


def lb(host: str, port: int, weight: int | None = None, status: int = 0) -> epc.LbEndpoint:
    e = epc.LbEndpoint(health_status=status, endpoint=epc.Endpoint(
        hostname="ignored", address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=host, port_value=port))))
    if weight is not None:
        e.load_balancing_weight.value = weight
    return e


groups = st.lists(st.tuples(
    st.sampled_from(["", "eu-west-1", "us-east-1"]), st.sampled_from(["", "a", "b"]),
    st.integers(0, 3),
    st.lists(st.tuples(st.integers(0, 255), st.integers(1, 65535),
                       st.one_of(st.none(), st.integers(1, 128)), st.integers(0, 5)),
             max_size=6)), max_size=4)


@settings(max_examples=150, deadline=None)
@given(groups)
def test_wire_read_matches_protobuf(gs):
    msg = endpoint_pb2.ClusterLoadAssignment(cluster_name="svc")
    seen = set()
    for region, zone, prio, eps in gs:
        g = msg.endpoints.add(locality=base_pb2.Locality(region=region, zone=zone), priority=prio)
        for last, port, w, status in eps:
            if (last, port) in seen:
                continue
            seen.add((last, port))
            g.lb_endpoints.append(lb(f"10.0.0.{last}", port, w, status))
    name, got = endpoints_of(msg.SerializeToString())
    assert name == "svc"
    assert got == oracle(msg)
    assert all(type(e) is DiscoveredEndpoint for e in got)


def test_ipv6_and_large():
    msg = endpoint_pb2.ClusterLoadAssignment(cluster_name="big", endpoints=[epc.LocalityLbEndpoints(
        lb_endpoints=[lb("fd00::1", 80)] + [lb(f"10.1.{i // 256}.{i % 256}", 8080)
                                            for i in range(10000)])])
    name, got = endpoints_of(msg.SerializeToString())
    assert len(got) == 10001 and got[0].host == "fd00::1" and got == oracle(msg)


@pytest.mark.parametrize("make, reason", [
    (lambda: [lb("not-an-ip", 80)], "'not-an-ip' is not an IP address"),
    (lambda: [lb("10.0.0.01", 80)], "is not an IP address"),
    (lambda: [lb("10.0.0.1", 0)], "0 is not a port"),
    (lambda: [lb("10.0.0.1", 80, 0)], "weight"),
    (lambda: [lb("10.0.0.1", 80, 129)], "weight"),
    (lambda: [lb("10.0.0.1", 80), lb("10.0.0.1", 80)], "listed twice"),
    (lambda: [epc.LbEndpoint(endpoint=epc.Endpoint(address=address_pb2.Address(
        pipe=address_pb2.Pipe(path="/tmp/x"))))], "only socket_address"),
    (lambda: [epc.LbEndpoint(endpoint=epc.Endpoint(address=address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address="10.0.0.1", named_port="http"))))],
     "named_port"),
])
def test_refused_with_the_field(make, reason):
    msg = endpoint_pb2.ClusterLoadAssignment(cluster_name="c", endpoints=[
        epc.LocalityLbEndpoints(lb_endpoints=make())])
    with pytest.raises(EdsError, match=reason) as e:
        endpoints_of(msg.SerializeToString())
    assert "endpoints[0].lb_endpoints[" in str(e.value)


def test_truncated_bytes_refused():
    data = endpoint_pb2.ClusterLoadAssignment(cluster_name="c", endpoints=[
        epc.LocalityLbEndpoints(lb_endpoints=[lb("10.0.0.1", 80)])]).SerializeToString()
    with pytest.raises(EdsError, match="truncated"):
        endpoints_of(data[:-3])
