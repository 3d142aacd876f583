"""An Envoy v3 Bootstrap to fastmesh's native config (plus what the xDS client needs).

``translate_bootstrap`` reads ``admin``, ``node``, ``static_resources`` and
``layered_runtime`` (ignored with a note), and hands ``dynamic_resources``
back untouched for the xDS client. ``config_from_bootstrap`` is what
``parse_config`` calls for a file detected as a bootstrap: translate, then
validate natively with errors at the Envoy path and line.
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastmesh.control.envoy.clusters import translate_cluster
from fastmesh.control.envoy.engine import (
    Path,
    Table,
    Tx,
    custom,
    ignore,
    reject,
)
from fastmesh.control.envoy.listeners import address, translate_listener
from fastmesh.control.envoy.tls import secrets_by_name
from fastmesh.control.envoy.validate import validate_native
from fastmesh.control.loader import ConfigError, _compose, _Ctx
from fastmesh.control.schema import Config

log = logging.getLogger("fastmesh.envoy")

T_BOOT = "test_bootstrap_translated"
T_REJECT = "test_rejections"


@dataclass(frozen=True)
class Bootstrap:
    """A translated bootstrap.

    ``config``: fastmesh's native config dict (static resources);
    ``dynamic_resources``: the bootstrap's ``dynamic_resources`` untouched (None if absent);
    ``node``: the ``node`` mapping (None if absent), for the xDS client's requests;
    ``static_resources``: the raw ``static_resources`` (the xDS client passes its listeners
    and clusters to ``translate_resources`` with the dynamic ones);
    ``rds``: ``(listener name, route_config_name)`` of static listeners whose routes come
    from RDS (left out of ``config`` until the xDS client has them);
    ``warnings``: what was skipped or ignored, one line each (also logged).
    """

    config: dict[str, Any]
    dynamic_resources: dict[str, Any] | None
    node: dict[str, Any] | None
    static_resources: dict[str, Any]
    rds: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...]
    _tx: Tx = field(repr=False, compare=False)

    def __iter__(self):
        """``native, dynamic = translate_bootstrap(...)`` unpacks the two main parts."""
        return iter((self.config, self.dynamic_resources))

    def validate(self) -> Config:
        """The native config validated, errors at the Envoy path and line (with
        ``dynamic_resources``, a config without listeners is valid)."""
        return validate_native(self._tx, self.config,
                               min_listeners=0 if self.dynamic_resources else 1)


# ---------------------------------------------------------------- tables

def _admin_address(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    address(tx, epath, npath, value, out)
    try:
        loopback = ipaddress.ip_address(out.get("address", "")).is_loopback
    except ValueError:
        loopback = out.get("address") == "localhost"
    if "address" in out and not loopback:
        # Envoy serves a non-loopback admin as asked; fastmesh wants allow_remote.
        out["allow_remote"] = True
        tx.warn(epath, "the admin listens beyond loopback, as this bootstrap asks: it has "
                "no authentication")


ADMIN = Table("envoy.config.bootstrap.v3.Admin", (
    custom("address", "admin.address, admin.port", _admin_address,
           "a non-loopback address is served with a warning (allow_remote)", T_BOOT),
    ignore("access_log_path", "fastmesh's admin keeps no access log", T_BOOT, warn=True),
    ignore("access_log", "fastmesh's admin keeps no access log", T_BOOT, warn=True),
    ignore("profile_path", "no profiler", T_BOOT),
    reject("socket_options", "admin socket options", T_REJECT),
))

NODE = Table("envoy.config.core.v3.Node", (
    ignore("id", "sent by the xDS client", T_BOOT),
    ignore("cluster", "sent by the xDS client", T_BOOT),
    ignore("metadata", "sent by the xDS client", T_BOOT),
    ignore("locality", "sent by the xDS client", T_BOOT),
    ignore("user_agent_name", "the xDS client sends its own", T_BOOT),
    ignore("user_agent_version", "the xDS client sends its own", T_BOOT),
    ignore("client_features", "the xDS client sends its own", T_BOOT),
))


def _list_of(kind: str, translate, target: str):
    def handler(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
        if not isinstance(value, list):
            tx.error(epath, f"expected a list of {kind}")
            return
        items = out.setdefault(target, [])
        for i, v in enumerate(value):
            k = len(items)
            items.append(translate(tx, epath + (i,), (target, k), v))
            tx.paths[(target, k)] = epath + (i,)
    return handler


STATIC_RESOURCES = Table("envoy.config.bootstrap.v3.Bootstrap.StaticResources", (
    custom("listeners", "listeners", _list_of("listeners", translate_listener, "listeners"),
           "", "test_listeners_translated"),
    custom("clusters", "clusters", _list_of("clusters", translate_cluster, "clusters"), "",
           "test_clusters_translated"),
    custom("secrets", "", lambda tx, e, n, v, o: None,
           "tls_certificate and validation_context, referenced by name", "test_tls_contexts"),
))


BOOTSTRAP = Table("envoy.config.bootstrap.v3.Bootstrap", (
    custom("node", "", lambda tx, e, n, v, o: tx.walk(NODE, e, n, v, {}),
           "kept for the xDS client", T_BOOT),
    custom("static_resources", "listeners, clusters", lambda tx, e, n, v, o: tx.walk(
        STATIC_RESOURCES, e, n, v, o), "", T_BOOT),
    ignore("dynamic_resources", "handed to the xDS client untouched", T_BOOT),
    custom("admin", "admin", lambda tx, e, n, v, o: _admin(tx, e, n, v, o), "", T_BOOT),
    ignore("layered_runtime", "fastmesh has no runtime layer", T_BOOT, warn=True),
    reject("overload_manager", "Envoy's overload manager (fastmesh has its own "
           "overload_manager keys)", T_REJECT),
    reject("stats_sinks", "stats sinks (fastmesh serves /stats/prometheus)", T_REJECT),
    reject("tracing", "tracing", T_REJECT),
    reject("cluster_manager", "cluster_manager settings", T_REJECT),
    reject("watchdogs", "watchdogs", T_REJECT),
))


def _admin(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    admin: dict = {}
    tx.set(out, npath, "admin", admin, epath)
    tx.walk(ADMIN, epath, npath + ("admin",), value, admin)
    if isinstance(value, Mapping) and "address" not in value:
        tx.error(epath, "missing required field 'address'")


# ---------------------------------------------------------------- entry points

def _doc(doc: Any, file: str | None) -> tuple[Any, _Ctx | None]:
    if isinstance(doc, (str, bytes)):
        lines = _Ctx(file or "<envoy>")
        parsed = _compose(lines, doc)
        lines.raise_if_errors()
        return parsed, lines
    return doc, None


def translate_bootstrap(doc: Any, file: str | None = None, *,
                        route_configs: dict[str, dict] | None = None,
                        load_assignments: dict[str, dict] | None = None,
                        secrets: dict[str, dict] | None = None,
                        lines: _Ctx | None = None) -> Bootstrap:
    """Translate an Envoy v3 Bootstrap (YAML/JSON text, or the parsed dict).

    ``file`` names it in errors (with text input every error has its line).
    ``route_configs`` and ``secrets`` (by name, proto3-JSON dicts) complete static
    listeners using ``rds`` and SDS secrets. ``load_assignments`` is accepted and not
    used: an EDS cluster fed by the xDS client becomes native ``eds_config: {ads: {}}``
    and its endpoints take the discovery path.
    Raises ``ConfigError`` at the Envoy path of the first problem; does not run native
    validation (``Bootstrap.validate()`` does).
    """
    if lines is None:
        doc, lines = _doc(doc, file)
    tx = Tx(file, lines)
    tx.route_configs = route_configs
    native: dict[str, Any] = {}
    static = doc.get("static_resources", {}) if isinstance(doc, Mapping) else {}
    if isinstance(static, Mapping) and "secrets" in static:
        tx.secrets.update(secrets_by_name(tx, ("static_resources", "secrets"), static["secrets"]))
    tx.secrets.update(secrets or {})
    tx.walk(BOOTSTRAP, (), (), doc, native)
    rds = _set_aside_rds(tx, native)
    tx.raise_if_errors()
    for w in tx.warnings:
        log.warning("%s", w)
    dyn = doc.get("dynamic_resources")
    return Bootstrap(config=native, dynamic_resources=dyn, node=doc.get("node"),
                     static_resources=dict(static) if isinstance(static, Mapping) else {},
                     rds=rds, warnings=tuple(tx.warnings), _tx=tx)


def _set_aside_rds(tx: Tx, native: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Listeners waiting for their RDS routes leave the native config (Envoy warms them)."""
    waiting = []
    kept = []
    for i, lst in enumerate(native.get("listeners", [])):
        if "_rds" in lst:
            name, _ = lst.pop("_rds")
            waiting.append((lst.get("name", f"listeners[{i}]"), name))
        else:
            kept.append((i, lst))
    if waiting:
        for j, (i, lst) in enumerate(kept):
            # Renumber the path map for the listeners that stay.
            for npath, epath in list(tx.paths.items()):
                if npath[:2] == ("listeners", i) and i != j:
                    tx.paths[("listeners", j) + npath[2:]] = epath
        native["listeners"] = [lst for _, lst in kept]
    return tuple(waiting)


