# syntax=docker/dockerfile:1
# The fastmesh image: the proxy in a virtualenv, no compiler, a non-root user.
#
#   docker build -t fastmesh .         (or: podman build / buildah bud)
#   docker run -v $PWD/fastmesh.yaml:/etc/fastmesh/fastmesh.yaml:ro -p 10000:10000 fastmesh
#
# The config is read from /etc/fastmesh/fastmesh.yaml (mount it, or a
# ConfigMap there: deploy/), or from $FASTMESH_CONFIG; listeners bind what it
# says. With no config the demo runs, on loopback inside the container.
# Workers default to the container's CPU quota (cgroup v1/v2), not the host's
# cores. BASE is any Debian bookworm image with python3.11 on PATH;
# tests/test_image.py builds one from Debian packages (debootstrap) so that no
# image registry is needed (docs/deploy.md).
ARG BASE=python:3.11-slim

# Build stage: compile the Cython data plane and install it with its
# dependencies into /opt/fastmesh.
FROM ${BASE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       gcc libc6-dev python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/fastmesh
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# PIP_CERT: a CA bundle for pip where HTTPS goes through an intercepting
# proxy (mount it with `--volume`); empty = pip's own bundle.
ARG PIP_CERT=""
RUN if [ -n "$PIP_CERT" ]; then export PIP_CERT; else unset PIP_CERT; fi \
    && /opt/fastmesh/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/fastmesh/bin/fastmesh --version

# Runtime stage: the virtualenv and the uid the injected sidecar runs as
# (1337, Istio's proxy uid, which `fastmesh iptables` exempts from capture).
FROM ${BASE}
COPY --from=build /opt/fastmesh /opt/fastmesh
RUN groupadd --system --gid 1337 fastmesh \
    && useradd --system --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin fastmesh \
    && mkdir -p /etc/fastmesh
ENV PATH=/opt/fastmesh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 1337:1337
# 10000: the demo and the examples' ingress; 15001/15006: a sidecar's
# outbound/inbound (deploy/sidecar-configmap.yaml). Admin stays on loopback.
EXPOSE 10000 15001 15006
# /ready on the admin port the config names (fastmesh request reads it).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["fastmesh", "request", "GET", "/ready"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["fastmesh"]
CMD ["run"]
