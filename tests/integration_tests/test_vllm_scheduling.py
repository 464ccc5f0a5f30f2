"""Program-level scheduling and TTL expiry inside the real CPU vLLM.

Each policy gets its own server with ``--max-num-seqs 1``, so requests queue
and the order vLLM serves them in shows the priorities the component set. Every
request generates exactly ``TOKENS`` tokens (``ignore_eos``), so all requests
are the same size and only the order differs.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest

from dynasor_agents.protocol import CERTAINTY_HEADER, PROGRAM_ID_HEADER, REMAINING_HEADER
from dynasor_agents.server import ServerConfig

from .conftest import Backend, ServerPool

pytestmark = pytest.mark.timeout(600)

TOKENS = 12
QUEUE = ["--max-num-seqs", "1"]
# Programs with a request in flight never expire, so a short TTL is safe for all tests.
DYNASOR = ServerConfig(scheduling="dynasor", program_ttl=2.0)


@dataclass(frozen=True)
class Done:
    """One finished request: its program and when it finished (monotonic seconds)."""

    program: str
    at: float


class Workload:
    """Sends same-size requests for named programs and records when each finishes."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.done: list[Done] = []
        self.ids: dict[str, str] = {}
        self._client = httpx.AsyncClient(base_url=backend.base_url, timeout=300)

    async def request(self, program: str, certainty: float, remaining: int) -> None:
        pid = self.ids.setdefault(program, f"{program}-{uuid.uuid4().hex[:8]}")
        headers = {
            PROGRAM_ID_HEADER: pid,
            CERTAINTY_HEADER: str(certainty),
            REMAINING_HEADER: str(remaining),
        }
        body = {
            "model": self.backend.model,
            "prompt": f"{program} says:",
            "max_tokens": TOKENS,
            "ignore_eos": True,
        }
        response = await self._client.post("/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == TOKENS
        self.done.append(Done(program, time.monotonic()))

    def order(self) -> list[str]:
        return [d.program for d in sorted(self.done, key=lambda d: d.at)]

    def finished(self, program: str) -> list[float]:
        return sorted(d.at for d in self.done if d.program == program)

    async def aclose(self) -> None:
        await self._client.aclose()


async def interleaved(backend: Backend) -> Workload:
    """Programs A and B send 4 requests each, arriving alternately A, B, A, B, ..."""
    work = Workload(backend)
    tasks = []
    for i in range(4):
        for program in ("A", "B"):
            tasks.append(asyncio.create_task(work.request(program, 0.5, 4 - i)))
            await asyncio.sleep(0.05)  # a definite arrival order
    await asyncio.gather(*tasks)
    await work.aclose()
    return work


def switches(order: list[str]) -> int:
    return sum(a != b for a, b in itertools.pairwise(order))


async def test_gang_groups_a_programs_requests_where_fcfs_interleaves(
    servers: ServerPool,
) -> None:
    fcfs = await interleaved(servers.get(ServerConfig(scheduling="fcfs"), QUEUE))
    gang = await interleaved(servers.get(ServerConfig(scheduling="gang"), QUEUE))

    def spread(work: Workload, program: str) -> float:
        times = work.finished(program)
        return times[-1] - times[0]

    print(
        f"\nfcfs order {''.join(fcfs.order())} spread A {spread(fcfs, 'A'):.2f}s"
        f"\ngang order {''.join(gang.order())} spread A {spread(gang, 'A'):.2f}s"
    )
    assert switches(fcfs.order()) >= 5  # served in arrival order: interleaved
    assert gang.order() == ["A"] * 4 + ["B"] * 4  # each program's samples together
    assert spread(gang, "A") < 0.75 * spread(fcfs, "A")


async def test_dynasor_runs_a_short_certain_program_before_a_long_uncertain_one(
    servers: ServerPool,
) -> None:
    results = {}
    for policy in ("fcfs", "dynasor"):
        config = DYNASOR if policy == "dynasor" else ServerConfig(scheduling="fcfs")
        work = Workload(servers.get(config, QUEUE))
        long = [asyncio.create_task(work.request("long", 0.1, 6)) for _ in range(6)]
        await asyncio.sleep(0.3)  # the long program is queued first
        await work.request("short", 0.95, 1)
        await asyncio.gather(*long)
        await work.aclose()
        results[policy] = work.order()
        print(f"\n{policy}: {' '.join(results[policy])}")
    assert results["fcfs"][-1] == "short"  # it waits behind all of the long program
    # dynasor: next in line once the running request is done.
    assert results["dynasor"].index("short") <= 2


async def test_aging_lets_a_long_program_finish_while_short_ones_keep_arriving(
    servers: ServerPool,
) -> None:
    work = Workload(servers.get(DYNASOR, QUEUE))
    started = time.monotonic()
    long = [asyncio.create_task(work.request("long", 0.1, 4)) for _ in range(4)]
    shorts = []
    arrivals = 0
    while not all(t.done() for t in long) and time.monotonic() - started < 60:
        shorts.append(asyncio.create_task(work.request(f"short{arrivals}", 0.95, 1)))
        arrivals += 1
        await asyncio.sleep(0.25)  # faster than the server serves them: a queue forms
    last_arrival = time.monotonic()
    await asyncio.gather(*long, *shorts)
    await work.aclose()
    long_done = work.finished("long")[-1]
    print(f"\n{arrivals} short programs arrived; long finished {long_done - started:.1f}s in")
    assert all(t.done() for t in long) and long_done <= last_arrival
    # Short programs that arrived before it finished were still waiting: it was not
    # simply served after the stream of short ones dried up.
    assert any(d.at > long_done for d in work.done if d.program.startswith("short"))


async def test_idle_programs_expire_after_the_ttl(servers: ServerPool) -> None:
    ttl_backend = servers.get(DYNASOR, QUEUE)
    work = Workload(ttl_backend)
    await work.request("ttl", 0.5, 1)
    await work.aclose()
    pid = work.ids["ttl"]
    async with httpx.AsyncClient(base_url=ttl_backend.root_url, timeout=30) as client:
        path = f"/v1/dynasor/programs/{pid}"
        assert (await client.get(path)).json()["state"] == "active"
        await asyncio.sleep(3.5)
        gone = await client.get(path)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "program_not_found"
        metrics = (await client.get("/metrics")).text
    expired = re.findall(r"^dynasor_programs_expired_total ([0-9.e+-]+)$", metrics, re.M)
    assert expired and float(expired[0]) >= 1
