"""The server component on one simulated replica.

:class:`SimComponent` holds the real :class:`~dynasor_agents.server.ProgramTable`
(on the simulated clock) and scheduling policy, and admits each request with the
middleware's own :func:`dynasor_agents.server.admit`, so the simulator judges the
decisions the server makes; :class:`ToEngine` is an admitted request as the
simulated engine runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dynasor_agents.protocol import Hints
from dynasor_agents.server import (
    Admitted,
    ProgramTable,
    Refused,
    RequestShape,
    SchedulingPolicy,
    admit,
)

__all__ = ["SimComponent", "ToEngine"]


@dataclass(frozen=True)
class ToEngine:
    """An admitted request as the engine runs it.

    Attributes:
        max_tokens: The completion-token cap (the budget's clamp, else as sent).
        priority: The scheduling priority (``None``: the engine's default).
        admitted: The component's decision (the record and the in-flight handle).
    """

    max_tokens: int | None
    priority: int | None
    admitted: Admitted


@dataclass(eq=False)
class SimComponent:
    """The server component on one simulated replica: the real program table (on the
    simulated clock) and scheduling policy, deciding with the middleware's own
    :func:`dynasor_agents.server.admit`.

    Example:
        >>> from dynasor_agents.server import make_policy, ServerConfig
        >>> component = SimComponent(ProgramTable(clock=lambda: 0.0),
        ...                          make_policy(ServerConfig(scheduling="gang")))
        >>> sent = component.receive("p", Hints(budget=10), max_tokens=8, n=2)
        >>> sent.max_tokens, sent.priority
        (5, 0)
        >>> component.end(sent, 7, 10, measured=True)
        >>> component.receive("p", Hints(budget=10), max_tokens=8).code.value
        'budget_exhausted'
    """

    table: ProgramTable
    policy: SchedulingPolicy

    def receive(
        self, program_id: str, hints: Hints, *, max_tokens: int | None, n: int = 1
    ) -> ToEngine | Refused:
        """Admit a request of ``program_id`` (it is then in flight) or refuse it."""
        shape = RequestShape(max_tokens=max_tokens, n=n)
        decision = admit(self.table, self.policy, program_id, hints=hints, shape=shape)
        if isinstance(decision, Refused):
            return decision
        cap = max_tokens if decision.max_tokens is None else decision.max_tokens
        return ToEngine(cap, decision.priority, decision)

    def end(
        self, request: ToEngine, prompt_tokens: int, completion_tokens: int, *, measured: bool
    ) -> None:
        """The request is over: its usage (``measured`` unless it was aborted) is counted."""
        record = request.admitted.record
        record.end_request(
            request.admitted.handle, prompt_tokens, completion_tokens, measured=measured
        )
        self.table.touch(record)