def config_from_bootstrap(doc: Any, lines: _Ctx | None, source: str) -> Config:
    """``parse_config``'s path for a bootstrap: translate, then validate natively.

    With ``dynamic_resources`` (which ``fastmesh run`` hands to the xDS client) the
    static part is what is checked and returned, and ``dynamic_resources`` is checked
    by the xDS client's own reader; without, nothing may wait for the xDS client."""
    boot = translate_bootstrap(doc, source, lines=lines)
    tx = boot._tx
    if boot.dynamic_resources:
        from fastmesh.control.xds.bootstrap import settings_of

        try:
            settings_of(doc, source)
        except ConfigError as exc:
            # The xDS reader knows paths, not lines: add the line of the field.
            tx.error(tuple(_split(exc.path)), exc.reason)
        tx.raise_if_errors()
        return boot.validate()
    if tx.ads_eds:
        name, spath = tx.ads_eds[0]
        tx.error(spath + ("eds_config",), f"the endpoints of {name!r} come from the xDS "
                 "client (ads, api_config_source), which needs dynamic_resources.ads_config; "
                 "a file ConfigSource (path_config_source) works without it")
        tx.raise_if_errors()
    if boot.rds:
        lst, name = boot.rds[0]
        idx = [i for i, l in enumerate(doc["static_resources"].get("listeners", []))
               if isinstance(l, Mapping) and l.get("name") == lst]
        tx.error(("static_resources", "listeners", idx[0] if idx else 0),
                 f"listener {lst!r} takes its routes from RDS ({name!r}), which needs the "
                 "xDS client (dynamic_resources.ads_config); or give it an inline "
                 "route_config")
        tx.raise_if_errors()
    return boot.validate()


def _split(path: str) -> list[str | int]:
    """'dynamic_resources.ads_config.grpc_services[0]' -> its parts."""
    import re

    out: list[str | int] = []
    for m in re.finditer(r"\[(\d+)\]|([^.\[\]]+)", path or ""):
        out.append(int(m.group(1)) if m.group(1) else m.group(2))
    return out
