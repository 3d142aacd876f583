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

Public API: ``load_config``, ``parse_config``, ``default_config``,
``config_to_dict``, ``ConfigError`` and the dataclasses below.
"""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fastmesh.control.durations import parse_duration, parse_size

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

PROTOCOLS: tuple[str, ...] = ("http", "tcp")
LB_POLICIES: tuple[str, ...] = ("round_robin", "least_request", "random", "ring_hash", "maglev")
UPSTREAM_PROTOCOLS: tuple[str, ...] = ("http1", "http2", "auto")
ROUTE_ACTIONS: tuple[str, ...] = ("cluster", "weighted_clusters", "direct_response")

# Defaults (seconds for durations, bytes for sizes). docs/config.md lists the same values.
DEFAULT_DRAIN_TIMEOUT = 10.0
# Under load a worker sleeps this long between event-loop polls instead of
# being woken by every arriving packet (docs/design.md, "Batching under load").
DEFAULT_BATCH_WINDOW = 0.0002
MAX_BATCH_WINDOW = 0.01
DEFAULT_ADMIN_ADDRESS = "127.0.0.1"
DEFAULT_ADMIN_PORT = 9901
DEFAULT_LISTENER_ADDRESS = "0.0.0.0"
DEFAULT_LISTENER_IDLE_TIMEOUT = 3600.0
DEFAULT_BUFFER_LIMIT = 1 << 20
DEFAULT_REQUEST_HEADERS_TIMEOUT = 10.0
DEFAULT_STREAM_IDLE_TIMEOUT = 300.0
DEFAULT_MAX_REQUEST_HEADERS_KB = 60
DEFAULT_MAX_HEADERS_COUNT = 100
DEFAULT_ROUTE_TIMEOUT = 15.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_CLUSTER_IDLE_TIMEOUT = 60.0
DEFAULT_RING_MIN = 1024
DEFAULT_RING_MAX = 8388608          # Envoy's default and upper bound (8M entries)
DEFAULT_MAGLEV_TABLE_SIZE = 65537   # Envoy's default; a prime
DEFAULT_H2_MAX_CONCURRENT_STREAMS = 100
DEFAULT_H2_INITIAL_STREAM_WINDOW = 65536
DEFAULT_H2_INITIAL_CONNECTION_WINDOW = 1 << 20
H2_MAX_WINDOW = (1 << 31) - 1
MAX_MAGLEV_TABLE_SIZE = 5000011     # Envoy's upper bound; a prime
MAX_BUFFER_LIMIT = 1 << 30
MAX_ROUTE_WEIGHT = 1_000_000
MAX_TOTAL_WEIGHT = (1 << 32) - 1    # the data plane sums weights in an unsigned int


# --------------------------------------------------------------------------- errors


class ConfigError(Exception):
    """A config file that does not follow the schema.

    ``file`` is the path or source name (or None), ``line`` the 1-based line
    of the offending key or value (None for dict input), ``path`` the key
    path (``"clusters[0].endpoints[1].port"``, "" for the whole document) and
    ``reason`` what is wrong. ``errors`` lists every problem found in the
    same pass, this one first.

    The arguments come in the order of the message:
    ``ConfigError(file, line, path, reason)``; all may be given by keyword.
    """

    def __init__(
        self,
        file: str | None = None,
        line: int | None = None,
        path: str | None = "",
        reason: str = "invalid config",
    ) -> None:
        self.file = file
        self.line = line
        self.path = path or ""
        self.reason = reason
        self.errors: list[ConfigError] = [self]
        super().__init__(file, line, self.path, reason)   # args as given: picklable

    def _format(self) -> str:
        where = ""
        if self.file is not None and self.line is not None:
            where = f"{self.file}:{self.line}: "
        elif self.file is not None:
            where = f"{self.file}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        return f"{where}{self.path + ': ' if self.path else ''}{self.reason}"

    def __str__(self) -> str:
        return self._format()


# ----------------------------------------------------------------------- dataclasses


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin listener (stats, /config_dump). Plain HTTP; keep it on loopback."""

    address: str = DEFAULT_ADMIN_ADDRESS
    port: int = DEFAULT_ADMIN_PORT


@dataclass(frozen=True, slots=True)
class HeaderMatchConfig:
    """One request-header condition of a route. Exactly one of exact/prefix/regex/present is set."""

    name: str                   # lowercased
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None    # full match of the header value
    present: bool | None = None
    invert: bool = False


