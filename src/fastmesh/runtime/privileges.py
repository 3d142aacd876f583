"""Dropping root after binding (config `user` / `group`, or `--user`).

A process that carries traffic should not run as root. The listeners need
root only to bind ports below 1024, so fastmesh binds first and then
switches to the configured user and group, keeping one capability,
CAP_NET_BIND_SERVICE, so that a reload can still bind a new low port (what
systemd's ``AmbientCapabilities=CAP_NET_BIND_SERVICE`` gives a service).
Everything else root could do is gone: the process cannot switch back.

Which processes drop: in ``--single-process`` mode, the one process. With
workers, every worker (the processes that accept connections and talk to
upstreams) drops once its listeners are bound; the supervisor, which starts
and restarts workers, keeps root, as nginx's master process does, because it
must be able to start a new worker with the same rights at any time.

Linux only (prctl/capset through libc); elsewhere asking for a user is an error.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import grp
import logging
import os
import pwd
from dataclasses import dataclass

log = logging.getLogger("fastmesh.privileges")

__all__ = ["Identity", "resolve", "drop_privileges", "warn_if_root"]

_PR_SET_KEEPCAPS = 8
_CAP_NET_BIND_SERVICE = 10
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


@dataclass(frozen=True, slots=True)
class Identity:
    """A resolved user and group to run as."""

    user: str
    uid: int
    gid: int


def resolve(user: str | None, group: str | None) -> Identity | None:
    """The uid/gid for `user` (a name or a number) and `group` (default: the
    user's primary group); None if no user is asked for. ValueError names
    what does not exist."""
    if user is None:
        if group is not None:
            raise ValueError("group is set without user")
        return None
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise ValueError(f"user {user!r} does not exist on this machine") from None
    gid = pw.pw_gid
    if group is not None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, OverflowError):
            raise ValueError(f"group {group!r} does not exist on this machine") from None
    return Identity(pw.pw_name, pw.pw_uid, gid)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _capset_net_bind_only(libc: ctypes.CDLL) -> None:
    bit = 1 << _CAP_NET_BIND_SERVICE
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = bit
    if libc.capset(ctypes.byref(hdr), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset(CAP_NET_BIND_SERVICE): {os.strerror(err)}")


def drop_privileges(who: Identity) -> None:
    """Become `who` for good, keeping only CAP_NET_BIND_SERVICE. A no-op
    when already running as that user; PermissionError when not root."""
    if os.getuid() == who.uid and os.getgid() == who.gid:
        return
    if os.geteuid() != 0:
        raise PermissionError(f"switching to user {who.user!r} needs root (running as uid "
                              f"{os.geteuid()})")
    libc = _libc()
    # Keep the permitted set across setuid (it is cleared otherwise), then
    # narrow it to the one capability.
    if libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_KEEPCAPS): {os.strerror(err)}")
    os.setgroups([])
    os.setgid(who.gid)
    os.setuid(who.uid)
    _capset_net_bind_only(libc)
    libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0)
    log.info("running as user %s (uid %d, gid %d), keeping only CAP_NET_BIND_SERVICE",
             who.user, who.uid, who.gid)


def warn_if_root(who: Identity | None) -> None:
    """The warning a root process without `user` logs at start."""
    if who is None and os.geteuid() == 0:
        log.warning("running as root: set `user` (and `group`) in the config, or --user, "
                    "to drop root once the listeners are bound")
