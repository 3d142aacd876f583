"""Is a config document an Envoy v3 bootstrap? Decided from its shape.

fastmesh's own root keys (listeners, clusters, admin {address, port}) and
an Envoy bootstrap's (static_resources, dynamic_resources, node, admin with
address.socket_address) do not overlap except for ``admin``, which the
shape of its ``address`` tells apart.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ENVOY_ROOT_KEYS = ("static_resources", "dynamic_resources", "node", "layered_runtime")


def is_envoy_bootstrap(doc: Any) -> bool:
    """True when ``doc`` (parsed YAML/JSON) has the shape of an Envoy v3 Bootstrap."""
    if not isinstance(doc, Mapping):
        return False
    if any(k in doc for k in ENVOY_ROOT_KEYS):
        return True
    admin = doc.get("admin")
    return (isinstance(admin, Mapping) and isinstance(admin.get("address"), Mapping)
            and "socket_address" in admin["address"])
