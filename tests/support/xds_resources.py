"""Envoy v3 resources for the xDS tests, built as protobufs (xds-protos):
EDS clusters, their ClusterLoadAssignments, HTTP listeners using RDS, and
route configurations with weighted clusters."""
from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as epc, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2


def _any(msg) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3)


def eds_cluster(name: str, connect_timeout: float = 1.0) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(nanos=int(connect_timeout * 1e9) % 10**9,
                                              seconds=int(connect_timeout)),
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads()))


def cla(name: str, endpoints: Sequence[tuple[str, int]] | Sequence[tuple[str, int, int]]
        ) -> endpoint_pb2.ClusterLoadAssignment:
    lbs = []
    for ep in endpoints:
        host, port = ep[0], ep[1]
        lb = epc.LbEndpoint(endpoint=epc.Endpoint(
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                address=host, port_value=port))))
        if len(ep) > 2:
            lb.load_balancing_weight.CopyFrom(wrappers_pb2.UInt32Value(value=ep[2]))
        lbs.append(lb)
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[epc.LocalityLbEndpoints(lb_endpoints=lbs)])


def http_listener(name: str, port: int, route_config: str,
                  address: str = "127.0.0.1") -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm_pb2.Rds(route_config_name=route_config, config_source=ads()),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router",
                                         typed_config=_any(router_pb2.Router()))])
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=address, port_value=port)),
        filter_chains=[lc.FilterChain(filters=[lc.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=_any(hcm))])])


def route_config(name: str, routes: Sequence[tuple[str, str | dict[str, int]]]
                 ) -> route_pb2.RouteConfiguration:
    """`routes`: (prefix, cluster) or (prefix, {cluster: weight, ...})."""
    out = []
    for prefix, target in routes:
        action = route_components_pb2.RouteAction()
        if isinstance(target, str):
            action.cluster = target
        else:
            action.weighted_clusters.CopyFrom(route_components_pb2.WeightedCluster(clusters=[
                route_components_pb2.WeightedCluster.ClusterWeight(
                    name=c, weight=wrappers_pb2.UInt32Value(value=w))
                for c, w in target.items()]))
        out.append(route_components_pb2.Route(
            match=route_components_pb2.RouteMatch(prefix=prefix), route=action))
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[
        route_components_pb2.VirtualHost(name="all", domains=["*"], routes=out)])
