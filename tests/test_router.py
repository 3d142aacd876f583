"""Router (fastmesh._router): virtual-host selection, path and header
matchers, route order, weighted clusters, construction errors.

Requests go through Router.match_py, which lays the headers out like the
HTTP/1 codec does (one buffer + HeaderSlice offsets) and calls the C match().
"""
import random
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from fastmesh._router import (
    ACTION_NAMES, CLUSTER, DIRECT, WEIGHTED, HeaderMatch, Route, RouteMatch, Router,
)


def R(name, cluster=None):
    return Route(name, "cluster", cluster=cluster or name)


def vhost_router(domains_by_name):
    """One catch-all route per virtual host, named after it."""
    return Router([(name, doms, [(RouteMatch(), R(name))])
                   for name, doms in domains_by_name.items()])


def routed(router, host=b"h", target=b"/", headers=()):
    r = router.match_py(host, target, list(headers))
    return None if r is None else r.name


# --------------------------------------------------------------- virtual hosts

DOMAINS = {
    "exact": ["api.example.com"],
    "suffix": ["*.example.com"],
    "longer-suffix": ["*.eu.example.com"],
    "dash-suffix": ["*-bar.example.com"],
    "prefix": ["api.*"],
    "longer-prefix": ["api.internal.*"],
    "default": ["*"],
}


@pytest.mark.parametrize("host, expected", [
    (b"api.example.com", "exact"),                  # exact beats *.example.com and api.*
    (b"www.example.com", "suffix"),
    (b"a.eu.example.com", "longer-suffix"),         # longest suffix wins
    (b"x.y.eu.example.com", "longer-suffix"),
    (b"baz-bar.example.com", "dash-suffix"),        # longer than ".example.com"
    (b"api.other.org", "prefix"),                   # suffix wildcards tried first, none match
    (b"api.internal.corp", "longer-prefix"),        # longest prefix wins
    (b"api.eu.example.com", "longer-suffix"),       # suffix beats prefix
    (b"example.com", "default"),                    # "*.example.com" needs a label
    (b".example.com", "default"),                   # wildcard never matches empty
    (b"unknown.net", "default"),
    (b"", "default"),
])
def test_domain_precedence(host, expected):
    r = vhost_router(DOMAINS)
    assert r.vhost_py(host) == expected
    assert routed(r, host) == expected


@pytest.mark.parametrize("host, expected", [
    (b"API.EXAMPLE.COM", "exact"),
    (b"Api.Example.Com", "exact"),
    (b"WWW.Example.COM", "suffix"),
    (b"API.other.org", "prefix"),
])
def test_domains_case_insensitive(host, expected):
    assert vhost_router(DOMAINS).vhost_py(host) == expected


def test_config_domains_case_folded():
    r = vhost_router({"a": ["API.Example.COM"], "b": ["*.EXAMPLE.com"]})
    assert r.vhost_py(b"api.example.com") == "a"
    assert r.vhost_py(b"x.example.com") == "b"


@pytest.mark.parametrize("host, expected", [
    (b"api.example.com:8080", "exact"),             # port stripped, then exact
    (b"www.example.com:443", "suffix"),
    (b"unknown.net:80", "default"),
    (b"api.example.com:", "exact"),                 # empty port
    (b"api.example.com:80x", "default"),            # not a port: nothing stripped
])
def test_host_with_port(host, expected):
    r = vhost_router({"exact": ["api.example.com"], "suffix": ["*.example.com"],
                      "default": ["*"]})
    assert r.vhost_py(host) == expected


def test_domain_with_port_matches_first():
    r = vhost_router({"with-port": ["api.example.com:8080"], "bare": ["api.example.com"],
                      "default": ["*"]})
    assert r.vhost_py(b"api.example.com:8080") == "with-port"
    assert r.vhost_py(b"api.example.com:9090") == "bare"
    assert r.vhost_py(b"api.example.com") == "bare"


