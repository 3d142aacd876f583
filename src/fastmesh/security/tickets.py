"""Session ticket keys of TLS listeners: the same in every worker, rotated.

A TLS client resumes with a ticket the server encrypted under its ticket key.
OpenSSL's own keys are random per SSLContext: each worker (and each reload)
has others, so with ``SO_REUSEPORT`` most resumptions fail and turn into full
handshakes. Here every listener gets a key *slot* (``_tls_tickets``), and
its SSLContexts (every certificate's, every rebuild after a rotation or a
reload) are attached to it, so that:

- with Envoy's ``session_ticket_keys``, the slot holds those keys (the first
  encrypts, all decrypt), as in Envoy;
- otherwise the keys are derived (HKDF-SHA256) from a secret the supervisor
  makes once and hands to every worker, the listener's name and the
  *epoch*, ``floor(time / session_ticket_key_rotation)``: every worker
  computes the same keys without a message, a restarted worker too. The
  slot holds the epoch's key and the two before it, so a ticket is accepted
  for two to three rotation periods (one hour by default) and a client
  resuming with an older key gets a new ticket.

``rotate()`` refreshes derived slots; the data plane calls it from its event
loop at each epoch boundary (``next_rotation``), the thread that runs the
handshakes, so the callback never sees a half-written key.

When the running Python's OpenSSL cannot be reached (``_tls_tickets``
says why), contexts keep OpenSSL's own keys and a warning says so once.
"""
from __future__ import annotations

import logging
import os
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastmesh.control.tls import DownstreamTlsConfig

log = logging.getLogger("fastmesh.tls")

KEEP = 3            # the current key and the two before it decrypt
KEY_LEN = 80

_secret: bytes | None = None


@dataclass
class _Slot:
    slot: int
    static: tuple[bytes, ...]       # Envoy's configured keys; () = derived
    rotation: float
    epoch: int = -1


_slots: dict[str, _Slot] = {}
_warned = False


def set_secret(secret: bytes) -> None:
    """The secret every process of this sidecar derives its keys from (a
    worker gets it from the supervisor before it builds a context)."""
    global _secret
    if len(secret) < 32:
        raise ValueError("the ticket key secret is 32 bytes or more")
    _secret = bytes(secret)
    for s in _slots.values():
        s.epoch = -1
    rotate()


def secret() -> bytes:
    """This process's secret (made on first use when none was set)."""
    global _secret
    if _secret is None:
        _secret = os.urandom(32)
    return _secret


def derive(listener: str, epoch: int) -> bytes:
    """The 80-byte key of ``listener`` for ``epoch`` (name, HMAC, AES)."""
    from cryptography.hazmat.primitives import hashes      # only with TLS listeners
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LEN, salt=None,
                info=b"fastmesh session ticket key\0" + listener.encode() + b"\0"
                + str(epoch).encode()).derive(secret())


def _keys_for(name: str, s: _Slot, now: float) -> list[bytes]:
    if s.static:
        return list(s.static)
    epoch = int(now // s.rotation)
    s.epoch = epoch
    return [derive(name, epoch - i) for i in range(KEEP)]


def attach(listener: str, cfg: "DownstreamTlsConfig", contexts: list[ssl.SSLContext]) -> bool:
    """Give ``contexts`` (one listener's) that listener's ticket keys. False
    when OpenSSL cannot be reached from here (OpenSSL's own keys stay)."""
    global _warned
    from fastmesh import _tls_tickets
    why = _tls_tickets.unavailable()
    if why is not None:
        if not _warned:
            _warned = True
            log.warning("TLS session tickets keep OpenSSL's per-process keys (not shared "
                        "by workers, not rotated): %s", why)
        return False
    static = tuple(k.read() for k in cfg.session_ticket_keys)
    s = _slots.get(listener)
    if s is None:
        s = _slots[listener] = _Slot(_tls_tickets.new_slot(), static, cfg.session_ticket_key_rotation)
        _tls_tickets.set_keys(s.slot, _keys_for(listener, s, time.time()))
    elif s.static != static or s.rotation != cfg.session_ticket_key_rotation:
        # A reload changed the keys or their period.
        s.static, s.rotation = static, cfg.session_ticket_key_rotation
        _tls_tickets.set_keys(s.slot, _keys_for(listener, s, time.time()))
    for ctx in contexts:
        _tls_tickets.attach(ctx, s.slot)
    return True


def rotate(now: float | None = None) -> int:
    """Move derived slots to the current epoch; how many changed."""
    if not _slots:
        return 0
    from fastmesh import _tls_tickets
    now = time.time() if now is None else now
    changed = 0
    for name, s in _slots.items():
        if not s.static and int(now // s.rotation) != s.epoch:
            _tls_tickets.set_keys(s.slot, _keys_for(name, s, now))
            changed += 1
    return changed


def next_rotation(now: float | None = None) -> float | None:
    """Seconds until the next epoch boundary of any derived slot (None: none)."""
    now = time.time() if now is None else now
    waits = [(int(now // s.rotation) + 1) * s.rotation - now
             for s in _slots.values() if not s.static]
    return min(waits) if waits else None
