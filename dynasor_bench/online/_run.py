"""The online load generator: one workload's programs, launched at their arrival times.

:func:`run_online` is open-loop, as real traffic is: each program starts at
its arrival time whether or not earlier ones have finished, runs as a
:class:`~dynasor_agents.SelfConsistency` program against the server, and
becomes one :class:`~dynasor_bench.OnlineRow` with its measured
arrival and finish. Which system it is decides only the controller (fixed
sample count or Certaindex early stop) and whether programs talk to our server
component (``client``); the server's scheduling is whatever the server was
started with.

The clock and the sleep are injected, so tests run a workload in no time.

Example:
    >>> from dynasor_bench.workload._workload import SYSTEMS
    >>> program_id(SYSTEMS[2], 0.25, 7)
    'online-dynasor-r0.25-p7'
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from dynasor_agents import Progress
from dynasor_agents.certainty import normalize_answer
from dynasor_agents.program import DynasorClient
from dynasor_bench.workload._workload import OnlineRow, OnlineWorkload, ProgramSpec, SystemSpec

__all__ = ["program_id", "run_online"]


def program_id(system: SystemSpec, rate: float, index: int) -> str:
    """The program id of workload program ``index`` under ``system`` at ``rate``."""
    return f"online-{system.name}-r{rate:g}-p{index}"


async def run_online(
    workload: OnlineWorkload,
    system: SystemSpec,
    *,
    chat: Any,
    client: DynasorClient | None,
    system_prompt: str,
    max_tokens: int,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    progress: Progress | None = None,
    wall: Callable[[], float] = time.time,
) -> list[OnlineRow]:
    """Run every program of ``workload`` at its arrival time; return one row each.

    Args:
        workload: The programs and their arrival times.
        system: Decides early stop (the controller) and names the rows.
        chat: The chat model the samples go to (``ChatOpenAI`` at the server).
        client: Our server component's client, or ``None`` for a plain server
            (programs then only cancel their own requests, which vLLM aborts).
        system_prompt: The system message of every program.
        max_tokens: Completion-token cap of each sample.
        clock: Seconds, monotonic.
        sleep: Waits that many seconds.
        progress: Progress line (default: one on stderr).
        wall: Seconds since the epoch (the server's clock), for the deadline a
            system with ``deadline_hint`` sends: arrival + hint x unit deadline.

    Returns:
        Rows in workload order. A program that fails is a row with ``error``
        set (it misses its deadline); the run goes on.
    """
    from dynasor_agents.strategies import SelfConsistency

    bar = progress or Progress(len(workload.programs), f"online {system.name} @{workload.rate:g}/s")
    start = clock()

    async def one(spec: ProgramSpec) -> OnlineRow:
        delay = spec.arrival - (clock() - start)
        if delay > 0:
            await sleep(delay)
        pid = program_id(system, workload.rate, spec.index)
        sc = SelfConsistency(
            chat,
            controller=spec.strategy.controller(early_stop=system.early_stop, rounds=system.rounds),
            client=client,
            max_tokens=max_tokens,
            program_ids=lambda: pid,
        )
        messages = [SystemMessage(system_prompt), HumanMessage(spec.question.question)]
        arrival = clock() - start
        fields: dict[str, Any] = {}
        hint = system.deadline_hint
        due = None if hint is None else wall() + hint * spec.deadline_unit
        try:
            result = await sc.ainvoke(messages, deadline=due)
        except Exception as exc:  # one failed program is a missed deadline, not a lost run
            fields = {"completion_tokens": 0, "samples": 0, "answer": None, "correct": False}
            fields["error"] = f"{type(exc).__name__}: {exc}"
        else:
            answer = result.answer
            fields = {
                "completion_tokens": result.completion_tokens,
                "samples": result.samples,
                "answer": answer,
                "correct": answer is not None and answer == normalize_answer(spec.question.gold),
                "stop_reason": str(result.stop_reason) if result.stop_reason else None,
            }
        row = OnlineRow(
            system=system.name,
            rate=workload.rate,
            program=spec.index,
            question=spec.question.id,
            source=spec.question.source,
            strategy=spec.strategy.name,
            arrival=arrival,
            finish=clock() - start,
            deadline_unit=spec.deadline_unit,
            deadline_fixed=spec.fixed_deadline,
            seed=workload.seed,
            **fields,
        )
        bar.update(1, tokens=row.completion_tokens)
        return row

    try:
        rows: Sequence[OnlineRow] = await asyncio.gather(*(one(p) for p in workload.programs))
    finally:
        bar.close()
    return list(rows)
