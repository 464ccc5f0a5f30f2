"""Pure ASGI middleware that makes vLLM's OpenAI server program-aware.

Load it with ``--middleware dynasor_agents.server.DynasorMiddleware``. It

* attributes every ``/v1/chat/completions`` and ``/v1/completions`` request that
  carries ``X-Dynasor-Program-Id`` to its program, with the tokens its response
  reports (JSON bodies and server-sent events alike);
* serves ``GET``/``DELETE /v1/dynasor/programs/{id}`` and
  ``POST /v1/dynasor/programs/{id}/hints``;
* honors a stop: each in-flight request of the program sees its client
  disconnect (the ASGI ``http.disconnect`` message), which is how vLLM's handlers
  learn to abort a request inside the engine; the caller gets an OpenAI-style
  ``program_stopped`` error instead of a truncated answer, and new requests of
  the program are refused with the same code.

vLLM adds ``--middleware`` classes outermost, so the control endpoints check the
API key themselves with vLLM's own authentication middleware when one is set.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dynasor_agents.protocol import (
    API_PREFIX,
    ERROR_STATUS,
    PROGRAM_ID_HEADER,
    ErrorCode,
    Hints,
    describe_validation_error,
    error_body,
    is_valid_program_id,
)
from dynasor_agents.server._relay import Relay, send_json
from dynasor_agents.server._table import ProgramRecord, ProgramTable

__all__ = ["DynasorMiddleware"]

logger = logging.getLogger("dynasor_agents.server")

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
MAX_HINT_BODY = 16 * 1024


class _Authenticator(Protocol):
    def verify_token(self, headers: Headers) -> bool: ...


_Handler = Callable[[str, Receive, Send], Awaitable[None]]


async def send_error(
    send: Send,
    code: ErrorCode,
    message: str,
    param: str | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send an OpenAI-style error with the status that belongs to ``code``."""
    body = error_body(code, message, param=param)
    await send_json(send, ERROR_STATUS[code], body, retry=False, headers=headers)


class DynasorMiddleware:
    """The Dynasor server component, as pure ASGI middleware.

    Args:
        app: The next ASGI application (vLLM's stack).
        table: The program table (a fresh one by default; inject one in tests).
    """

    def __init__(self, app: ASGIApp, *, table: ProgramTable | None = None) -> None:
        self.app = app
        self.table = table if table is not None else ProgramTable()
        self._auth: _Authenticator | bool | None = False  # False: not looked up yet

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"].removeprefix(scope.get("root_path", ""))
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            await self._control(path, scope, receive, send)
            return
        if scope["method"] == "POST" and path in GENERATION_PATHS:
            program_id = Headers(scope=scope).get(PROGRAM_ID_HEADER)
            if program_id is not None:
                await self._generate(program_id, scope, receive, send)
                return
        await self.app(scope, receive, send)

    # -- authentication ---------------------------------------------------------

    def _authenticator(self) -> _Authenticator | None:
        if self._auth is False:
            node: Any = self.app
            found: _Authenticator | None = None
            for _ in range(64):  # walk the (short) middleware chain once
                if node is None:
                    break
                if callable(getattr(node, "verify_token", None)):
                    found = node
                    break
                node = getattr(node, "app", None)
            self._auth = found
        return self._auth if not isinstance(self._auth, bool) else None

    def _authorized(self, scope: Scope) -> bool:
        auth = self._authenticator()
        return auth is None or auth.verify_token(Headers(scope=scope))

    # -- generation requests ----------------------------------------------------

    async def _generate(self, program_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._authorized(scope):
            await self.app(scope, receive, send)  # vLLM answers 401 itself
            return
        if not is_valid_program_id(program_id):
            await send_error(
                send,
                ErrorCode.INVALID_PROGRAM_ID,
                "X-Dynasor-Program-Id must be 1-128 characters of A-Za-z0-9._:-",
                param=PROGRAM_ID_HEADER,
            )
            return
        try:
            hints = Hints.from_headers(Headers(scope=scope))
        except ValidationError as exc:
            await send_error(send, ErrorCode.INVALID_HINTS, describe_validation_error(exc))
            return
        record = self.table.get_or_create(program_id)
        record.apply(hints)
        if not record.active:
            await send_error(
                send,
                ErrorCode.PROGRAM_STOPPED,
                f"program {program_id} is {record.state.name.lower()}; it takes no new requests",
            )
            return
        handle = record.begin_request()
        relay = Relay(receive, send, handle.aborted)
        try:
            await self.app(scope, relay.receive, relay.send)
        finally:
            relay.close()
            record.end_request(handle, relay.prompt_tokens, relay.completion_tokens)
            self.table.touch(record)
        if handle.aborted.is_set() and not relay.response_complete:
            await relay.finish_aborted(
                error_body(
                    ErrorCode.PROGRAM_STOPPED,
                    f"program {program_id} was stopped; this request was aborted",
                ),
                ERROR_STATUS[ErrorCode.PROGRAM_STOPPED],
            )

    # -- control endpoints ------------------------------------------------------

    async def _control(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._authorized(scope):
            await send_json(send, 401, {"error": "Unauthorized"})
            return
        parts = path[len(API_PREFIX) :].strip("/").split("/")
        method: str = scope["method"]
        program_id = parts[0]
        routes: dict[str, _Handler] = {}
        if len(parts) == 1 and program_id:
            routes = {"GET": self._get, "DELETE": self._delete}
        elif len(parts) == 2 and parts[1] == "hints":
            routes = {"POST": self._hints}
        if not routes:
            await send_error(send, ErrorCode.PROGRAM_NOT_FOUND, f"no such resource: {path}")
            return
        handler = routes.get(method)
        if handler is None:
            allowed = ", ".join(routes)
            await send_error(
                send,
                ErrorCode.METHOD_NOT_ALLOWED,
                f"{method} {path}: allowed is {allowed}",
                headers=[(b"allow", allowed.encode())],
            )
            return
        if not is_valid_program_id(program_id):
            await send_error(
                send,
                ErrorCode.INVALID_PROGRAM_ID,
                "program id must be 1-128 characters of A-Za-z0-9._:-",
            )
            return
        await handler(program_id, receive, send)

    async def _get(self, program_id: str, receive: Receive, send: Send) -> None:
        await _send_info(send, program_id, self.table.get(program_id))

    async def _delete(self, program_id: str, receive: Receive, send: Send) -> None:
        await _send_info(send, program_id, self.table.finish(program_id))

    async def _hints(self, program_id: str, receive: Receive, send: Send) -> None:
        body = await _read_body(receive, MAX_HINT_BODY)
        if body is None:
            await send_error(
                send, ErrorCode.INVALID_HINTS, f"hint body larger than {MAX_HINT_BODY} bytes"
            )
            return
        try:
            parsed = Hints.model_validate_json(body or b"{}")
        except ValidationError as exc:
            await send_error(send, ErrorCode.INVALID_HINTS, describe_validation_error(exc))
            return
        record = self.table.get_or_create(program_id)
        record.apply(parsed)
        if parsed.stop:
            aborted = self.table.stop(program_id)
            logger.info("program %s stopped; %d in-flight requests aborted", program_id, aborted)
        await send_json(send, 200, record.info().model_dump())


async def _send_info(send: Send, program_id: str, record: ProgramRecord | None) -> None:
    """Send a program's info, or ``program_not_found``."""
    if record is None:
        await send_error(send, ErrorCode.PROGRAM_NOT_FOUND, f"no program {program_id}")
        return
    await send_json(send, 200, record.info().model_dump())


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """Read a request body; ``None`` when it is larger than ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
