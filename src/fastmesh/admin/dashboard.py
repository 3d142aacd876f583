"""Admin ``/dashboard``: a live page of the sidecar's traffic and health.

``data(server)`` builds the JSON the page polls every second
(``/dashboard/data``): per listener, route and cluster the request and error
counters and the latency histogram buckets since start (cumulative, summed
over the workers), each cluster's endpoints with their health flags and
ejections, the certificates' expiry, the config version and the workers. The
page (``PAGE``: one HTML file, inline CSS and JS, no CDN) turns successive
answers into rates (requests/s, error %) and windowed latency percentiles
(from the bucket differences) and draws them on canvases. ``fastmesh top``
reads the same JSON (cli_top.py).
"""
from __future__ import annotations

import time
from typing import Any


# What the page and `fastmesh top` plot, per kind of block: the counters of
# requests, of 4xx and 5xx, the gauge of requests in flight, the histogram.
_KINDS = {
    "listener": ("downstream_rq_total", "downstream_rq_4xx", "downstream_rq_5xx",
                 "downstream_rq_active", "downstream_rq_time"),
    "route": ("downstream_rq_total", "downstream_rq_4xx", "downstream_rq_5xx",
              None, "downstream_rq_time"),
    "cluster": ("upstream_rq_total", "upstream_rq_4xx", "upstream_rq_5xx",
                "upstream_rq_active", "upstream_rq_time"),
}


def _key(prefix: str, labels: list[list[str]]) -> str:
    # listener "web", route "web/api", cluster "origin": the label values.
    return "/".join(str(v) for _k, v in labels) if prefix == "route" else \
        str(labels[0][1]) if labels else ""


def series(merged: dict[str, Any]) -> dict[str, Any]:
    """The plotted numbers of a merged stats snapshot: ``{"bounds": [...],
    "listeners"|"routes"|"clusters": {name: {"rq", "rq_4xx", "rq_5xx",
    "active", "buckets", "count", "sum"}}}`` (cumulative counters)."""
    out: dict[str, Any] = {"bounds": [], "listeners": {}, "routes": {}, "clusters": {}}
    for blk in merged.get("blocks", ()):
        kind = _KINDS.get(blk["prefix"])
        if kind is None or not blk["labels"]:
            continue
        v = blk["values"]
        row = out[blk["prefix"] + "s"].setdefault(_key(blk["prefix"], blk["labels"]), {})
        row.update({"rq": v.get(kind[0], 0), "rq_4xx": v.get(kind[1], 0),
                    "rq_5xx": v.get(kind[2], 0),
                    "active": v.get(kind[3], 0) if kind[3] else None})
        if blk["prefix"] == "cluster":
            row["cx_active"] = v.get("upstream_cx_active", 0)
            row["ejections_active"] = v.get("outlier_detection.ejections_active", 0)
            row["ejections_total"] = v.get("outlier_detection.ejections_enforced_total", 0)
    for h in merged.get("histograms", ()):
        kind = _KINDS.get(h["prefix"])
        if kind is None or h["name"] != kind[4] or not h["labels"]:
            continue
        out["bounds"] = h["bounds"]
        row = out[h["prefix"] + "s"].setdefault(_key(h["prefix"], h["labels"]), {})
        row.update({"buckets": h["buckets"], "count": h["count"], "sum": h["sum"]})
    for rows in (out["listeners"], out["routes"], out["clusters"]):
        for row in rows.values():
            row.setdefault("rq", 0)
            row.setdefault("rq_4xx", 0)
            row.setdefault("rq_5xx", 0)
            row.setdefault("active", None)
            row.setdefault("buckets", [])
            row.setdefault("count", 0)
            row.setdefault("sum", 0.0)
    return out


