"""The built-in HTTP filters: Envoy's filter names mapped to their validators and compilers.

A listener's ``http_filters`` entry without ``import`` names a built-in
filter by its Envoy name and gives its settings in ``typed_config``;
routes and virtual hosts override them per filter name in
``typed_per_filter_config`` (docs/config.md). Each built-in has:

- ``validate(ctx, path, value)``: checks the settings and reports every
  problem to the config context (file, line, key, reason), as the rest of
  validation does; nothing is built;
- ``build(settings)``: the compiled settings object for the data plane,
  from validated settings (called once per worker snapshot);
- ``make(name, settings)``: the filter object for a listener's chain.

The compiled filters live in ``_core`` (filter_local_ratelimit.pxi,
filter_fault.pxi, filter_rbac.pxi; RBAC's validation is control/rbac.py);
this module is control-side only.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastmesh.control import rbac
from fastmesh.control.loader import Path, _Ctx
from fastmesh.control.validation import (
    _Bad,
    _bool,
    _duration,
    _enum,
    _int,
    _list,
    _Map,
    _header_name,
    _nonempty_str,
    _parse_header_match,
)

LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
FAULT = "envoy.filters.http.fault"

_TYPE_URLS = {
    LOCAL_RATELIMIT: "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3"
                     ".LocalRateLimit",
    FAULT: "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
}
_DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}
DEFAULT_MAX_DYNAMIC_DESCRIPTORS = 20       # Envoy's default


def _check_type(ctx: _Ctx, path: Path, m: _Map, kind: str) -> None:
    # "@type" is optional; when given it must be the filter's own.
    url = m.get("@type", _nonempty_str, None)
    if url is not None and url != _TYPE_URLS[kind]:
        ctx.error(path + ("@type",), f"{url!r} is not the type of {kind}; expected "
                  f"{_TYPE_URLS[kind]!r}")


def _fractional(ctx: _Ctx, path: Path, value: Any) -> int:
    """Envoy's FractionalPercent {numerator, denominator} as parts per million."""
    m = _Map(ctx, path, value, ("numerator", "denominator"),
             "a fractional percent ({numerator, denominator})")
    num = m.get("numerator", _int(0, 1_000_000), 0)
    den = m.get("denominator", _enum(tuple(_DENOMINATORS)), "HUNDRED")
    if num is None or den is None:
        return 0
    if num > _DENOMINATORS[den]:
        ctx.error(path + ("numerator",), f"{num} is more than the denominator {den} "
                  f"({_DENOMINATORS[den]}); the fraction is at most 1")
        return 0
    return num * (1_000_000 // _DENOMINATORS[den])


def _runtime_fractional(ctx: _Ctx, path: Path, value: Any) -> int:
    """Envoy's RuntimeFractionalPercent {default_value, runtime_key}: the
    default value (fastmesh has no runtime layer; the key is accepted)."""
    m = _Map(ctx, path, value, ("default_value", "runtime_key"),
             "a runtime fractional percent ({default_value, runtime_key})")
    m.get("runtime_key", _nonempty_str, None)
    return m.section("default_value", _fractional, 0) or 0


# ------------------------------------------------------------ local rate limit

_RL_KEYS = ("@type", "stat_prefix", "token_bucket", "status", "filter_enabled",
            "filter_enforced", "enable_x_ratelimit_headers",
            "rate_limited_as_resource_exhausted", "descriptor", "max_dynamic_descriptors")
_BUCKET_KEYS = ("max_tokens", "tokens_per_fill", "fill_interval")


@dataclass(frozen=True, slots=True)
class LocalRateLimitSettings:
    """A validated envoy.filters.http.local_ratelimit config (seconds, ppm)."""

    stat_prefix: str
    max_tokens: int
    tokens_per_fill: int
    fill_interval: float
    status: int = 429
    filter_enabled_ppm: int = 0          # Envoy: 0% unless configured
    filter_enforced_ppm: int = 0
    x_ratelimit_headers: bool = False
    rate_limited_as_resource_exhausted: bool = False
    descriptor_header: str | None = None
    descriptor_remote_address: bool = False
    max_dynamic_descriptors: int = DEFAULT_MAX_DYNAMIC_DESCRIPTORS


def _token_bucket(ctx: _Ctx, path: Path, value: Any) -> tuple[int, int, float]:
    m = _Map(ctx, path, value, _BUCKET_KEYS, "a token bucket")
    interval = m.get("fill_interval", _duration(positive=True))
    if interval is not None and interval < 0.05:
        # Envoy refuses intervals under 50ms as well.
        ctx.error(path + ("fill_interval",), f"{interval * 1000:g}ms is too short; at least 50ms")
    return (m.get("max_tokens", _int(1, 1 << 32)), m.get("tokens_per_fill", _int(1, 1 << 32), 1),
            interval)


def _status(ctx: _Ctx, path: Path, value: Any) -> int:
    # Envoy's type.v3.HttpStatus {code}.
    m = _Map(ctx, path, value, ("code",), "an HTTP status ({code})")
    return m.get("code", _int(400, 599))


def _descriptor(ctx: _Ctx, path: Path, value: Any) -> tuple[str | None, bool]:
    # fastmesh's one-action form of Envoy's rate_limits actions with a
    # wildcard descriptor: a bucket per value of a request header, or per
    # client address.
    m = _Map(ctx, path, value, ("request_headers", "remote_address"),
             "a descriptor ({request_headers: {header_name}} or {remote_address: {}})")
    kind = m.one_of(("request_headers", "remote_address"), "descriptor")
    if kind == "request_headers":
        h = _Map(ctx, path + ("request_headers",), m.data["request_headers"], ("header_name",),
                 "request_headers ({header_name})")
        return h.get("header_name", _header_name), False
    if kind == "remote_address":
        _Map(ctx, path + ("remote_address",), m.data["remote_address"] or {}, (),
             "remote_address ({})")
        return None, True
    return None, False


def validate_local_ratelimit(ctx: _Ctx, path: Path, value: Any) -> LocalRateLimitSettings | None:
    """Check an envoy.filters.http.local_ratelimit config; None if it is wrong."""
    m = _Map(ctx, path, value, _RL_KEYS, f"{LOCAL_RATELIMIT} settings")
    _check_type(ctx, path, m, LOCAL_RATELIMIT)
    bucket = m.section("token_bucket", _token_bucket)
    header, remote = m.section("descriptor", _descriptor, (None, False)) or (None, False)
    out = dict(
        stat_prefix=m.get("stat_prefix", _nonempty_str),
        status=m.section("status", _status, 429),
        filter_enabled_ppm=m.section("filter_enabled", _runtime_fractional, 0),
        filter_enforced_ppm=m.section("filter_enforced", _runtime_fractional, 0),
        x_ratelimit_headers=m.get("enable_x_ratelimit_headers",
                                  _enum(("OFF", "DRAFT_VERSION_03")), "OFF") == "DRAFT_VERSION_03",
        rate_limited_as_resource_exhausted=m.get("rate_limited_as_resource_exhausted", _bool,
                                                 False),
        descriptor_header=header, descriptor_remote_address=remote,
        max_dynamic_descriptors=m.get("max_dynamic_descriptors", _int(1, 1 << 20),
                                      DEFAULT_MAX_DYNAMIC_DESCRIPTORS),
    )
    required = [v for k, v in out.items() if k != "descriptor_header"]
    if bucket is None or None in bucket or None in required:
        return None
    return LocalRateLimitSettings(max_tokens=bucket[0], tokens_per_fill=bucket[1],
                                  fill_interval=bucket[2], **out)


def build_local_ratelimit(s: LocalRateLimitSettings) -> Any:
    from fastmesh import _core
    return _core.RateLimitSettings(
        s.stat_prefix, s.max_tokens, s.tokens_per_fill, s.fill_interval, status=s.status,
        filter_enabled_ppm=s.filter_enabled_ppm, filter_enforced_ppm=s.filter_enforced_ppm,
        x_ratelimit_headers=s.x_ratelimit_headers,
        rate_limited_as_resource_exhausted=s.rate_limited_as_resource_exhausted,
        descriptor_header=s.descriptor_header,
        descriptor_remote_address=s.descriptor_remote_address,
        max_dynamic_descriptors=s.max_dynamic_descriptors)


def make_local_ratelimit(name: str, s: LocalRateLimitSettings | None) -> Any:
    from fastmesh import _core
    return _core.LocalRateLimitFilter(None if s is None else build_local_ratelimit(s), name)


# ------------------------------------------------------------ fault injection

_FAULT_KEYS = ("@type", "delay", "abort", "headers", "max_active_faults")
_DELAY_KEYS = ("fixed_delay", "percentage")
_ABORT_KEYS = ("http_status", "grpc_status", "percentage")


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """A validated envoy.filters.http.fault config (seconds, ppm)."""

    delay: float = 0.0
    delay_ppm: int = 0
    abort_status: int = 0
    abort_grpc: int = -1
    abort_ppm: int = 0
    headers: tuple[tuple[str, str, Any, bool], ...] = ()
    max_active_faults: int = -1          # no limit


def _delay(ctx: _Ctx, path: Path, value: Any) -> tuple[float, int]:
    m = _Map(ctx, path, value, _DELAY_KEYS, "a fault delay ({fixed_delay, percentage})")
    return (m.get("fixed_delay", _duration(positive=True)),
            m.section("percentage", _fractional, 0))


def _abort(ctx: _Ctx, path: Path, value: Any) -> tuple[int, int, int]:
    m = _Map(ctx, path, value, _ABORT_KEYS,
             "a fault abort ({http_status | grpc_status, percentage})")
    kind = m.one_of(("http_status", "grpc_status"), "abort")
    status, grpc = 0, -1
    if kind == "http_status":
        status = m.get("http_status", _int(200, 599))
    elif kind == "grpc_status":
        grpc = m.get("grpc_status", _int(0, 16))
    return status, grpc, m.section("percentage", _fractional, 0)


def validate_fault(ctx: _Ctx, path: Path, value: Any) -> FaultSettings | None:
    """Check an envoy.filters.http.fault config; None if it is wrong."""
    m = _Map(ctx, path, value or {}, _FAULT_KEYS, f"{FAULT} settings")
    _check_type(ctx, path, m, FAULT)
    delay = m.section("delay", _delay, (0.0, 0))
    abort = m.section("abort", _abort, (0, -1, 0))
    headers = m.section("headers", lambda c, p, v: _list(
        c, p, v, _parse_header_match, min_items=0, what="header matchers"), ())
    max_active = m.get("max_active_faults", _int(0, 1 << 31), -1)
    if delay is None or abort is None or None in delay or None in abort or max_active is None:
        return None
    hs = []
    for h in headers or ():
        for kind in ("exact", "prefix", "regex", "present"):
            if getattr(h, kind) is not None:
                hs.append((h.name, kind, getattr(h, kind), h.invert))
    return FaultSettings(delay=delay[0], delay_ppm=delay[1], abort_status=abort[0],
                         abort_grpc=abort[1], abort_ppm=abort[2], headers=tuple(hs),
                         max_active_faults=max_active)


def build_fault(s: FaultSettings) -> Any:
    from fastmesh import _core
    return _core.FaultSettings(s.delay, s.delay_ppm, s.abort_status, s.abort_grpc,
                               s.abort_ppm, s.headers, s.max_active_faults)


def make_fault(name: str, s: FaultSettings | None) -> Any:
    from fastmesh import _core
    return _core.FaultFilter(None if s is None else build_fault(s), name)


# ------------------------------------------------------------ the registry

@dataclass(frozen=True, slots=True)
class BuiltinFilter:
    """How one built-in filter is validated and compiled."""

    name: str
    validate: Callable[[_Ctx, Path, Any], Any]
    build: Callable[[Any], Any]              # per-route settings object
    make: Callable[[str, Any], Any]          # the chain's filter object
    # typed_per_filter_config's own message when it differs from the
    # listener's (Envoy's RBACPerRoute); None: the same as `validate`
    validate_per_route: Callable[[_Ctx, Path, Any], Any] | None = None

    def per_route_validator(self) -> Callable[[_Ctx, Path, Any], Any]:
        """How typed_per_filter_config entries for this filter are checked."""
        return self.validate_per_route or self.validate


BUILTIN_FILTERS: Mapping[str, BuiltinFilter] = {
    LOCAL_RATELIMIT: BuiltinFilter(LOCAL_RATELIMIT, validate_local_ratelimit,
                                   build_local_ratelimit, make_local_ratelimit),
    FAULT: BuiltinFilter(FAULT, validate_fault, build_fault, make_fault),
    rbac.HTTP_RBAC: BuiltinFilter(rbac.HTTP_RBAC, rbac.validate_http, rbac.build, rbac.make_http,
                                  rbac.validate_per_route),
}


def settings_of(name: str, raw: Mapping[str, Any], per_route: bool = False) -> Any:
    """Validated settings from a config already checked by validation (the
    compile step re-reads the stored typed_config or per-route settings)."""
    ctx = _Ctx("<compiled>")
    b = BUILTIN_FILTERS[name]
    out = (b.per_route_validator() if per_route else b.validate)(ctx, (), raw)
    if ctx.errors or out is None:
        raise _Bad(f"{name}: invalid settings reached the compile step: {ctx.errors}")
    return out
