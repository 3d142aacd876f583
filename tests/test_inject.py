"""`fastmesh inject` (kube/inject.py): its output validated against the
Kubernetes schemas (kubernetes-validate, strict: unknown fields fail) for
Deployment, StatefulSet, DaemonSet, Pod and List inputs, idempotence, opt-out,
annotation overrides, and deploy/'s manifests."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastmesh.kube.inject import (
    INIT_NAME,
    PROXY_NAME,
    STATUS_ANNOTATION,
    InjectError,
    inject_yaml,
)

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.37.0"     # newest schema kubernetes-validate ships


def validate(doc: dict) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def app(kind: str) -> dict:
    pod = {"containers": [{"name": "app", "image": "example/app:1",
                           "ports": [{"containerPort": 8080}]}]}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"}, "spec": pod}
    spec = {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": pod}}
    if kind == "StatefulSet":
        spec["serviceName"] = "app"
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "app"}, "spec": spec}


def pod_of(doc: dict) -> tuple[dict, dict]:
    if doc["kind"] == "Pod":
        return doc["metadata"], doc["spec"]
    return doc["spec"]["template"]["metadata"], doc["spec"]["template"]["spec"]


def inject(doc, **kw) -> dict:
    return yaml.safe_load(inject_yaml(yaml.safe_dump(doc), **kw))


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "Pod"])
def test_output_validates_against_kubernetes_schemas(kind):
    doc = app(kind)
    validate(doc)
    out = inject(doc)
    validate(out)
    meta, pod = pod_of(out)
    assert [c["name"] for c in pod["containers"]] == ["app", PROXY_NAME]
    assert [c["name"] for c in pod["initContainers"]] == [INIT_NAME]
    assert {v["name"] for v in pod["volumes"]} == {"fastmesh-config", "fastmesh-tmp"}
    status = json.loads(meta["annotations"][STATUS_ANNOTATION])
    assert status["containers"] == [PROXY_NAME] and status["initContainers"] == [INIT_NAME]


def test_the_validator_does_catch_a_bad_field():
    """The schema check can fail: a misspelt field in the sidecar is refused."""
    out = inject(app("Deployment"))
    pod_of(out)[1]["containers"][1]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(out)


def test_sidecar_and_init_container_contents():
    out = inject(app("Deployment"))
    _, pod = pod_of(out)
    init = pod["initContainers"][0]
    proxy = pod["containers"][1]
    # init: fastmesh iptables as root, NET_ADMIN and NET_RAW only, the proxy uid exempt
    assert init["command"][:2] == ["fastmesh", "iptables"]
    cmd = init["command"]
    assert cmd[cmd.index("--proxy-uid") + 1] == "1337"
    assert "15000" in cmd[cmd.index("--exclude-inbound-ports") + 1].split(",")
    sc = init["securityContext"]
    assert sc["runAsUser"] == 0 and sc["privileged"] is False
    assert sorted(sc["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    # the proxy: non-root, read-only, no capabilities, the mounted config
    assert proxy["args"] == ["run", "-c", "/etc/fastmesh/fastmesh.yaml"]
    sc = proxy["securityContext"]
    assert sc["runAsUser"] == 1337 and sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in proxy["volumeMounts"]}
    assert mounts["/etc/fastmesh"] == "fastmesh-config"
    cm = next(v for v in pod["volumes"] if v["name"] == "fastmesh-config")
    assert cm["configMap"]["name"] == "fastmesh-sidecar"
    for probe in ("startupProbe", "readinessProbe"):
        assert proxy[probe]["exec"]["command"] == [
            "fastmesh", "request", "GET", "/ready", "--admin-port", "15000"]
    assert proxy["livenessProbe"]["exec"]["command"][:4] == ["fastmesh", "request", "GET", "/"]
    pre = " ".join(proxy["lifecycle"]["preStop"]["exec"]["command"])
    assert "POST /healthcheck/fail" in pre and "sleep 5" in pre
    assert proxy["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert proxy["resources"]["limits"] == {"cpu": "2000m", "memory": "1Gi"}


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "Pod"])
def test_injecting_twice_is_injecting_once(kind):
    once = inject_yaml(yaml.safe_dump(app(kind)))
    twice = inject_yaml(once)
    assert twice == once


def test_reinjecting_with_other_options_replaces_the_sidecar():
    from fastmesh.kube.inject import Options

    once = inject_yaml(yaml.safe_dump(app("Deployment")))
    again = yaml.safe_load(inject_yaml(once, Options(image="registry.local/fastmesh:2")))
    _, pod = pod_of(again)
    assert [c["name"] for c in pod["containers"]] == ["app", PROXY_NAME]
    assert pod["containers"][1]["image"] == "registry.local/fastmesh:2"
    validate(again)


def test_opt_out_annotation():
    doc = app("Deployment")
    doc["spec"]["template"]["metadata"]["annotations"] = {"sidecar.fastmesh.io/inject": "false"}
    out = inject(doc)
    assert out == doc
    # opting out an injected workload takes the sidecar out
    injected = inject(app("Deployment"))
    pod_of(injected)[0]["annotations"]["sidecar.fastmesh.io/inject"] = "false"
    out = inject(injected)
    assert [c["name"] for c in pod_of(out)[1]["containers"]] == ["app"]
    assert "initContainers" not in pod_of(out)[1]
    validate(out)


def test_pod_and_namespace_annotations_override():
    ns = {"apiVersion": "v1", "kind": "Namespace",
          "metadata": {"name": "shop", "annotations": {
              "sidecar.fastmesh.io/proxyMemoryLimit": "512Mi",
              "sidecar.fastmesh.io/proxyCPU": "50m"}}}
    dep = app("Deployment")
    dep["metadata"]["namespace"] = "shop"
    dep["spec"]["template"]["metadata"]["annotations"] = {
        "sidecar.fastmesh.io/proxyCPU": "250m",                 # the pod's wins
        "sidecar.fastmesh.io/inboundPort": "16006",
        "sidecar.fastmesh.io/excludeOutboundIPRanges": "10.96.0.0/12"}
    out = list(yaml.safe_load_all(inject_yaml(yaml.safe_dump_all([ns, dep]))))
    assert out[0] == ns
    _, pod = pod_of(out[1])
    proxy, init = pod["containers"][1], pod["initContainers"][0]
    assert proxy["resources"]["requests"]["cpu"] == "250m"
    assert proxy["resources"]["limits"]["memory"] == "512Mi"
    assert proxy["ports"][0]["containerPort"] == 16006
    cmd = init["command"]
    assert cmd[cmd.index("--inbound-capture-port") + 1] == "16006"
    assert cmd[cmd.index("--exclude-outbound-cidrs") + 1] == "10.96.0.0/12"
    for doc in out:
        validate(doc)


def test_bad_annotation_is_an_error():
    dep = app("Deployment")
    dep["spec"]["template"]["metadata"]["annotations"] = {"sidecar.fastmesh.io/proxyCPUU": "1"}
    with pytest.raises(InjectError, match="proxyCPUU"):
        inject(dep)
    dep["spec"]["template"]["metadata"]["annotations"] = {"sidecar.fastmesh.io/adminPort": "x"}
    with pytest.raises(InjectError, match="integer"):
        inject(dep)


def test_list_multi_document_and_passthrough():
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "app"},
           "spec": {"ports": [{"port": 80}]}}
    lst = {"apiVersion": "v1", "kind": "List", "items": [app("Deployment"), svc]}
    out = list(yaml.safe_load_all(inject_yaml(yaml.safe_dump_all([lst, svc, app("Pod")]))))
    assert len(out) == 3
    assert [c["name"] for c in pod_of(out[0]["items"][0])[1]["containers"]] == ["app", PROXY_NAME]
    assert out[0]["items"][1] == svc and out[1] == svc
    assert [c["name"] for c in out[2]["spec"]["containers"]] == ["app", PROXY_NAME]
    for doc in (out[0]["items"][0], out[1], out[2]):
        validate(doc)


def test_host_network_pods_are_left_alone():
    doc = app("DaemonSet")
    doc["spec"]["template"]["spec"]["hostNetwork"] = True
    assert inject(doc) == doc


def test_cli_file_in_file_out(tmp_path):
    out = tmp_path / "out.yaml"
    r = subprocess.run([sys.executable, "-m", "fastmesh", "inject", "-f",
                        str(ROOT / "deploy/app.yaml"), "-o", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(out.read_text()))
    assert docs[0]["kind"] == "Deployment" and docs[1]["kind"] == "Service"
    for doc in docs:
        validate(doc)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [\n")
    r = subprocess.run([sys.executable, "-m", "fastmesh", "inject", "-f", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "not valid YAML" in r.stderr


def test_deploy_manifests_validate_and_are_current():
    for path in sorted((ROOT / "deploy").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                validate(doc)
    # app-injected.yaml is what inject gives for app.yaml today
    current = inject_yaml((ROOT / "deploy/app.yaml").read_text())
    committed = "".join(line for line in (ROOT / "deploy/app-injected.yaml").read_text()
                        .splitlines(keepends=True) if not line.startswith("#"))
    assert committed == current, "regenerate: fastmesh inject -f deploy/app.yaml " \
                                 "-o deploy/app-injected.yaml"


def test_deploy_configmap_holds_a_valid_sidecar_config(tmp_path):
    from fastmesh.control.config import parse_config

    cm = yaml.safe_load((ROOT / "deploy/sidecar-configmap.yaml").read_text())
    cfg = parse_config(cm["data"]["fastmesh.yaml"], source="sidecar-configmap.yaml")
    names = {lst.name: lst for lst in cfg.listeners}
    assert names["inbound"].port == 15006 and names["outbound"].port == 15001
    assert cfg.admin is not None and cfg.admin.port == 15000 and cfg.admin.address == "127.0.0.1"


def test_init_command_is_accepted_by_fastmesh_iptables():
    """The init container's command parses with the real `fastmesh iptables`
    and prints its rules (--dry-run changes nothing): the flags agree."""
    from fastmesh.kube.inject import Options, iptables_args

    opts = Options(exclude_outbound_cidrs="10.96.0.0/12", exclude_inbound_ports="9090")
    for argv in (iptables_args(Options()), iptables_args(opts)):
        assert argv[:2] == ["fastmesh", "iptables"]
        r = subprocess.run([sys.executable, "-m", "fastmesh", *argv[1:], "--dry-run"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "15006" in r.stdout and "15001" in r.stdout and "1337" in r.stdout
    assert "10.96.0.0/12" in r.stdout