def _certs(body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for entry in body.get("certificates", ()):
        owner = next((f"{k} {v}" for k, v in entry.items() if k in ("listener", "cluster")), "")
        for kind in ("cert_chain", "ca_cert"):
            for c in entry.get(kind, ()):
                sans = [next(iter(s.values())) for s in c.get("subject_alt_names", ())]
                out.append({"owner": owner, "kind": "ca" if kind == "ca_cert" else "cert",
                            "path": c.get("path", ""), "sans": sans,
                            "expiration_time": c.get("expiration_time", ""),
                            "days_until_expiration": int(c.get("days_until_expiration", 0))})
    return out


async def data(server: Any) -> dict[str, Any]:
    """The dashboard's JSON from an AdminServer's providers."""
    merged = await server._stats()
    out = series(merged)
    process = next((b["values"] for b in merged.get("blocks", ())
                    if b["prefix"] == "" and not b["labels"]), {})
    out["time"] = time.time()
    out["state"] = server.state()
    out["config_version"] = process.get("config_version")
    out["config_reload_error"] = merged.get("info", {}).get("config_reload_error")
    out["workers"] = await server.ops.workers() if server.ops.workers is not None else []
    versions = merged.get("info", {}).get("worker_config_versions")
    if versions:
        for w, v in zip(out["workers"], versions):
            w["config_version"] = v
    hosts: dict[str, list[dict[str, Any]]] = {}
    if server._clusters is not None:
        for c in await server._clusters():
            hosts[c["name"]] = [{"address": f"{h['host']}:{h['port']}",
                                 "health_flags": h["health_flags"], "weight": h["weight"],
                                 "rq_total": h["rq_total"], "rq_active": h["rq_active"],
                                 "cx_active": h["cx_active"]} for h in c["hosts"]]
    for name, row in out["clusters"].items():
        row["hosts"] = hosts.get(name, [])
    out["certs"] = _certs(server._certs()) if server._certs is not None else []
    out["uptime"] = int(time.time() - server.started)
    return out


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastmesh dashboard</title>
<style>
:root{--bg:#0f1419;--panel:#182029;--line:#2a3642;--fg:#d8e0e8;--dim:#8796a5;--ok:#4cc38a;--bad:#ef5b5b;--warn:#f0b429}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif}
header{display:flex;gap:24px;align-items:baseline;padding:12px 20px;border-bottom:1px solid var(--line);flex-wrap:wrap}
header h1{font-size:18px;margin:0}header .kv b{color:var(--fg)}header .kv{color:var(--dim)}
.state-LIVE{color:var(--ok)}.state-DRAINING{color:var(--bad)}
main{padding:12px 20px}section{margin-bottom:18px}h2{font-size:14px;margin:6px 0;color:var(--dim);text-transform:uppercase;letter-spacing:.06em}
.charts{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}
.chart{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:8px}
.chart h3{font-size:12px;margin:0 0 4px;color:var(--dim);font-weight:600}
canvas{width:100%;height:150px;display:block}
.legend{display:flex;flex-wrap:wrap;gap:10px;margin-top:4px;font-size:11px;color:var(--dim)}
.legend i{display:inline-block;width:10px;height:3px;margin-right:4px;vertical-align:middle}
table{border-collapse:collapse;width:100%;background:var(--panel);border:1px solid var(--line);border-radius:6px}
th,td{padding:4px 8px;text-align:left;border-bottom:1px solid var(--line);font-variant-numeric:tabular-nums}
th{color:var(--dim);font-weight:600}td.num{text-align:right}
.tables{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}
#err{color:var(--bad)}
@media (max-width:900px){.charts,.tables{grid-template-columns:1fr}}
</style></head>
<body>
<header><h1>fastmesh</h1>
<span class="kv">state <b id="state">-</b></span>
<span class="kv">config version <b id="version">-</b></span>
<span class="kv">workers <b id="nworkers">-</b></span>
<span class="kv">uptime <b id="uptime">-</b></span>
<span class="kv">updated <b id="updated">-</b></span>
<span id="err"></span></header>
<main>
<section><h2>Listeners</h2><div class="charts" id="c-listeners"></div></section>
<section><h2>Routes</h2><div class="charts" id="c-routes"></div></section>
<section><h2>Clusters</h2><div class="charts" id="c-clusters"></div></section>
<section><h2>Now</h2><table id="t-now"></table></section>
<section class="tables">
<div><h2>Endpoints</h2><table id="t-hosts"></table></div>
<div><h2>Workers</h2><table id="t-workers"></table><h2 style="margin-top:14px">Certificates</h2><table id="t-certs"></table></div>
</section>
</main>
<script>
"use strict";
const HISTORY = 120, WINDOW = 5;            // points kept; seconds per latency window
const COLORS = ["#4e9cf5","#4cc38a","#f0b429","#ef5b5b","#b57cf0","#36c5d0","#f57ab8","#a0a0a0"];
const kinds = ["listeners","routes","clusters"];
const hist = {};            // kind -> name -> [{t, rps, err, p50, p99}]
let samples = [];           // recent raw answers (for windows)
function q(bounds, buckets, p){             // quantile of bucket counts (ms), as Prometheus
  let total = 0; for (const n of buckets) total += n; if (!total) return null;
  const rank = p*total; let cum = 0;
  for (let i=0;i<buckets.length;i++){ const n=buckets[i]; if(!n) continue;
    if (cum+n >= rank){ if (i>=bounds.length) return bounds[bounds.length-1]*1000;
      const lo = i? bounds[i-1]:0, hi = bounds[i]; return (lo+(hi-lo)*(rank-cum)/n)*1000; }
    cum += n; }
  return bounds[bounds.length-1]*1000;
}
function ingest(d){
  samples.push(d); while (samples.length > WINDOW+1) samples.shift();
  const prev = samples.length>1 ? samples[samples.length-2] : null;
  const old = samples[0];
  for (const k of kinds){
    hist[k] = hist[k] || {};
    for (const [name,row] of Object.entries(d[k])){
      const h = hist[k][name] = hist[k][name] || [];
      let rps=null, err=null, p50=null, p99=null;   // (no rate before a second sample)
      const p = prev && prev[k][name];
      if (p){ const dt = Math.max(d.time-prev.time, 1e-3);
        const drq = row.rq-p.rq; rps = Math.max(drq,0)/dt;
        err = drq>0 ? 100*Math.max(row.rq_5xx-p.rq_5xx,0)/drq : 0; }
      const o = old && old !== d && old[k][name];
      if (o && row.buckets.length){ const db = row.buckets.map((n,i)=>n-((o.buckets||[])[i]||0));
        p50 = q(d.bounds, db, 0.5); p99 = q(d.bounds, db, 0.99); }
      h.push({t:d.time, rps, err, p50, p99}); while (h.length > HISTORY) h.shift();
    }
  }
}
function chartBox(kind, metric, title){
  const id = `cv-${kind}-${metric}`; let box = document.getElementById(id+"-box");
  if (!box){ box = document.createElement("div"); box.className="chart"; box.id=id+"-box";
    box.innerHTML = `<h3>${title}</h3><canvas id="${id}" data-metric="${metric}"></canvas><div class="legend"></div>`;
    document.getElementById("c-"+kind).appendChild(box); }
  return box;
}
function draw(kind, metric, title, unit){
  const box = chartBox(kind, metric, title), cv = box.querySelector("canvas");
  const dpr = window.devicePixelRatio||1, W = cv.clientWidth, H = cv.clientHeight;
  if (cv.width !== W*dpr){ cv.width = W*dpr; cv.height = H*dpr; }
  const g = cv.getContext("2d"); g.setTransform(dpr,0,0,dpr,0,0); g.clearRect(0,0,W,H);
  const names = Object.keys(hist[kind]||{}).sort();
  let max = 0;
  const lines = names.map(n => hist[kind][n].map(pt => metric==="lat" ? pt.p99 : pt[metric]));
  const lines50 = metric==="lat" ? names.map(n => hist[kind][n].map(pt => pt.p50)) : [];
  for (const l of lines.concat(lines50)) for (const v of l) if (v!=null && v>max) max=v;
  if (metric==="err") max = Math.max(max, 5); else max = max>0 ? max*1.15 : 1;
  const L=44, B=16, Wp=W-L-6, Hp=H-B-6;
  g.strokeStyle="#2a3642"; g.fillStyle="#8796a5"; g.font="10px system-ui"; g.lineWidth=1;
  for (let i=0;i<=3;i++){ const y=6+Hp*i/3; g.beginPath(); g.moveTo(L,y); g.lineTo(L+Wp,y); g.stroke();
    const v=max*(1-i/3); g.fillText(v>=100?v.toFixed(0):v.toFixed(v>=10?1:2), 2, y+3); }
  g.fillText(unit, 2, H-3); g.fillText(`last ${HISTORY}s`, L+Wp-48, H-3);
  const plot = (l, color, dash) => { g.strokeStyle=color; g.lineWidth=1.6; g.setLineDash(dash);
    g.beginPath(); let started=false;
    l.forEach((v,i)=>{ if (v==null){ started=false; return; }
      const x = L+Wp*(i+HISTORY-l.length)/(HISTORY-1), y = 6+Hp*(1-v/max);
      if (!started){ g.moveTo(x,y); started=true; } else g.lineTo(x,y); });
    g.stroke(); g.setLineDash([]); };
  lines.forEach((l,i)=>plot(l, COLORS[i%COLORS.length], []));
  lines50.forEach((l,i)=>plot(l, COLORS[i%COLORS.length], [3,3]));
  box.querySelector(".legend").innerHTML = names.map((n,i)=>`<span><i style="background:${COLORS[i%COLORS.length]}"></i>${esc(n)}</span>`).join("")
    + (metric==="lat" ? "<span>solid p99, dashed p50</span>" : "");
}
function esc(s){ return String(s).replace(/[&<>"]/g, c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c])); }
function fmt(v, d){ return v==null ? "-" : v.toFixed(d); }
function tables(d){
  let rows = "<tr><th>kind</th><th>name</th><th>req/s</th><th>errors %</th><th>p50 ms</th><th>p99 ms</th><th>in flight</th><th>requests</th></tr>";
  for (const k of kinds) for (const n of Object.keys(d[k]).sort()){
    const h = hist[k][n], pt = h[h.length-1], row = d[k][n];
    rows += `<tr><td>${k.slice(0,-1)}</td><td>${esc(n)}</td><td class="num" data-k="rps">${fmt(pt.rps,1)}</td>`+
      `<td class="num ${pt.err>1?'bad':''}">${fmt(pt.err,1)}</td><td class="num">${fmt(pt.p50,2)}</td><td class="num">${fmt(pt.p99,2)}</td>`+
      `<td class="num">${row.active==null?"-":row.active}</td><td class="num" data-k="rq">${row.rq}</td></tr>`; }
  document.getElementById("t-now").innerHTML = rows;
  rows = "<tr><th>cluster</th><th>endpoint</th><th>health</th><th>requests</th><th>in flight</th><th>connections</th></tr>";
  for (const [c,row] of Object.entries(d.clusters)){
    for (const h of row.hosts||[]){ const ok = !h.health_flags.length;
      rows += `<tr><td>${esc(c)}</td><td>${esc(h.address)}</td><td class="${ok?'ok':'bad'}">${ok?"healthy":esc(h.health_flags.join(", "))}</td>`+
        `<td class="num">${h.rq_total}</td><td class="num">${h.rq_active}</td><td class="num">${h.cx_active}</td></tr>`; }
    rows += `<tr><td>${esc(c)}</td><td colspan="2" class="${row.ejections_active?'bad':''}">ejected now: ${row.ejections_active||0}, ejections so far: ${row.ejections_total||0}</td><td colspan="3"></td></tr>`; }
  document.getElementById("t-hosts").innerHTML = rows;
  rows = "<tr><th>worker</th><th>pid</th><th>status</th><th>restarts</th><th>config</th></tr>";
  for (const w of d.workers) rows += `<tr><td>${w.id}</td><td>${w.pid??"-"}</td><td class="${w.ready?'ok':'bad'}">${w.ready?"ready":"not ready"}</td><td class="num">${w.restarts}</td><td class="num">${w.config_version??"-"}</td></tr>`;
  document.getElementById("t-workers").innerHTML = rows;
  rows = "<tr><th>owner</th><th>certificate</th><th>expires</th><th>days left</th></tr>";
  if (!d.certs.length) rows += "<tr><td colspan=4>no TLS certificates in use</td></tr>";
  for (const c of d.certs){ const cls = c.days_until_expiration<7?"bad":c.days_until_expiration<30?"warn":"ok";
    rows += `<tr><td>${esc(c.owner)}</td><td>${esc(c.kind)} ${esc(c.sans.join(", ")||c.path)}</td><td>${esc(c.expiration_time)}</td><td class="num ${cls}">${c.days_until_expiration}</td></tr>`; }
  document.getElementById("t-certs").innerHTML = rows;
}
function render(d){
  const st = document.getElementById("state"); st.textContent = d.state; st.className = "state-"+d.state;
  document.getElementById("version").textContent = d.config_version ?? "-";
  document.getElementById("nworkers").textContent = `${d.workers.filter(w=>w.ready).length}/${d.workers.length} ready`;
  document.getElementById("uptime").textContent = d.uptime+"s";
  document.getElementById("updated").textContent = new Date(d.time*1000).toLocaleTimeString();
  document.getElementById("err").textContent = d.config_reload_error ? "last reload failed: "+d.config_reload_error : "";
  for (const k of kinds){ draw(k,"rps","requests / s","req/s"); draw(k,"err","5xx errors %","%"); draw(k,"lat","latency (last "+WINDOW+" s)","ms"); }
  tables(d);
}
async function poll(){
  try { const r = await fetch("/dashboard/data", {cache:"no-store"});
    if (!r.ok) throw new Error("HTTP "+r.status);
    const d = await r.json(); ingest(d); render(d);
  } catch(e){ document.getElementById("err").textContent = "cannot reach the admin: "+e.message; }
}
poll(); setInterval(poll, 1000);
</script></body></html>
""".encode()
