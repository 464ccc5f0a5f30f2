"""The online comparison in simulated time: real programs and policies, modeled engines.

:func:`simulate` runs a :class:`OnlineWorkload` under one :class:`SystemSpec` on
``replicas`` engines of :mod:`._engine` and returns every program's
:class:`OnlineRow`, as the real load generator would. Only the engine is a model:

* **Client.** Each program is the real :func:`self_consistency_core`, driven
  with the replies of :func:`~dynasor_agents.strategies.drive`:
  ``Launch(n)`` starts ``n`` requests with the hints (round-tripped through
  headers); ``Await`` gets the next finished completion (simultaneous ones in
  launch order; a refusal is thrown into the core); ``Cancel`` aborts the
  running requests and returns those finished but not delivered; ``Finish``
  tells the server. A failing core is cleaned up as ``drive`` does; its
  :class:`DynasorError` becomes the row's ``error``.
* **Samples.** Requests replay the question's recorded paths in the order of
  ``default_rng([seed, index])`` (reshuffled once all are used); a path cut
  short by ``max_tokens`` completes with text ``""`` (no answer).
* **Server.** ``gang``/``dynasor`` run the real :class:`ProgramTable` (on the
  simulated clock) and policy per replica, and admit each request with the
  middleware's own decision, :func:`dynasor_agents.server.admit` (hints,
  refusals, the budget clamp, the priority of the clamped request, the
  request in flight); a request ends with ``end_request`` (usage, measured;
  ``(0, 0, measured=False)`` when aborted, as no usage arrives); engines
  schedule by ``priority``. ``plain`` has no
  component: ``fcfs`` engines, and only a client's cancel aborts a request.
* **Deadlines.** A system with ``deadline_hint`` sends ``arrival + hint x
  deadline_unit`` as every request's deadline hint. Just after it passes, the
  replica's table stops the program if it is still running
  (:meth:`ProgramTable.stop_if_late`, as the middleware's sweep does, here at
  the exact instant): its requests at the engine are aborted and come back to
  the client as ``deadline_exceeded`` errors, as do later ones, and the core
  answers with what it has.
* **Routing.** A :class:`~dynasor_bench.sim._route.Router` of ``routing``
  assigns each program a replica on arrival (by its uuid, as vllm-router's
  ``consistent_hash`` does by default) and hears when it ends; every request of
  the program goes there. Rows record the replica.
* **Time.** One heap of ``(time, sequence, event)``: runs are deterministic.
  A request reaches its engine ``request_overhead`` seconds after its launch
  (refusals and finishes reach the client at once). An engine with work steps
  after the other events of that instant; arrivals during a step wait for the next.

Example (four samples that all agree; early stop is certain after the first
round of two, whose paths take 3 and 5 one-second steps):
    >>> from dynasor_bench.sim._cost import CostModel
    >>> from dynasor_bench.traces._bank import PathTrace, QuestionTrace
    >>> from dynasor_bench.workload._workload import (
    ...     SYSTEMS, OnlineStrategy, OnlineWorkload, ProgramSpec)
    >>> paths = [PathTrace(text="\\\\boxed{4}", answer="4", completion_tokens=n) for n in (3, 5)]
    >>> q = QuestionTrace(id="q:1", source="toy", question="?", gold="4", prompt_tokens=10,
    ...                   paths=paths)
    >>> spec = ProgramSpec(0, 0.0, q, OnlineStrategy("sc-4", 4), difficulty=1.0, base=10.0)
    >>> cost = CostModel("toy", step_base=1.0, per_seq=0.0, per_prefill_token=0.0)
    >>> run = simulate(OnlineWorkload(rate=1.0, seed=0, programs=(spec,)), SYSTEMS[1], cost)
    >>> row = run.rows[0]
    >>> row.answer, row.correct, row.samples, row.stop_reason, row.finish
    ('4', True, 2, 'certain', 5.0)
    >>> run.engine_tokens, run.makespan
    (8, 5.0)
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dynasor_agents.certainty import normalize_answer
from dynasor_agents.errors import DynasorError, InvalidInputError, ServerError
from dynasor_agents.program import raise_for_error
from dynasor_agents.protocol import ERROR_STATUS, ErrorCode, Hints, error_body
from dynasor_agents.server import (
    ProgramTable,
    Refused,
    ServerConfig,
    make_policy,
)
from dynasor_agents.strategies import (
    Action,
    Await,
    Cancel,
    Completion,
    Core,
    Finish,
    Launch,
    SelfConsistencyResult,
    self_consistency_core,
)
from dynasor_bench.sim._component import SimComponent, ToEngine
from dynasor_bench.sim._cost import CostModel
from dynasor_bench.sim._engine import Engine, FinishedRequest
from dynasor_bench.sim._route import Router, RoutingPolicy, make_router
from dynasor_bench.traces._bank import PathTrace
from dynasor_bench.workload._workload import OnlineRow, OnlineWorkload, ProgramSpec, SystemSpec

__all__ = ["SimResult", "simulate"]


@dataclass(frozen=True)
class SimResult:
    """One simulated run.

    Attributes:
        rows: One per program, in program order.
        engine_tokens: Tokens generated, aborted requests' partial ones included.
        busy_seconds: Seconds the engines spent in steps (summed over replicas).
        makespan: When the last event happened (seconds after the start).
        prefill_tokens: Prompt tokens the engines prefilled.
        steps: Engine steps run.
        requests: Requests that reached an engine.
        aborted: Of those, requests aborted before they finished.
        replica_tokens: ``engine_tokens`` per replica.
        replica_programs: Programs routed to each replica.
    """

    rows: list[OnlineRow]
    engine_tokens: int
    busy_seconds: float
    makespan: float
    prefill_tokens: int = 0
    steps: int = 0
    requests: int = 0
    aborted: int = 0
    replica_tokens: tuple[int, ...] = ()
    replica_programs: tuple[int, ...] = ()


@dataclass(eq=False)
class _Replica:
    engine: Engine
    component: SimComponent | None  # None: plain vLLM
    stepping: bool = False  # a step is scheduled or in flight
    requests: dict[str, _Request] = field(default_factory=dict)  # at the engine


@dataclass(eq=False)
class _Request:
    rid: str
    program: _Program
    path: PathTrace
    hints: Hints
    max_tokens: int | None
    cancelled: bool = False
    sent: ToEngine | None = None  # as admitted by the component


@dataclass(eq=False)
class _Program:
    spec: ProgramSpec
    pid: str
    replica: _Replica
    replica_index: int
    core: Core[SelfConsistencyResult]
    rng: np.random.Generator
    order: list[int] = field(default_factory=list)
    launched: int = 0
    running: dict[str, _Request] = field(default_factory=dict)  # launched, not yet finished
    finished: deque[Completion | ServerError] = field(default_factory=deque)
    awaiting: bool = False
    told_server: bool = False
    deadline: float | None = None  # the hint it sends (absolute, simulated clock)
    delivered: int = 0
    delivered_tokens: int = 0

    def draw(self) -> PathTrace:
        paths = self.spec.question.paths
        if not self.order:
            self.order = [int(i) for i in self.rng.permutation(len(paths))][::-1]
        return paths[self.order.pop()]


def _error(request: _Request, code: ErrorCode, message: str) -> ServerError:
    """The component's error reply to ``request``, typed by the client as it would be."""
    try:
        raise_for_error(ERROR_STATUS[code], error_body(code, message), request.program.pid)
    except ServerError as error:
        return error
    raise AssertionError(f"{code} is not an error status")  # pragma: no cover


