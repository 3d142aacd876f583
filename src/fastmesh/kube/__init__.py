"""Kubernetes: sidecar injection (`fastmesh inject`)."""
