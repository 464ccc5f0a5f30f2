"""DynasorMiddleware around a fake vLLM app: attribution, usage, control endpoints, stop, auth.

No sockets and no vLLM: requests go through ``httpx.ASGITransport`` or straight
through hand-made ASGI ``scope``/``receive``/``send`` (easier for the abort tests,
which need to see every message the middleware sends to the client).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.datastructures import Headers
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dynasor_agents.protocol import (
    API_PREFIX,
    BUDGET_HEADER,
    CERTAINTY_HEADER,
    DEADLINE_HEADER,
    PROGRAM_ID_HEADER,
    ErrorCode,
    Lifecycle,
    ProgramInfo,
    hints_path,
    program_path,
)
from dynasor_agents.server import DynasorMiddleware, ProgramTable
from dynasor_agents.server._middleware import MAX_HINT_BODY
from dynasor_agents.server._relay import Relay

T = TypeVar("T")

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
PID = "prog-1"
USAGE = {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}
TIMEOUT = 2.0
TOKEN = "sk-test"
SSE = b"text/event-stream"

# ----------------------------------------------------------------------------- helpers


def dumps(obj: Any, *, compact: bool = True) -> bytes:
    """JSON as vLLM (pydantic, compact) or as ``json.dumps`` (spaced) writes it."""
    return json.dumps(obj, separators=(",", ":") if compact else None).encode()


async def respond(send: Send, status: int, payload: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def within(aw: Awaitable[T]) -> T:
    return await asyncio.wait_for(aw, TIMEOUT)


async def until(predicate: Callable[[], bool]) -> None:
    """Let the loop run until ``predicate`` holds (fails after TIMEOUT)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not predicate():
        assert loop.time() < deadline, "condition never became true"
        await asyncio.sleep(0.001)


def sse_events(request: dict[str, Any]) -> list[bytes]:
    """The SSE events of a streamed chat completion: a usage-only chunk last when
    ``stream_options.include_usage`` (cumulative usage in every chunk too with
    ``continuous``), then ``[DONE]``."""
    n = int(request.get("chunks", 3))
    compact = bool(request.get("compact", True))
    events = []
    for i in range(n):
        usage = None
        if request.get("continuous"):
            usage = {"prompt_tokens": 7, "completion_tokens": i + 1, "total_tokens": 8 + i}
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
            "usage": usage,
        }
        events.append(b"data: " + dumps(chunk, compact=compact) + b"\n\n")
    options = request.get("stream_options") or {}
    if options.get("include_usage"):  # like vLLM: the usage event only when asked for
        final = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": USAGE,
        }
        events.append(b"data: " + dumps(final, compact=compact) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def completion(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}}],
        "usage": request.get("usage", USAGE),
    }


