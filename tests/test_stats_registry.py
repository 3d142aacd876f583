"""The stats registry (fastmesh._stats) and its admin side (fastmesh.admin.metrics):
get-or-create identity, slots written from Cython, histogram buckets at their
exact bounds, reset_counters, merging workers' snapshots, and the Prometheus
output read back by prometheus_client's own parser.
"""
import json
import math
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fastmesh._stats import (
    HISTOGRAM_BOUNDS, StatsBlock, StatsRegistry, _bench_inc, _bench_record,
)
from fastmesh.admin.metrics import (
    merge, plain_block, quantile, render_prometheus, render_text, select, summary,
)

CLUSTER_NAMES = ("upstream_rq_total", "upstream_rq_active", "upstream_cx_total")
CLUSTER_KINDS = ("counter", "gauge", "counter")
RQ_TOTAL, RQ_ACTIVE, CX_TOTAL = range(3)


def cluster_block(reg, name, **labels):
    return reg.block("cluster", CLUSTER_NAMES, CLUSTER_KINDS, {"cluster": name, **labels})


def families(text):
    """name -> Metric, failing on a family that appears twice (two TYPE lines)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        assert fam.name not in out, f"family {fam.name} appears twice"
        out[fam.name] = fam
    return out


def samples(fam, name=None):
    return {tuple(sorted(s.labels.items())): s.value
            for s in fam.samples if name is None or s.name == name}


# ------------------------------------------------------------------ registry

def test_block_get_or_create_returns_the_same_object():
    reg = StatsRegistry()
    a = cluster_block(reg, "backend")
    # Same key, labels given as pairs in another order: the same block.
    b = reg.block("cluster", CLUSTER_NAMES, CLUSTER_KINDS, [("cluster", "backend")])
    assert a is b
    assert cluster_block(reg, "other") is not a
    assert reg.block("listener", CLUSTER_NAMES, CLUSTER_KINDS, {"cluster": "backend"}) is not a
    two = reg.block("http", ("downstream_rq",), ("counter",), {"route": "r", "listener": "l"})
    assert reg.block("http", ("downstream_rq",), ("counter",), [("listener", "l"), ("route", "r")]) is two
    assert two.labels == (("listener", "l"), ("route", "r"))
    assert len(reg) == 4


def test_histogram_get_or_create_returns_the_same_object():
    reg = StatsRegistry()
    h = reg.histogram("cluster", "upstream_rq_time", {"cluster": "a"})
    assert reg.histogram("cluster", "upstream_rq_time", [("cluster", "a")]) is h
    assert reg.histogram("cluster", "upstream_rq_time", {"cluster": "b"}) is not h
    assert reg.histogram("cluster", "upstream_cx_length", {"cluster": "a"}) is not h


def test_block_with_other_slots_under_an_existing_key_is_refused():
    reg = StatsRegistry()
    cluster_block(reg, "a")
    with pytest.raises(ValueError):
        reg.block("cluster", CLUSTER_NAMES[:2], CLUSTER_KINDS[:2], {"cluster": "a"})


@pytest.mark.parametrize("args", [
    ("cluster", ("a", "b"), ("counter",), None),            # kinds do not match names
    ("cluster", ("a", "a"), ("counter", "counter"), None),   # a name twice
    ("cluster", ("a",), ("meter",), None),                   # unknown kind
    ("cluster", ("a..b",), ("counter",), None),              # not a name (empty part)
    ("cluster", ("a.1b",), ("counter",), None),              # a part not a name
    ("cluster", ("a.",), ("counter",), None),                # not a name
    ("cluster", (".a",), ("counter",), None),                # not a name
    ("cluster", ("a-b",), ("counter",), None),               # not a name
    ("cluster", ("a.b", "a_b"), ("counter", "counter"), None),  # one Prometheus name
    ("clus ter", ("a",), ("counter",), None),                # prefix not a name
    ("cluster", ("a",), ("counter",), {"le": "1"}),          # reserved label
    ("cluster", ("a",), ("counter",), {"__x": "1"}),         # reserved label
    ("cluster", ("a",), ("counter",), {"bad-label": "1"}),   # not a label name
    ("cluster", ("a", "a_total"), ("counter", "counter"), None),  # one Prometheus name
])
def test_bad_blocks_are_refused(args):
    with pytest.raises(ValueError):
        StatsRegistry().block(*args)


def test_one_kind_per_family_across_blocks():
    reg = StatsRegistry()
    reg.block("cluster", ("upstream_rq_active",), ("gauge",), {"cluster": "a"})
    with pytest.raises(ValueError):
        reg.block("cluster", ("upstream_rq_active",), ("counter",), {"cluster": "b"})
    with pytest.raises(ValueError):
        reg.histogram("cluster", "upstream_rq_active", {"cluster": "a"})
    reg.block("cluster", ("upstream_rq_total",), ("counter",), {"cluster": "b"})
    with pytest.raises(ValueError):
        reg.block("cluster", ("upstream_rq",), ("counter",), {"cluster": "c"})


def test_slot_increments_from_cython_show_in_the_snapshot():
    reg = StatsRegistry()
    a = cluster_block(reg, "a")
    b = cluster_block(reg, "b")
    _bench_inc(a, RQ_TOTAL, 5)      # the hot path's `blk.v[I] += 1`, in C
    _bench_inc(b, CX_TOTAL, 2)
    a.add_py(RQ_ACTIVE, 3)
    a.add_py(RQ_ACTIVE, -1)
    snap = reg.snapshot()
    by_cluster = {dict(map(tuple, blk["labels"]))["cluster"]: blk for blk in snap["blocks"]}
    assert by_cluster["a"]["values"] == {"upstream_rq_total": 5, "upstream_rq_active": 2,
                                         "upstream_cx_total": 0}
    assert by_cluster["b"]["values"] == {"upstream_rq_total": 0, "upstream_rq_active": 0,
                                         "upstream_cx_total": 2}
    assert by_cluster["a"]["kinds"] == dict(zip(CLUSTER_NAMES, CLUSTER_KINDS))
    assert by_cluster["a"]["prefix"] == "cluster"
    assert by_cluster["a"]["labels"] == [["cluster", "a"]]
    assert json.loads(json.dumps(snap)) == snap
    with pytest.raises(IndexError):
        _bench_inc(a, 3, 1)


def test_block_slots_stay_put_while_the_registry_grows():
    reg = StatsRegistry()
    first = cluster_block(reg, "first")
    _bench_inc(first, RQ_TOTAL, 1)
    blocks = [cluster_block(reg, f"c{i}") for i in range(2000)]
    for i, blk in enumerate(blocks):
        _bench_inc(blk, CX_TOTAL, i % 7)
    _bench_inc(first, RQ_TOTAL, 1)
    assert first.value("upstream_rq_total") == 2
    assert [blk.value("upstream_cx_total") for blk in blocks] == [i % 7 for i in range(2000)]
    assert first.slot("upstream_cx_total") == CX_TOTAL


# ------------------------------------------------------------------ histograms

def test_histogram_bounds_are_envoys_in_seconds():
    ms = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
          300000, 600000, 1800000, 3600000)
    assert HISTOGRAM_BOUNDS == tuple(m / 1000 for m in ms)


@pytest.mark.parametrize("i", range(len(HISTOGRAM_BOUNDS)))
def test_histogram_value_at_a_bound_is_in_that_bound_and_just_above_in_the_next(i):
    reg = StatsRegistry()
    h = reg.histogram("cluster", "t", None)
    bound = HISTOGRAM_BOUNDS[i]
    h.record_py(bound)                          # `le` is inclusive
    h.record_py(math.nextafter(bound, math.inf))
    h.record_py(math.nextafter(bound, 0.0))
    buckets = reg.snapshot()["histograms"][0]["buckets"]
    assert len(buckets) == len(HISTOGRAM_BOUNDS) + 1
    expected = [0] * len(buckets)
    expected[i] += 2                            # the bound and just below it
    expected[i + 1] += 1                        # just above it
    assert buckets == expected


def test_histogram_inf_sum_count_and_odd_values():
    reg = StatsRegistry()
    h = reg.histogram("cluster", "t", None)
    for v in (0.0, 0.002, 3600.0001, 1e12, -1.0, float("nan")):
        h.record_py(v)
    d = reg.snapshot()["histograms"][0]
    assert d["buckets"][-1] == 2                # +Inf: above the last bound
    assert d["buckets"][0] == 2                 # 0 and the negative one (clamped to 0)
    assert d["buckets"][2] == 1                 # 2 ms: (1 ms, 5 ms]
    assert d["count"] == 5                      # NaN is dropped
    assert d["sum"] == pytest.approx(0.002 + 3600.0001 + 1e12)
    assert d["bounds"] == list(HISTOGRAM_BOUNDS)
    assert (d["prefix"], d["name"], d["labels"]) == ("cluster", "t", [])


def test_histogram_records_from_cython_land_in_every_bucket():
    reg = StatsRegistry()
    h = reg.histogram("cluster", "t", None)
    _bench_record(h, 64)                        # 0.2 ms * 1.35**i, i < 64
    d = reg.snapshot()["histograms"][0]
    vals = [0.0002 * 1.35 ** i for i in range(64)]
    expected = [0] * (len(HISTOGRAM_BOUNDS) + 1)
    for v in vals:
        expected[sum(1 for b in HISTOGRAM_BOUNDS if v > b)] += 1
    assert d["buckets"] == expected
    assert all(d["buckets"])
    assert d["count"] == 64
    assert d["sum"] == pytest.approx(sum(vals))


def test_reset_counters_keeps_gauges():
    reg = StatsRegistry()
    blk = cluster_block(reg, "a")
    blk.add_py(RQ_TOTAL, 7)
    blk.add_py(RQ_ACTIVE, 3)
    blk.add_py(CX_TOTAL, 1)
    h = reg.histogram("cluster", "upstream_rq_time", {"cluster": "a"})
    h.record_py(0.01)
    reg.reset_counters()
    snap = reg.snapshot()
    assert snap["blocks"][0]["values"] == {"upstream_rq_total": 0, "upstream_rq_active": 3,
                                           "upstream_cx_total": 0}
    hd = snap["histograms"][0]
    assert (hd["count"], hd["sum"], sum(hd["buckets"])) == (0, 0.0, 0)
    # The same objects keep counting after the reset.
    blk.add_py(RQ_TOTAL)
    h.record_py(0.01)
    assert blk.value("upstream_rq_total") == 1
    assert reg.snapshot()["histograms"][0]["count"] == 1


def test_forget_unlists_a_block_and_its_histograms_which_keep_working():
    reg = StatsRegistry()
    a, b = cluster_block(reg, "a"), cluster_block(reg, "b")
    h = reg.histogram("cluster", "upstream_rq_time", {"cluster": "a"})
    reg.forget("cluster", {"cluster": "a"})
    snap = reg.snapshot()
    assert [blk["labels"] for blk in snap["blocks"]] == [[["cluster", "b"]]]
    assert snap["histograms"] == []
    a.add_py(RQ_TOTAL)              # a request still in flight writes on
    h.record_py(0.1)
    again = cluster_block(reg, "a")
    assert again is not a and again.value("upstream_rq_total") == 0
    assert reg.histogram("cluster", "upstream_rq_time", {"cluster": "a"}) is not h
    assert b.value("upstream_rq_total") == 0


def test_a_block_without_prefix_has_bare_names():
    reg = StatsRegistry()
    blk = reg.block("", ("loop_batch_sleeps", "config_version"), ("counter", "gauge"), None)
    blk.add_py(0, 2)
    blk.set_py(1, 7)
    merged = merge([reg.snapshot()])
    assert render_text(merged) == "config_version: 7\nloop_batch_sleeps: 2\n"
    fams = families(render_prometheus(merged))
    assert (fams["fastmesh_config_version"].type, fams["fastmesh_loop_batch_sleeps"].type) == (
        "gauge", "counter")
    assert samples(fams["fastmesh_loop_batch_sleeps"]) == {(): 2}


# ------------------------------------------------------------------ merge

def two_workers():
    """Two workers' snapshots after a trip through JSON, as the admin gets them."""
    w1, w2 = StatsRegistry(), StatsRegistry()
    a1 = cluster_block(w1, "a")
    a1.add_py(RQ_TOTAL, 5)
    a1.add_py(RQ_ACTIVE, 2)
    a2 = cluster_block(w2, "a")
    a2.add_py(RQ_TOTAL, 7)
    a2.add_py(RQ_ACTIVE, 1)
    a2.add_py(CX_TOTAL, 4)
    cluster_block(w2, "only_w2").add_py(RQ_TOTAL, 1)
    h1 = w1.histogram("cluster", "upstream_rq_time", {"cluster": "a"})
    h2 = w2.histogram("cluster", "upstream_rq_time", {"cluster": "a"})
    for v in (0.0005, 0.003):
        h1.record_py(v)
    for v in (0.003, 100.0, 5000.0):
        h2.record_py(v)
    return [json.loads(json.dumps(w.snapshot())) for w in (w1, w2)]


