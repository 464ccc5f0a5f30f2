"""The server's program table: one record per reasoning program.

A record holds the program's owner, lifecycle state (an ordered
:class:`Lifecycle`: states only move forward), latest hints, the tokens its
requests used, its token budget and an abort handle for each in-flight request.
Stopping is idempotent: the first stop aborts what is in flight, later ones
change nothing; the first stop's code (``program_stopped``, or
``deadline_exceeded`` when the table stopped a program whose deadline hint
passed) is what later requests are refused with. Idle programs expire after a
TTL and the table is bounded.

Budgets count *completion* tokens. Each admitted request reserves what it may
still generate (its clamped ``max_tokens`` times ``n``), so concurrent requests
of one program can never spend more than the program had left; when the
request ends the reservation is replaced by the tokens it really used.

Example:
    >>> table = ProgramTable(clock=lambda: 100.0)
    >>> record = table.get_or_create("p1")
    >>> handle = record.begin_request()
    >>> table.stop("p1"), table.stop("p1")   # aborted on the first stop only
    (1, 0)
    >>> handle.aborted.is_set(), record.state.name
    (True, 'STOPPED')
    >>> budgeted = table.get_or_create("p2")
    >>> budgeted.apply(Hints(budget=100))
    >>> budgeted.cap(requested=64, n=1), budgeted.cap(requested=64, n=2)
    (64, 50)
    >>> late = table.get_or_create("p3")
    >>> late.apply(Hints(deadline=99.0))
    >>> table.stop_if_late(late), late.stop_code.value   # 100 > 99: stopped
    (True, 'deadline_exceeded')
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dynasor_agents.protocol import ErrorCode, Hints, Lifecycle, ProgramInfo
from dynasor_agents.server._config import ServerConfig

__all__ = ["InFlight", "OwnerMismatchError", "ProgramRecord", "ProgramTable", "TableFullError"]


class TableFullError(Exception):
    """The table holds ``max_programs`` live programs; none could be expired."""


class OwnerMismatchError(Exception):
    """The program belongs to another API key (answered as if it did not exist)."""


@dataclass(eq=False)
class InFlight:
    """One in-flight request; setting ``aborted`` makes vLLM see its client leave."""

    reserved: int = 0
    aborted: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class ProgramRecord:
    """The server's view of one program."""

    id: str
    created: float
    last_activity: float
    seq: int = 0
    owner: str | None = None
    state: Lifecycle = Lifecycle.ACTIVE
    certainty: float | None = None
    budget: int | None = None
    deadline: float | None = None
    remaining: int | None = None
    priority: int | None = None
    requests: int = 0
    aborted: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    measured_requests: int = 0
    measured_tokens: int = 0
    budget_limit: int | None = None
    stop_code: ErrorCode = ErrorCode.PROGRAM_STOPPED
    in_flight: set[InFlight] = field(default_factory=set)

    @property
    def active(self) -> bool:
        """Whether the program may still send requests."""
        return self.state is Lifecycle.ACTIVE

    @property
    def reserved(self) -> int:
        """Completion tokens the in-flight requests may still generate."""
        return sum(h.reserved for h in self.in_flight)

    @property
    def budget_left(self) -> int | None:
        """Completion tokens the program may still spend beyond its reservations."""
        if self.budget_limit is None:
            return None
        return max(0, self.budget_limit - self.completion_tokens - self.reserved)

    @property
    def tokens_per_request(self) -> float | None:
        """Average completion tokens of the program's requests that reported usage."""
        if not self.measured_requests:
            return None
        return self.measured_tokens / self.measured_requests

    def apply(self, hints: Hints, *, repeat_resets: bool = True) -> None:
        """Record the set fields of ``hints`` (``stop`` is the table's job).

        A budget counts from now: the limit becomes the completion tokens used
        so far plus the budget, and requests still in flight must fit in it.
        With ``repeat_resets=False`` (hints riding on request headers) a budget
        equal to the last one seen is a repeat within one round
        of samples and does not reset the count.
        """
        if hints.certainty is not None:
            self.certainty = hints.certainty
        if hints.budget is not None and (repeat_resets or hints.budget != self.budget):
            self.budget = hints.budget
            self.budget_limit = self.completion_tokens + hints.budget
        if hints.deadline is not None:
            self.deadline = hints.deadline
        if hints.remaining is not None:
            self.remaining = hints.remaining

    def cap(self, requested: int | None, n: int = 1) -> int | None:
        """The ``max_tokens`` (per choice) a new request may have under the budget.

        Returns:
            ``requested`` when the program has no budget; otherwise the smaller
            of ``requested`` and the budget left split over ``n`` choices, which
            is 0 when the budget is spent.
        """
        left = self.budget_left
        if left is None:
            return requested
        share = left // max(1, n)
        return share if requested is None else min(requested, share)

    def begin_request(self, reserved: int = 0) -> InFlight:
        """Register a new in-flight request and return its abort handle."""
        handle = InFlight(reserved=reserved)
        self.in_flight.add(handle)
        self.requests += 1
        return handle

    def end_request(
        self, handle: InFlight, prompt_tokens: int, completion_tokens: int, *, measured: bool
    ) -> None:
        """Unregister a request and add the tokens it used.

        Args:
            handle: The request's handle.
            prompt_tokens: Prompt tokens its response reported.
            completion_tokens: Completion tokens its response reported.
            measured: Whether the response reported usage. When it did not (an
                aborted request), the request is charged its whole reservation,
                so a budget is never overrun.
        """
        self.in_flight.discard(handle)
        self.prompt_tokens += prompt_tokens
        if measured:
            self.completion_tokens += completion_tokens
            self.measured_requests += 1
            self.measured_tokens += completion_tokens
        else:
            self.completion_tokens += max(completion_tokens, handle.reserved)

    def abort_all(self) -> int:
        """Abort every in-flight request; returns how many were newly aborted."""
        count = 0
        for handle in self.in_flight:
            if not handle.aborted.is_set():
                handle.aborted.set()
                count += 1
        self.aborted += count
        return count

    def info(self) -> ProgramInfo:
        """The public view returned by the control endpoints."""
        return ProgramInfo(
            id=self.id,
            state=self.state.name.lower(),
            certainty=self.certainty,
            budget=self.budget,
            deadline=self.deadline,
            remaining=self.remaining,
            budget_left=self.budget_left,
            priority=self.priority,
            requests=self.requests,
            in_flight=len(self.in_flight),
            aborted=self.aborted,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            created=self.created,
            last_activity=self.last_activity,
        )


