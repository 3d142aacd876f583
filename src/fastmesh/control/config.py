"""The fastmesh config file: YAML in, validated immutable objects out.

This layer reads a config file (or a string or dict), checks every key
against the schema in ``docs/config.md`` and returns a ``Config``: a tree of
frozen dataclasses holding tuples, never lists, so a snapshot can be shared
by every worker without copying or locking. Defaults are filled in here,
durations become float seconds and sizes int bytes, so the compile step
(which turns a ``Config`` into data-plane tables) never sees the raw YAML.
The data plane never reads config.

Errors point at the source: the YAML is composed into nodes
(``yaml.SafeLoader``), so every key and value keeps its line, and a
``ConfigError`` reads ``fastmesh.yaml:12: listeners[0].port: ...``. All
problems found in one pass are kept in ``ConfigError.errors``; the raised
error is the first one in file order.

The layer is split one concern per file, and this module is its public
face (import from here): ``schema`` (the dataclasses, defaults, limits and
enums), ``loader`` (YAML to plain data with lines, ``ConfigError``),
``validation`` (plain data to dataclasses, every error in one pass) and
``dump`` (``config_to_dict``). The entry points below run loader, then
validation.

Public API: ``load_config``, ``parse_config``, ``default_config``,
``config_to_dict``, ``ConfigError`` and the dataclasses below.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from typing import Any

from fastmesh.control.dump import config_to_dict
from fastmesh.control.loader import ConfigError, _compose, _Ctx
from fastmesh.control.schema import (
    LB_POLICIES,
    PROTOCOLS,
    AdminConfig,
    ClusterConfig,
    Config,
    DirectResponseConfig,
    EndpointConfig,
    HashPolicyConfig,
    HeaderMatchConfig,
    Http2Config,
    HttpFilterConfig,
    ListenerConfig,
    RouteConfig,
    RouteMatchConfig,
    VirtualHostConfig,
    WeightedClusterConfig,
)

# The key lists of every section; tests/test_config.py checks docs/config.md names each key.
from fastmesh.control.validation import (  # noqa: F401
    _ADMIN_KEYS,
    _CLUSTER_KEYS,
    _ENDPOINT_KEYS,
    _DISCOVERY_KEYS,
    _HEADER_KEYS,
    _HTTP2_KEYS,
    _LISTENER_COMMON,
    _LISTENER_HTTP,
    _MATCH_KEYS,
    _ROOT_KEYS,
    _RETRY_KEYS,
    _ROUTE_KEYS,
    _VHOST_KEYS,
    _parse_root,
)

__all__ = [
    "ConfigError",
    "Config",
    "AdminConfig",
    "ListenerConfig",
    "VirtualHostConfig",
    "RouteConfig",
    "RouteMatchConfig",
    "HeaderMatchConfig",
    "WeightedClusterConfig",
    "Http2Config",
    "HttpFilterConfig",
    "DirectResponseConfig",
    "ClusterConfig",
    "HashPolicyConfig",
    "EndpointConfig",
    "load_config",
    "parse_config",
    "default_config",
    "config_to_dict",
    "LB_POLICIES",
    "PROTOCOLS",
]


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate the YAML config file at ``path``.

    Raises ``ConfigError`` (with ``file`` set to ``path``) if the file cannot
    be read, is not valid YAML, or does not follow the schema.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(name, None, "", f"cannot read config file: {exc.strerror or exc}") from None
    return parse_config(data, source=name)


def parse_config(data: str | bytes | Mapping[str, Any], source: str = "<config>", *,
                 min_listeners: int = 1) -> Config:
    """Validate a config given as YAML text (str or bytes) or as an already-parsed dict.

    ``source`` names the input in errors. Dict input carries no line numbers,
    so its errors have ``line=None``. ``min_listeners=0`` accepts a config
    without listeners (the xDS client's, before or between listeners).
    """
    ctx = _Ctx(source)
    ctx.min_listeners = min_listeners
    if isinstance(data, (str, bytes)):
        doc = _compose(ctx, data)
    elif isinstance(data, Mapping):
        doc = data
    else:
        raise TypeError(f"parse_config() takes str, bytes or a mapping, not {type(data).__name__}")
    config = None
    if not ctx.errors:
        from fastmesh.control.envoy.detect import is_envoy_bootstrap
        if is_envoy_bootstrap(doc):
            # An Envoy v3 bootstrap: translated, then validated as a native config.
            from fastmesh.control.envoy.bootstrap import config_from_bootstrap
            return config_from_bootstrap(doc, ctx if isinstance(data, (str, bytes)) else None,
                                         source)
        config = _parse_root(ctx, doc)
    ctx.raise_if_errors()
    assert config is not None
    return config


def default_config() -> Config:
    """The embedded demo config (``fastmesh/default.yaml``) that ``fastmesh run`` uses without ``-c``."""
    text = resources.files("fastmesh").joinpath("default.yaml").read_bytes()
    return parse_config(text, source="<default.yaml>")
