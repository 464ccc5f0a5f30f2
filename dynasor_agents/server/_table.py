"""The server's program table: one record per reasoning program.

A record holds the program's lifecycle state (an ordered :class:`Lifecycle`:
states only move forward), its latest hints, the tokens its requests used and
an abort handle for each of its in-flight requests. Stopping is idempotent:
the first stop aborts what is in flight, later ones change nothing.

Example:
    >>> table = ProgramTable(clock=lambda: 100.0)
    >>> record = table.get_or_create("p1")
    >>> handle = record.begin_request()
    >>> table.stop("p1"), table.stop("p1")   # aborted on the first stop only
    (1, 0)
    >>> handle.aborted.is_set(), record.state.name
    (True, 'STOPPED')
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dynasor_agents.protocol import Hints, Lifecycle, ProgramInfo

__all__ = ["InFlight", "ProgramRecord", "ProgramTable"]


@dataclass(eq=False)
class InFlight:
    """One in-flight request; setting ``aborted`` makes vLLM see its client leave."""

    aborted: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class ProgramRecord:
    """The server's view of one program."""

    id: str
    created: float
    last_activity: float
    owner: str | None = None
    state: Lifecycle = Lifecycle.ACTIVE
    certainty: float | None = None
    budget: int | None = None
    deadline: float | None = None
    requests: int = 0
    aborted: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    in_flight: set[InFlight] = field(default_factory=set)

    @property
    def active(self) -> bool:
        """Whether the program may still send requests."""
        return self.state is Lifecycle.ACTIVE

    def apply(self, hints: Hints) -> None:
        """Record the set fields of ``hints`` (``stop`` is the table's job)."""
        if hints.certainty is not None:
            self.certainty = hints.certainty
        if hints.budget is not None:
            self.budget = hints.budget
        if hints.deadline is not None:
            self.deadline = hints.deadline

    def begin_request(self) -> InFlight:
        """Register a new in-flight request and return its abort handle."""
        handle = InFlight()
        self.in_flight.add(handle)
        self.requests += 1
        return handle

    def end_request(self, handle: InFlight, prompt_tokens: int, completion_tokens: int) -> None:
        """Unregister a request and add the tokens its response reported."""
        self.in_flight.discard(handle)
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens

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
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._programs: dict[str, ProgramRecord] = {}

    def __len__(self) -> int:
        return len(self._programs)

    def __iter__(self) -> Iterator[ProgramRecord]:
        return iter(list(self._programs.values()))

    def get(self, program_id: str) -> ProgramRecord | None:
        """The record of ``program_id``, if known."""
        return self._programs.get(program_id)

    def get_or_create(self, program_id: str, *, owner: str | None = None) -> ProgramRecord:
        """The record of ``program_id``, created on first sight; marks activity."""
        now = self._clock()
        record = self._programs.get(program_id)
        if record is None:
            record = ProgramRecord(id=program_id, created=now, last_activity=now, owner=owner)
            self._programs[program_id] = record
        record.last_activity = now
        return record

    def touch(self, record: ProgramRecord) -> None:
        """Mark activity on ``record`` now."""
        record.last_activity = self._clock()

    def _advance(self, program_id: str, state: Lifecycle) -> tuple[ProgramRecord | None, int]:
        record = self._programs.get(program_id)
        if record is None:
            return None, 0
        record.last_activity = self._clock()
        if record.state < state:
            record.state = state
        return record, record.abort_all()

    def stop(self, program_id: str) -> int:
        """Stop a program: abort its in-flight requests, refuse new ones (idempotent).

        Returns:
            How many in-flight requests this call aborted.
        """
        return self._advance(program_id, Lifecycle.STOPPED)[1]

    def finish(self, program_id: str) -> ProgramRecord | None:
        """Mark a program finished (its work is done); aborts stragglers. Idempotent."""
        return self._advance(program_id, Lifecycle.FINISHED)[0]