class ProgramTable:
    """All programs this server knows, keyed by id.

    Args:
        clock: Wall-clock seconds (injected so tests control time).
        ttl: Seconds a program may sit idle (nothing in flight) before it
            expires and its entry is freed.
        max_programs: Most live programs; a new one beyond that raises
            :class:`TableFullError` (after expiring what it can).
        default_budget: Completion tokens a new program may spend before any
            budget hint (``None``: unlimited).
        stop_late: Stop a program once its deadline hint has passed (checked
            when one of its requests arrives and at every sweep).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        ttl: float = 600.0,
        max_programs: int = 10_000,
        default_budget: int | None = None,
        stop_late: bool = True,
    ) -> None:
        self._clock = clock
        self.stop_late = stop_late
        self.ttl = ttl
        self.max_programs = max_programs
        self.default_budget = default_budget
        self.epoch = clock()
        self._programs: dict[str, ProgramRecord] = {}
        self._seq = itertools.count()
        self._last_sweep = self.epoch
        self.expired = 0
        self.retired_tokens: Counter[str] = Counter()

    @classmethod
    def from_config(
        cls, config: ServerConfig, *, clock: Callable[[], float] = time.time
    ) -> ProgramTable:
        """The table ``config`` describes (TTL, size, default budget, late programs).

        Example:
            >>> table = ProgramTable.from_config(ServerConfig(late_programs="keep", program_ttl=5))
            >>> table.ttl, table.stop_late
            (5.0, False)
        """
        return cls(
            clock=clock,
            ttl=config.program_ttl,
            max_programs=config.max_programs,
            default_budget=config.default_budget,
            stop_late=config.late_programs == "stop",
        )

    def __len__(self) -> int:
        return len(self._programs)

    def __iter__(self) -> Iterator[ProgramRecord]:
        return iter(list(self._programs.values()))

    def now(self) -> float:
        """The table's clock."""
        return self._clock()

    def get(self, program_id: str, *, owner: str | None = None) -> ProgramRecord | None:
        """The record of ``program_id`` if it exists and ``owner`` may see it."""
        self._maybe_sweep()
        record = self._programs.get(program_id)
        if record is None or record.owner != owner:
            return None
        return record

    def get_or_create(self, program_id: str, *, owner: str | None = None) -> ProgramRecord:
        """The record of ``program_id``, created on first sight; marks activity.

        Raises:
            OwnerMismatchError: The program belongs to another owner.
            TableFullError: A new program would exceed ``max_programs``.
        """
        now = self._clock()
        self._maybe_sweep(now)
        record = self._programs.get(program_id)
        if record is None:
            if len(self._programs) >= self.max_programs:
                self.sweep(now)
                if len(self._programs) >= self.max_programs:
                    raise TableFullError(f"the server holds {self.max_programs} programs")
            record = ProgramRecord(
                id=program_id, created=now, last_activity=now, owner=owner, seq=next(self._seq)
            )
            if self.default_budget is not None:
                record.budget_limit = self.default_budget
            self._programs[program_id] = record
        elif record.owner != owner:
            raise OwnerMismatchError(program_id)
        record.last_activity = now
        return record

    def touch(self, record: ProgramRecord) -> None:
        """Mark activity on ``record`` now."""
        record.last_activity = self._clock()

    def _maybe_sweep(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        if now - self._last_sweep >= min(1.0, self.ttl / 4):
            self.sweep(now)

    def stop_if_late(self, record: ProgramRecord, now: float | None = None) -> bool:
        """Stop ``record`` with ``deadline_exceeded`` if its deadline has passed.

        Does nothing unless the table has ``stop_late``, the program is active
        and has a deadline hint earlier than ``now``.

        Returns:
            Whether this call stopped it.
        """
        now = self._clock() if now is None else now
        if not (self.stop_late and record.active and record.deadline is not None):
            return False
        if now <= record.deadline:
            return False
        record.stop_code = ErrorCode.DEADLINE_EXCEEDED
        self._enter(record, Lifecycle.STOPPED, now)
        return True

    def sweep(self, now: float | None = None) -> int:
        """Stop late programs, expire and free those idle past the TTL; returns how many expired."""
        now = self._clock() if now is None else now
        self._last_sweep = now
        for record in self._programs.values():
            self.stop_if_late(record, now)
        idle = [
            r
            for r in self._programs.values()
            if not r.in_flight and now - r.last_activity > self.ttl
        ]
        for record in idle:
            record.state = Lifecycle.EXPIRED
            self.retired_tokens["prompt"] += record.prompt_tokens
            self.retired_tokens["completion"] += record.completion_tokens
            del self._programs[record.id]
        self.expired += len(idle)
        return len(idle)

    def _advance(
        self, program_id: str, state: Lifecycle, owner: str | None
    ) -> tuple[ProgramRecord | None, int]:
        record = self.get(program_id, owner=owner)
        if record is None:
            return None, 0
        return record, self._enter(record, state, self._clock())

    @staticmethod
    def _enter(record: ProgramRecord, state: Lifecycle, now: float) -> int:
        """Move ``record`` forward to ``state`` (never back) and abort what it has in flight."""
        record.last_activity = now
        if record.state < state:
            record.state = state
        return record.abort_all()

    def stop(self, program_id: str, *, owner: str | None = None) -> int:
        """Stop a program: abort its in-flight requests, refuse new ones (idempotent).

        Returns:
            How many in-flight requests this call aborted.
        """
        return self._advance(program_id, Lifecycle.STOPPED, owner)[1]

    def finish(self, program_id: str, *, owner: str | None = None) -> ProgramRecord | None:
        """Mark a program finished (its work is done); aborts stragglers. Idempotent."""
        return self._advance(program_id, Lifecycle.FINISHED, owner)[0]