def test_merge_sums_counters_gauges_and_histograms():
    merged = merge(two_workers())
    blocks = {(b["prefix"], tuple(map(tuple, b["labels"]))): b for b in merged["blocks"]}
    a = blocks[("cluster", (("cluster", "a"),))]
    assert a["values"] == {"upstream_rq_total": 12, "upstream_rq_active": 3,
                           "upstream_cx_total": 4}
    assert a["kinds"] == dict(zip(CLUSTER_NAMES, CLUSTER_KINDS))
    assert blocks[("cluster", (("cluster", "only_w2"),))]["values"]["upstream_rq_total"] == 1
    assert len(merged["histograms"]) == 1
    h = merged["histograms"][0]
    expected = [0] * (len(HISTOGRAM_BOUNDS) + 1)
    expected[0] = 1        # 0.5 ms
    expected[2] = 2        # 3 ms, twice
    expected[15] = 1       # 100 s: (60, 300]
    expected[-1] = 1       # 5000 s
    assert h["buckets"] == expected
    assert h["count"] == 5
    assert h["sum"] == pytest.approx(0.0005 + 0.003 * 2 + 100.0 + 5000.0)
    assert json.loads(json.dumps(merged)) == merged


def test_merge_is_associative_and_takes_missing_slots_as_zero():
    s1, s2 = two_workers()
    assert merge([merge([s1]), s2]) == merge([s1, s2]) == merge([s2, s1])
    s2["blocks"][0]["values"].pop("upstream_cx_total")
    merged = merge([s1, s2])
    a = next(b for b in merged["blocks"] if b["labels"] == [["cluster", "a"]])
    assert a["values"]["upstream_cx_total"] == 0


