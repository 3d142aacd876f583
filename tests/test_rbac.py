"""Envoy's RBAC filters through a live proxy (filter_rbac.pxi, control/rbac.py).

envoy.filters.http.rbac on HTTP listeners (HTTP/1.1, HTTP/2, gRPC clients)
and envoy.filters.network.rbac on TCP listeners, with real mTLS peers whose
SPIFFE IDs come from the built-in CA: allow and deny by identity, address,
method, path, header, SNI and port; default deny; DENY and LOG actions;
shadow rules that only count; per-route override and disable; counters;
validation errors that name the key.
"""
from __future__ import annotations

import socket
import ssl
import time

import pytest

from fastmesh.control.config import ConfigError, parse_config
from fastmesh.security.ca import CertificateAuthority
from support.h2util import H2Client
from support.harness import Client, cluster, http_config, tcp_listener

RBAC = "envoy.filters.http.rbac"
NET_RBAC = "envoy.filters.network.rbac"
TD = "example.org"
CLIENT_ID = f"spiffe://{TD}/ns/default/sa/client"
OTHER_NS_ID = f"spiffe://{TD}/ns/other/sa/intruder"
PARTNER_ID = "spiffe://partner.org/ns/default/sa/client"
DENIED = b"RBAC: access denied"


class Certs:
    """Two CAs (example.org and partner.org), one listener bundle trusting
    both, and workload certificates."""

    def __init__(self, root) -> None:
        self.root = root
        self.ca = CertificateAuthority.init(root / "ca", TD)
        self.partner_ca = CertificateAuthority.init(root / "partner", "partner.org")
        self.bundle = root / "both.pem"
        self.bundle.write_bytes(self.ca.bundle_pem + self.partner_ca.bundle_pem)
        self.server = self.issue("server", f"spiffe://{TD}/ns/default/sa/web",
                                 dns=("web.example.org", "localhost"))
        self.client = self.issue("client", CLIENT_ID)
        self.other_ns = self.issue("other", OTHER_NS_ID)
        self.partner = self.issue("partner", PARTNER_ID, ca=self.partner_ca)

    def issue(self, name, spiffe_id, *, ca=None, dns=()):
        return (ca or self.ca).issue(spiffe_id, ttl=3600, dns_names=tuple(dns)).write_files(
            self.root / name)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(tmp_path_factory.mktemp("rbac"))


def server_tls(certs: Certs, require: bool = True) -> dict:
    return {"common_tls_context": {
        "tls_certificates": [{"certificate_chain": {"filename": str(certs.server["cert"])},
                              "private_key": {"filename": str(certs.server["key"])}}],
        "validation_context": {"trusted_ca": {"filename": str(certs.bundle)}}},
        "require_client_certificate": require}


def client_ctx(certs: Certs, cert=None, alpn=("http/1.1",)) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(certs.bundle))
    ctx.check_hostname = False        # SPIFFE: the identity is the URI SAN
    if cert is not None:
        ctx.load_cert_chain(str(cert["cert"]), str(cert["key"]))
    ctx.set_alpn_protocols(list(alpn))
    return ctx


@pytest.fixture
def tls_clients(start_proxy):
    """tls(address, ctx, sni) -> Client over TLS; closed before the proxy's leak check."""
    made = []

    def connect(address, ctx, sni="web.example.org"):
        c = Client(address)
        made.append(c)
        c.sock = ctx.wrap_socket(c.sock, server_hostname=sni)
        return c

    yield connect
    for c in made:
        c.close()


def policy(permissions=None, principals=None) -> dict:
    return {"permissions": permissions or [{"any": True}],
            "principals": principals or [{"any": True}]}


def rules(action="ALLOW", **policies) -> dict:
    return {"action": action, "policies": policies}


def ident(kind: str, value: str) -> dict:
    return {"authenticated": {"principal_name": {kind: value}}}


def rbac_cfg(origin, typed=None, *, tls=None, routes=None) -> dict:
    lst = {"http_filters": [{"name": RBAC, **({"typed_config": typed} if typed else {})}]}
    if tls is not None:
        lst["tls"] = tls
    return http_config(origin, routes=routes, listener=lst)


def blocks(p, prefix: str) -> list[dict]:
    return [b for b in p._in_loop(p.proxy.stats_snapshot)["blocks"] if b["prefix"] == prefix]


def rbac_stats(p, stat_prefix: str = "web") -> dict:
    for b in blocks(p, "rbac"):
        if dict(b["labels"]).get("stat_prefix") == stat_prefix:
            return b["values"]
    return {}


