"""The client half of the protocol: DynasorClient (retries, typed errors) and Program.

Every test talks to an ``httpx.MockTransport`` (or, for the round trip, to the
real middleware through ``httpx.ASGITransport``): no sockets, no vLLM.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from dynasor_agents.errors import (
    DynasorError,
    InvalidInputError,
    ProgramNotFoundError,
    ProgramStoppedError,
    ServerError,
)
from dynasor_agents.program import DynasorClient, Program, raise_for_error
from dynasor_agents.protocol import (
    BUDGET_HEADER,
    CERTAINTY_HEADER,
    DEADLINE_HEADER,
    PROGRAM_ID_HEADER,
    ErrorCode,
    Hints,
    ProgramInfo,
    error_body,
    hints_path,
    program_path,
)
from dynasor_agents.server import DynasorMiddleware

PID = "prog-1"
TIMEOUT = 2.0


def program_json(pid: str = PID, **fields: Any) -> dict[str, Any]:
    """A ProgramInfo body as the server sends it."""
    base = ProgramInfo(id=pid, state="active", created=1.0, last_activity=2.0)
    return {**base.model_dump(), **fields}


class Server:
    """A scripted fake server: answers each request with the next scripted reply.

    A reply is an ``httpx.Response``, an exception to raise (a transport error),
    or a callable building a response from the request. The last reply repeats.
    """

    def __init__(self, *replies: httpx.Response | Exception | Callable[..., httpx.Response]):
        self.replies = list(replies) or [httpx.Response(200, json=program_json())]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, httpx.Response):
            return reply
        return reply(request)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)

    def client(self, base_url: str = "http://h:1/v1", **kw: Any) -> DynasorClient:
        return DynasorClient(base_url, transport=httpx.MockTransport(self), **kw)


def error(code: ErrorCode, status: int, message: str = "nope") -> httpx.Response:
    return httpx.Response(status, json=error_body(code, message))


@pytest.fixture
async def clients() -> AsyncIterator[list[DynasorClient]]:
    """Clients made in a test are closed after it."""
    made: list[DynasorClient] = []
    yield made
    for client in made:
        await client.aclose()


def make(clients: list[DynasorClient], server: Server, **kw: Any) -> DynasorClient:
    client = server.client(**kw)
    clients.append(client)
    return client


async def within(aw: Any) -> Any:
    return await asyncio.wait_for(aw, TIMEOUT)


# ----------------------------------------------------------------------------- DynasorClient


@pytest.mark.parametrize(
    ("base_url", "root"),
    [
        ("http://h:1/v1", "http://h:1"),
        ("http://h:1/v1/", "http://h:1"),
        ("http://h:1", "http://h:1"),
        ("http://h:1/", "http://h:1"),
        ("https://h/prefix/v1", "https://h/prefix"),
    ],
)
async def test_base_url_is_normalised_to_the_server_root(
    clients: list[DynasorClient], base_url: str, root: str
) -> None:
    server = Server()
    client = make(clients, server, base_url=base_url)
    assert client.base_url == root
    await within(client.get(PID))
    assert str(server.requests[0].url) == f"{root}/v1/dynasor/programs/{PID}"


@pytest.mark.parametrize("base_url", ["h:1", "ftp://h/v1", "", "/v1", "localhost:8000/v1"])
def test_base_url_must_be_http(base_url: str) -> None:
    with pytest.raises(InvalidInputError, match="base_url"):
        DynasorClient(base_url)


@pytest.mark.parametrize(
    ("api_key", "expected"), [("sk-1", "Bearer sk-1"), (None, None), ("", None)]
)
async def test_authorization_header_is_sent_only_with_an_api_key(
    clients: list[DynasorClient], api_key: str | None, expected: str | None
) -> None:
    server = Server(httpx.Response(500), httpx.Response(200, json=program_json()))
    client = make(clients, server, api_key=api_key)
    await within(client.get(PID))
    assert [r.headers.get("authorization") for r in server.requests] == [expected] * 2


async def test_send_hints_posts_only_the_set_fields_and_parses_program_info(
    clients: list[DynasorClient],
) -> None:
    reply = program_json(certainty=0.5, budget=10, requests=3, prompt_tokens=4)
    server = Server(httpx.Response(200, json=reply))
    client = make(clients, server)
    got = await within(client.send_hints(PID, Hints(certainty=0.5, budget=10)))
    assert isinstance(got, ProgramInfo)
    assert (got.id, got.certainty, got.budget, got.requests, got.prompt_tokens) == (
        PID,
        0.5,
        10,
        3,
        4,
    )
    request = server.requests[0]
    assert (request.method, request.url.path) == ("POST", hints_path(PID))
    assert request.headers["content-type"] == "application/json"
    sent = server.body()
    assert None not in sent.values() and "deadline" not in sent
    # `stop` always has a value; sending `false` leaves the server's view unchanged.
    assert sent.pop("stop", False) is False
    assert sent == {"certainty": 0.5, "budget": 10}


async def test_a_stop_hint_posts_stop_true(clients: list[DynasorClient]) -> None:
    server = Server(httpx.Response(200, json=program_json(state="stopped")))
    got = await within(make(clients, server).send_hints(PID, Hints(stop=True)))
    assert got.state == "stopped" and server.body() == {"stop": True}


async def test_get_and_finish_use_get_and_delete(clients: list[DynasorClient]) -> None:
    server = Server(
        httpx.Response(200, json=program_json()),
        httpx.Response(200, json=program_json(state="finished")),
    )
    client = make(clients, server)
    assert (await within(client.get(PID))).state == "active"
    assert (await within(client.finish(PID))).state == "finished"
    assert [(r.method, r.url.path) for r in server.requests] == [
        ("GET", program_path(PID)),
        ("DELETE", program_path(PID)),
    ]


async def test_409_program_stopped_raises_program_stopped_error_at_once(
    clients: list[DynasorClient],
) -> None:
    server = Server(error(ErrorCode.PROGRAM_STOPPED, 409, "program prog-1 is stopped"))
    with pytest.raises(ProgramStoppedError) as caught:
        await within(make(clients, server).get(PID))
    err = caught.value
    assert (err.program_id, err.code, err.status_code) == (PID, "program_stopped", 409)
    assert err.message == "program prog-1 is stopped"
    assert str(err) == f"program prog-1 is stopped (program {PID})"
    assert server.calls == 1


async def test_404_raises_program_not_found_error_at_once(clients: list[DynasorClient]) -> None:
    server = Server(error(ErrorCode.PROGRAM_NOT_FOUND, 404))
    with pytest.raises(ProgramNotFoundError) as caught:
        await within(make(clients, server).finish("gone"))
    assert (caught.value.program_id, caught.value.code, caught.value.status_code) == (
        "gone",
        "program_not_found",
        404,
    )
    assert server.calls == 1


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (error(ErrorCode.INVALID_HINTS, 400), "invalid_hints"),
        (error(ErrorCode.INVALID_PROGRAM_ID, 400), "invalid_program_id"),
        (error(ErrorCode.METHOD_NOT_ALLOWED, 405), "method_not_allowed"),
        (httpx.Response(401, json={"error": "Unauthorized"}), "server_error"),
        (httpx.Response(429, text="slow down"), "server_error"),
    ],
)
async def test_other_4xx_raise_server_error_without_retrying(
    clients: list[DynasorClient], reply: httpx.Response, code: str
) -> None:
    server = Server(reply)
    with pytest.raises(ServerError) as caught:
        await within(make(clients, server).send_hints(PID, Hints(budget=1)))
    assert type(caught.value) is ServerError
    assert (caught.value.code, caught.value.status_code, caught.value.program_id) == (
        code,
        reply.status_code,
        PID,
    )
    assert server.calls == 1


async def test_5xx_is_retried_until_it_succeeds(clients: list[DynasorClient]) -> None:
    server = Server(
        httpx.Response(500, json={"error": {"message": "boom"}}),
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(200, json=program_json(budget=9)),
    )
    got = await within(make(clients, server, attempts=3).get(PID))
    assert got.budget == 9 and server.calls == 3


@pytest.mark.parametrize("attempts", [1, 3])
async def test_5xx_is_raised_after_the_last_attempt(
    clients: list[DynasorClient], attempts: int
) -> None:
    server = Server(httpx.Response(503, text="unavailable"))
    with pytest.raises(ServerError) as caught:
        await within(make(clients, server, attempts=attempts).get(PID))
    assert caught.value.status_code == 503 and caught.value.program_id == PID
    assert caught.value.message == "server answered HTTP 503"
    assert server.calls == attempts


async def test_transport_errors_are_retried_then_raised(clients: list[DynasorClient]) -> None:
    server = Server(httpx.ConnectError("connection refused"))
    with pytest.raises(httpx.ConnectError, match="connection refused"):
        await within(make(clients, server, attempts=3).send_hints(PID, Hints(stop=True)))
    assert server.calls == 3
    assert all(r.url.path == hints_path(PID) for r in server.requests)


async def test_a_transient_transport_error_is_retried(clients: list[DynasorClient]) -> None:
    server = Server(httpx.ReadTimeout("slow"), httpx.Response(200, json=program_json()))
    assert (await within(make(clients, server).get(PID))).id == PID
    assert server.calls == 2


async def test_a_non_json_success_body_is_returned_as_none(clients: list[DynasorClient]) -> None:
    server = Server(httpx.Response(200, text="ok"))
    assert await within(make(clients, server).request("GET", "/anything", PID)) is None


async def test_one_pooled_http_client_per_loop(clients: list[DynasorClient]) -> None:
    client = make(clients, Server())
    first = client._client()
    assert client._client() is first
    await client.aclose()
    assert first.is_closed
    assert client._client() is not first
    await client.aclose()
    await client.aclose()  # nothing left to close: no error


# ----------------------------------------------------------------------------- raise_for_error


@pytest.mark.parametrize("status", [200, 201, 204, 302, 399])
def test_raise_for_error_ignores_non_errors(status: int) -> None:
    stopped = error_body(ErrorCode.PROGRAM_STOPPED, "stopped")
    raise_for_error(status, stopped, PID)  # returns without raising


@pytest.mark.parametrize(
    ("status", "body", "cls", "code", "message"),
    [
        (502, None, ServerError, "server_error", "server answered HTTP 502"),
        (500, "Internal Server Error", ServerError, "server_error", "server answered HTTP 500"),
        (500, ["error"], ServerError, "server_error", "server answered HTTP 500"),
        (401, {"error": "Unauthorized"}, ServerError, "server_error", "server answered HTTP 401"),
        (400, {"detail": "x"}, ServerError, "server_error", "server answered HTTP 400"),
        (400, {"error": None}, ServerError, "server_error", "server answered HTTP 400"),
        (400, {"error": {"message": "bad"}}, ServerError, "server_error", "bad"),
        (400, {"error": {"code": None, "message": ""}}, ServerError, "server_error", "server"),
        (400, {"error": {"code": 123, "message": "odd"}}, ServerError, "123", "odd"),
        (400, {"error": {"code": "invalid_hints", "message": "m"}}, ServerError,
         "invalid_hints", "m"),
        (409, {"error": {"code": "program_stopped"}}, ProgramStoppedError,
         "program_stopped", "server"),
        (404, {"error": {"code": "program_not_found", "message": "gone"}}, ProgramNotFoundError,
         "program_not_found", "gone"),
        # The code decides the class, whatever the status.
        (400, {"error": {"code": "program_stopped", "message": "s"}}, ProgramStoppedError,
         "program_stopped", "s"),
    ],
)  # fmt: skip
def test_raise_for_error_maps_bodies_to_typed_errors(
    status: int, body: Any, cls: type[ServerError], code: str, message: str
) -> None:
    with pytest.raises(ServerError) as caught:
        raise_for_error(status, body, PID)
    err = caught.value
    assert type(err) is cls and isinstance(err, DynasorError)
    assert (err.status_code, err.program_id, err.code) == (status, PID, code)
    assert err.message.startswith(message)


def test_raise_for_error_without_a_program() -> None:
    with pytest.raises(ServerError) as caught:
        raise_for_error(500, None, None)
    assert caught.value.program_id is None and str(caught.value) == "server answered HTTP 500"


# ----------------------------------------------------------------------------- Program


@pytest.mark.parametrize("pid", ["a" * 129, "bad id", "", "../etc", "a/b", "ü", "\n", "x\ny"])
def test_program_id_is_validated(pid: str) -> None:
    with pytest.raises(InvalidInputError, match="program id") as caught:
        Program(pid)
    assert isinstance(caught.value, ValueError)
    assert repr(pid) in caught.value.message


@pytest.mark.parametrize("pid", ["x\n", "a" * 128 + "\n"])
def test_program_id_with_a_trailing_newline_is_rejected(pid: str) -> None:
    with pytest.raises(InvalidInputError, match="program id"):
        Program(pid)


def test_program_id_may_be_128_safe_characters() -> None:
    pid = "Az09._:-" * 16
    assert Program(pid).id == pid
    assert repr(Program("p1")) == "Program('p1')"


def test_program_id_defaults_to_a_fresh_uuid4() -> None:
    a, b = Program(), Program()
    assert uuid.UUID(a.id).version == 4 and str(uuid.UUID(a.id)) == a.id
    assert a.id != b.id
    assert not a.stopped and a.client is None and a.in_flight == 0


def test_headers_carry_the_id_and_the_set_hints() -> None:
    program = Program("p1")
    assert program.headers() == {PROGRAM_ID_HEADER: "p1"}
    assert program.headers(Hints()) == {PROGRAM_ID_HEADER: "p1"}
    assert program.headers(Hints(stop=True)) == {PROGRAM_ID_HEADER: "p1"}  # stop has no header
    hints = Hints(certainty=0.8, budget=120, deadline=1700000000.25)
    assert program.headers(hints) == {
        PROGRAM_ID_HEADER: "p1",
        CERTAINTY_HEADER: "0.8",
        BUDGET_HEADER: "120",
        DEADLINE_HEADER: "1700000000.250",
    }
    assert Hints.from_headers(program.headers(hints)) == hints  # the server reads them back
    program.headers()["X-Other"] = "x"
    assert program.headers() == {PROGRAM_ID_HEADER: "p1"}  # a fresh dict each time


async def test_track_and_cancel_inflight_cancel_real_tasks() -> None:
    program = Program("p1")
    gate = asyncio.Event()
    done = asyncio.ensure_future(asyncio.sleep(0))
    await done
    blocked = [asyncio.ensure_future(gate.wait()) for _ in range(2)]
    for task in [*blocked, done]:
        assert program.track(task) is task
    assert program.in_flight == 2

    assert await within(program.cancel_inflight()) == 2
    assert all(task.cancelled() for task in blocked) and not done.cancelled()
    assert program.in_flight == 0
    assert await within(program.cancel_inflight()) == 0


async def test_cancel_inflight_waits_for_tasks_that_swallow_the_cancel() -> None:
    program = Program("p1")
    cleaned: list[str] = []

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            cleaned.append("closed")
        return "done"

    task = program.track(asyncio.ensure_future(stubborn()))
    await asyncio.sleep(0)
    assert await within(program.cancel_inflight()) == 1
    assert cleaned == ["closed"] and task.result() == "done"
    assert program.in_flight == 0


async def test_stop_is_idempotent_and_sends_one_stop_hint(clients: list[DynasorClient]) -> None:
    server = Server(httpx.Response(200, json=program_json(state="stopped", aborted=2)))
    program = Program("p1", client=make(clients, server))
    first = program.track(asyncio.ensure_future(asyncio.Event().wait()))
    got = await within(program.stop())
    assert isinstance(got, ProgramInfo) and (got.state, got.aborted) == ("stopped", 2)
    assert program.stopped and first.cancelled()
    assert server.calls == 1 and server.body() == {"stop": True}
    assert server.requests[0].url.path == hints_path("p1")

    # A second stop still cancels local work, but tells the server nothing.
    second = program.track(asyncio.ensure_future(asyncio.Event().wait()))
    assert await within(program.stop()) is None
    assert second.cancelled() and server.calls == 1


async def test_stop_without_a_client_only_cancels_local_tasks() -> None:
    program = Program("p1")
    task = program.track(asyncio.ensure_future(asyncio.Event().wait()))
    assert await within(program.stop()) is None
    assert program.stopped and task.cancelled() and program.in_flight == 0
    assert await within(program.send_hints(Hints(certainty=0.5))) is None
    assert await within(program.stop()) is None


async def test_program_send_hints_goes_through_its_client(clients: list[DynasorClient]) -> None:
    server = Server(httpx.Response(200, json=program_json("p1", certainty=0.25)))
    program = Program("p1", client=make(clients, server))
    got = await within(program.send_hints(Hints(certainty=0.25)))
    assert got is not None and got.certainty == 0.25
    assert server.requests[0].url.path == hints_path("p1") and not program.stopped


async def test_a_failed_stop_can_be_retried(clients: list[DynasorClient]) -> None:
    server = Server(
        httpx.ConnectError("down"), httpx.Response(200, json=program_json(state="stopped"))
    )
    program = Program("p1", client=make(clients, server, attempts=1))
    with pytest.raises(httpx.ConnectError):
        await within(program.stop())
    got = await within(program.stop())
    assert got is not None and got.state == "stopped"
    assert server.calls == 2


def test_stop_from_inside_a_tracked_task_does_not_deadlock() -> None:
    # A private loop: if the task deadlocks, the session loop is not left with it.
    loop = asyncio.new_event_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    server = Server(httpx.Response(200, json=program_json("p1", state="stopped")))

    async def scenario() -> bool:
        client = server.client()
        program = Program("p1", client=client)

        async def sample() -> ProgramInfo | None:
            return await program.stop()  # a sample that decides the program is over

        task = program.track(asyncio.ensure_future(sample()))
        await asyncio.wait({task}, timeout=0.5)
        finished = task.done()
        if not finished:  # break the self-gather so the loop can close cleanly
            task._fut_waiter.set_result([None])  # type: ignore[attr-defined]
            await asyncio.wait({task}, timeout=0.5)
        await client.aclose()
        return finished

    try:
        finished = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert finished and server.calls == 1


# ----------------------------------------------------------------------------- round trip


async def test_client_round_trip_against_the_real_middleware(
    clients: list[DynasorClient],
) -> None:
    async def vllm(scope: Scope, receive: Receive, send: Send) -> None:  # never reached
        raise AssertionError("the control endpoints must not reach vLLM")

    client = DynasorClient(
        "http://dynasor/v1",
        transport=httpx.ASGITransport(app=DynasorMiddleware(vllm, registry=CollectorRegistry())),
    )
    clients.append(client)
    with pytest.raises(ProgramNotFoundError):
        await within(client.get(PID))
    program = Program(PID, client=client)
    info = await within(program.send_hints(Hints(certainty=0.4, budget=64)))
    assert info is not None and (info.state, info.certainty, info.budget) == ("active", 0.4, 64)
    stopped = await within(program.stop())
    assert stopped is not None and stopped.state == "stopped" and stopped.certainty == 0.4
    assert (await within(client.finish(PID))).state == "finished"
    with pytest.raises(ServerError) as caught:
        await within(client.request("POST", hints_path(PID), PID, {"certainty": 2.0}))
    assert caught.value.code == "invalid_hints"
