"""The admission decision for one generation request, as a sans-IO function.

:func:`admit` is everything the server component decides when a request of a
program arrives, and nothing it does about it: it reads and updates the program
table, and returns what to do. The middleware turns the decision into a
rewritten body or an error reply; a simulator calls the same function, so the
two cannot drift apart.

The steps, in order:

1. find the program's record, creating it on first sight (another owner's
   program is ``program_not_found``; a full table is ``too_many_programs``);
2. record the request's hints (a repeated budget is not a reset);
3. stop a program whose deadline has passed (``deadline_exceeded``), and
   refuse a stopped or finished program (``program_stopped``, or the code it
   was stopped with);
4. clamp ``max_tokens`` to the program's budget (``budget_exhausted`` once it
   is spent) and reserve the clamped tokens times ``n``;
5. price the request, as it will run, with the scheduling policy;
6. register the request as in flight.

Nothing awaits between the steps, so the table's TTL sweep can never free a
record between the decision and the request being in flight.

Example:
    >>> from dynasor_agents.protocol import Hints
    >>> from dynasor_agents.server._scheduling import Gang, RequestShape
    >>> from dynasor_agents.server._table import ProgramTable
    >>> table = ProgramTable(clock=lambda: 0.0)
    >>> decision = admit(
    ...     table, Gang(), "p1", hints=Hints(budget=100), shape=RequestShape(max_tokens=64, n=2)
    ... )
    >>> decision.max_tokens, decision.reserved, decision.priority
    (50, 100, 0)
    >>> refused = admit(table, Gang(), "p1", hints=Hints(), shape=RequestShape(max_tokens=64))
    >>> refused.code.value
    'budget_exhausted'
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dynasor_agents.protocol import API_PREFIX, ErrorCode, Hints
from dynasor_agents.server._scheduling import RequestShape, SchedulingPolicy
from dynasor_agents.server._table import (
    InFlight,
    OwnerMismatchError,
    ProgramRecord,
    ProgramTable,
    TableFullError,
)

__all__ = ["Admitted", "Refused", "admit", "find_program"]


@dataclass(frozen=True)
class Admitted:
    """The request may run; it is already registered as in flight.

    Attributes:
        record: The program's record.
        handle: The request's in-flight handle (its abort event and reservation);
            end it with :meth:`ProgramRecord.end_request`.
        max_tokens: The per-choice ``max_tokens`` to run the request with when
            the program has a budget (the requested one, clamped to what is
            left); ``None`` when no budget applies or the body was not parsed.
        priority: The scheduling priority to give the request (lower runs
            first); ``None`` to leave it alone.
        reserved: Completion tokens reserved for the request (``max_tokens``
            times ``n`` under a budget, else 0).
    """

    record: ProgramRecord
    handle: InFlight
    max_tokens: int | None
    priority: int | None
    reserved: int


@dataclass(frozen=True)
class Refused:
    """The request is refused; nothing was registered as in flight.

    Attributes:
        code: The error code to answer with.
        message: The error's message.
        record: The program's record when one was found (its hints were then
            recorded), else ``None``.
    """

    code: ErrorCode
    message: str
    record: ProgramRecord | None = None


def find_program(
    table: ProgramTable, program_id: str, *, owner: str | None = None
) -> ProgramRecord | Refused:
    """The record of ``program_id``, created on first sight, or why there is none.

    Args:
        table: The program table.
        program_id: The program's id.
        owner: Who asks (``None`` without API keys).

    Returns:
        The record; or a refusal: ``program_not_found`` for another owner's
        program, ``too_many_programs`` when the table is full.

    Example:
        >>> table = ProgramTable(clock=lambda: 0.0, max_programs=1)
        >>> find_program(table, "p1").id
        'p1'
        >>> find_program(table, "p1", owner="someone else").code.value
        'program_not_found'
        >>> find_program(table, "p2").code.value
        'too_many_programs'
    """
    try:
        return table.get_or_create(program_id, owner=owner)
    except OwnerMismatchError:
        return Refused(ErrorCode.PROGRAM_NOT_FOUND, f"no program {program_id}")
    except TableFullError as exc:
        return Refused(
            ErrorCode.TOO_MANY_PROGRAMS,
            f"{exc}; finish programs (DELETE {API_PREFIX}/{{id}}) or wait for them to expire",
        )


def admit(
    table: ProgramTable,
    policy: SchedulingPolicy,
    program_id: str,
    *,
    owner: str | None = None,
    hints: Hints,
    shape: RequestShape | None,
) -> Admitted | Refused:
    """Decide whether a request of ``program_id`` runs, and how.

    On admission the request is registered as in flight
    (:meth:`ProgramRecord.begin_request` with its reservation) and the
    program's ``priority`` is updated, so the caller must end the request
    (:meth:`ProgramRecord.end_request`) whatever happens to it.

    Args:
        table: The program table.
        policy: The scheduling policy that prices the request.
        program_id: The program the request belongs to (already validated).
        owner: Who sends it (``None`` without API keys).
        hints: The hints the request carries.
        shape: The request's ``max_tokens`` and ``n``; ``None`` when its body
            could not be parsed (it is then neither clamped nor prioritized, and
            reserves nothing: the engine refuses it itself).

    Returns:
        :class:`Admitted` with the clamp, priority and reservation, or
        :class:`Refused` with the error code and message.

    Example:
        >>> from dynasor_agents.server._scheduling import Dynasor
        >>> table = ProgramTable(clock=lambda: 0.0)
        >>> shape = RequestShape(max_tokens=32)
        >>> decision = admit(table, Dynasor(), "p1", hints=Hints(certainty=0.5), shape=shape)
        >>> decision.max_tokens, decision.priority, decision.reserved
        (None, 16, 0)
        >>> decision.handle in decision.record.in_flight
        True
        >>> _ = table.stop("p1")
        >>> admit(table, Dynasor(), "p1", hints=Hints(), shape=shape).message
        'program p1 is stopped; it takes no new requests'
        >>> later = ProgramTable(clock=lambda: 100.0)
        >>> late = admit(later, Dynasor(), "p2", hints=Hints(deadline=99.0), shape=shape)
        >>> late.code.value, late.message.split(";")[0]
        ('deadline_exceeded', 'program p2 is stopped (its deadline passed)')
    """
    found = find_program(table, program_id, owner=owner)
    if isinstance(found, Refused):
        return found
    record = found
    record.apply(hints, repeat_resets=False)
    table.stop_if_late(record)
    if not record.active:
        late = record.stop_code is ErrorCode.DEADLINE_EXCEEDED
        return Refused(
            record.stop_code,
            f"program {program_id} is {record.state.name.lower()}"
            f"{' (its deadline passed)' if late else ''}; it takes no new requests",
            record,
        )
    if shape is None:
        return Admitted(record, record.begin_request(0), None, None, 0)
    max_tokens: int | None = None
    reserved = 0
    cap = record.cap(shape.max_tokens, shape.n)
    if cap is not None and record.budget_left is not None:
        if cap < 1:
            return Refused(
                ErrorCode.BUDGET_EXHAUSTED,
                f"program {program_id} has spent its token budget "
                f"({record.completion_tokens} completion tokens used, "
                f"{record.reserved} reserved by requests in flight)",
                record,
            )
        max_tokens = cap
        reserved = cap * shape.n
        shape = replace(shape, max_tokens=cap)  # priced as it will run
    priority = policy.priority(record, shape, table)
    if priority is not None:
        record.priority = priority
    return Admitted(record, record.begin_request(reserved), max_tokens, priority, reserved)