def test_merge_refuses_histograms_with_other_bounds():
    s1, s2 = two_workers()
    s2["histograms"][0]["bounds"][0] = 0.0001
    with pytest.raises(ValueError):
        merge([s1, s2])


# ------------------------------------------------------------------ Prometheus

def test_prometheus_output_parses_with_names_types_labels_and_values():
    text = render_prometheus(merge(two_workers()))
    fams = families(text)
    rq = fams["fastmesh_cluster_upstream_rq"]          # the parser drops _total
    assert rq.type == "counter"
    assert {s.name for s in rq.samples} == {"fastmesh_cluster_upstream_rq_total"}
    assert samples(rq) == {(("cluster", "a"),): 12, (("cluster", "only_w2"),): 1}
    active = fams["fastmesh_cluster_upstream_rq_active"]
    assert active.type == "gauge"
    assert samples(active) == {(("cluster", "a"),): 3, (("cluster", "only_w2"),): 0}
    assert fams["fastmesh_cluster_upstream_cx"].type == "counter"
    assert all(f.documentation for f in fams.values())
    # One HELP and one TYPE line per family although it has two label sets.
    for name in ("fastmesh_cluster_upstream_rq_total", "fastmesh_cluster_upstream_rq_active"):
        assert text.count(f"# TYPE {name} ") == 1
        assert text.count(f"# HELP {name} ") == 1
    assert set(fams) == {"fastmesh_cluster_upstream_rq", "fastmesh_cluster_upstream_rq_active",
                         "fastmesh_cluster_upstream_cx", "fastmesh_cluster_upstream_rq_time_seconds"}


