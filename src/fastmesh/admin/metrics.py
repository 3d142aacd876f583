"""Merge and render the data plane's stats registry snapshots.

Each worker's ``StatsRegistry.snapshot()`` (``fastmesh._stats``) crosses the
worker's JSON channel as plain data; this module sums the workers' snapshots
(``merge``), adds the process's own values (``process_block``) and renders the
result for the admin endpoints: the Prometheus text exposition format 0.0.4
(``render_prometheus``), Envoy's ``/stats`` plain text (``render_text``) and
the JSON summary that ``Proxy.stats()`` returns (``summary``). It works on
that data only and imports nothing from the data side. The snapshot format
and the naming rules are in docs/stats.md.
"""
from __future__ import annotations

import math
import re
from typing import Any

# The quantiles Envoy's /stats prints for a histogram, in its order.
ENVOY_QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)

_BAD_NAME_CHAR = re.compile(r"[^A-Za-z0-9_:]")

# upstream_rq_2xx ... : in Prometheus one family with the class as a label,
# as Envoy's tag extraction makes envoy_cluster_upstream_rq_xx.
_CODE_CLASS = re.compile(r"([a-z_]+_rq_)([1-5]xx)\Z")   # not outlier_detection.*_5xx
CODE_CLASS_LABEL = "response_code_class"


