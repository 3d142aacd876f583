"""Presenting results: the terminal tables, the JSON file, the HTML report.

The HTML report is one self-contained file (inline CSS and SVG drawn here,
no scripts, no external assets, no plotting library).
"""
from __future__ import annotations

import html
import json
import math

# (key, heading, unit, formatter, lower_is_better)
COLUMNS = [
    ("requests_per_sec", "req/s", "", lambda v: f"{v:,.0f}", False),
    ("latency_p50_ms", "p50", "ms", None, True),
    ("latency_p99_ms", "p99", "ms", None, True),
    ("latency_p999_ms", "p99.9", "ms", None, True),
    ("cpu_us_per_request", "CPU/req", "µs", lambda v: f"{v:.1f}", True),
    ("idle_rss_mib", "RSS idle", "MiB", lambda v: f"{v:.1f}", True),
    ("peak_rss_mib", "RSS peak", "MiB", lambda v: f"{v:.1f}", True),
    ("startup_ms", "startup", "ms", lambda v: f"{v:.0f}", True),
]

COLORS = {"direct": "#9aa0a6", "fastmesh": "#e8710a", "fastmesh-baseline": "#f5b97f",
          "envoy": "#7b3fb5", "haproxy": "#1a73e8", "nginx": "#188038"}


def _fmt_ms(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_value(key: str, v) -> str:
    if v is None:
        return "-"
    for k, _h, _u, f, _l in COLUMNS:
        if k == key:
            return (f or _fmt_ms)(v)
    return str(v)


def _ratio(r) -> str:
    if r is None:
        return ""
    return f"×{r:.3f}" if r < 0.1 else f"×{r:.1f}" if r >= 10 else f"×{r:.2f}"


def comparison_lines(sc: dict) -> list[str]:
    """A scenario's in-run comparisons besides the ratios to the reference:
    fastmesh / fastmesh-baseline, and a filter-cost scenario's CPU/req minus
    that of the scenario it adds a filter to."""
    lines = []
    b = sc.get("baseline")
    if b:
        r = b["ratios"]
        cpu = r.get("cpu_us_per_request")
        line = f"{b['new']} / {b['baseline']}: CPU/req {_ratio(cpu) or '-'}"
        if cpu is not None:
            line += f" ({cpu - 1:+.1%})"
        rr = b.get("cpu_round_ratios")
        if rr and rr["n"] > 1:
            line += f", per round {_ratio(rr['min'])}–{_ratio(rr['max'])}"
        line += f"; req/s {_ratio(r.get('requests_per_sec')) or '-'}"
        lines.append(line)
    fc = sc.get("filter_cost")
    if fc:
        lines.append(f"filter cost ({fc['proxy']}): CPU/req here − CPU/req in {fc['over']} = "
                     f"{fc['cpu_us_per_request']:+.2f} µs per request")
    return lines


# ------------------------------------------------------------------ text

def text_tables(data: dict) -> str:
    out = []
    ref = data["settings"]["reference"]
    st = data["settings"]
    out.append(f"fastmesh bench: {st['rounds']} round(s) × {st['duration_s']:g} s per target, "
               f"medians over rounds; ×N = ratio to {ref} (same figure); "
               f"range = (max-min)/median of req/s over rounds.")
    for sname, sc in data["scenarios"].items():
        out.append("")
        out.append(f"[{sname}] {sc['title']}")
        head = ["proxy"] + [f"{h} ({u})" if u else h for _k, h, u, _f, _l in COLUMNS]
        head[2:2] = ["range"]
        head += ["errors", "rep"]
        rows = [head]
        for name, row in sc["results"].items():
            ratios = row.get("ratios") or {}
            cells = [name]
            for key, *_ in COLUMNS:
                v = row.get(key)
                cell = fmt_value(key, v)
                if v is not None and name != ref and ratios.get(key) is not None:
                    cell += " " + _ratio(ratios[key])
                cells.append(cell)
            sp = (row.get("spread") or {}).get("requests_per_sec")
            cells[2:2] = [f"{sp['rel']:.1%}" if sp and sp["n"] > 1 else "-"]
            cells += [str(row["errors"]), str(row["repeated_runs"])]
            rows.append(cells)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        for i, r in enumerate(rows):
            out.append("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j])
                                 for j, c in enumerate(r)).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        for line in comparison_lines(sc):
            out.append(f"  {line}")
        for name, why in sc.get("skipped", {}).items():
            out.append(f"  {name}: skipped ({why})")
        kept = sum(r["disturbed_runs_kept"] for r in sc["results"].values())
        if sc["repeated_runs"] or kept:
            out.append(f"  {sc['repeated_runs']} run(s) repeated as disturbed"
                       + (f"; {kept} still disturbed after the repeats (kept, flagged in the JSON)"
                          if kept else ""))
    out.append("")
    out.append(f"repeated runs (disturbed by other load): {data['repeated_runs']}")
    for n in data.get("notes", []):
        out.append(f"note: {n}")
    m = data["machine"]
    out.append(f"machine: {m['cpu_model']}, {m['cores']} cores, Linux {m['kernel']}, "
               f"Python {m['python']}")
    out.append("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v))
    return "\n".join(out)


def write_json(data: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


# ------------------------------------------------------------------ svg

def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def _label_width(rows: list[dict]) -> int:
    """Room left of the plot for the row names (about 7 px a character)."""
    return max(80, 16 + 7 * max(len(r["name"]) for r in rows))


def svg_hbars(title: str, rows: list[dict], unit: str, fmt, note: str = "") -> str:
    """Horizontal bars (median) with a min-max whisker; rows: name, value, lo, hi, label."""
    rows = [r for r in rows if r["value"] is not None]
    if not rows:
        return ""
    W, left, right, bar_h, gap, top = 460, _label_width(rows), 110, 20, 10, 34
    H = top + len(rows) * (bar_h + gap) + 26
    vmax = _nice_max(max(max(r["value"], r.get("hi") or 0) for r in rows))
    scale = (W - left - right) / vmax
    p = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
         f'height="{H}" role="img" aria-label="{_esc(title)}">',
         f'<text x="0" y="16" class="ct">{_esc(title)}</text>']
    if note:
        p.append(f'<text x="{W}" y="16" class="cn" text-anchor="end">{_esc(note)}</text>')
    for i in range(5):
        x = left + (W - left - right) * i / 4
        p.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{H - 22}" class="grid"/>')
        p.append(f'<text x="{x:.1f}" y="{H - 8}" class="ax" text-anchor="middle">'
                 f'{_esc(fmt(vmax * i / 4))}</text>')
    for i, r in enumerate(rows):
        y = top + i * (bar_h + gap)
        w = r["value"] * scale
        color = COLORS.get(r["name"], "#5f6368")
        p.append(f'<text x="{left - 8}" y="{y + bar_h * 0.72:.1f}" class="lb" '
                 f'text-anchor="end">{_esc(r["name"])}</text>')
        p.append(f'<rect x="{left}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" rx="3" '
                 f'fill="{color}"><title>{_esc(r["name"])}: {_esc(fmt(r["value"]))} {unit}'
                 f'</title></rect>')
        if r.get("lo") is not None and r.get("hi") is not None and r["hi"] > r["lo"]:
            x1, x2, ym = left + r["lo"] * scale, left + r["hi"] * scale, y + bar_h / 2
            p.append(f'<path d="M{x1:.1f} {ym - 5}V{ym + 5}M{x1:.1f} {ym}H{x2:.1f}'
                     f'M{x2:.1f} {ym - 5}V{ym + 5}" class="wh"/>')
        label = r.get("label") or f"{fmt(r['value'])} {unit}".strip()
        xl = left + max(w, (r.get("hi") or 0) * scale) + 6
        p.append(f'<text x="{xl:.1f}" y="{y + bar_h * 0.72:.1f}" class="val">{_esc(label)}</text>')
    p.append("</svg>")
    return "".join(p)


def svg_latency(title: str, rows: list[dict]) -> str:
    """Per target a line from p50 to p99.9 on a log axis, a dot per percentile."""
    rows = [r for r in rows if r.get("p50")]
    if not rows:
        return ""
    W, left, right, row_h, top = 460, _label_width(rows), 20, 30, 50
    H = top + len(rows) * row_h + 26
    vals = [v for r in rows for v in (r["p50"], r.get("p99"), r.get("p99.9")) if v]
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    if hi <= lo:
        hi = lo * 10
    span = math.log10(hi) - math.log10(lo)

    def X(v):
        return left + (W - left - right) * (math.log10(v) - math.log10(lo)) / span

    marks = [("p50", "#202124", 5), ("p99", "#202124", 5), ("p99.9", "#202124", 5)]
    p = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" '
         f'height="{H}" role="img" aria-label="{_esc(title)}">',
         f'<text x="0" y="16" class="ct">{_esc(title)}</text>',
         f'<text x="{W}" y="16" class="cn" text-anchor="end">log scale, ms</text>']
    # legend: filled = p50, ring = p99, square = p99.9
    p.append(f'<circle cx="{left + 4}" cy="32" r="4" class="d50"/>'
             f'<text x="{left + 12}" y="36" class="ax">p50</text>'
             f'<circle cx="{left + 54}" cy="32" r="4" class="d99"/>'
             f'<text x="{left + 62}" y="36" class="ax">p99</text>'
             f'<rect x="{left + 100}" y="28" width="8" height="8" class="d999"/>'
             f'<text x="{left + 112}" y="36" class="ax">p99.9</text>')
    d = lo
    while d <= hi * 1.0001:
        for m in (1, 2, 5):
            v = d * m
            if v > hi * 1.0001:
                break
            x = X(v)
            p.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{H - 22}" '
                     f'class="{"grid" if m == 1 else "grid2"}"/>')
            if m == 1 or span <= 2:
                p.append(f'<text x="{x:.1f}" y="{H - 8}" class="ax" text-anchor="middle">'
                         f'{v:g}</text>')
        d *= 10
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        color = COLORS.get(r["name"], "#5f6368")
        p.append(f'<text x="{left - 8}" y="{y + 4:.1f}" class="lb" text-anchor="end">'
                 f'{_esc(r["name"])}</text>')
        pts = [(k, r.get(k)) for k, *_ in marks if r.get(k)]
        p.append(f'<line x1="{X(pts[0][1]):.1f}" y1="{y}" x2="{X(pts[-1][1]):.1f}" y2="{y}" '
                 f'stroke="{color}" stroke-width="4" stroke-linecap="round" opacity="0.5"/>')
        for k, v in pts:
            tip = f"<title>{_esc(r['name'])} {k}: {_fmt_ms(v)} ms</title>"
            x = X(v)
            if k == "p50":
                p.append(f'<circle cx="{x:.1f}" cy="{y}" r="5" fill="{color}">{tip}</circle>')
            elif k == "p99":
                p.append(f'<circle cx="{x:.1f}" cy="{y}" r="5" fill="#fff" stroke="{color}" '
                         f'stroke-width="2.5">{tip}</circle>')
            else:
                p.append(f'<rect x="{x - 4.5:.1f}" y="{y - 4.5}" width="9" height="9" '
                         f'fill="{color}">{tip}</rect>')
    p.append("</svg>")
    return "".join(p)


