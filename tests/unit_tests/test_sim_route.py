"""Routing programs to replicas as vllm-router does: its hash, ring and load-aware policy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dynasor_agents.errors import InvalidInputError
from dynasor_bench.sim._route import (
    ConsistentHashRouter,
    HashRing,
    RandomRouter,
    StickyLeastLoadedRouter,
    _furc_hash,
    fbi_hash,
    make_router,
    session_key,
    worker_urls,
)
from dynasor_bench.workload._workload import program_uuids

# Computed by the router's own Rust code (src/policies/consistent_hash.rs: murmur_hash_64a,
# furc_hash, fbi_hash and the BTreeMap ring, compiled as they are).
RUST_HASHES = {
    "": 13863836683688404004,
    "a": 3013377723451042321,
    "test_session_123": 13603598124863842186,
    "header:x-session-id:p0": 3180732472677653711,
    "http://10.0.0.1:8000:0": 16321713646315172506,
    "0123456789abcdefXYZ": 1733215619381880305,  # two whole 8-byte words and a tail
}
RUST_FURC = {("header:x-session-id:p0", (1 << 23) - 1): 7270846, ("header:x-session-id:p0", 7): 1}
# ConsistentHashPolicy's ring over http://10.0.0.{1..4}:8000: workers of p0..p39.
RUST_RING_4 = [
    *(3, 2, 0, 0, 0, 2, 1, 2, 2, 3, 1, 2, 0, 1, 3, 3, 3, 3, 0, 3),
    *(1, 3, 2, 0, 1, 3, 0, 1, 0, 0, 0, 0, 2, 2, 3, 1, 2, 0, 3, 1),
]


@pytest.mark.parametrize("key", sorted(RUST_HASHES))
def test_fbi_hash_is_the_routers(key: str) -> None:
    assert fbi_hash(key) == RUST_HASHES[key]


def test_furc_hash_is_mcrouters() -> None:
    for (key, m), bucket in RUST_FURC.items():
        assert _furc_hash(key.encode(), m) == bucket
    assert _furc_hash(b"anything", 1) == 0


def test_the_ring_places_keys_as_the_router_does() -> None:
    router = ConsistentHashRouter(worker_urls(4))
    assert [router.assign(f"p{i}") for i in range(40)] == RUST_RING_4
    assert session_key("p0") == "header:x-session-id:p0"


def test_the_ring_spreads_uuids_near_evenly_but_not_round_robin() -> None:
    ring = HashRing(worker_urls(4))
    assert len(ring) == 640
    shares = ring.shares()
    assert sum(shares) == pytest.approx(1.0)
    assert all(0.15 < s < 0.35 for s in shares)
    router = ConsistentHashRouter(worker_urls(4))
    ids = program_uuids(4000, np.random.default_rng(0))
    counts = np.bincount([router.assign(i) for i in ids], minlength=4) / len(ids)
    assert counts == pytest.approx(shares, abs=0.03)  # uniform keys follow the arcs
    # Consecutive programs land on the same replica about as often as chance says
    # (a quarter), unlike crc32 of p0, p1, ... (4 of 799 pairs).
    picks = [router.assign(i) for i in ids]
    same = np.mean([a == b for a, b in itertools.pairwise(picks)])
    assert same == pytest.approx(float(np.sum(np.square(shares))), abs=0.03)


def test_random_routing_is_seeded() -> None:
    one, two = make_router("random", 4, seed=3), make_router("random", 4, seed=3)
    assert isinstance(one, RandomRouter)
    draws = [one.assign(f"p{i}") for i in range(200)]
    assert draws == [two.assign(f"p{i}") for i in range(200)]
    assert set(draws) == {0, 1, 2, 3}
    assert draws != [make_router("random", 4, seed=4).assign(f"p{i}") for i in range(200)]


def test_sticky_least_loaded_fills_the_emptiest_replica() -> None:
    router = make_router("sticky_least_loaded", 3, seed=0)
    assert isinstance(router, StickyLeastLoadedRouter)
    first = [router.assign(p) for p in ("a", "b", "c")]
    assert sorted(first) == [0, 1, 2] and router.counts == [1, 1, 1]
    assert router.assign("b") == first[1]  # sticky: no new session
    router.release("b")
    router.release("nobody")  # unknown ids are ignored, as the router does
    assert router.assign("d") == first[1] and router.counts == [1, 1, 1]
    # Ties go to the highest rendezvous hash of "<id>:<url>".
    urls = worker_urls(3)
    fresh = StickyLeastLoadedRouter(urls)
    best = max(range(3), key=lambda i: fbi_hash(f"x:{urls[i]}"))
    assert fresh.assign("x") == best


def test_one_replica_and_bad_arguments() -> None:
    assert {make_router(p, 1, seed=0).assign("z") for p in ("consistent_hash", "random")} == {0}
    with pytest.raises(InvalidInputError, match="unknown routing policy"):
        make_router("least_request", 2, seed=0)
    with pytest.raises(InvalidInputError, match="replicas must be >= 1"):
        make_router("random", 0, seed=0)
    with pytest.raises(InvalidInputError, match="a hash ring needs workers"):
        HashRing([])
