"""The admin /dashboard in a real headless Chromium (Debian's package, driven
by Playwright) under real traffic through `fastmesh run`: the page is
self-contained (every request outside the admin is refused and none is
made), its plots draw, its numbers move between two reads. `fastmesh top
--once` prints the same numbers. FASTMESH_DASHBOARD_SCREENSHOT=path keeps a
screenshot (docs/img/dashboard.png is made that way)."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading

import pytest

from support.origin_proc import OriginProc
from support.served import poll
from test_metrics_exposition import Mesh

pytestmark = pytest.mark.timeout(120)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Load(threading.Thread):
    """Requests on keep-alive connections until stopped: most to the
    cluster (some fail at the origin), some to the local route."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.stop_ev, self.n = port, threading.Event(), 0

    def run(self) -> None:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stop_ev.is_set():
            for path in ("/a", "/b", "/c", "/local"):
                try:
                    c.request("GET", path)
                    c.getresponse().read()
                    self.n += 1
                except (OSError, http.client.HTTPException):
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            self.stop_ev.wait(0.01)
        c.close()

    def stop(self) -> None:
        self.stop_ev.set()
        self.join(10)


@pytest.fixture
def loaded(tmp_path):
    o = OriginProc("o", tmp_path, fail_rate=0.1).start()
    m = Mesh(tmp_path, o.address)
    load = Load(m.port)
    load.start()
    yield m
    load.stop()
    m.stop()
    o.stop()


def test_dashboard_draws_and_updates_in_headless_chromium(loaded, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (scripts/test.sh installs it)")
    m = loaded
    base = f"http://127.0.0.1:{m.admin}"
    outside: list[str] = []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})

            def only_admin(route):
                if route.request.url.startswith(base):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_admin)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/dashboard")
            # Every chart has a canvas; wait until each listener/route/cluster
            # chart has drawn its lines (pixels other than the grid).
            page.wait_for_function("""() => {
                const cv = [...document.querySelectorAll('canvas')];
                return cv.length === 9 && document.querySelectorAll('#t-now tr').length >= 4;
            }""", timeout=20000)

            def rps_drawn() -> dict:
                # Pixels in each canvas drawn in a series colour (not the grid).
                return page.evaluate("""() => {
                    const out = {};
                    for (const cv of document.querySelectorAll('canvas')) {
                        const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
                        let n = 0;
                        for (let i = 0; i < d.length; i += 4)
                            if (d[i+3] > 0 && (d[i] > 60 || d[i+1] > 90 || d[i+2] > 100)) n++;
                        out[cv.id] = n;
                    }
                    return out;
                }""")

            page.wait_for_function("""() => {
                const rows = [...document.querySelectorAll('#t-now tr')].slice(1);
                return rows.length && rows.every(r => r.querySelector('[data-k=rps]').textContent !== '-'
                                                  && parseFloat(r.querySelector('[data-k=rps]').textContent) > 0);
            }""", timeout=20000)
            page.wait_for_timeout(1500)   # a few points per line
            drawn = rps_drawn()
            assert set(drawn) == {f"cv-{k}-{m_}" for k in ("listeners", "routes", "clusters")
                                  for m_ in ("rps", "err", "lat")}
            for cid in ("cv-listeners-rps", "cv-routes-rps", "cv-clusters-rps",
                        "cv-listeners-lat", "cv-clusters-lat", "cv-clusters-err"):
                assert drawn[cid] > 50, (cid, drawn)

            def numbers() -> dict:
                return page.evaluate("""() => Object.fromEntries(
                    [...document.querySelectorAll('#t-now tr')].slice(1).map(r =>
                        [r.cells[0].textContent + ' ' + r.cells[1].textContent,
                         parseInt(r.querySelector('[data-k=rq]').textContent)]))""")

            first = numbers()
            assert {"listener web", "route web/local", "route web/all/1",
                    "cluster origin"} <= set(first)
            page.wait_for_function(
                "(first) => { const rows = [...document.querySelectorAll('#t-now tr')].slice(1);"
                " return rows.every(r => parseInt(r.querySelector('[data-k=rq]').textContent)"
                " > first[r.cells[0].textContent + ' ' + r.cells[1].textContent]); }",
                arg=first, timeout=10000)
            second = numbers()
            assert all(second[k] > first[k] for k in first)
            # header: state, config version, workers
            assert page.text_content("#state") == "LIVE"
            assert page.text_content("#version") == "1"
            assert page.text_content("#nworkers") == "2/2 ready"
            hosts = page.text_content("#t-hosts")
            assert f"127.0.0.1:" in hosts and "healthy" in hosts
            shot = os.environ.get("FASTMESH_DASHBOARD_SCREENSHOT") or str(tmp_path / "d.png")
            page.screenshot(path=shot, full_page=True)
            assert os.path.getsize(shot) > 10000
            assert not errors, errors
        finally:
            browser.close()
    assert outside == []           # self-contained: nothing fetched from anywhere else


def test_dashboard_data_and_fastmesh_top_once(loaded):
    m = loaded

    def data() -> dict:
        return json.loads(m.get("/dashboard/data", admin=True)[2])

    # a route's stats exist from its first request in a worker
    assert poll(lambda: {"web/local", "web/all/1"} <= set(data()["routes"]))
    d = data()
    assert set(d["listeners"]) == {"web"} and "web/local" in d["routes"]
    assert d["clusters"]["origin"]["hosts"][0]["health_flags"] == []
    assert len(d["bounds"]) + 1 == len(d["listeners"]["web"]["buckets"])
    assert sum(d["listeners"]["web"]["buckets"]) == d["listeners"]["web"]["count"]
    assert [w["ready"] for w in d["workers"]] == [True, True]
    out = subprocess.run([sys.executable, "-m", "fastmesh", "top", "--once", "--interval", "0.5",
                          "--admin", f"127.0.0.1:{m.admin}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "LIVE" in lines[0] and "workers 2/2 ready" in lines[0]
    table = {tuple(ln.split()[:2]): ln.split() for ln in lines if ln.startswith(
        ("listener ", "route ", "cluster "))}
    assert set(table) >= {("listener", "web"), ("route", "web/local"), ("cluster", "origin")}
    assert float(table[("listener", "web")][2]) > 0          # req/s under load
    assert float(table[("cluster", "origin")][3]) > 0        # the origin fails 10 %
    assert table[("listener", "web")][4] != "-"              # a p50
    out = subprocess.run([sys.executable, "-m", "fastmesh", "stats", "--filter",
                          "^cluster.origin.upstream_rq_total$",
                          "--admin", f"127.0.0.1:{m.admin}"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("cluster.origin.upstream_rq_total: ")
    bad = subprocess.run([sys.executable, "-m", "fastmesh", "top", "--once",
                          "--admin", "127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "cannot read" in bad.stderr
