"""`fastmesh iptables`: the init step that makes interception transparent.

Like ``istio-iptables`` (Istio's ``istio-init`` container) and
``linkerd-init``, this installs NAT rules in the pod's network namespace so
that the application's TCP traffic goes through fastmesh without the
application knowing:

* inbound connections (PREROUTING) are redirected to fastmesh's inbound port
  (default 15006),
* outbound connections the application opens (OUTPUT) are redirected to the
  outbound port (default 15001), where fastmesh reads the original
  destination (``SO_ORIGINAL_DST``) and routes by it,
* except fastmesh's own connections (``--proxy-uid`` / ``--proxy-gid``: the
  owner match that prevents a loop), loopback traffic (as Istio), and the
  ports and CIDRs the operator excludes.

The chain names and rule order follow istio-iptables' REDIRECT mode with
``ISTIO_`` replaced by ``FASTMESH_`` (see docs/interception.md for the table
and the differences). Rules are installed per address family with
``iptables-restore --noflush`` (one atomic commit per family, nothing else in
the table touched), for the backend the system uses: iptables-legacy or
iptables-nft (detected as istio-iptables does: the one that already holds
rules; else what ``iptables`` itself is), or the one ``--iptables-backend``
names. ``--cleanup`` removes exactly what this installs, so running the
install twice (a restarted init container) is the same as running it once.

Control side only: it runs once, before fastmesh starts, as root (or with
CAP_NET_ADMIN); the proxy itself never changes the packet filter.
"""
from __future__ import annotations

import argparse
import ipaddress
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["InterceptConfig", "CHAINS", "render", "detect_backend", "install", "cleanup",
           "add_arguments", "run"]

# Ours, in the nat table: Istio's four with our prefix.
CHAINS: tuple[str, ...] = ("FASTMESH_INBOUND", "FASTMESH_IN_REDIRECT", "FASTMESH_OUTPUT",
                           "FASTMESH_REDIRECT")
# Where our chains are jumped to from the built-in chains.
_HOOKS: tuple[tuple[str, str], ...] = (("PREROUTING", "FASTMESH_INBOUND"),
                                       ("OUTPUT", "FASTMESH_OUTPUT"))
BACKENDS: tuple[str, ...] = ("auto", "legacy", "nft")
DEFAULT_OUTBOUND_PORT = 15001      # Istio's and fastmesh's outbound (virtual) listener
DEFAULT_INBOUND_PORT = 15006       # Istio's inbound capture port
DEFAULT_PROXY_UID = 1337           # Istio's proxy uid


@dataclass(frozen=True)
class InterceptConfig:
    """What to capture and what to leave alone (istio-iptables' flags)."""

    proxy_port: int = DEFAULT_OUTBOUND_PORT          # -p: outbound redirect target
    inbound_capture_port: int = DEFAULT_INBOUND_PORT  # -z: inbound redirect target
    proxy_uids: tuple[int, ...] = (DEFAULT_PROXY_UID,)  # -u: never redirected (no loop)
    proxy_gids: tuple[int, ...] = ()                  # -g
    inbound_ports: str = "*"                          # -b: "*" or ports to capture
    exclude_inbound_ports: tuple[int, ...] = ()       # -d
    exclude_outbound_ports: tuple[int, ...] = ()      # -o
    outbound_cidrs: tuple[str, ...] = ("*",)          # -i: "*" or CIDRs to capture
    exclude_outbound_cidrs: tuple[str, ...] = ()      # -x
    ipv6: bool = True                                 # also ip6tables
    capture_inbound: bool = True                      # PREROUTING hook at all
    capture_outbound: bool = True                     # OUTPUT hook at all


def _family_cidrs(cidrs: Sequence[str], v6: bool) -> list[str]:
    out = []
    for c in cidrs:
        net = ipaddress.ip_network(c, strict=False)
        if (net.version == 6) == v6:
            out.append(str(net))
    return out


def _inbound_port_list(spec: str) -> list[int] | None:
    # None: every port ("*"); [] : none ("" turns inbound capture off).
    spec = spec.strip()
    if spec == "*":
        return None
    return [int(p) for p in spec.replace(" ", "").split(",") if p]