def test_prometheus_histogram_is_cumulative_in_seconds():
    text = render_prometheus(merge(two_workers()), namespace="mesh")
    h = families(text)["mesh_cluster_upstream_rq_time_seconds"]
    assert h.type == "histogram"
    buckets = [(s.labels["le"], s.value) for s in h.samples if s.name.endswith("_bucket")]
    assert [le for le, _ in buckets] == [repr(b) for b in HISTOGRAM_BOUNDS] + ["+Inf"]
    assert [float(le) for le, _ in buckets[:-1]] == list(HISTOGRAM_BOUNDS)
    values = [v for _, v in buckets]
    assert values == sorted(values)                   # cumulative
    assert dict(buckets) == {**{repr(b): 0 for b in HISTOGRAM_BOUNDS},
                             "0.0005": 1, "0.001": 1, "0.005": 3, "0.01": 3, "0.025": 3,
                             "0.05": 3, "0.1": 3, "0.25": 3, "0.5": 3, "1.0": 3, "2.5": 3,
                             "5.0": 3, "10.0": 3, "30.0": 3, "60.0": 3, "300.0": 4,
                             "600.0": 4, "1800.0": 4, "3600.0": 4, "+Inf": 5}
    assert all(s.labels.get("cluster") == "a" for s in h.samples)
    count = samples(h, "mesh_cluster_upstream_rq_time_seconds_count")
    total = samples(h, "mesh_cluster_upstream_rq_time_seconds_sum")
    assert count == {(("cluster", "a"),): 5}
    assert total[(("cluster", "a"),)] == pytest.approx(5100.0065)