class FakeVLLM:
    """Stands in for vLLM's OpenAI app; each request's JSON body says how to behave.

    Body keys: ``stream`` (SSE instead of JSON), ``split`` (bytes per SSE body
    message), ``hang`` (work that never ends on its own: only a client disconnect
    ends it, as with vLLM's ``with_cancellation`` and Starlette's streaming under
    ASGI spec < 2.4), ``starlette`` (hang inside Starlette's own StreamingResponse),
    ``status``, ``compact``, ``usage``, ``raise``.
    """

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.calls: list[tuple[str, str]] = []
        self.bodies: list[bytes] = []
        self.channels: list[tuple[Receive, Send]] = []
        self.running = 0  # hanging requests that have started their work
        self.disconnects = 0  # disconnects seen by hanging requests
        self.release = asyncio.Event()  # lets hanging work finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] != "http":
            return
        self.calls.append((scope["method"], scope["path"]))
        self.channels.append((receive, send))
        body = await read_body(receive)
        self.bodies.append(body)
        if scope["method"] != "POST" or scope["path"] not in (CHAT, COMPLETIONS):
            echo = {"path": scope["path"], "method": scope["method"]}
            await respond(send, 200, dumps(echo), b"application/json")
            return
        request = json.loads(body or b"{}")
        if request.get("raise"):
            raise RuntimeError("engine crashed")
        if request.get("starlette"):
            await self._starlette_stream(request, scope, receive, send)
        elif request.get("stream"):
            await self._stream(request, receive, send)
        else:
            await self._json(request, receive, send)

    async def _work(self) -> None:
        self.running += 1
        await self.release.wait()

    async def _listen(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
                return

    async def _json(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        if request.get("hang"):
            # vLLM's with_cancellation: race the handler against a disconnect listener;
            # on disconnect the handler returns None, which FastAPI renders as `null`.
            work = asyncio.ensure_future(self._work())
            listen = asyncio.ensure_future(self._listen(receive))
            done, pending = await asyncio.wait({work, listen}, return_when="FIRST_COMPLETED")
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if work not in done:
                await respond(send, 200, b"null", b"application/json")
                return
        payload = dumps(completion(request), compact=bool(request.get("compact", True)))
        await respond(send, int(request.get("status", 200)), payload, b"application/json")

    async def _stream(self, request: dict[str, Any], receive: Receive, send: Send) -> None:
        events = sse_events(request)

        async def produce() -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
                }
            )
            rest = events
            if request.get("hang"):
                await send({"type": "http.response.body", "body": events[0], "more_body": True})
                await self._work()
                rest = events[1:]
            data = b"".join(rest)
            split = int(request.get("split") or len(data))
            for i in range(0, len(data), split):
                body = data[i : i + split]
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        # Starlette's StreamingResponse under ASGI spec < 2.4: stream while listening
        # for a disconnect; whichever ends first cancels the other.
        producer = asyncio.ensure_future(produce())
        listener = asyncio.ensure_future(self._listen(receive))
        done, pending = await asyncio.wait({producer, listener}, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if producer in done:
            producer.result()

    async def _starlette_stream(
        self, request: dict[str, Any], scope: Scope, receive: Receive, send: Send
    ) -> None:
        events = sse_events(request)

        async def generate() -> AsyncIterator[bytes]:
            yield events[0]
            await self._work()
            for event in events[1:]:
                yield event

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnects += 1
            return message

        response = StreamingResponse(generate(), media_type="text/event-stream")
        await response(scope, counting_receive, send)


class Passthrough:
    """A plain middleware with no authenticator, between Dynasor and the auth layer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class FakeAuth:
    """Like vLLM's AuthenticationMiddleware: 401 on ``/v1`` without the bearer key."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self.checked = 0

    def verify_token(self, headers: Headers) -> bool:
        self.checked += 1
        return headers.get("authorization") == f"Bearer {self.token}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith("/v1")
            and not self.verify_token(Headers(scope=scope))
        ):
            await respond(send, 401, dumps({"error": "Unauthorized"}), b"application/json")
            return
        await self.app(scope, receive, send)


