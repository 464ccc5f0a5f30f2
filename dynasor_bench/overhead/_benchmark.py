"""Overhead benchmark: plain vLLM against vLLM with the Dynasor component, one run.

Both servers run at once (started one after the other), on the same model and
flags; only ``--middleware`` differs. While one is measured the other is idle.

* **Throughput**: ``rounds`` rounds; each sends the same batch of completion
  requests (``ignore_eos``, temperature 0: exactly ``max_tokens`` tokens each)
  to each server, the order alternating from round to round. Requests come in
  programs with id, certainty, budget and remaining hints; a program is finished
  with ``DELETE`` when its last request returns (timed). Both servers get the
  same bodies, headers and ``DELETE`` calls (plain vLLM ignores the headers and
  answers 404).
* **Latency**: sequential one-token requests (same headers; ``DELETE`` untimed)
  in blocks, the servers alternating block by block (A,B,B,A,...).
* **In process**: the median time of one request through a trivial ASGI app,
  without and with the middleware: its cost without vLLM's noise.

Before each timed batch or block it waits ``SETTLE_S``: an idle vLLM busy-polls
for 1 s after its last request, which on 2 cores slows the measured server. Each
latency block starts with an untimed request (no program headers) to wake it.

Example:
    >>> plain = LoadFigures(requests=32, tokens=1024, seconds=5.0)
    >>> dynasor = LoadFigures(requests=32, tokens=1024, seconds=5.05)
    >>> round(throughput_ratio(plain, dynasor), 3)
    0.99
    >>> added_ms([40.0, 41.0, 45.0], [40.5, 41.6, 44.0])
    0.6
    >>> for line in verdicts(0.990, 0.6):
    ...     print(line)
    throughput ratio = 0.990 (target >= 0.98): met
    added median latency = 0.60 ms (target <= 2 ms): met
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import httpx

from dynasor_agents.protocol import (
    BUDGET_HEADER,
    CERTAINTY_HEADER,
    PROGRAM_ID_HEADER,
    REMAINING_HEADER,
    program_path,
)

__all__ = [
    "LoadFigures",
    "OverheadReport",
    "Workload",
    "added_ms",
    "run_benchmark",
    "throughput_ratio",
    "verdicts",
]

MIN_RATIO, MAX_ADDED_MS = 0.98, 2.0  # the targets
SERVERS = ("plain", "dynasor")
SETTLE_S = 1.5  # vLLM's shared-memory queue readers busy-poll for 1 s after their last read
PROMPTS = (
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle stays upright.",
    "Describe a walk through a forest in autumn.",
    "What makes bread rise? Explain step by step.",
)


@dataclass
class LoadFigures:
    """Requests, completion tokens and wall seconds of one server's timed batches."""

    requests: int = 0
    tokens: int = 0
    seconds: float = 0.0
    wrong_length: int = 0  # responses whose completion_tokens != max_tokens

    @property
    def tokens_per_second(self) -> float:
        """Completion tokens per wall second."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def add(self, other: LoadFigures) -> None:
        """Add another batch's figures to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass
