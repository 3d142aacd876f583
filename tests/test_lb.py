"""Load balancers (fastmesh._lb): hash, distributions, load awareness,
stickiness and consistency of the hash policies, edge cases.

Statistical tests use fixed seeds (LB option "seed" and a seeded
random.Random for hash keys), so they are deterministic.
"""
import random
import struct
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from fastmesh._lb import (
    LeastRequestLB, MaglevLB, RandomLB, RingHashLB, RoundRobinLB, hash64, make_lb,
)

POLICIES = ["round_robin", "least_request", "random", "ring_hash", "maglev"]
HASH_POLICIES = ["ring_hash", "maglev"]
M64 = 0xFFFFFFFFFFFFFFFF


def keys_for(n, base="10.0.0"):
    return [f"{base}.{i}:8080".encode() for i in range(n)]


def counts(lb, picks, seed=7, hashed=True):
    rnd = random.Random(seed)
    c = Counter(lb.pick_py(rnd.getrandbits(64) if hashed else 0) for _ in range(picks))
    return [c[i] for i in range(lb.n)]


def assert_proportions(got, weights, tol):
    total = sum(got)
    wsum = sum(weights)
    for g, w in zip(got, weights):
        assert abs(g / total - w / wsum) <= tol, (got, weights)


# ------------------------------------------------------------------ xxHash64

def xxh64_ref(data: bytes, seed: int = 0) -> int:
    """Plain-Python XXH64 from the specification (the oracle)."""
    P1, P2, P3, P4, P5 = (11400714785074694791, 14029467366897019727,
                          1609587929392839161, 9650029242287828579, 2870177450012600261)

    def rotl(x, r):
        return ((x << r) | (x >> (64 - r))) & M64

    def rnd(acc, inp):
        return (rotl((acc + inp * P2) & M64, 31) * P1) & M64

    def merge(acc, v):
        return (((acc ^ rnd(0, v)) * P1) + P4) & M64

    n, p = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed, (seed - P1) & M64]
        while p + 32 <= n:
            for k in range(4):
                v[k] = rnd(v[k], struct.unpack_from("<Q", data, p)[0])
                p += 8
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & M64
        for k in range(4):
            h = merge(h, v[k])
    else:
        h = (seed + P5) & M64
    h = (h + n) & M64
    while p + 8 <= n:
        h ^= rnd(0, struct.unpack_from("<Q", data, p)[0])
        h = (rotl(h, 27) * P1 + P4) & M64
        p += 8
    if p + 4 <= n:
        h ^= (struct.unpack_from("<I", data, p)[0] * P1) & M64
        h = (rotl(h, 23) * P2 + P3) & M64
        p += 4
    while p < n:
        h ^= (data[p] * P5) & M64
        h = (rotl(h, 11) * P1) & M64
        p += 1
    h ^= h >> 33
    h = (h * P2) & M64
    h ^= h >> 29
    h = (h * P3) & M64
    h ^= h >> 32
    return h


@pytest.mark.parametrize("data, seed, expected", [
    (b"", 0, 0xEF46DB3751D8E999),
    (b"a", 0, 0xD24EC4F1A98C6E5B),
    (b"abc", 0, 0x44BC2CF5AD770999),
    # >= 32 bytes (the 4-lane path) and a nonzero seed; vectors from the
    # python-xxhash documentation
    (b"Nobody inspects the spammish repetition", 0, 0xFBCEA83C8A378BF1),
    (b"xxhash", 20141025, 0xB559B98D844E0635),
])
def test_xxh64_known_vectors(data, seed, expected):
    assert hash64(data, seed) == expected
    assert xxh64_ref(data, seed) == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=M64))
def test_xxh64_matches_reference(data, seed):
    assert hash64(data, seed) == xxh64_ref(data, seed)


def test_xxh64_unaligned_input():
    # slices at every offset go through unaligned reads
    blob = bytes(range(256)) * 2
    for off in range(9):
        chunk = blob[off:off + 100]
        assert hash64(chunk) == xxh64_ref(chunk)


# ------------------------------------------------------------ construction

def test_factory_classes_and_attributes():
    classes = {"round_robin": RoundRobinLB, "least_request": LeastRequestLB,
               "random": RandomLB, "ring_hash": RingHashLB, "maglev": MaglevLB}
    for policy, cls in classes.items():
        lb = make_lb(policy, [1, 2], keys_for(2))
        assert type(lb) is cls
        assert lb.policy == policy
        assert lb.n == 2 == len(lb)
        assert lb.uses_hash == (policy in HASH_POLICIES)


