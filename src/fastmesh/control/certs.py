"""Certificate rotation: where each TLS listener's and cluster's certificates
come from, and their new material while the proxy runs (docs/security.md,
"Certificate rotation").

Like discovery and health checks, this runs once per process that owns the
config (the supervisor, or the single process / embedded Proxy), never in a
worker. Each listener or cluster with ``tls`` has one source:

- **files** (``tls_certificates`` / ``trusted_ca`` filenames): read whole
  when their directory changes (watchfiles: an atomic rename and a
  Kubernetes secret's ``..data`` symlink swap are both seen) and at least
  every second (a missed event costs one second, not a stale certificate);
- **the built-in CA** (``common_tls_context.builtin_ca``): a certificate
  issued for the configured SPIFFE ID, renewed at ``renew_fraction`` of its
  lifetime; the trust bundle is the CA's, re-read when the CA directory
  changes (root rotation).

New material is checked the way the data side will use it (SSLContexts are
built from it: a half-written file or a certificate whose key does not match
is rejected, logged and counted, the last good material stays) and handed
to ``on_change`` as ``{"listener:<name>" | "cluster:<name>": material}``,
which the runtime sends to every worker (``DataPlane.set_secrets``). A
material is ``{"certs": [[chain_pem, key_pem], ...], "ca": pem or None}``.
Keys travel only over the worker channel and into SSLContexts: never into a
log line, ``/certs`` or ``/config_dump``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from fastmesh.control import tls as _tls
from fastmesh.control.schema import Config
from fastmesh.control.tasks import cancel_and_wait

log = logging.getLogger("fastmesh.certs")

Material = dict[str, Any]
Table = dict[str, Material]

POLL_INTERVAL = 1.0        # files are re-read at least this often
RETRY_INTERVAL = 1.0       # after a failed issue from the built-in CA
SETTLE_DELAY = 0.1         # a rejected read is read again this much later
COUNTERS = ("ssl.certificate_update_success", "ssl.certificate_update_rejected")


def key_of(kind: str, name: str) -> str:
    """The table key of a listener's or cluster's material."""
    return f"{kind}:{name}"


def _tls_of(config: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for lc in config.listeners:
        if lc.tls is not None:
            out[key_of("listener", lc.name)] = lc.tls
    for cc in config.clusters:
        if cc.tls is not None:
            out[key_of("cluster", cc.name)] = cc.tls
    return out


def with_material(tls_cfg: Any, material: Material | None) -> Any:
    """`tls_cfg` (a Downstream- or UpstreamTlsConfig) with its certificates
    and trust bundle replaced by `material`, inline (None: unchanged)."""
    if material is None:
        return tls_cfg
    common = tls_cfg.common_tls_context
    certs = tuple(_tls.TlsCertificate(_tls.DataSource(inline_string=c),
                                      _tls.DataSource(inline_string=k))
                  for c, k in material["certs"])
    vc = common.validation_context
    if material.get("ca") is not None:
        vc = _tls.ValidationContext(_tls.DataSource(inline_string=material["ca"]),
                                    vc.match_typed_subject_alt_names if vc else ())
    common = dataclasses.replace(common, tls_certificates=certs, validation_context=vc)
    return dataclasses.replace(tls_cfg, common_tls_context=common)


def with_secrets(config: Config, table: Table) -> Config:
    """`config` with every listener's and cluster's TLS material as the
    certificate sources last gave it (what compiling a snapshot reads, so a
    reload never picks up a half-written file)."""
    if not table:
        return config
    listeners = tuple(
        dataclasses.replace(lc, tls=with_material(lc.tls, table.get(key_of("listener", lc.name))))
        if lc.tls is not None else lc for lc in config.listeners)
    clusters = tuple(
        dataclasses.replace(cc, tls=with_material(cc.tls, table.get(key_of("cluster", cc.name))))
        if cc.tls is not None else cc for cc in config.clusters)
    return dataclasses.replace(config, listeners=listeners, clusters=clusters)


def check_material(tls_cfg: Any, material: Material) -> None:
    """Build the SSLContexts the workers will build: raises (ssl.SSLError,
    ValueError, OSError) on a bad PEM or a certificate whose key does not
    match."""
    cfg = with_material(tls_cfg, material)
    if not material["certs"] and isinstance(cfg, _tls.DownstreamTlsConfig):
        raise ValueError("no certificate")
    for chain, _key in material["certs"]:
        x509.load_pem_x509_certificates(chain.encode())   # the whole chain parses
    if material.get("ca"):
        x509.load_pem_x509_certificates(material["ca"].encode())
    if isinstance(cfg, _tls.DownstreamTlsConfig):
        _tls.build_server_contexts(cfg)
    else:
        _tls.build_client_context(cfg)


class _Source:
    """One listener's or cluster's certificate source."""

    def __init__(self, key: str, tls_cfg: Any, mgr: CertManager) -> None:
        self.key = key
        self.cfg = tls_cfg
        self.mgr = mgr
        self.common = tls_cfg.common_tls_context
        self.builtin = self.common.builtin_ca
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.issued: dict[str, Any] | None = None     # builtin_ca: cert, key, bundle, renew_at
        self.ca_stamp: tuple[Any, ...] | None = None
        self.paths: dict[str, str] = {}               # cert/key/ca file -> its path, for /certs
        self.last: Material | None = None
        self.watch_dirs = sorted({os.path.dirname(os.path.abspath(p)) for p in self._files()})

    def _resolve(self, name: str) -> str:
        # As validation and control/tls.py read it: relative to the working
        # directory (the same file the config was checked against).
        return os.path.abspath(name)

    def _files(self) -> list[str]:
        out = []
        for c in self.common.tls_certificates:
            for s in (c.certificate_chain, c.private_key):
                if s.filename is not None:
                    out.append(self._resolve(s.filename))
        vc = self.common.validation_context
        if vc is not None and vc.trusted_ca is not None and vc.trusted_ca.filename is not None:
            out.append(self._resolve(vc.trusted_ca.filename))
        if self.builtin is not None:
            out.append(os.path.join(self._resolve(self.builtin.directory), "bundle.pem"))
        return out

    # ---------------------------------------------------------- reading

    def _read_source(self, s: _tls.DataSource) -> str:
        if s.filename is not None:
            with open(self._resolve(s.filename), encoding="ascii") as f:
                return f.read()
        return s.inline_string or ""

    def _builtin(self, now: float) -> tuple[list[list[str]], str]:
        """The issued certificate, issued again when due or when the CA's
        roots changed so that ours no longer chains to its bundle."""
        from fastmesh.security.ca import CertificateAuthority

        b = self.builtin
        assert b is not None
        d = Path(self._resolve(b.directory))
        stamp = tuple((d / n).stat().st_mtime_ns for n in ("bundle.pem", "root-cert.pem"))
        iss = self.issued
        if iss is not None and stamp == self.ca_stamp and now < iss["renew_at"]:
            return [[iss["cert"], iss["key"]]], iss["bundle"]
        ca = CertificateAuthority.load(d)
        bundle = ca.bundle_pem.decode()
        if iss is not None and now < iss["renew_at"] and any(
                _issued_by(iss["x509"], r) for r in ca.bundle):
            # Roots changed (rotate-root): trust the new bundle at once, keep
            # our certificate until it is due, so a peer that has not seen
            # the new root yet never gets a certificate it cannot verify
            # (Istio's order).
            iss["bundle"] = bundle
            self.ca_stamp = stamp
            return [[iss["cert"], iss["key"]]], bundle
        cert = ca.issue(b.spiffe_id, ttl=b.ttl, dns_names=b.dns_names)
        issued_at = time.time()
        life = cert.not_after.timestamp() - issued_at
        self.issued = {"cert": cert.cert_pem.decode(), "key": cert.key_pem.decode(),
                       "bundle": bundle,
                       "x509": x509.load_pem_x509_certificate(cert.cert_pem),
                       "renew_at": issued_at + max(0.0, life) * b.renew_fraction}
        self.ca_stamp = stamp
        return [[self.issued["cert"], self.issued["key"]]], bundle

    def read(self) -> Material:
        if self.builtin is not None:
            certs, bundle = self._builtin(time.time())
        else:
            certs = [[self._read_source(c.certificate_chain), self._read_source(c.private_key)]
                     for c in self.common.tls_certificates]
            bundle = None
        vc = self.common.validation_context
        ca = None
        if vc is not None and vc.trusted_ca is not None:
            ca = self._read_source(vc.trusted_ca)
        elif bundle is not None:
            ca = bundle
        return {"certs": certs, "ca": ca}

    def refresh(self, quiet: bool = False) -> bool:
        """Read the source; publish material that changed and is good.
        True when the material is (still) good. `quiet`: a rejection is
        neither logged nor counted (the caller reads again shortly: a key
        written before its certificate is a moment's mismatch, not an error)."""
        try:
            material = self.read()
        except Exception as exc:   # noqa: BLE001 - a source must not die: keep the last good
            self.mgr.count(self.key, "ssl.certificate_update_rejected")
            log.error("%s: cannot read its certificates (%s); the last good ones keep "
                      "serving", self._where(), exc)
            return False
        if material == self.last:
            return True
        try:
            check_material(self.cfg, material)
        except (ssl.SSLError, ValueError, OSError) as exc:
            if quiet:
                return False
            # Never the material itself in the log: it holds the key.
            self.mgr.count(self.key, "ssl.certificate_update_rejected")
            log.error("%s: new certificates rejected (%s); the last good ones keep serving",
                      self._where(), exc)
            return False
        self.last = material
        self.mgr.count(self.key, "ssl.certificate_update_success")
        self.mgr.publish(self.key, material)
        return True

    def _where(self) -> str:
        kind, name = self.key.split(":", 1)
        return f"{kind} {name}"

    def next_timeout(self) -> float:
        t = POLL_INTERVAL
        if self.issued is not None:
            t = min(t, max(0.0, self.issued["renew_at"] - time.time()))
        return t

    # ---------------------------------------------------------- running

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"certificates {self.key}")

    async def stop(self) -> None:
        await cancel_and_wait(self.task)
        self.task = None

    async def run(self) -> None:
        watchers = [asyncio.create_task(self._watch(d)) for d in self.watch_dirs]
        try:
            while True:
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.next_timeout())
                except asyncio.TimeoutError:
                    pass
                if self.refresh(quiet=True):
                    continue
                # Rejected: read again once the writer is likely done.
                await asyncio.sleep(SETTLE_DELAY)
                if not self.refresh() and self.builtin is not None:
                    await asyncio.sleep(RETRY_INTERVAL)
        finally:
            for w in watchers:
                w.cancel()

    async def _watch(self, directory: str) -> None:
        import watchfiles

        # The directory, not the files: a rename over a file or a symlink
        # swap replaces the inode a file watch would follow.
        while True:
            if not os.path.isdir(directory):
                await asyncio.sleep(POLL_INTERVAL)
                continue
            try:
                async for _ in watchfiles.awatch(directory, debounce=20, step=10,
                                                 recursive=False, rust_timeout=1000,
                                                 yield_on_timeout=False):
                    self.wake.set()
            except (OSError, RuntimeError) as exc:
                log.warning("%s: watching %s failed (%s); polling", self._where(), directory,
                            exc)
                await asyncio.sleep(POLL_INTERVAL)