class OverheadReport:
    """Everything one run measured (``--json`` writes it)."""

    params: dict[str, Any]
    load: dict[str, LoadFigures] = field(default_factory=dict)
    round_ratios: list[float] = field(default_factory=list)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    block_added_ms: list[float] = field(default_factory=list)
    micro_us: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Dynasor's throughput over plain vLLM's."""
        return throughput_ratio(self.load["plain"], self.load["dynasor"])

    @property
    def added_ms(self) -> float:
        """Dynasor's median latency minus plain vLLM's, in ms."""
        return added_ms(self.latencies_ms["plain"], self.latencies_ms["dynasor"])

    def to_json(self) -> dict[str, Any]:
        """The raw figures plus the two verdict numbers."""
        return {**asdict(self), "ratio": self.ratio, "added_median_ms": self.added_ms}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linearly interpolated.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([5.0], 90)
        (2.5, 5.0)
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def throughput_ratio(plain: LoadFigures, dynasor: LoadFigures) -> float:
    """Dynasor's tokens per second over plain vLLM's (1.0 = no overhead)."""
    base = plain.tokens_per_second
    return dynasor.tokens_per_second / base if base > 0 else float("nan")


def added_ms(plain: Sequence[float], dynasor: Sequence[float]) -> float:
    """Median latency added by the component: ``median(dynasor) - median(plain)``."""
    return round(statistics.median(dynasor) - statistics.median(plain), 9)


def bootstrap_interval(
    plain: Sequence[float], dynasor: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A 95% bootstrap interval for :func:`added_ms` (resampling each side; seeded).

    Example:
        >>> low, high = bootstrap_interval([10.0] * 20, [11.0] * 20)
        >>> (low, high)
        (1.0, 1.0)
    """
    rng = random.Random(seed)
    diffs = sorted(
        added_ms(rng.choices(plain, k=len(plain)), rng.choices(dynasor, k=len(dynasor)))
        for _ in range(resamples)
    )
    return percentile(diffs, 2.5), percentile(diffs, 97.5)


def verdicts(ratio: float, added: float) -> list[str]:
    """The two verdict lines, each ending in ``met`` or ``MISSED``."""
    ok = ("MISSED", "met")
    return [
        f"throughput ratio = {ratio:.3f} (target >= {MIN_RATIO:g}): {ok[ratio >= MIN_RATIO]}",
        f"added median latency = {added:.2f} ms (target <= {MAX_ADDED_MS:g} ms): "
        + ok[added <= MAX_ADDED_MS],
    ]


def targets_met(ratio: float, added: float) -> bool:
    """Whether both targets are met (``--check``)."""
    return all(line.endswith(": met") for line in verdicts(ratio, added))