def rules(cfg: InterceptConfig, v6: bool) -> list[str]:
    """The nat-table rules for one family, in order (``-A`` lines)."""
    lo = "::1/128" if v6 else "127.0.0.1/32"
    r: list[str] = []
    if cfg.capture_inbound:
        ports = _inbound_port_list(cfg.inbound_ports)
        if ports is None or ports:
            r.append("-A PREROUTING -p tcp -j FASTMESH_INBOUND")
        # Inbound: excluded ports first (RETURN = delivered as if no proxy),
        # then everything (or the listed ports) to the inbound listener.
        if ports is None:
            for p in cfg.exclude_inbound_ports:
                r.append(f"-A FASTMESH_INBOUND -p tcp --dport {p} -j RETURN")
            r.append("-A FASTMESH_INBOUND -p tcp -j FASTMESH_IN_REDIRECT")
        else:
            for p in ports:
                if p not in cfg.exclude_inbound_ports:
                    r.append(f"-A FASTMESH_INBOUND -p tcp --dport {p} -j FASTMESH_IN_REDIRECT")
    r.append(f"-A FASTMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports {cfg.inbound_capture_port}")
    r.append(f"-A FASTMESH_REDIRECT -p tcp -j REDIRECT --to-ports {cfg.proxy_port}")
    if cfg.capture_outbound:
        r.append("-A OUTPUT -p tcp -j FASTMESH_OUTPUT")
        for p in cfg.exclude_outbound_ports:
            r.append(f"-A FASTMESH_OUTPUT -p tcp --dport {p} -j RETURN")
        # Loopback, as istio-iptables: the proxy talking to this pod's own
        # (non-loopback) address goes through the inbound side; the
        # application talking over lo is left alone; the proxy's own
        # outbound connections are never redirected (that is the loop
        # guard); nor is anything to the loopback address.
        for uid in cfg.proxy_uids:
            r.append(f"-A FASTMESH_OUTPUT -o lo ! -d {lo} -m owner --uid-owner {uid} "
                     "-j FASTMESH_IN_REDIRECT")
            r.append(f"-A FASTMESH_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN")
            r.append(f"-A FASTMESH_OUTPUT -m owner --uid-owner {uid} -j RETURN")
        for gid in cfg.proxy_gids:
            r.append(f"-A FASTMESH_OUTPUT -o lo ! -d {lo} -m owner --gid-owner {gid} "
                     "-j FASTMESH_IN_REDIRECT")
            r.append(f"-A FASTMESH_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN")
            r.append(f"-A FASTMESH_OUTPUT -m owner --gid-owner {gid} -j RETURN")
        r.append(f"-A FASTMESH_OUTPUT -d {lo} -j RETURN")
        for c in _family_cidrs(cfg.exclude_outbound_cidrs, v6):
            r.append(f"-A FASTMESH_OUTPUT -d {c} -j RETURN")
        if "*" in cfg.outbound_cidrs:
            r.append("-A FASTMESH_OUTPUT -j FASTMESH_REDIRECT")
        else:
            for c in _family_cidrs(cfg.outbound_cidrs, v6):
                r.append(f"-A FASTMESH_OUTPUT -d {c} -j FASTMESH_REDIRECT")
    return r


def render(cfg: InterceptConfig, v6: bool) -> str:
    """One family's rules in iptables-restore format (for ``--noflush``)."""
    lines = ["*nat"] + [f":{c} - [0:0]" for c in CHAINS] + rules(cfg, v6) + ["COMMIT", ""]
    return "\n".join(lines)


# --- backends ---------------------------------------------------------------

@dataclass(frozen=True)
class Backend:
    """The iptables binaries of one backend for one family."""

    name: str           # "legacy" | "nft"
    v6: bool

    def _tool(self, what: str) -> str:
        # iptables-legacy-restore, ip6tables-nft-save, ...; plain names when
        # the suffixed ones are not installed (a single-backend system).
        base = "ip6tables" if self.v6 else "iptables"
        parts = [base, self.name] + ([what] if what else [])
        exe = "-".join(parts)
        if shutil.which(exe):
            return exe
        plain = "-".join([base] + ([what] if what else []))
        return plain

    @property
    def restore(self) -> str:
        return self._tool("restore")

    @property
    def save(self) -> str:
        return self._tool("save")

    @property
    def iptables(self) -> str:
        return self._tool("")


