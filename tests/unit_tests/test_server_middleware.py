"""DynasorMiddleware around a fake vLLM app: attribution, usage, pass-through, control
endpoints and stop.

Budgets, hint validation, ownership and the table's limits are in
``test_server_programs.py``; scheduling and request rewriting in
``test_server_scheduling.py``; the fakes in ``server_fakes.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from dynasor_agents.protocol import (
    API_PREFIX,
    BUDGET_HEADER,
    CERTAINTY_HEADER,
    DEADLINE_HEADER,
    PROGRAM_ID_HEADER,
    ErrorCode,
    ProgramInfo,
    hints_path,
    program_path,
)
from dynasor_agents.server import DynasorMiddleware
from dynasor_agents.server._middleware import MAX_HINT_BODY

from .server_fakes import (
    CHAT,
    COMPLETIONS,
    PID,
    SSE,
    USAGE,
    Clock,
    Conn,
    FakeVLLM,
    assert_error,
    call,
    chat,
    completion,
    dumps,
    info,
    read_body,
    respond,
    scope_for,
    sse_data,
    sse_events,
    start,
    stop,
    until,
    within,
)

# ----------------------------------------------------------------------------- attribution


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("compact", [True, False])
async def test_json_responses_are_attributed_and_their_usage_counted(
    client: httpx.AsyncClient, fake: FakeVLLM, path: str, compact: bool
) -> None:
    for _ in range(2):
        response = await chat(client, path=path, compact=compact)
        assert response.status_code == 200
        assert response.content == dumps(completion({}), compact=compact)  # untouched
    # vLLM still sees the program header.
    assert Headers(scope=fake.scopes[-1])[PROGRAM_ID_HEADER] == PID
    got = await info(client)
    assert (got.id, got.state, got.requests, got.in_flight) == (PID, "active", 2, 0)
    assert (got.prompt_tokens, got.completion_tokens) == (14, 22)


@pytest.mark.parametrize("split", [1, 2, 5, 17, 64, None])
@pytest.mark.parametrize("compact", [True, False])
async def test_sse_usage_is_counted_even_when_events_are_split_across_body_chunks(
    client: httpx.AsyncClient, split: int | None, compact: bool
) -> None:
    request: dict[str, Any] = {"stream": True, "split": split, "compact": compact}
    response = await chat(client, **request)
    assert response.status_code == 200
    assert response.content == b"".join(sse_events(request))  # forwarded byte for byte
    got = await info(client)
    assert (got.requests, got.prompt_tokens, got.completion_tokens) == (1, 7, 11)


async def test_sse_with_cumulative_usage_in_every_chunk_keeps_the_latest(
    client: httpx.AsyncClient,
) -> None:
    await chat(client, stream=True, continuous=True, chunks=4, split=3)
    await chat(client, stream=True, continuous=True, chunks=2)
    got = await info(client)
    assert (got.prompt_tokens, got.completion_tokens) == (14, 22)  # the final usage, twice


async def test_error_responses_add_no_tokens(client: httpx.AsyncClient) -> None:
    response = await chat(client, status=400)
    assert response.status_code == 400
    got = await info(client)
    assert (got.requests, got.prompt_tokens, got.completion_tokens) == (1, 0, 0)


async def test_concurrent_requests_are_all_counted(client: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(chat(client, stream=bool(i % 2), split=4) for i in range(8)))
    assert all(r.status_code == 200 for r in responses)
    got = await info(client)
    assert (got.requests, got.in_flight, got.prompt_tokens, got.completion_tokens) == (
        8,
        0,
        56,
        88,
    )


async def test_an_inner_app_exception_still_ends_the_request(
    client: httpx.AsyncClient, mw: DynasorMiddleware
) -> None:
    with pytest.raises(RuntimeError, match="engine crashed"):
        crash: dict[str, Any] = {"raise": True}
        await chat(client, **crash)
    record = mw.table.get(PID)
    assert record is not None and not record.in_flight
    got = await info(client)
    assert (got.requests, got.in_flight, got.state) == (1, 0, "active")


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": [1], "completion_tokens": {}},
        {"prompt_tokens": "many", "completion_tokens": "few"},
        {"prompt_tokens": None, "completion_tokens": None},
        [7, 11],
        "7/11",
    ],
)
async def test_malformed_usage_is_ignored_not_fatal(client: httpx.AsyncClient, usage: Any) -> None:
    response = await chat(client, usage=usage)
    assert response.status_code == 200 and response.json()["usage"] == usage  # forwarded
    got = await info(client)
    assert (got.requests, got.prompt_tokens, got.completion_tokens) == (1, 0, 0)


# ----------------------------------------------------------------------------- pass-through


async def test_requests_without_the_header_pass_through_untouched(
    mw: DynasorMiddleware, fake: FakeVLLM
) -> None:
    conn = await call(mw, "POST", CHAT, dumps({"model": "m"}))
    assert conn.status == 200 and json.loads(conn.body)["usage"] == USAGE
    # The inner app got the server's own receive/send, not a relay.
    assert fake.channels == [(conn.receive, conn.send)]
    assert len(mw.table) == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", "/v1/embeddings"),
        ("GET", CHAT),
        ("POST", "/v1/chat/completions/extra"),
        ("GET", API_PREFIX + "X/p1"),
        ("GET", "/health"),
    ],
)
async def test_other_routes_pass_through_even_with_the_header(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM, method: str, path: str
) -> None:
    response = await within(client.request(method, path, headers={PROGRAM_ID_HEADER: PID}))
    assert response.status_code == 200
    assert response.json() == {"path": path, "method": method}
    assert fake.calls == [(method, path)]
    assert len(mw.table) == 0


async def test_non_http_scopes_go_to_the_inner_app(mw: DynasorMiddleware, fake: FakeVLLM) -> None:
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    conn = Conn()
    await within(mw(scope, conn.receive, conn.send))
    assert fake.scopes == [scope]
    assert len(mw.table) == 0


# ----------------------------------------------------------------------------- control endpoints


async def test_get_unknown_program_is_404_program_not_found(client: httpx.AsyncClient) -> None:
    response = await within(client.get(program_path("nope")))
    error = assert_error(response, ErrorCode.PROGRAM_NOT_FOUND, 404)
    assert error["param"] is None and "nope" in error["message"]


async def test_get_known_program_returns_its_info(client: httpx.AsyncClient, clock: Clock) -> None:
    clock.now = 100.0
    await chat(client, headers={CERTAINTY_HEADER: "0.25", BUDGET_HEADER: "300"})
    clock.now = 250.0
    await chat(client)
    response = await within(client.get(program_path(PID)))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == set(ProgramInfo.model_fields)
    assert body == {
        "id": PID,
        "object": "dynasor.program",
        "state": "active",
        "certainty": 0.25,
        "budget": 300,
        "deadline": None,
        "remaining": None,
        "budget_left": 300 - 22,  # budget counted from the first request
        "priority": 8,  # dynasor: 11 tokens per request x (1 - 0.25), no age
        "requests": 2,
        "in_flight": 0,
        "aborted": 0,
        "prompt_tokens": 14,
        "completion_tokens": 22,
        "created": 100.0,
        "last_activity": 250.0,
    }


async def test_delete_finishes_the_program_idempotently(
    client: httpx.AsyncClient, fake: FakeVLLM, clock: Clock
) -> None:
    await chat(client)
    clock.now = 2000.0
    for _ in range(2):
        response = await within(client.delete(program_path(PID)))
        assert response.status_code == 200
        got = ProgramInfo.model_validate(response.json())
        assert (got.state, got.requests, got.aborted, got.last_activity) == (
            "finished",
            1,
            0,
            2000.0,
        )
    calls = len(fake.calls)
    refused = await chat(client)
    error = assert_error(refused, ErrorCode.PROGRAM_STOPPED, 409)
    assert "finished" in error["message"]
    assert len(fake.calls) == calls
    # A later stop cannot move the program back from finished to stopped.
    assert (await stop(client)).state == "finished"


async def test_delete_unknown_program_is_404(client: httpx.AsyncClient) -> None:
    assert_error(
        await within(client.delete(program_path("nope"))), ErrorCode.PROGRAM_NOT_FOUND, 404
    )


async def test_hints_are_recorded_and_unset_fields_keep_their_value(
    client: httpx.AsyncClient, mw: DynasorMiddleware
) -> None:
    response = await within(
        client.post(hints_path(PID), json={"certainty": 0.9, "budget": 50, "deadline": 1e9})
    )
    assert response.status_code == 200
    got = ProgramInfo.model_validate(response.json())
    assert (got.state, got.certainty, got.budget, got.deadline, got.requests) == (
        "active",
        0.9,
        50,
        1e9,
        0,
    )
    later = await within(client.post(hints_path(PID), json={"budget": 0}))
    assert later.json()["certainty"] == 0.9 and later.json()["budget"] == 0
    empty = await within(client.post(hints_path(PID), content=b""))
    assert empty.status_code == 200 and empty.json()["budget"] == 0
    assert len(mw.table) == 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"certainty": 1.5}',
        b'{"certainty": -0.1}',
        b'{"budget": -1}',
        b'{"budget": 1.5}',
        b'{"deadline": 0}',
        b'{"bogus": 1}',
        b"not json",
        b'{"certainty": 0.5',
        b"null",
        b"[]",
        b'"stop"',
    ],
)
async def test_invalid_hints_are_400_invalid_hints(
    client: httpx.AsyncClient, mw: DynasorMiddleware, body: bytes
) -> None:
    response = await within(client.post(hints_path(PID), content=body))
    assert_error(response, ErrorCode.INVALID_HINTS, 400)
    assert mw.table.get(PID) is None  # nothing was created or changed


async def test_hint_body_limit_is_16_kib(client: httpx.AsyncClient, mw: DynasorMiddleware) -> None:
    assert MAX_HINT_BODY == 16 * 1024
    valid = b'{"certainty": 0.5}'
    at_limit = valid + b" " * (MAX_HINT_BODY - len(valid))
    response = await within(client.post(hints_path(PID), content=at_limit))
    assert response.status_code == 200 and response.json()["certainty"] == 0.5
    response = await within(client.post(hints_path("p2"), content=at_limit + b" "))
    error = assert_error(response, ErrorCode.INVALID_HINTS, 400)
    assert str(MAX_HINT_BODY) in error["message"]
    assert mw.table.get("p2") is None


async def test_hint_body_limit_counts_across_body_chunks(mw: DynasorMiddleware) -> None:
    body = b'{"stop": true}' + b" " * MAX_HINT_BODY
    conn = await call(mw, "POST", hints_path(PID), body, chunk=1000)
    assert conn.status == 400 and json.loads(conn.body)["error"]["code"] == "invalid_hints"
    assert mw.table.get(PID) is None
    ok = await call(mw, "POST", hints_path(PID), b'{"budget": 5}', chunk=3)
    assert ok.status == 200 and json.loads(ok.body)["budget"] == 5


@pytest.mark.parametrize("pid", ["", "a" * 129, "bad id", "a/b", "x?y", "semi;colon", "ü"])
async def test_invalid_program_id_header_is_400(
    mw: DynasorMiddleware, fake: FakeVLLM, pid: str
) -> None:
    conn = Conn(dumps({"model": "m"}))
    scope = scope_for("POST", CHAT)
    scope["headers"] = [(PROGRAM_ID_HEADER.lower().encode(), pid.encode("latin-1"))]
    await within(mw(scope, conn.receive, conn.send))
    assert conn.status == 400 and conn.complete
    error = json.loads(conn.body)["error"]
    assert error["code"] == ErrorCode.INVALID_PROGRAM_ID.value
    assert error["param"] == PROGRAM_ID_HEADER
    assert fake.calls == [] and len(mw.table) == 0


async def test_longest_valid_program_id_is_accepted(client: httpx.AsyncClient) -> None:
    pid = "A-z_0.9:" * 16
    assert len(pid) == 128
    assert (await chat(client, pid)).status_code == 200
    assert (await info(client, pid)).requests == 1


@pytest.mark.parametrize("pid", ["a" * 129, "bad!id", "a b", "%41", "ü"])
@pytest.mark.parametrize(
    ("method", "path_of"), [("GET", program_path), ("DELETE", program_path), ("POST", hints_path)]
)
async def test_invalid_program_id_in_path_is_400(
    mw: DynasorMiddleware, method: str, path_of: Callable[[str], str], pid: str
) -> None:
    conn = await call(mw, method, path_of(pid), b"{}")
    assert conn.status == 400
    assert json.loads(conn.body)["error"]["code"] == ErrorCode.INVALID_PROGRAM_ID.value
    assert len(mw.table) == 0


@pytest.mark.parametrize(
    ("method", "path_of"), [("GET", program_path), ("DELETE", program_path), ("POST", hints_path)]
)
async def test_program_id_with_a_trailing_newline_in_path_is_400(
    mw: DynasorMiddleware, method: str, path_of: Callable[[str], str]
) -> None:
    conn = await call(mw, method, path_of("x\n"), b"{}")
    assert conn.status == 400
    assert json.loads(conn.body)["error"]["code"] == ErrorCode.INVALID_PROGRAM_ID.value
    assert len(mw.table) == 0


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", program_path(PID), {"GET", "DELETE"}),
        ("POST", program_path(PID), {"GET", "DELETE"}),
        ("PATCH", program_path(PID), {"GET", "DELETE"}),
        ("GET", hints_path(PID), {"POST"}),
        ("DELETE", hints_path(PID), {"POST"}),
        ("PUT", hints_path(PID), {"POST"}),
    ],
)
async def test_wrong_method_is_405_with_an_allow_header(
    client: httpx.AsyncClient, mw: DynasorMiddleware, method: str, path: str, allowed: set[str]
) -> None:
    response = await within(client.request(method, path, json={"stop": True}))
    error = assert_error(response, ErrorCode.METHOD_NOT_ALLOWED, 405)
    assert method in error["message"]
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed  # RFC 9110
    assert len(mw.table) == 0


@pytest.mark.parametrize(
    "path",
    [API_PREFIX, API_PREFIX + "/", f"{API_PREFIX}/{PID}/other", f"{API_PREFIX}/{PID}/hints/x"],
)
async def test_unknown_control_resources_are_404(client: httpx.AsyncClient, path: str) -> None:
    assert_error(await within(client.get(path)), ErrorCode.PROGRAM_NOT_FOUND, 404)


async def test_trailing_slash_and_root_path_are_accepted(
    mw: DynasorMiddleware, fake: FakeVLLM
) -> None:
    created = await call(mw, "POST", hints_path(PID) + "/", b'{"budget": 3}', root_path="/api")
    assert created.status == 200
    got = await call(mw, "GET", program_path(PID), root_path="/api")
    assert got.status == 200 and json.loads(got.body)["budget"] == 3
    assert fake.calls == []


@pytest.mark.parametrize(
    "body",
    [b'{"deadline": 1e999}', b'{"deadline": Infinity}', b'{"certainty": NaN}'],
)
async def test_non_finite_hints_are_rejected(
    client: httpx.AsyncClient, mw: DynasorMiddleware, body: bytes
) -> None:
    response = await within(client.post(hints_path(PID), content=body))
    assert_error(response, ErrorCode.INVALID_HINTS, 400)
    assert mw.table.get(PID) is None


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999", "Infinity"])
async def test_non_finite_deadline_header_is_rejected(
    client: httpx.AsyncClient, fake: FakeVLLM, value: str
) -> None:
    response = await chat(client, headers={DEADLINE_HEADER: value})
    assert_error(response, ErrorCode.INVALID_HINTS, 400)
    assert fake.calls == []


# ----------------------------------------------------------------------------- stop


async def test_stop_aborts_an_in_flight_json_request(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM
) -> None:
    task, conn = start(mw, {"hang": True})
    await until(lambda: fake.running == 1)
    assert (await info(client)).in_flight == 1

    stopped = await stop(client)
    assert (stopped.state, stopped.aborted) == ("stopped", 1)
    await within(task)

    assert fake.disconnects == 1  # vLLM saw its client leave and aborted the request
    assert conn.complete and conn.status == 409  # vLLM's `null` 200 was held back
    assert conn.content_type == b"application/json"
    assert conn.headers[b"x-should-retry"] == b"false"
    assert conn.headers[b"content-length"] == str(len(conn.body)).encode()
    assert conn.body != b"null"
    error = json.loads(conn.body)["error"]
    assert error["code"] == ErrorCode.PROGRAM_STOPPED.value and PID in error["message"]
    got = await info(client)
    assert (got.state, got.requests, got.in_flight, got.aborted) == ("stopped", 1, 0, 1)
    assert (got.prompt_tokens, got.completion_tokens) == (0, 0)


async def test_stop_aborts_an_in_flight_request_through_httpx(
    client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    pending = asyncio.ensure_future(chat(client, hang=True))
    await until(lambda: fake.running == 1)
    await stop(client)
    response = await within(pending)
    assert_error(response, ErrorCode.PROGRAM_STOPPED, 409)
    assert fake.disconnects == 1


async def test_stop_aborts_an_in_flight_stream_with_an_error_event(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM
) -> None:
    request = {"stream": True, "hang": True}
    task, conn = start(mw, request)
    await until(lambda: fake.running == 1)
    assert conn.status == 200 and conn.body == sse_events(request)[0]

    assert (await stop(client)).aborted == 1
    await within(task)

    assert fake.disconnects == 1
    assert conn.complete and conn.status == 200 and conn.content_type.startswith(SSE)
    assert conn.body.startswith(sse_events(request)[0])
    data = sse_data(conn.body)
    assert len(data) == 3 and data[-1] == "[DONE]"
    assert json.loads(data[1])["error"]["code"] == ErrorCode.PROGRAM_STOPPED.value
    assert conn.body.endswith(b"\n\ndata: [DONE]\n\n")
    got = await info(client)
    assert (got.in_flight, got.aborted, got.completion_tokens) == (0, 1, 0)


async def test_stop_aborts_starlettes_own_streaming_response(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM
) -> None:
    request = {"starlette": True}
    task, conn = start(mw, request)
    await until(lambda: fake.running == 1)
    await stop(client)
    await within(task)
    assert fake.disconnects == 1
    assert conn.complete and conn.status == 200
    data = sse_data(conn.body)
    assert data[0] == sse_data(sse_events(request)[0])[0]
    assert json.loads(data[1])["error"]["code"] == "program_stopped" and data[2:] == ["[DONE]"]


async def test_stop_is_idempotent_and_aborts_each_request_once(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM
) -> None:
    started = [start(mw, {"hang": True}), start(mw, {"stream": True, "hang": True})]
    other, other_conn = start(mw, {"hang": True}, pid="other")
    await until(lambda: fake.running == 3)

    first = await stop(client)
    assert (first.aborted, first.in_flight) == (2, 2)
    assert mw.table.stop(PID) == 0  # in the very same moment: nothing left to abort
    second = await stop(client)
    assert (second.state, second.aborted) == ("stopped", 2)
    await within(asyncio.gather(*(task for task, _ in started)))
    assert [conn.status for _, conn in started] == [409, 200]
    assert fake.disconnects == 2

    # The other program was not touched.
    assert not other.done() and (await info(client, "other")).state == "active"
    fake.release.set()
    await within(other)
    assert other_conn.status == 200 and json.loads(other_conn.body)["usage"] == USAGE
    third = await stop(client)
    assert (third.aborted, third.in_flight, third.requests) == (2, 0, 2)


async def test_a_stopped_program_refuses_new_requests_without_calling_vllm(
    client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    assert (await stop(client, "fresh")).state == "stopped"  # a stop creates the program
    requests: list[dict[str, Any]] = [{}, {"stream": True}]
    for request in requests:
        response = await chat(client, "fresh", **request)
        error = assert_error(response, ErrorCode.PROGRAM_STOPPED, 409)
        assert "fresh" in error["message"] and "stopped" in error["message"]
    assert fake.calls == []
    got = await info(client, "fresh")
    assert (got.state, got.requests, got.aborted) == ("stopped", 0, 0)


async def test_delete_aborts_in_flight_stragglers(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM
) -> None:
    task, conn = start(mw, {"hang": True})
    await until(lambda: fake.running == 1)
    response = await within(client.delete(program_path(PID)))
    assert response.json()["state"] == "finished" and response.json()["aborted"] == 1
    await within(task)
    assert conn.status == 409 and fake.disconnects == 1


async def test_a_client_disconnect_is_passed_on_and_is_not_a_program_abort(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM
) -> None:
    task, conn = start(mw, {"hang": True})
    await until(lambda: fake.running == 1)
    conn.leave()
    await within(task)
    assert fake.disconnects == 1
    assert conn.status == 200 and conn.body == b"null"  # what vLLM sent, untouched
    got = await info(client)
    assert (got.state, got.in_flight, got.aborted) == ("active", 0, 0)


async def test_stop_after_the_response_finished_changes_nothing(
    client: httpx.AsyncClient, mw: DynasorMiddleware
) -> None:
    hold = asyncio.Event()
    conn = Conn(dumps({}))

    async def finish_then_linger(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await respond(send, 200, dumps(completion({})), b"application/json")
        await hold.wait()  # response complete, handler not yet returned

    dyn = DynasorMiddleware(finish_then_linger, table=mw.table, metrics=mw.metrics)
    scope = scope_for("POST", CHAT, {PROGRAM_ID_HEADER: PID})
    task = asyncio.ensure_future(dyn(scope, conn.receive, conn.send))
    await until(lambda: len(conn.sent) == 2)
    assert (await stop(client)).aborted == 1
    hold.set()
    await within(task)
    assert conn.complete and conn.status == 200 and len(conn.sent) == 2
    got = await info(client)
    assert (got.prompt_tokens, got.completion_tokens) == (7, 11)
