"""The one async driver: requests and tags, cancellation, and nesting (composition)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from dynasor_agents import (
    BudgetExhaustedError,
    DynasorClient,
    Program,
    ProgramStoppedError,
    StopReason,
)
from dynasor_agents.strategies._drive import (
    Action,
    Await,
    Cancel,
    Completion,
    Core,
    Finish,
    Launch,
    SampleCall,
    await_round,
    drive,
)


class Server:
    """Records the control requests a driver sends."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.calls.append((request.method, body))
        pid = request.url.path.split("/")[4]
        return httpx.Response(200, json={"id": pid, "state": "x", "created": 1, "last_activity": 1})

    def program(self, pid: str) -> Program:
        client = DynasorClient("http://dynasor.test", transport=httpx.MockTransport(self))
        return Program(pid, client=client)


async def echo(call: SampleCall) -> Completion:
    delay = float(call.request.get("delay", 0.0))
    await asyncio.sleep(delay)
    return Completion(str(call.request["say"]), 1, call.max_tokens or 0)


def two_kinds() -> Core[list[tuple[str, Any]]]:
    yield Launch(1, max_tokens=3, request={"say": "slow", "delay": 0.02}, tag="a")
    yield Launch(1, max_tokens=5, request={"say": "fast"}, tag="b")
    got = []
    for _ in range(2):
        done: Completion = yield Await()
        got.append((done.text, done.tag, done.completion_tokens))
    yield Finish(stop=False)
    return got


async def test_requests_reach_the_sampler_and_tags_come_back() -> None:
    server = Server()
    result = await drive(two_kinds(), sampler=echo, program=server.program("tags"))
    assert result == [("fast", "b", 5), ("slow", "a", 3)]  # in finish order
    assert server.calls == [("DELETE", {})]  # finished, not stopped


def cancels_after_first() -> Core[str]:
    yield Launch(3, request={"say": "slow", "delay": 5.0}, tag="slow")
    yield Launch(1, request={"say": "fast"}, tag="fast")
    done: Completion = yield Await()
    leftovers: list[Completion] = yield Cancel()
    yield Finish(stop=True)
    return f"{done.text}+{len(leftovers)}"


async def test_nested_drive_cancels_only_its_own_requests_and_leaves_the_program_alone() -> None:
    server = Server()
    program = server.program("outer")
    outer = program.track(asyncio.ensure_future(asyncio.sleep(5)))  # the parent's request
    inner = await asyncio.wait_for(
        drive(cancels_after_first(), sampler=echo, program=program, nested=True), 2
    )
    assert inner == "fast+0"
    assert not outer.cancelled() and not outer.done()  # the parent's work survives
    assert server.calls == []  # neither Finish nor the end told the server anything
    outer.cancel()


async def test_top_level_drive_stops_the_program_when_the_core_fails() -> None:
    def broken() -> Core[None]:
        yield Launch(2, request={"say": "slow", "delay": 5.0})
        raise ValueError("core bug")

    server = Server()
    program = server.program("broken")
    with pytest.raises(ValueError, match="core bug"):
        await asyncio.wait_for(drive(broken(), sampler=echo, program=program), 2)
    assert server.calls == [("POST", {"stop": True})] and program.in_flight == 0


# -- await_round: the wait for a round's requests, refusals included -----------------------

RoundEnd = tuple[StopReason | None, list[Completion]]


def finish_round(waiting: Core[RoundEnd], reply: Any) -> RoundEnd:
    """Send the last reply of a round; what ``await_round`` returned."""
    with pytest.raises(StopIteration) as end:
        waiting.send(reply)
    result: RoundEnd = end.value.value
    return result


def never(pending: int) -> StopReason | None:
    return None


def test_a_refusal_ends_the_round_only_after_the_admitted_requests_came_in() -> None:
    texts: list[str] = []
    waiting = await_round(
        3, take=lambda done: texts.append(done.text), settled=never, answered=lambda: bool(texts)
    )
    assert next(waiting) == Await()
    assert waiting.throw(BudgetExhaustedError("spent")) == Await()  # two were admitted
    assert waiting.send(Completion("a")) == Await()
    assert waiting.send(Completion("b")) == Cancel()
    assert finish_round(waiting, [Completion("late")]) == (
        StopReason.MAX_TOKENS,
        [Completion("late")],
    )
    assert texts == ["a", "b"]  # the stragglers are the core's to record


def test_a_refusal_with_nothing_to_answer_with_is_raised_once_the_round_is_in() -> None:
    refused = BudgetExhaustedError("spent")
    waiting = await_round(2, take=lambda done: None, settled=never, answered=lambda: False)
    next(waiting)
    assert waiting.throw(refused) == Await()
    with pytest.raises(BudgetExhaustedError) as raised:
        waiting.send(Completion("unusable"))
    assert raised.value is refused


def test_a_stopped_program_ends_the_round_at_once_or_raises_without_an_answer() -> None:
    waiting = await_round(3, take=lambda done: None, settled=never, answered=lambda: True)
    next(waiting)
    assert waiting.throw(ProgramStoppedError("stopped")) == Cancel()
    assert finish_round(waiting, []) == (StopReason.SERVER_STOPPED, [])

    empty = await_round(3, take=lambda done: None, settled=never, answered=lambda: False)
    next(empty)
    with pytest.raises(ProgramStoppedError):
        empty.throw(ProgramStoppedError("stopped"))


def test_a_follow_up_launch_is_waited_for_and_settled_stops_the_round_early() -> None:
    follow_up = Launch(1, request="score a", tag="score")
    asked: list[int] = []

    def take(done: Completion) -> Launch | None:
        return follow_up if done.tag == "candidate" else None

    def settled(pending: int) -> StopReason | None:
        asked.append(pending)
        return StopReason.CERTAIN if pending == 1 else None

    waiting = await_round(3, take=take, settled=settled, answered=lambda: True)
    actions: list[Action] = [next(waiting)]
    actions.append(waiting.send(Completion("a", tag="candidate")))  # launches its score
    actions.append(waiting.send(None))
    actions.append(waiting.send(Completion("0.9", tag="score")))  # 2 pending: go on
    actions.append(waiting.send(Completion("b", tag="other")))  # 1 pending: certain
    assert actions == [Await(), follow_up, Await(), Await(), Cancel()]
    assert asked == [2, 1]
    assert finish_round(waiting, []) == (StopReason.CERTAIN, [])


def test_a_round_that_comes_in_whole_returns_no_reason_and_cancels_nothing() -> None:
    waiting = await_round(1, take=lambda done: None, settled=never, answered=lambda: True)
    assert next(waiting) == Await()
    assert finish_round(waiting, Completion("only")) == (None, [])
