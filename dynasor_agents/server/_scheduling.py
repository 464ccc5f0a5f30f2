"""Program-level scheduling, mapped onto vLLM's integer request ``priority``.

vLLM's priority scheduler (``--scheduling-policy priority``) runs waiting
requests in order of ``(priority, arrival time)``, lower first. A request's
priority is fixed when it arrives, so each policy here turns the *program's*
state into one number per request at admission:

* :class:`Fcfs` leaves the request alone (vLLM's own order, the baseline).
* :class:`Gang` gives every request of a program the program's arrival number,
  so a program's samples run together, earlier programs first.
* :class:`Dynasor` orders programs by estimated remaining work (approximate
  shortest-remaining-first; certain programs are about to stop, so their
  remaining work shrinks with their certainty) plus an aging term that grows
  with the program's arrival time. Aging is expressed in absolute time, so a
  request already waiting keeps its place while later arrivals get larger
  numbers: no program starves, although vLLM never re-prioritizes a queued
  request.
* :class:`Las` runs the program that has received the least service first
  (program-level least attained service, as Autellix does): the priority is
  the completion tokens the program has generated so far, so a new program's
  first round overtakes the later rounds of programs that have already run a
  lot, with no length prediction at all.
* :class:`Edf` runs the earliest deadline hint first; a program without one
  ranks as if due ``no_deadline`` seconds after it arrived.

A new policy is one class with a ``name`` and a ``priority`` method.

Example:
    >>> from dynasor_agents.protocol import Hints
    >>> from dynasor_agents.server._table import ProgramTable
    >>> table = ProgramTable(clock=lambda: 0.0)
    >>> long = table.get_or_create("long")
    >>> long.apply(Hints(certainty=0.1, remaining=8))
    >>> short = table.get_or_create("short")
    >>> short.apply(Hints(certainty=0.9, remaining=1))
    >>> policy = Dynasor(aging=0.0)
    >>> shape = RequestShape(max_tokens=32)
    >>> policy.priority(long, shape, table), policy.priority(short, shape, table)
    (230, 3)
    >>> Gang().priority(long, shape, table), Gang().priority(short, shape, table)
    (0, 1)
    >>> long.completion_tokens = 700  # it has run a lot already
    >>> Las().priority(long, shape, table), Las().priority(short, shape, table)
    (700, 0)
    >>> short.apply(Hints(deadline=2.5))
    >>> Edf().priority(short, shape, table), Edf(no_deadline=60).priority(long, shape, table)
    (2500, 60000)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from dynasor_agents.server._config import SchedulingName, ServerConfig

if TYPE_CHECKING:
    from dynasor_agents.server._table import ProgramRecord, ProgramTable

__all__ = [
    "Dynasor",
    "Edf",
    "Fcfs",
    "Gang",
    "Las",
    "RequestShape",
    "SchedulingPolicy",
    "make_policy",
]

_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class RequestShape:
    """What a scheduling policy sees of one request.

    Attributes:
        max_tokens: Completion tokens asked per choice (``None``: not set).
        n: Choices asked for.
    """

    max_tokens: int | None = None
    n: int = 1


class SchedulingPolicy(Protocol):
    """Turns a program's state into a vLLM priority for its next request."""

    @property
    def name(self) -> str:
        """The policy's name, as on the command line."""
        ...

    def priority(
        self, program: ProgramRecord, request: RequestShape, table: ProgramTable
    ) -> int | None:
        """The request's priority (lower runs first), or ``None`` to leave it alone."""
        ...


class Fcfs:
    """vLLM's own first-come-first-served order: priorities are left alone."""

    name = "fcfs"

    def priority(
        self, program: ProgramRecord, request: RequestShape, table: ProgramTable
    ) -> int | None:
        """Always ``None``."""
        return None


class Gang:
    """All requests of a program share its arrival number; earlier programs first."""

    name = "gang"

    def priority(
        self, program: ProgramRecord, request: RequestShape, table: ProgramTable
    ) -> int | None:
        """The program's arrival number."""
        return program.seq


@dataclass(frozen=True)
class Dynasor:
    """Gang + approximate shortest-remaining-first + aging.

    The priority is ``aging * (program arrival - server start) + remaining``,
    where ``remaining`` estimates the program's remaining completion tokens:

    * requests still expected (the ``remaining`` hint, else 1) times its
      average tokens per request so far (else this request's ``max_tokens``
      times ``n``, else ``request_tokens``);
    * no more than its budget left, when it has one;
    * times ``1 - certainty``: a nearly certain program is about to stop.

    Args:
        aging: Tokens of estimated work forgiven per second of a program's age.
        request_tokens: Tokens a request is assumed to generate when nothing
            better is known.
    """

    aging: float = 100.0
    request_tokens: int = 256
    name: str = "dynasor"

    def remaining_work(self, program: ProgramRecord, request: RequestShape) -> float:
        """Estimated completion tokens the program still has to generate."""
        per_request = program.tokens_per_request
        if per_request is None:
            asked = request.max_tokens if request.max_tokens is not None else self.request_tokens
            per_request = float(asked * request.n)
        work = per_request * (program.remaining if program.remaining is not None else 1)
        left = program.budget_left
        if left is not None:
            work = min(work, float(left))
        if program.certainty is not None:
            work *= 1.0 - program.certainty
        return work

    def priority(
        self, program: ProgramRecord, request: RequestShape, table: ProgramTable
    ) -> int | None:
        """Age term plus remaining work, rounded to vLLM's integer priority."""
        age = max(0.0, program.created - table.epoch)
        value = round(self.aging * age + self.remaining_work(program, request))
        return min(value, _INT64_MAX)


class Las:
    """Least attained service per program (Autellix's PLAS): least-served programs first.

    The priority is the completion tokens the program has been charged so far
    (finished requests, aborted ones at what they reserved). Every request of
    a program that has not generated anything yet gets 0, so new programs'
    first rounds run before the later rounds of long programs; a long program
    only waits while programs that have received less than it are queued.
    Ties keep arrival order (vLLM breaks equal priorities by arrival time).
    """

    name = "las"

    def priority(
        self, program: ProgramRecord, request: RequestShape, table: ProgramTable
    ) -> int | None:
        """The program's completion tokens so far."""
        return min(program.completion_tokens, _INT64_MAX)


@dataclass(frozen=True)
class Edf:
    """Earliest deadline first, by the program's ``deadline`` hint.

    The priority is the deadline in milliseconds after the table's start. A
    program without a deadline ranks as if due ``no_deadline`` seconds after
    it arrived, so it is neither starved by nor starving programs with one.

    Args:
        no_deadline: The relative deadline, seconds, assumed for a program
            without a deadline hint.
    """

    no_deadline: float = 3600.0
    name: str = "edf"

    def priority(
        self, program: ProgramRecord, request: RequestShape, table: ProgramTable
    ) -> int | None:
        """Milliseconds from the table's start to the program's deadline (0 if past)."""
        due = program.deadline
        if due is None:
            due = program.created + self.no_deadline
        return min(max(0, round(1000.0 * (due - table.epoch))), _INT64_MAX)


def make_policy(config: ServerConfig) -> SchedulingPolicy:
    """The policy ``config.scheduling`` names, set up from ``config``."""
    name: SchedulingName = config.scheduling
    if name == "fcfs":
        return Fcfs()
    if name == "gang":
        return Gang()
    if name == "las":
        return Las()
    if name == "edf":
        return Edf()
    return Dynasor(aging=config.aging, request_tokens=config.request_tokens)
