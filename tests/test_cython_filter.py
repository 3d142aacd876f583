"""A compiled (Cython) user filter: built here, outside fastmesh, against
fastmesh's installed .pxd files, then put on a listener's chain from config
by import path and through Proxy.add_filter, over HTTP/1.1 and HTTP/2."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import fastmesh
from support.harness import http_config
from support.h2util import H2Client

HERE = os.path.dirname(os.path.abspath(__file__))

SETUP = """
from setuptools import setup, Extension
from Cython.Build import cythonize
import fastmesh, os
inc = os.path.dirname(os.path.dirname(os.path.abspath(fastmesh.__file__)))
setup(name="gate", ext_modules=cythonize([Extension("gate", ["gate.pyx"])],
      include_path=[inc], quiet=True), script_args=["build_ext", "--inplace", "-q"])
"""


@pytest.fixture(scope="module")
def gate_module(tmp_path_factory):
    d = tmp_path_factory.mktemp("cyfilter")
    shutil.copy(os.path.join(HERE, "cython_filters", "gate.pyx"), d)
    (d / "setup.py").write_text(SETUP)
    r = subprocess.run([sys.executable, "setup.py"], cwd=d, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    sys.path.insert(0, str(d))
    try:
        import gate
        yield gate
    finally:
        sys.path.remove(str(d))
        sys.modules.pop("gate", None)


def status_of(proto, address, path, headers=()):
    if proto == "h1":
        from support.harness import Client
        c = Client(address)
        try:
            return c.request("GET", path, headers=list(headers)).status
        finally:
            c.close()
    c = H2Client(address)
    try:
        return c.get(path, headers=list(headers)).status
    finally:
        c.close()


@pytest.mark.parametrize("proto", ["h1", "h2"])
def test_compiled_filter_from_config(proto, gate_module, start_proxy, origin):
    p = start_proxy(http_config(origin, listener={"http_filters": [
        {"name": "gate", "import": "gate:HeaderGate"}]}))
    assert status_of(proto, p.address("web"), "/closed") == 403
    # (HTTP/2 header names are lower-case on the wire; HTTP/1.1 in any case)
    name = "X-Gate" if proto == "h1" else "x-gate"
    assert status_of(proto, p.address("web"), "/open", [(name, "open")]) == 200
    assert [r.target for r in origin.received()] == [b"/open"]
    flt = p._in_loop(lambda: p.proxy._dataplane.worker.listeners["web"].conf.filters[0])
    assert isinstance(flt, gate_module.HeaderGate) and isinstance(flt, fastmesh.HttpFilter)
    assert (flt.passed, flt.refused) == (1, 1)


def test_compiled_filter_through_the_embedding_api(gate_module, start_proxy, origin):
    p = start_proxy(http_config(origin))
    assert status_of("h1", p.address("web"), "/before") == 200
    g = gate_module.HeaderGate()
    p.call(p.proxy.add_filter("web", g))
    assert status_of("h1", p.address("web"), "/after") == 403
    assert status_of("h1", p.address("web"), "/after", [("x-gate", "open")]) == 200
    assert (g.passed, g.refused) == (1, 1)


def test_a_compiled_hook_that_raises_gets_500(gate_module, start_proxy, origin):
    p = start_proxy(http_config(origin, listener={"http_filters": [
        {"name": "gate", "import": "gate:HeaderGate"}]}))
    assert status_of("h1", p.address("web"), "/x", [("x-gate", "boom")]) == 500
    assert status_of("h1", p.address("web"), "/y", [("x-gate", "open")]) == 200
    assert any("gate exploded" in repr(e.get("exception")) for e in p.loop_errors)
    p.loop_errors.clear()