@dataclass(frozen=True, slots=True)
class RouteMatchConfig:
    """The path condition (exactly one of prefix/path/regex) plus header conditions."""

    prefix: str | None = None
    path: str | None = None
    regex: str | None = None    # full match of the path, query string excluded
    # prefix is compared with path + query string (as Envoy), path and regex with the path.
    # case_sensitive applies to prefix and path only (regex: use "(?i)").
    case_sensitive: bool = True
    headers: tuple[HeaderMatchConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class WeightedClusterConfig:
    """One target of a ``weighted_clusters`` action."""

    name: str
    weight: int


@dataclass(frozen=True, slots=True)
class DirectResponseConfig:
    """A response the proxy sends itself, without an upstream."""

    status: int
    body: str = ""


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One route. ``action`` says which of cluster/weighted_clusters/direct_response is set."""

    name: str | None
    match: RouteMatchConfig
    action: str                 # "cluster" | "weighted_clusters" | "direct_response"
    cluster: str | None = None
    weighted_clusters: tuple[WeightedClusterConfig, ...] = ()
    direct_response: DirectResponseConfig | None = None
    timeout: float = DEFAULT_ROUTE_TIMEOUT   # seconds, 0 = none (always 0 for direct_response)


@dataclass(frozen=True, slots=True)
class VirtualHostConfig:
    """A set of domains (matched against Host) and their routes, first match wins."""

    name: str
    domains: tuple[str, ...]    # lowercased
    routes: tuple[RouteConfig, ...]


@dataclass(frozen=True, slots=True)
class Http2Config:
    """HTTP/2 settings a listener announces to its h2 clients (Envoy's
    http2_protocol_options names)."""

    max_concurrent_streams: int = DEFAULT_H2_MAX_CONCURRENT_STREAMS
    initial_stream_window_size: int = DEFAULT_H2_INITIAL_STREAM_WINDOW
    initial_connection_window_size: int = DEFAULT_H2_INITIAL_CONNECTION_WINDOW


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """A listening socket. HTTP-only fields keep their defaults on tcp listeners."""

    name: str
    address: str
    port: int
    protocol: str               # "http" | "tcp"
    cluster: str | None         # tcp only
    idle_timeout: float
    per_connection_buffer_limit: int
    request_headers_timeout: float
    stream_idle_timeout: float
    max_request_headers_kb: int
    max_headers_count: int
    xff_append: bool
    generate_request_id: bool
    virtual_hosts: tuple[VirtualHostConfig, ...]   # http only; () for tcp
    http2: Http2Config = Http2Config()             # http only



@dataclass(frozen=True, slots=True)
class HashPolicyConfig:
    """What ring_hash / maglev hash: a request header, or the client address."""

    header: str | None = None   # lowercased
    source_ip: bool = False


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """One upstream host. ``address`` is an IP literal or a hostname (resolved by the compile step)."""

    address: str
    port: int
    weight: int = 1


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """An upstream service: endpoints plus how to balance and pool connections to them.

    ``hash_policy`` is set (defaulting to source_ip) only for ring_hash and
    maglev. ``ring_min``/``ring_max`` matter only for ring_hash and
    ``maglev_table_size`` only for maglev; they always hold their defaults otherwise.
    """

    name: str
    lb: str
    hash_policy: HashPolicyConfig | None
    ring_min: int
    ring_max: int
    maglev_table_size: int
    connect_timeout: float
    idle_timeout: float
    per_connection_buffer_limit: int
    max_requests_per_connection: int   # 0 = unlimited
    endpoints: tuple[EndpointConfig, ...]
    protocol: str = "http1"            # "http1" | "http2" (h2c) | "auto" (the client's)


@dataclass(frozen=True, slots=True)
class Config:
    """A whole validated config. ``source`` names where it came from (not compared)."""

    drain_timeout: float
    admin: AdminConfig | None
    listeners: tuple[ListenerConfig, ...]
    clusters: tuple[ClusterConfig, ...]
    source: str = dataclasses.field(default="<config>", compare=False)
    batch_window: float = DEFAULT_BATCH_WINDOW     # seconds, 0 = off

    def cluster(self, name: str) -> ClusterConfig:
        """The cluster called ``name``; ``KeyError`` if there is none."""
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)

    def listener(self, name: str) -> ListenerConfig:
        """The listener called ``name``; ``KeyError`` if there is none."""
        for listener in self.listeners:
            if listener.name == name:
                return listener
        raise KeyError(name)


# ----------------------------------------------------------------------- public API


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


def parse_config(data: str | bytes | Mapping[str, Any], source: str = "<config>") -> Config:
    """Validate a config given as YAML text (str or bytes) or as an already-parsed dict.

    ``source`` names the input in errors. Dict input carries no line numbers,
    so its errors have ``line=None``.
    """
    ctx = _Ctx(source)
    if isinstance(data, (str, bytes)):
        doc = _compose(ctx, data)
    elif isinstance(data, Mapping):
        doc = data
    else:
        raise TypeError(f"parse_config() takes str, bytes or a mapping, not {type(data).__name__}")
    config = None
    if not ctx.errors:
        config = _parse_root(ctx, doc)
    ctx.raise_if_errors()
    assert config is not None
    return config


def default_config() -> Config:
    """The embedded demo config (``fastmesh/default.yaml``) that ``fastmesh run`` uses without ``-c``."""
    text = resources.files("fastmesh").joinpath("default.yaml").read_bytes()
    return parse_config(text, source="<default.yaml>")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain JSON-serialisable data, in the shape of the config file.

    Every default is written out, durations as float seconds and sizes as
    int bytes, so the result documents the effective config and is itself a
    valid config: ``parse_config(config_to_dict(c)) == c``.
    """
    out: dict[str, Any] = {"drain_timeout": cfg.drain_timeout, "batch_window": cfg.batch_window}
    if cfg.admin is not None:
        out["admin"] = {"address": cfg.admin.address, "port": cfg.admin.port}
    out["listeners"] = [_listener_to_dict(listener) for listener in cfg.listeners]
    out["clusters"] = [_cluster_to_dict(cluster) for cluster in cfg.clusters]
    return out


def _listener_to_dict(lst: ListenerConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": lst.name,
        "address": lst.address,
        "port": lst.port,
        "protocol": lst.protocol,
        "idle_timeout": lst.idle_timeout,
        "per_connection_buffer_limit": lst.per_connection_buffer_limit,
    }
    if lst.protocol == "tcp":
        out["cluster"] = lst.cluster
        return out
    out.update(
        request_headers_timeout=lst.request_headers_timeout,
        stream_idle_timeout=lst.stream_idle_timeout,
        max_request_headers_kb=lst.max_request_headers_kb,
        max_headers_count=lst.max_headers_count,
        xff_append=lst.xff_append,
        generate_request_id=lst.generate_request_id,
        http2={"max_concurrent_streams": lst.http2.max_concurrent_streams,
               "initial_stream_window_size": lst.http2.initial_stream_window_size,
               "initial_connection_window_size": lst.http2.initial_connection_window_size},
        virtual_hosts=[
            {
                "name": vh.name,
                "domains": list(vh.domains),
                "routes": [_route_to_dict(route) for route in vh.routes],
            }
            for vh in lst.virtual_hosts
        ],
    )
    return out


def _route_to_dict(route: RouteConfig) -> dict[str, Any]:
    m = route.match
    match: dict[str, Any] = {}
    for key in ("prefix", "path", "regex"):
        if getattr(m, key) is not None:
            match[key] = getattr(m, key)
    match["case_sensitive"] = m.case_sensitive
    if m.headers:
        match["headers"] = [
            {
                "name": h.name,
                **{k: getattr(h, k) for k in ("exact", "prefix", "regex", "present")
                   if getattr(h, k) is not None},
                "invert": h.invert,
            }
            for h in m.headers
        ]
    out: dict[str, Any] = {}
    if route.name is not None:
        out["name"] = route.name
    out["match"] = match
    if route.action == "cluster":
        out["cluster"] = route.cluster
    elif route.action == "weighted_clusters":
        out["weighted_clusters"] = [{"name": w.name, "weight": w.weight}
                                    for w in route.weighted_clusters]
    else:
        assert route.direct_response is not None
        out["direct_response"] = {"status": route.direct_response.status,
                                  "body": route.direct_response.body}
    if route.action != "direct_response":
        out["timeout"] = route.timeout
    return out


def _cluster_to_dict(c: ClusterConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name, "lb": c.lb}
    if c.hash_policy is not None:
        out["hash_policy"] = ({"header": c.hash_policy.header} if c.hash_policy.header
                              else {"source_ip": True})
    if c.lb == "ring_hash":
        out["ring_hash"] = {"minimum_ring_size": c.ring_min, "maximum_ring_size": c.ring_max}
    if c.lb == "maglev":
        out["maglev"] = {"table_size": c.maglev_table_size}
    out.update(
        connect_timeout=c.connect_timeout,
        idle_timeout=c.idle_timeout,
        per_connection_buffer_limit=c.per_connection_buffer_limit,
        max_requests_per_connection=c.max_requests_per_connection,
        protocol=c.protocol,
        endpoints=[{"address": e.address, "port": e.port, "weight": e.weight}
                   for e in c.endpoints],
    )
    return out


# ------------------------------------------------------------- YAML with line numbers

Path = tuple[str | int, ...]

# Guards against alias bombs ("billion laughs") and recursive anchors: a real
# config has a few hundred nodes and a depth under 10.
_MAX_NODES = 200_000
_MAX_DEPTH = 64


def _format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class _Ctx:
    """Collects errors and maps key paths to source lines during one parse."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.value_lines: dict[Path, int] = {}   # path -> line where its value starts
        self.key_lines: dict[Path, int] = {}     # path -> line of its key
        self.errors: list[ConfigError] = []
        self.cluster_refs: list[tuple[Path, str]] = []
        self.nodes = 0

    def line(self, path: Path, *, key: bool = False) -> int | None:
        if key and path in self.key_lines:
            return self.key_lines[path]
        while True:
            if path in self.value_lines:
                return self.value_lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: Path, reason: str, *, key: bool = False, line: int | None = None) -> None:
        if line is None:
            line = self.line(path, key=key)
        self.errors.append(ConfigError(self.source, line, _format_path(path), reason))

    def raise_if_errors(self) -> None:
        if not self.errors:
            return
        # File order; errors without a line (dict input) keep their discovery order.
        ordered = sorted(self.errors, key=lambda e: e.line if e.line is not None else 1 << 60)
        first = ordered[0]
        first.errors = ordered
        raise first


def _compose(ctx: _Ctx, data: str | bytes) -> Any:
    """Parse YAML into plain Python data, recording the line of every key and value."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            ctx.error((), f"config is not valid UTF-8: {exc.reason} at byte {exc.start}",
                      line=data.count(b"\n", 0, exc.start) + 1)
            return None
    try:
        loader = yaml.SafeLoader(data)
    except yaml.reader.ReaderError as exc:   # a control character near the start
        _reader_error(ctx, data, exc)
        return None
    try:
        node = loader.get_single_node()
        if node is None:
            ctx.error((), "config is empty; expected a mapping with at least 'listeners'", line=1)
            return None
        return _node_to_py(ctx, loader, node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = "invalid YAML: " + ": ".join(
            part for part in (exc.context, exc.problem) if part
        )
        ctx.error((), reason, line=mark.line + 1 if mark else None)
        return None
    except yaml.reader.ReaderError as exc:   # a control character; it has no mark
        _reader_error(ctx, data, exc)
        return None
    except _TooBig as exc:
        ctx.error((), str(exc), line=exc.line)
        return None
    finally:
        loader.dispose()


def _reader_error(ctx: _Ctx, text: str, exc: yaml.reader.ReaderError) -> None:
    char = exc.character if isinstance(exc.character, int) else ord(exc.character)
    ctx.error((), f"invalid YAML: unacceptable character #x{char:04x}: {exc.reason}",
              line=text.count("\n", 0, exc.position) + 1)


class _TooBig(Exception):
    def __init__(self, reason: str, line: int) -> None:
        super().__init__(reason)
        self.line = line


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _mapping_entries(ctx: _Ctx, loader: yaml.SafeLoader, node: MappingNode, path: Path,
                     depth: int = 0) -> dict[str, tuple[Node, Node]]:
    """The key -> (key node, value node) pairs of a mapping, with ``<<`` merge keys resolved.

    YAML merge semantics: the mapping's own keys win over merged ones, and an
    earlier merge source wins over a later one. Errors inside merge sources are
    reported where the source itself is visited, not once per use.
    """
    if depth > _MAX_DEPTH:
        raise _TooBig("YAML merge keys nest too deeply (recursive alias?)",
                      node.start_mark.line + 1)
    report = depth == 0
    own: dict[str, tuple[Node, Node]] = {}
    merged: dict[str, tuple[Node, Node]] = {}
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        if key_node.tag == _MERGE_TAG:
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    if report:
                        ctx.error(path, "a '<<' merge key needs a mapping or a list of mappings",
                                  line=key_line)
                    continue
                for key, pair in _mapping_entries(ctx, loader, source, path, depth + 1).items():
                    merged.setdefault(key, pair)
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            if report:
                ctx.error(path, f"keys must be strings, got {_kind(key)}", line=key_line)
            continue
        if key in own:
            if report:
                ctx.error(path + (key,), f"duplicate key {key!r}", line=key_line)
            continue
        own[key] = (key_node, value_node)
    for key in own:
        merged.pop(key, None)
    return {**merged, **own}


def _node_to_py(ctx: _Ctx, loader: yaml.SafeLoader, node: Node, path: Path) -> Any:
    line = node.start_mark.line + 1
    ctx.nodes += 1
    if ctx.nodes > _MAX_NODES or len(path) > _MAX_DEPTH:
        raise _TooBig("config is too large or too deeply nested (recursive YAML alias?)", line)
    ctx.value_lines.setdefault(path, line)
    if isinstance(node, MappingNode):
        out: dict[str, Any] = {}
        for key, (key_node, value_node) in _mapping_entries(ctx, loader, node, path).items():
            ctx.key_lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _node_to_py(ctx, loader, value_node, path + (key,))
        return out
    if isinstance(node, SequenceNode):
        return [_node_to_py(ctx, loader, item, path + (i,)) for i, item in enumerate(node.value)]
    assert isinstance(node, ScalarNode)
    return loader.construct_object(node, deep=True)


# --------------------------------------------------------------------- validation

T = TypeVar("T")
_REQUIRED: Any = object()


class _Bad(Exception):
    """Raised by a converter: the value at hand is wrong for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


def _closest(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _suggest(word: str, choices: Iterable[str]) -> str:
    """"; did you mean 'x'?" for the closest choice, or "" if none is close."""
    close = _closest(word, choices)
    return f"; did you mean {close!r}?" if close else ""


class _Map:
    """A mapping under validation: typed reads with defaults, unknown keys reported once."""

    def __init__(self, ctx: _Ctx, path: Path, value: Any, keys: Sequence[str], what: str) -> None:
        self.ctx = ctx
        self.path = path
        self.data: Mapping[str, Any] = {}
        self.suggested: set[str] = set()   # keys an unknown key probably meant
        self.ok = isinstance(value, Mapping)
        if not self.ok:
            ctx.error(path, f"expected {what} (a mapping), got {_kind(value)}")
            return
        self.data = value
        for key in value:
            if not isinstance(key, str):
                ctx.error(path, f"keys must be strings, got {_kind(key)}")
            elif key not in keys:
                close = _closest(key, keys)
                if close:
                    self.suggested.add(close)
                ctx.error(path + (key,), f"unknown key {key!r}; expected one of: "
                          f"{', '.join(keys)}{_suggest(key, keys)}", key=True)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, conv: Callable[[Any], T], default: Any = _REQUIRED) -> T:
        """``conv(value)`` of ``key``, ``default`` if absent; None after reporting an error."""
        path = self.path + (key,)
        if key not in self.data:
            if default is _REQUIRED:
                # A misspelt key already got "did you mean ...": do not also say it is missing.
                if self.ok and key not in self.suggested:
                    self.ctx.error(path, "missing required key")
                return None  # type: ignore[return-value]
            return default
        try:
            return conv(self.data[key])
        except _Bad as exc:
            self.ctx.error(path, exc.reason)
            return None  # type: ignore[return-value]

    def section(self, key: str, parse: Callable[[_Ctx, Path, Any], T], default: Any = _REQUIRED) -> T:
        """Like ``get`` for nested structures: ``parse(ctx, path, value)`` reports its own errors."""
        if key not in self.data:
            return self.get(key, lambda v: v, default)
        return parse(self.ctx, self.path + (key,), self.data[key])

    def forbid(self, key: str, reason: str) -> None:
        if key in self.data:
            self.ctx.error(self.path + (key,), reason, key=True)

    def one_of(self, keys: Sequence[str], what: str) -> str | None:
        """The single key of ``keys`` present; reports none or several as errors."""
        present = [k for k in keys if k in self.data]
        if len(present) == 1:
            return present[0]
        if not present:
            if self.ok:
                self.ctx.error(self.path, f"{what}: expected exactly one of: {', '.join(keys)}")
        else:
            self.ctx.error(self.path + (present[1],),
                           f"{what}: {' and '.join(repr(k) for k in present)} are mutually "
                           f"exclusive; expected exactly one of: {', '.join(keys)}", key=True)
        return None


def _list(ctx: _Ctx, path: Path, value: Any, item: Callable[[_Ctx, Path, Any], T],
          *, min_items: int, what: str) -> tuple[T, ...]:
    if not isinstance(value, (list, tuple)):
        ctx.error(path, f"expected a list of {what}, got {_kind(value)}")
        return ()
    if len(value) < min_items:
        ctx.error(path, f"must not be empty: give at least one entry ({what})")
    return tuple(item(ctx, path + (i,), v) for i, v in enumerate(value))


# Converters: value -> converted value, or raise _Bad(reason).

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")   # RFC 9110 token (header names)
_HOST_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_DOMAIN_RE = re.compile(r"[a-z0-9._\-]+(:[0-9]{1,5})?|\[[0-9a-f:.]+\](:[0-9]{1,5})?")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, (int, float, bool)) else ""
        raise _Bad(f"expected a string, got {_kind(value)}{hint}")
    return value


def _nonempty_str(value: Any) -> str:
    if not _str(value):
        raise _Bad("must not be empty")
    return value


def _name(value: Any) -> str:
    _str(value)
    if not _NAME_RE.fullmatch(value):
        raise _Bad(f"invalid name {value!r}: use 1-128 letters, digits, '.', '_', ':' or '-', "
                   "starting with a letter or digit")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_kind(value)}")
    return value


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def conv(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer, got {_kind(value)}")
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise _Bad(f"{value} is out of range; must be {bound}")
        return value
    return conv


def _enum(choices: Sequence[str]) -> Callable[[Any], str]:
    def conv(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            shown = repr(value) if isinstance(value, str) else _kind(value)
            suggestion = _suggest(value, choices) if isinstance(value, str) else ""
            raise _Bad(f"invalid value {shown}; expected one of: {', '.join(choices)}{suggestion}")
        return value
    return conv


def _duration(*, positive: bool = False) -> Callable[[Any], float]:
    def conv(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise _Bad(str(exc)) from None
        if positive and seconds <= 0:
            raise _Bad("must be greater than zero")
        return seconds
    return conv


def _batch_window(value: Any) -> float:
    seconds = _duration()(value)
    if seconds > MAX_BATCH_WINDOW:
        raise _Bad(f"{seconds * 1e6:g}us is too long; at most 10ms (0 turns batching off)")
    return seconds


def _buffer_size(value: Any) -> int:
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise _Bad(str(exc)) from None
    if not 1 <= size <= MAX_BUFFER_LIMIT:
        raise _Bad(f"{size} bytes is out of range; must be between 1 and 1GiB")
    return size


def _listen_address(value: Any) -> str:
    """An IP literal or "localhost"; IPs are stored in canonical form."""
    _str(value)
    if value == "localhost":
        return value
    try:
        return str(ipaddress.ip_address(_strip_brackets(value)))
    except ValueError:
        raise _Bad(f"invalid address {value!r}: expected an IPv4 or IPv6 literal or 'localhost' "
                   "(hostnames are not allowed on listeners)") from None


def _endpoint_address(value: Any) -> str:
    """An IP literal (canonical form) or a DNS hostname (kept as written; resolved later)."""
    _str(value)
    try:
        return str(ipaddress.ip_address(_strip_brackets(value)))
    except ValueError:
        pass
    host = value[:-1] if value.endswith(".") else value
    if re.fullmatch(r"[0-9.]+", host):
        raise _Bad(f"invalid IPv4 address {value!r}")
    if not host or len(host) > 253 or not all(
        _HOST_LABEL_RE.fullmatch(label) for label in host.split(".")
    ):
        raise _Bad(f"invalid address {value!r}: expected an IP literal or a hostname")
    return value


def _strip_brackets(value: str) -> str:
    return value[1:-1] if value.startswith("[") and value.endswith("]") else value


def _header_name(value: Any) -> str:
    _str(value)
    if not _TOKEN_RE.fullmatch(value):
        raise _Bad(f"invalid header name {value!r}")
    return value.lower()


def _regex(value: Any) -> str:
    _str(value)
    try:
        re.compile(value)
    except re.error as exc:
        raise _Bad(f"invalid regex {value!r}: {exc}") from None
    return value


def _path_value(value: Any) -> str:
    _str(value)
    if not value.startswith("/"):
        raise _Bad(f"must start with '/', got {value!r}")
    return value


def _domain(value: Any) -> str:
    _nonempty_str(value)
    domain = value.lower()
    if domain == "*":
        return domain
    core = domain
    if core.startswith("*"):
        core = core[1:]
    elif core.endswith("*"):
        core = core[:-1]
    if not core or "*" in core or not _DOMAIN_RE.fullmatch(core):
        raise _Bad(f"invalid domain {value!r}: expected an exact host, '*.suffix', "
                   "'prefix.*' or '*' (one wildcard, at the start or the end)")
    return domain


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


# Section parsers: (ctx, path, value) -> dataclass. They report their own errors.

_ROOT_KEYS = ("drain_timeout", "batch_window", "admin", "listeners", "clusters")
_ADMIN_KEYS = ("address", "port")
_LISTENER_COMMON = ("name", "address", "port", "protocol", "cluster", "idle_timeout",
                    "per_connection_buffer_limit")
_LISTENER_HTTP = ("request_headers_timeout", "stream_idle_timeout", "max_request_headers_kb",
                  "max_headers_count", "xff_append", "generate_request_id", "virtual_hosts",
                  "http2")
_HTTP2_KEYS = ("max_concurrent_streams", "initial_stream_window_size",
               "initial_connection_window_size")
_VHOST_KEYS = ("name", "domains", "routes")
_ROUTE_KEYS = ("name", "match") + ROUTE_ACTIONS + ("timeout",)
_MATCH_KEYS = ("prefix", "path", "regex", "case_sensitive", "headers")
_HEADER_KEYS = ("name", "exact", "prefix", "regex", "present", "invert")
_CLUSTER_KEYS = ("name", "lb", "hash_policy", "ring_hash", "maglev", "connect_timeout",
                 "idle_timeout", "per_connection_buffer_limit", "max_requests_per_connection",
                 "endpoints", "protocol")
_ENDPOINT_KEYS = ("address", "port", "weight")


def _parse_root(ctx: _Ctx, doc: Any) -> Config:
    m = _Map(ctx, (), doc, _ROOT_KEYS, "the config document")
    drain = m.get("drain_timeout", _duration(), DEFAULT_DRAIN_TIMEOUT)
    batch = m.get("batch_window", _batch_window, DEFAULT_BATCH_WINDOW)
    admin = m.section("admin", _parse_admin, None)
    listeners = m.section("listeners", lambda c, p, v: _list(
        c, p, v, _parse_listener, min_items=1, what="listeners"))
    clusters = m.section("clusters", lambda c, p, v: _list(
        c, p, v, _parse_cluster, min_items=0, what="clusters"), ())
    listeners = listeners or ()
    clusters = clusters or ()
    _check_unique(ctx, ("listeners",), listeners, "listener")
    _check_unique(ctx, ("clusters",), clusters, "cluster")
    _check_cluster_refs(ctx, clusters)
    _check_addresses(ctx, listeners, admin)
    return Config(drain_timeout=drain, admin=admin, listeners=listeners, clusters=clusters,
                  source=ctx.source, batch_window=batch)


def _parse_admin(ctx: _Ctx, path: Path, value: Any) -> AdminConfig:
    m = _Map(ctx, path, value, _ADMIN_KEYS, "admin settings")
    return AdminConfig(address=m.get("address", _listen_address, DEFAULT_ADMIN_ADDRESS),
                       port=m.get("port", _int(0, 65535), DEFAULT_ADMIN_PORT))


def _parse_listener(ctx: _Ctx, path: Path, value: Any) -> ListenerConfig:
    m = _Map(ctx, path, value, _LISTENER_COMMON + _LISTENER_HTTP, "a listener")
    protocol = m.get("protocol", _enum(PROTOCOLS), "http")
    cluster = None
    virtual_hosts: tuple[VirtualHostConfig, ...] = ()
    if protocol == "tcp":
        cluster = m.get("cluster", _nonempty_str)
        if cluster is not None:
            ctx.cluster_refs.append((path + ("cluster",), cluster))
        for key in _LISTENER_HTTP:
            m.forbid(key, f"{key!r} is only allowed on http listeners (this one is tcp)")
    elif protocol == "http":
        m.forbid("cluster", "'cluster' is only allowed on tcp listeners; http listeners "
                 "route to clusters through virtual_hosts")
        virtual_hosts = m.section("virtual_hosts", lambda c, p, v: _list(
            c, p, v, _parse_vhost, min_items=1, what="virtual hosts")) or ()
        _check_unique(ctx, path + ("virtual_hosts",), virtual_hosts, "virtual host")
        _check_domains(ctx, path + ("virtual_hosts",), virtual_hosts)
    http = protocol == "http"
    return ListenerConfig(
        name=m.get("name", _name),
        address=m.get("address", _listen_address, DEFAULT_LISTENER_ADDRESS),
        port=m.get("port", _int(0, 65535)),
        protocol=protocol,
        cluster=cluster,
        idle_timeout=m.get("idle_timeout", _duration(), DEFAULT_LISTENER_IDLE_TIMEOUT),
        per_connection_buffer_limit=m.get("per_connection_buffer_limit", _buffer_size,
                                          DEFAULT_BUFFER_LIMIT),
        request_headers_timeout=(m.get("request_headers_timeout", _duration(),
                                       DEFAULT_REQUEST_HEADERS_TIMEOUT)
                                 if http else DEFAULT_REQUEST_HEADERS_TIMEOUT),
        stream_idle_timeout=(m.get("stream_idle_timeout", _duration(),
                                   DEFAULT_STREAM_IDLE_TIMEOUT)
                             if http else DEFAULT_STREAM_IDLE_TIMEOUT),
        max_request_headers_kb=(m.get("max_request_headers_kb", _int(1, 8192),
                                      DEFAULT_MAX_REQUEST_HEADERS_KB)
                                if http else DEFAULT_MAX_REQUEST_HEADERS_KB),
        max_headers_count=(m.get("max_headers_count", _int(1, 256), DEFAULT_MAX_HEADERS_COUNT)
                           if http else DEFAULT_MAX_HEADERS_COUNT),
        xff_append=m.get("xff_append", _bool, True) if http else True,
        generate_request_id=m.get("generate_request_id", _bool, True) if http else True,
        virtual_hosts=virtual_hosts,
        http2=m.section("http2", _parse_http2, Http2Config()) if http else Http2Config(),
    )


def _parse_http2(ctx: _Ctx, path: Path, value: Any) -> Http2Config:
    m = _Map(ctx, path, value, _HTTP2_KEYS, "http2 settings")
    return Http2Config(
        max_concurrent_streams=m.get("max_concurrent_streams", _int(1, H2_MAX_WINDOW),
                                     DEFAULT_H2_MAX_CONCURRENT_STREAMS),
        initial_stream_window_size=m.get("initial_stream_window_size",
                                         _int(65535, H2_MAX_WINDOW),
                                         DEFAULT_H2_INITIAL_STREAM_WINDOW),
        initial_connection_window_size=m.get("initial_connection_window_size",
                                             _int(65535, H2_MAX_WINDOW),
                                             DEFAULT_H2_INITIAL_CONNECTION_WINDOW),
    )


def _parse_vhost(ctx: _Ctx, path: Path, value: Any) -> VirtualHostConfig:
    m = _Map(ctx, path, value, _VHOST_KEYS, "a virtual host")
    domains = m.section("domains", lambda c, p, v: _list(
        c, p, v, _parse_domain, min_items=1, what="domains"))
    routes = m.section("routes", lambda c, p, v: _list(
        c, p, v, _parse_route, min_items=1, what="routes"))
    return VirtualHostConfig(name=m.get("name", _name), domains=domains or (),
                             routes=routes or ())


def _parse_domain(ctx: _Ctx, path: Path, value: Any) -> str:
    try:
        return _domain(value)
    except _Bad as exc:
        ctx.error(path, exc.reason)
        return None  # type: ignore[return-value]


def _parse_route(ctx: _Ctx, path: Path, value: Any) -> RouteConfig:
    m = _Map(ctx, path, value, _ROUTE_KEYS, "a route")
    name = m.get("name", _name, None)
    match = m.section("match", _parse_match)
    action = m.one_of(ROUTE_ACTIONS, "route action")
    cluster = None
    weighted: tuple[WeightedClusterConfig, ...] = ()
    direct = None
    timeout = 0.0
    if action == "cluster":
        cluster = m.get("cluster", _nonempty_str)
        if cluster is not None:
            ctx.cluster_refs.append((path + ("cluster",), cluster))
    elif action == "weighted_clusters":
        weighted = m.section("weighted_clusters", _parse_weighted)
    elif action == "direct_response":
        direct = m.section("direct_response", _parse_direct)
    if action == "direct_response":
        m.forbid("timeout", "'timeout' is not allowed with direct_response "
                 "(no upstream request is made)")
    else:
        timeout = m.get("timeout", _duration(), DEFAULT_ROUTE_TIMEOUT)
    return RouteConfig(name=name, match=match, action=action, cluster=cluster,
                       weighted_clusters=weighted, direct_response=direct, timeout=timeout)


def _parse_match(ctx: _Ctx, path: Path, value: Any) -> RouteMatchConfig:
    m = _Map(ctx, path, value, _MATCH_KEYS, "a route match")
    case_sensitive = m.get("case_sensitive", _bool, True)
    kind = m.one_of(("prefix", "path", "regex"), "route match")
    values: dict[str, str | None] = {"prefix": None, "path": None, "regex": None}
    if kind == "regex":
        values["regex"] = m.get("regex", _regex)
        if case_sensitive is False:
            # As in Envoy, case_sensitive does not apply to regex; say so instead of ignoring it.
            ctx.error(path + ("case_sensitive",), "case_sensitive: false does not apply to "
                      "regex; write (?i) at the start of the pattern instead", key=True)
    elif kind is not None:
        values[kind] = m.get(kind, _path_value)
    headers = m.section("headers", lambda c, p, v: _list(
        c, p, v, _parse_header_match, min_items=0, what="header matchers"), ())
    return RouteMatchConfig(case_sensitive=case_sensitive, headers=headers or (), **values)


def _parse_header_match(ctx: _Ctx, path: Path, value: Any) -> HeaderMatchConfig:
    m = _Map(ctx, path, value, _HEADER_KEYS, "a header matcher")
    kind = m.one_of(("exact", "prefix", "regex", "present"), "header matcher")
    values: dict[str, Any] = {}
    if kind == "present":
        values["present"] = m.get("present", _bool)
    elif kind == "regex":
        values["regex"] = m.get("regex", _regex)
    elif kind is not None:
        values[kind] = m.get(kind, _str)
    return HeaderMatchConfig(name=m.get("name", _header_name),
                             invert=m.get("invert", _bool, False), **values)


def _parse_weighted(ctx: _Ctx, path: Path, value: Any) -> tuple[WeightedClusterConfig, ...]:
    items = _list(ctx, path, value, _parse_weighted_item, min_items=1, what="weighted clusters")
    _check_unique(ctx, path, items, "weighted cluster")
    total = sum(w.weight for w in items if w.weight is not None)
    if total > MAX_TOTAL_WEIGHT:
        ctx.error(path, f"total weight {total} is too large; must be at most {MAX_TOTAL_WEIGHT}")
    return items


def _parse_weighted_item(ctx: _Ctx, path: Path, value: Any) -> WeightedClusterConfig:
    m = _Map(ctx, path, value, ("name", "weight"), "a weighted cluster")
    name = m.get("name", _nonempty_str)
    if name is not None:
        ctx.cluster_refs.append((path + ("name",), name))
    return WeightedClusterConfig(name=name, weight=m.get("weight", _int(1, MAX_ROUTE_WEIGHT)))


def _parse_direct(ctx: _Ctx, path: Path, value: Any) -> DirectResponseConfig:
    m = _Map(ctx, path, value, ("status", "body"), "a direct response")
    return DirectResponseConfig(status=m.get("status", _int(100, 599)),
                                body=m.get("body", _str, ""))


def _parse_cluster(ctx: _Ctx, path: Path, value: Any) -> ClusterConfig:
    m = _Map(ctx, path, value, _CLUSTER_KEYS, "a cluster")
    lb = m.get("lb", _enum(LB_POLICIES), "round_robin")
    hashing = lb in ("ring_hash", "maglev")
    hash_policy = None
    if hashing:
        hash_policy = m.section("hash_policy", _parse_hash_policy,
                                HashPolicyConfig(header=None, source_ip=True))
    elif lb is not None:
        m.forbid("hash_policy", f"'hash_policy' is only allowed with lb: ring_hash or maglev "
                 f"(this cluster uses {lb})")
    ring_min, ring_max = DEFAULT_RING_MIN, DEFAULT_RING_MAX
    if lb == "ring_hash":
        ring_min, ring_max = m.section("ring_hash", _parse_ring_hash, (ring_min, ring_max))
    elif lb is not None:
        m.forbid("ring_hash", f"'ring_hash' settings are only allowed with lb: ring_hash "
                 f"(this cluster uses {lb})")
    table_size = DEFAULT_MAGLEV_TABLE_SIZE
    if lb == "maglev":
        table_size = m.section("maglev", _parse_maglev, table_size)
    elif lb is not None:
        m.forbid("maglev", f"'maglev' settings are only allowed with lb: maglev "
                 f"(this cluster uses {lb})")
    endpoints = m.section("endpoints", lambda c, p, v: _list(
        c, p, v, _parse_endpoint, min_items=1, what="endpoints")) or ()
    seen: dict[tuple[str, int], int] = {}
    for i, ep in enumerate(endpoints):
        key = (ep.address, ep.port)
        if None in key:
            continue
        if key in seen:
            ctx.error(path + ("endpoints", i), f"duplicate endpoint {ep.address}:{ep.port} "
                      f"(same as endpoints[{seen[key]}]); use weight instead")
        seen.setdefault(key, i)
    if lb == "maglev" and table_size is not None and len(endpoints) > table_size:
        ctx.error(path + ("maglev", "table_size"), f"table_size {table_size} is smaller than "
                  f"the number of endpoints ({len(endpoints)})")
    return ClusterConfig(
        name=m.get("name", _name),
        lb=lb,
        hash_policy=hash_policy,
        ring_min=ring_min,
        ring_max=ring_max,
        maglev_table_size=table_size,
        connect_timeout=m.get("connect_timeout", _duration(positive=True),
                              DEFAULT_CONNECT_TIMEOUT),
        idle_timeout=m.get("idle_timeout", _duration(), DEFAULT_CLUSTER_IDLE_TIMEOUT),
        per_connection_buffer_limit=m.get("per_connection_buffer_limit", _buffer_size,
                                          DEFAULT_BUFFER_LIMIT),
        max_requests_per_connection=m.get("max_requests_per_connection",
                                          _int(0, (1 << 32) - 1), 0),
        endpoints=endpoints,
        protocol=m.get("protocol", _enum(UPSTREAM_PROTOCOLS), "http1"),
    )


def _parse_hash_policy(ctx: _Ctx, path: Path, value: Any) -> HashPolicyConfig:
    m = _Map(ctx, path, value, ("header", "source_ip"), "a hash policy")
    kind = m.one_of(("header", "source_ip"), "hash_policy")
    if kind == "header":
        return HashPolicyConfig(header=m.get("header", _header_name), source_ip=False)
    if kind == "source_ip":
        if m.get("source_ip", _bool) is False:
            ctx.error(path + ("source_ip",), "source_ip: false hashes nothing; use "
                      "source_ip: true or header: NAME")
        return HashPolicyConfig(header=None, source_ip=True)
    return HashPolicyConfig(header=None, source_ip=True)


def _parse_ring_hash(ctx: _Ctx, path: Path, value: Any) -> tuple[int, int]:
    m = _Map(ctx, path, value, ("minimum_ring_size", "maximum_ring_size"), "ring_hash settings")
    lo = m.get("minimum_ring_size", _int(1, DEFAULT_RING_MAX), DEFAULT_RING_MIN)
    hi = m.get("maximum_ring_size", _int(1, DEFAULT_RING_MAX), DEFAULT_RING_MAX)
    if lo is not None and hi is not None and lo > hi:
        ctx.error(path + ("minimum_ring_size",),
                  f"minimum_ring_size {lo} is larger than maximum_ring_size {hi}")
    return lo, hi


def _parse_maglev(ctx: _Ctx, path: Path, value: Any) -> int:
    m = _Map(ctx, path, value, ("table_size",), "maglev settings")
    size = m.get("table_size", _int(2, MAX_MAGLEV_TABLE_SIZE), DEFAULT_MAGLEV_TABLE_SIZE)
    if size is not None and not _is_prime(size):
        ctx.error(path + ("table_size",), f"table_size {size} is not prime "
                  "(Maglev needs a prime table size, e.g. 65537 or 5000011)")
    return size


def _parse_endpoint(ctx: _Ctx, path: Path, value: Any) -> EndpointConfig:
    m = _Map(ctx, path, value, _ENDPOINT_KEYS, "an endpoint")
    return EndpointConfig(address=m.get("address", _endpoint_address),
                          port=m.get("port", _int(1, 65535)),
                          weight=m.get("weight", _int(1, 128), 1))


# ------------------------------------------------------------------- cross-checks


def _check_unique(ctx: _Ctx, path: Path, items: Sequence[Any], what: str) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        name = getattr(item, "name", None)
        if name is None:
            continue
        if name in seen:
            ctx.error(path + (i, "name"), f"duplicate {what} name {name!r} "
                      f"(first defined at index {seen[name]})")
        else:
            seen[name] = i


def _check_domains(ctx: _Ctx, path: Path, vhosts: Sequence[VirtualHostConfig]) -> None:
    seen: dict[str, str] = {}
    for i, vh in enumerate(vhosts):
        for j, domain in enumerate(vh.domains):
            if domain is None:
                continue
            if domain in seen:
                ctx.error(path + (i, "domains", j), f"duplicate domain {domain!r} in this "
                          f"listener (already in virtual host {seen[domain]!r})")
            else:
                seen[domain] = vh.name


def _check_cluster_refs(ctx: _Ctx, clusters: Sequence[ClusterConfig]) -> None:
    names = [c.name for c in clusters if c.name is not None]
    if len(names) < len(clusters):
        return  # a cluster name is invalid (already reported); references would only cascade
    for path, name in ctx.cluster_refs:
        if name not in names:
            known = f"defined clusters: {', '.join(names)}" if names else "no clusters are defined"
            ctx.error(path, f"unknown cluster {name!r}; {known}{_suggest(name, names)}")


def _address_overlap(a: str, b: str) -> bool:
    """True if binding both addresses on one port would clash (wildcards cover their family)."""
    def expand(addr: str) -> set[str]:
        return {"127.0.0.1", "::1"} if addr == "localhost" else {addr}
    for x in expand(a):
        for y in expand(b):
            if x == y:
                return True
            ix, iy = ipaddress.ip_address(x), ipaddress.ip_address(y)
            if ix.version == iy.version and (ix.is_unspecified or iy.is_unspecified):
                return True
    return False


def _check_addresses(ctx: _Ctx, listeners: Sequence[ListenerConfig],
                     admin: AdminConfig | None) -> None:
    bound: list[tuple[int, ListenerConfig]] = []
    for i, lst in enumerate(listeners):
        if lst.address is None or lst.port is None or lst.port == 0:
            continue
        for j, other in bound:
            if other.port == lst.port and _address_overlap(other.address, lst.address):
                ctx.error(("listeners", i, "port"), f"listener address {lst.address}:{lst.port} "
                          f"is already used by listener {other.name!r} "
                          f"({other.address}:{other.port})")
                break
        bound.append((i, lst))
    if admin is None or admin.port is None or admin.address is None or admin.port == 0:
        return
    for _, lst in bound:
        if lst.port == admin.port and _address_overlap(lst.address, admin.address):
            ctx.error(("admin", "port"), f"admin address {admin.address}:{admin.port} is "
                      f"already used by listener {lst.name!r} ({lst.address}:{lst.port})")
            break