def test_prometheus_counters_get_one_total_suffix():
    reg = StatsRegistry()
    blk = reg.block("cluster", ("upstream_rq_retry", "upstream_rq_total", "membership_healthy"),
                    ("counter", "counter", "gauge"), {"cluster": "a"})
    for slot, n in enumerate((2, 3, 4)):
        blk.add_py(slot, n)
    text = render_prometheus(merge([reg.snapshot()]))
    names = {s.name: (f.name, f.type, s.value)
             for f in text_string_to_metric_families(text) for s in f.samples}
    assert names == {
        "fastmesh_cluster_upstream_rq_retry_total": ("fastmesh_cluster_upstream_rq_retry", "counter", 2),
        "fastmesh_cluster_upstream_rq_total": ("fastmesh_cluster_upstream_rq", "counter", 3),
        "fastmesh_cluster_membership_healthy": ("fastmesh_cluster_membership_healthy", "gauge", 4),
    }
    assert "# TYPE fastmesh_cluster_upstream_rq_retry_total counter\n" in text


def test_prometheus_response_classes_are_a_label_of_one_family():
    # Envoy's tag extraction: upstream_rq_2xx... -> upstream_rq_xx{response_code_class}.
    reg = StatsRegistry()
    names = ("upstream_rq_total", "upstream_rq_2xx", "upstream_rq_5xx")
    for cname, values in (("a", (5, 4, 1)), ("b", (2, 2, 0))):
        blk = reg.block("cluster", names, ("counter",) * 3, {"cluster": cname})
        for slot, n in enumerate(values):
            blk.add_py(slot, n)
    text = render_prometheus(merge([reg.snapshot()]))
    fams = families(text)
    assert set(fams) == {"fastmesh_cluster_upstream_rq", "fastmesh_cluster_upstream_rq_xx"}
    xx = fams["fastmesh_cluster_upstream_rq_xx"]
    assert xx.type == "counter"
    assert samples(xx) == {
        (("cluster", "a"), ("response_code_class", "2xx")): 4,
        (("cluster", "a"), ("response_code_class", "5xx")): 1,
        (("cluster", "b"), ("response_code_class", "2xx")): 2,
        (("cluster", "b"), ("response_code_class", "5xx")): 0,
    }
    assert text.count("# TYPE fastmesh_cluster_upstream_rq_xx_total counter\n") == 1
    # The Envoy text keeps Envoy's names.
    assert "cluster.a.upstream_rq_2xx: 4" in render_text(merge([reg.snapshot()])).splitlines()