class _Simulation:
    def __init__(
        self,
        workload: OnlineWorkload,
        system: SystemSpec,
        cost: CostModel,
        seed: int,
        replicas: int,
        max_tokens: int,
        overhead: float,
        server: ServerConfig | None,
        router: Router,
    ) -> None:
        self.workload, self.system, self.seed = workload, system, seed
        self.router = router
        self.routed = [0] * replicas
        self.max_tokens, self.overhead = max_tokens, overhead
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.rows: dict[int, OnlineRow] = {}
        self.requests = self.aborted = 0
        self.replicas: list[_Replica] = []
        for _ in range(replicas):
            if system.scheduling == "plain":
                self.replicas.append(_Replica(Engine(cost, policy="fcfs"), None))
                continue
            config = (server or ServerConfig()).model_copy(update={"scheduling": system.scheduling})
            table = ProgramTable.from_config(config, clock=lambda: self.now)
            engine = Engine(cost, policy="priority")
            self.replicas.append(_Replica(engine, SimComponent(table, make_policy(config))))

    def at(self, when: float, event: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), event))

    def run(self) -> None:
        for spec in self.workload.programs:
            self.at(spec.arrival, functools.partial(self._arrive, spec))
        while self._heap:
            when, _, event = heapq.heappop(self._heap)
            self.now = when
            event()
        if len(self.rows) != len(self.workload.programs):  # pragma: no cover - a bug
            raise RuntimeError("simulation ended with programs still waiting for samples")

    # -- the client: one simulated drive() per program --------------------------------

    def _arrive(self, spec: ProgramSpec) -> None:
        pid = spec.id
        core = self_consistency_core(
            spec.strategy.controller(early_stop=self.system.early_stop, rounds=self.system.rounds),
            program_id=pid,
            max_tokens=self.max_tokens,
        )
        index = self.router.assign(pid)
        self.routed[index] += 1
        rng = np.random.default_rng([self.seed, spec.index])
        self._drive(_Program(spec, pid, self.replicas[index], index, core, rng), None)

    def _drive(self, prog: _Program, action: Action | None) -> None:
        """Run the core (from its start, or from ``action``) until it awaits a sample
        that has not finished yet, or ends."""
        prog.awaiting = False
        try:
            action = next(prog.core) if action is None else action
            while True:
                reply: Any = None
                if isinstance(action, Launch):
                    self._launch(prog, action)
                elif isinstance(action, Await):
                    if not prog.finished:
                        if not prog.running:
                            raise RuntimeError("strategy awaited a sample with none running")
                        prog.awaiting = True
                        return
                    reply = prog.finished.popleft()
                    if isinstance(reply, ServerError):
                        action = prog.core.throw(reply)
                        continue
                    prog.delivered += 1
                    prog.delivered_tokens += reply.completion_tokens
                elif isinstance(action, Cancel):
                    self._cancel_own(prog)
                    reply = [c for c in prog.finished if isinstance(c, Completion)]
                    prog.finished.clear()
                elif isinstance(action, Finish):
                    prog.told_server = True
                    self._tell_server(prog, stop=action.stop)
                # Emit: a snapshot nobody reads here
                action = prog.core.send(reply)
        except StopIteration as done:
            self._end(prog, done.value, None)
        except DynasorError as error:
            if error.program_id is None:
                error.program_id = prog.pid
            self._end(prog, None, error)

    def _launch(self, prog: _Program, action: Launch) -> None:
        hints = Hints.from_headers(action.hints.to_headers())  # what the server reads
        scale = self.system.deadline_hint
        if scale is not None:
            if prog.deadline is None:
                prog.deadline = prog.spec.arrival + scale * prog.spec.deadline_unit
                just_after = math.nextafter(prog.deadline, math.inf)
                self.at(just_after, functools.partial(self._late, prog))
            hints = hints.model_copy(update={"deadline": prog.deadline})
        for _ in range(action.n):
            rid, prog.launched = f"{prog.pid}-{prog.launched}", prog.launched + 1
            request = _Request(rid, prog, prog.draw(), hints, action.max_tokens)
            prog.running[request.rid] = request
            if self.overhead > 0:
                self.at(self.now + self.overhead, functools.partial(self._receive, request))
            else:
                self._receive(request)

    def _cancel_own(self, prog: _Program) -> None:
        for request in prog.running.values():
            self._abort(request)
        prog.running.clear()

    def _end(
        self, prog: _Program, result: SelfConsistencyResult | None, error: DynasorError | None
    ) -> None:
        """Clean up as ``drive`` does, then write the program's row."""
        self._cancel_own(prog)
        prog.finished.clear()
        if not prog.told_server:
            prog.told_server = True
            self._tell_server(prog, stop=True)
        prog.core.close()
        self.router.release(prog.pid)
        spec, q = prog.spec, prog.spec.question
        answer = result.answer if result is not None else None
        reason = result.stop_reason if result is not None else None
        self.rows[spec.index] = OnlineRow(
            system=self.system.name,
            rate=self.workload.rate,
            program=spec.index,
            question=q.id,
            source=q.source,
            strategy=spec.strategy.name,
            arrival=spec.arrival,
            finish=self.now,
            deadline_unit=spec.deadline_unit,
            deadline_fixed=spec.fixed_deadline,
            seed=self.workload.seed,
            replica=prog.replica_index,
            completion_tokens=result.completion_tokens if result else prog.delivered_tokens,
            samples=result.samples if result else prog.delivered,
            answer=answer,
            correct=answer is not None and answer == normalize_answer(q.gold),
            stop_reason=reason.value if reason is not None else None,
            error=str(error) if error is not None else None,
        )

    # -- the server component and the engines -----------------------------------------

    def _refuse(self, request: _Request, code: ErrorCode, message: str) -> None:
        """The component's error reply, typed by the client as it would be."""
        self._deliver([(request, _error(request, code, message))])

    def _receive(self, request: _Request) -> None:
        """The request reaches its server: the component's glue, then the engine."""
        if request.cancelled:
            return  # the client left before it arrived
        prog, replica = request.program, request.program.replica
        max_tokens, priority = request.max_tokens, None
        if replica.component is not None:
            sent = replica.component.receive(prog.pid, request.hints, max_tokens=max_tokens)
            if isinstance(sent, Refused):
                self._refuse(request, sent.code, sent.message)
                return
            max_tokens, priority, request.sent = sent.max_tokens, sent.priority, sent
        q = prog.spec.question
        replica.engine.submit(
            request.rid,
            prompt_tokens=max(1, q.prompt_tokens),
            output_tokens=max(1, request.path.completion_tokens),
            max_tokens=max_tokens,
            priority=priority,
            prefix_key=q.id,
            now=self.now,
        )
        replica.requests[request.rid] = request
        self.requests += 1
        self._kick(replica)

    def _abort(self, request: _Request) -> None:
        """The client cancels one request (or the server aborts it): it leaves the engine."""
        request.cancelled = True
        replica = request.program.replica
        if replica.requests.pop(request.rid, None) is None:
            return  # not at the engine (yet, or any more)
        if replica.engine.abort(request.rid):
            self.aborted += 1
        self._end_request(request, None)

    def _end_request(self, request: _Request, done: FinishedRequest | None) -> None:
        component = request.program.replica.component
        if component is None or request.sent is None:
            return
        usage = (0, 0) if done is None else (done.prompt_tokens, done.completion_tokens)
        component.end(request.sent, *usage, measured=done is not None)

    def _tell_server(self, prog: _Program, *, stop: bool) -> None:
        component = prog.replica.component
        if component is None:
            return  # plain vLLM has no program endpoints (drive only logs a warning)
        table = component.table
        (table.stop if stop else table.finish)(prog.pid)  # stop aborts in-flight requests
        for request in list(prog.replica.requests.values()):  # aborted in flight
            sent = request.sent
            if request.program is prog and sent and sent.admitted.handle.aborted.is_set():
                prog.running.pop(request.rid, None)
                self._abort(request)

    def _late(self, prog: _Program) -> None:
        """The program's deadline has just passed: the table stops it if it still runs
        (its lookup may already have, in a sweep); its requests leave the engine."""
        component = prog.replica.component
        record = None if component is None else component.table.get(prog.pid)
        if component is None or record is None:
            return
        component.table.stop_if_late(record)
        if record.stop_code is not ErrorCode.DEADLINE_EXCEEDED:
            return
        message = f"program {prog.pid} is stopped (its deadline passed)"
        ready: list[tuple[_Request, Completion | ServerError]] = []
        for request in list(prog.replica.requests.values()):
            sent = request.sent
            if request.program is prog and sent and sent.admitted.handle.aborted.is_set():
                self._abort(request)
                ready.append((request, _error(request, ErrorCode.DEADLINE_EXCEEDED, message)))
        self._deliver(ready)

    def _kick(self, replica: _Replica) -> None:
        """Start a step now (after this instant's other events) unless one is under way."""
        if not replica.stepping:
            replica.stepping = True
            self.at(self.now, lambda: self._step(replica))

    def _step(self, replica: _Replica) -> None:
        result = replica.engine.step(self.now)
        if result.duration == 0:
            replica.stepping = False
            return
        self.at(result.end, lambda: self._step_done(replica, result.finished))

    def _step_done(self, replica: _Replica, finished: tuple[FinishedRequest, ...]) -> None:
        replica.stepping = False
        ready: list[tuple[_Request, Completion | ServerError]] = []
        for done in finished:
            request = replica.requests.pop(done.request_id, None)
            if request is None:
                continue  # aborted while the step ran
            self._end_request(request, done)
            path, tokens = request.path, done.completion_tokens
            text = "" if tokens < path.completion_tokens else path.text  # cut short: no answer
            reason = "length" if done.finish_reason == "length" else path.finish_reason or "stop"
            prompt = request.program.spec.question.prompt_tokens
            ready.append((request, Completion(text, prompt, tokens, reason)))
        self._deliver(ready)
        if not replica.engine.idle:
            self._kick(replica)

    def _deliver(self, ready: list[tuple[_Request, Completion | ServerError]]) -> None:
        """Hand finished requests to their programs, then wake those awaiting one."""
        woken: dict[int, _Program] = {}
        for request, item in ready:
            prog = request.program
            if prog.running.pop(request.rid, None) is None:
                continue  # cancelled by its client meanwhile
            prog.finished.append(item)
            woken.setdefault(id(prog), prog)
        for prog in woken.values():
            if prog.awaiting:
                self._drive(prog, Await())


