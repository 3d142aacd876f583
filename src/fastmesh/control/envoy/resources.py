"""xDS resources (proto3-JSON dicts) to fastmesh's native config: the xDS client's entry.

The xDS client decodes each resource (``MessageToDict(msg,
preserving_proto_field_name=True)``) and, once a consistent set is warm,
calls ``translate_resources`` with every listener, cluster, route
configuration, load assignment and secret it holds; the result goes through
fastmesh's versioned apply as a native config. Errors name the resource:
``clusters[backend].load_assignment.endpoints[0]...``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastmesh.control.envoy.clusters import translate_cluster
from fastmesh.control.envoy.engine import Tx
from fastmesh.control.envoy.listeners import translate_listener
from fastmesh.control.envoy.validate import validate_native
from fastmesh.control.loader import ConfigError

log = logging.getLogger("fastmesh.envoy")


def _root(kind: str, res: Any, i: int) -> str:
    name = res.get("name") if isinstance(res, Mapping) else None
    return f"{kind}[{name if isinstance(name, str) and name else i}]"


def translate_resources(listeners: list[dict], clusters: list[dict],
                        route_configs: dict[str, dict], load_assignments: dict[str, dict],
                        secrets: dict[str, dict], *, admin: dict | None = None,
                        validate: bool = True) -> dict[str, Any]:
    """Envoy resources in their proto3-JSON dict shape to a native fastmesh config dict.

    ``route_configs`` (RDS) and ``secrets`` (SDS) are by resource name.
    ``load_assignments`` is accepted and not used: an EDS cluster fed over ADS or
    api_config_source becomes native ``type: eds, eds_config: {ads: {}}`` and the xDS
    client publishes its assignments through the discovery path. ``admin`` is the
    native admin mapping to keep (``Bootstrap.config.get("admin")``). A route
    configuration without virtual hosts (or a virtual host without routes) answers 404,
    as Envoy. A listener whose RDS route configuration is not in ``route_configs`` is an
    error: call once the resources it needs are warm. With ``validate`` (the default,
    when there is at least one listener) the result is also checked as fastmesh checks
    its own config. Raises ``ConfigError`` whose path starts with the resource
    (``listeners[web]...``).
    """
    tx = Tx(None)
    tx.route_configs = dict(route_configs)
    tx.secrets = dict(secrets)
    native: dict[str, Any] = {"listeners": [], "clusters": []}
    if admin is not None:
        native["admin"] = dict(admin)
    for i, c in enumerate(clusters):
        k = len(native["clusters"])
        root = (_root("clusters", c, i),)
        tx.paths[("clusters", k)] = root
        native["clusters"].append(translate_cluster(tx, root, ("clusters", k), c))
    for i, lst in enumerate(listeners):
        k = len(native["listeners"])
        root = (_root("listeners", lst, i),)
        tx.paths[("listeners", k)] = root
        out = translate_listener(tx, root, ("listeners", k), lst)
        if "_rds" in out:
            name, epath = out.pop("_rds")
            tx.error(epath + ("route_config_name",),
                     f"route configuration {name!r} has not been received (RDS)")
        native["listeners"].append(out)
    tx.raise_if_errors()
    for w in tx.warnings:
        log.warning("%s", w)
    if validate and native["listeners"]:
        validate_native(tx, native, source="<xds>")
    return native


__all__ = ["translate_resources", "ConfigError"]