@pytest.mark.parametrize("value", [
    'back\\slash', 'double"quote', 'new\nline', 'all\\"\n\\n', "", "{x=\"1\",y}", "ünïcødé ✓",
    "trailing\\",
])
def test_prometheus_label_values_are_escaped(value):
    reg = StatsRegistry()
    reg.block("listener", ("downstream_cx_total",), ("counter",), {"listener": value}).add_py(0, 3)
    reg.histogram("listener", "downstream_cx_length", {"listener": value}).record_py(1.0)
    text = render_prometheus(merge([reg.snapshot()]))
    assert text.count("\n") == len(text.splitlines())  # a raw newline would add a line
    fams = families(text)
    assert samples(fams["fastmesh_listener_downstream_cx"]) == {(("listener", value),): 3}
    hist = fams["fastmesh_listener_downstream_cx_length_seconds"]
    assert {s.labels["listener"] for s in hist.samples} == {value}


def test_prometheus_of_nothing_is_empty():
    assert render_prometheus(merge([])) == ""
    assert list(text_string_to_metric_families(render_prometheus(merge([])))) == []


# ------------------------------------------------------------------ Envoy text

def test_text_format_names_values_and_histogram_quantiles():
    text = render_text(merge(two_workers()))
    lines = text.splitlines()
    assert lines[:6] == [
        "cluster.a.upstream_cx_total: 4",
        "cluster.a.upstream_rq_active: 3",
        "cluster.a.upstream_rq_total: 12",
        "cluster.only_w2.upstream_cx_total: 0",
        "cluster.only_w2.upstream_rq_active: 0",
        "cluster.only_w2.upstream_rq_total: 1",
    ]
    name, _, quantiles = lines[6].partition(": ")
    assert name == "cluster.a.upstream_rq_time"
    parts = quantiles.split(" ")
    assert [p.split("(")[0] for p in parts] == [
        "P0", "P25", "P50", "P75", "P90", "P95", "P99", "P99.5", "P99.9", "P100"]
    # Buckets: 1 in (0, 0.5ms], 2 in (1ms, 5ms], 1 in (60s, 300s], 1 above 3600s.
    assert parts[0] == "P0(nan,0)"
    assert parts[2] == "P50(nan,4)"          # rank 2.5: 1.5 of the 2 in (1, 5] ms -> 1 + 4 * 0.75
    assert parts[-1] == "P100(nan,3600000)"  # +Inf reads as the last bound
    assert len(lines) == 7


def test_text_format_filter_and_empty_histograms():
    reg = StatsRegistry()
    cluster_block(reg, "a").add_py(RQ_TOTAL, 2)
    reg.block("http", ("downstream_rq_total",), ("counter",), {"listener": "ingress"}).add_py(0, 9)
    reg.histogram("http", "downstream_rq_time", {"listener": "ingress"})
    merged = merge([reg.snapshot()])
    assert render_text(merged, r"^http\.") == (
        "http.ingress.downstream_rq_total: 9\n"
        "http.ingress.downstream_rq_time: No recorded values\n")
    assert render_text(merged, "rq_total") == (
        "cluster.a.upstream_rq_total: 2\n"
        "http.ingress.downstream_rq_total: 9\n")
    assert render_text(merged, "no_such_stat") == ""
    assert len(render_text(merged).splitlines()) == 5