def simulate(
    workload: OnlineWorkload,
    system: SystemSpec,
    cost: CostModel,
    *,
    seed: int = 0,
    replicas: int = 1,
    max_tokens: int = 320,
    request_overhead: float = 0.0,
    server: ServerConfig | None = None,
    routing: RoutingPolicy = "consistent_hash",
) -> SimResult:
    """Run ``workload`` under ``system`` on ``replicas`` simulated engines (see the module doc).

    Args:
        workload: The programs and their arrival times.
        system: Scheduling (``plain``/``gang``/``dynasor``) and early stop.
        cost: Every engine's step times and limits.
        seed: Seeds each program's order of recorded paths.
        replicas: Engines; each program stays on one.
        max_tokens: Each sample's completion-token cap (as the client sends it).
        request_overhead: Seconds from a launch until the engine sees the request.
        server: The component's settings (TTL, table size, default budget,
            aging); ``system.scheduling`` chooses the policy. Defaults when omitted.
        routing: How programs are spread over the replicas (see
            :mod:`~dynasor_bench.sim._route`); ``random`` draws from ``seed``.

    Raises:
        InvalidInputError: A bad argument, a question without recorded paths, or
            a request too large for one engine step or the KV cache.
    """
    if replicas < 1:
        raise InvalidInputError(f"replicas must be >= 1, got {replicas}")
    if max_tokens < 1:
        raise InvalidInputError(f"max_tokens must be >= 1, got {max_tokens}")
    if not (math.isfinite(request_overhead) and request_overhead >= 0):
        raise InvalidInputError(f"request_overhead must be finite and >= 0, got {request_overhead}")
    limit = cost.request_limit
    for spec in workload.programs:
        q = spec.question
        if not q.paths:
            raise InvalidInputError(f"question {q.id} has no recorded paths")
        longest = min(max_tokens, max(max(1, p.completion_tokens) for p in q.paths))
        if max(1, q.prompt_tokens) + longest > limit:
            raise InvalidInputError(
                f"question {q.id}: {q.prompt_tokens} prompt + {longest} completion tokens "
                f"exceed what one step or the KV cache of {cost.name} holds ({limit} tokens)"
            )
    router = make_router(routing, replicas, seed=seed)
    sim = _Simulation(
        workload, system, cost, seed, replicas, max_tokens, request_overhead, server, router
    )
    sim.run()
    engines = [r.engine for r in sim.replicas]
    return SimResult(
        rows=[sim.rows[spec.index] for spec in workload.programs],
        engine_tokens=sum(e.generated_tokens for e in engines),
        busy_seconds=sum(e.busy_seconds for e in engines),
        makespan=sim.now,
        prefill_tokens=sum(e.prefill_tokens for e in engines),
        steps=sum(e.steps for e in engines),
        requests=sim.requests,
        aborted=sim.aborted,
        replica_tokens=tuple(e.generated_tokens for e in engines),
        replica_programs=tuple(sim.routed),
    )