def test_port_retry_happens_before_default():
    # the default vhost does not shadow the port-less lookup
    r = vhost_router({"default": ["*"], "a": ["a.com"]})
    assert r.vhost_py(b"a.com:1234") == "a"


def test_prefix_wildcard_may_match_the_port():
    # as in Envoy, the Host with its port is tried first, and "api.*" matches it
    r = vhost_router({"prefix": ["api.*"], "exact": ["api.x"]})
    assert r.vhost_py(b"api.x:80") == "prefix"


@pytest.mark.parametrize("host, expected", [
    (b"[::1]:8080", "v6"),
    (b"[::1]", "v6"),
    (b"::1", "default"),                            # bare v6: no port to strip
])
def test_ipv6_hosts(host, expected):
    r = vhost_router({"v6": ["[::1]"], "default": ["*"]})
    assert r.vhost_py(host) == expected


def test_no_default_vhost_no_match():
    r = vhost_router({"a": ["a.com"]})
    assert r.vhost_py(b"b.com") is None
    assert r.match_py(b"b.com", b"/", []) is None
    assert Router([]).match_py(b"a.com", b"/", []) is None


@pytest.mark.parametrize("vhosts", [
    [("a", ["x.com"], []), ("b", ["x.com"], [])],
    [("a", ["x.com"], []), ("b", ["X.COM"], [])],         # duplicate after case folding
    [("a", ["*"], []), ("b", ["*"], [])],
    [("a", ["*.x.com", "*.x.com"], [])],                  # within one vhost too
])
def test_duplicate_domain_raises(vhosts):
    with pytest.raises(ValueError, match="domain"):
        Router(vhosts)


@pytest.mark.parametrize("domain", ["a.*.com", "**", "", "*a*"])
def test_bad_domain_raises(domain):
    with pytest.raises(ValueError):
        Router([("a", [domain], [])])


def test_bad_structure_raises():
    with pytest.raises(TypeError):
        Router([("a", ["x"], [(("prefix", b"/"), R("r"))])])   # matcher must be RouteMatch
    with pytest.raises(TypeError):
        Router([("a", "x.com", [])])                          # domains must be a list
    with pytest.raises(ValueError):
        Router([("a", ["x"])])


# ------------------------------------------------------------------ paths

def path_router(routes, **kw):
    return Router([("v", ["*"], [(RouteMatch(**m), R(n)) for m, n in routes])])


@pytest.mark.parametrize("target, expected", [
    (b"/api/users", "prefix-api"),
    (b"/api", "prefix-api"),
    (b"/api?x=1", "prefix-api"),
    (b"/ap", "root"),
    (b"/", "root"),
    (b"/API/users", "root"),                            # case-sensitive by default
])
def test_prefix(target, expected):
    r = path_router([({"prefix": b"/api"}, "prefix-api"), ({"prefix": b"/"}, "root")])
    assert routed(r, target=target) == expected


def test_prefix_sees_query_string():
    # Envoy compares the prefix with path + query
    r = path_router([({"prefix": b"/search?q="}, "search-q"), ({"prefix": b"/"}, "root")])
    assert routed(r, target=b"/search?q=fastmesh") == "search-q"
    assert routed(r, target=b"/search?x=1") == "root"
    assert routed(r, target=b"/search") == "root"


@pytest.mark.parametrize("target, expected", [
    (b"/health", "exact"),
    (b"/health?verbose=1", "exact"),                    # query ignored for exact path
    (b"/health/", None),
    (b"/healthz", None),
    (b"/HEALTH", None),
])
def test_exact_path(target, expected):
    r = path_router([({"path": b"/health"}, "exact")])
    assert routed(r, target=target) == expected


