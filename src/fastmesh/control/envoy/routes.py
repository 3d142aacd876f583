"""RouteConfiguration (inline ``route_config`` or RDS) to a listener's ``virtual_hosts``.

fastmesh's native route keys are mostly Envoy's; the differences are the
shape (Envoy nests the action under ``route``) and header matchers (suffix,
contains and ignore_case become a native full-match regex).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fastmesh.control.envoy.engine import (
    Bad,
    Path,
    Table,
    Tx,
    boolean,
    copy,
    custom,
    data_source,
    duration,
    enum,
    ignore,
    reject,
    string,
    sub,
    type_name,
    uint32,
    wrapped,
)

T_ROUTES = "test_routes_translated"
T_MATCH = "test_route_matches"
T_ACTION = "test_route_actions"
T_REJECT = "test_rejections"
T_FILTERS = "test_http_filters"

_LATER = "traffic management (rewrites, redirects, mirroring) comes later"
_HEADERS = "fastmesh has no request/response header rewriting yet"


# ---------------------------------------------------------------- typed_per_filter_config

# Per-route settings of the built-in filters: the message each takes.
_PER_ROUTE_TYPES = {
    "envoy.filters.http.local_ratelimit":
        "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
    "envoy.filters.http.fault": "envoy.extensions.filters.http.fault.v3.HTTPFault",
    "envoy.filters.http.rbac": "envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
}


def _per_filter(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    """typed_per_filter_config: keys are the listener's http filter names (Envoy's), each
    an Any of the filter's per-route message; translated to the built-in's native name."""
    if not isinstance(value, Mapping):
        tx.error(epath, "expected a mapping of http filter name to its per-route config")
        return
    native: dict = {}
    tx.set(out, npath, "typed_per_filter_config", native, epath)
    names = getattr(tx, "filter_names", {})
    for key, cfg in value.items():
        path = epath + (key,)
        if key in names and names[key] is None:
            tx.warn(path, "ignored: the filter is optional and fastmesh lacks it")
            continue
        builtin = names.get(key, key if key in _PER_ROUTE_TYPES else None)
        if builtin is None:
            tx.error(path, f"no http filter named {key!r} on this listener")
            continue
        if not isinstance(cfg, Mapping):
            tx.error(path, "expected the filter's per-route config (a mapping with '@type')")
            continue
        if "@type" in cfg:
            try:
                name = type_name(cfg["@type"])
            except Bad as exc:
                tx.error(path + ("@type",), exc.reason)
                continue
            if name == "envoy.config.route.v3.FilterConfig":
                tx.error(path + ("@type",), "not supported yet: FilterConfig wrappers "
                         "(is_optional / disabled per route)")
                continue
            if name != _PER_ROUTE_TYPES[builtin]:
                tx.error(path + ("@type",), f"@type {name!r} where "
                         f"{_PER_ROUTE_TYPES[builtin]!r} was expected")
                continue
        from fastmesh.control.envoy.listeners import filter_settings
        tx.set(native, npath + ("typed_per_filter_config",), builtin,
               filter_settings(cfg), path)


# ---------------------------------------------------------------- matches

def _header_matcher(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, list):
        tx.error(epath, "expected a list of header matchers")
        return
    items: list = []
    tx.set(out, npath, "headers", items, epath)
    for i, h in enumerate(value):
        native: dict = {}
        items.append(native)
        tx.walk(HEADER_MATCHER, epath + (i,), npath + ("headers", i), h, native)
        if "_suffix" in native or "_contains" in native or native.get("_ignore_case"):
            _to_regex(tx, epath + (i,), npath + ("headers", i), native)


def _to_regex(tx: Tx, epath: Path, npath: Path, native: dict) -> None:
    """suffix / contains / ignore_case have no native key: written as a full-match regex."""
    ic = native.pop("_ignore_case", False)
    suffix, contains = native.pop("_suffix", None), native.pop("_contains", None)
    kinds = [k for k in ("exact", "prefix") if k in native]
    if suffix is not None:
        pattern = ".*" + re.escape(suffix)
    elif contains is not None:
        pattern = ".*" + re.escape(contains) + ".*"
    elif kinds:
        v = native.pop(kinds[0])
        pattern = re.escape(v) + (".*" if kinds[0] == "prefix" else "")
    elif "regex" in native:
        pattern = native.pop("regex")
    else:
        return
    native["regex"] = ("(?i)" if ic else "") + pattern
    tx.paths.setdefault(npath + ("regex",), epath)


def _string_match(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    tx.walk(STRING_MATCHER, epath, npath, value, out)


def _regex(value: Any) -> str:
    """RegexMatcher: {regex, google_re2 (accepted)}."""
    if not isinstance(value, Mapping) or "regex" not in value:
        raise Bad("expected a RegexMatcher: {regex: PATTERN}")
    extra = set(value) - {"regex", "google_re2"}
    if extra:
        raise Bad(f"RegexMatcher field {sorted(extra)[0]!r} is not supported by fastmesh")
    return string(value["regex"])


def _hidden(key: str, conv) -> Any:
    """A handler writing a private key that _to_regex folds into the native regex."""
    def handler(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
        try:
            out[key] = conv(value)
        except Bad as exc:
            tx.error(epath, exc.reason)
    return handler


STRING_MATCHER = Table("envoy.type.matcher.v3.StringMatcher", (
    copy("exact", "exact", string, "", T_MATCH),
    copy("prefix", "prefix", string, "", T_MATCH),
    custom("suffix", "regex", _hidden("_suffix", string), "as a native regex `.*<suffix>`",
           T_MATCH),
    custom("contains", "regex", _hidden("_contains", string),
           "as a native regex `.*<text>.*`", T_MATCH),
    copy("safe_regex", "regex", _regex, "full match, Python `re` syntax (RE2's common subset)",
         T_MATCH),
    custom("ignore_case", "regex", _hidden("_ignore_case", boolean),
           "the match becomes a `(?i)` regex", T_MATCH),
))

HEADER_MATCHER = Table("envoy.config.route.v3.HeaderMatcher", (
    copy("name", "name", string, "", T_MATCH),
    copy("exact_match", "exact", string, "deprecated in Envoy; still read", T_MATCH),
    copy("prefix_match", "prefix", string, "", T_MATCH),
    custom("suffix_match", "regex", _hidden("_suffix", string), "as a native regex", T_MATCH),
    custom("contains_match", "regex", _hidden("_contains", string), "as a native regex",
           T_MATCH),
    copy("safe_regex_match", "regex", _regex, "", T_MATCH),
    copy("present_match", "present", boolean, "", T_MATCH),
    custom("string_match", "exact/prefix/regex", _string_match, "a StringMatcher", T_MATCH),
    copy("invert_match", "invert", boolean,
         "fastmesh's invert also matches an absent header", T_MATCH),
    reject("range_match", "integer range header matches", T_REJECT),
    reject("treat_missing_header_as_empty", "treat_missing_header_as_empty", T_REJECT),
))

ROUTE_MATCH = Table("envoy.config.route.v3.RouteMatch", (
    copy("prefix", "prefix", string, "", T_MATCH),
    copy("path", "path", string, "", T_MATCH),
    copy("safe_regex", "regex", _regex, "full match on the path", T_MATCH),
    copy("case_sensitive", "case_sensitive", boolean, "BoolValue; default true", T_MATCH),
    custom("headers", "headers", _header_matcher, "all must match", T_MATCH),
    reject("query_parameters", "query parameter matches", T_REJECT),
    reject("grpc", "the grpc route match", T_REJECT),
    reject("runtime_fraction", "runtime fractions (fastmesh has no runtime layer)", T_REJECT),
    reject("path_separated_prefix", "path_separated_prefix matches", T_REJECT),
    reject("path_match_policy", "path_match_policy (URI templates)", T_REJECT),
))


# ---------------------------------------------------------------- actions

def _weighted_clusters(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, Mapping):
        tx.error(epath, "expected a WeightedCluster (a mapping with 'clusters')")
        return
    holder: dict = {}
    tx.walk(WEIGHTED_CLUSTER, epath, npath, value, holder)
    entries = holder.get("_clusters")
    if entries is None:
        if "clusters" not in value:
            tx.error(epath, "missing required field 'clusters'")
        return
    # Envoy allows weight 0 (never picked); fastmesh's weights start at 1, so a
    # zero-weight cluster is left out. Its name must still exist.
    kept = [(i, e) for i, e in entries if e.get("weight") != 0]
    for i, e in entries:
        if e.get("weight") == 0 and "name" in e:
            tx.zero_weight_refs.append((epath + ("clusters", i, "name"), e["name"]))
    if entries and not kept:
        tx.error(epath + ("clusters",), "every weight is 0: the total weight must be "
                 "greater than zero")
        return
    native: list = []
    tx.set(out, npath, "weighted_clusters", native, epath + ("clusters",))
    for j, (i, e) in enumerate(kept):
        native.append(e)
        tx.paths[npath + ("weighted_clusters", j)] = epath + ("clusters", i)
        for k in e:
            tx.paths[npath + ("weighted_clusters", j, k)] = epath + ("clusters", i, k)


def _wc_clusters(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, list):
        tx.error(epath, "expected a list of clusters")
        return
    entries = []
    for i, c in enumerate(value):
        native: dict = {}
        if tx.walk(CLUSTER_WEIGHT, epath + (i,), npath, c, native):
            entries.append((i, native))
    out["_clusters"] = entries


CLUSTER_WEIGHT = Table("envoy.config.route.v3.WeightedCluster.ClusterWeight", (
    copy("name", "name", string, "", T_ACTION),
    copy("weight", "weight", uint32, "UInt32Value; 0 leaves the cluster out", T_ACTION),
    reject("typed_per_filter_config", "per-cluster filter configs", T_REJECT),
    reject("request_headers_to_add", _HEADERS, T_REJECT),
    reject("host_rewrite_literal", _LATER, T_REJECT),
))

WEIGHTED_CLUSTER = Table("envoy.config.route.v3.WeightedCluster", (
    custom("clusters", "weighted_clusters", _wc_clusters, "", T_ACTION),
    ignore("total_weight", "deprecated in Envoy; the weights' sum is used", T_ACTION),
    reject("runtime_key_prefix", "runtime keys (fastmesh has no runtime layer)", T_REJECT),
))

RETRY_BACK_OFF = Table("envoy.config.route.v3.RetryPolicy.RetryBackOff", (
    copy("base_interval", "base_interval", duration, "", T_ACTION),
    copy("max_interval", "max_interval", duration, "", T_ACTION),
))


def _status_codes(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise Bad("expected a list of status codes")
    return [uint32(v) for v in value]


def _host_predicate(value: Any) -> None:
    if not isinstance(value, list):
        raise Bad("expected a list of retry host predicates")
    for p in value:
        name = p.get("name") if isinstance(p, Mapping) else None
        if name != "envoy.retry_host_predicates.previous_hosts":
            raise Bad(f"not supported yet: retry host predicate {name!r} (fastmesh always "
                      "retries on another endpoint: envoy.retry_host_predicates.previous_hosts)")


def _accept(conv):
    def handler(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
        try:
            conv(value)
        except Bad as exc:
            tx.error(epath, exc.reason)
    return handler


RETRY_POLICY = Table("envoy.config.route.v3.RetryPolicy", (
    copy("retry_on", "retry_on", string, "Envoy's condition names", T_ACTION),
    copy("num_retries", "num_retries", uint32, "UInt32Value; default 1", T_ACTION),
    copy("per_try_timeout", "per_try_timeout", duration, "", T_ACTION),
    sub("retry_back_off", "retry_back_off", lambda: RETRY_BACK_OFF, "", T_ACTION),
    copy("retriable_status_codes", "retriable_status_codes", _status_codes, "", T_ACTION),
    custom("retry_host_predicate", "", _accept(_host_predicate),
           "only previous_hosts, which fastmesh always does", T_ACTION),
    custom("host_selection_retry_max_attempts", "", _accept(uint32),
           "accepted; fastmesh excludes the failed endpoint directly", T_ACTION),
    reject("retry_priority", "retry priorities", T_REJECT),
    reject("rate_limited_retry_back_off", "rate-limited retry back-off", T_REJECT),
    reject("retriable_headers", "retriable_headers", T_REJECT),
    reject("retriable_request_headers", "retriable_request_headers", T_REJECT),
))

MAX_STREAM_DURATION = Table("envoy.config.route.v3.RouteAction.MaxStreamDuration", (
    copy("max_stream_duration", "max_stream_duration", duration, "", T_ACTION),
    copy("grpc_timeout_header_max", "grpc_timeout_header_max", duration, "", T_ACTION),
    copy("grpc_timeout_header_offset", "grpc_timeout_header_offset", duration, "", T_ACTION),
))

ROUTE_ACTION = Table("envoy.config.route.v3.RouteAction", (
    copy("cluster", "cluster", string, "", T_ACTION),
    custom("weighted_clusters", "weighted_clusters", _weighted_clusters, "", T_ACTION),
    copy("timeout", "timeout", duration, "default 15s, as Envoy", T_ACTION),
    copy("idle_timeout", "idle_timeout", duration, "", T_ACTION),
    sub("retry_policy", "retry_policy", lambda: RETRY_POLICY, "", T_ACTION),
    copy("priority", "priority", enum({"DEFAULT": "default", "HIGH": "high"}), "", T_ACTION),
    sub("max_stream_duration", "max_stream_duration", lambda: MAX_STREAM_DURATION, "",
        T_ACTION),
    reject("prefix_rewrite", _LATER, T_REJECT),
    reject("regex_rewrite", _LATER, T_REJECT),
    reject("request_mirror_policies", _LATER, T_REJECT),
    reject("host_rewrite_literal", _LATER, T_REJECT),
    reject("auto_host_rewrite", _LATER, T_REJECT),
    reject("hash_policy", "route hash policies (fastmesh hashes per cluster: its "
           "ring_hash/maglev clusters hash the client address)", T_REJECT),
    reject("cluster_header", "cluster_header", T_REJECT),
    reject("cluster_not_found_response_code", "cluster_not_found_response_code", T_REJECT),
))


def _direct_body(value: Any) -> str:
    return data_source(value)


DIRECT_RESPONSE = Table("envoy.config.route.v3.DirectResponseAction", (
    copy("status", "status", uint32, "", T_ACTION),
    copy("body", "body", _direct_body, "DataSource: inline_string, inline_bytes or filename",
         T_ACTION),
))


def _route_action(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    # Envoy nests the action under 'route'; fastmesh's route holds it directly.
    tx.walk(ROUTE_ACTION, epath, npath, value, out)


def _direct(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    inner: dict = {}
    tx.set(out, npath, "direct_response", inner, epath)
    tx.walk(DIRECT_RESPONSE, epath, npath + ("direct_response",), value, inner)


ROUTE = Table("envoy.config.route.v3.Route", (
    copy("name", "name", string, "", T_ROUTES),
    sub("match", "match", lambda: ROUTE_MATCH, "", T_MATCH),
    custom("route", "cluster / weighted_clusters / ...", _route_action,
           "its fields become the route's", T_ACTION),
    custom("direct_response", "direct_response", _direct, "", T_ACTION),
    custom("typed_per_filter_config", "typed_per_filter_config", _per_filter,
           "for local_ratelimit, fault and rbac", T_FILTERS),
    copy("per_request_buffer_limit_bytes", "per_request_buffer_limit_bytes", uint32,
         "UInt32Value", T_ROUTES),
    ignore("metadata", "route metadata is not used by fastmesh's filters", T_ROUTES),
    reject("redirect", _LATER, T_REJECT),
    reject("filter_action", "filter_action", T_REJECT),
    reject("non_forwarding_action", "non_forwarding_action", T_REJECT),
    reject("decorator", "tracing decorators", T_REJECT),
    reject("request_headers_to_add", _HEADERS, T_REJECT),
    reject("request_headers_to_remove", _HEADERS, T_REJECT),
    reject("response_headers_to_add", _HEADERS, T_REJECT),
    reject("response_headers_to_remove", _HEADERS, T_REJECT),
))


def _routes(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, list):
        tx.error(epath, "expected a list of routes")
        return
    items: list = []
    tx.set(out, npath, "routes", items, epath)
    for i, r in enumerate(value):
        native: dict = {}
        items.append(native)
        tx.walk(ROUTE, epath + (i,), npath + ("routes", i), r, native)


def _domains(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise Bad("expected a list of domains")
    return [string(d) for d in value]


VIRTUAL_HOST = Table("envoy.config.route.v3.VirtualHost", (
    copy("name", "name", string, "", T_ROUTES),
    copy("domains", "domains", _domains, "", T_ROUTES),
    custom("routes", "routes", _routes, "first match wins; none: 404, as Envoy", T_ROUTES),
    custom("typed_per_filter_config", "typed_per_filter_config", _per_filter, "", T_FILTERS),
    copy("include_request_attempt_count", "include_request_attempt_count", boolean, "",
         T_ROUTES),
    reject("retry_policy", "virtual-host retry policies (give the route its retry_policy)",
           T_REJECT),
    reject("require_tls", "require_tls", T_REJECT),
    reject("rate_limits", "global rate limits", T_REJECT),
    reject("cors", "CORS", T_REJECT),
    reject("request_headers_to_add", _HEADERS, T_REJECT),
    reject("request_headers_to_remove", _HEADERS, T_REJECT),
    reject("response_headers_to_add", _HEADERS, T_REJECT),
    reject("response_headers_to_remove", _HEADERS, T_REJECT),
))


# Envoy answers 404 where a route table or a virtual host has no routes; fastmesh's
# native config wants at least one, so they get this one.
def _not_found() -> dict:
    return {"match": {"prefix": "/"}, "direct_response": {"status": 404}}


def _virtual_hosts(tx: Tx, epath: Path, npath: Path, value: Any, out: dict) -> None:
    if not isinstance(value, list):
        tx.error(epath, "expected a list of virtual hosts")
        return
    items: list = []
    tx.set(out, npath, "virtual_hosts", items, epath)
    for i, vh in enumerate(value):
        native: dict = {}
        items.append(native)
        if tx.walk(VIRTUAL_HOST, epath + (i,), npath + ("virtual_hosts", i), vh, native) and \
                not native.get("routes"):
            native["routes"] = [_not_found()]
    if not items:
        out["virtual_hosts"] = [{"name": "no_routes", "domains": ["*"], "routes": [_not_found()]}]


ROUTE_CONFIGURATION = Table("envoy.config.route.v3.RouteConfiguration", (
    ignore("name", "names the configuration for RDS", T_ROUTES),
    custom("virtual_hosts", "virtual_hosts", _virtual_hosts,
           "none: every request gets 404, as Envoy", T_ROUTES),
    ignore("validate_clusters", "fastmesh always checks that route clusters exist",
           T_ROUTES),
    reject("vhds", "VHDS", T_REJECT),
    reject("request_headers_to_add", _HEADERS, T_REJECT),
    reject("request_headers_to_remove", _HEADERS, T_REJECT),
    reject("response_headers_to_add", _HEADERS, T_REJECT),
    reject("response_headers_to_remove", _HEADERS, T_REJECT),
), type_url="envoy.config.route.v3.RouteConfiguration")


def translate_route_config(tx: Tx, epath: Path, npath: Path, value: Any, listener: dict) -> None:
    """A RouteConfiguration into ``listener``'s ``virtual_hosts`` (at native ``npath``)."""
    if tx.walk(ROUTE_CONFIGURATION, epath, npath, value, listener) and \
            "virtual_hosts" not in listener:
        # As Envoy: a table without virtual hosts answers every request with 404.
        listener["virtual_hosts"] = [{"name": "no_routes", "domains": ["*"],
                                      "routes": [_not_found()]}]


__all__ = ["translate_route_config", "wrapped"]