def _labels_key(labels: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in labels))


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum several workers' snapshots into one of the same format.

    Counters and gauges are summed (a gauge such as upstream_rq_active is the
    process total); histograms sum their buckets, counts and sums. A block or
    histogram is identified by its prefix (and name) and labels; a slot that
    one worker does not have counts as 0 there. Merging is associative:
    ``merge([merge(a), b]) == merge([a, b])``."""
    blocks: dict[tuple, dict[str, Any]] = {}
    hists: dict[tuple, dict[str, Any]] = {}
    for snap in snapshots:
        for blk in snap.get("blocks", ()):
            labels = _labels_key(blk["labels"])
            dst = blocks.get((blk["prefix"], labels))
            if dst is None:
                dst = blocks[(blk["prefix"], labels)] = {
                    "prefix": blk["prefix"],
                    "labels": [list(kv) for kv in labels],
                    "values": {},
                    "kinds": {},
                }
            values = dst["values"]
            for name, value in blk["values"].items():
                values[name] = values.get(name, 0) + value
            for name, kind in blk["kinds"].items():
                dst["kinds"].setdefault(name, kind)
        for h in snap.get("histograms", ()):
            labels = _labels_key(h["labels"])
            key = (h["prefix"], h["name"], labels)
            dst = hists.get(key)
            if dst is None:
                hists[key] = {
                    "prefix": h["prefix"],
                    "name": h["name"],
                    "labels": [list(kv) for kv in labels],
                    "bounds": list(h["bounds"]),
                    "buckets": list(h["buckets"]),
                    "count": h["count"],
                    "sum": h["sum"],
                }
                continue
            if list(h["bounds"]) != dst["bounds"] or len(h["buckets"]) != len(dst["buckets"]):
                raise ValueError(f"stats: histogram {h['prefix']}.{h['name']} has other bounds "
                                 "in another worker")
            dst["buckets"] = [a + b for a, b in zip(dst["buckets"], h["buckets"])]
            dst["count"] += h["count"]
            dst["sum"] += h["sum"]
    return {
        "blocks": [blocks[k] for k in sorted(blocks)],
        "histograms": [hists[k] for k in sorted(hists)],
    }


def plain_block(prefix: str, values: dict[str, int | float], gauges: Any = (),
                labels: Any = ()) -> dict[str, Any]:
    """A snapshot block made outside a registry: the process's own values
    (workers, reloads, the config version) to merge with the workers'.
    Every value is a counter unless its name is in ``gauges``."""
    return {
        "prefix": prefix,
        "labels": [list(kv) for kv in _labels_key(labels)],
        "values": dict(values),
        "kinds": {name: "gauge" if name in gauges else "counter" for name in values},
    }


# The process's own values that go up and down; the others are counters.
PROCESS_GAUGES = ("workers", "workers_ready", "config_version")


def process_block(**values: int) -> dict[str, Any]:
    """The process's own block (prefix "", no labels): `workers`,
    `workers_ready`, `worker_restarts_total`, `config_reloads_ok`,
    `config_reloads_failed`, `config_version`, whichever the runtime has."""
    return plain_block("", values, gauges=PROCESS_GAUGES)


def summary(merged: dict[str, Any]) -> dict[str, Any]:
    """The stats as one plain dict (``Proxy.stats()``, ``/stats?format=json``):

    - the unlabelled block's values (prefix ""): worker and process values;
    - each listener block's values summed over listeners under their own
      names (``downstream_rq_2xx``: the process's total), and per listener
      under ``"listeners"``: ``{name: {stat: value}}``;
    - per cluster under ``"clusters"``: ``{name: {stat: value}}``;
    - ``merged["info"]`` (plain data that is not a metric: worker pids...).

    Histograms are not in it (the text and Prometheus formats have them)."""
    out: dict[str, Any] = {}
    per: dict[str, dict[str, dict[str, Any]]] = {"listener": {}, "cluster": {}}
    for blk in merged.get("blocks", ()):
        prefix, labels = blk["prefix"], blk["labels"]
        if prefix == "" and not labels:
            out.update(blk["values"])
        elif prefix in per and len(labels) == 1 and labels[0][0] == prefix:
            dst = per[prefix].setdefault(str(labels[0][1]), {})
            for name, value in blk["values"].items():
                dst[name] = dst.get(name, 0) + value
        elif not labels:
            # a process-wide block of its own (tracing): "tracing.spans_sent"
            for name, value in blk["values"].items():
                key = f"{prefix}.{name}"
                out[key] = out.get(key, 0) + value
    for values in per["listener"].values():
        for name, value in values.items():
            out[name] = out.get(name, 0) + value
    out["listeners"] = per["listener"]
    out["clusters"] = per["cluster"]
    out.update(merged.get("info", {}))
    return out


def select(merged: dict[str, Any], filter_regex: str | None) -> dict[str, Any]:
    """Only the stats whose Envoy name (``stat_name``) the regex matches
    (``re.search``, like Envoy's ``?filter=``); an invalid one raises
    ``re.error``. No regex: ``merged`` itself."""
    if not filter_regex:
        return merged
    match = re.compile(filter_regex).search
    blocks = []
    for blk in merged.get("blocks", ()):
        values = {name: value for name, value in blk["values"].items()
                  if match(stat_name(blk["prefix"], blk["labels"], name))}
        if values:
            blocks.append({**blk, "values": values,
                           "kinds": {n: k for n, k in blk["kinds"].items() if n in values}})
    hists = [h for h in merged.get("histograms", ())
             if match(stat_name(h["prefix"], h["labels"], h["name"]))]
    return {**merged, "blocks": blocks, "histograms": hists}


# ---------------------------------------------------------------- Prometheus

# Naming modes of the Prometheus output (admin.metrics.naming, ?naming=).
NAMINGS = ("fastmesh", "envoy")

# HELP text of the families people graph most; the others say which
# fastmesh (Envoy) stat they are. Keyed by (prefix, stat).
_HELP = {
    ("listener", "downstream_rq_total"): "Requests received (HTTP/2: streams), local replies included.",
    ("listener", "downstream_rq_xx"): "Responses sent to clients, by status class.",
    ("listener", "downstream_rq_active"): "Requests in progress.",
    ("listener", "downstream_cx_total"): "Client connections accepted.",
    ("listener", "downstream_cx_active"): "Client connections open.",
    ("listener", "downstream_rq_time"): "Request duration: request head received to last response byte written.",
    ("route", "downstream_rq_total"): "Requests the route matched.",
    ("route", "downstream_rq_xx"): "Responses to requests the route matched, by status class.",
    ("route", "downstream_rq_time"): "Duration of the requests the route matched (head in to last byte out).",
    ("cluster", "upstream_rq_total"): "Requests sent to the cluster (each retry is one more).",
    ("cluster", "upstream_rq_xx"): "Upstream responses by status class.",
    ("cluster", "upstream_rq_active"): "Upstream requests in progress.",
    ("cluster", "upstream_cx_total"): "Upstream connections opened.",
    ("cluster", "upstream_cx_active"): "Upstream connections open.",
    ("cluster", "upstream_rq_time"): "Upstream request duration: attempt start to upstream response complete.",
    ("cluster", "upstream_cx_connect_time"): "Upstream connect duration (TLS handshake included).",
    ("", "config_version"): "Version of the config serving now (1, then +1 per reload).",
    ("", "workers"): "Worker processes configured.",
    ("", "workers_ready"): "Worker processes serving.",
}

# Envoy's histogram names where ours differ (Envoy's unit is in its name).
_ENVOY_HIST = {"upstream_cx_connect_time": "upstream_cx_connect_ms"}
# Listener stats Envoy keeps in its listener scope (listener.<address>.*);
# the rest are its HTTP connection manager's (http.<stat_prefix>.*).
_ENVOY_LISTENER_SCOPE = ("downstream_cx_overflow", "downstream_global_cx_overflow",
                         "downstream_cx_overload_reject", "ssl.")


def _metric_name(*parts: str) -> str:
    name = _BAD_NAME_CHAR.sub("_", "_".join(p for p in parts if p))
    return "_" + name if name[:1].isdigit() else name


def _escape_label_value(value: str) -> str:
    # Exposition format 0.0.4: in label values, backslash, double quote and
    # line feed are escaped as \\, \" and \n.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    # In HELP text only backslash and line feed are escaped.
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(labels: Any, extra: tuple[str, str] | None = None) -> str:
    pairs = [(_metric_name(str(k)), _escape_label_value(str(v))) for k, v in labels]
    if extra is not None:
        pairs.append(extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}"


def _number(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _scaled(value: float) -> str:
    # A bound or sum times 1000 (Envoy's ms): 0.5, 5, not 5.000000000000001.
    value = round(value, 9)
    return str(int(value)) if value == int(value) else repr(value)


class _Namer:
    """How one naming mode spells a stat: (family name, labels, class label)."""

    def __init__(self, naming: str, namespace: str) -> None:
        if naming not in NAMINGS:
            raise ValueError(f"naming must be one of {', '.join(NAMINGS)}")
        self.envoy = naming == "envoy"
        self.namespace = "envoy" if self.envoy else namespace

    def labels(self, labels: Any) -> list[tuple[str, str]]:
        if not self.envoy:
            return [(str(k), str(v)) for k, v in labels]
        out = []
        for k, v in labels:
            k = str(k)
            k = {"cluster": "cluster_name", "listener": "http_conn_manager_prefix"}.get(k, k)
            out.append((f"envoy_{k}", str(v)))
        return out

    def scope(self, prefix: str, name: str) -> str:
        # Envoy's scope of a stat: http.<listener>.* or listener.<listener>.*,
        # server.* for the process's own values.
        if not self.envoy:
            return prefix
        if prefix == "listener":
            return "listener" if name.startswith(_ENVOY_LISTENER_SCOPE) else "http"
        return prefix or "server"

    def block_labels(self, prefix: str, name: str, labels: Any) -> list[tuple[str, str]]:
        out = self.labels(labels)
        if self.envoy and prefix == "listener" and self.scope(prefix, name) == "listener":
            out = [("envoy_listener_address", v) if k == "envoy_http_conn_manager_prefix"
                   else (k, v) for k, v in out]
        return out

    def counter(self, prefix: str, name: str) -> str:
        fname = _metric_name(self.namespace, self.scope(prefix, name), name)
        # Prometheus' convention; Envoy's exposition keeps its own names.
        if not self.envoy and not fname.endswith("_total"):
            fname += "_total"
        return fname

    def gauge(self, prefix: str, name: str) -> str:
        return _metric_name(self.namespace, self.scope(prefix, name), name)

    def histogram(self, prefix: str, name: str) -> tuple[str, float]:
        """The family name and the factor from seconds to its unit."""
        if self.envoy:
            return _metric_name(self.namespace, self.scope(prefix, name),
                                _ENVOY_HIST.get(name, name)), 1000.0
        fname = _metric_name(self.namespace, prefix, name)
        return (fname if fname.endswith("_seconds") else fname + "_seconds"), 1.0

    def code_class(self, cls: str) -> tuple[str, str]:
        # Envoy's tag extraction keeps the digit: envoy_response_code_class="2".
        return ("envoy_response_code_class", cls[0]) if self.envoy else (CODE_CLASS_LABEL, cls)


def families(merged: dict[str, Any], namespace: str = "fastmesh",
             naming: str = "fastmesh") -> dict[str, list[Any]]:
    """The metric families of a (merged) snapshot:
    ``{name: [kind, help, [(sample name, [(label, value)...], value text)]]}``.
    Both exposition formats are written from this."""
    namer = _Namer(naming, namespace)
    fams: dict[str, list[Any]] = {}
    sources: dict[str, str] = {}

    def family(name: str, kind: str, prefix: str, stat: str) -> list[Any]:
        source = stat_name(prefix, (), stat)
        fam = fams.get(name)
        if fam is None:
            text = _HELP.get((prefix, stat), f"fastmesh stat {source} (Envoy's name).")
            fam = fams[name] = [kind, text + " Summed over workers.", []]
            sources[name] = source
        elif sources[name] != source:
            raise ValueError(f"stats: {source} and {sources[name]} are both {name} in Prometheus")
        return fam[2]

    for blk in merged.get("blocks", ()):
        prefix = blk["prefix"]
        has_class = any(k == CODE_CLASS_LABEL for k, _v in blk["labels"])
        for name, value in blk["values"].items():
            kind = blk["kinds"].get(name, "counter")
            labels = namer.block_labels(prefix, name, blk["labels"])
            m = None if has_class else _CODE_CLASS.match(name)
            if m is not None:
                name = m.group(1) + "xx"
                labels = labels + [namer.code_class(m.group(2))]
            fname = namer.counter(prefix, name) if kind == "counter" else namer.gauge(prefix, name)
            family(fname, kind, prefix, name).append((fname, labels, _number(value)))

    for h in merged.get("histograms", ()):
        if h["prefix"] == "istio":
            continue            # Istio's own families (admin/istio.py), when asked for
        fname, factor = namer.histogram(h["prefix"], h["name"])
        samples = family(fname, "histogram", h["prefix"], h["name"])
        labels = namer.labels(h["labels"])
        cum = 0
        les = [_scaled(float(b) * factor) if factor != 1.0 else _number(float(b))
               for b in h["bounds"]] + ["+Inf"]
        for le, n in zip(les, h["buckets"]):
            cum += n
            samples.append((fname + "_bucket", labels + [("le", le)], str(cum)))
        total = float(h["sum"]) * factor
        samples.append((fname + "_sum", labels, _number(total)))
        samples.append((fname + "_count", labels, _number(h["count"])))
    return fams


def _sample_line(name: str, labels: list[tuple[str, str]], value: str) -> str:
    return f"{name}{_label_text(labels)} {value}"


def render_prometheus(merged: dict[str, Any], namespace: str = "fastmesh",
                      naming: str = "fastmesh", extra: dict[str, list[Any]] | None = None) -> str:
    """The Prometheus text exposition format 0.0.4 of a (merged) snapshot.

    A slot ``name`` of a block with prefix ``p`` is the family
    ``<namespace>_<p>_<name>``, counters with the ``_total`` suffix (not
    doubled when the name already ends in it); the block's labels become the
    sample's labels. A histogram is ``<namespace>_<p>_<name>_seconds`` with
    cumulative ``_bucket{le=...}`` samples, ``_sum`` in seconds and
    ``_count``. One HELP and one TYPE line per family, whatever the number
    of label sets. ``naming="envoy"`` writes Envoy's names instead
    (docs/observability.md); ``extra``: more families (istio.py)."""
    fams = families(merged, namespace, naming)
    if extra:
        fams.update(extra)
    out: list[str] = []
    for fname in sorted(fams):
        kind, help_text, samples = fams[fname]
        out.append(f"# HELP {fname} {_escape_help(help_text)}")
        out.append(f"# TYPE {fname} {kind}")
        lines = [_sample_line(*s) for s in samples]
        out.extend(sorted(lines) if kind != "histogram" else lines)
    return "\n".join(out) + "\n" if out else ""


OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def wants_openmetrics(accept: str | None) -> bool:
    """Whether an Accept header asks for OpenMetrics (as Prometheus sends
    it: ``application/openmetrics-text;version=1.0.0,text/plain;q=0.5``),
    preferring it to the text format by its q value."""
    if not accept:
        return False
    best: dict[str, float] = {}
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        q = 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        best[fields[0].lower()] = max(best.get(fields[0].lower(), 0.0), q)
    om = best.get("application/openmetrics-text", 0.0)
    return om > 0.0 and om >= max(best.get("text/plain", 0.0), best.get("*/*", 0.0))


def render_openmetrics(merged: dict[str, Any], namespace: str = "fastmesh",
                       naming: str = "fastmesh", extra: dict[str, list[Any]] | None = None) -> str:
    """The same families in OpenMetrics 1.0 text: a counter family is named
    without its ``_total`` (its samples keep it), one Envoy counter whose
    name does not end in ``_total`` is ``unknown`` (its name unchanged), and
    the output ends with ``# EOF``."""
    fams = families(merged, namespace, naming)
    if extra:
        fams.update(extra)
    out: list[str] = []
    for fname in sorted(fams):
        kind, help_text, samples = fams[fname]
        family = fname
        if kind == "counter":
            if fname.endswith("_total"):
                family = fname[:-6]
            else:
                kind = "unknown"
        out.append(f"# TYPE {family} {kind}")
        out.append(f"# HELP {family} {_escape_help(help_text)}")
        if kind == "histogram" and fname.endswith("_seconds"):
            out.append(f"# UNIT {family} seconds")
        lines = [_sample_line(*s) for s in samples]
        out.extend(sorted(lines) if kind != "histogram" else lines)
    out.append("# EOF")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- Envoy /stats

def stat_name(prefix: str, labels: Any, name: str) -> str:
    """Envoy's dotted name: the prefix, the label values in label order,
    the stat (``cluster.backend.upstream_rq_total``); a block with the
    prefix "" has none (``config_version``)."""
    return ".".join([*([prefix] if prefix else []), *(str(v) for _k, v in labels), name])


def quantile(bounds: list[float], buckets: list[int], q: float) -> float | None:
    """The q-quantile (0..1) of a bucketed histogram, interpolated linearly
    inside its bucket as Prometheus' histogram_quantile does; a value in the
    +Inf bucket reads as the highest finite bound. None when empty."""
    count = sum(buckets)
    if count == 0:
        return None
    rank = q * count
    cum = 0
    for i, n in enumerate(buckets):
        if n == 0:
            continue
        if cum + n >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lo = float(bounds[i - 1]) if i > 0 else 0.0
            hi = float(bounds[i])
            return lo + (hi - lo) * (rank - cum) / n
        cum += n
    return float(bounds[-1])


def _ms(value: float) -> str:
    value = round(value, 6)
    return str(int(value)) if value == int(value) else repr(value)


def _quantile_label(q: float) -> str:
    p = round(q * 100, 1)
    return f"P{int(p)}" if p == int(p) else f"P{p}"


def render_text(merged: dict[str, Any], filter_regex: str | None = None) -> str:
    """Envoy's /stats plain text of a (merged) snapshot: ``name: value`` for
    counters and gauges, then histograms as Envoy prints them
    (``P0(nan,0.5) P25(nan,1.2) ... P100(nan,5)``: interval and cumulative
    quantile in milliseconds; we keep no interval, so it is ``nan``, which is
    what Envoy prints before its first interval). Each section is sorted by
    name. ``filter_regex`` keeps the names it matches (``re.search``, like
    Envoy's ``?filter=``); an invalid one raises ``re.error``."""
    merged = select(merged, filter_regex)
    values: list[tuple[str, str]] = []
    for blk in merged.get("blocks", ()):
        for name, value in blk["values"].items():
            values.append((stat_name(blk["prefix"], blk["labels"], name), _number(value)))
    hists: list[tuple[str, str]] = []
    for h in merged.get("histograms", ()):
        full = stat_name(h["prefix"], h["labels"], h["name"])
        if sum(h["buckets"]) == 0:
            hists.append((full, "No recorded values"))
            continue
        parts = []
        for q in ENVOY_QUANTILES:
            v = quantile(h["bounds"], h["buckets"], q)
            parts.append(f"{_quantile_label(q)}(nan,{_ms(v * 1000.0)})")
        hists.append((full, " ".join(parts)))
    lines = [f"{n}: {v}" for n, v in sorted(values) + sorted(hists)]
    return "\n".join(lines) + "\n" if lines else ""


def used_only(merged: dict[str, Any]) -> dict[str, Any]:
    """Envoy's ``?usedonly``: only the stats written since start (or the
    last reset): non-zero values and histograms with a sample."""
    blocks = []
    for blk in merged.get("blocks", ()):
        values = {n: v for n, v in blk["values"].items() if v}
        if values:
            blocks.append({**blk, "values": values,
                           "kinds": {n: k for n, k in blk["kinds"].items() if n in values}})
    hists = [h for h in merged.get("histograms", ()) if h["count"]]
    return {**merged, "blocks": blocks, "histograms": hists}


def envoy_json(merged: dict[str, Any]) -> dict[str, Any]:
    """Envoy's /stats?format=json shape: ``{"stats": [{"name", "value"}...,
    {"histograms": {"supported_quantiles", "computed_quantiles"}}]}``, the
    quantiles in milliseconds (Envoy's unit), ``interval`` null (none kept)."""
    stats: list[dict[str, Any]] = []
    for blk in merged.get("blocks", ()):
        for name, value in blk["values"].items():
            stats.append({"name": stat_name(blk["prefix"], blk["labels"], name), "value": value})
    stats.sort(key=lambda s: s["name"])
    computed = []
    for h in merged.get("histograms", ()):
        values = []
        for q in ENVOY_QUANTILES:
            v = quantile(h["bounds"], h["buckets"], q)
            values.append({"interval": None,
                           "cumulative": None if v is None else round(v * 1000.0, 6)})
        computed.append({"name": stat_name(h["prefix"], h["labels"], h["name"]),
                         "values": values})
    computed.sort(key=lambda c: c["name"])
    stats.append({"histograms": {"supported_quantiles": [q * 100 for q in ENVOY_QUANTILES],
                                 "computed_quantiles": computed}})
    return {"stats": stats}
