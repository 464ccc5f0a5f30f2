"""Wire protocol v1: every header name, error code and body shared by client and server.

This is the only module that spells a header or an error code. The client
(``program.py``, strategies) and the server component (``server/``) both import
it, so the two halves cannot drift apart.

Requests to ``/v1/chat/completions`` and ``/v1/completions`` may carry:

=========================  ====================================================
header                     meaning
=========================  ====================================================
``X-Dynasor-Program-Id``   the reasoning program the request belongs to
``X-Dynasor-Certainty``    latest Certaindex of the program, 0..1
``X-Dynasor-Budget``       tokens the program may still spend
``X-Dynasor-Deadline``     absolute deadline, seconds since the epoch (the
                           ``edf`` policy ranks by it; once it has passed the
                           server stops the program: ``deadline_exceeded``)
``X-Dynasor-Remaining``    requests the program still expects to send
=========================  ====================================================

A budget hint says how many *completion* tokens the program may still spend,
counted from the moment the server receives it; the server clamps each
request's ``max_tokens`` to what is left (after what its other in-flight
requests may still use). Repeating the same budget value on several requests
(one round of samples) does not reset the count; a different value does.

Example:
    >>> hints = Hints.from_headers({"x-dynasor-certainty": "0.8", "x-dynasor-budget": "120"})
    >>> hints.certainty, hints.budget, hints.stop
    (0.8, 120, False)
    >>> sorted(hints.to_headers())
    ['X-Dynasor-Budget', 'X-Dynasor-Certainty']
    >>> error_body(ErrorCode.PROGRAM_STOPPED, "program p1 was stopped")["error"]["code"]
    'program_stopped'
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "API_PREFIX",
    "BUDGET_HEADER",
    "LOAD_PATH",
    "CERTAINTY_HEADER",
    "DEADLINE_HEADER",
    "ERROR_STATUS",
    "REMAINING_HEADER",
    "MAX_PROGRAM_ID_LENGTH",
    "PROGRAM_ID_HEADER",
    "ErrorCode",
    "Hints",
    "Lifecycle",
    "ProgramInfo",
    "ServerLoad",
    "describe_validation_error",
    "error_body",
    "hints_path",
    "is_valid_program_id",
    "program_path",
]

PROGRAM_ID_HEADER: Final = "X-Dynasor-Program-Id"
CERTAINTY_HEADER: Final = "X-Dynasor-Certainty"
BUDGET_HEADER: Final = "X-Dynasor-Budget"
DEADLINE_HEADER: Final = "X-Dynasor-Deadline"
REMAINING_HEADER: Final = "X-Dynasor-Remaining"

API_PREFIX: Final = "/v1/dynasor/programs"
LOAD_PATH: Final = "/v1/dynasor/load"
"""``GET`` it for the server's :class:`ServerLoad` (a client sizes first rounds by it)."""
MAX_PROGRAM_ID_LENGTH: Final = 128
_PROGRAM_ID_RE: Final = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_PROGRAM_ID_LENGTH}}}")


def is_valid_program_id(program_id: str) -> bool:
    """Return whether ``program_id`` is 1-128 safe characters (``A-Za-z0-9._:-``).

    Example:
        >>> is_valid_program_id("sc-42"), is_valid_program_id("../etc"), is_valid_program_id("")
        (True, False, False)
    """
    return _PROGRAM_ID_RE.fullmatch(program_id) is not None


def program_path(program_id: str) -> str:
    """Path of a program's resource: ``GET`` reads it, ``DELETE`` finishes it."""
    return f"{API_PREFIX}/{program_id}"


def hints_path(program_id: str) -> str:
    """Path that takes ``POST``-ed :class:`Hints` for a program."""
    return f"{API_PREFIX}/{program_id}/hints"


class ErrorCode(enum.StrEnum):
    """Stable error codes in the ``error.code`` field of server responses."""

    PROGRAM_STOPPED = "program_stopped"
    PROGRAM_NOT_FOUND = "program_not_found"
    INVALID_PROGRAM_ID = "invalid_program_id"
    INVALID_HINTS = "invalid_hints"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BUDGET_EXHAUSTED = "budget_exhausted"
    TOO_MANY_PROGRAMS = "too_many_programs"
    DEADLINE_EXCEEDED = "deadline_exceeded"


ERROR_STATUS: Final[Mapping[ErrorCode, int]] = {
    ErrorCode.PROGRAM_STOPPED: 409,
    ErrorCode.PROGRAM_NOT_FOUND: 404,
    ErrorCode.INVALID_PROGRAM_ID: 400,
    ErrorCode.INVALID_HINTS: 400,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.BUDGET_EXHAUSTED: 429,
    ErrorCode.TOO_MANY_PROGRAMS: 503,
    ErrorCode.DEADLINE_EXCEEDED: 409,
}
"""HTTP status the server answers with for each error code."""


