"""The client half of the wire protocol: a reasoning program handle and its hint client.

A :class:`Program` names one reasoning program (a uuid4 unless given), renders
the headers every request of the program carries, tracks the program's
in-flight tasks so it can cancel them, and tells the server about itself
(certainty, budget, stop) through a :class:`DynasorClient`.

Example:
    >>> program = Program("demo-1")
    >>> program.headers(Hints(certainty=0.5))
    {'X-Dynasor-Program-Id': 'demo-1', 'X-Dynasor-Certainty': '0.5'}
    >>> len(Program().id)
    36
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Mapping
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from dynasor_agents.errors import (
    BudgetExhaustedError,
    DeadlineExceededError,
    InvalidInputError,
    ProgramNotFoundError,
    ProgramStoppedError,
    ServerError,
    TooManyProgramsError,
)
from dynasor_agents.protocol import (
    LOAD_PATH,
    PROGRAM_ID_HEADER,
    ErrorCode,
    Hints,
    ProgramInfo,
    ServerLoad,
    hints_path,
    is_valid_program_id,
    program_path,
)

__all__ = ["DynasorClient", "Program", "raise_for_error", "typed_error"]

_ERRORS: dict[str, type[ServerError]] = {
    ErrorCode.PROGRAM_STOPPED.value: ProgramStoppedError,
    ErrorCode.PROGRAM_NOT_FOUND.value: ProgramNotFoundError,
    ErrorCode.BUDGET_EXHAUSTED.value: BudgetExhaustedError,
    ErrorCode.TOO_MANY_PROGRAMS.value: TooManyProgramsError,
    ErrorCode.DEADLINE_EXCEEDED.value: DeadlineExceededError,
}


def typed_error(exc: BaseException, program_id: str | None) -> ServerError | None:
    """The typed :class:`ServerError` for an OpenAI client error carrying a Dynasor code.

    OpenAI-compatible clients (``openai``, and LangChain models built on it)
    raise their own ``APIStatusError`` with the body's ``code``; this turns one
    that carries one of our :class:`ErrorCode` values into our exception, so
    strategies branch on one hierarchy. Other errors give ``None``.

    Example:
        >>> class APIError(Exception):
        ...     code, status_code, message = "budget_exhausted", 429, "spent"
        >>> typed_error(APIError(), "p1")
        BudgetExhaustedError('spent')
    """
    code = getattr(exc, "code", None)
    cls = _ERRORS.get(str(code)) if code is not None else None
    if cls is None:
        return None
    status = getattr(exc, "status_code", None)
    return cls(
        str(getattr(exc, "message", None) or exc),
        status_code=status if isinstance(status, int) else 500,
        program_id=program_id,
        code=str(code),
    )


def raise_for_error(status_code: int, body: Any, program_id: str | None) -> None:
    """Raise the typed :class:`ServerError` for an error response, if it is one.

    Args:
        status_code: The HTTP status.
        body: The decoded JSON body (OpenAI error format) or anything else.
        program_id: The program the request was for.

    Example:
        >>> raise_for_error(409, {"error": {"code": "program_stopped", "message": "stopped"}}, "p")
        Traceback (most recent call last):
        ...
        dynasor_agents.errors.ProgramStoppedError: stopped (program p)
    """
    if status_code < 400:
        return
    err = body.get("error") if isinstance(body, Mapping) else None
    code = err.get("code") if isinstance(err, Mapping) else None
    message = err.get("message") if isinstance(err, Mapping) else None
    cls = _ERRORS.get(str(code), ServerError)
    raise cls(
        str(message or f"server answered HTTP {status_code}"),
        status_code=status_code,
        program_id=program_id,
        code=str(code) if code else None,
    )


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ServerError) and exc.status_code >= 500


class DynasorClient:
    """Talks to the hint and control endpoints of a Dynasor-enabled vLLM server.

    Transport errors and 5xx answers are retried with exponential backoff
    (tenacity); 4xx answers raise typed errors at once.

    Args:
        base_url: The server root or its OpenAI base (``http://host:8000`` or
            ``http://host:8000/v1``).
        api_key: The API key vLLM was started with, if any.
        transport: An httpx transport to use instead of the network (tests).
        timeout: Seconds per request.
        attempts: Tries per call, including the first.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        attempts: int = 3,
    ) -> None:
        root = base_url.rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        if not root.startswith(("http://", "https://")):
            raise InvalidInputError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = root
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._timeout = timeout
        self._attempts = attempts
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        # One pooled client per event loop: pooled connections are bound to their loop.
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            for old in [lp for lp in self._clients if lp.is_closed()]:
                del self._clients[old]
            client = httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._headers,
                timeout=self._timeout,
                transport=self._transport,
            )
            self._clients[loop] = client
        return client

    async def request(
        self, method: str, path: str, program_id: str | None, json: Any = None
    ) -> Any:
        """Send one control request, retrying transient failures; return its JSON."""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.05, max=1.0),
            retry=retry_if_exception(_transient),
            reraise=True,
        ):
            with attempt:
                response = await self._client().request(method, path, json=json)
                try:
                    body = response.json()
                except ValueError:
                    body = None
                raise_for_error(response.status_code, body, program_id)
                return body
        raise AssertionError("unreachable")  # pragma: no cover

    async def send_hints(self, program_id: str, hints: Hints) -> ProgramInfo:
        """``POST`` hints for a program; returns the server's view of it."""
        body = await self.request(
            "POST", hints_path(program_id), program_id, hints.model_dump(exclude_none=True)
        )
        return ProgramInfo.model_validate(body)

    async def get(self, program_id: str) -> ProgramInfo:
        """``GET`` the server's view of a program."""
        return ProgramInfo.model_validate(
            await self.request("GET", program_path(program_id), program_id)
        )

    async def load(self) -> ServerLoad:
        """``GET`` the server's load: requests waiting and running in its engine."""
        return ServerLoad.model_validate(await self.request("GET", LOAD_PATH, None))

    async def finish(self, program_id: str) -> ProgramInfo:
        """``DELETE`` a program: mark it finished (idempotent)."""
        return ProgramInfo.model_validate(
            await self.request("DELETE", program_path(program_id), program_id)
        )

    async def aclose(self) -> None:
        """Close the pooled HTTP clients of the running loop."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()


class Program:
    """One reasoning program: its id, request headers, hints and in-flight tasks.

    Args:
        program_id: The program id (validated); a uuid4 when omitted.
        client: Where to send hints; without one, hints stay local (a plain
            OpenAI-compatible server that knows nothing of Dynasor).
        deadline: When the program must be done, seconds since the epoch; every
            request carries it (``X-Dynasor-Deadline``). A Dynasor server ranks
            by it under ``edf`` and stops the program once it has passed; the
            strategy then answers with what it has (stop reason ``deadline``).

    Example:
        >>> Program("p1", deadline=1_900_000_000.0).headers()
        {'X-Dynasor-Program-Id': 'p1', 'X-Dynasor-Deadline': '1900000000.000'}
    """

    def __init__(
        self,
        program_id: str | None = None,
        *,
        client: DynasorClient | None = None,
        deadline: float | None = None,
    ):
        pid = program_id if program_id is not None else str(uuid.uuid4())
        if not is_valid_program_id(pid):
            raise InvalidInputError(
                f"program id must be 1-128 characters of A-Za-z0-9._:-, got {pid!r}"
            )
        if deadline is not None and not (math.isfinite(deadline) and deadline > 0):
            raise InvalidInputError(
                f"deadline must be seconds since the epoch (> 0), got {deadline!r}",
                program_id=pid,
            )
        self.id = pid
        self.client = client
        self.deadline = deadline
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopped = False

    def __repr__(self) -> str:
        return f"Program({self.id!r})"

    def headers(self, hints: Hints | None = None) -> dict[str, str]:
        """Headers for one request of this program, with the latest hints."""
        out = {PROGRAM_ID_HEADER: self.id}
        if self.deadline is not None:
            hints = (hints or Hints()).model_copy(update={"deadline": self.deadline})
        if hints is not None:
            out.update(hints.to_headers())
        return out

    def track(self, task: asyncio.Task[Any]) -> asyncio.Task[Any]:
        """Remember an in-flight task so :meth:`cancel_inflight` can cancel it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def in_flight(self) -> int:
        """Tracked tasks not yet done."""
        return sum(1 for t in self._tasks if not t.done())

    async def cancel_inflight(self) -> int:
        """Cancel every tracked task and wait for them; returns how many were cancelled.

        Cancelling a request task closes its HTTP connection, which vLLM sees as
        a client disconnect and aborts the request in the engine.
        """
        me = asyncio.current_task()  # a tracked task may stop its own program
        pending = [t for t in self._tasks if not t.done() and t is not me]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)

    async def send_hints(self, hints: Hints) -> ProgramInfo | None:
        """Send hints to the server (no-op without a client)."""
        if self.client is None:
            return None
        return await self.client.send_hints(self.id, hints)

    async def stop(self) -> ProgramInfo | None:
        """Stop the program: cancel local tasks and tell the server (idempotent).

        The server aborts the program's in-flight requests inside vLLM, including
        ones sent by other clients, and refuses new ones.
        """
        await self.cancel_inflight()
        if self.stopped:
            return None
        info = await self.send_hints(Hints(stop=True))
        self.stopped = True  # only once the server knows: a failed stop can be retried
        return info
