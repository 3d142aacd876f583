"""Envoy's RBAC filters: validation and compilation of authorization policy.

``envoy.filters.http.rbac`` (an HTTP filter, ``http_filters``; per route
``typed_per_filter_config`` takes Envoy's ``RBACPerRoute``) and
``envoy.filters.network.rbac`` (a TCP listener's ``network_filters``) share
one policy language, Envoy's ``config.rbac.v3``: ``rules`` and
``shadow_rules``, each ``{action: ALLOW | DENY | LOG, policies: {name:
{permissions: [...], principals: [...]}}}``. Validation reports every
problem with its key; compilation turns a validated policy set into
``_core`` objects (filter_rbac.pxi) once per config snapshot, so the data
side evaluates trees of compiled matchers and never reads config.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastmesh.control.loader import Path, _Ctx
from fastmesh.control.validation import (
    _Bad,
    _bool,
    _enum,
    _header_name,
    _int,
    _list,
    _Map,
    _nonempty_str,
    _regex,
    _str,
)

HTTP_RBAC = "envoy.filters.http.rbac"
NETWORK_RBAC = "envoy.filters.network.rbac"
HTTP_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
NETWORK_TYPE = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
ACTIONS = ("ALLOW", "DENY", "LOG")
STRING_KINDS = ("exact", "prefix", "suffix", "contains", "safe_regex")

# Envoy fields fastmesh does not implement: named so the error says so
# rather than "unknown key".
_NOT_SUPPORTED = ("metadata", "filter_state", "sourced_metadata", "matcher", "uri_template",
                  "destination_ip", "condition", "checked_condition", "range_match",
                  "shadow_matcher", "rules_stat_prefix", "shadow_rules_stat_prefix",
                  "track_per_rule_stats", "audit_logging_options", "delay_deny",
                  "treat_missing_header_as_empty")
_PERMISSION_KEYS = ("any", "and_rules", "or_rules", "not_rule", "header", "url_path",
                    "destination_port", "destination_port_range", "requested_server_name")
_PRINCIPAL_KEYS = ("any", "and_ids", "or_ids", "not_id", "authenticated", "source_ip",
                   "direct_remote_ip", "remote_ip", "header", "url_path")
_HEADER_KINDS = ("string_match", "exact_match", "prefix_match", "suffix_match",
                 "contains_match", "safe_regex_match", "present_match")
_HEADER_KEYS = ("name", "invert_match") + _HEADER_KINDS
_STRING_KEYS = STRING_KINDS + ("ignore_case",)
_RBAC_KEYS = ("action", "policies")
_POLICY_KEYS = ("permissions", "principals")
_HTTP_KEYS = ("@type", "rules", "shadow_rules")
_PER_ROUTE_KEYS = ("@type", "rbac")
_NETWORK_KEYS = ("@type", "stat_prefix", "rules", "shadow_rules", "enforcement_type")


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Envoy's StringMatcher: one of STRING_KINDS, its value, ignore_case."""

    kind: str
    value: str
    ignore_case: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated permission or principal: a node of the matcher tree
    (kinds as _core.RbacNode's)."""

    kind: str                              # any and or not header url_path port sni
                                           # authenticated cidr none
    kids: tuple["Rule", ...] = ()
    string: StringMatch | None = None
    name: str | None = None                # header
    present: bool | None = None            # header: present_match
    invert: bool = False                   # header: invert_match
    lo: int = 0                            # port: [lo, hi]
    hi: int = 0
    cidr: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    permissions: tuple[Rule, ...]
    principals: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Envoy's config.rbac.v3.RBAC: an action and named policies."""

    action: str
    policies: tuple[Policy, ...]


@dataclass(frozen=True, slots=True)
class RbacSettings:
    """A validated RBAC filter config; rules None enforces nothing (an
    RBACPerRoute without ``rbac`` disables the filter on the route)."""

    rules: PolicySet | None = None
    shadow_rules: PolicySet | None = None
    stat_prefix: str = ""                  # network filter only


# ------------------------------------------------------------ validation

def _check_type(ctx: _Ctx, path: Path, m: _Map, expected: str) -> None:
    url = m.get("@type", _nonempty_str, None)
    if url is not None and url != expected:
        ctx.error(path + ("@type",), f"{url!r} is not expected here; expected {expected!r}")


def _keys(ctx: _Ctx, path: Path, value: Any, keys: tuple[str, ...], what: str) -> _Map:
    # A mapping whose Envoy-only keys get "not supported" instead of "unknown".
    if isinstance(value, Mapping):
        for k in value:
            if k in _NOT_SUPPORTED:
                ctx.error(path + (k,), f"{k!r} (Envoy) is not supported by fastmesh; "
                          f"supported: {', '.join(keys)}", key=True)
        value = {k: v for k, v in value.items() if k not in _NOT_SUPPORTED}
    return _Map(ctx, path, value, keys, what)


def parse_string(ctx: _Ctx, path: Path, value: Any) -> StringMatch | None:
    """Envoy's StringMatcher: exactly one of exact | prefix | suffix |
    contains | safe_regex ({regex}), and ignore_case."""
    m = _Map(ctx, path, value, _STRING_KEYS, "a StringMatcher")
    kind = m.one_of(STRING_KINDS, "StringMatcher")
    ignore_case = m.get("ignore_case", _bool, False)
    if kind is None:
        return None
    if kind == "safe_regex":
        raw = m.data[kind]
        rm = _Map(ctx, path + (kind,), raw, ("regex", "google_re2"), "a RegexMatcher ({regex})")
        text = rm.get("regex", _regex)
    else:
        text = m.get(kind, _str)
    if text is None:
        return None
    if ignore_case and kind == "safe_regex":
        ctx.error(path + ("ignore_case",), "ignore_case has no effect on safe_regex (Envoy)")
    return StringMatch(kind, text, bool(ignore_case))


def _header(ctx: _Ctx, path: Path, value: Any) -> Rule | None:
    m = _keys(ctx, path, value, _HEADER_KEYS, "a HeaderMatcher")
    name = m.get("name", _header_or_pseudo)
    invert = m.get("invert_match", _bool, False)
    kind = m.one_of(_HEADER_KINDS, "HeaderMatcher")
    if kind is None or name is None:
        return None
    if kind == "present_match":
        present = m.get(kind, _bool)
        return None if present is None else Rule("header", name=name, present=present,
                                                 invert=bool(invert))
    if kind == "string_match":
        sm = m.section(kind, parse_string)
    elif kind == "safe_regex_match":
        rm = _Map(ctx, path + (kind,), m.data[kind], ("regex", "google_re2"),
                  "a RegexMatcher ({regex})")
        text = rm.get("regex", _regex)
        sm = None if text is None else StringMatch("safe_regex", text)
    else:
        text = m.get(kind, _str)
        sm = None if text is None else StringMatch(kind[:-len("_match")], text)
    if sm is None:
        return None
    return Rule("header", string=sm, name=name, invert=bool(invert))


def _header_or_pseudo(value: Any) -> str:
    if isinstance(value, str) and value in (":method", ":authority", ":path", ":scheme"):
        return value
    return _header_name(value).lower()


def _path_matcher(ctx: _Ctx, path: Path, value: Any) -> Rule | None:
    # Envoy's PathMatcher {path: StringMatcher}: the path without the query.
    m = _Map(ctx, path, value, ("path",), "a PathMatcher ({path: StringMatcher})")
    sm = m.section("path", parse_string)
    return None if sm is None else Rule("url_path", string=sm)


def _cidr(ctx: _Ctx, path: Path, value: Any) -> Rule | None:
    # Envoy's CidrRange {address_prefix, prefix_len} (prefix_len 0 when unset).
    m = _Map(ctx, path, value, ("address_prefix", "prefix_len"),
             "a CidrRange ({address_prefix, prefix_len})")
    addr = m.get("address_prefix", _nonempty_str)
    plen = m.get("prefix_len", _int(0, 128), 0)
    if addr is None or plen is None:
        return None
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        ctx.error(path + ("address_prefix",), f"{addr!r} is not an IP address")
        return None
    if plen > ip.max_prefixlen:
        ctx.error(path + ("prefix_len",), f"{plen} is longer than an IPv{ip.version} address "
                  f"({ip.max_prefixlen} bits)")
        return None
    return Rule("cidr", cidr=f"{addr}/{plen}")


def _any(ctx: _Ctx, path: Path, value: Any) -> Rule | None:
    if value is not True:
        ctx.error(path, f"expected true (any: true matches everything), got {value!r}")
        return None
    return Rule("any")


def _set(ctx: _Ctx, path: Path, value: Any, key: str, item: Any, kind: str) -> Rule | None:
    # and_rules {rules: [...]} / or_ids {ids: [...]} and the like.
    m = _Map(ctx, path, value, (key,), f"a set ({{{key}: [...]}})")
    kids = m.section(key, lambda c, p, v: _list(c, p, v, item, min_items=1, what=key))
    if kids is None or None in kids:
        return None
    return Rule(kind, kids=tuple(kids))


def parse_permission(ctx: _Ctx, path: Path, value: Any) -> Rule | None:
    """Envoy's config.rbac.v3.Permission (one rule)."""
    m = _keys(ctx, path, value, _PERMISSION_KEYS, "a Permission")
    kind = m.one_of(_PERMISSION_KEYS, "Permission")
    if kind is None:
        return None
    v = m.data[kind]
    p = path + (kind,)
    if kind == "any":
        return _any(ctx, p, v)
    if kind == "and_rules":
        return _set(ctx, p, v, "rules", parse_permission, "and")
    if kind == "or_rules":
        return _set(ctx, p, v, "rules", parse_permission, "or")
    if kind == "not_rule":
        r = parse_permission(ctx, p, v)
        return None if r is None else Rule("not", kids=(r,))
    if kind == "header":
        return _header(ctx, p, v)
    if kind == "url_path":
        return _path_matcher(ctx, p, v)
    if kind == "destination_port":
        port = m.get(kind, _int(0, 65535))
        return None if port is None else Rule("port", lo=port, hi=port)
    if kind == "destination_port_range":
        # Envoy's Int32Range [start, end): end excluded.
        rm = _Map(ctx, p, v, ("start", "end"), "a port range ({start, end})")
        lo, hi = rm.get("start", _int(0, 65535)), rm.get("end", _int(0, 65536))
        if lo is None or hi is None:
            return None
        if hi <= lo:
            ctx.error(p + ("end",), f"end {hi} must be greater than start {lo} (end is excluded)")
            return None
        return Rule("port", lo=lo, hi=hi - 1)
    sm = parse_string(ctx, p, v)                 # requested_server_name
    return None if sm is None else Rule("sni", string=sm)


def parse_principal(ctx: _Ctx, path: Path, value: Any) -> Rule | None:
    """Envoy's config.rbac.v3.Principal (one identity)."""
    m = _keys(ctx, path, value, _PRINCIPAL_KEYS, "a Principal")
    kind = m.one_of(_PRINCIPAL_KEYS, "Principal")
    if kind is None:
        return None
    v = m.data[kind]
    p = path + (kind,)
    if kind == "any":
        return _any(ctx, p, v)
    if kind == "and_ids":
        return _set(ctx, p, v, "ids", parse_principal, "and")
    if kind == "or_ids":
        return _set(ctx, p, v, "ids", parse_principal, "or")
    if kind == "not_id":
        r = parse_principal(ctx, p, v)
        return None if r is None else Rule("not", kids=(r,))
    if kind == "authenticated":
        am = _Map(ctx, p, v or {}, ("principal_name",), "an Authenticated ({principal_name})")
        sm = am.section("principal_name", parse_string, None)
        if "principal_name" in am and sm is None:
            return None
        return Rule("authenticated", string=sm)
    if kind == "header":
        return _header(ctx, p, v)
    if kind == "url_path":
        return _path_matcher(ctx, p, v)
    return _cidr(ctx, p, v)          # source_ip, direct_remote_ip, remote_ip


def _policy(ctx: _Ctx, path: Path, name: str, value: Any) -> Policy | None:
    m = _keys(ctx, path, value, _POLICY_KEYS, "a Policy ({permissions, principals})")
    perms = m.section("permissions", lambda c, p, v: _list(
        c, p, v, parse_permission, min_items=1, what="permissions"))
    princ = m.section("principals", lambda c, p, v: _list(
        c, p, v, parse_principal, min_items=1, what="principals"))
    if not perms or not princ or None in perms or None in princ:
        return None
    return Policy(name, tuple(perms), tuple(princ))


def parse_policy_set(ctx: _Ctx, path: Path, value: Any) -> PolicySet | None:
    """Envoy's config.rbac.v3.RBAC: {action, policies: {name: Policy}}."""
    m = _keys(ctx, path, value, _RBAC_KEYS, "an RBAC policy set ({action, policies})")
    action = m.get("action", _enum(ACTIONS), "ALLOW")
    raw = m.get("policies", lambda v: v, {})
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        ctx.error(path + ("policies",), "expected a mapping of policy name to policy")
        return None
    out = []
    for name, pv in raw.items():
        if not isinstance(name, str) or not name:
            ctx.error(path + ("policies",), f"policy names must be non-empty strings, "
                      f"got {name!r}")
            continue
        out.append(_policy(ctx, path + ("policies", name), name, pv))
    if action is None or None in out:
        return None
    return PolicySet(action, tuple(out))


def _rules(m: _Map) -> tuple[PolicySet | None, PolicySet | None, bool]:
    rules = m.section("rules", parse_policy_set, None)
    shadow = m.section("shadow_rules", parse_policy_set, None)
    bad = ("rules" in m and rules is None) or ("shadow_rules" in m and shadow is None)
    return rules, shadow, bad


def validate_http(ctx: _Ctx, path: Path, value: Any) -> RbacSettings | None:
    """envoy.filters.http.rbac's RBAC message ({rules, shadow_rules})."""
    m = _keys(ctx, path, value or {}, _HTTP_KEYS, f"{HTTP_RBAC} settings")
    _check_type(ctx, path, m, HTTP_TYPE)
    rules, shadow, bad = _rules(m)
    return None if bad else RbacSettings(rules, shadow)


def validate_per_route(ctx: _Ctx, path: Path, value: Any) -> RbacSettings | None:
    """RBACPerRoute ({rbac: RBAC}); without ``rbac`` the filter is off for the route."""
    m = _Map(ctx, path, value or {}, _PER_ROUTE_KEYS, "RBACPerRoute settings ({rbac})")
    _check_type(ctx, path, m, PER_ROUTE_TYPE)
    if "rbac" not in m:
        return RbacSettings()
    return m.section("rbac", validate_http)


def validate_network(ctx: _Ctx, path: Path, value: Any) -> RbacSettings | None:
    """envoy.filters.network.rbac's RBAC message ({stat_prefix, rules, shadow_rules})."""
    m = _keys(ctx, path, value, _NETWORK_KEYS, f"{NETWORK_RBAC} settings")
    _check_type(ctx, path, m, NETWORK_TYPE)
    prefix = m.get("stat_prefix", _nonempty_str)
    # fastmesh decides when the connection is accepted, before any upstream
    # connect: Envoy's one-time check on the first byte, earlier.
    m.get("enforcement_type", _enum(("ONE_TIME_ON_FIRST_BYTE",)), None)
    rules, shadow, bad = _rules(m)
    if bad or prefix is None:
        return None
    return RbacSettings(rules, shadow, prefix)


def parse_network_filters(ctx: _Ctx, path: Path, value: Any) -> tuple[Any, ...]:
    """A tcp listener's ``network_filters``: [{name, typed_config}], today only
    envoy.filters.network.rbac (the TCP proxy itself is the listener's ``cluster``)."""
    from fastmesh.control.schema import NetworkFilterConfig
    from fastmesh.control.validation import _parse_filter_config

    def one(c: _Ctx, p: Path, v: Any) -> Any:
        m = _Map(c, p, v, ("name", "typed_config"), "a network filter ({name, typed_config})")
        name = m.get("name", _enum((NETWORK_RBAC,)))
        raw = m.section("typed_config", _parse_filter_config)
        if name is None or raw is None:
            return None
        validate_network(c, p + ("typed_config",), raw)
        return NetworkFilterConfig(name=name, config=raw)

    out = _list(ctx, path, value, one, min_items=0, what="network filters")
    if sum(1 for f in out if f is not None) > 1:
        ctx.error(path, f"{NETWORK_RBAC} is listed more than once")
    return tuple(f for f in out if f is not None)


def settings(raw: Mapping[str, Any], validate: Any) -> RbacSettings:
    """Settings from a config validation already accepted (the compile step)."""
    ctx = _Ctx("<compiled>")
    out = validate(ctx, (), raw)
    if ctx.errors or out is None:
        raise _Bad(f"rbac: invalid settings reached the compile step: {ctx.errors}")
    return out


# ------------------------------------------------------------ compilation

def _node(r: Rule) -> Any:
    from fastmesh import _core
    sm = (None if r.string is None else
          _core.RbacString(r.string.kind, r.string.value, r.string.ignore_case))
    return _core.RbacNode(r.kind, kids=[_node(k) for k in r.kids], sm=sm, name=r.name,
                          present=r.present, invert=r.invert, lo=r.lo, hi=r.hi, cidr=r.cidr)


def _any_of(rules: tuple[Rule, ...]) -> Any:
    from fastmesh import _core
    return _node(rules[0]) if len(rules) == 1 else _core.RbacNode(
        "or", kids=[_node(r) for r in rules])


def _engine(ps: PolicySet | None) -> Any:
    from fastmesh import _core
    if ps is None:
        return None
    return _core.RbacEngine(ps.action, [
        _core.RbacPolicy(p.name, _any_of(p.permissions), _any_of(p.principals))
        for p in ps.policies])


def build(s: RbacSettings) -> Any:
    """The compiled settings (_core.RbacSettings) for one worker snapshot."""
    from fastmesh import _core
    return _core.RbacSettings(_engine(s.rules), _engine(s.shadow_rules))


def make_http(name: str, s: RbacSettings | None) -> Any:
    from fastmesh import _core
    return _core.RbacFilter(None if s is None else build(s), name)


def build_network(filters: tuple[Any, ...]) -> Any:
    """The tcp listener's _core.NetworkRbac, or None without one."""
    from fastmesh import _core
    for f in filters:
        if f.name == NETWORK_RBAC:
            s = settings(f.config, validate_network)
            return _core.NetworkRbac(s.stat_prefix, build(s))
    return None