class Conn:
    """One hand-made ASGI connection: feeds the request body, records what is sent.

    After the body, ``receive`` blocks until ``leave()`` (the client disconnecting).
    """

    def __init__(self, body: bytes = b"", *, chunk: int | None = None) -> None:
        size = chunk or max(len(body), 1)
        pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
        self._inbound: list[Message] = [
            {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
            for i, p in enumerate(pieces)
        ]
        self._gone = asyncio.Event()
        self.sent: list[Message] = []

    def leave(self) -> None:
        self._gone.set()

    async def receive(self) -> Message:
        if self._inbound:
            return self._inbound.pop(0)
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.sent
        return int(starts[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return dict(start["headers"])

    @property
    def content_type(self) -> bytes:
        return self.headers.get(b"content-type", b"")

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def complete(self) -> bool:
        """Exactly one response, ended by exactly one final body message."""
        kinds = [m["type"] for m in self.sent]
        assert kinds.count("http.response.start") == 1 and kinds[0] == "http.response.start"
        finals = [
            m
            for m in self.sent
            if m["type"] == "http.response.body" and not m.get("more_body", False)
        ]
        return len(finals) == 1 and finals[0] is self.sent[-1]


def scope_for(
    method: str, path: str, headers: dict[str, str] | None = None, *, root_path: str = ""
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("test", 1),
        "server": ("test", 80),
    }


def start(
    app: ASGIApp,
    request: dict[str, Any],
    *,
    pid: str = PID,
    path: str = CHAT,
    headers: dict[str, str] | None = None,
) -> tuple[asyncio.Task[None], Conn]:
    """Start one generation request as a task; returns it with its connection."""
    conn = Conn(json.dumps(request).encode())
    scope = scope_for("POST", path, {PROGRAM_ID_HEADER: pid, **(headers or {})})
    return asyncio.ensure_future(app(scope, conn.receive, conn.send)), conn


async def call(app: ASGIApp, method: str, path: str, body: bytes = b"", **kw: Any) -> Conn:
    """Run one request straight through ``app`` and return its finished connection."""
    conn = Conn(body, chunk=kw.pop("chunk", None))
    await within(app(scope_for(method, path, **kw), conn.receive, conn.send))
    return conn


def sse_data(body: bytes) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    out = []
    for event in body.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                out.append(line[5:].strip().decode())
    return out


def assert_error(response: httpx.Response, code: ErrorCode, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code.value
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]
    assert response.headers["x-should-retry"] == "false"  # OpenAI clients must not retry
    return dict(error)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake() -> FakeVLLM:
    return FakeVLLM()


@pytest.fixture
def mw(fake: FakeVLLM, clock: Clock) -> DynasorMiddleware:
    return DynasorMiddleware(fake, table=ProgramTable(clock=clock, ttl=1e9), registry=CollectorRegistry())


@pytest.fixture
async def client(mw: DynasorMiddleware) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=mw)
    async with httpx.AsyncClient(transport=transport, base_url="http://dynasor") as c:
        yield c


async def chat(
    client: httpx.AsyncClient,
    pid: str | None = PID,
    *,
    path: str = CHAT,
    headers: dict[str, str] | None = None,
    **request: Any,
) -> httpx.Response:
    sent = dict(headers or {})
    if pid is not None:
        sent[PROGRAM_ID_HEADER] = pid
    return await within(client.post(path, json={"model": "m", **request}, headers=sent))


async def info(client: httpx.AsyncClient, pid: str = PID) -> ProgramInfo:
    response = await within(client.get(program_path(pid)))
    assert response.status_code == 200, response.text
    return ProgramInfo.model_validate(response.json())


async def stop(client: httpx.AsyncClient, pid: str = PID) -> ProgramInfo:
    response = await within(client.post(hints_path(pid), json={"stop": True}))
    assert response.status_code == 200, response.text
    return ProgramInfo.model_validate(response.json())


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


# ----------------------------------------------------------------------------- header hints


async def test_header_hints_are_recorded_per_request(
    client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    headers = {CERTAINTY_HEADER: "0.5", BUDGET_HEADER: " 120 ", DEADLINE_HEADER: "1700000000.5"}
    await chat(client, headers=headers)
    got = await info(client)
    assert (got.certainty, got.budget, got.deadline) == (0.5, 120, 1700000000.5)
    await chat(client, headers={CERTAINTY_HEADER: "0.75"})
    got = await info(client)
    assert (got.certainty, got.budget, got.deadline) == (0.75, 120, 1700000000.5)
    assert len(fake.calls) == 2


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (CERTAINTY_HEADER, "1.5"),
        (CERTAINTY_HEADER, "-0.01"),
        (CERTAINTY_HEADER, "nan"),
        (CERTAINTY_HEADER, "high"),
        (CERTAINTY_HEADER, ""),
        (BUDGET_HEADER, "-1"),
        (BUDGET_HEADER, "1.5"),
        (BUDGET_HEADER, "lots"),
        (DEADLINE_HEADER, "0"),
        (DEADLINE_HEADER, "tomorrow"),
    ],
)
async def test_bad_header_hint_is_400_and_never_reaches_vllm(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM, header: str, value: str
) -> None:
    response = await chat(client, headers={header: value})
    error = assert_error(response, ErrorCode.INVALID_HINTS, 400)
    field = header.removeprefix("X-Dynasor-").lower()
    assert field in error["message"]
    assert fake.calls == [] and len(mw.table) == 0


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


async def test_relay_keeps_an_inbound_message_across_a_cancelled_receive() -> None:
    inbound: asyncio.Queue[Message] = asyncio.Queue()
    relay = Relay(inbound.get, Conn().send, asyncio.Event())
    first = asyncio.ensure_future(relay.receive())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    message: Message = {"type": "http.request", "body": b"x", "more_body": False}
    inbound.put_nowait(message)
    assert await within(relay.receive()) == message
    relay.close()


async def test_relay_answers_disconnect_at_once_after_an_abort() -> None:
    aborted = asyncio.Event()
    conn = Conn(b"body")
    relay = Relay(conn.receive, conn.send, aborted)
    assert (await within(relay.receive()))["body"] == b"body"
    waiting = asyncio.ensure_future(relay.receive())  # blocks on the client
    await asyncio.sleep(0)
    aborted.set()
    assert await within(waiting) == {"type": "http.disconnect"}
    assert await within(relay.receive()) == {"type": "http.disconnect"}
    await relay.send({"type": "http.response.start", "status": 200, "headers": []})
    assert conn.sent == []  # swallowed after the abort
    await relay.finish_aborted({"error": {"code": "program_stopped"}}, 409)
    await relay.finish_aborted({"error": {"code": "program_stopped"}}, 409)  # once only
    assert conn.status == 409 and conn.complete
    relay.close()


# ----------------------------------------------------------------------------- authentication


@pytest.fixture
def auth(fake: FakeVLLM) -> FakeAuth:
    return FakeAuth(fake, TOKEN)


@pytest.fixture
async def secured(
    auth: FakeAuth, clock: Clock
) -> AsyncIterator[tuple[httpx.AsyncClient, DynasorMiddleware]]:
    dyn = DynasorMiddleware(
        Passthrough(auth), table=ProgramTable(clock=clock), registry=CollectorRegistry()
    )
    transport = httpx.ASGITransport(app=dyn)
    async with httpx.AsyncClient(transport=transport, base_url="http://dynasor") as c:
        yield c, dyn


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", TOKEN, f"Basic {TOKEN}"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", program_path(PID)), ("DELETE", program_path(PID)), ("POST", hints_path(PID))],
)
async def test_control_endpoints_need_the_api_key(
    secured: tuple[httpx.AsyncClient, DynasorMiddleware],
    fake: FakeVLLM,
    authorization: str | None,
    method: str,
    path: str,
) -> None:
    client, dyn = secured
    headers = {"Authorization": authorization} if authorization else {}
    response = await within(client.request(method, path, json={"stop": True}, headers=headers))
    assert response.status_code == 401 and response.json() == {"error": "Unauthorized"}
    assert len(dyn.table) == 0 and fake.calls == []


