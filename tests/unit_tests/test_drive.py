"""The one async driver: requests and tags, cancellation, and nesting (composition)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from dynasor_agents import DynasorClient, Program
from dynasor_agents.strategies._drive import (
    Await,
    Cancel,
    Completion,
    Core,
    Finish,
    Launch,
    SampleCall,
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