def _count_rules(save_exe: str) -> int:
    if not shutil.which(save_exe):
        return -1
    try:
        out = subprocess.run([save_exe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return -1
    if out.returncode != 0:
        return -1
    return sum(1 for line in out.stdout.splitlines() if line.startswith("-A "))


def detect_backend() -> str:
    """legacy or nft: the one that already holds rules (as istio-iptables
    decides: kube-proxy or the CNI has written with it); with neither, what
    the plain ``iptables`` command is (``iptables -V`` says)."""
    legacy = _count_rules("iptables-legacy-save")
    nft = _count_rules("iptables-nft-save")
    if legacy > 0 and legacy > nft:
        return "legacy"
    if nft > 0:
        return "nft"
    try:
        ver = subprocess.run(["iptables", "-V"], capture_output=True, text=True,
                             timeout=10).stdout
    except OSError:
        ver = ""
    return "legacy" if "legacy" in ver else "nft"


def _ipv6_usable(backend: Backend) -> bool:
    try:
        out = subprocess.run([backend.save, "-t", "nat"], capture_output=True, text=True,
                             timeout=30)
    except OSError:
        return False
    return out.returncode == 0


def _present(backend: Backend) -> tuple[list[str], list[str]]:
    """Our jump rules in the built-in chains and our chains, as they are now."""
    out = subprocess.run([backend.save, "-t", "nat"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    jumps, chains = [], []
    for line in out.splitlines():
        if line.startswith(":") and line[1:].split(" ")[0] in CHAINS:
            chains.append(line[1:].split(" ")[0])
        elif line.startswith("-A ") and " -j FASTMESH_" in line and \
                line.split(" ")[1] not in CHAINS:
            jumps.append(line[3:])
    return jumps, chains


def cleanup_family(backend: Backend) -> None:
    """Remove our jumps and chains for one family (what is absent is fine)."""
    jumps, chains = _present(backend)
    for rule in jumps:
        subprocess.run([backend.iptables, "-t", "nat", "-D", *rule.split()], check=True,
                       capture_output=True, timeout=30)
    for c in chains:
        subprocess.run([backend.iptables, "-t", "nat", "-F", c], check=True,
                       capture_output=True, timeout=30)
    for c in chains:
        subprocess.run([backend.iptables, "-t", "nat", "-X", c], check=True,
                       capture_output=True, timeout=30)


def _families(cfg: InterceptConfig, name: str) -> list[Backend]:
    fams = [Backend(name, False)]
    if cfg.ipv6:
        b6 = Backend(name, True)
        if _ipv6_usable(b6):
            fams.append(b6)
    return fams


def install(cfg: InterceptConfig, backend: str = "auto") -> str:
    """Install the rules (after removing any of ours); returns the backend used."""
    name = detect_backend() if backend == "auto" else backend
    for b in _families(cfg, name):
        cleanup_family(b)
        proc = subprocess.run([b.restore, "--noflush"], input=render(cfg, b.v6), text=True,
                              capture_output=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{b.restore} --noflush failed: {proc.stderr.strip()}")
    return name


def cleanup(cfg: InterceptConfig, backend: str = "auto") -> str:
    """Remove every FASTMESH_ chain and the jumps to them; returns the backend."""
    name = detect_backend() if backend == "auto" else backend
    for b in _families(cfg, name):
        cleanup_family(b)
    return name


# --- command line -------------------------------------------------------------

def _ports(value: str) -> tuple[int, ...]:
    out = []
    for p in value.replace(" ", "").split(","):
        if not p:
            continue
        n = int(p)
        if not 0 < n < 65536:
            raise argparse.ArgumentTypeError(f"port {n} is not in 1..65535")
        out.append(n)
    return tuple(out)


def _cidrs(value: str) -> tuple[str, ...]:
    out = []
    for c in value.replace(" ", "").split(","):
        if not c:
            continue
        if c == "*":
            out.append(c)
            continue
        try:
            out.append(str(ipaddress.ip_network(c, strict=False)))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return tuple(out)


def _ids(value: str) -> tuple[int, ...]:
    return tuple(int(v) for v in value.replace(" ", "").split(",") if v)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags of `fastmesh iptables` (istio-iptables' long names)."""
    ap.add_argument("--proxy-port", "-p", type=int, default=DEFAULT_OUTBOUND_PORT,
                    help="outbound traffic goes to this port (default %(default)s)")
    ap.add_argument("--inbound-capture-port", "-z", type=int, default=DEFAULT_INBOUND_PORT,
                    help="inbound traffic goes to this port (default %(default)s)")
    ap.add_argument("--proxy-uid", "-u", type=_ids, default=(DEFAULT_PROXY_UID,),
                    help="user id(s) fastmesh runs as: their traffic is never redirected "
                         "(default %(default)s)")
    ap.add_argument("--proxy-gid", "-g", type=_ids, default=(),
                    help="group id(s) whose traffic is never redirected")
    ap.add_argument("--inbound-ports", "-b", default="*",
                    help='inbound ports to capture: "*" (all, the default), a list, or "" (none)')
    ap.add_argument("--exclude-inbound-ports", "-d", type=_ports, default=(),
                    help="inbound ports left alone (e.g. the admin port for probes)")
    ap.add_argument("--exclude-outbound-ports", "-o", type=_ports, default=(),
                    help="outbound destination ports left alone")
    ap.add_argument("--outbound-cidrs", "-i", type=_cidrs, default=("*",),
                    help='outbound destinations to capture: "*" (all, the default) or CIDRs')
    ap.add_argument("--exclude-outbound-cidrs", "-x", type=_cidrs, default=(),
                    help="outbound destinations left alone (CIDRs, IPv4 and IPv6)")
    ap.add_argument("--no-ipv6", action="store_true", help="leave ip6tables alone")
    ap.add_argument("--iptables-backend", choices=BACKENDS, default="auto",
                    help="legacy or nft (default: detect which the system uses)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the rules (iptables-restore format) and change nothing")
    ap.add_argument("--cleanup", action="store_true",
                    help="remove fastmesh's chains and the jumps to them")


def config_from_args(args: argparse.Namespace) -> InterceptConfig:
    """The InterceptConfig the flags describe."""
    return InterceptConfig(
        proxy_port=args.proxy_port, inbound_capture_port=args.inbound_capture_port,
        proxy_uids=tuple(args.proxy_uid), proxy_gids=tuple(args.proxy_gid),
        inbound_ports=args.inbound_ports,
        exclude_inbound_ports=tuple(args.exclude_inbound_ports),
        exclude_outbound_ports=tuple(args.exclude_outbound_ports),
        outbound_cidrs=tuple(args.outbound_cidrs),
        exclude_outbound_cidrs=tuple(args.exclude_outbound_cidrs),
        ipv6=not args.no_ipv6)


def run(args: argparse.Namespace) -> int:
    """`fastmesh iptables`: print, install or remove the rules."""
    cfg = config_from_args(args)
    if args.dry_run:
        backend = args.iptables_backend
        for v6 in ((False, True) if cfg.ipv6 else (False,)):
            fam = "ip6tables" if v6 else "iptables"
            sys.stdout.write(f"# {fam}-restore --noflush (backend: {backend})\n")
            sys.stdout.write(render(cfg, v6))
        return 0
    try:
        if args.cleanup:
            name = cleanup(cfg, args.iptables_backend)
            print(f"fastmesh iptables: removed fastmesh chains (iptables-{name})")
        else:
            name = install(cfg, args.iptables_backend)
            print(f"fastmesh iptables: installed (iptables-{name}): outbound -> "
                  f"{cfg.proxy_port}, inbound -> {cfg.inbound_capture_port}, "
                  f"uid(s) {','.join(map(str, cfg.proxy_uids))} excluded")
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        print(f"fastmesh iptables: error: {str(detail).strip()}", file=sys.stderr)
        return 1
    return 0