class CertManager:
    """Runs each TLS listener's and cluster's certificate source; knows the
    material in use (what workers serve), for /certs and the expiry stats."""

    def __init__(self, on_change: Callable[[Table], None],
                 base_dir: str | os.PathLike | None = None) -> None:
        self.on_change = on_change
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.table: Table = {}
        self.sources: dict[str, _Source] = {}
        self.stats: dict[str, dict[str, int]] = {}
        self._lock = asyncio.Lock()
        self._stopped = False

    async def update(self, config: Config) -> None:
        """Run the sources `config` asks for. A new or changed source reads
        its material before this returns (so the first snapshot has it);
        unchanged ones keep running, removed ones stop."""
        async with self._lock:
            if self._stopped:
                return
            wanted = _tls_of(config)
            for key in [k for k in self.sources if k not in wanted]:
                await self.sources.pop(key).stop()
                self.table.pop(key, None)
                self.stats.pop(key, None)
            for key, cfg in wanted.items():
                src = self.sources.get(key)
                if src is not None and src.cfg == cfg:
                    continue
                if src is not None:
                    await src.stop()
                self.stats.setdefault(key, dict.fromkeys(COUNTERS, 0))
                src = _Source(key, cfg, self)
                self.sources[key] = src
                src.refresh()
                src.start()

    async def stop(self) -> None:
        async with self._lock:
            self._stopped = True
            for src in self.sources.values():
                await src.stop()
            self.sources.clear()

    def count(self, key: str, name: str) -> None:
        if key in self.stats:
            self.stats[key][name] += 1

    def publish(self, key: str, material: Material) -> None:
        first = key not in self.table
        self.table[key] = material
        if not first:
            log.info("%s: new certificates in use (serial %s)", key.replace(":", " ", 1),
                     ", ".join(_serial(c) for c, _ in material["certs"]) or "-")
        self.on_change({key: material})

    # ---------------------------------------------------------- admin

    def certs(self) -> dict[str, Any]:
        """Envoy's /certs (admin.v3.Certificates): per listener and cluster,
        its certificate chains and its trust bundle; no key material."""
        now = dt.datetime.now(dt.timezone.utc)
        out = []
        for key, material in sorted(self.table.items()):
            src = self.sources.get(key)
            kind, name = key.split(":", 1)
            chains = []
            for i, (chain, _key) in enumerate(material["certs"]):
                path = _cert_path(src, i)
                chains.extend(_details(c, path, now)
                              for c in x509.load_pem_x509_certificates(chain.encode()))
            cas = []
            if material.get("ca"):
                path = _ca_path(src)
                cas = [_details(c, path, now)
                       for c in x509.load_pem_x509_certificates(material["ca"].encode())]
            out.append({kind: name, "ca_cert": cas, "cert_chain": chains})
        return {"certificates": out}

    def blocks(self) -> list[dict[str, Any]]:
        """Expiry gauges and update counters per listener / cluster (their
        stats blocks) and the process's ``days_until_first_cert_expiring``,
        in the stats registry snapshot format (docs/stats.md)."""
        out = []
        first: float | None = None
        for key, material in self.table.items():
            kind, name = key.split(":", 1)
            vals: dict[str, int | float] = dict(self.stats.get(key, {}))
            gauges = []
            for i, (chain, _k) in enumerate(material["certs"]):
                exp = min(c.not_valid_after_utc.timestamp()
                          for c in x509.load_pem_x509_certificates(chain.encode()))
                n = f"ssl.certificate.{i}.expiration_unix_time_seconds"
                vals[n] = int(exp)
                gauges.append(n)
                first = exp if first is None else min(first, exp)
            if material.get("ca"):
                exp = min(c.not_valid_after_utc.timestamp()
                          for c in x509.load_pem_x509_certificates(material["ca"].encode()))
                n = "ssl.certificate.ca.expiration_unix_time_seconds"
                vals[n] = int(exp)
                gauges.append(n)
                first = exp if first is None else min(first, exp)
            out.append({"prefix": kind, "labels": [[kind, name]], "values": vals,
                        "kinds": {k: "gauge" if k in gauges else "counter" for k in vals}})
        if first is not None:
            left = first - time.time()
            out.append({"prefix": "", "labels": [],
                        "values": {"days_until_first_cert_expiring": max(0, int(left // 86400)),
                                   "seconds_until_first_cert_expiring": max(0, int(left))},
                        "kinds": {"days_until_first_cert_expiring": "gauge",
                                  "seconds_until_first_cert_expiring": "gauge"}})
        return out


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    # By signature, not by name: two roots of one trust domain may share a
    # subject (made within the same second).
    try:
        cert.verify_directly_issued_by(root)
        return True
    except (ValueError, TypeError, Exception):   # noqa: BLE001 - InvalidSignature and kin
        return False


def _serial(chain_pem: str) -> str:
    try:
        return format(x509.load_pem_x509_certificates(chain_pem.encode())[0].serial_number, "x")
    except ValueError:
        return "?"


def _cert_path(src: _Source | None, i: int) -> str:
    if src is None:
        return ""
    if src.builtin is not None:
        return f"builtin_ca:{src.builtin.directory}#{src.builtin.spiffe_id}"
    certs = src.common.tls_certificates
    if i < len(certs) and certs[i].certificate_chain.filename is not None:
        return certs[i].certificate_chain.filename
    return "<inline>"


def _ca_path(src: _Source | None) -> str:
    if src is None:
        return ""
    vc = src.common.validation_context
    if vc is not None and vc.trusted_ca is not None:
        return vc.trusted_ca.filename or "<inline>"
    if src.builtin is not None:
        return os.path.join(src.builtin.directory, "bundle.pem")
    return ""


def _details(cert: x509.Certificate, path: str, now: dt.datetime) -> dict[str, Any]:
    """Envoy's admin.v3.CertificateDetails."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = ([{"uri": u} for u in san.get_values_for_type(x509.UniformResourceIdentifier)]
                + [{"dns": d} for d in san.get_values_for_type(x509.DNSName)]
                + [{"ip_address": str(a)} for a in san.get_values_for_type(x509.IPAddress)])
    except x509.ExtensionNotFound:
        sans = []
    left = (cert.not_valid_after_utc - now).total_seconds()
    return {
        "path": path,
        "serial_number": format(cert.serial_number, "x"),
        "subject_alt_names": sans,
        # Envoy's uint64 wraps for an expired certificate; 0 says it plainly.
        "days_until_expiration": str(max(0, int(left // 86400))),
        "valid_from": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expiration_time": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