def test_quantile_from_buckets():
    bounds = [1.0, 2.0, 4.0]
    assert quantile(bounds, [0, 0, 0, 0], 0.5) is None
    assert quantile(bounds, [0, 4, 0, 0], 0.0) == 1.0
    assert quantile(bounds, [0, 4, 0, 0], 0.5) == 1.5
    assert quantile(bounds, [0, 4, 0, 0], 1.0) == 2.0
    assert quantile(bounds, [2, 0, 2, 0], 0.75) == 3.0
    assert quantile(bounds, [0, 0, 0, 3], 0.5) == 4.0


# ------------------------------------------------------------------ summary, select

def test_summary_sums_the_listeners_and_keeps_clusters_process_values_and_info():
    w1, w2 = StatsRegistry(), StatsRegistry()
    names, kinds = ("downstream_rq_total", "downstream_cx_active"), ("counter", "gauge")
    w1.block("listener", names, kinds, {"listener": "web"}).add_py(0, 3)
    w2.block("listener", names, kinds, {"listener": "web"}).add_py(0, 4)
    w2.block("listener", names, kinds, {"listener": "api"}).add_py(1, 2)
    cluster_block(w1, "a").add_py(RQ_TOTAL, 7)
    w1.block("", ("loop_batch_sleeps",), ("counter",), None).add_py(0, 1)
    own = plain_block("", {"workers": 2, "config_version": 3}, gauges=("workers", "config_version"))
    assert own["kinds"] == {"workers": "gauge", "config_version": "gauge"}
    merged = merge([w1.snapshot(), w2.snapshot(), {"blocks": [own]}])
    merged["info"] = {"worker_pids": [1, 2]}
    assert summary(merged) == {
        "loop_batch_sleeps": 1, "workers": 2, "config_version": 3,
        "downstream_rq_total": 7, "downstream_cx_active": 2,
        "listeners": {"api": {"downstream_rq_total": 0, "downstream_cx_active": 2},
                      "web": {"downstream_rq_total": 7, "downstream_cx_active": 0}},
        "clusters": {"a": {"upstream_rq_total": 7, "upstream_rq_active": 0,
                           "upstream_cx_total": 0}},
        "worker_pids": [1, 2],
    }


def test_select_keeps_what_the_regex_finds_in_envoy_names():
    merged = merge(two_workers())
    assert select(merged, None) is merged
    kept = select(merged, r"^cluster\.a\.upstream_rq_(total|time)$")
    assert [(b["labels"], b["values"], b["kinds"]) for b in kept["blocks"]] == [
        ([["cluster", "a"]], {"upstream_rq_total": 12}, {"upstream_rq_total": "counter"})]
    assert [h["name"] for h in kept["histograms"]] == ["upstream_rq_time"]
    assert select(merged, "nothing") == {"blocks": [], "histograms": []}
    with pytest.raises(re.error):
        select(merged, "(")


def test_dotted_stat_names_are_envoy_scopes():
    # Envoy's sub-scopes (outlier_detection.*, circuit_breakers.default.*) are
    # slot names with dots: the text output keeps them, Prometheus writes "_",
    # and a 5xx at the end of one is not a response-code class.
    reg = StatsRegistry()
    blk = reg.block("cluster", ("outlier_detection.ejections_enforced_consecutive_5xx",
                                "outlier_detection.ejections_active"),
                    ("counter", "gauge"), {"cluster": "a"})
    blk.add_py(0, 2)
    merged = merge([reg.snapshot()])
    assert "cluster.a.outlier_detection.ejections_enforced_consecutive_5xx: 2" in \
        render_text(merged)
    prom = render_prometheus(merged)
    assert ('fastmesh_cluster_outlier_detection_ejections_enforced_consecutive_5xx_total'
            '{cluster="a"} 2') in prom
    assert "response_code_class" not in prom