@pytest.mark.parametrize("target, expected", [
    (b"/users/42", "regex"),
    (b"/users/42?full=1", "regex"),                     # query ignored for regex
    (b"/users/42/x", None),                             # full match, not search
    (b"/v2/users/42", None),
    (b"/users/", None),
])
def test_regex_full_match(target, expected):
    r = path_router([({"regex": r"/users/\d+"}, "regex")])
    assert routed(r, target=target) == expected


def test_case_insensitive_prefix_and_path():
    r = path_router([({"prefix": b"/Api/", "case_sensitive": False}, "p"),
                     ({"path": b"/Login", "case_sensitive": False}, "x")])
    assert routed(r, target=b"/API/v1") == "p"
    assert routed(r, target=b"/api/v1") == "p"
    assert routed(r, target=b"/LOGIN?next=/") == "x"
    assert routed(r, target=b"/logout") is None


def test_regex_case_sensitivity():
    r = path_router([({"regex": r"/a+"}, "cs"),
                     ({"regex": r"/b+", "case_sensitive": False}, "ci"),
                     ({"regex": r"(?i)/c+"}, "inline")])
    assert routed(r, target=b"/aa") == "cs"
    assert routed(r, target=b"/AA") is None
    assert routed(r, target=b"/BbB") == "ci"
    assert routed(r, target=b"/cC") == "inline"


def test_header_values_from_text_config():
    r = header_router(HeaderMatch("X-Lang", exact="français"))
    assert routed(r, headers=[(b"x-lang", "français".encode())]) == "hit"


def test_empty_matcher_matches_everything():
    r = path_router([({}, "all")])
    for t in (b"/", b"/x?y", b"*", b""):
        assert routed(r, target=t) == "all"


def test_first_match_wins():
    r = path_router([
        ({"prefix": b"/api/v1/special"}, "special"),
        ({"prefix": b"/api/"}, "api"),
        ({"prefix": b"/api/v1/"}, "never"),             # shadowed by /api/
        ({"path": b"/api/v1/special"}, "never2"),
        ({"prefix": b"/"}, "root"),
    ])
    assert routed(r, target=b"/api/v1/special/x") == "special"
    assert routed(r, target=b"/api/v1/other") == "api"
    assert routed(r, target=b"/other") == "root"


def test_no_route_returns_none():
    r = path_router([({"prefix": b"/api"}, "api")])
    assert r.match_py(b"h", b"/other", []) is None


def test_matcher_validation():
    with pytest.raises(ValueError):
        RouteMatch(prefix=b"/", path=b"/x")
    with pytest.raises(ValueError):
        Router([("v", ["*"], [(RouteMatch(regex="("), R("bad"))])])
    with pytest.raises(TypeError):
        RouteMatch(headers=[("x", "y")])
    with pytest.raises(ValueError):
        HeaderMatch(b"x")                                 # no condition
    with pytest.raises(ValueError):
        HeaderMatch(b"x", exact=b"1", prefix=b"1")        # two conditions
    assert RouteMatch(prefix="/str").prefix == b"/str"    # ASCII str accepted


# ---------------------------------------------------------------- headers

def header_router(*hms):
    return Router([("v", ["*"], [
        (RouteMatch(prefix=b"/", headers=list(hms)), R("hit")),
    ])])


@pytest.mark.parametrize("hm, headers, expected", [
    (HeaderMatch(b"x-env", exact=b"prod"), [(b"x-env", b"prod")], True),
    (HeaderMatch(b"x-env", exact=b"prod"), [(b"x-env", b"production")], False),
    (HeaderMatch(b"x-env", exact=b"prod"), [(b"x-env", b"PROD")], False),   # values: case-sensitive
    (HeaderMatch(b"x-env", exact=b"prod"), [], False),
    (HeaderMatch(b"x-env", prefix=b"pro"), [(b"x-env", b"production")], True),
    (HeaderMatch(b"x-env", prefix=b"pro"), [(b"x-env", b"pr")], False),
    (HeaderMatch(b"x-user", regex=r"u-\d+"), [(b"x-user", b"u-17")], True),
    (HeaderMatch(b"x-user", regex=r"u-\d+"), [(b"x-user", b"u-17x")], False),
    (HeaderMatch(b"x-user", present=True), [(b"x-user", b"")], True),
    (HeaderMatch(b"x-user", present=True), [(b"x-other", b"1")], False),
    (HeaderMatch(b"x-user", present=False), [(b"x-other", b"1")], True),
    (HeaderMatch(b"x-user", present=False), [(b"x-user", b"1")], False),
])
def test_header_matchers(hm, headers, expected):
    r = header_router(hm)
    assert (routed(r, headers=headers) == "hit") is expected


