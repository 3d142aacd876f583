"""The `fastmesh` command: run the proxy, validate a config.

    fastmesh run [-c FILE] [--workers N]   run the sidecar (no -c: $FASTMESH_CONFIG,
                                           /etc/fastmesh/fastmesh.yaml, else the demo)
    fastmesh run --port P --admin-port A   the demo on other ports
    fastmesh validate -c FILE              check a config, print the error if any
    fastmesh config --example | --schema   an annotated config; its JSON Schema
    fastmesh inject -f app.yaml [-o out]   add the sidecar to Kubernetes workloads
    fastmesh request POST /healthcheck/fail
                                           call the local admin API (preStop hooks)
    fastmesh iptables [--dry-run|--cleanup] redirect a pod's traffic to fastmesh
    fastmesh register --etcd URL --prefix P --address A --port N
                                           join an etcd-discovered cluster
    fastmesh iptables [--dry-run|--cleanup] redirect a pod's traffic to fastmesh
    fastmesh top [--admin HOST:PORT] [--once]
                                           live view of a running sidecar (admin/top.py)
    fastmesh stats [--admin HOST:PORT] [--filter RE]
                                           print its /stats
    fastmesh --version | fastmesh version
"""
from __future__ import annotations

import argparse
import importlib.resources
import logging
import os
import sys
from typing import TYPE_CHECKING

from fastmesh import __version__

if TYPE_CHECKING:
    from fastmesh.control.config import ConfigError

# Where the image and the injected sidecar mount the config (docs/deploy.md).
DEFAULT_CONFIG_PATH = "/etc/fastmesh/fastmesh.yaml"
CONFIG_ENV = "FASTMESH_CONFIG"
DEMO_PORT, DEMO_ADMIN_PORT = 10000, 9901


def resolve_config_path(arg: str | None, environ: dict[str, str] | os._Environ[str] = os.environ,
                        default_path: str = DEFAULT_CONFIG_PATH) -> str | None:
    """The config `fastmesh run` uses: -c, else $FASTMESH_CONFIG, else the
    mounted default path if that file exists, else None (the embedded demo)."""
    if arg:
        return arg
    if environ.get(CONFIG_ENV):
        return environ[CONFIG_ENV]
    if os.path.exists(default_path):
        return default_path
    return None


def _print_config_error(exc: ConfigError, prefix: str) -> None:
    print(f"{prefix}{exc}", file=sys.stderr)
    if exc.snippet:
        print(exc.snippet, file=sys.stderr)
    for extra in exc.errors[1:]:
        print(f"{prefix}{extra}", file=sys.stderr)


def _cmd_validate(args: argparse.Namespace) -> int:
    from fastmesh.control.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        _print_config_error(exc, "invalid: ")
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


