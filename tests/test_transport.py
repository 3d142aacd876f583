"""The transport layer (issue 8): connections write straight to the socket
only when the transport is plaintext; a TLS transport (here an asyncio TLS
server in front of a listener's protocol factory, as the security issue's
listeners will be) carries the same codecs unchanged, ALPN picks HTTP/2 or
HTTP/1.1, and x-forwarded-proto says https. Real sockets, real TLS
(certificates from trustme), a real origin."""
from __future__ import annotations

import asyncio
import socket
import ssl

import h2.config
import h2.connection
import h2.events
import pytest
import trustme

from support.harness import http_config


@pytest.fixture
def tls_front(start_proxy, origin):
    """(proxy, connect(alpn) -> TLS socket) with a TLS server in front of the
    'web' listener's own protocol factory."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    p = start_proxy(http_config(origin))
    socks = []

    async def open_server():
        factory = p.proxy._dataplane.worker.listener_state("web")
        return await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0,
                                                              ssl=server_ctx)
    srv = p.call(open_server())
    address = srv.sockets[0].getsockname()[:2]

    def connect(alpn):
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        ctx.set_alpn_protocols(alpn)
        s = ctx.wrap_socket(socket.create_connection(address, timeout=10),
                            server_hostname="localhost")
        socks.append(s)
        return s
    yield p, connect
    for s in socks:
        s.close()

    async def close_server():
        srv.close()
    p.call(close_server())


def read_all(s) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def test_http11_over_tls_goes_through_the_transport(tls_front, origin):
    p, connect = tls_front
    s = connect(["http/1.1"])
    assert s.selected_alpn_protocol() == "http/1.1"
    body = b"x" * 100_000      # more than one write: a direct fd write would corrupt TLS
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    resp = read_all(s)
    assert resp.startswith(b"HTTP/1.1 200 ")
    assert resp.endswith(body)
    [rec] = origin.received()
    assert rec.header("x-forwarded-proto") == b"https"


def test_alpn_h2_picks_http2(tls_front, origin):
    p, connect = tls_front
    s = connect(["h2"])
    assert s.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":scheme", "https"),
                          (":authority", "example.com"), (":path", "/alpn")], end_stream=True)
    s.sendall(conn.data_to_send())
    status, body, ended = None, b"", False
    while not ended:
        data = s.recv(65536)
        assert data, "connection closed before the response ended"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[":status"]
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                ended = True
        s.sendall(conn.data_to_send())
    assert status == "200" and body == b"hello /alpn\n"
    [rec] = origin.received()
    assert rec.header("x-forwarded-proto") == b"https"


def test_alpn_h2_without_the_preface_is_refused(tls_front, origin):
    p, connect = tls_front
    s = connect(["h2"])
    s.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert read_all(s) == b""          # closed, nothing answered
    assert origin.received() == []
