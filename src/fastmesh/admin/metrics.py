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


def render_prometheus(merged: dict[str, Any], namespace: str = "fastmesh") -> str:
    """The Prometheus text exposition format 0.0.4 of a (merged) snapshot.

    A slot ``name`` of a block with prefix ``p`` is the family
    ``<namespace>_<p>_<name>``, counters with the ``_total`` suffix (not
    doubled when the name already ends in it); the block's labels become the
    sample's labels. A histogram is ``<namespace>_<p>_<name>_seconds`` with
    cumulative ``_bucket{le=...}`` samples, ``_sum`` in seconds and
    ``_count``. One HELP and one TYPE line per family, whatever the number
    of label sets."""
    # family name -> [kind, help, source, [sample lines]]
    families: dict[str, list[Any]] = {}

    def family(name: str, kind: str, source: str) -> list[str]:
        fam = families.get(name)
        if fam is None:
            fam = families[name] = [kind, f"fastmesh stat {source}, summed over workers.",
                                    source, []]
        elif fam[2] != source:
            raise ValueError(f"stats: {source} and {fam[2]} are both {name} in Prometheus")
        return fam[3]

    for blk in merged.get("blocks", ()):
        prefix = blk["prefix"]
        labels = _label_text(blk["labels"])
        has_class = any(k == CODE_CLASS_LABEL for k, _v in blk["labels"])
        for name, value in blk["values"].items():
            kind = blk["kinds"].get(name, "counter")
            m = None if has_class else _CODE_CLASS.match(name)
            if m is not None:
                name = m.group(1) + "xx"
                sample_labels = _label_text(blk["labels"], (CODE_CLASS_LABEL, m.group(2)))
            else:
                sample_labels = labels
            fname = _metric_name(namespace, prefix, name)
            if kind == "counter" and not fname.endswith("_total"):
                fname += "_total"
            family(fname, kind, stat_name(prefix, (), name)).append(
                f"{fname}{sample_labels} {_number(value)}")

    for h in merged.get("histograms", ()):
        fname = _metric_name(namespace, h["prefix"], h["name"])
        if not fname.endswith("_seconds"):
            fname += "_seconds"
        lines = family(fname, "histogram", stat_name(h["prefix"], (), h["name"]))
        cum = 0
        les = [_number(float(b)) for b in h["bounds"]] + ["+Inf"]
        for le, n in zip(les, h["buckets"]):
            cum += n
            lines.append(f"{fname}_bucket{_label_text(h['labels'], ('le', le))} {cum}")
        labels = _label_text(h["labels"])
        lines.append(f"{fname}_sum{labels} {_number(float(h['sum']))}")
        lines.append(f"{fname}_count{labels} {_number(h['count'])}")

    out: list[str] = []
    for fname in sorted(families):
        kind, help_text, _source, lines = families[fname]
        out.append(f"# HELP {fname} {_escape_help(help_text)}")
        out.append(f"# TYPE {fname} {kind}")
        out.extend(sorted(lines) if kind != "histogram" else lines)
    return "\n".join(out) + "\n" if out else ""


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