async def test_control_endpoints_work_with_the_api_key(
    secured: tuple[httpx.AsyncClient, DynasorMiddleware], auth: FakeAuth
) -> None:
    client, _ = secured
    good = {"Authorization": f"Bearer {TOKEN}"}
    missing = await within(client.get(program_path(PID), headers=good))
    assert_error(missing, ErrorCode.PROGRAM_NOT_FOUND, 404)
    response = await within(client.post(hints_path(PID), json={"stop": True}, headers=good))
    assert response.status_code == 200 and response.json()["state"] == "stopped"
    response = await within(client.get(program_path(PID), headers=good))
    assert response.status_code == 200 and response.json()["state"] == "stopped"
    assert auth.checked == 3
    assert (await within(client.delete(program_path(PID), headers=good))).status_code == 200


async def test_unauthenticated_generation_is_left_to_vllm(
    secured: tuple[httpx.AsyncClient, DynasorMiddleware], fake: FakeVLLM
) -> None:
    client, dyn = secured
    denied = await chat(client)
    assert denied.status_code == 401 and denied.json() == {"error": "Unauthorized"}
    # Not even a bad header hint or id is reported before authentication.
    denied = await chat(client, "bad id", headers={CERTAINTY_HEADER: "7"})
    assert denied.status_code == 401
    assert len(dyn.table) == 0 and fake.calls == []

    ok = await chat(client, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    (record,) = dyn.table  # owned by the key's digest; never the key itself
    assert (record.id, record.requests, record.completion_tokens) == (PID, 1, 11)
    assert record.owner is not None and TOKEN not in record.owner
    assert dyn.table.get(PID) is None  # not visible without the owner


async def test_the_authenticator_is_looked_up_once_through_the_app_chain(
    secured: tuple[httpx.AsyncClient, DynasorMiddleware], auth: FakeAuth
) -> None:
    _, dyn = secured
    assert dyn._authenticator() is auth
    dyn.app = Passthrough(Passthrough(FakeVLLM()))  # cached: not looked up again
    assert dyn._authenticator() is auth
    assert (
        DynasorMiddleware(Passthrough(FakeVLLM()), registry=CollectorRegistry())._authenticator()
        is None
    )


# ----------------------------------------------------------------------------- program table


def test_program_table_records_created_and_last_activity_from_its_clock() -> None:
    clock = Clock(10.0)
    table = ProgramTable(clock=clock)
    record = table.get_or_create("p1")
    assert (record.created, record.last_activity, record.state) == (10.0, 10.0, Lifecycle.ACTIVE)

    clock.now = 15.0
    assert table.get_or_create("p1") is record
    assert (record.created, record.last_activity) == (10.0, 15.0)
    clock.now = 20.0
    table.touch(record)
    assert record.last_activity == 20.0
    clock.now = 30.0
    handle = record.begin_request()
    assert table.stop("p1") == 1 and table.stop("p1") == 0
    assert handle.aborted.is_set() and record.info().state == "stopped"
    assert (record.created, record.last_activity, record.aborted) == (10.0, 30.0, 1)

    clock.now = 40.0
    assert table.finish("p1") is record and record.state is Lifecycle.FINISHED
    assert table.stop("p1") == 0 and record.state is Lifecycle.FINISHED  # only forward
    record.end_request(handle, 3, 4, measured=True)
    info = record.info()
    assert (info.created, info.last_activity, info.in_flight, info.requests) == (10.0, 40.0, 0, 1)
    assert (info.prompt_tokens, info.completion_tokens, info.state) == (3, 4, "finished")

    assert table.get("nope") is None and table.finish("nope") is None and table.stop("nope") == 0
    assert len(table) == 1 and [r.id for r in table] == ["p1"]


def test_program_table_defaults_to_wall_clock_time() -> None:
    before = time.time()
    record = ProgramTable().get_or_create("p1", owner="key-1")
    assert before <= record.created <= time.time() and record.owner == "key-1"