def error_body(code: ErrorCode, message: str, *, param: str | None = None) -> dict[str, Any]:
    """Build an OpenAI-style error body: ``{"error": {message, type, param, code}}``."""
    kind = "invalid_request_error" if ERROR_STATUS[code] < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code.value}}


class Lifecycle(enum.IntEnum):
    """A program's lifecycle on the server; states only move forward (ordered)."""

    ACTIVE = 1
    STOPPED = 2
    FINISHED = 3
    EXPIRED = 4


class Hints(BaseModel):
    """What a client tells the server about its program.

    Sent as headers on each request or as the JSON body of ``POST .../hints``.
    Unset fields leave the server's view unchanged.

    Attributes:
        certainty: The program's latest Certaindex in ``[0, 1]``.
        budget: Tokens the program may still spend (>= 0).
        deadline: Absolute deadline in seconds since the epoch (the server's
            clock). The ``edf`` scheduling policy runs earlier deadlines
            first; once the deadline has passed, the server stops the program
            (unless it runs with ``late_programs="keep"``): its in-flight
            requests are aborted and later ones refused with
            ``deadline_exceeded``, and the client answers with what it has.
        remaining: Requests (samples) the program still expects to send; the
            server's scheduler multiplies it by the program's average tokens
            per request to estimate its remaining work.
        stop: Stop the program: abort its in-flight requests, refuse new ones.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    certainty: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    budget: int | None = Field(default=None, ge=0)
    deadline: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)
    remaining: int | None = Field(default=None, ge=0)
    stop: bool = False

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Hints:
        """Read hints from request headers (names case-insensitive).

        Raises:
            pydantic.ValidationError: A header holds an invalid value.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        raw: dict[str, str] = {}
        for field, header in (
            ("certainty", CERTAINTY_HEADER),
            ("budget", BUDGET_HEADER),
            ("deadline", DEADLINE_HEADER),
            ("remaining", REMAINING_HEADER),
        ):
            value = lower.get(header.lower())
            if value is not None:
                raw[field] = value.strip()
        return cls.model_validate(raw)

    def to_headers(self) -> dict[str, str]:
        """Render the set fields as request headers (``stop`` has no header)."""
        out: dict[str, str] = {}
        if self.certainty is not None:
            out[CERTAINTY_HEADER] = f"{self.certainty:.6g}"
        if self.budget is not None:
            out[BUDGET_HEADER] = str(self.budget)
        if self.deadline is not None:
            out[DEADLINE_HEADER] = f"{self.deadline:.3f}"
        if self.remaining is not None:
            out[REMAINING_HEADER] = str(self.remaining)
        return out

    @property
    def is_empty(self) -> bool:
        """Whether no field is set (nothing to record)."""
        return not self.stop and all(
            v is None for v in (self.certainty, self.budget, self.deadline, self.remaining)
        )


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each invalid field and why, for error messages."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class ProgramInfo(BaseModel):
    """The server's view of one program, as returned by ``GET .../programs/{id}``."""

    model_config = ConfigDict(frozen=True)

    id: str
    object: str = "dynasor.program"
    state: str
    certainty: float | None = None
    budget: int | None = None
    deadline: float | None = None
    remaining: int | None = None
    budget_left: int | None = None
    priority: int | None = None
    requests: int = 0
    in_flight: int = 0
    aborted: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created: float
    last_activity: float


class ServerLoad(BaseModel):
    """How busy the server is, as returned by ``GET`` :data:`LOAD_PATH`.

    Attributes:
        waiting: Requests queued in vLLM's engine (its ``vllm:num_requests_waiting``
            gauge, summed over engines), ``None`` when the engine publishes none.
        running: Requests in the engine's running batch (``vllm:num_requests_running``),
            ``None`` likewise.
        in_flight: Generation requests of programs passing through the component now.
        programs: Programs the component holds.

    Example:
        >>> ServerLoad(waiting=3, running=8, in_flight=11, programs=4).busy
        True
        >>> ServerLoad(waiting=0, running=2, in_flight=2, programs=1).busy
        False
    """

    model_config = ConfigDict(frozen=True)

    object: str = "dynasor.load"
    waiting: int | None = None
    running: int | None = None
    in_flight: int = 0
    programs: int = 0

    @property
    def busy(self) -> bool:
        """Whether requests queue in the engine (unknown counts as not busy)."""
        return bool(self.waiting)
