"""SPIFFE IDs (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md).

A workload's identity is ``spiffe://<trust-domain>/<path>``; fastmesh, like
Istio and Linkerd, uses the path ``ns/<namespace>/sa/<service-account>``.
Parsing is strict, as the standard asks: a lower-case trust domain, no
port, user info, query or fragment, no empty, ``.`` or ``..`` path segment,
at most 2048 bytes. Pure Python with no dependency: both the CA (control
side) and certificate verification (data side) use it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SpiffeId", "parse_spiffe_id", "workload_id"]

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
MAX_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A parsed SPIFFE ID: its trust domain and path (``""`` or ``/a/b``)."""

    trust_domain: str
    path: str = ""

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}{self.path}"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")[1:]) if self.path else ()

    @property
    def namespace(self) -> str | None:
        """The namespace of an ``ns/<ns>/sa/<sa>`` ID, else None."""
        s = self.segments
        return s[1] if len(s) == 4 and s[0] == "ns" and s[2] == "sa" else None

    @property
    def service_account(self) -> str | None:
        s = self.segments
        return s[3] if len(s) == 4 and s[0] == "ns" and s[2] == "sa" else None


def parse_spiffe_id(text: str) -> SpiffeId:
    """Parse ``text`` strictly; ValueError says what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"a SPIFFE ID is a string, not {type(text).__name__}")
    if len(text.encode()) > MAX_LENGTH:
        raise ValueError(f"SPIFFE ID longer than {MAX_LENGTH} bytes")
    scheme, sep, rest = text.partition("://")
    if not sep or scheme != "spiffe":
        raise ValueError(f"{text!r}: a SPIFFE ID starts with 'spiffe://'")
    if any(c in rest for c in "?#"):
        raise ValueError(f"{text!r}: a SPIFFE ID has no query or fragment")
    domain, slash, path = rest.partition("/")
    if not domain:
        raise ValueError(f"{text!r}: the trust domain is empty")
    if not _TRUST_DOMAIN.fullmatch(domain):
        raise ValueError(f"{text!r}: the trust domain may hold only lower-case letters, "
                         "digits, '.', '-' and '_' (no port, no user info)")
    if not slash:
        return SpiffeId(domain)
    for seg in path.split("/"):
        if not seg:
            raise ValueError(f"{text!r}: empty path segment (or a trailing '/')")
        if seg in (".", ".."):
            raise ValueError(f"{text!r}: path segment {seg!r} is not allowed")
        if not _SEGMENT.fullmatch(seg):
            raise ValueError(f"{text!r}: path segment {seg!r} may hold only letters, "
                             "digits, '.', '-' and '_'")
    return SpiffeId(domain, "/" + path)


def workload_id(trust_domain: str, namespace: str, service_account: str) -> SpiffeId:
    """The ``spiffe://<td>/ns/<namespace>/sa/<service-account>`` ID (checked)."""
    return parse_spiffe_id(f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
