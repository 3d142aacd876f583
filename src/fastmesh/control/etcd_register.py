"""Joining an etcd-discovered cluster: ``fastmesh register`` and
``fastmesh.register(...)`` (docs/discovery.md "etcd").

An instance puts one key, ``<prefix><address>:<port>``, holding its
endpoint as JSON (control/etcd_source.py reads it), attached to a lease of
``ttl`` seconds that it keeps alive (a refresh every ttl/3). If the
process dies, the lease expires and the endpoint disappears within ttl; if
it stops cleanly (SIGTERM, SIGINT, the task cancelled), it revokes the
lease and the endpoint disappears at once. If etcd is unreachable it
retries with backoff; if its lease expired meanwhile it registers again
with a new lease.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import math
import random
import signal
import sys
from collections.abc import Sequence
from typing import Any

from fastmesh.control.durations import parse_duration
from fastmesh.control.eds_file import HEALTH_STATUSES, EdsError
from fastmesh.control.etcd_source import client_for, endpoint_value, parse_endpoint_value

log = logging.getLogger("fastmesh.register")


class Registration:
    """One instance registered under an etcd prefix while `run` runs."""

    def __init__(self, etcd: str | Sequence[str], prefix: str, address: str, port: int, *,
                 ttl: float = 10.0, weight: int = 1, health_status: str = "HEALTHY",
                 region: str = "", zone: str = "", sub_zone: str = "",
                 key: str | None = None, dial_timeout: float = 2.0) -> None:
        self.urls = [etcd] if isinstance(etcd, str) else list(etcd)
        if not self.urls:
            raise ValueError("register: give at least one etcd URL")
        # etcd grants whole seconds (and at least its minimum, ~2 s).
        self.ttl = max(1, math.ceil(ttl))
        self.key = (key or f"{prefix}{address}:{port}").encode()
        self.value = endpoint_value(address, port, weight, health_status, region, zone, sub_zone)
        try:
            parse_endpoint_value(self.value)    # what the sidecars would refuse, refused now
        except EdsError as exc:
            raise ValueError(f"register: {exc}") from None
        self.dial_timeout = dial_timeout
        self.lease_id: int | None = None
        self.registered = asyncio.Event()   # set while the key is known to be in etcd

    async def run(self) -> None:
        """Register and keep the lease alive until cancelled; then revoke it."""
        import aetcd

        failures = 0
        url_index = 0
        client: Any = None
        try:
            while True:
                url = self.urls[url_index % len(self.urls)]
                client = client_for(url, self.dial_timeout)
                try:
                    await client.connect()
                    while True:
                        if self.lease_id is None:
                            lease = await client.lease(self.ttl)
                            await client.put(self.key, self.value.encode(), lease=lease.id)
                            self.lease_id = lease.id
                            self.registered.set()
                            log.info("registered %s (lease %x, ttl %ds) at %s",
                                     self.key.decode(), lease.id, lease.ttl, url)
                        failures = 0
                        await asyncio.sleep(self.ttl / 3)
                        reply = await client.refresh_lease(self.lease_id)
                        if reply is None or reply.TTL <= 0:
                            # expired while we could not reach etcd: the key is gone
                            log.warning("lease %x expired; registering %s again",
                                        self.lease_id, self.key.decode())
                            self.lease_id = None
                            self.registered.clear()
                except (aetcd.exceptions.ClientError, OSError, asyncio.TimeoutError) as exc:
                    failures += 1
                    url_index += 1
                    delay = min(10.0, 0.25 * 2 ** min(failures - 1, 10))
                    delay = random.uniform(delay / 2, delay)
                    log.warning("etcd %s: %s; retrying in %.2fs", url,
                                exc or type(exc).__name__, delay)
                    await _close(client)
                    client = None
                    await asyncio.sleep(delay)
        finally:
            await self._revoke(client)

    async def _revoke(self, client: Any) -> None:
        # Cancelled (or failing): take the endpoint out now rather than at
        # the lease's expiry. Shielded-ish: bounded, and errors only logged.
        if self.lease_id is not None:
            try:
                if client is None:
                    client = client_for(self.urls[0], self.dial_timeout)
                await asyncio.wait_for(client.revoke_lease(self.lease_id), self.dial_timeout + 1)
                log.info("revoked lease %x: %s removed", self.lease_id, self.key.decode())
            except Exception as exc:  # noqa: BLE001 - etcd gone: the lease expires instead
                log.warning("could not revoke lease %x (%s); %s goes at the lease's expiry",
                            self.lease_id, exc, self.key.decode())
            self.lease_id = None
            self.registered.clear()
        await _close(client)


async def _close(client: Any) -> None:
    if client is not None:
        try:
            await asyncio.wait_for(client.close(), 2.0)
        except Exception:  # noqa: BLE001 - a dead channel may fail to close
            pass


async def register(etcd: str | Sequence[str], prefix: str, address: str, port: int,
                   **options: Any) -> None:
    """Keep this instance registered in etcd until the task is cancelled
    (then its lease is revoked). Run it as a task beside your server::

        task = asyncio.create_task(fastmesh.register(
            "http://127.0.0.1:2379", "/fastmesh/services/catalog/", "10.0.3.17", 8080))
        ...
        task.cancel()

    `options`: ttl (seconds), weight, health_status, region, zone,
    sub_zone, key, dial_timeout (see Registration)."""
    await Registration(etcd, prefix, address, port, **options).run()


# -- the command line: fastmesh register ...

def add_arguments(ap: argparse.ArgumentParser) -> None:
    """`fastmesh register`'s options."""
    ap.add_argument("--etcd", action="append", required=True, metavar="URL",
                    help="etcd client URL, http://host:port (repeat for several)")
    ap.add_argument("--prefix", required=True, help="the cluster's key prefix "
                    "(its eds_config.etcd.prefix), e.g. /fastmesh/services/catalog/")
    ap.add_argument("--address", required=True, help="this instance's IP address")
    ap.add_argument("--port", type=int, required=True, help="this instance's port")
    ap.add_argument("--ttl", default="10s", help="lease time to live (default 10s)")
    ap.add_argument("--weight", type=int, default=1, help="load-balancing weight, 1-128")
    ap.add_argument("--health-status", default="HEALTHY", choices=HEALTH_STATUSES)
    ap.add_argument("--region", default="")
    ap.add_argument("--zone", default="")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    """`fastmesh register`: runs until SIGTERM or SIGINT, then revokes the lease."""
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s fastmesh %(levelname)s %(message)s")
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        print(f"register: --ttl: {exc}", file=sys.stderr)
        return 2
    if not 1 <= args.port <= 65535 or not 1 <= args.weight <= 128:
        print("register: --port is 1-65535 and --weight 1-128", file=sys.stderr)
        return 2
    from fastmesh.control.validation import _etcd_url, _Bad

    try:
        urls = [_etcd_url(u) for u in args.etcd]
    except _Bad as exc:
        print(f"register: --etcd: {exc.reason}", file=sys.stderr)
        return 2
    try:
        reg = Registration(urls, args.prefix, args.address, args.port, ttl=ttl,
                           weight=args.weight, health_status=args.health_status,
                           region=args.region, zone=args.zone)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2

    try:
        import aetcd  # noqa: F401 - checked here for a clear message
    except ImportError:
        from fastmesh.control.etcd_source import NEEDS_AETCD
        print(f"register: {NEEDS_AETCD}", file=sys.stderr)
        return 2

    async def main() -> None:
        task = asyncio.create_task(reg.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    return 0
