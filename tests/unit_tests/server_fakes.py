"""Fakes and helpers shared by the server component's unit tests.

No sockets and no vLLM: requests go through ``httpx.ASGITransport`` or straight
through hand-made ASGI ``scope``/``receive``/``send`` (easier for the abort tests,
which need to see every message the middleware sends to the client). The
fixtures built from these (``clock``, ``fake``, ``mw``, ``client``, ``auth``,
``secured``) live in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.datastructures import Headers
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dynasor_agents.protocol import (
    PROGRAM_ID_HEADER,
    ErrorCode,
    ProgramInfo,
    hints_path,
    program_path,
)
from dynasor_agents.server import DynasorMiddleware, ProgramTable
from dynasor_agents.server._config import ServerConfig

T = TypeVar("T")

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
PID = "prog-1"
USAGE = {"prompt_tokens": 7, "completion_tokens": 11, "total_tokens": 18}
TIMEOUT = 2.0
TOKEN = "sk-test"
OTHER_TOKEN = "sk-other"
SSE = b"text/event-stream"
BASE_URL = "http://dynasor"

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


def usage_of(request: dict[str, Any]) -> Any:
    """The usage the fake reports: ``usage`` if given; with ``generate`` (tokens
    each choice wants), what a model honoring ``max_tokens`` would report."""
    if "generate" in request:
        want = int(request["generate"])
        limit = request.get("max_completion_tokens") or request.get("max_tokens") or want
        completion_tokens = min(want, int(limit)) * int(request.get("n") or 1)
        return {
            "prompt_tokens": 7,
            "completion_tokens": completion_tokens,
            "total_tokens": 7 + completion_tokens,
        }
    return request.get("usage", USAGE)


def sse_events(request: dict[str, Any]) -> list[bytes]:
    """The SSE events of a streamed chat completion, as vLLM would send them for
    ``request``: a usage-only chunk last when ``stream_options.include_usage``
    (cumulative usage in every chunk too with ``continuous`` or, as vLLM does,
    with both ``include_usage`` and ``continuous_usage_stats``), then ``[DONE]``."""
    n = int(request.get("chunks", 3))
    compact = bool(request.get("compact", True))
    options = request.get("stream_options") or {}
    continuous = request.get("continuous") or (
        options.get("include_usage") and options.get("continuous_usage_stats")
    )
    events = []
    for i in range(n):
        usage = None
        if continuous:
            usage = {"prompt_tokens": 7, "completion_tokens": i + 1, "total_tokens": 8 + i}
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
            "usage": usage,
        }
        events.append(b"data: " + dumps(chunk, compact=compact) + b"\n\n")
    if options.get("include_usage"):  # like vLLM: the usage event only when asked for
        final = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": usage_of(request),
        }
        events.append(b"data: " + dumps(final, compact=compact) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def completion(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "42"}}],
        "usage": usage_of(request),
    }


class FakeVLLM:
    """Stands in for vLLM's OpenAI app; each request's JSON body says how to behave.

    Body keys: ``stream`` (SSE instead of JSON), ``split`` (bytes per SSE body
    message) or ``cuts`` (offsets where the SSE body is cut into messages),
    ``hang`` (work that never ends on its own: only a client disconnect ends it,
    as with vLLM's ``with_cancellation`` and Starlette's streaming under ASGI
    spec < 2.4), ``starlette`` (hang inside Starlette's own StreamingResponse),
    ``status``, ``compact``, ``usage``, ``generate`` (see :func:`usage_of`),
    ``raise``. A generation body that is not a JSON object gets a 400, as from
    vLLM. Streams carry usage as vLLM's do (see :func:`sse_events`).

    Attributes:
        bodies: The raw body of each request, as received.
        received: Each generation request's parsed JSON body (``None`` when it
            was not JSON), as received.
    """

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.calls: list[tuple[str, str]] = []
        self.bodies: list[bytes] = []
        self.received: list[Any] = []
        self.channels: list[tuple[Receive, Send]] = []
        self.running = 0  # hanging requests that have started their work
        self.disconnects = 0  # disconnects seen by hanging requests
        self.release = asyncio.Event()  # lets hanging work finish

    @property
    def last(self) -> dict[str, Any]:
        """The parsed body of the last generation request."""
        assert self.received, "vLLM received no generation request"
        body = self.received[-1]
        assert isinstance(body, dict), body
        return body

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
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = None
        self.received.append(request)
        if not isinstance(request, dict):
            error = {"error": {"message": "not a JSON object", "code": 400}}
            await respond(send, 400, dumps(error), b"application/json")
            return
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
            cuts = request.get("cuts") or list(range(split, len(data), split))
            for i, j in itertools.pairwise([0, *cuts, len(data)]):
                await send({"type": "http.response.body", "body": data[i:j], "more_body": True})
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
    """Like vLLM's AuthenticationMiddleware: 401 on ``/v1`` without a bearer key.

    Args:
        app: The next app.
        tokens: The API keys it accepts (vLLM accepts several ``--api-key``).
    """

    def __init__(self, app: ASGIApp, *tokens: str) -> None:
        self.app = app
        self.tokens = tokens
        self.checked = 0

    def verify_token(self, headers: Headers) -> bool:
        self.checked += 1
        return headers.get("authorization") in {f"Bearer {t}" for t in self.tokens}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith("/v1")
            and not self.verify_token(Headers(scope=scope))
        ):
            await respond(send, 401, dumps({"error": "Unauthorized"}), b"application/json")
            return
        await self.app(scope, receive, send)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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
    """The OpenAI-style error of ``response``, checked to carry ``code`` and ``status``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code.value
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert isinstance(error["message"], str) and error["message"]
    assert response.headers["x-should-retry"] == "false"  # OpenAI clients must not retry
    return dict(error)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ----------------------------------------------------------------------------- clients


def build(
    app: ASGIApp, clock: Clock, config: ServerConfig | None = None, **settings: Any
) -> DynasorMiddleware:
    """A component around ``app`` set up like vLLM would from ``config`` (or
    ``ServerConfig(**settings)``), with the table on ``clock`` and its own registry."""
    config = config if config is not None else ServerConfig(**settings)
    table = ProgramTable.from_config(config, clock=clock)
    return DynasorMiddleware(app, config=config, table=table, registry=CollectorRegistry())


@contextlib.asynccontextmanager
async def client_for(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client that calls ``app`` in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
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


async def info(
    client: httpx.AsyncClient, pid: str = PID, headers: dict[str, str] | None = None
) -> ProgramInfo:
    response = await within(client.get(program_path(pid), headers=headers))
    assert response.status_code == 200, response.text
    return ProgramInfo.model_validate(response.json())


async def stop(
    client: httpx.AsyncClient, pid: str = PID, headers: dict[str, str] | None = None
) -> ProgramInfo:
    response = await within(client.post(hints_path(pid), json={"stop": True}, headers=headers))
    assert response.status_code == 200, response.text
    return ProgramInfo.model_validate(response.json())


async def post_hints(
    client: httpx.AsyncClient, pid: str = PID, headers: dict[str, str] | None = None, **hints: Any
) -> httpx.Response:
    return await within(client.post(hints_path(pid), json=hints, headers=headers))


# ----------------------------------------------------------------------------- metrics


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``registry`` as exported on ``/metrics``, keyed by name and labels."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """One exported sample's value (``None`` when it is not exported)."""
    return scrape(registry).get((name, frozenset(labels.items())))
