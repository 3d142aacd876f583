"""The `fastmesh` command: run the proxy, validate a config.

    fastmesh run [-c FILE] [--workers N]   run the sidecar (no -c: the demo)
    fastmesh validate -c FILE              check a config, print the error if any
    fastmesh register --etcd URL --prefix P --address A --port N
                                           join an etcd-discovered cluster
    fastmesh top [--admin HOST:PORT] [--once]
                                           live view of a running sidecar (admin/top.py)
    fastmesh stats [--admin HOST:PORT] [--filter RE]
                                           print its /stats
    fastmesh version
"""
from __future__ import annotations

import argparse
import importlib.resources
import logging
import os
import sys

from fastmesh import __version__
from fastmesh.control.config import ConfigError, load_config


def _cmd_validate(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        for extra in getattr(exc, "errors", [])[1:]:
            print(f"invalid: {extra}", file=sys.stderr)
        return 1
    print(f"{args.config}: valid ({len(cfg.listeners)} listener(s), {len(cfg.clusters)} cluster(s))")
    _warn_unresolvable(cfg)
    return 0


def _warn_unresolvable(cfg) -> None:
    # Names are resolved when fastmesh runs, and retried: a name that does
    # not resolve here is worth a warning, not an error.
    import ipaddress
    import socket

    for c in cfg.clusters:
        if c.discovery.type not in ("strict_dns", "logical_dns") or c.discovery.dns_resolvers:
            continue
        for ep in c.endpoints:
            try:
                ipaddress.ip_address(ep.address)
                continue
            except ValueError:
                pass
            try:
                socket.getaddrinfo(ep.address, ep.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                print(f"warning: cluster {c.name!r}: cannot resolve {ep.address!r} now "
                      f"({exc.strerror or exc}); fastmesh will keep trying when it runs "
                      "(the cluster has no endpoints until it resolves)", file=sys.stderr)


def _is_xds_bootstrap(text: str) -> bool:
    # An Envoy bootstrap with dynamic_resources: the xDS client runs it
    # (runtime/xds.py). Cheap test first: most configs never mention it.
    if "dynamic_resources" not in text:
        return False
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("dynamic_resources"), dict)


async def _run(args: argparse.Namespace) -> int:
    demo = None
    if args.config is None:
        from fastmesh.runtime.demo import start_demo_origin

        text = importlib.resources.files("fastmesh").joinpath("default.yaml").read_text()
        source, path = "<embedded default.yaml>", None
        demo = await start_demo_origin("127.0.0.1", 10001)
    else:
        path = os.path.abspath(args.config)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            print(f"fastmesh: cannot read config {args.config}: {exc}", file=sys.stderr)
            return 1
        source = path
        if _is_xds_bootstrap(text):
            from fastmesh.runtime import xds

            import yaml

            return await xds.run(args, yaml.safe_load(text), path)
    try:
        if args.single_process:
            from fastmesh.runtime.single import SingleProcess

            sup = SingleProcess(text, source, path=path, user=args.user, group=args.group)
        else:
            from fastmesh.runtime.supervisor import Supervisor

            sup = Supervisor(text, source, path=path, workers=args.workers,
                             log_level=args.log_level, user=args.user, group=args.group)
    except ConfigError as exc:
        print(f"fastmesh: invalid config: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:       # user/group that do not exist here
        print(f"fastmesh: {exc}", file=sys.stderr)
        return 1
    try:
        await sup.start()
    except (RuntimeError, OSError) as exc:
        print(f"fastmesh: {exc}", file=sys.stderr)
        return 1
    if demo is not None:
        lst = sup.config.listeners[0]
        print("fastmesh demo: a built-in origin on 127.0.0.1:10001 behind the sidecar listener "
              f"{lst.address}:{lst.port}. Try:\n"
              f"  curl -i http://{lst.address}:{lst.port}/hello\n"
              f"  curl -s http://127.0.0.1:9901/stats/prometheus\n"
              "Stop with Ctrl-C.", flush=True)
    code = await sup.wait()
    if demo is not None:
        demo.close()
    return code


def _cmd_run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s fastmesh %(levelname)s %(message)s")
    import uvloop

    return uvloop.run(_run(args))


def _cmd_bench(args: argparse.Namespace) -> int:
    from fastmesh.bench import run

    return run(args)


def _cmd_ca(args: argparse.Namespace) -> int:
    from fastmesh.security.ca_cli import run as ca_run
    return ca_run(args)


def _cmd_register(args: argparse.Namespace) -> int:
    from fastmesh.control.etcd_register import run as register_run
    return register_run(args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fastmesh", description="fastmesh service-mesh sidecar proxy")
    sub = ap.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the proxy (no -c: the demo on the embedded config)")
    run.add_argument("-c", "--config", help="YAML config file (docs/config.md)")
    run.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                     help="worker processes sharing the ports (default: one per core)")
    run.add_argument("--single-process", action="store_true",
                     help="one process that is its own worker (no supervisor): the "
                          "smallest footprint, like Envoy --concurrency 1")
    run.add_argument("--log-level", default="info",
                     choices=["debug", "info", "warning", "error"])
    run.add_argument("--user", help="drop root to this user once the listeners are bound "
                                    "(overrides the config's `user`)")
    run.add_argument("--group", help="... and this group (default: the user's primary group)")
    run.set_defaults(func=_cmd_run)

    val = sub.add_parser("validate", help="check a config file")
    val.add_argument("-c", "--config", required=True)
    val.set_defaults(func=_cmd_validate)

    bench = sub.add_parser("bench", help="benchmark fastmesh against Envoy (and HAProxy, nginx)",
                           description="Whole-proxy benchmark on 127.0.0.1; see docs/bench.md.")
    from fastmesh.bench import add_arguments as _bench_arguments

    _bench_arguments(bench)
    bench.set_defaults(func=_cmd_bench)

    ca = sub.add_parser("ca", help="the built-in certificate authority (SPIFFE workload certificates)")
    from fastmesh.security.ca_cli import add_arguments as _ca_arguments

    _ca_arguments(ca)
    ca.set_defaults(func=_cmd_ca)

    reg = sub.add_parser("register", help="register this instance in etcd (a lease kept "
                         "alive; revoked on SIGTERM)",
                         description="Register an endpoint under an etcd prefix for clusters "
                                     "with eds_config.etcd; see docs/discovery.md.")
    from fastmesh.control.etcd_register import add_arguments as _register_arguments

    _register_arguments(reg)
    reg.set_defaults(func=_cmd_register)

    from fastmesh.admin import top as _top

    top = sub.add_parser("top", help="live view of a running sidecar's traffic (its admin port)",
                         description="Requests/s, errors, latency per listener, route and "
                                     "cluster, endpoints and workers, from a running "
                                     "sidecar's admin; see docs/observability.md.")
    _top.add_arguments(top, True)
    top.set_defaults(func=_top.run_top)
    stats = sub.add_parser("stats", help="print a running sidecar's /stats")
    _top.add_arguments(stats, False)
    stats.set_defaults(func=_top.run_stats)

    ver = sub.add_parser("version", help="print the version")
    ver.set_defaults(func=lambda a: print(f"fastmesh {__version__}") or 0)

    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