@pytest.mark.parametrize("policy, weights, keys, options", [
    ("nope", [1], None, None),
    ("round_robin", [0], None, None),
    ("random", [-1, 2], None, None),
    ("least_request", [1.5], None, None),
    ("random", [True], None, None),
    ("round_robin", [2 ** 32], None, None),
    ("ring_hash", [1, 1], None, None),                    # keys required
    ("ring_hash", [1, 1], [b"a"], None),                  # one key each
    ("maglev", [1, 1], [b"a", b"a"], None),               # unique keys
    ("maglev", [1], [""], None),                          # keys are bytes
    ("maglev", [1], [b"a"], {"table_size": 65536}),       # must be prime
    ("maglev", [1], [b"a"], {"table_size": 5000012}),
    ("ring_hash", [1], [b"a"], {"minimum_ring_size": 10, "maximum_ring_size": 5}),
    ("ring_hash", [1], [b"a"], {"maximum_ring_size": 8388609}),
])
def test_factory_rejects(policy, weights, keys, options):
    with pytest.raises(ValueError):
        make_lb(policy, weights, keys, options)


def test_non_hash_policies_ignore_keys():
    for policy in ("round_robin", "least_request", "random"):
        assert make_lb(policy, [1, 1], None).n == 2
        assert make_lb(policy, [1, 1], []).n == 2


@pytest.mark.parametrize("policy", POLICIES)
def test_empty_lb_returns_minus_one(policy):
    lb = make_lb(policy, [], [])
    assert lb.n == 0
    assert lb.pick_py(123) == -1
    assert lb.pick_excluding_py(123, 0) == -1
    assert lb.active_counts() == []
    lb.started(0)       # out of range: ignored, no crash
    lb.finished(0)


@pytest.mark.parametrize("policy", POLICIES)
def test_single_endpoint(policy):
    lb = make_lb(policy, [5], keys_for(1))
    rnd = random.Random(1)
    for _ in range(100):
        h = rnd.getrandbits(64)
        assert lb.pick_py(h) == 0
        assert lb.pick_excluding_py(h, 0) == 0   # nothing else to choose


# ------------------------------------------------------------- round robin

def test_round_robin_equal_weights_is_strict_rotation():
    lb = make_lb("round_robin", [1] * 5, None, {"seed": 3})
    seq = [lb.pick_py() for _ in range(50)]
    for a, b in zip(seq, seq[1:]):
        assert b == (a + 1) % 5
    # equal weights other than 1 are the same rotation
    lb = make_lb("round_robin", [7, 7, 7], None)
    seq = [lb.pick_py() for _ in range(9)]
    assert all(b == (a + 1) % 3 for a, b in zip(seq, seq[1:]))


def test_round_robin_weighted_exact_per_cycle():
    lb = make_lb("round_robin", [1, 2, 3], None, {"seed": 11})
    seq = [lb.pick_py() for _ in range(600)]
    # every window of one cycle (6 picks), wherever it starts, is exact
    for start in range(0, 594):
        c = Counter(seq[start:start + 6])
        assert [c[0], c[1], c[2]] == [1, 2, 3]
    # smooth: the heavy endpoint is never picked 3 times in a row
    assert all(seq[i:i + 3] != [2, 2, 2] for i in range(598))


def test_round_robin_gcd_reduced():
    lb = make_lb("round_robin", [200, 400, 600], None)
    seq = [lb.pick_py() for _ in range(6)]
    assert sorted(Counter(seq).values()) == [1, 2, 3]


def test_round_robin_long_cycle_uses_online_path():
    # total weight above the precomputed-schedule limit
    weights = [70001, 2, 1]
    lb = make_lb("round_robin", weights, None, {"seed": 5})
    c = Counter(lb.pick_py() for _ in range(sum(weights)))
    assert [c[0], c[1], c[2]] == weights


def test_round_robin_start_is_randomised_per_seed():
    firsts = {make_lb("round_robin", [1] * 16, None, {"seed": s}).pick_py() for s in range(40)}
    assert len(firsts) > 4


# ------------------------------------------------------- random, least request

@pytest.mark.parametrize("policy", ["random", "least_request"])
def test_weighted_draw_proportions(policy):
    lb = make_lb(policy, [1, 2, 3], None, {"seed": 42})
    got = counts(lb, 100_000, hashed=False)
    assert_proportions(got, [1, 2, 3], 0.01)


@pytest.mark.parametrize("policy", ["random", "least_request"])
def test_equal_weights_uniform(policy):
    lb = make_lb(policy, [4] * 8, None, {"seed": 9})
    assert_proportions(counts(lb, 80_000, hashed=False), [1] * 8, 0.01)


@pytest.mark.parametrize("policy", ["random", "least_request"])
def test_weighted_draw_many_endpoints_skewed(policy):
    # exercises the bucket index of the draw: many light endpoints, one heavy
    weights = [1] * 60 + [300] + [i % 7 + 1 for i in range(200)]
    lb = make_lb(policy, weights, None, {"seed": 8})
    got = counts(lb, 200_000, hashed=False)
    assert_proportions(got, weights, 0.005)
    assert abs(got[60] / 200_000 - 300 / sum(weights)) < 0.01


