"""Native validation of a translated config, its errors reported at the Envoy field.

The translated dict goes through fastmesh's own validation
(``validation._parse_root``), the same as a native file; a context that
maps each native key path back to the Envoy path it came from (``Tx.paths``)
rewrites every error's path and line.
"""
from __future__ import annotations

from typing import Any

from fastmesh.control.envoy.engine import Tx
from fastmesh.control.loader import ConfigError, Path, _Ctx, _format_path
from fastmesh.control.schema import Config


class _EnvoyCtx(_Ctx):
    def __init__(self, tx: Tx, source: str) -> None:
        super().__init__(source)
        self.tx = tx

    def error(self, path: Path, reason: str, *, key: bool = False,
              line: int | None = None) -> None:
        epath = self.tx.envoy_path(path)
        self.errors.append(ConfigError(self.source, self.tx.line(epath, key), _format_path(epath),
                                       reason))


def validate_native(tx: Tx, native: dict[str, Any], source: str | None = None, *,
                    min_listeners: int = 1) -> Config:
    """Validate ``native`` as fastmesh validates its own config; raise ``ConfigError``
    at the Envoy path and line of the first problem. ``min_listeners=0``: an xDS
    bootstrap, whose listeners may all come from the management server."""
    from fastmesh.control.validation import _parse_root

    tx.raise_if_errors()
    ctx = _EnvoyCtx(tx, source or tx.file or "<envoy>")
    ctx.min_listeners = min_listeners
    config = _parse_root(ctx, native)
    _check_dropped_refs(tx, ctx, native)
    ctx.raise_if_errors()
    return config


def _check_dropped_refs(tx: Tx, ctx: _EnvoyCtx, native: dict[str, Any]) -> None:
    # A weight-0 cluster is left out of the native route; its name must still exist.
    names = {c.get("name") for c in native.get("clusters", []) if isinstance(c, dict)}
    for epath, name in tx.zero_weight_refs:
        if name not in names:
            ctx.errors.append(ConfigError(ctx.source, tx.line(epath), _format_path(epath),
                                          f"unknown cluster {name!r}"))
