"""`fastmesh inject`: add the fastmesh sidecar to Kubernetes workloads.

Like ``istioctl kube-inject`` and ``linkerd inject``: Kubernetes YAML in
(Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, Pods, or
``List``s of them; several documents too), the same YAML out with each pod
template given

- an init container ``fastmesh-init`` that runs ``fastmesh iptables`` as root
  with NET_ADMIN and NET_RAW only, redirecting the pod's traffic to the proxy
  and exempting the proxy's own uid (Istio's ``istio-init``);
- the sidecar ``fastmesh-proxy``: ``fastmesh run -c /etc/fastmesh/fastmesh.yaml``
  from a ConfigMap, as uid 1337 with a read-only root filesystem and no
  capabilities, probes on the admin API's ``/ready``, resources, and a
  ``preStop`` hook that fails ``/ready`` (``POST /healthcheck/fail``) and waits
  for the endpoints to be withdrawn before SIGTERM drains the listeners;
- the annotation ``sidecar.fastmesh.io/status`` recording what was added.

Injecting an injected workload gives the same output (the recorded pieces
are taken out first). ``sidecar.fastmesh.io/inject: "false"`` on a pod
template, a workload or its Namespace (a Namespace document in the same
input) opts out; the ``sidecar.fastmesh.io/*`` annotations below override
ports, resources, image and ConfigMap, a pod's over its namespace's. Pods on
the host network are left alone (their iptables are the node's).

The probes are ``exec`` probes (``fastmesh request GET /ready``): the admin API
stays on loopback, where only the pod can reach it, as Envoy's admin in Istio.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import yaml

from fastmesh import __version__

PREFIX = "sidecar.fastmesh.io/"
INJECT_ANNOTATION = PREFIX + "inject"
STATUS_ANNOTATION = PREFIX + "status"
INIT_NAME = "fastmesh-init"
PROXY_NAME = "fastmesh-proxy"
CONFIG_VOLUME = "fastmesh-config"
TMP_VOLUME = "fastmesh-tmp"
CONFIG_DIR = "/etc/fastmesh"
CONFIG_PATH = CONFIG_DIR + "/fastmesh.yaml"

# Kinds whose pod template is at spec.template; CronJob's is one level down.
_TEMPLATE_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
                   "ReplicationController")


@dataclass(frozen=True)
class Options:
    """What an injection adds. Each field can be overridden per namespace or
    pod by the annotation ``sidecar.fastmesh.io/<annotation name>`` in
    ``ANNOTATIONS``."""

    image: str = f"fastmesh:{__version__}"
    config_map: str = "fastmesh-sidecar"
    proxy_uid: int = 1337                 # Istio's: the uid iptables exempts
    inbound_port: int = 15006             # Istio's inbound capture port
    outbound_port: int = 15001            # Istio's outbound capture port
    admin_port: int = 15000               # Envoy's admin port in Istio
    inbound_ports: str = "*"              # captured inbound ports ("*" = all)
    exclude_inbound_ports: str = ""       # added to the admin port
    exclude_outbound_ports: str = ""
    exclude_outbound_cidrs: str = ""
    cpu_request: str = "100m"             # Istio's sidecar defaults
    memory_request: str = "128Mi"
    cpu_limit: str = "2000m"
    memory_limit: str = "1Gi"
    drain_seconds: int = 5                # preStop: /ready fails, then this wait


# annotation (after the prefix) -> Options field, with Istio's names where Istio has one.
ANNOTATIONS: dict[str, str] = {
    "proxyImage": "image",
    "configMap": "config_map",
    "proxyUID": "proxy_uid",
    "inboundPort": "inbound_port",
    "outboundPort": "outbound_port",
    "adminPort": "admin_port",
    "includeInboundPorts": "inbound_ports",
    "excludeInboundPorts": "exclude_inbound_ports",
    "excludeOutboundPorts": "exclude_outbound_ports",
    "excludeOutboundIPRanges": "exclude_outbound_cidrs",
    "proxyCPU": "cpu_request",
    "proxyMemory": "memory_request",
    "proxyCPULimit": "cpu_limit",
    "proxyMemoryLimit": "memory_limit",
    "drainSeconds": "drain_seconds",
}


class InjectError(Exception):
    """Input that cannot be injected (not Kubernetes YAML, a bad annotation)."""


def _int_fields() -> set[str]:
    return {f.name for f in fields(Options) if f.type in (int, "int")}


def apply_annotations(opts: Options, annotations: Mapping[str, Any] | None, where: str) -> Options:
    """``opts`` with the ``sidecar.fastmesh.io/*`` overrides of ``annotations``."""
    changes: dict[str, Any] = {}
    ints = _int_fields()
    for key, value in (annotations or {}).items():
        if not key.startswith(PREFIX) or key in (INJECT_ANNOTATION, STATUS_ANNOTATION):
            continue
        name = key[len(PREFIX):]
        if name not in ANNOTATIONS:
            raise InjectError(f"{where}: unknown annotation {key!r}; known: "
                              + ", ".join(PREFIX + a for a in ANNOTATIONS))
        field = ANNOTATIONS[name]
        if field in ints:
            try:
                changes[field] = int(str(value))
            except ValueError:
                raise InjectError(f"{where}: annotation {key!r}: expected an integer, "
                                  f"got {value!r}") from None
        else:
            changes[field] = str(value)
    return replace(opts, **changes)


def iptables_args(opts: Options) -> list[str]:
    """The ``fastmesh iptables`` command line of the init container
    (istio-iptables' meanings; the admin port is never captured)."""
    excluded = ",".join(p for p in (str(opts.admin_port), opts.exclude_inbound_ports) if p)
    argv = ["fastmesh", "iptables",
            "--proxy-uid", str(opts.proxy_uid), "--proxy-gid", str(opts.proxy_uid),
            "--inbound-capture-port", str(opts.inbound_port),
            "--proxy-port", str(opts.outbound_port),
            "--inbound-ports", opts.inbound_ports,
            "--exclude-inbound-ports", excluded]
    # Flags with nothing to exclude are left out (their default is "none").
    for flag, value in (("--exclude-outbound-ports", opts.exclude_outbound_ports),
                        ("--exclude-outbound-cidrs", opts.exclude_outbound_cidrs)):
        if value:
            argv += [flag, value]
    return argv


def _admin_request(opts: Options, method: str, path: str) -> list[str]:
    return ["fastmesh", "request", method, path, "--admin-port", str(opts.admin_port)]


def init_container(opts: Options) -> dict[str, Any]:
    """The iptables init step: root with NET_ADMIN and NET_RAW, nothing else."""
    return {
        "name": INIT_NAME,
        "image": opts.image,
        "command": iptables_args(opts),
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                      "limits": {"cpu": "100m", "memory": "64Mi"}},
        "securityContext": {
            "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False,
            "privileged": False, "allowPrivilegeEscalation": False,
            # iptables takes its lock file under /run (Istio's init is the same).
            "readOnlyRootFilesystem": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }


def proxy_container(opts: Options) -> dict[str, Any]:
    """The sidecar itself."""
    ready = {"exec": {"command": _admin_request(opts, "GET", "/ready")}}
    return {
        "name": PROXY_NAME,
        "image": opts.image,
        "args": ["run", "-c", CONFIG_PATH],
        "ports": [{"name": "fm-inbound", "containerPort": opts.inbound_port, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": opts.cpu_request, "memory": opts.memory_request},
                      "limits": {"cpu": opts.cpu_limit, "memory": opts.memory_limit}},
        # Istio's timings: the startup probe polls each second for up to 10 minutes.
        "startupProbe": {**ready, "periodSeconds": 1, "timeoutSeconds": 3,
                         "failureThreshold": 600},
        "readinessProbe": {**ready, "periodSeconds": 15, "timeoutSeconds": 3,
                           "failureThreshold": 4},
        # Liveness asks only "does the admin answer": /ready turns 503 while the
        # proxy drains, and a liveness failure then would kill it mid-drain.
        "livenessProbe": {"exec": {"command": _admin_request(opts, "GET", "/")},
                          "periodSeconds": 15, "timeoutSeconds": 3, "failureThreshold": 4},
        "lifecycle": {"preStop": {"exec": {"command": [
            "sh", "-c", " ".join(_admin_request(opts, "POST", "/healthcheck/fail"))
            + f"; sleep {opts.drain_seconds}"]}}},
        "securityContext": {
            "runAsUser": opts.proxy_uid, "runAsGroup": opts.proxy_uid, "runAsNonRoot": True,
            "privileged": False, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": TMP_VOLUME, "mountPath": "/tmp"}],
    }


def volumes(opts: Options) -> list[dict[str, Any]]:
    return [{"name": CONFIG_VOLUME, "configMap": {"name": opts.config_map}},
            {"name": TMP_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]


def _uninject(pod: dict[str, Any], meta: dict[str, Any]) -> None:
    """Take out what an earlier injection recorded in its status annotation."""
    annotations = meta.get("annotations") or {}
    raw = annotations.pop(STATUS_ANNOTATION, None)
    if raw is None:
        return
    try:
        status = json.loads(raw)
    except (TypeError, ValueError):
        status = {}
    for key, names in (("initContainers", status.get("initContainers", [INIT_NAME])),
                       ("containers", status.get("containers", [PROXY_NAME])),
                       ("volumes", status.get("volumes", [CONFIG_VOLUME, TMP_VOLUME]))):
        items = [i for i in pod.get(key) or [] if i.get("name") not in names]
        if items:
            pod[key] = items
        else:
            pod.pop(key, None)
    if annotations.get("kubectl.kubernetes.io/default-container") == status.get("defaultContainer"):
        annotations.pop("kubectl.kubernetes.io/default-container", None)
    if not annotations:
        meta.pop("annotations", None)


def _opted_out(*annotation_sets: Mapping[str, Any] | None) -> bool:
    for annotations in annotation_sets:
        value = (annotations or {}).get(INJECT_ANNOTATION)
        if value is not None:
            return str(value).lower() in ("false", "disabled", "no", "0")
    return False


def inject_pod(meta: dict[str, Any], pod: dict[str, Any], opts: Options) -> bool:
    """Inject one pod (``meta`` its metadata, ``pod`` its spec) in place; False if skipped."""
    _uninject(pod, meta)
    if pod.get("hostNetwork"):
        return False
    opts = apply_annotations(opts, meta.get("annotations"), "pod annotations")
    apps = [c.get("name") for c in pod.get("containers") or []]
    pod["initContainers"] = [*(pod.get("initContainers") or []), init_container(opts)]
    pod["containers"] = [*(pod.get("containers") or []), proxy_container(opts)]
    pod["volumes"] = [*(pod.get("volumes") or []), *volumes(opts)]
    status = {"version": __version__, "initContainers": [INIT_NAME],
              "containers": [PROXY_NAME], "volumes": [CONFIG_VOLUME, TMP_VOLUME],
              "configMap": opts.config_map, "image": opts.image}
    annotations = meta.setdefault("annotations", {})
    if apps and "kubectl.kubernetes.io/default-container" not in annotations:
        # `kubectl logs` and `exec` then pick the application, not the proxy.
        annotations["kubectl.kubernetes.io/default-container"] = apps[0]
        status["defaultContainer"] = apps[0]
    annotations[STATUS_ANNOTATION] = json.dumps(status, separators=(",", ":"))
    return True


def _pod_of(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(pod metadata, pod spec) of a workload document, None if it has no pods."""
    kind = doc.get("kind")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return None
    if kind == "Pod":
        return doc.setdefault("metadata", {}), spec
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    elif kind not in _TEMPLATE_KINDS:
        return None
    template = spec.get("template")
    if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
        return None
    return template.setdefault("metadata", {}), template["spec"]


def inject_document(doc: Any, opts: Options,
                    namespaces: Mapping[str, Mapping[str, Any]] | None = None) -> Any:
    """One Kubernetes object (or a List of them), injected; a copy."""
    if not isinstance(doc, dict):
        return doc
    doc = copy.deepcopy(doc)
    if doc.get("kind") == "List" or (doc.get("kind", "").endswith("List") and "items" in doc):
        doc["items"] = [inject_document(item, opts, namespaces) for item in doc.get("items") or []]
        return doc
    found = _pod_of(doc)
    if found is None:
        return doc
    meta = doc.get("metadata") or {}
    ns_annotations = (namespaces or {}).get(meta.get("namespace", "default"), {})
    pod_meta, pod = found
    workload_annotations = meta.get("annotations") if doc.get("kind") != "Pod" else None
    if _opted_out(pod_meta.get("annotations"), workload_annotations, ns_annotations):
        _uninject(pod, pod_meta)
        return doc
    where = f"{doc.get('kind')} {meta.get('name', '?')}"
    ns_opts = apply_annotations(opts, ns_annotations, f"namespace of {where}")
    try:
        inject_pod(pod_meta, pod, ns_opts)
    except InjectError as exc:
        raise InjectError(f"{where}: {exc}") from None
    return doc


def inject_documents(docs: Iterable[Any], opts: Options) -> list[Any]:
    """Every document injected; Namespace documents among them lend their annotations."""
    docs = [d for d in docs if d is not None]
    namespaces = {d["metadata"]["name"]: d["metadata"].get("annotations") or {}
                  for d in docs if isinstance(d, dict) and d.get("kind") == "Namespace"
                  and isinstance(d.get("metadata"), dict) and "name" in d["metadata"]}
    return [inject_document(d, opts, namespaces) for d in docs]


def inject_yaml(text: str, opts: Options | None = None) -> str:
    """YAML text (one or several documents) in, injected YAML text out."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise InjectError(f"not valid YAML: {exc}") from None
    out = inject_documents(docs, opts or Options())
    return yaml.safe_dump_all(out, sort_keys=False, default_flow_style=False)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The `fastmesh inject` flags."""
    d = Options()
    ap.add_argument("-f", "--filename", required=True, help="input YAML ('-' = stdin)")
    ap.add_argument("-o", "--output", help="output file (default: stdout)")
    ap.add_argument("--image", default=d.image, help=f"the proxy image (default {d.image})")
    ap.add_argument("--config-map", default=d.config_map,
                    help=f"ConfigMap holding fastmesh.yaml (default {d.config_map})")
    ap.add_argument("--proxy-uid", type=int, default=d.proxy_uid,
                    help=f"uid the proxy runs as; iptables exempts it (default {d.proxy_uid})")


def run(args: argparse.Namespace) -> int:
    """`fastmesh inject`."""
    opts = Options(image=args.image, config_map=args.config_map, proxy_uid=args.proxy_uid)
    try:
        if args.filename == "-":
            text = sys.stdin.read()
        else:
            with open(args.filename, encoding="utf-8") as f:
                text = f.read()
        out = inject_yaml(text, opts)
    except OSError as exc:
        print(f"fastmesh inject: {args.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except InjectError as exc:
        print(f"fastmesh inject: {args.filename}: {exc}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(out)
    else:
        sys.stdout.write(out)
    return 0
