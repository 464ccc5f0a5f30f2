"""Which replica serves a program: vllm-router's policies, sans-IO.

Replicas sit behind vLLM's router (``vllm-router``), and every request of a
program carries its id in ``X-Session-Id``, so the router keeps a program on
one replica (its program table, hints and prefix cache live there). A
:class:`Router` assigns a program when it arrives and hears when it ends:

* :class:`ConsistentHashRouter` (``consistent_hash``, the router's
  ``--policy consistent_hash``): the router hashes the key
  ``header:x-session-id:<id>`` with its ``fbi_hash`` (Facebook mcrouter's
  ``furc_hash`` into 23 bits, widened by MurmurHash64A) onto a ring of 160
  virtual nodes per worker, each the ``fbi_hash`` of ``"<worker url>:<i>"``, and
  picks the first node at or after the key's hash (wrapping around). Mirrored
  from ``src/policies/consistent_hash.rs`` (commit 080589a0) and
  ``src/policies/hash_key.rs`` of github.com/vllm-project/router; the hash is
  bit for bit the Rust one (checked against it, see the tests). Like any hash
  ring it splits programs unevenly: 160 virtual nodes leave each replica's
  share a few percent off ``1/replicas``, which depends on the worker URLs, as
  in a real deployment.
* :class:`RandomRouter` (``random``): a uniformly random replica per program,
  from an injected generator (what a hash of random uuids tends to).
* :class:`StickyLeastLoadedRouter` (``sticky_least_loaded``, the router's
  load-aware policy that keeps sessions sticky,
  ``src/policies/sticky_least_loaded.rs``): a new program goes to the replica
  with the fewest active programs, ties broken by rendezvous hashing (highest
  ``fbi_hash("<id>:<url>")``); a program stops counting when it ends (the
  best case: the router learns of the end at once). The router's
  ``power_of_two`` policy is not modelled: it picks per request, which would
  scatter a program's samples over replicas and split its program table.

Example:
    >>> fbi_hash("test_session_123") == fbi_hash("test_session_123")
    True
    >>> router = make_router("consistent_hash", 4, seed=0)
    >>> router.assign("3b2d5a6e-0000-4000-8000-000000000000") in range(4)
    True
    >>> least = make_router("sticky_least_loaded", 2, seed=0)
    >>> a, b = least.assign("a"), least.assign("b")  # one each
    >>> a != b, least.assign("a") == a  # and sticky
    (True, True)
    >>> least.release("a")
    >>> least.assign("c") == a  # the freed replica is the least loaded
    True
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from typing import Literal, Protocol, get_args

import numpy as np

from dynasor_agents.errors import InvalidInputError

__all__ = [
    "ROUTING_POLICIES",
    "VIRTUAL_NODES_PER_WORKER",
    "ConsistentHashRouter",
    "HashRing",
    "RandomRouter",
    "Router",
    "RoutingPolicy",
    "StickyLeastLoadedRouter",
    "fbi_hash",
    "make_router",
    "session_key",
    "worker_urls",
]

RoutingPolicy = Literal["consistent_hash", "random", "sticky_least_loaded"]
ROUTING_POLICIES: tuple[RoutingPolicy, ...] = get_args(RoutingPolicy)
"""The routing policies :func:`make_router` builds."""

VIRTUAL_NODES_PER_WORKER = 160
"""The router's ``VIRTUAL_NODES_PER_WORKER``."""

_MASK = (1 << 64) - 1
_M = 0xC6A4A7935BD1E995
_R = 47
_SEED = 4193360111  # mcrouter's hash.c seed, used throughout
_FURC_SHIFT = 23
_FURC_MAX_TRIES = 32
_FURC_MODULUS = (1 << 23) - 1


