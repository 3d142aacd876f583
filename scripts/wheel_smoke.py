"""Prove a built wheel carries the compiled core (scripts/test.sh runs this).

    python3 scripts/wheel_smoke.py WORKDIR dist/fastmesh-*.whl

Makes a fresh virtualenv in WORKDIR, installs the wheel (binary packages
only) with a PATH that holds the virtualenv and nothing else, so no compiler
can be found, then runs `fastmesh --version` and the demo on free ports and
proxies one request through it. Exits non-zero with the reason on failure.
"""
from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(workdir: str, wheel: str) -> int:
    venv = os.path.join(workdir, "venv")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    bindir = os.path.join(venv, "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CC", "CXX")}
    env["PATH"] = bindir                     # no gcc, cc, or anything else
    env["CC"] = env["CXX"] = "/nonexistent/cc"
    for cc in ("gcc", "cc", "clang", "x86_64-linux-gnu-gcc"):
        if shutil.which(cc, path=env["PATH"]):
            sys.exit(f"wheel smoke: a compiler ({cc}) is on the venv's PATH")
    subprocess.run([os.path.join(bindir, "pip"), "install", "-q", "--only-binary", ":all:",
                    wheel], check=True, env=env, cwd=workdir)
    fastmesh = os.path.join(bindir, "fastmesh")
    version = subprocess.run([fastmesh, "--version"], check=True, env=env, cwd=workdir,
                             capture_output=True, text=True).stdout.strip()
    core = subprocess.run([os.path.join(bindir, "python"), "-c",
                           "import fastmesh._core as c; print(c.__file__)"],
                          check=True, env=env, cwd=workdir, capture_output=True, text=True)
    if not core.stdout.strip().startswith(venv) or not core.stdout.strip().endswith(".so"):
        sys.exit(f"wheel smoke: fastmesh._core is not the wheel's compiled module: {core.stdout}")
    port, admin = free_port(), free_port()
    proc = subprocess.Popen([fastmesh, "run", "--port", str(port), "--admin-port", str(admin),
                             "--workers", "1"], env=env, cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                sys.exit(f"wheel smoke: fastmesh run exited:\n{proc.stdout.read()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/hello")
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status == 200 and body.startswith(b"hello from the fastmesh demo"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("wheel smoke: no proxied answer within 60 s")
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"wheel smoke: {version} from {os.path.basename(wheel)}: compiled core "
          f"{os.path.basename(core.stdout.strip())}, a request proxied, no compiler on PATH")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
