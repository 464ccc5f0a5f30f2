"""The one exception hierarchy of dynasor-agents.

Every error the library raises on purpose is a :class:`DynasorError` and carries
the ``program_id`` of the reasoning program it concerns (``None`` when the error
happened before any program existed, e.g. a bad constructor argument)::

    DynasorError                      base; .program_id, .code
    ├── InvalidInputError(ValueError) bad argument or input: empty answers, no
    │                                 samples, a threshold outside 0..1, ...
    ├── NoSamplesError                a round produced no usable sample
    └── ServerError                   the Dynasor server answered with an error
        ├── ProgramStoppedError       code ``program_stopped``: the program was
        │   │                         stopped, the server refuses its requests
        │   └── DeadlineExceededError code ``deadline_exceeded``: the server
        │                             stopped it because its deadline passed
        ├── ProgramNotFoundError      code ``program_not_found`` (also another
        │                             API key's program)
        ├── BudgetExhaustedError      code ``budget_exhausted``: the program
        │                             has no token budget left
        └── TooManyProgramsError      code ``too_many_programs``: the server's
                                      program table is full

``code`` is one of :class:`dynasor_agents.protocol.ErrorCode` for errors that
cross the wire, so client code can branch on the same stable strings the server
sends.

Example:
    >>> err = InvalidInputError("threshold must be in [0, 1], got 2", program_id="p1")
    >>> isinstance(err, ValueError), err.program_id
    (True, 'p1')
    >>> str(err)
    'threshold must be in [0, 1], got 2 (program p1)'
"""

from __future__ import annotations

__all__ = [
    "BudgetExhaustedError",
    "DeadlineExceededError",
    "DynasorError",
    "InvalidInputError",
    "NoSamplesError",
    "ProgramNotFoundError",
    "ProgramStoppedError",
    "ServerError",
    "TooManyProgramsError",
]


class DynasorError(Exception):
    """Base of every error dynasor-agents raises.

    Args:
        message: What went wrong, naming the offending value.
        program_id: The reasoning program concerned, if any.
        code: A stable machine-readable code (see ``protocol.ErrorCode``).
    """

    default_code: str = "dynasor_error"

    def __init__(
        self, message: str, *, program_id: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.program_id = program_id
        self.code = code or self.default_code

    def __str__(self) -> str:
        if self.program_id is None:
            return self.message
        return f"{self.message} (program {self.program_id})"


class InvalidInputError(DynasorError, ValueError):
    """An argument or input value is invalid; the message names it."""

    default_code = "invalid_input"


class NoSamplesError(DynasorError):
    """A reasoning program ended without a single usable sample."""

    default_code = "no_samples"


class ServerError(DynasorError):
    """The Dynasor server (vLLM with our component) returned an error.

    Args:
        message: The server's message.
        status_code: The HTTP status of the response.
        program_id: The program concerned.
        code: The stable error code from the response body.
    """

    default_code = "server_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 500,
        program_id: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, program_id=program_id, code=code)
        self.status_code = status_code


class ProgramStoppedError(ServerError):
    """The program was stopped; the server refuses its new requests."""

    default_code = "program_stopped"


class DeadlineExceededError(ProgramStoppedError):
    """The program's deadline passed, so the server stopped it.

    A strategy that already has samples answers with them (stop reason
    ``deadline``) instead of raising this.
    """

    default_code = "deadline_exceeded"


class ProgramNotFoundError(ServerError):
    """The server has no such program (or it belongs to another API key)."""

    default_code = "program_not_found"


class BudgetExhaustedError(ServerError):
    """The program's token budget is spent; the server refuses new requests."""

    default_code = "budget_exhausted"


class TooManyProgramsError(ServerError):
    """The server's program table is full; retry once programs finish or expire."""

    default_code = "too_many_programs"