def _murmur_hash_64a(key: bytes, seed: int) -> int:
    """MurmurHash64A (mcrouter's ``hash.c``) of ``key``."""
    h = (seed ^ (len(key) * _M)) & _MASK
    whole = len(key) - len(key) % 8
    for i in range(0, whole, 8):
        k = (int.from_bytes(key[i : i + 8], "little") * _M) & _MASK
        k ^= k >> _R
        k = (k * _M) & _MASK
        h = ((h ^ k) * _M) & _MASK
    if whole < len(key):  # the tail's bytes, little-endian, in one word
        h = ((h ^ int.from_bytes(key[whole:], "little")) * _M) & _MASK
    h ^= h >> _R
    h = (h * _M) & _MASK
    return h ^ (h >> _R)


def _murmur_rehash_64a(k: int) -> int:
    """MurmurHash64A of one 64-bit word (``hash.c``'s rehash)."""
    h = (_SEED ^ (8 * _M)) & _MASK
    k = (k * _M) & _MASK
    k ^= k >> _R
    k = (k * _M) & _MASK
    h = ((h ^ k) * _M) & _MASK
    h ^= h >> _R
    h = (h * _M) & _MASK
    return h ^ (h >> _R)


def _furc_hash(key: bytes, m: int) -> int:
    """mcrouter's ``furc_hash``: ``key`` to one of ``m`` buckets, consistently."""
    if m <= 1:
        return 0
    words: list[int] = []

    def bit(index: int) -> int:
        word = index >> 6
        while len(words) <= word:
            words.append(
                _murmur_hash_64a(key, _SEED) if not words else _murmur_rehash_64a(words[-1])
            )
        return (words[word] >> (index & 0x3F)) & 1

    d = 0
    while m > (1 << d):
        d += 1
    a = d
    for _ in range(_FURC_MAX_TRIES):
        while not bit(a):
            if d == 0:
                return 0
            d -= 1
            a = d
        a += _FURC_SHIFT
        num = 1
        for _ in range(max(0, d - 1)):
            num = (num << 1) | bit(a)
            a += _FURC_SHIFT
        if num < m:
            return num
    return 0


def fbi_hash(key: str) -> int:
    """The router's ``ConsistentHashPolicy::fbi_hash``: a 64-bit ring position of ``key``.

    ``furc_hash`` into ``2**23 - 1`` buckets, then MurmurHash64A of the bucket's
    four little-endian bytes.
    """
    bucket = _furc_hash(key.encode("utf-8"), _FURC_MODULUS)
    return _murmur_hash_64a(bucket.to_bytes(4, "little"), _SEED)


def session_key(program_id: str) -> str:
    """The router's hash key of a request whose ``X-Session-Id`` is ``program_id``."""
    return f"header:x-session-id:{program_id}"


def worker_urls(replicas: int) -> list[str]:
    """The simulated replicas' URLs (they place the ring's virtual nodes).

    Example:
        >>> worker_urls(2)
        ['http://10.0.0.1:8000', 'http://10.0.0.2:8000']
    """
    if replicas < 1:
        raise InvalidInputError(f"replicas must be >= 1, got {replicas}")
    return [f"http://10.0.0.{i + 1}:8000" for i in range(replicas)]