@pytest.mark.parametrize("name, sent", [
    (b"X-Env", b"x-env"), (b"x-env", b"X-ENV"), ("X-ENV", b"x-Env"),
])
def test_header_names_case_insensitive(name, sent):
    r = header_router(HeaderMatch(name, exact=b"1"))
    assert routed(r, headers=[(sent, b"1")]) == "hit"


@pytest.mark.parametrize("hm, headers, expected", [
    (HeaderMatch(b"x-env", exact=b"prod", invert=True), [(b"x-env", b"dev")], True),
    (HeaderMatch(b"x-env", exact=b"prod", invert=True), [(b"x-env", b"prod")], False),
    (HeaderMatch(b"x-env", exact=b"prod", invert=True), [], True),      # absent: flipped
    (HeaderMatch(b"x-env", prefix=b"p", invert=True), [(b"x-env", b"dev")], True),
    (HeaderMatch(b"x-env", regex=r"p.*", invert=True), [(b"x-env", b"prod")], False),
    (HeaderMatch(b"x-env", present=True, invert=True), [], True),
    (HeaderMatch(b"x-env", present=True, invert=True), [(b"x-env", b"1")], False),
])
def test_header_invert(hm, headers, expected):
    assert (routed(header_router(hm), headers=headers) == "hit") is expected


def test_all_header_matchers_must_match():
    r = header_router(HeaderMatch(b"a", exact=b"1"), HeaderMatch(b"b", present=True))
    assert routed(r, headers=[(b"a", b"1"), (b"b", b"x")]) == "hit"
    assert routed(r, headers=[(b"a", b"1")]) is None
    assert routed(r, headers=[(b"b", b"x"), (b"a", b"2")]) is None


def test_repeated_header_is_joined_with_comma():
    r = header_router(HeaderMatch(b"x-tag", exact=b"a,b"))
    assert routed(r, headers=[(b"x-tag", b"a"), (b"other", b"z"), (b"X-Tag", b"b")]) == "hit"
    assert routed(r, headers=[(b"x-tag", b"a")]) is None
    r = header_router(HeaderMatch(b"x-tag", regex=r"a,b"))
    assert routed(r, headers=[(b"x-tag", b"a"), (b"x-tag", b"b")]) == "hit"


def test_header_route_falls_through_to_next():
    r = Router([("v", ["*"], [
        (RouteMatch(prefix=b"/", headers=[HeaderMatch(b"x-canary", exact=b"1")]), R("canary")),
        (RouteMatch(prefix=b"/"), R("stable")),
    ])])
    assert routed(r, headers=[(b"x-canary", b"1")]) == "canary"
    assert routed(r, headers=[(b"x-canary", b"0")]) == "stable"
    assert routed(r) == "stable"


def test_many_headers_realistic_request():
    hs = [(f"x-h{i}".encode(), f"v{i}".encode()) for i in range(40)]
    hs.append((b"Authorization", b"Bearer abc"))
    r = header_router(HeaderMatch(b"authorization", prefix=b"Bearer "),
                      HeaderMatch(b"x-h39", exact=b"v39"))
    assert routed(r, headers=hs) == "hit"


# ------------------------------------------------------------- Route object

