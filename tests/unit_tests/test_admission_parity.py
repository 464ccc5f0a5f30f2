"""The middleware and the simulator admit requests alike: one table of cases, both paths.

The middleware path is the real :class:`DynasorMiddleware` in front of a fake vLLM
(what vLLM receives: the rewritten ``max_tokens`` and ``priority``, or the error
reply's code); the simulator path is :class:`dynasor_bench.sim.SimComponent`
(what its engine runs, or the refusal's code). Both start from the same
configuration and clock, see the same requests and usage in the same order, and
must make the same decision at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynasor_agents.protocol import Hints
from dynasor_agents.server import ProgramTable, Refused, ServerConfig, make_policy
from dynasor_bench.sim import SimComponent

from .server_fakes import Clock, FakeVLLM, build, chat, client_for, stop


@dataclass(frozen=True)
class Request:
    """A request of ``program``: its hints, ``max_tokens`` and ``n``; each choice then
    generates ``generate`` tokens (or fewer, when capped)."""

    program: str
    hints: Hints
    max_tokens: int | None
    n: int = 1
    generate: int = 20


@dataclass(frozen=True)
class Stop:
    """The program's client stops it."""

    program: str


Step = Request | Stop
Decision = tuple[int | None, int | None] | str  # (max_tokens, priority) run, or a refusal code

CASES: list[Step] = [
    Request("a", Hints(), max_tokens=64),
    Request("b", Hints(budget=100), max_tokens=64, n=3, generate=30),  # clamp 33, reserve 99
    Request("b", Hints(budget=100), max_tokens=64),  # a repeated budget: 10 left
    Request("b", Hints(budget=100), max_tokens=64),  # spent: budget_exhausted
    Request("c", Hints(certainty=0.9, remaining=2), max_tokens=16, n=2, generate=16),
    Request("c", Hints(certainty=0.5, budget=50), max_tokens=None, n=2),  # clamp an unset cap
    Request("d", Hints(), max_tokens=8),  # the table holds three programs
    Stop("a"),
    Request("a", Hints(), max_tokens=64),  # stopped: program_stopped
    Request("b", Hints(budget=40), max_tokens=32, n=4, generate=5),  # a new budget resets
    Request("c", Hints(certainty=0.99), max_tokens=64),  # 10 of its budget left
]
CONFIG = {"scheduling": "dynasor", "max_programs": 3, "aging": 100.0}


async def middleware_decisions(steps: list[Step]) -> list[Decision]:
    clock = Clock()
    fake = FakeVLLM()
    decisions: list[Decision] = []
    async with client_for(build(fake, clock, **CONFIG)) as client:
        for step in steps:
            clock.now += 1.0
            if isinstance(step, Stop):
                await stop(client, step.program)
                continue
            body: dict[str, object] = {"n": step.n, "generate": step.generate}
            if step.max_tokens is not None:
                body["max_tokens"] = step.max_tokens
            before = len(fake.received)
            response = await chat(client, step.program, headers=step.hints.to_headers(), **body)
            if response.status_code != 200:
                decisions.append(response.json()["error"]["code"])
                assert len(fake.received) == before  # a refusal never reaches vLLM
                continue
            sent = fake.last
            decisions.append((sent.get("max_tokens"), sent.get("priority")))
    return decisions


def simulator_decisions(steps: list[Step]) -> list[Decision]:
    clock = Clock()
    config = ServerConfig.model_validate(CONFIG)
    table = ProgramTable(
        clock=clock,
        ttl=config.program_ttl,
        max_programs=config.max_programs,
        default_budget=config.default_budget,
    )
    component = SimComponent(table, make_policy(config))
    decisions: list[Decision] = []
    for step in steps:
        clock.now += 1.0
        if isinstance(step, Stop):
            table.stop(step.program)
            continue
        hints = Hints.from_headers(step.hints.to_headers())  # what the server reads
        sent = component.receive(step.program, hints, max_tokens=step.max_tokens, n=step.n)
        if isinstance(sent, Refused):
            decisions.append(sent.code.value)
            continue
        decisions.append((sent.max_tokens, sent.priority))
        generated = min(step.generate, sent.max_tokens or step.generate) * step.n
        component.end(sent, 7, generated, measured=True)  # what the fake vLLM reports
    return decisions


async def test_middleware_and_simulator_make_the_same_decisions() -> None:
    served = await middleware_decisions(CASES)
    assert served == simulator_decisions(CASES)
    # The table exercises what it claims to: clamps (one with n > 1), each refusal, a
    # reset budget, and priorities that differ between programs.
    caps = [d[0] if isinstance(d, tuple) else d for d in served]
    assert caps == [64, 33, 10, "budget_exhausted", 16, 25, "too_many_programs",
                    "program_stopped", 10, 10]  # fmt: skip
    priorities = {d[1] for d in served if isinstance(d, tuple)}
    assert None not in priorities and len(priorities) > 3