# ------------------------------------------------------------------ html

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#202124;
 margin:0;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:28px 24px 60px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:20px;margin:36px 0 2px}
.sub{color:#5f6368;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:18px 0}
.card{background:#fff;border-radius:10px;padding:12px 16px;box-shadow:0 1px 3px #0002;
 min-width:200px;flex:1}
.card .k{font-size:12px;color:#5f6368;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:26px;font-weight:650}
.card .d{font-size:13px;color:#5f6368}
.good{color:#188038}.bad{color:#c5221f}
section{background:#fff;border-radius:12px;padding:8px 22px 20px;margin:22px 0;
 box-shadow:0 1px 3px #0002}
.charts{display:flex;flex-wrap:wrap;gap:18px 28px;margin:14px 0}
table{border-collapse:collapse;width:100%;font-size:13.5px;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;text-align:right;border-bottom:1px solid #eceff1;white-space:nowrap}
th{font-weight:600;color:#5f6368;font-size:12.5px}
td:first-child,th:first-child{text-align:left}
td .r{color:#80868b;font-size:12px;margin-left:4px}
td .r.good{color:#188038}td .r.bad{color:#c5221f}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.note{color:#5f6368;font-size:13px;margin:6px 0 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:14px}
dt{color:#5f6368} dd{margin:0}
svg .ct{font-weight:600;font-size:14px;fill:#202124}
svg .cn,svg .ax{font-size:11px;fill:#80868b}
svg .lb{font-size:12.5px;fill:#202124} svg .val{font-size:12px;fill:#3c4043}
svg .grid{stroke:#e0e3e7} svg .grid2{stroke:#f1f3f4} svg .wh{stroke:#202124;stroke-width:1.3;fill:none}
svg .d50{fill:#5f6368} svg .d99{fill:#fff;stroke:#5f6368;stroke-width:2} svg .d999{fill:#5f6368}
"""


def _ratio_span(r, lower_better: bool) -> str:
    if r is None:
        return ""
    good = (r < 0.97) if lower_better else (r > 1.03)
    bad = (r > 1.03) if lower_better else (r < 0.97)
    cls = " good" if good else " bad" if bad else ""
    return f'<span class="r{cls}">{_ratio(r)}</span>'


def _html_table(sc: dict, ref: str) -> str:
    h = ['<table><tr><th>proxy</th>']
    for _k, head, unit, _f, _l in COLUMNS:
        h.append(f"<th>{_esc(head)}{' (' + _esc(unit) + ')' if unit else ''}</th>")
    h.append("<th>req/s range</th><th>errors</th><th>repeated</th></tr>")
    for name, row in sc["results"].items():
        ratios = row.get("ratios") or {}
        h.append(f'<tr><td><span class="sw" style="background:{COLORS.get(name, "#5f6368")}">'
                 f'</span>{_esc(name)}</td>')
        for key, _h, _u, _f, lower in COLUMNS:
            v = row.get(key)
            cell = _esc(fmt_value(key, v))
            if v is not None and name != ref:
                cell += _ratio_span(ratios.get(key), lower)
            h.append(f"<td>{cell}</td>")
        sp = row["spread"].get("requests_per_sec")
        rng = (f"{sp['min']:,.0f}–{sp['max']:,.0f}" if sp and sp["n"] > 1 else "-")
        h.append(f"<td>{rng}</td><td>{row['errors']}</td><td>{row['repeated_runs']}</td></tr>")
    h.append("</table>")
    return "".join(h)


def html_report(data: dict) -> str:
    ref = data["settings"]["reference"]
    st = data["settings"]
    m = data["machine"]
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8>"
             f"<meta name=viewport content='width=device-width,initial-scale=1'>"
             f"<title>fastmesh bench {_esc(data['started'])}</title><style>{CSS}</style></head>"
             f"<body><main><h1>fastmesh bench</h1>"
             f"<p class=sub>{_esc(data['started'])} · {_esc(m['cpu_model'])}, {m['cores']} cores · "
             f"{st['rounds']} round(s) × {st['duration_s']:g} s per target, medians; "
             f"ratios are to {_esc(ref)}</p>"]
    # headline cards: fastmesh against the reference, per scenario
    cards = []
    for sname, sc in data["scenarios"].items():
        fm = sc["results"].get("fastmesh")
        if not fm or not fm.get("ratios"):
            continue
        rr = fm["ratios"].get("requests_per_sec")
        rc = fm["ratios"].get("cpu_us_per_request")
        if rr is None:
            continue
        cls = "good" if rr > 1.03 else "bad" if rr < 0.97 else ""
        cards.append(f'<div class=card><div class=k>{_esc(sname)} · throughput vs {_esc(ref)}'
                     f'</div><div class="v {cls}">×{rr:.2f}</div><div class=d>'
                     f'{fm["requests_per_sec"]:,.0f} req/s'
                     + (f' · CPU/req ×{rc:.2f}' if rc else "") + "</div></div>")
    if cards:
        parts.append("<div class=cards>" + "".join(cards) + "</div>")
    for sname, sc in data["scenarios"].items():
        res = sc["results"]
        parts.append(f"<section><h2>{_esc(sname)}</h2><p class=sub>{_esc(sc['title'])}</p>")
        bars = []
        for name, row in res.items():
            sp = row["spread"].get("requests_per_sec") or {}
            bars.append({"name": name, "value": row["requests_per_sec"], "lo": sp.get("min"),
                         "hi": sp.get("max")})
        charts = [svg_hbars("Throughput", bars, "req/s", lambda v: f"{v:,.0f}",
                            "median, whisker = min–max")]
        charts.append(svg_latency("Latency percentiles", [
            {"name": n, "p50": r["latency_p50_ms"], "p99": r["latency_p99_ms"],
             "p99.9": r["latency_p999_ms"]} for n, r in res.items()]))
        cpu = []
        for name, row in res.items():
            if row.get("cpu_us_per_request") is None:
                continue
            sp = row["spread"].get("cpu_us_per_request") or {}
            cpu.append({"name": name, "value": row["cpu_us_per_request"], "lo": sp.get("min"),
                        "hi": sp.get("max")})
        charts.append(svg_hbars("Proxy CPU per request", cpu, "µs", lambda v: f"{v:.1f}",
                                "lower is better"))
        mem = [{"name": n, "value": r["peak_rss_mib"],
                "label": f"{r['peak_rss_mib']:.1f} MiB (idle {r['idle_rss_mib'] or 0:.1f})"}
               for n, r in res.items() if r.get("peak_rss_mib")]
        charts.append(svg_hbars("Peak RSS", mem, "MiB", lambda v: f"{v:.0f}", "all processes"))
        parts.append("<div class=charts>" + "".join(c for c in charts if c) + "</div>")
        parts.append(_html_table(sc, ref))
        for line in comparison_lines(sc):
            parts.append(f"<p class=note>{_esc(line)}</p>")
        for name, why in sc.get("skipped", {}).items():
            parts.append(f"<p class=note>{_esc(name)} skipped: {_esc(why)}</p>")
        if sc["repeated_runs"]:
            parts.append(f"<p class=note>{sc['repeated_runs']} run(s) were repeated because other "
                         f"load disturbed them.</p>")
        parts.append("</section>")
    parts.append("<section><h2>Machine and method</h2><dl>")
    rows = [("CPU", f"{m['cpu_model']} · {m['cores']} cores (usable: {m['usable_cpus']})"),
            ("memory", f"{m['memory_mib']} MiB" if m.get("memory_mib") else "?"),
            ("kernel", m["kernel"]), ("OS", m["os"]), ("Python", m["python"])]
    rows += [(k, v or "not installed") for k, v in m["versions"].items()]
    pin = st.get("pinning")
    rows.append(("pinning", f"proxies on CPU {pin['proxy_cpu']}, load generator and origin on "
                            f"CPU {pin['load_cpu']}" if pin else "none"))
    rows.append(("rounds", f"{st['rounds']} × {st['duration_s']:g} s, warm-up {st['warmup_s']:g} s,"
                           f" interleaved"))
    rows.append(("disturbed runs", f"{data['repeated_runs']} repeated (threshold: other load or "
                                   f"steal above {st['disturb_threshold_cores']:.0%} of a core)"))
    rows.append(("elapsed", f"{data['elapsed_s']:.0f} s"))
    for k, v in rows:
        parts.append(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>")
    parts.append("</dl>")
    for n in data.get("notes", []):
        parts.append(f"<p class=note>{_esc(n)}</p>")
    parts.append("<p class=note>How this is measured: docs/bench.md. Machine-readable data: "
                 "<code>fastmesh bench --json FILE</code>.</p></section></main></body></html>\n")
    return "".join(parts)


def write_html(data: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(html_report(data))
