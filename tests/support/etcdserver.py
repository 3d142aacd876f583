"""A real etcd (Debian's etcd-server package) for discovery tests: one
member on 127.0.0.1 with ephemeral client and peer ports and a temporary
data directory, stoppable and restartable on the same ports and data (so
revisions carry on, as after an etcd outage).

The tests talk to it through etcd's gRPC JSON gateway (/v3/kv/..., plain
HTTP with urllib): a second, independent client beside the aetcd one
fastmesh uses, and no event loop needed in the test thread.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from support.origin_proc import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _range_end(prefix: str) -> str:
    # etcd's "every key with this prefix": the prefix with its last byte + 1
    b = bytearray(prefix.encode())
    b[-1] += 1
    return _b64(bytes(b))


class EtcdServer:
    """start() / stop() / kill(); restart() keeps ports and data."""

    def __init__(self, tmp: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="etcd-", dir=tmp))
        self.client_port, self.peer_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.log = open(self.dir / "etcd.log", "ab")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0) -> None:
        c, p = self.url, f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [ETCD, "--name", "test", "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", c, "--advertise-client-urls", c,
             "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", f"test={p}", "--log-level", "warn",
             "--logger", "zap"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                self.call("/v3/kv/range", {"key": _b64("probe")})
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("etcd did not start:\n" + self.output())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def output(self) -> str:
        self.log.flush()
        return (self.dir / "etcd.log").read_text(errors="replace")[-4000:]

    # -- the v3 JSON gateway

    def call(self, path: str, body: dict, timeout: float = 5.0) -> dict:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def put(self, key: str, value: str | dict, lease: int = 0) -> int:
        """Put key=value (a dict is sent as JSON); the new revision."""
        if isinstance(value, dict):
            value = json.dumps(value)
        body = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.call("/v3/kv/put", body)["header"]["revision"])

    def delete(self, key: str) -> int:
        return int(self.call("/v3/kv/deleterange", {"key": _b64(key)})["header"]["revision"])

    def get_prefix(self, prefix: str) -> dict[str, str]:
        r = self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _range_end(prefix)})
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in r.get("kvs", [])}

    def revision(self) -> int:
        return int(self.call("/v3/kv/range", {"key": _b64("probe")})["header"]["revision"])

    def compact(self, revision: int | None = None) -> None:
        self.call("/v3/kv/compaction", {"revision": str(revision or self.revision()),
                                        "physical": True})

    def grant(self, ttl: int) -> int:
        return int(self.call("/v3/lease/grant", {"TTL": str(ttl)})["ID"])


def endpoint(host: str, port: int, **extra) -> dict:
    """An endpoint's JSON value, as `fastmesh register` writes it."""
    return {"address": host, "port": port, **extra}