def format_table(report: OverheadReport) -> str:
    """Plain vs dynasor: requests, tokens, seconds, tok/s, median and p90 latency.

    Example:
        >>> r = OverheadReport({}, {"plain": LoadFigures(4, 128, 2.0),
        ...     "dynasor": LoadFigures(4, 128, 2.0)}, [1.0],
        ...     {"plain": [30.0, 40.0], "dynasor": [31.0, 41.0]})
        >>> print(format_table(r))
        server     requests   tokens  seconds    tok/s | lat n  median ms  p90 ms
        plain             4      128     2.00     64.0 |     2      35.00   39.00
        dynasor           4      128     2.00     64.0 |     2      36.00   40.00
    """
    lines = [
        f"{'server':<8} {'requests':>10} {'tokens':>8} {'seconds':>8} {'tok/s':>8} |"
        f" {'lat n':>5} {'median ms':>10} {'p90 ms':>7}"
    ]
    for name in SERVERS:
        load, lat = report.load[name], report.latencies_ms[name]
        lines.append(
            f"{name:<8} {load.requests:>10} {load.tokens:>8} {load.seconds:>8.2f}"
            f" {load.tokens_per_second:>8.1f} | {len(lat):>5}"
            f" {statistics.median(lat):>10.2f} {percentile(lat, 90):>7.2f}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class BenchRequest:
    """One request of the workload: its body and program headers."""

    program_id: str
    body: dict[str, Any]
    headers: dict[str, str]
    last: bool  # the program's last request, in sending order


say = functools.partial(print, flush=True)  # progress lines show at once in a log file


class BenchError(RuntimeError):
    """A server answered a benchmark request with an error."""


async def _complete(client: httpx.AsyncClient, req: BenchRequest) -> int:
    """Send one request; return its completion tokens."""
    response = await client.post("/v1/completions", json=req.body, headers=req.headers)
    if response.status_code != 200:
        raise BenchError(f"{response.status_code} from {client.base_url}: {response.text[:300]}")
    tokens: int = response.json()["usage"]["completion_tokens"]
    return tokens


async def run_batch(
    client: httpx.AsyncClient, requests: Sequence[BenchRequest], concurrency: int
) -> LoadFigures:
    """Send ``requests`` with ``concurrency`` in flight; finish each program when done."""
    gate = asyncio.Semaphore(concurrency)
    figures = LoadFigures(requests=len(requests))
    pending = Counter(r.program_id for r in requests)

    async def one(req: BenchRequest) -> None:
        async with gate:
            tokens = await _complete(client, req)
        figures.tokens += tokens
        figures.wrong_length += tokens != req.body["max_tokens"]
        pending[req.program_id] -= 1
        if not pending[req.program_id]:  # its program's last request to return
            await client.delete(program_path(req.program_id))  # plain vLLM: 404

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    figures.seconds = time.perf_counter() - started
    return figures


@dataclass(frozen=True)
class Workload:
    """What one run sends; both servers get exactly the same."""

    model: str = "smollm2"
    rounds: int = 6
    requests: int = 32
    concurrency: int = 8
    max_tokens: int = 32
    latency_requests: int = 300
    latency_block: int = 25
    program_size: int = 4

    def batch(self, tag: str, count: int, max_tokens: int | None = None) -> list[BenchRequest]:
        """``count`` completion requests in programs of ``program_size``, like a sampling program.

        Example:
            >>> reqs = Workload(program_size=2).batch("r1", 3)
            >>> [(r.program_id, r.last, r.body["max_tokens"]) for r in reqs]
            [('bench-r1-0', False, 32), ('bench-r1-0', True, 32), ('bench-r1-1', True, 32)]
        """
        tokens, size = max_tokens or self.max_tokens, self.program_size
        out = []
        for i in range(count):
            program, k = divmod(i, size)
            members = min(size, count - program * size)
            headers = {
                PROGRAM_ID_HEADER: f"bench-{tag}-{program}",
                CERTAINTY_HEADER: f"{k / size:.3g}",
                BUDGET_HEADER: str(2 * size * tokens),
                REMAINING_HEADER: str(members - k - 1),
            }
            body = {
                "model": self.model,
                "prompt": PROMPTS[i % len(PROMPTS)],
                "max_tokens": tokens,
                "temperature": 0.0,
                "ignore_eos": True,
            }
            out.append(BenchRequest(headers[PROGRAM_ID_HEADER], body, headers, k == members - 1))
        return out


async def run_benchmark(
    urls: dict[str, str], work: Workload, out: Callable[[str], None] = say
) -> OverheadReport:
    """Measure throughput and latency of both servers (root URLs, no ``/v1``)."""
    report = OverheadReport(asdict(work), {n: LoadFigures() for n in SERVERS})
    report.latencies_ms = {n: [] for n in SERVERS}
    pool = work.concurrency + 4
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    clients = {
        n: httpx.AsyncClient(base_url=urls[n], timeout=600.0, limits=limits) for n in SERVERS
    }
    try:
        for name in SERVERS:
            out(f"[bench] warm-up {name}")
            await run_batch(clients[name], work.batch(f"warm-{name}", 16), work.concurrency)
        for r in range(work.rounds):
            tps: dict[str, float] = {}
            for name in SERVERS if r % 2 == 0 else SERVERS[::-1]:
                batch = work.batch(f"r{r}", work.requests)
                await asyncio.sleep(SETTLE_S)  # the other server goes quiet
                figures = await run_batch(clients[name], batch, work.concurrency)
                report.load[name].add(figures)
                tps[name] = figures.tokens_per_second
                out(
                    f"[bench] round {r + 1}/{work.rounds} {name:<7}: {figures.tokens} tokens"
                    f" in {figures.seconds:.2f} s = {tps[name]:.1f} tok/s"
                )
            report.round_ratios.append(tps["dynasor"] / tps["plain"])
        lat = work.batch("lat", work.latency_requests, max_tokens=1)
        size = work.latency_block
        for b, start in enumerate(range(0, len(lat), size)):
            block, medians = lat[start : start + size], {}
            for name in SERVERS if b % 2 == 0 else SERVERS[::-1]:
                await asyncio.sleep(SETTLE_S)  # the other server goes quiet
                await _complete(clients[name], replace(block[0], headers={}))  # wakes it
                times = []
                for req in block:
                    started = time.perf_counter()
                    await _complete(clients[name], req)
                    times.append((time.perf_counter() - started) * 1000)
                    if req.last:
                        await clients[name].delete(program_path(req.program_id))
                report.latencies_ms[name] += times
                medians[name] = statistics.median(times)
            report.block_added_ms.append(medians["dynasor"] - medians["plain"])
            out(
                f"[bench] latency block {b + 1}/{-(-len(lat) // size)}: median plain "
                f"{medians['plain']:.2f} ms, dynasor {medians['dynasor']:.2f} ms"
            )
    finally:
        for client in clients.values():
            await client.aclose()
    return report


async def middleware_micro_us(iterations: int = 2000) -> dict[str, float]:
    """Median microseconds per request through a trivial ASGI app, without and with the middleware.

    Requests carry the same program headers as the benchmark; no socket is used.
    """
    from dynasor_agents.server import DynasorMiddleware

    payload = b'{"choices": [{"text": "x"}], "usage": {"prompt_tokens": 8, "completion_tokens": 1}}'

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the whole body comes in one message
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    stacks = {"plain": app, "dynasor": DynasorMiddleware(app)}

    async def call(stack: Any, verb: str, path: str, hdrs: dict[str, str], body: bytes) -> None:
        raw = [(k.lower().encode(), v.encode()) for k, v in hdrs.items()]
        raw.append((b"content-type", b"application/json"))
        scope = dict(type="http", method=verb, path=path, root_path="", headers=raw)
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # empty: a client that waits
        inbox.put_nowait({"type": "http.request", "body": body, "more_body": False})
        await stack(scope, inbox.get, asyncio.Queue().put)  # the response is dropped

    times: dict[str, list[float]] = {n: [] for n in SERVERS}
    reqs = Workload(max_tokens=1).batch("micro", iterations)
    for i, req in enumerate(reqs):
        body = json.dumps(req.body).encode()
        for name in SERVERS if i % 2 == 0 else SERVERS[::-1]:
            started = time.perf_counter()
            await call(stacks[name], "POST", "/v1/completions", req.headers, body)
            times[name].append((time.perf_counter() - started) * 1e6)
            if req.last:
                await call(stacks[name], "DELETE", program_path(req.program_id), {}, b"")
    return {n: statistics.median(t) for n, t in times.items()}


def render(report: OverheadReport) -> list[str]:
    """The table, the spread of the figures and the two verdicts."""
    low, high = bootstrap_interval(report.latencies_ms["plain"], report.latencies_ms["dynasor"])
    blocks = sorted(report.block_added_ms)
    ratios = sorted(report.round_ratios)
    lines = [
        format_table(report),
        "",
        f"per-round throughput ratio: median {statistics.median(ratios):.3f}, "
        f"range {ratios[0]:.3f}..{ratios[-1]:.3f} over {len(ratios)} rounds",
        f"added median latency: 95% bootstrap interval {low:.2f}..{high:.2f} ms; "
        f"per block pair {statistics.median(blocks):.2f} ms median, range "
        f"{blocks[0]:.2f}..{blocks[-1]:.2f} over {len(blocks)} pairs",
    ]
    wrong = {n: report.load[n].wrong_length for n in SERVERS}
    lines.append(
        "ignore_eos honored: every request generated exactly max_tokens"
        if not any(wrong.values())
        else f"WARNING: responses with completion_tokens != max_tokens: {wrong}"
    )
    if report.micro_us:
        micro = report.micro_us
        lines.append(
            f"in process (trivial app): {micro['plain']:.1f} us without, "
            f"{micro['dynasor']:.1f} us with the middleware -> "
            f"{micro['dynasor'] - micro['plain']:.1f} us added per request"
        )
    return [*lines, "", *verdicts(report.ratio, report.added_ms)]