def policy_stats(p, name: str, stat_prefix: str = "web") -> dict:
    for b in blocks(p, "rbac_policy"):
        labels = dict(b["labels"])
        if labels.get("policy") == name and labels.get("stat_prefix") == stat_prefix:
            return b["values"]
    return {}


def zero(**kw) -> dict:
    out = {"allowed": 0, "denied": 0, "shadow_allowed": 0, "shadow_denied": 0, "logged": 0}
    out.update(kw)
    return out


# ------------------------------------------------------------------ identity

@pytest.mark.parametrize("principal, allowed, denied", [
    (ident("exact", CLIENT_ID), "client", "other_ns"),
    (ident("prefix", f"spiffe://{TD}/ns/default/"), "client", "other_ns"),
    (ident("prefix", f"spiffe://{TD}/"), "other_ns", "partner"),        # trust domain
    ({"not_id": ident("prefix", "spiffe://partner.org/")}, "client", "partner"),
    ({"or_ids": {"ids": [ident("exact", PARTNER_ID), ident("suffix", "/sa/client")]}},
     "partner", "other_ns"),
], ids=["exact", "prefix-namespace", "trust-domain", "not-id", "or-ids"])
def test_allow_by_identity_and_default_deny(certs, origin, start_proxy, tls_clients,
                                            principal, allowed, denied):
    p = start_proxy(rbac_cfg(origin, {"rules": rules(callers=policy(principals=[principal]))},
                             tls=server_tls(certs)))
    ok = tls_clients(p.address(), client_ctx(certs, getattr(certs, allowed)))
    no = tls_clients(p.address(), client_ctx(certs, getattr(certs, denied)))
    assert ok.request("GET", "/in").status == 200
    r = no.request("GET", "/out")
    assert (r.status, r.body) == (403, DENIED)
    assert no.request("GET", "/again").status == 403      # the connection stays usable
    assert [g.path for g in origin.received()] == ["/in"]
    assert rbac_stats(p) == zero(allowed=1, denied=2)
    assert policy_stats(p, "callers") == zero(allowed=1)


def test_a_peer_without_certificate_is_not_authenticated(certs, origin, start_proxy,
                                                         tls_clients):
    p = start_proxy(rbac_cfg(origin, {"rules": rules(any_peer=policy(principals=[
        {"authenticated": {}}]))}, tls=server_tls(certs, require=False)))
    assert tls_clients(p.address(), client_ctx(certs)).request("GET", "/").status == 403
    assert tls_clients(p.address(), client_ctx(certs, certs.partner)).request(
        "GET", "/").status == 200
    assert rbac_stats(p) == zero(allowed=1, denied=1)


# ------------------------------------------------------------------ address, request

@pytest.mark.parametrize("key", ["remote_ip", "direct_remote_ip", "source_ip"])
def test_source_address(origin, start_proxy, clients, key):
    loopback = {key: {"address_prefix": "127.0.0.0", "prefix_len": 8}}
    elsewhere = {key: {"address_prefix": "10.0.0.0", "prefix_len": 8}}
    p = start_proxy(rbac_cfg(origin, {"rules": rules(local=policy(principals=[loopback]))}))
    assert clients(p.address()).request("GET", "/").status == 200
    p2 = start_proxy(rbac_cfg(origin, {"rules": rules(net10=policy(principals=[elsewhere]))}))
    assert clients(p2.address()).request("GET", "/").status == 403
    assert len(origin.received()) == 1


@pytest.mark.parametrize("listen, prefix, plen, status", [
    ("127.0.0.1", "127.0.0.0", 9, 200),          # prefix not on a byte boundary
    ("127.0.0.1", "127.128.0.0", 9, 403),
    ("127.0.0.1", "127.0.0.1", 32, 200),
    ("127.0.0.1", "127.0.0.2", 31, 403),
    ("127.0.0.1", "0.0.0.0", 0, 200),
    ("127.0.0.1", "::1", 128, 403),              # another family
    ("::1", "::1", 128, 200),
    ("::1", "::", 127, 200),
    ("::1", "::2", 127, 403),
    ("::1", "127.0.0.0", 8, 403),
])
def test_cidr_ranges(origin, start_proxy, clients, listen, prefix, plen, status):
    if listen == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    cfg = rbac_cfg(origin, {"rules": rules(net=policy(principals=[
        {"remote_ip": {"address_prefix": prefix, "prefix_len": plen}}]))})
    cfg["listeners"][0]["address"] = listen
    p = start_proxy(cfg)
    if listen == "127.0.0.1":
        assert clients(p.address()).request("GET", "/").status == status
        return
    sock = socket.create_connection(p.address()[:2], timeout=5)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\n") and b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    assert data.split(b" ", 2)[1] == str(status).encode()