def test_route_fields():
    c = object()
    r = Route("r", "cluster", cluster=c, timeout=2.5, extra={"retries": 2})
    assert (r.name, r.action, r.cluster, r.timeout, r.extra) == ("r", CLUSTER, c, 2.5, {"retries": 2})
    d = Route("d", DIRECT, direct_status=301, direct_body=b"moved")
    assert (d.action, d.direct_status, d.direct_body) == (DIRECT, 301, b"moved")
    assert ACTION_NAMES == {"cluster": 0, "weighted": 1, "direct": 2}


@pytest.mark.parametrize("kwargs", [
    dict(action="cluster"),                                   # no cluster
    dict(action="weighted", clusters=("a", "b"), weights=(1,)),
    dict(action="weighted", clusters=(), weights=()),
    dict(action="weighted", clusters=("a",), weights=(0,)),
    dict(action="weighted", clusters=("a", "b"), weights=(2 ** 31, 2 ** 31)),
    dict(action="direct", direct_status=42),
    dict(action="teleport"),
    dict(action=7),
    dict(action="cluster", cluster="c", timeout=-1.0),
])
def test_route_validation(kwargs):
    with pytest.raises(ValueError):
        Route("r", **kwargs)


def test_pick_weighted_boundaries():
    r = Route("w", "weighted", clusters=("a", "b", "c"), weights=(1, 2, 3))
    assert r.total_weight == 6
    assert [r.pick_weighted_py(i) for i in range(12)] == list("abbccc") * 2
    assert r.pick_weighted_py(2 ** 32 - 1) == "abbccc"[(2 ** 32 - 1) % 6]
    assert Route("c", "cluster", cluster="x").pick_weighted_py(5) is None


def test_pick_weighted_distribution():
    r = Route("w", "weighted", clusters=("a", "b", "c", "d"), weights=(10, 20, 30, 40))
    rnd = random.Random(3)
    n = 100_000
    c = Counter(r.pick_weighted_py(rnd.getrandbits(32)) for _ in range(n))
    for name, w in zip("abcd", (10, 20, 30, 40)):
        assert abs(c[name] / n - w / 100) < 0.01


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=30),
       st.integers(min_value=0, max_value=2 ** 32 - 1))
def test_pick_weighted_matches_reference(weights, r):
    clusters = tuple(range(len(weights)))
    route = Route("w", WEIGHTED, clusters=clusters, weights=weights)
    x = r % sum(weights)
    acc = 0
    for i, w in enumerate(weights):
        acc += w
        if x < acc:
            break
    assert route.pick_weighted_py(r) == i


def test_match_returns_the_same_route_object():
    route = R("same")
    r = Router([("v", ["*"], [(RouteMatch(), route)])])
    assert r.match_py(b"h", b"/", []) is route


# ---------------------------------------------------------------- property

@settings(max_examples=200, deadline=None)
@given(host=st.binary(max_size=40), target=st.binary(max_size=60),
       headers=st.lists(st.tuples(st.binary(min_size=1, max_size=10), st.binary(max_size=10)),
                        max_size=8))
def test_arbitrary_requests_do_not_crash(host, target, headers):
    r = Router([
        ("a", ["a.com", "*.a.com", "a.*"], [
            (RouteMatch(regex=r"/r/.*", headers=[HeaderMatch(b"h", regex=b".*")]), R("rx")),
            (RouteMatch(prefix=b"/p", case_sensitive=False), R("p")),
        ]),
        ("d", ["*"], [(RouteMatch(path=b"/x"), R("x"))]),
    ])
    m = r.match_py(host, target, headers)
    assert m is None or m.name in {"rx", "p", "x"}


def test_bench_helper_runs():
    r = path_router([({"prefix": b"/a"}, "a"), ({"prefix": b"/"}, "root")])
    assert r.bench_match(b"h", b"/a/b", [], 1000) == 1000
    assert r.bench_match(b"h", b"x", [], 10) == 0
