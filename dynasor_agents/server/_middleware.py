"""Pure ASGI middleware that makes vLLM's OpenAI server program-aware.

Load it with ``--middleware dynasor_agents.server.DynasorMiddleware`` (the
``dynasor-agents serve`` launcher does, and passes its flags in ``DYNASOR_*``
environment variables, see :class:`ServerConfig`). For every
``/v1/chat/completions`` and ``/v1/completions`` request that carries
``X-Dynasor-Program-Id`` it

* records the request's hints (certainty, budget, deadline, remaining) and
  refuses requests of stopped programs (``program_stopped``) or of programs
  whose budget is spent (``budget_exhausted``);
* rewrites the JSON body: the scheduling policy sets vLLM's ``priority``, the
  budget clamps ``max_tokens``, and streams always report usage to the server
  (the usage event is removed again when the client did not ask for it);
* attributes the tokens the response reports to the program;
* honors a stop: each in-flight request of the program sees its client
  disconnect (the ASGI ``http.disconnect`` message), which is how vLLM's
  handlers learn to abort a request inside the engine; the caller gets a
  ``program_stopped`` error instead of a truncated answer.

It also serves ``GET``/``DELETE /v1/dynasor/programs/{id}``, ``POST
/v1/dynasor/programs/{id}/hints`` and ``GET /v1/dynasor/load`` (the engine's
waiting and running requests, read from vLLM's own gauges, and the component's
programs and requests in flight: a client sizes its first rounds by it). vLLM
adds ``--middleware`` classes outermost, so the component checks the API key
itself with vLLM's own authentication middleware; with ``--api-key`` set, a
program belongs to the key that created it, and other keys get
``program_not_found`` as if it did not exist.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dynasor_agents.protocol import (
    API_PREFIX,
    ERROR_STATUS,
    LOAD_PATH,
    PROGRAM_ID_HEADER,
    ErrorCode,
    Hints,
    ServerLoad,
    describe_validation_error,
    error_body,
    is_valid_program_id,
)
from dynasor_agents.server._admission import Admitted, Refused, admit, find_program
from dynasor_agents.server._config import ServerConfig
from dynasor_agents.server._metrics import ServerMetrics, engine_queue
from dynasor_agents.server._relay import Relay, send_json
from dynasor_agents.server._rewrite import RequestBody, parse_body
from dynasor_agents.server._scheduling import SchedulingPolicy, make_policy
from dynasor_agents.server._table import ProgramRecord, ProgramTable

__all__ = ["DynasorMiddleware"]

logger = logging.getLogger("dynasor_agents.server")

GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
MAX_HINT_BODY = 16 * 1024
_ID_RULE = "1-128 characters of A-Za-z0-9._:-"


class _Authenticator(Protocol):
    def verify_token(self, headers: Headers) -> bool: ...


_Handler = Callable[[str, str | None, Receive, Send], Awaitable[None]]


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


def _hint_fields(hints: Hints) -> list[str]:
    return list(hints.model_dump(exclude_defaults=True))  # a hint of 0 is a hint too


class DynasorMiddleware:
    """The Dynasor server component, as pure ASGI middleware.

    Args:
        app: The next ASGI application (vLLM's stack).
        config: What the component does; read from ``DYNASOR_*`` environment
            variables when omitted (that is how vLLM constructs it).
        table: The program table (built from ``config`` unless given; inject one
            with a fake clock in tests).
        policy: The program scheduling policy (``config.scheduling`` unless given).
        metrics: The metrics collector (built on ``registry`` unless given).
        registry: Where the metrics are registered: prometheus' default
            registry (which vLLM serves on ``/metrics``) unless given.
        environ: The environment to read ``config`` from (``os.environ``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: ServerConfig | None = None,
        table: ProgramTable | None = None,
        policy: SchedulingPolicy | None = None,
        metrics: ServerMetrics | None = None,
        registry: CollectorRegistry | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.config = config or ServerConfig.from_env(os.environ if environ is None else environ)
        if table is None:
            table = ProgramTable.from_config(self.config)
        self.table = table
        self.policy = policy if policy is not None else make_policy(self.config)
        self.metrics = (
            metrics
            if metrics is not None
            else ServerMetrics(self.table, self.policy.name, registry=registry)
        )
        self._auth: _Authenticator | bool | None = False  # False: not looked up yet
        logger.info(
            "dynasor component loaded: scheduling=%s ttl=%ss max_programs=%d",
            self.policy.name,
            self.config.program_ttl,
            self.config.max_programs,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"].removeprefix(scope.get("root_path", ""))
        if path == LOAD_PATH:
            await self._load(scope, send)
            return
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            await self._control(path, scope, receive, send)
            return
        if scope["method"] == "POST" and path in GENERATION_PATHS:
            program_id = Headers(scope=scope).get(PROGRAM_ID_HEADER)
            if program_id is not None:
                await self._generate(program_id, scope, receive, send)
                return
        await self.app(scope, receive, send)

    # -- authentication and ownership ---------------------------------------------

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

    def _authorize(self, scope: Scope) -> tuple[bool, str | None]:
        """Whether the request may proceed, and the owner it acts for.

        Without ``--api-key`` everyone may and nobody owns anything; with it, the
        owner is a digest of the bearer token (the token itself is never kept).
        """
        auth = self._authenticator()
        if auth is None:
            return True, None
        headers = Headers(scope=scope)
        if not auth.verify_token(headers):
            return False, None
        token = headers.get("authorization", "").partition(" ")[2]
        return True, hashlib.sha256(token.encode()).hexdigest()[:32]

    async def _reject(self, send: Send, code: ErrorCode, message: str, **kw: Any) -> None:
        self.metrics.rejected_with(code.value)
        await send_error(send, code, message, **kw)

    # -- generation requests ----------------------------------------------------

    async def _generate(self, program_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        allowed, owner = self._authorize(scope)
        if not allowed:
            await self.app(scope, receive, send)  # vLLM answers 401 itself
            return
        if not is_valid_program_id(program_id):
            await self._reject(
                send,
                ErrorCode.INVALID_PROGRAM_ID,
                f"{PROGRAM_ID_HEADER} must be {_ID_RULE}",
                param=PROGRAM_ID_HEADER,
            )
            return
        try:
            hints = Hints.from_headers(Headers(scope=scope))
        except ValidationError as exc:
            await self._reject(send, ErrorCode.INVALID_HINTS, describe_validation_error(exc))
            return
        raw = await _read_body(receive, None)
        if raw is None:
            return  # the client left before its request arrived
        body = parse_body(raw)
        # Only now touch the table: ``admit`` decides and registers the request in flight
        # without awaiting, so the TTL sweep can never free a record a request is to use.
        decision = admit(
            self.table,
            self.policy,
            program_id,
            owner=owner,
            hints=hints,
            shape=body.shape if body is not None else None,
        )
        if decision.record is not None:
            self.metrics.hints("header", _hint_fields(hints))
        if isinstance(decision, Refused):
            await self._reject(send, decision.code, decision.message)
            return
        if body is not None:
            if decision.max_tokens is not None:
                body.set_max_tokens(decision.max_tokens)
            if decision.priority is not None:
                body.set_priority(decision.priority)
            body.request_usage()
            if body.changed:
                raw = body.encode()
                scope = _with_content_length(scope, len(raw))
        await self._run(decision, body, raw, scope, receive, send)

    async def _record(self, program_id: str, owner: str | None, send: Send) -> ProgramRecord | None:
        """The program's record, created on first sight; ``None`` after an error reply."""
        found = find_program(self.table, program_id, owner=owner)
        if isinstance(found, Refused):
            await self._reject(send, found.code, found.message)
            return None
        return found

    async def _run(
        self,
        admitted: Admitted,
        body: RequestBody | None,
        raw: bytes,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        # The request is in flight since ``admit``: end it in ``finally`` whatever happens.
        self.metrics.admitted()
        record, handle = admitted.record, admitted.handle
        replay = _Replay(raw, receive)
        relay = Relay(
            replay.receive, send, handle.aborted, strip_usage=body is not None and body.strip_usage
        )
        try:
            await self.app(scope, relay.receive, relay.send)
        finally:
            relay.close()
            if relay.response_complete and 400 <= relay.status < 500:
                handle.reserved = 0  # vLLM refused the request: nothing was generated
            record.end_request(
                handle,
                relay.prompt_tokens,
                relay.completion_tokens,
                measured=relay.usage_seen and relay.response_complete,
            )
            self.metrics.used(relay.prompt_tokens, relay.completion_tokens)
            self.table.touch(record)
        if handle.aborted.is_set() and not relay.response_complete:
            late = record.stop_code is ErrorCode.DEADLINE_EXCEEDED
            why = " (its deadline passed)" if late else ""
            await relay.finish_aborted(
                error_body(
                    record.stop_code,
                    f"program {record.id} was stopped{why}; this request was aborted",
                ),
                ERROR_STATUS[record.stop_code],
            )

    # -- control endpoints ------------------------------------------------------

    async def _load(self, scope: Scope, send: Send) -> None:
        allowed, _ = self._authorize(scope)
        if not allowed:
            await send_json(send, 401, {"error": "Unauthorized"})
            return
        if scope["method"] != "GET":
            await send_error(
                send,
                ErrorCode.METHOD_NOT_ALLOWED,
                f"{scope['method']} {LOAD_PATH}: allowed is GET",
                headers=[(b"allow", b"GET")],
            )
            return
        waiting, running = engine_queue(self.metrics.registry)
        programs = list(self.table)
        load = ServerLoad(
            waiting=waiting,
            running=running,
            in_flight=sum(len(r.in_flight) for r in programs),
            programs=len(programs),
        )
        await send_json(send, 200, load.model_dump())

    async def _control(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        allowed, owner = self._authorize(scope)
        if not allowed:
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
            allowed_methods = ", ".join(routes)
            await send_error(
                send,
                ErrorCode.METHOD_NOT_ALLOWED,
                f"{method} {path}: allowed is {allowed_methods}",
                headers=[(b"allow", allowed_methods.encode())],
            )
            return
        if not is_valid_program_id(program_id):
            await send_error(send, ErrorCode.INVALID_PROGRAM_ID, f"program id must be {_ID_RULE}")
            return
        await handler(program_id, owner, receive, send)

    async def _get(self, program_id: str, owner: str | None, receive: Receive, send: Send) -> None:
        await _send_info(send, program_id, self.table.get(program_id, owner=owner))

    async def _delete(
        self, program_id: str, owner: str | None, receive: Receive, send: Send
    ) -> None:
        record = self.table.get(program_id, owner=owner)
        aborted = 0
        if record is not None:  # requests a stop already aborted are not counted again
            aborted = sum(not h.aborted.is_set() for h in record.in_flight)
        await _send_info(send, program_id, self.table.finish(program_id, owner=owner))
        if aborted:
            self.metrics.stop_aborted(aborted)

    async def _hints(
        self, program_id: str, owner: str | None, receive: Receive, send: Send
    ) -> None:
        try:
            body = await _read_body(receive, MAX_HINT_BODY)
        except ValueError:
            await send_error(
                send, ErrorCode.INVALID_HINTS, f"hint body larger than {MAX_HINT_BODY} bytes"
            )
            return
        if body is None:
            return  # the client left
        try:
            parsed = Hints.model_validate_json(body or b"{}")
        except ValidationError as exc:
            await send_error(send, ErrorCode.INVALID_HINTS, describe_validation_error(exc))
            return
        record = await self._record(program_id, owner, send)
        if record is None:
            return
        record.apply(parsed)
        self.metrics.hints("endpoint", _hint_fields(parsed))
        if parsed.stop:
            aborted = self.table.stop(program_id, owner=owner)
            self.metrics.stop_aborted(aborted)
            logger.info("program %s stopped; %d in-flight requests aborted", program_id, aborted)
        await send_json(send, 200, record.info().model_dump())


class _Replay:
    """A ``receive`` that hands vLLM the (rewritten) body, then the real stream."""

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._receive()


def _with_content_length(scope: Scope, length: int) -> Scope:
    headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}


async def _send_info(send: Send, program_id: str, record: ProgramRecord | None) -> None:
    """Send a program's info, or ``program_not_found``."""
    if record is None:
        await send_error(send, ErrorCode.PROGRAM_NOT_FOUND, f"no program {program_id}")
        return
    await send_json(send, 200, record.info().model_dump())


async def _read_body(receive: Receive, limit: int | None) -> bytes | None:
    """Read a request body; ``None`` when the client left before it was complete.

    Raises:
        ValueError: The body is larger than ``limit`` bytes.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise ValueError(f"body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