def test_seed_makes_random_reproducible():
    a = make_lb("random", [1, 2, 3, 4], None, {"seed": 123})
    b = make_lb("random", [1, 2, 3, 4], None, {"seed": 123})
    assert [a.pick_py() for _ in range(200)] == [b.pick_py() for _ in range(200)]


def test_least_request_avoids_loaded_endpoint():
    lb = make_lb("least_request", [1, 1], None, {"seed": 1})
    for _ in range(50):
        lb.started(0)
    assert all(lb.pick_py() == 1 for _ in range(1000))

    lb = make_lb("least_request", [1, 1, 1, 1], None, {"seed": 2})
    for _ in range(10):
        lb.started(0)
    c = Counter(lb.pick_py() for _ in range(20_000))
    assert c[0] < 0.01 * 20_000      # uniform would give 25 %
    assert_proportions([c[1], c[2], c[3]], [1, 1, 1], 0.02)


def test_least_request_skews_with_uneven_load():
    lb = make_lb("least_request", [1] * 4, None, {"seed": 4})
    for i, load in enumerate([8, 4, 2, 0]):
        for _ in range(load):
            lb.started(i)
    c = Counter(lb.pick_py() for _ in range(40_000))
    # strictly ordered by load, the idle endpoint takes the most
    assert c[3] > c[2] > c[1] > c[0]
    assert c[3] > 0.4 * 40_000


def test_least_request_load_is_per_unit_of_weight():
    # 2 in flight on weight 4 is a lighter load than 1 on weight 1
    lb = make_lb("least_request", [1, 4], None, {"seed": 6})
    lb.started(0)
    lb.started(1)
    lb.started(1)
    assert all(lb.pick_py() == 1 for _ in range(500))


@pytest.mark.parametrize("policy", POLICIES)
def test_active_counts_never_negative(policy):
    lb = make_lb(policy, [1, 1, 1], keys_for(3))
    lb.started(1)
    lb.started(1)
    lb.started(2)
    assert lb.active_counts() == [0, 2, 1]
    lb.finished(1)
    lb.finished(0)          # finish without start: ignored
    lb.finished(2)
    lb.finished(2)
    assert lb.active_counts() == [0, 1, 0]
    lb.started(-1)          # out of range: ignored
    lb.started(3)
    lb.finished(99)
    assert lb.active_counts() == [0, 1, 0]


# --------------------------------------------------------------- hash policies

def test_ring_hash_points_proportional_to_weight():
    lb = make_lb("ring_hash", [1, 2, 3], keys_for(3))
    # Envoy's sizing: min weight 1/6 -> ceil(1024/6) = 171 points for it
    assert lb.ring_counts() == [171, 342, 513]
    assert lb.ring_points == 1026
    # a light endpoint would need 2002 points; capped by the maximum
    skewed = make_lb("ring_hash", [1, 1000], keys_for(2), {"maximum_ring_size": 1500})
    assert skewed.ring_points == 1500
    assert skewed.ring_counts()[0] >= 1


def test_maglev_table_proportional_to_weight():
    lb = make_lb("maglev", [1, 2, 3], keys_for(3))
    c = lb.table_counts()
    assert sum(c) == 65537
    assert_proportions(c, [1, 2, 3], 0.001)
    small = make_lb("maglev", [1, 1], keys_for(2), {"table_size": 251})
    assert sum(small.table_counts()) == 251


@pytest.mark.parametrize("policy, options, tol", [
    ("ring_hash", None, 0.05),                               # 1026 points: coarse
    ("ring_hash", {"minimum_ring_size": 65536}, 0.015),
    ("maglev", None, 0.01),
])
def test_hash_policy_proportions(policy, options, tol):
    lb = make_lb(policy, [1, 2, 3], keys_for(3), options)
    assert_proportions(counts(lb, 100_000), [1, 2, 3], tol)


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_hash_policies_are_sticky_and_deterministic(policy):
    ks = keys_for(7)
    a = make_lb(policy, [1, 2, 3, 1, 1, 5, 2], ks, {"seed": 1})
    b = make_lb(policy, [1, 2, 3, 1, 1, 5, 2], ks, {"seed": 2})  # seed is irrelevant
    rnd = random.Random(3)
    for _ in range(2000):
        h = rnd.getrandbits(64)
        first = a.pick_py(h)
        assert a.pick_py(h) == first
        assert b.pick_py(h) == first
    # a hash of a real header value
    h = hash64(b"user-1234")
    assert len({a.pick_py(h) for _ in range(100)}) == 1


