"""The embedding API: fastmesh.Proxy inside an application's own event loop."""
from __future__ import annotations

import asyncio
import json

import pytest
import uvloop

import fastmesh

pytestmark = pytest.mark.timeout(30)


async def _origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1]
            body = b"app origin " + target
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _get(port: int, path: str, host: str = "x") -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def _config(origin_port: int, marker: str = "one") -> dict:
    return {
        "admin": {"address": "127.0.0.1", "port": 0},
        "listeners": [{
            "name": "app", "address": "127.0.0.1", "port": 0,
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"path": "/marker"}, "direct_response": {"status": 200, "body": marker}},
                {"match": {"prefix": "/"}, "cluster": "app"},
            ]}],
        }],
        "clusters": [{"name": "app", "endpoints": [{"address": "127.0.0.1", "port": origin_port}]}],
    }


def test_proxy_runs_inside_an_application_loop():
    async def main() -> None:
        origin = await asyncio.start_server(_origin, "127.0.0.1", 0)
        oport = origin.sockets[0].getsockname()[1]
        proxy = fastmesh.Proxy(_config(oport), admin=True)
        await proxy.start()
        try:
            port = proxy.addresses["app"][1]
            assert await _get(port, "/hello") == (200, b"app origin /hello")
            assert await _get(port, "/marker") == (200, b"one")
            # admin in the same loop
            aport = proxy.admin_address[1]
            assert await _get(aport, "/ready") == (200, b"LIVE\n")
            status, body = await _get(aport, "/stats?format=json")
            assert status == 200 and json.loads(body)["downstream_rq_2xx"] == 2
            # reload: the new config applies, a bad one is refused and changes nothing
            await proxy.reload(_config(oport, "two"))
            assert await _get(port, "/marker") == (200, b"two")
            bad = _config(oport)
            bad["clusters"][0]["lb"] = "fastest"
            with pytest.raises(fastmesh.ConfigError) as err:
                await proxy.reload(bad)
            assert err.value.path == "clusters[0].lb"
            assert await _get(port, "/marker") == (200, b"two")
            assert proxy.stats()["clusters"]["app"]["upstream_rq_total"] == 1
        finally:
            await proxy.stop(drain_timeout=1)
            origin.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    uvloop.run(main())


def test_proxy_from_yaml_file_and_context_manager(tmp_path):
    async def main() -> None:
        origin = await asyncio.start_server(_origin, "127.0.0.1", 0)
        oport = origin.sockets[0].getsockname()[1]
        path = tmp_path / "fm.yaml"
        path.write_text(json.dumps(_config(oport)))   # JSON is YAML
        async with fastmesh.Proxy.from_file(path) as proxy:
            port = proxy.addresses["app"][1]
            assert await _get(port, "/file") == (200, b"app origin /file")
        origin.close()

    uvloop.run(main())


def test_bad_config_names_file_line_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("listeners:\n  - name: a\n    port: 99999\n    protocol: tcp\n    cluster: c\n"
                    "clusters:\n  - name: c\n    endpoints: [{address: 127.0.0.1, port: 1}]\n")
    with pytest.raises(fastmesh.ConfigError) as err:
        fastmesh.Proxy(str(path))
    e = err.value
    assert (e.file, e.line, e.path) == (str(path), 3, "listeners[0].port")
    assert "65535" in e.reason


def test_stdlib_asyncio_loop_also_works():
    async def main() -> None:
        origin = await asyncio.start_server(_origin, "127.0.0.1", 0)
        oport = origin.sockets[0].getsockname()[1]
        async with fastmesh.Proxy(_config(oport)) as proxy:
            port = proxy.addresses["app"][1]
            for i in range(3):
                assert await _get(port, f"/std{i}") == (200, f"app origin /std{i}".encode())
        origin.close()

    asyncio.run(main())
