"""The data side never imports the control side (STYLE.md: data flows one
way, the control side hands the data side snapshots)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "fastmesh"
DATA_SIDE = sorted(p for p in SRC.glob("*.p[yx][xdi]") if p.name.startswith(("_", "core_"))
                   and p.name != "__init__.py" and p.name != "__main__.py")
CONTROL = ("fastmesh.control", "fastmesh.admin", "fastmesh.runtime", "fastmesh.api",
           "fastmesh.security.ca",
           "fastmesh.cli", "fastmesh.bench", "yaml")
IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+c?import|c?import\s+([\w.]+))", re.M)


def test_data_side_sources_import_no_control_module():
    assert DATA_SIDE, "no data-side sources found"
    for path in DATA_SIDE:
        for m in IMPORT.finditer(path.read_text()):
            mod = m.group(1) or m.group(2)
            assert not mod.startswith(CONTROL), f"{path.name} imports {mod}"


def test_importing_the_data_plane_loads_no_control_module():
    code = ("import sys, fastmesh._core, fastmesh._http1, fastmesh._lb, fastmesh._router, "
            "fastmesh._buffers; "
            f"bad = [m for m in sys.modules if m.startswith({CONTROL!r})]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