def _moved_fraction(policy, n, removed=0, samples=50_000):
    ks = keys_for(n, "10.1.0")
    survivors = ks[:removed] + ks[removed + 1:]
    before = make_lb(policy, [1] * n, ks)
    after = make_lb(policy, [1] * (n - 1), survivors)
    rnd = random.Random(17)
    stayed_eligible = moved = 0
    for _ in range(samples):
        h = rnd.getrandbits(64)
        old = ks[before.pick_py(h)]
        new = survivors[after.pick_py(h)]
        if old != ks[removed]:
            stayed_eligible += 1
            moved += old != new
    return moved / stayed_eligible


def test_maglev_removal_disruption_is_small():
    # The paper's bound: close to the minimum; keys of surviving endpoints
    # almost never move.
    for n in (5, 10, 50):
        assert _moved_fraction("maglev", n) < 0.02


def test_ring_hash_removal_keeps_surviving_keys():
    # Keys of surviving endpoints stay, except where the ring is rescaled
    # (10 -> 9 endpoints: 103 -> 114 points each); with 50 -> 49 the point
    # count per endpoint is unchanged and nothing moves.
    assert _moved_fraction("ring_hash", 10) < 0.15
    assert _moved_fraction("ring_hash", 50) == 0.0


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_removal_moves_about_one_nth(policy):
    n = 10
    ks = keys_for(n, "10.2.0")
    before = make_lb(policy, [1] * n, ks)
    after = make_lb(policy, [1] * (n - 1), ks[1:])
    rnd = random.Random(8)
    total = 50_000
    moved = sum(ks[before.pick_py(h)] != ks[1:][after.pick_py(h)]
                for h in (rnd.getrandbits(64) for _ in range(total)))
    # 1/N = 10 % must move (the removed endpoint's keys); allow rescale noise
    assert 0.07 < moved / total < 0.22


# ---------------------------------------------------------------- exclusion

@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("n", [2, 3, 8])
def test_pick_excluding_avoids_excluded(policy, n):
    lb = make_lb(policy, list(range(1, n + 1)), keys_for(n), {"seed": 5})
    rnd = random.Random(n)
    for _ in range(3000):
        h = rnd.getrandbits(64)
        ex = rnd.randrange(n)
        r = lb.pick_excluding_py(h, ex)
        assert 0 <= r < n and r != ex


def test_pick_excluding_keeps_unexcluded_choice_for_hash():
    # When the key's endpoint is not excluded, the answer is the usual one.
    for policy in HASH_POLICIES:
        lb = make_lb(policy, [1, 1, 1, 1], keys_for(4))
        rnd = random.Random(2)
        for _ in range(500):
            h = rnd.getrandbits(64)
            p = lb.pick_py(h)
            assert lb.pick_excluding_py(h, (p + 1) % 4) == p


def test_ring_hash_excluding_walks_to_next_owner():
    # the retry goes to the key's next owner on the ring, deterministically
    lb = make_lb("ring_hash", [1] * 5, keys_for(5))
    rnd = random.Random(4)
    for _ in range(200):
        h = rnd.getrandbits(64)
        p = lb.pick_py(h)
        alt = lb.pick_excluding_py(h, p)
        assert alt != p and lb.pick_excluding_py(h, p) == alt


def test_least_request_excluding_with_heavy_weight():
    # excluded endpoint holds almost all the weight: still avoided
    lb = make_lb("least_request", [1_000_000, 1, 1], None, {"seed": 3})
    assert all(lb.pick_excluding_py(0, 0) in (1, 2) for _ in range(1000))


# ------------------------------------------------------------------ property

@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    weights=st.lists(st.integers(min_value=1, max_value=1000), min_size=0, max_size=24),
    hashes=st.lists(st.integers(min_value=0, max_value=M64), min_size=1, max_size=40),
    seed=st.integers(min_value=0, max_value=M64),
)
def test_pick_always_in_range(policy, weights, hashes, seed):
    n = len(weights)
    options = {"seed": seed}
    if policy == "maglev":
        options["table_size"] = 4099        # keep the build quick
    lb = make_lb(policy, weights, keys_for(n), options)
    for h in hashes:
        r = lb.pick_py(h)
        if n == 0:
            assert r == -1
            continue
        assert 0 <= r < n
        lb.started(r)
        ex = lb.pick_excluding_py(h, r)
        assert 0 <= ex < n and (n == 1 or ex != r)
    active = lb.active_counts()
    assert all(a >= 0 for a in active) and sum(active) == (len(hashes) if n else 0)
    for i in range(n):
        for _ in range(active[i] + 2):      # two more than started: clamps at 0
            lb.finished(i)
    assert lb.active_counts() == [0] * n


def test_bench_helper_runs():
    for policy in POLICIES:
        lb = make_lb(policy, [1, 2, 3], keys_for(3))
        assert lb.bench_picks(1000) >= 0
