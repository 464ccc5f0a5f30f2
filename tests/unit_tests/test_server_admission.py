"""The admission decision (``dynasor_agents.server.admit``) on its own, without I/O.

Each case prepares a program table, sends one request's hints and shape through
:func:`admit` and checks the decision, what it registered in flight and what it
recorded on the program. The middleware tests check the same rules over HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from dynasor_agents.protocol import ErrorCode, Hints
from dynasor_agents.server import (
    Admitted,
    ProgramRecord,
    ProgramTable,
    Refused,
    RequestShape,
    SchedulingPolicy,
    admit,
)
from dynasor_agents.server._scheduling import Dynasor, Fcfs, Gang

PID = "p"


class ShapePriced:
    """A policy whose priority is the tokens the request may generate, as it sees them."""

    name = "shape-priced"

    def priority(
        self, program: ProgramRecord, request: RequestShape, table: ProgramTable
    ) -> int | None:
        return None if request.max_tokens is None else request.max_tokens * request.n


def _nothing(table: ProgramTable) -> None:
    pass


def _stopped(table: ProgramTable) -> None:
    table.get_or_create(PID)
    table.stop(PID)


def _finished(table: ProgramTable) -> None:
    table.get_or_create(PID)
    table.finish(PID)


def _other_program_in_flight(table: ProgramTable) -> None:
    table.get_or_create("other").begin_request()


def _owned_by_a(table: ProgramTable) -> None:
    table.get_or_create(PID, owner="a")


def _budget_reserved(table: ProgramTable) -> None:
    first = admit(table, Gang(), PID, hints=Hints(budget=100), shape=RequestShape(max_tokens=100))
    assert isinstance(first, Admitted) and first.reserved == 100


def _budget_used(table: ProgramTable) -> None:
    record = table.get_or_create(PID)
    record.apply(Hints(budget=100))
    record.end_request(record.begin_request(100), 5, 100, measured=True)


def _later_program(table: ProgramTable) -> None:
    table.get_or_create("first")


@dataclass(frozen=True)
class Case:
    """One request against a prepared table, and the decision it must get."""

    setup: Callable[[ProgramTable], None]
    hints: Hints
    shape: RequestShape | None
    expected: tuple[Any, ...]
    policy: SchedulingPolicy = field(default_factory=Gang)
    owner: str | None = None
    table: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def summary(decision: Admitted | Refused) -> tuple[Any, ...]:
    """``("admitted", max_tokens, priority, reserved)`` or ``("refused", code, message, found)``."""
    if isinstance(decision, Admitted):
        return ("admitted", decision.max_tokens, decision.priority, decision.reserved)
    return ("refused", decision.code, decision.message, decision.record is not None)


SPENT = "program p has spent its token budget"
CASES = {
    "first request creates the program": Case(
        _nothing,
        Hints(),
        RequestShape(max_tokens=64),
        ("admitted", None, 0, 0),
        record={"requests": 1, "priority": 0, "budget_left": None},
    ),
    "a later program gets a later gang number": Case(
        _later_program, Hints(), RequestShape(max_tokens=64), ("admitted", None, 1, 0)
    ),
    "fcfs leaves the priority alone": Case(
        _nothing,
        Hints(),
        RequestShape(max_tokens=64),
        ("admitted", None, None, 0),
        policy=Fcfs(),
        record={"priority": None},
    ),
    "hints are recorded": Case(
        _nothing,
        Hints(certainty=0.25, budget=1000, deadline=5.0, remaining=3),
        RequestShape(max_tokens=64),
        ("admitted", 64, 0, 64),
        record={
            "certainty": 0.25,
            "budget": 1000,
            "deadline": 5.0,
            "remaining": 3,
            "budget_left": 1000 - 64,
        },
    ),
    "a stopped program is refused": Case(
        _stopped,
        Hints(certainty=0.5),
        RequestShape(max_tokens=64),
        (
            "refused",
            ErrorCode.PROGRAM_STOPPED,
            "program p is stopped; it takes no new requests",
            True,
        ),
        record={"certainty": 0.5, "requests": 0},  # hints are recorded all the same
    ),
    "a finished program is refused": Case(
        _finished,
        Hints(),
        RequestShape(max_tokens=64),
        (
            "refused",
            ErrorCode.PROGRAM_STOPPED,
            "program p is finished; it takes no new requests",
            True,
        ),
    ),
    "a full table refuses a new program": Case(
        _other_program_in_flight,
        Hints(),
        RequestShape(max_tokens=64),
        (
            "refused",
            ErrorCode.TOO_MANY_PROGRAMS,
            "the server holds 1 programs; finish programs "
            "(DELETE /v1/dynasor/programs/{id}) or wait for them to expire",
            False,
        ),
        table={"max_programs": 1},
    ),
    "another owner's program is not found": Case(
        _owned_by_a,
        Hints(certainty=0.5),
        RequestShape(max_tokens=64),
        ("refused", ErrorCode.PROGRAM_NOT_FOUND, "no program p", False),
        owner="b",
    ),
    "the owner's own program is admitted": Case(
        _owned_by_a, Hints(), RequestShape(max_tokens=64), ("admitted", None, 0, 0), owner="a"
    ),
    "the budget clamps each of n choices and reserves cap * n": Case(
        _nothing,
        Hints(budget=100),
        RequestShape(max_tokens=64, n=3),
        ("admitted", 33, 33 * 3, 99),  # priced as it runs, not at 64 * 3
        policy=ShapePriced(),
        record={"priority": 99, "budget_left": 1},
    ),
    "dynasor prices the clamped request": Case(
        _nothing,
        Hints(budget=100),
        RequestShape(max_tokens=64, n=3),
        ("admitted", 33, 99, 99),  # unclamped it would be min(64 * 3, 100) = 100
        policy=Dynasor(aging=0.0),
    ),
    "a budget sets max_tokens the body left unset": Case(
        _nothing,
        Hints(),
        RequestShape(max_tokens=None, n=2),
        ("admitted", 25, 50, 50),
        policy=ShapePriced(),
        table={"default_budget": 50},
    ),
    "a request under its budget keeps its max_tokens": Case(
        _nothing, Hints(budget=1000), RequestShape(max_tokens=64, n=2), ("admitted", 64, 0, 128)
    ),
    "a budget reserved by requests in flight is spent (a repeated budget is no reset)": Case(
        _budget_reserved,
        Hints(budget=100),
        RequestShape(max_tokens=10),
        (
            "refused",
            ErrorCode.BUDGET_EXHAUSTED,
            f"{SPENT} (0 completion tokens used, 100 reserved by requests in flight)",
            True,
        ),
        record={"requests": 1},
    ),
    "a budget used up is spent": Case(
        _budget_used,
        Hints(),
        RequestShape(max_tokens=10),
        (
            "refused",
            ErrorCode.BUDGET_EXHAUSTED,
            f"{SPENT} (100 completion tokens used, 0 reserved by requests in flight)",
            True,
        ),
    ),
    "a new budget hint reopens a spent program": Case(
        _budget_used,
        Hints(budget=20),
        RequestShape(max_tokens=10, n=4),
        ("admitted", 5, 0, 20),
    ),
    "an unparsed body is neither clamped nor prioritized and reserves nothing": Case(
        _budget_used,
        Hints(),
        None,
        ("admitted", None, None, 0),
        record={"budget_left": 0, "priority": None},
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_admission_decides(case: Case) -> None:
    table = ProgramTable(clock=lambda: 0.0, **case.table)
    case.setup(table)
    before = table.get(PID, owner=case.owner)
    in_flight = set(before.in_flight) if before is not None else set()
    requests = before.requests if before is not None else 0

    decision = admit(table, case.policy, PID, owner=case.owner, hints=case.hints, shape=case.shape)

    assert summary(decision) == case.expected
    record = table.get(PID, owner=case.owner)
    assert decision.record is record
    if isinstance(decision, Admitted):
        assert record is not None
        assert record.in_flight == in_flight | {decision.handle}  # in flight on admission
        assert decision.handle.reserved == decision.reserved
        assert record.requests == requests + 1
        if decision.priority is not None:
            assert record.priority == decision.priority
    elif record is not None:
        assert record.in_flight == in_flight and record.requests == requests
    for name, value in case.record.items():
        assert record is not None
        assert getattr(record, name) == value, name


def test_admission_results_are_frozen() -> None:
    table = ProgramTable(clock=lambda: 0.0)
    admitted = admit(table, Gang(), PID, hints=Hints(), shape=None)
    assert isinstance(admitted, Admitted)
    refused = Refused(ErrorCode.PROGRAM_STOPPED, "stopped")
    assert refused.record is None
    with pytest.raises(AttributeError):
        admitted.reserved = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        refused.message = "other"  # type: ignore[misc]
