"""Admin ``/clusters``: every cluster's current endpoints, as Envoy shows them.

Three steps, so that a supervisor can merge its workers' answers:

1. ``worker_clusters(worker)`` (in each worker, from the live
   ClusterStates): per cluster, per endpoint, what only the data side knows:
   weight, health flags (the EP_* bits), and the per-endpoint counters
   (``rq_total``, ``rq_active``, ``cx_active``). Plain lists, so it crosses
   the worker channel as JSON.
2. ``merge(answers, config, discovered)`` (in the process that owns the
   config): the workers' answers summed per endpoint (flags OR-ed: an
   endpoint one worker ejected is shown ejected), with what only the control
   side knows: each cluster's discovery type and, for discovered endpoints,
   their locality, priority and source health status.
3. ``render_text`` / ``render_json``: Envoy's text lines
   ``cluster::host:port::field::value`` and its ``admin.v3.Clusters`` JSON
   (``?format=json``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastmesh import _core
from fastmesh.control.eds_file import DiscoveredEndpoint
from fastmesh.control.schema import Config

__all__ = ["worker_clusters", "merge", "render_text", "render_json", "flag_names"]

# EP_* bit -> Envoy's health flag name (the text format's `/name` pieces).
_FLAGS = sorted(((bit, name) for name, bit in _core.HEALTH_FLAGS.items()))
# Envoy's HostHealthStatus field for each flag (the JSON format).
_JSON_FLAG_FIELDS = {
    "failed_active_hc": "failed_active_health_check",
    "failed_outlier_check": "failed_outlier_check",
    "pending_dynamic_removal": "pending_dynamic_removal",
    "excluded_manual": "excluded_manual",           # fastmesh's (set_excluded)
}
# Per-endpoint counters, Envoy's names and metric types.
STATS = (("cx_active", "GAUGE"), ("rq_active", "GAUGE"), ("rq_total", "COUNTER"))

# One endpoint from a worker: host, port, weight, flags, cx_active, rq_active, rq_total.
WorkerEndpoint = list[Any]


def worker_clusters(worker: Any) -> dict[str, list[WorkerEndpoint]]:
    """One worker's clusters and endpoints, as plain lists (JSON-able)."""
    out: dict[str, list[WorkerEndpoint]] = {}
    for name, state in worker.clusters.items():
        out[name] = [[ep.host, ep.port, ep.weight, ep.health_flags, ep.cx_active,
                      ep.rq_active, ep.rq_total] for ep in state.endpoints]
    return out


def flag_names(flags: int) -> list[str]:
    """Envoy's health flag names of an EP_* bit set."""
    return [name for bit, name in _FLAGS if flags & bit]


def merge(answers: Iterable[Mapping[str, list[WorkerEndpoint]]], config: Config,
          discovered: Mapping[str, Iterable[DiscoveredEndpoint]] | None = None
          ) -> list[dict[str, Any]]:
    """The workers' answers as one list of cluster statuses, in config order:
    ``{"name", "discovery_type", "hosts": [{"host", "port", "weight",
    "health_flags": [...], "eds_health_status", "region", "zone", "sub_zone",
    "priority", "cx_active", "rq_active", "rq_total"}]}``. Counters are summed
    over workers; an endpoint any worker has is listed."""
    answers = list(answers)
    meta: dict[tuple[str, str, int], DiscoveredEndpoint] = {}
    for cluster, eps in (discovered or {}).items():
        for e in eps:
            meta[(cluster, e.host, e.port)] = e
    out: list[dict[str, Any]] = []
    for cfg in config.clusters:
        hosts: dict[tuple[str, int], dict[str, Any]] = {}
        for answer in answers:
            for host, port, weight, flags, cx, rq_active, rq_total in answer.get(cfg.name, ()):
                h = hosts.get((host, port))
                if h is None:
                    h = hosts[(host, port)] = {"host": host, "port": port, "weight": weight,
                                               "flags": 0, "cx_active": 0, "rq_active": 0,
                                               "rq_total": 0}
                h["flags"] |= flags
                h["cx_active"] += cx
                h["rq_active"] += rq_active
                h["rq_total"] += rq_total
        rows = []
        for h in hosts.values():
            m = meta.get((cfg.name, h["host"], h["port"]))
            flags = h.pop("flags")
            rows.append({**h, "health_flags": flag_names(flags),
                         "eds_health_status": m.health_status if m is not None and
                         m.health_status != "UNKNOWN" else "HEALTHY",
                         "region": m.region if m else "", "zone": m.zone if m else "",
                         "sub_zone": m.sub_zone if m else "",
                         "priority": m.priority if m else 0})
        out.append({"name": cfg.name, "discovery_type": cfg.discovery.type, "hosts": rows})
    return out


def render_text(clusters: list[dict[str, Any]]) -> str:
    """Envoy's /clusters text: one ``cluster::host:port::field::value`` line
    per field (``cluster::field::value`` for the cluster's own)."""
    lines: list[str] = []
    for c in clusters:
        n = c["name"]
        lines.append(f"{n}::added_via_api::false")
        lines.append(f"{n}::discovery_type::{c['discovery_type']}")
        for h in c["hosts"]:
            p = f"{n}::{h['host']}:{h['port']}::"
            for stat, _ in STATS:
                lines.append(f"{p}{stat}::{h[stat]}")
            lines.append(f"{p}hostname::")
            flags = "".join(f"/{f}" for f in h["health_flags"]) or "healthy"
            lines.append(f"{p}health_flags::{flags}")
            lines.append(f"{p}weight::{h['weight']}")
            for field in ("region", "zone", "sub_zone"):
                lines.append(f"{p}{field}::{h[field]}")
            lines.append(f"{p}canary::false")
            lines.append(f"{p}priority::{h['priority']}")
    return "\n".join(lines) + ("\n" if lines else "")


def render_json(clusters: list[dict[str, Any]]) -> dict[str, Any]:
    """Envoy's admin.v3.Clusters as JSON (proto3 JSON: 64-bit counters as
    strings, false flags left out), plus ``discovery_type`` per cluster."""
    statuses = []
    for c in clusters:
        hosts = []
        for h in c["hosts"]:
            eds = h["eds_health_status"]
            if eds == "HEALTHY" and "failed_eds_health" in h["health_flags"]:
                eds = "UNHEALTHY"
            health: dict[str, Any] = {"eds_health_status": eds}
            for f in h["health_flags"]:
                if f in _JSON_FLAG_FIELDS:
                    health[_JSON_FLAG_FIELDS[f]] = True
            hosts.append({
                "address": {"socket_address": {"address": h["host"], "port_value": h["port"]}},
                "stats": [{"name": s, "type": t, "value": str(h[s])} for s, t in STATS],
                "health_status": health,
                "weight": h["weight"],
                "locality": {"region": h["region"], "zone": h["zone"],
                             "sub_zone": h["sub_zone"]},
                "priority": h["priority"],
            })
        statuses.append({"name": c["name"], "added_via_api": False,
                         "discovery_type": c["discovery_type"], "host_statuses": hosts})
    return {"cluster_statuses": statuses}