def _demo_config(port: int, admin_port: int, origin_port: int) -> str:
    """The embedded demo config with its ports moved (--port, --admin-port)."""
    import yaml

    text = importlib.resources.files("fastmesh").joinpath("default.yaml").read_text()
    doc = yaml.safe_load(text)
    doc["listeners"][0]["port"] = port
    doc["admin"]["port"] = admin_port
    doc["clusters"][0]["endpoints"][0]["port"] = origin_port
    return yaml.safe_dump(doc, sort_keys=False)


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
    from fastmesh.control.config import ConfigError

    if args.workers is None:
        from fastmesh.runtime.cpus import available_cpus

        args.workers = available_cpus()
    demo = None
    config = resolve_config_path(args.config)
    if config is None:
        from fastmesh.runtime.demo import start_demo_origin

        # The origin takes a free port, so it never clashes with anything.
        demo = await start_demo_origin("127.0.0.1", 0)
        origin_port = demo.sockets[0].getsockname()[1]
        text = _demo_config(args.port or DEMO_PORT,
                            DEMO_ADMIN_PORT if args.admin_port is None else args.admin_port,
                            origin_port)
        source, path = "<embedded default.yaml>", None
    else:
        if args.port is not None or args.admin_port is not None:
            print("fastmesh: --port and --admin-port move the demo's ports; with a config "
                  f"({config}) set the ports in it", file=sys.stderr)
            return 2
        path = os.path.abspath(config)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            print(f"fastmesh: cannot read config {config}: {exc.strerror or exc}", file=sys.stderr)
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
        _print_config_error(exc, "fastmesh: invalid config: ")
        return 1
    except ValueError as exc:       # user/group that do not exist here
        print(f"fastmesh: {exc}", file=sys.stderr)
        return 1
    try:
        await sup.start()
    except (RuntimeError, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"fastmesh: {reason}", file=sys.stderr)
        if demo is not None:
            print("fastmesh: the demo's ports move with --port and --admin-port", file=sys.stderr)
            demo.close()
        return 1
    if demo is not None:
        lst = sup.config.listeners[0]
        admin = sup.config.admin
        assert admin is not None
        print("fastmesh demo: a built-in origin behind the sidecar listener "
              f"{lst.address}:{lst.port}. Try:\n"
              f"  curl -i http://{lst.address}:{lst.port}/hello\n"
              f"  curl -s http://{admin.address}:{admin.port}/stats/prometheus\n"
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


def _cmd_config(args: argparse.Namespace) -> int:
    if args.schema:
        import json

        from fastmesh.control.jsonschema import config_json_schema

        print(json.dumps(config_json_schema(), indent=2))
    else:
        print(importlib.resources.files("fastmesh").joinpath("example.yaml").read_text(), end="")
    return 0


def _cmd_inject(args: argparse.Namespace) -> int:
    from fastmesh.kube.inject import run as inject_run
    return inject_run(args)


def _request_arguments(req: argparse.ArgumentParser) -> None:
    req.add_argument("method", help="GET or POST")
    req.add_argument("path", help="e.g. /ready, /healthcheck/fail")
    req.add_argument("--admin-address", help="default: the config's admin.address")
    req.add_argument("--admin-port", type=int,
                     help="default: the config's admin.port (the config `fastmesh run` "
                          f"would use: ${CONFIG_ENV}, {DEFAULT_CONFIG_PATH}), else "
                          f"{DEMO_ADMIN_PORT}")
    req.add_argument("--timeout", type=float, default=5.0)


def _configured_admin() -> tuple[str, int]:
    """The admin address of the config `fastmesh run` would use (the image's
    HEALTHCHECK needs no port this way); the demo's when there is none."""
    path = resolve_config_path(None)
    if path is not None:
        import yaml

        try:
            with open(path, encoding="utf-8") as f:
                admin = (yaml.safe_load(f) or {}).get("admin") or {}
            return str(admin.get("address", "127.0.0.1")), int(admin.get("port", DEMO_ADMIN_PORT))
        except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
            pass        # `fastmesh run` reports a bad config; here: the default
    return "127.0.0.1", DEMO_ADMIN_PORT


def _cmd_request(args: argparse.Namespace) -> int:
    """Exit 0 on a 2xx/3xx answer, 1 otherwise: a Kubernetes exec probe."""
    import http.client

    if args.admin_address is None or args.admin_port is None:
        address, port = _configured_admin()
        args.admin_address = args.admin_address or address
        args.admin_port = args.admin_port or port
    try:
        conn = http.client.HTTPConnection(args.admin_address, args.admin_port, timeout=args.timeout)
        conn.request(args.method.upper(), args.path)
        resp = conn.getresponse()
        sys.stdout.write(resp.read().decode("utf-8", "replace"))
    except OSError as exc:
        print(f"fastmesh: admin {args.admin_address}:{args.admin_port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0 if resp.status < 400 else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["request"]:
        # The probes and preStop hook of every injected pod run this: skip the
        # imports the other commands' parsers need (a quarter second of CPU).
        req = argparse.ArgumentParser(prog="fastmesh request",
                                      description="call the local admin API")
        _request_arguments(req)
        return _cmd_request(req.parse_args(argv[1:]))
    ap = argparse.ArgumentParser(prog="fastmesh", description="fastmesh service-mesh sidecar proxy")
    ap.add_argument("--version", action="version", version=f"fastmesh {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the proxy (no config: the demo on the embedded config)")
    run.add_argument("-c", "--config",
                     help=f"YAML config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG_PATH} "
                          "if it exists, else the demo; `fastmesh config --example` prints "
                          "an annotated one)")
    run.add_argument("--port", type=int, help=f"the demo's listener port (default {DEMO_PORT})")
    run.add_argument("--admin-port", type=int,
                     help=f"the demo's admin port (default {DEMO_ADMIN_PORT})")
    run.add_argument("--workers", type=int, default=None,
                     help="worker processes sharing the ports (default: one per CPU the "
                          "container's CPU quota allows)")
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

    cfg = sub.add_parser("config", help="print an annotated example config, or the JSON Schema")
    what = cfg.add_mutually_exclusive_group(required=True)
    what.add_argument("--example", action="store_true", help="an annotated config to start from")
    what.add_argument("--schema", action="store_true",
                      help="the config's JSON Schema (for editor completion and checks)")
    cfg.set_defaults(func=_cmd_config)

    inj = sub.add_parser("inject", help="add the fastmesh sidecar to Kubernetes workloads",
                         description="Like istioctl kube-inject: reads Deployments, "
                                     "StatefulSets, DaemonSets, Pods (or Lists) and writes them "
                                     "back with the sidecar; see docs/deploy.md.")
    from fastmesh.kube.inject import add_arguments as _inject_arguments

    _inject_arguments(inj)
    inj.set_defaults(func=_cmd_inject)

    req = sub.add_parser("request", help="call the local admin API (for preStop hooks)")
    _request_arguments(req)
    req.set_defaults(func=_cmd_request)

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

    ipt = sub.add_parser("iptables", help="install the NAT rules for transparent interception "
                         "(an init step, like istio-iptables / linkerd-init)",
                         description="Redirect a network namespace's TCP traffic to fastmesh; "
                                     "see docs/interception.md.")
    from fastmesh.sidecar.iptables import add_arguments as _ipt_arguments, run as _ipt_run

    _ipt_arguments(ipt)
    ipt.set_defaults(func=_ipt_run)
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
