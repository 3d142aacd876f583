"""DNS resolution for ``strict_dns`` and ``logical_dns`` clusters.

Resolution never runs on a worker's loop: the process that owns the config
(the supervisor, or the single process) resolves, and the result goes to
every worker as an endpoint set (control/discovery.py). Two resolvers:

- the system's (``getaddrinfo`` in the loop's thread pool, so /etc/hosts and
  nsswitch apply as for any program); it gives no TTL, so names are
  re-resolved every ``dns_refresh_rate``;
- the servers in ``dns_resolution_config.resolvers``, asked directly with
  dnspython's asyncio resolver (A and AAAA queries); their answers carry a
  TTL, which ``respect_dns_ttl`` uses as the next refresh time.

``dns_lookup_family`` filters the answer as Envoy does: ``V4_ONLY``,
``V6_ONLY``, ``AUTO`` (IPv6 if there is any, else IPv4), ``V4_PREFERRED``
(IPv4 if there is any, else IPv6), ``ALL`` (both).
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from fastmesh.control.schema import DiscoveryConfig

__all__ = ["Answer", "DnsError", "resolve"]


class DnsError(Exception):
    """A name that did not resolve (no such name, no answer, no server)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The addresses of a name (in the order given) and the TTL, if known."""

    addresses: tuple[str, ...]
    ttl: float | None


def _filter(addresses: list[str], family: str) -> tuple[str, ...]:
    v4 = [a for a in addresses if ipaddress.ip_address(a).version == 4]
    v6 = [a for a in addresses if ipaddress.ip_address(a).version == 6]
    if family == "V4_ONLY":
        out = v4
    elif family == "V6_ONLY":
        out = v6
    elif family == "AUTO":
        out = v6 or v4
    elif family == "V4_PREFERRED":
        out = v4 or v6
    else:                           # ALL
        out = v4 + v6
    return tuple(dict.fromkeys(out))   # unique, order kept


async def _system(host: str, port: int, family: str) -> Answer:
    af = {"V4_ONLY": socket.AF_INET, "V6_ONLY": socket.AF_INET6}.get(family, socket.AF_UNSPEC)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=af,
                                                             type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DnsError(f"{host}: {exc.strerror or exc}") from None
    return Answer(_filter([str(i[4][0]) for i in infos], family), None)


async def _servers(host: str, family: str, d: DiscoveryConfig, timeout: float) -> Answer:
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = [s.address for s in d.dns_resolvers]
    r.port = d.dns_resolvers[0].port
    r.lifetime = timeout
    kinds = {"V4_ONLY": ("A",), "V6_ONLY": ("AAAA",)}.get(family, ("A", "AAAA"))
    found: list[str] = []
    ttls: list[float] = []
    errors: list[str] = []
    for kind in kinds:
        try:
            ans = await r.resolve(host, kind, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers,
                dns.exception.Timeout) as exc:
            errors.append(f"{kind}: {exc.__class__.__name__}")
            continue
        found += [rr.address for rr in ans]
        ttls.append(float(ans.rrset.ttl))
    out = _filter(found, family)
    if not out:
        raise DnsError(f"{host}: no address ({', '.join(errors) or 'empty answer'})")
    return Answer(out, min(ttls) if ttls else None)


async def resolve(host: str, port: int, d: DiscoveryConfig, timeout: float = 5.0) -> Answer:
    """The addresses of `host` per the cluster's DNS settings. An IP
    literal is its own answer. DnsError when nothing usable came back."""
    try:
        ipaddress.ip_address(host)
        return Answer((host,), None)
    except ValueError:
        pass
    if d.dns_resolvers:
        return await _servers(host, d.dns_lookup_family, d, timeout)
    return await asyncio.wait_for(_system(host, port, d.dns_lookup_family), timeout)