@functools.lru_cache(maxsize=32)
def _ring(urls: tuple[str, ...], virtual_nodes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ring's positions, ascending, and the worker of each (a pure function, memoized:
    every simulated run of a sweep builds the same ring)."""
    nodes: dict[int, int] = {}  # as the router's BTreeMap: a later equal hash overwrites
    for index, url in enumerate(urls):
        for i in range(virtual_nodes):
            nodes[fbi_hash(f"{url}:{i}")] = index
    hashes = tuple(sorted(nodes))
    return hashes, tuple(nodes[h] for h in hashes)


class HashRing:
    """The router's hash ring: ``virtual_nodes`` positions per worker.

    Args:
        urls: The workers' URLs, in replica order.
        virtual_nodes: Positions per worker.

    Example:
        >>> ring = HashRing(worker_urls(3))
        >>> len(ring), ring.lookup(session_key("p1")) == ring.lookup(session_key("p1"))
        (480, True)
    """

    def __init__(self, urls: Sequence[str], virtual_nodes: int = VIRTUAL_NODES_PER_WORKER) -> None:
        if not urls or virtual_nodes < 1:
            raise InvalidInputError(
                f"a hash ring needs workers and >= 1 virtual node, got {len(urls)} and "
                f"{virtual_nodes}"
            )
        self._hashes, self._workers = _ring(tuple(urls), virtual_nodes)

    def __len__(self) -> int:
        return len(self._hashes)

    def lookup(self, key: str) -> int:
        """The worker of the first position at or after ``fbi_hash(key)``, wrapping around."""
        at = bisect.bisect_left(self._hashes, fbi_hash(key))
        return self._workers[at % len(self._hashes)]

    def shares(self) -> list[float]:
        """Each worker's share of the ring (the share of uniform keys it gets).

        Example:
            >>> round(sum(HashRing(worker_urls(4)).shares()), 9)
            1.0
        """
        counts = [0] * (max(self._workers) + 1)
        previous = self._hashes[-1] - (1 << 64)  # the arc wrapping past zero
        for h, worker in zip(self._hashes, self._workers, strict=True):
            counts[worker] += h - previous
            previous = h
        return [c / (1 << 64) for c in counts]


class Router(Protocol):
    """Assigns each program a replica on arrival; hears when it ends."""

    def assign(self, program_id: str) -> int:
        """The replica that serves ``program_id`` (the same one for each of its requests)."""
        ...

    def release(self, program_id: str) -> None:
        """``program_id`` has ended."""
        ...


class ConsistentHashRouter:
    """vllm-router's ``consistent_hash`` on ``X-Session-Id`` (see the module doc)."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.ring = HashRing(urls)

    def assign(self, program_id: str) -> int:
        """The ring's worker for the program's session key."""
        return self.ring.lookup(session_key(program_id))

    def release(self, program_id: str) -> None:
        """Nothing to forget."""


class RandomRouter:
    """A uniformly random replica per program, from ``rng``."""

    def __init__(self, replicas: int, rng: np.random.Generator) -> None:
        self.replicas, self.rng = replicas, rng

    def assign(self, program_id: str) -> int:
        """A fresh draw."""
        return int(self.rng.integers(self.replicas))

    def release(self, program_id: str) -> None:
        """Nothing to forget."""


class StickyLeastLoadedRouter:
    """vllm-router's ``sticky_least_loaded``: fewest active programs, sticky per program.

    Attributes:
        active: Replica of each program not yet released.
        counts: Active programs per replica.
    """

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = list(urls)
        self.active: dict[str, int] = {}
        self.counts = [0] * len(self.urls)

    def assign(self, program_id: str) -> int:
        """The program's replica, or (new) the least loaded, ties by rendezvous hash."""
        if program_id in self.active:
            return self.active[program_id]
        least = min(self.counts)
        best, weight = 0, -1
        for index, url in enumerate(self.urls):
            if self.counts[index] != least:
                continue
            w = fbi_hash(f"{program_id}:{url}")
            if w > weight:  # the router keeps the first of equal weights
                best, weight = index, w
        self.active[program_id] = best
        self.counts[best] += 1
        return best

    def release(self, program_id: str) -> None:
        """The program's session ends (unknown ids are ignored, as the router does)."""
        index = self.active.pop(program_id, None)
        if index is not None:
            self.counts[index] -= 1


def make_router(policy: RoutingPolicy | str, replicas: int, *, seed: int) -> Router:
    """A fresh router of ``policy`` over ``replicas`` (:func:`worker_urls`).

    Args:
        policy: One of :data:`ROUTING_POLICIES`.
        replicas: Replicas behind the router.
        seed: Seeds the ``random`` policy (the others are deterministic).

    Raises:
        InvalidInputError: An unknown policy or fewer than one replica.
    """
    urls = worker_urls(replicas)
    if policy == "consistent_hash":
        return ConsistentHashRouter(urls)
    if policy == "random":
        return RandomRouter(replicas, np.random.default_rng([seed, 0x5E55]))
    if policy == "sticky_least_loaded":
        return StickyLeastLoadedRouter(urls)
    raise InvalidInputError(
        f"unknown routing policy {policy!r}; choose from {', '.join(ROUTING_POLICIES)}"
    )
