#!/usr/bin/env bash
# Install fastmesh with its test and bench extras (and the system tools the
# suite runs against), then run the whole test suite. Works on a fresh
# Debian/Ubuntu machine as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi

# System tools: nginx (origin for bench), haproxy (bench peer), wrk (HTTP/1.1 load),
# h2load from nghttp2-client (HTTP/2 load), a C compiler for the Cython build,
# etcd from etcd-server (a real etcd for tests/test_etcd_discovery.py),
# testssl.sh (tests/test_tls.py: no finding on a TLS listener), buildah and
# debootstrap (tests/test_image.py builds the image with no registry), podman
# (to run it where the kernel lets it).
need=()
command -v nginx   >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk     >/dev/null || need+=(wrk)
command -v h2load  >/dev/null || need+=(nghttp2-client)
command -v gcc     >/dev/null || need+=(gcc)
command -v etcd    >/dev/null || need+=(etcd-server)
command -v buildah >/dev/null || need+=(buildah)
command -v podman  >/dev/null || need+=(podman)
command -v debootstrap >/dev/null || need+=(debootstrap)
# iptables (legacy and nft) and iproute2 (ip netns, veth): the interception
# tests (tests/test_interception.py) build network namespaces with NAT rules.
command -v iptables-legacy >/dev/null || need+=(iptables)
command -v ip      >/dev/null || need+=(iproute2)
command -v chromium >/dev/null || need+=(chromium)
command -v testssl >/dev/null || need+=(testssl.sh)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing system packages: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

python3 -m pip install -q -e '.[test,bench]'
# xds-protos ships its own, older copy of opentelemetry/proto/*; when it is
# installed after opentelemetry-proto the OTLP exporters cannot import. Put
# opentelemetry-proto's (a superset) back.
if ! python3 -c 'from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope' 2>/dev/null; then
    v=$(python3 -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')
    python3 -m pip install -q --force-reinstall --no-deps "opentelemetry-proto==$v"
fi

python3 -m pytest -q -p no:cacheprovider "$@"
