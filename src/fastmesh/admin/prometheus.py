"""Render the data plane's counters in the Prometheus text exposition format."""
from __future__ import annotations

from typing import Any

# Counters that are gauges (they go down as well as up).
_GAUGES = {"downstream_cx_active", "downstream_rq_active", "upstream_rq_active",
           "upstream_cx_active", "workers", "workers_ready"}


def _metric(lines: list[str], name: str, value: Any, labels: str = "") -> None:
    kind = "gauge" if name.split("fastmesh_", 1)[-1].split("cluster_", 1)[-1] in _GAUGES else "counter"
    lines.append(f"# TYPE {name} {kind}")
    lines.append(f"{name}{labels} {value}")


def render_prometheus(stats: dict[str, Any]) -> str:
    """Worker-wide counters become ``fastmesh_<name>``; responses by class
    become ``fastmesh_downstream_rq_xx{response_code_class="2xx"}``; cluster
    counters become ``fastmesh_cluster_<name>{cluster="..."}``."""
    lines: list[str] = []
    classes = []
    for key, value in sorted(stats.items()):
        if key == "clusters" or not isinstance(value, (int, float)):
            continue
        if key.startswith("downstream_rq_") and key[-2:] == "xx":
            classes.append((key[-3:], value))
            continue
        _metric(lines, f"fastmesh_{key}", value)
    if classes:
        lines.append("# TYPE fastmesh_downstream_rq_xx counter")
        for cls, value in classes:
            lines.append(f'fastmesh_downstream_rq_xx{{response_code_class="{cls}"}} {value}')
    clusters: dict[str, dict[str, Any]] = stats.get("clusters", {})
    names = sorted({k for c in clusters.values() for k in c})
    for key in names:
        kind = "gauge" if key in _GAUGES else "counter"
        lines.append(f"# TYPE fastmesh_cluster_{key} {kind}")
        for cname, cstats in sorted(clusters.items()):
            label = cname.replace("\\", "\\\\").replace('"', '\\"')
            lines.append(f'fastmesh_cluster_{key}{{cluster="{label}"}} {cstats.get(key, 0)}')
    return "\n".join(lines) + "\n"


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the counters of several workers."""
    out: dict[str, Any] = {}
    clusters: dict[str, dict[str, Any]] = {}
    for part in parts:
        for key, value in part.items():
            if key == "clusters":
                for cname, cstats in value.items():
                    dst = clusters.setdefault(cname, {})
                    for k, v in cstats.items():
                        dst[k] = dst.get(k, 0) + v
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = out.get(key, 0) + value
    out["clusters"] = clusters
    return out
