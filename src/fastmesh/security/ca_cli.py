"""`fastmesh ca init | issue | show | rotate-root`: the built-in CA from the
command line (security/ca.py does the work; this file only parses and prints,
and imports `cryptography` only when a ca command runs)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(ca: argparse.ArgumentParser) -> None:
    sub = ca.add_subparsers(dest="ca_cmd", required=True)

    init = sub.add_parser("init", help="make a root CA (or keep the one there)")
    init.add_argument("--dir", required=True, help="the CA directory (made with mode 0700)")
    init.add_argument("--trust-domain", default="cluster.local",
                      help="the SPIFFE trust domain (default: cluster.local)")
    init.add_argument("--root-ttl", default="87600h", help="the root's lifetime (default 87600h)")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(ca_func=_init)

    issue = sub.add_parser("issue", help="issue a workload certificate (X.509-SVID)")
    issue.add_argument("--dir", required=True, help="the CA directory")
    who = issue.add_mutually_exclusive_group(required=True)
    who.add_argument("--spiffe-id", help="spiffe://<trust-domain>/<path>")
    who.add_argument("--service-account",
                     help="with --namespace: spiffe://<td>/ns/<namespace>/sa/<this>")
    issue.add_argument("--namespace", default="default")
    issue.add_argument("--ttl", default="24h", help="lifetime (default 24h)")
    issue.add_argument("--dns", action="append", default=[], help="a DNS SAN (repeatable)")
    issue.add_argument("--out", required=True,
                       help="directory for cert.pem, key.pem (mode 0600) and bundle.pem")
    issue.set_defaults(ca_func=_issue)

    show = sub.add_parser("show", help="describe the CA's roots and/or certificate files")
    show.add_argument("--dir", help="the CA directory")
    show.add_argument("files", nargs="*", help="PEM certificate files (chains, bundles)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(ca_func=_show)

    rot = sub.add_parser("rotate-root", help="start (or with --finish, end) a root rotation")
    rot.add_argument("--dir", required=True, help="the CA directory")
    rot.add_argument("--root-ttl", default="87600h", help="the new root's lifetime")
    rot.add_argument("--finish", action="store_true",
                     help="drop the previous roots from the trust bundle")
    rot.set_defaults(ca_func=_rotate)


def run(args: argparse.Namespace) -> int:
    from fastmesh.security.ca import CAError
    try:
        return args.ca_func(args)
    except (CAError, ValueError, OSError) as exc:
        print(f"fastmesh ca {args.ca_cmd}: {exc}", file=sys.stderr)
        return 2


def _duration(text: str) -> float:
    from fastmesh.control.durations import parse_duration
    return parse_duration(text)


def _init(args) -> int:
    from fastmesh.security.ca import ROOT_CERT, CertificateAuthority
    existed = (Path(args.dir) / ROOT_CERT).exists() and not args.force
    ca = CertificateAuthority.init(args.dir, args.trust_domain, ttl=_duration(args.root_ttl),
                                   force=args.force)
    print(f"{'kept' if existed else 'made'} root CA for trust domain {ca.trust_domain} "
          f"in {ca.directory} (valid until {ca.root.not_valid_after_utc:%Y-%m-%d})")
    return 0


def _issue(args) -> int:
    from fastmesh.security.ca import CertificateAuthority
    from fastmesh.security.spiffe import workload_id
    ca = CertificateAuthority.load(args.dir)
    sid = args.spiffe_id or str(workload_id(ca.trust_domain, args.namespace,
                                            args.service_account))
    issued = ca.issue(sid, ttl=_duration(args.ttl), dns_names=tuple(args.dns))
    paths = issued.write_files(args.out)
    print(f"issued {issued.spiffe_id} valid until {issued.not_after:%Y-%m-%dT%H:%M:%SZ}: "
          f"{paths['cert']}, {paths['key']} (0600), {paths['bundle']}")
    return 0


def _show(args) -> int:
    from fastmesh.security.ca import (BUNDLE, CertificateAuthority, describe_certificate,
                                      load_certificates)
    if not args.dir and not args.files:
        raise ValueError("name a CA directory (--dir) or certificate files")
    out: dict[str, list[dict]] = {}
    if args.dir:
        ca = CertificateAuthority.load(args.dir)
        out[str(Path(args.dir) / BUNDLE)] = [describe_certificate(c) for c in ca.bundle]
    for f in args.files:
        out[f] = [describe_certificate(c) for c in load_certificates(Path(f).read_bytes())]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for src, certs in out.items():
        print(f"{src}:")
        for c in certs:
            state = "EXPIRED" if c["expired"] else f"{c['seconds_left'] / 3600:.1f} h left"
            print(f"  {'CA   ' if c['ca'] else 'leaf '} {', '.join(c['spiffe_ids']) or c['subject']}")
            print(f"        {c['not_before']} .. {c['not_after']} ({state})")
            print(f"        serial {c['serial']}  sha256 {c['sha256'][:32]}...")
    return 0


def _rotate(args) -> int:
    from fastmesh.security.ca import CertificateAuthority
    ca = CertificateAuthority.load(args.dir)
    if args.finish:
        dropped = ca.finish_rotation()
        print(f"trust bundle holds the current root only ({len(dropped)} previous root(s) dropped)")
    else:
        ca.rotate_root(ttl=_duration(args.root_ttl))
        print(f"new root made; the trust bundle holds {len(ca.bundle)} roots until "
              "`fastmesh ca rotate-root --finish`")
    return 0
