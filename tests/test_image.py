"""The container image: the Dockerfile built with buildah from a base made of
Debian packages only (scripts/base-image.sh: debootstrap + `buildah from
scratch`, no image registry), then run with a config mounted at
/etc/fastmesh/fastmesh.yaml, proxying a request to an origin on the host.

Building compiles the data plane inside the image (minutes of CPU), so the
test runs where FASTMESH_IMAGE_TEST=1 (scripts/test.sh sets it) and buildah,
debootstrap and root are there; it is skipped with the reason otherwise.

The image runs under `buildah run --isolation chroot`: the image's
filesystem, user and entrypoint, the host's network. `podman run` cannot
start a container on this kind of machine (no CAP_SYS_RESOURCE:
"crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted", runc: "error
setting rlimit type 7: operation not permitted"), nor can buildah's OCI
isolation ("cgroups in hybrid mode not supported").
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support.origin import Origin
from support.origin_proc import free_port
from support.served import poll

ROOT = Path(__file__).resolve().parent.parent
BASE = "localhost/fastmesh-base:bookworm"
IMAGE = "localhost/fastmesh:test"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"

pytestmark = [
    pytest.mark.skipif(os.environ.get("FASTMESH_IMAGE_TEST") != "1",
                       reason="builds the image from source (minutes of CPU): set "
                              "FASTMESH_IMAGE_TEST=1, as scripts/test.sh does"),
    pytest.mark.skipif(shutil.which("buildah") is None or shutil.which("debootstrap") is None,
                       reason="needs buildah and debootstrap (apt-get install buildah debootstrap)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and buildah need root here"),
]


def sh(*argv: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(argv)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def image():
    sh(str(ROOT / "scripts/base-image.sh"), BASE)
    argv = ["buildah", "bud", "--isolation", "chroot", "--format", "docker", "--layers",
            "--build-arg", f"BASE={BASE}", "-t", IMAGE]
    if os.path.exists(HOST_CA):
        # The host's CA bundle, for pip behind an HTTPS-intercepting proxy.
        argv += ["--build-arg", "PIP_CERT=/etc/ssl/certs/host-ca.crt",
                 "-v", f"{HOST_CA}:/etc/ssl/certs/host-ca.crt:ro"]
    sh(*argv, str(ROOT))
    yield IMAGE


@pytest.mark.timeout(2400)
def test_image_config_user_healthcheck(image):
    cfg = json.loads(sh("buildah", "inspect", "--type", "image", image).stdout)["Docker"]["config"]
    assert cfg["User"] == "1337:1337"                       # non-root: the sidecar's uid
    assert cfg["Entrypoint"] == ["fastmesh"] and cfg["Cmd"] == ["run"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", "fastmesh", "request", "GET", "/ready"]


@pytest.mark.timeout(2400)
def test_image_runs_the_mounted_config_and_proxies(image, tmp_path):
    origin = Origin()
    origin.start()
    port, admin = free_port(), free_port()
    cfg = tmp_path / "fastmesh.yaml"
    cfg.write_text(yaml.safe_dump({
        "admin": {"address": "127.0.0.1", "port": admin},
        "listeners": [{"name": "ingress", "address": "127.0.0.1", "port": port,
                       "virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
                           {"match": {"prefix": "/"}, "cluster": "origin"}]}]}],
        "clusters": [{"name": "origin", "endpoints": [
            {"address": "127.0.0.1", "port": origin.address[1]}]}],
    }))
    os.chmod(cfg, 0o644)
    ctr = sh("buildah", "from", image).stdout.strip()
    mount = f"{cfg}:/etc/fastmesh/fastmesh.yaml:ro"
    # `fastmesh run` with no -c: the mounted default path
    proc = subprocess.Popen(["buildah", "run", "--isolation", "chroot", "-v", mount, ctr,
                             "--", "fastmesh", "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def answered() -> bool:
            assert proc.poll() is None, proc.stdout.read()
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/through-the-image")
                ok = c.getresponse().status == 200
                c.close()
                return ok
            except OSError:
                return False
        assert poll(answered, 60)
        assert origin.received()[-1].path == "/through-the-image"
        # the HEALTHCHECK command, run in the image, finds the admin port in the config
        r = sh("buildah", "run", "--isolation", "chroot", "-v", mount, ctr,
               "--", "fastmesh", "request", "GET", "/ready", timeout=60)
        assert r.stdout == "LIVE\n"
        # the proxy runs as the image's user, not root
        r = sh("buildah", "run", "--isolation", "chroot", ctr, "--", "id", "-u", timeout=60)
        assert r.stdout.strip() == "1337"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        subprocess.run(["buildah", "rm", ctr], capture_output=True, timeout=60)
        origin.stop()
    # stopped: nothing listens on the port any more
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/")