REQUEST_POLICY = rules(reader=policy(permissions=[{"and_rules": {"rules": [
    {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
    {"url_path": {"path": {"prefix": "/api/"}}},
    {"or_rules": {"rules": [
        {"header": {"name": "x-tenant", "string_match": {"exact": "acme", "ignore_case": True}}},
        {"header": {"name": ":authority", "string_match": {"suffix": ".internal"}}}]}},
    {"not_rule": {"header": {"name": "x-debug", "present_match": True}}}]}}]))

REQUEST_CASES = [
    ("GET", "/api/items?x=1", {"x-tenant": "ACME"}, "example.com", 200),
    ("GET", "/api/items", {}, "svc.internal", 200),
    ("POST", "/api/items", {"x-tenant": "acme"}, "example.com", 403),        # method
    ("GET", "/admin", {"x-tenant": "acme"}, "example.com", 403),             # path
    ("GET", "/x/api/", {"x-tenant": "acme"}, "example.com", 403),            # path prefix
    ("GET", "/api/items", {"x-tenant": "other"}, "example.com", 403),        # header value
    ("GET", "/api/items", {}, "example.com", 403),                           # header absent
    ("GET", "/api/items", {"x-tenant": "acme", "x-debug": "1"}, "example.com", 403),  # not
]


def test_method_path_header_authority_h1(origin, start_proxy, clients):
    p = start_proxy(rbac_cfg(origin, {"rules": REQUEST_POLICY}))
    c = clients(p.address())
    got = [c.request(m, path, headers=list(h.items()), host=host).status
           for m, path, h, host, _ in REQUEST_CASES]
    assert got == [want for *_, want in REQUEST_CASES]
    assert len(origin.received()) == 2


def test_method_path_header_authority_h2(origin, start_proxy):
    p = start_proxy(rbac_cfg(origin, {"rules": REQUEST_POLICY}))
    c = H2Client(p.address())
    try:
        got = []
        for m, path, h, host, _ in REQUEST_CASES:
            r = c.wait(c.request(m, path, headers=list(h.items()), authority=host))
            got.append(r.status)
            if r.status == 403:
                assert bytes(r.body) == DENIED
    finally:
        c.close()
    assert got == [want for *_, want in REQUEST_CASES]
    assert rbac_stats(p) == zero(allowed=2, denied=6)


def test_sni_permission(certs, origin, start_proxy, tls_clients):
    sni = {"requested_server_name": {"exact": "web.example.org"}}
    p = start_proxy(rbac_cfg(origin, {"rules": rules(by_sni=policy(permissions=[sni]))},
                             tls=server_tls(certs)))
    ctx = client_ctx(certs, certs.client)
    assert tls_clients(p.address(), ctx, "web.example.org").request("GET", "/").status == 200
    assert tls_clients(p.address(), ctx, "localhost").request("GET", "/").status == 403
    assert tls_clients(p.address(), ctx, None).request("GET", "/").status == 403


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("permission, status", [
    ({"destination_port_range": {"start": 1, "end": 65536}}, 200),
    ("own", 200),
    ("other", 403),
], ids=["range", "own-port", "other-port"])
def test_destination_port(origin, start_proxy, clients, permission, status):
    port = free_port()
    if permission in ("own", "other"):
        permission = {"destination_port": port if permission == "own" else port ^ 1}
    cfg = rbac_cfg(origin, {"rules": rules(ports=policy(permissions=[permission]))})
    cfg["listeners"][0]["port"] = port
    p = start_proxy(cfg)
    assert clients(p.address()).request("GET", "/").status == status


# ------------------------------------------------------------------ actions, shadow

def test_deny_action(origin, start_proxy, clients):
    admin = policy(permissions=[{"url_path": {"path": {"prefix": "/admin"}}}])
    p = start_proxy(rbac_cfg(origin, {"rules": rules("DENY", admin=admin)}))
    c = clients(p.address())
    assert c.request("GET", "/admin/users").status == 403
    assert c.request("GET", "/public").status == 200
    assert [g.path for g in origin.received()] == ["/public"]
    assert rbac_stats(p) == zero(allowed=1, denied=1)
    assert policy_stats(p, "admin") == zero(denied=1)


def test_allow_with_no_policies_denies_everything(origin, start_proxy, clients):
    p = start_proxy(rbac_cfg(origin, {"rules": {"action": "ALLOW"}}))
    assert clients(p.address()).request("GET", "/").status == 403
    assert origin.received() == []


def test_shadow_rules_only_count(origin, start_proxy, clients):
    shadow = rules("DENY", no_posts=policy(permissions=[
        {"header": {"name": ":method", "exact_match": "POST"}}]))
    p = start_proxy(rbac_cfg(origin, {"shadow_rules": shadow}))
    c = clients(p.address())
    assert c.request("POST", "/p", body=b"x").status == 200     # would be denied: only counted
    assert c.request("GET", "/g").status == 200
    assert len(origin.received()) == 2
    assert rbac_stats(p) == zero(shadow_allowed=1, shadow_denied=1)
    assert policy_stats(p, "no_posts") == zero(shadow_denied=1)


def test_shadow_beside_enforced_rules(origin, start_proxy, clients):
    enforced = rules(gets=policy(permissions=[{"header": {"name": ":method",
                                                          "exact_match": "GET"}}]))
    shadow = rules(nothing=policy(permissions=[{"url_path": {"path": {"exact": "/never"}}}]))
    p = start_proxy(rbac_cfg(origin, {"rules": enforced, "shadow_rules": shadow}))
    c = clients(p.address())
    assert c.request("GET", "/").status == 200
    assert c.request("DELETE", "/").status == 403
    assert rbac_stats(p) == zero(allowed=1, denied=1, shadow_denied=2)


def test_log_action_lets_everything_through(origin, start_proxy, clients):
    log = rules("LOG", audit=policy(permissions=[{"url_path": {"path": {"prefix": "/audit"}}}]))
    p = start_proxy(rbac_cfg(origin, {"rules": log}))
    c = clients(p.address())
    assert c.request("GET", "/audit/1").status == 200
    assert c.request("GET", "/other").status == 200
    assert rbac_stats(p) == zero(allowed=2, logged=1)
    assert policy_stats(p, "audit") == zero(logged=1)


# ------------------------------------------------------------------ per route

def test_per_route_override_and_disable(origin, start_proxy, clients):
    get_only = {"rbac": {"rules": rules(gets=policy(permissions=[
        {"header": {"name": ":method", "exact_match": "GET"}}]))}}
    routes = [
        {"match": {"prefix": "/open"}, "cluster": "origin",
         "typed_per_filter_config": {RBAC: {}}},                            # disabled
        {"match": {"prefix": "/reads"}, "cluster": "origin",
         "typed_per_filter_config": {RBAC: get_only}},                      # overridden
        {"match": {"prefix": "/"}, "cluster": "origin"},
    ]
    p = start_proxy(rbac_cfg(origin, {"rules": {"action": "ALLOW"}}, routes=routes))
    c = clients(p.address())
    assert c.request("POST", "/open/x", body=b"1").status == 200
    assert c.request("GET", "/reads/x").status == 200
    assert c.request("POST", "/reads/x", body=b"1").status == 403
    # (a local reply before the body was read ends the connection)
    assert clients(p.address()).request("GET", "/locked").status == 403
    assert [g.path for g in origin.received()] == ["/open/x", "/reads/x"]
    assert rbac_stats(p) == zero(allowed=1, denied=2)


def test_per_route_only_filter_without_listener_rules(origin, start_proxy, clients):
    deny_all = {"rbac": {"rules": {"action": "ALLOW"}}}
    routes = [{"match": {"prefix": "/private"}, "cluster": "origin",
               "typed_per_filter_config": {RBAC: deny_all}},
              {"match": {"prefix": "/"}, "cluster": "origin"}]
    p = start_proxy(rbac_cfg(origin, None, routes=routes))
    c = clients(p.address())
    assert c.request("GET", "/private").status == 403
    assert c.request("GET", "/public").status == 200


# ------------------------------------------------------------------ HTTP/2, gRPC over mTLS

def test_h2_mtls_identity(certs, origin, start_proxy):
    p = start_proxy(rbac_cfg(origin, {"rules": rules(callers=policy(principals=[
        ident("exact", CLIENT_ID)]))}, tls=server_tls(certs)))
    got = {}
    for who in ("client", "other_ns"):
        c = H2Client(p.address(), connect=False)
        try:
            c.sock = client_ctx(certs, getattr(certs, who), alpn=("h2",)).wrap_socket(
                c.sock, server_hostname="web.example.org")
            assert c.sock.selected_alpn_protocol() == "h2"
            c.conn.initiate_connection()
            c.flush()
            got[who] = c.get(f"/{who}").status
        finally:
            c.close()
    assert got == {"client": 200, "other_ns": 403}
    assert [g.path for g in origin.received()] == ["/client"]


def test_grpc_client_gets_permission_denied(certs, origin, start_proxy):
    grpc = pytest.importorskip("grpc")
    p = start_proxy(rbac_cfg(origin, {"rules": rules(callers=policy(principals=[
        ident("exact", CLIENT_ID)]))}, tls=server_tls(certs)))
    creds = grpc.ssl_channel_credentials(
        root_certificates=certs.bundle.read_bytes(),
        private_key=certs.other_ns["key"].read_bytes(),
        certificate_chain=certs.other_ns["cert"].read_bytes())
    with grpc.secure_channel(f"localhost:{p.address()[1]}", creds) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            ch.unary_unary("/t.S/M")(b"", timeout=5)
    assert ei.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert origin.received() == []
    assert rbac_stats(p) == zero(denied=1)


# ------------------------------------------------------------------ TCP

def tcp_cfg(echo, typed: dict, **lst) -> dict:
    return {"drain_timeout": 1,
            "listeners": [tcp_listener("tcp", "echo", network_filters=[
                {"name": NET_RBAC, "typed_config": typed}], **lst)],
            "clusters": [cluster("echo", echo.address)]}


def test_tcp_denied_connection_closed_before_the_upstream(certs, tcp_echo, start_proxy,
                                                          tls_clients):
    typed = {"stat_prefix": "tcp_in", "rules": rules(callers=policy(principals=[
        ident("exact", CLIENT_ID)]))}
    p = start_proxy(tcp_cfg(tcp_echo, typed, tls=server_tls(certs)))
    bad = tls_clients(p.address("tcp"), client_ctx(certs, certs.other_ns))
    try:
        bad.sock.sendall(b"secret")
        closed = bad.sock.recv(10) == b""
    except (ssl.SSLError, OSError):
        closed = True
    assert closed
    p.wait_for(lambda s: rbac_stats(p, "tcp_in").get("denied") == 1)
    assert tcp_echo.connections == 0 and tcp_echo.received_total == 0
    good = tls_clients(p.address("tcp"), client_ctx(certs, certs.client))
    good.send(b"ping")
    assert good.recv_exactly(4) == b"ping"
    assert rbac_stats(p, "tcp_in") == zero(allowed=1, denied=1)
    assert policy_stats(p, "callers", "tcp_in") == zero(allowed=1)


def test_tcp_deny_by_source_address_and_shadow(tcp_echo, start_proxy, clients):
    typed = {"stat_prefix": "tcp_in",
             "rules": rules("DENY", local=policy(principals=[
                 {"remote_ip": {"address_prefix": "127.0.0.1", "prefix_len": 32}}])),
             "shadow_rules": rules(nobody=policy(principals=[
                 {"remote_ip": {"address_prefix": "::1", "prefix_len": 128}}]))}
    p = start_proxy(tcp_cfg(tcp_echo, typed))
    c = clients(p.address("tcp"))
    assert c.is_closed_by_peer()
    p.wait_for(lambda s: rbac_stats(p, "tcp_in").get("denied") == 1)
    assert tcp_echo.connections == 0
    assert rbac_stats(p, "tcp_in") == zero(denied=1, shadow_denied=1)


def test_tcp_request_permissions_never_match(tcp_echo, start_proxy, clients):
    # Envoy: header and path permissions do not match a TCP connection.
    typed = {"stat_prefix": "t", "rules": rules(paths=policy(permissions=[
        {"url_path": {"path": {"prefix": "/"}}}]))}
    p = start_proxy(tcp_cfg(tcp_echo, typed))
    assert clients(p.address("tcp")).is_closed_by_peer()
    assert tcp_echo.connections == 0


# ------------------------------------------------------------------ config

def _http(typed) -> dict:
    return http_config(("127.0.0.1", 1), listener={
        "http_filters": [{"name": RBAC, "typed_config": typed}]})


@pytest.mark.parametrize("typed, where, needle", [
    ({"rules": {"action": "PERMIT"}}, "rules.action", "expected one of: ALLOW, DENY, LOG"),
    ({"rules": rules(a=policy(principals=[ident("exakt", "x")]))},
     "principal_name.exakt", "did you mean 'exact'"),
    ({"rules": rules(a={"permissions": [{"any": True}]})}, "policies.a.principals",
     "missing required key"),
    ({"rules": rules(a=policy(principals=[{"remote_ip": {"address_prefix": "10.0.0.0",
                                                         "prefix_len": 33}}]))},
     "remote_ip.prefix_len", "longer than an IPv4 address"),
    ({"rules": rules(a=policy(principals=[{"source_ip": {"address_prefix": "10.0.0"}}]))},
     "source_ip.address_prefix", "not an IP address"),
    ({"rules": rules(a=policy(permissions=[{"header": {"name": "x", "exact_match": "a",
                                                       "prefix_match": "b"}}]))},
     "header.prefix_match", "mutually exclusive"),
    ({"rules": rules(a=policy(permissions=[{"url_path": {"path": {"safe_regex": {
        "regex": "("}}}}]))}, "safe_regex.regex", "invalid regex"),
    ({"rules": rules(a=policy(permissions=[{"destination_port_range": {"start": 9,
                                                                       "end": 9}}]))},
     "destination_port_range.end", "greater than start"),
    ({"rules": rules(a=policy(permissions=[{"metadata": {}}]))}, "permissions[0].metadata",
     "not supported by fastmesh"),
    ({"rules": rules(a=policy(permissions=[{"any": False}]))}, "permissions[0].any",
     "expected true"),
    ({"rule": {}}, "typed_config.rule", "did you mean 'rules'"),
])
def test_validation_errors_name_the_key(typed, where, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(_http(typed))
    assert where in e.value.path and needle in e.value.reason, str(e.value)


def test_validation_per_route_and_network():
    cfg = _http({"rules": {"action": "ALLOW"}})
    cfg["listeners"][0]["virtual_hosts"][0]["routes"][0]["typed_per_filter_config"] = {
        RBAC: {"rules": {}}}
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    assert "typed_per_filter_config" in e.value.path
    assert "expected one of: @type, rbac" in e.value.reason
    tcp = {"listeners": [tcp_listener("t", "c", network_filters=[
        {"name": NET_RBAC, "typed_config": {"rules": {"action": "DENY"}}}])],
        "clusters": [cluster("c", ("127.0.0.1", 1))]}
    with pytest.raises(ConfigError) as e:
        parse_config(tcp)
    assert e.value.path.endswith("typed_config.stat_prefix") and "missing" in e.value.reason
    http_net = _http({})
    http_net["listeners"][0]["network_filters"] = []
    with pytest.raises(ConfigError) as e:
        parse_config(http_net)
    assert "only allowed on tcp listeners" in e.value.reason


def test_config_round_trips_through_the_dump():
    from fastmesh.control.dump import config_to_dict
    cfg = _http({"rules": REQUEST_POLICY,
                 "shadow_rules": rules("DENY", x=policy(principals=[ident("prefix", "s")]))})
    cfg["listeners"].append(tcp_listener("t", "origin", network_filters=[
        {"name": NET_RBAC, "typed_config": {"stat_prefix": "t", "rules": rules(
            "DENY", x=policy(principals=[{"remote_ip": {"address_prefix": "10.0.0.0",
                                                        "prefix_len": 8}}]))}}]))
    parsed = parse_config(cfg)
    assert parsed.listeners[1].network_filters[0].name == NET_RBAC
    dumped = config_to_dict(parsed)
    assert dumped["listeners"][1]["network_filters"][0]["typed_config"]["stat_prefix"] == "t"
    assert parse_config(dumped) == parsed


def test_readme_mtls_policy_example(tmp_path, monkeypatch):
    # The README's commands, run: the CA and certificates made by the CLI,
    # then the config they feed parses (with its files).
    import re
    import subprocess
    import sys
    from pathlib import Path
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```sh\n(fastmesh ca init.*?)```", readme, re.S).group(1)
    config = re.search(r"<<'EOF'\n(.*?)\nEOF\n", block, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    for line in block.splitlines():
        if line.startswith("fastmesh ca "):
            subprocess.run([sys.executable, "-m", "fastmesh", *line.split()[1:]], check=True,
                           capture_output=True)
    cfg = parse_config(config, source="README.md")
    assert cfg.listeners[0].http_filters[0].name == RBAC
    assert Path("frontend/cert.pem").exists()
