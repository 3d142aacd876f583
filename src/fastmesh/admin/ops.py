"""What the admin endpoints ask of the runtime, beyond stats and config.

``AdminOps`` is a bag of optional callbacks that the supervisor, the single
process and the embedding API each fill in their own way (a supervisor
forwards to every worker over its channel; a single process acts on its one
DataPlane). The admin server (admin/server.py) only calls them. Also here:
the helpers that work the same everywhere (log levels, process memory).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

# Envoy's log level names -> Python's.
LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
          "warning": logging.WARNING, "warn": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL, "off": logging.CRITICAL + 10}
_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
          logging.ERROR: "error", logging.CRITICAL: "critical", logging.CRITICAL + 10: "off"}


@dataclass
class AdminOps:
    """Optional runtime actions; an endpoint whose callback is None says so (501)."""

    # POST /reset_counters: every worker's counters and histograms to 0.
    reset_counters: Callable[[], Awaitable[None]] | None = None
    # POST /drain_listeners[?graceful]: stop accepting; graceful also tells
    # open connections to close (Connection: close, GOAWAY).
    drain_listeners: Callable[[bool], Awaitable[None]] | None = None
    # POST /logging: {logger name: level} to apply in every process.
    set_log_levels: Callable[[dict[str, int]], Awaitable[None]] | None = None
    # /listeners: name -> bound (host, port).
    listeners: Callable[[], dict[str, Any]] | None = None
    # /server_info: command_line_options (concurrency, config_path, ...).
    options: Callable[[], dict[str, Any]] = field(default=dict)
    # /memory, the dashboard: the pids of the processes serving (workers).
    pids: Callable[[], list[int]] = field(default=lambda: [os.getpid()])
    # The dashboard: per worker {id, pid, ready, restarts, version}.
    workers: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None


def apply_log_levels(levels: dict[str, int]) -> None:
    """Set logger levels in this process ("" is the root logger: every
    logger without its own level)."""
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
        if not name:
            # Envoy's ?level= sets every logger: ours too, not only the root.
            for other in list(logging.root.manager.loggerDict):
                if other.startswith("fastmesh"):
                    logging.getLogger(other).setLevel(level)


def log_levels() -> dict[str, str]:
    """The fastmesh loggers and their effective levels (POST /logging with
    no parameter, as Envoy lists its loggers)."""
    out = {"": _NAMES.get(logging.root.level, str(logging.root.level))}
    for name in sorted(logging.root.manager.loggerDict):
        if name.startswith("fastmesh"):
            lvl = logging.getLogger(name).getEffectiveLevel()
            out[name] = _NAMES.get(lvl, str(lvl))
    return out


def process_memory(pids: list[int]) -> dict[str, Any]:
    """Envoy's /memory (admin.v3.Memory: uint64 as strings) for these
    processes from /proc: ``allocated`` anonymous resident memory,
    ``heap_size`` data segments, ``total_physical_bytes`` resident; plus
    fastmesh's per-process ``processes`` list."""
    procs = []
    for pid in pids:
        st: dict[str, int] = {}
        try:
            with open(f"/proc/{pid}/status", encoding="ascii") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    if key in ("VmRSS", "RssAnon", "VmData"):
                        st[key] = int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            continue
        procs.append({"pid": pid, "rss_bytes": st.get("VmRSS", 0),
                      "anon_bytes": st.get("RssAnon", 0), "data_bytes": st.get("VmData", 0)})
    return {
        "allocated": str(sum(p["anon_bytes"] for p in procs)),
        "heap_size": str(sum(p["data_bytes"] for p in procs)),
        "pageheap_unmapped": "0",
        "pageheap_free": "0",
        "total_thread_cache": "0",
        "total_physical_bytes": str(sum(p["rss_bytes"] for p in procs)),
        "processes": procs,
    }


def plane_ops(plane: Any, config_path: Callable[[], str]) -> AdminOps:
    """The actions of a process that is its own worker (single process,
    embedded): they act on its one DataPlane."""
    async def reset_counters() -> None:
        plane.reset_counters()

    async def drain_listeners(graceful: bool) -> None:
        plane.stop_listening(graceful)

    async def workers() -> list[dict[str, Any]]:
        return [{"id": 0, "pid": os.getpid(), "ready": True, "restarts": 0}]

    return AdminOps(
        reset_counters=reset_counters, drain_listeners=drain_listeners,
        listeners=lambda: dict(plane.addresses),
        options=lambda: {"config_path": config_path(), "concurrency": 1,
                         "log_level": logging.getLevelName(logging.root.level).lower(),
                         "drain_time": f"{plane.config.drain_timeout:g}s"},
        workers=workers)
