"""Bootstraps for a proxy fed by the test's xDS server: the same Envoy v3
bootstrap runs fastmesh (`fastmesh run -c`) and Envoy (`envoy -c`)."""
from __future__ import annotations

from pathlib import Path

import yaml

from support.meshproc import Proc, fastmesh_argv


def bootstrap(node: str, admin: int, xds_port: int, delta: bool,
              initial_fetch_timeout: str = "5s") -> dict:
    """dynamic_resources over ADS to 127.0.0.1:xds_port (a static cluster)."""
    ads = {"ads": {}, "resource_api_version": "V3",
           "initial_fetch_timeout": initial_fetch_timeout}
    return {
        "node": {"id": node, "cluster": "test-cluster",
                 "metadata": {"role": "sidecar", "node": node},
                 "locality": {"region": "local", "zone": "a"}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "DELTA_GRPC" if delta else "GRPC",
                           "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]},
            "cds_config": ads, "lds_config": ads},
        "static_resources": {"clusters": [{
            "name": "xds_cluster", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                             "HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": xds_port}}}}]}]}}]},
    }


class XdsMesh(Proc):
    """fastmesh --single-process (or with workers) on an xDS bootstrap."""

    name = "fastmesh"

    def __init__(self, tmp: Path, node: str, xds_port: int, delta: bool, *args: str,
                 ready: bool = True) -> None:
        super().__init__(tmp)
        self.node = node
        cfg = self.tmp / f"{node}.yaml"
        cfg.write_text(yaml.safe_dump(bootstrap(node, self.admin, xds_port, delta)))
        self.spawn(fastmesh_argv(cfg, *(args or ("--single-process",))), ready=ready)


class XdsEnvoy(Proc):
    """A real Envoy on the same kind of bootstrap."""

    name = "envoy"

    def __init__(self, tmp: Path, node: str, xds_port: int, delta: bool,
                 ready: bool = True) -> None:
        super().__init__(tmp)
        self.node = node
        cfg = self.tmp / f"{node}.yaml"
        cfg.write_text(yaml.safe_dump(bootstrap(node, self.admin, xds_port, delta)))
        self.spawn(["envoy", "-c", str(cfg), "--concurrency", "1", "-l", "warning",
                    "--base-id", str(self.admin), "--disable-hot-restart"], ready=ready)
