"""A discrete-event model of one continuous-batching engine (vLLM V1-like).

The engine knows requests, not programs: a prompt, the tokens the request
would generate if left alone (``output_tokens``, e.g. a recorded path's), a
``max_tokens`` cap, an optional priority and prefix key. Time is explicit: the
caller passes ``now`` to every call and runs one step at a time with
:meth:`Engine.step`, which returns the step's duration under a
:class:`CostModel` and the requests that finished at its end.

What one step does (vLLM V1's scheduler with chunked prefill disabled):

1. Each running request needs KV cache for ``prompt + generated + 1`` tokens
   after the step. While the sum exceeds ``kv_capacity``, a victim goes back to
   the waiting queue (``priority``: the largest ``(priority, submit time,
   submit order)``; ``fcfs``: the latest submitted), keeping its tokens; when
   readmitted it re-prefills ``prompt + generated`` (vLLM's recompute). As in
   vLLM, a step that preempted admits nothing new.
2. The running requests each decode one token.
3. Waiting requests are admitted in queue order (``fcfs``: submit time, then
   submit order; ``priority``: ``(priority or 0, submit time, submit order)``,
   lower first) while fewer than ``max_num_seqs`` run, the whole uncached
   prompt fits in the step's token budget (``max_batched_tokens`` minus one
   token per decoding request) and the KV cache has room. The first request
   that does not fit stops admission (head-of-line blocking, no skipping). An
   admitted request is prefilled in this step and yields its first token at
   the step's end.
4. The step takes ``CostModel.step_time(decoding requests, prefilled tokens,
   KV context of the decoding requests)``; a request whose generated tokens
   reach ``min(output_tokens, max_tokens)`` finishes at its end
   (``finish_reason`` ``"length"`` when ``max_tokens`` cut it, else ``"stop"``).

Simplifications (all deliberate):

* Prefix caching is all or nothing per ``prefix_key``: once a request with a
  key was admitted (earlier in the same step too: vLLM V1 registers a prompt's
  blocks as it schedules them), later ones prefill 1 prompt token (vLLM always
  recomputes the last; it caches whole 16-token blocks). Cached prefixes are
  never evicted; a recompute pays in full. Each request holds its whole prompt
  in the KV cache (no sharing of prefix blocks: conservative).
* A request must fit alone: ``prompt + min(output_tokens, max_tokens)`` may
  not exceed ``max_batched_tokens`` (vLLM requires ``max_num_batched_tokens >=
  max_model_len`` without chunked prefill) nor ``kv_capacity``.
* A step is atomic: :meth:`Engine.step` leaves the engine as it is at the
  step's end. Requests submitted or aborted during a step (by the caller's
  clock) take effect from the next one, as vLLM's engine core handles them
  between steps; the tokens of the step in flight stay spent (and counted).
* Sampling, detokenization, the API server and the network cost nothing (the
  program simulator adds a fixed ``request_overhead`` per request).

The step times and limits are a :class:`~dynasor_bench.sim.CostModel`.

Example (one token per second whatever the batch: two requests of 2 and 3
tokens submitted together finish at t=2 and t=3):
    >>> cost = CostModel("toy", step_base=1.0, per_seq=0.0, per_prefill_token=0.0)
    >>> engine = Engine(cost)
    >>> engine.submit("a", prompt_tokens=4, output_tokens=2, max_tokens=None, now=0.0)
    >>> engine.submit("b", prompt_tokens=4, output_tokens=3, max_tokens=None, now=0.0)
    >>> now, done = 0.0, []
    >>> while not engine.idle:
    ...     step = engine.step(now)
    ...     now = step.end
    ...     done += [(f.request_id, now, f.finish_reason) for f in step.finished]
    >>> done
    [('a', 2.0, 'stop'), ('b', 3.0, 'stop')]
    >>> engine.generated_tokens, engine.prefill_tokens, engine.steps, engine.busy_seconds
    (5, 8, 3, 3.0)
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Literal

from dynasor_agents import InvalidInputError
from dynasor_bench.sim._cost import CostModel

__all__ = [
    "Engine",
    "EnginePolicy",
    "FinishedRequest",
    "StepResult",
]

EnginePolicy = Literal["fcfs", "priority"]


@dataclass(frozen=True)
class FinishedRequest:
    """A request that finished at the end of a step.

    Attributes:
        request_id: Its id.
        prompt_tokens: Its prompt's tokens (what usage reports, cached or not).
        completion_tokens: Tokens it generated.
        finish_reason: ``"length"`` when ``max_tokens`` cut it short, else ``"stop"``.
        prefilled_tokens: Tokens prefilled for it over all its admissions.
        preemptions: Times it was preempted.
    """

    request_id: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]
    prefilled_tokens: int
    preemptions: int = 0


@dataclass(frozen=True)
class StepResult:
    """What one engine step did.

    Attributes:
        start: When it started.
        duration: Seconds it took (0 when the engine had nothing to run).
        finished: Requests that finished at its end, in submit order.
        decoded: Requests that decoded a token (running before the step).
        admitted: Requests prefilled in the step.
        prefill_tokens: Uncached prompt tokens prefilled.
        preempted: Ids of requests preempted back to the waiting queue.
    """

    start: float
    duration: float
    finished: tuple[FinishedRequest, ...] = ()
    decoded: int = 0
    admitted: int = 0
    prefill_tokens: int = 0
    preempted: tuple[str, ...] = ()

    @property
    def end(self) -> float:
        """When it ended."""
        return self.start + self.duration


@dataclass(eq=False)
class _Request:
    rid: str
    order: int
    submitted: float
    prompt: int
    target: int
    cut: bool  # max_tokens is below output_tokens
    priority: int
    prefix_key: str | None
    generated: int = 0
    prefilled: int = 0
    preemptions: int = 0
    state: Literal["waiting", "running", "done"] = "waiting"

    @property
    def need(self) -> int:
        """KV tokens it holds after one more step."""
        return self.prompt + self.generated + 1

    def report(self) -> FinishedRequest:
        reason: Literal["stop", "length"] = "length" if self.cut else "stop"
        return FinishedRequest(
            self.rid, self.prompt, self.generated, reason, self.prefilled, self.preemptions
        )


def _order(request: _Request) -> int:
    return request.order


class Engine:
    """One continuous-batching engine under a :class:`CostModel` (see the module doc).

    Args:
        cost: Step times and limits.
        policy: ``"fcfs"`` (vLLM's default) or ``"priority"``
            (``--scheduling-policy priority``; ``None`` priority counts as 0).

    Attributes:
        generated_tokens: Tokens generated, aborted requests' included.
        prefill_tokens: Prompt tokens prefilled (recomputes included).
        steps: Steps run.
        busy_seconds: Seconds spent in steps.
        preemptions: Requests preempted.
    """

    def __init__(self, cost: CostModel, *, policy: EnginePolicy = "fcfs") -> None:
        if policy not in ("fcfs", "priority"):
            raise InvalidInputError(f"engine policy must be fcfs or priority, got {policy!r}")
        self.cost = cost
        self.policy: EnginePolicy = policy
        self._requests: dict[str, _Request] = {}  # waiting or running
        self._running: dict[str, _Request] = {}  # in admission order
        self._held = 0  # prompt + generated tokens of the running requests (their KV)
        self._waiting: list[tuple[tuple[float, ...], int, _Request]] = []  # lazy-deletion heap
        self._order = itertools.count()
        self._cached: set[str] = set()
        self._busy_until = -math.inf
        self.generated_tokens = 0
        self.prefill_tokens = 0
        self.steps = 0
        self.busy_seconds = 0.0
        self.preemptions = 0

    @property
    def idle(self) -> bool:
        """Whether no request is waiting or running."""
        return not self._requests

    @property
    def running(self) -> int:
        """Requests running (admitted, not finished)."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Requests waiting for admission (preempted ones included)."""
        return len(self._requests) - len(self._running)

    def submit(
        self,
        request_id: str,
        *,
        prompt_tokens: int,
        output_tokens: int,
        max_tokens: int | None,
        priority: int | None = None,
        prefix_key: str | None = None,
        now: float,
    ) -> None:
        """Queue a request; it can be admitted from the next step on.

        Args:
            request_id: Unique among the requests the engine holds.
            prompt_tokens: Its prompt's length (>= 1).
            output_tokens: Tokens it generates unless cut (>= 1).
            max_tokens: The cap on its tokens (``None``: no cap).
            priority: Its priority under the ``priority`` policy (lower first).
            prefix_key: Requests with equal keys share their prompt (prefix caching).
            now: When it arrives (orders the queue).

        Raises:
            InvalidInputError: A duplicate id, a count below 1, or a request
                that could never run (larger than one step or the KV cache).
        """
        if request_id in self._requests:
            raise InvalidInputError(f"request {request_id!r} is already in the engine")
        if prompt_tokens < 1 or output_tokens < 1 or (max_tokens is not None and max_tokens < 1):
            raise InvalidInputError(
                f"request {request_id!r}: prompt_tokens, output_tokens and max_tokens must be "
                f">= 1, got {prompt_tokens}, {output_tokens}, {max_tokens}"
            )
        target = output_tokens if max_tokens is None else min(output_tokens, max_tokens)
        if prompt_tokens + target > self.cost.request_limit:
            raise InvalidInputError(
                f"request {request_id!r}: {prompt_tokens} prompt + {target} output tokens "
                f"exceed what one step or the KV cache holds ({self.cost.request_limit} tokens)"
            )
        request = _Request(
            rid=request_id,
            order=next(self._order),
            submitted=float(now),
            prompt=prompt_tokens,
            target=target,
            cut=target < output_tokens,
            priority=0 if priority is None else priority,
            prefix_key=prefix_key,
        )
        self._requests[request_id] = request
        self._enqueue(request)

    def abort(self, request_id: str) -> bool:
        """Remove a waiting or running request; its generated tokens stay counted.

        Returns:
            Whether it was in the engine (aborting an unknown or finished
            request does nothing and returns ``False``).
        """
        request = self._requests.pop(request_id, None)
        if request is None:
            return False
        if self._running.pop(request_id, None) is not None:
            self._held -= request.prompt + request.generated
        request.state = "done"  # a waiting one leaves the heap lazily
        return True

    def step(self, now: float) -> StepResult:
        """Run one step starting at ``now`` (see the module doc for what it does).

        Raises:
            InvalidInputError: ``now`` is before the previous step ended.
        """
        if now < self._busy_until:
            raise InvalidInputError(
                f"a step cannot start at {now} before the previous one ended ({self._busy_until})"
            )
        preempted = self._preempt()
        decoding = len(self._running)
        context = self._held  # the KV the decoding requests attend to
        budget = self.cost.max_batched_tokens - decoding
        kv_used = context + decoding  # each needs one more token after the step
        admitted: list[_Request] = []
        prefill = 0
        capacity = self.cost.kv_capacity
        while (
            not preempted
            and len(self._running) < self.cost.max_num_seqs
            and (head := self._head()) is not None
        ):
            hit = head.generated == 0 and head.prefix_key in self._cached
            uncached = 1 if hit else head.prompt + head.generated
            if uncached > budget or (capacity is not None and kv_used + head.need > capacity):
                break  # head-of-line: nothing behind it jumps the queue
            heapq.heappop(self._waiting)
            budget -= uncached
            kv_used += head.need
            prefill += uncached
            head.prefilled += uncached
            head.state = "running"
            self._running[head.rid] = head
            self._held += head.prompt + head.generated
            admitted.append(head)
            if head.prefix_key is not None and self.cost.prefix_caching:
                self._cached.add(head.prefix_key)
        if not decoding and not admitted:  # idle (submit() rules out a stall)
            return StepResult(start=now, duration=0.0, preempted=preempted)
        duration = self.cost.step_time(decoding, prefill, context)
        done: list[_Request] = []
        for request in self._running.values():
            request.generated += 1
            if request.generated >= request.target:
                done.append(request)
        self._held += len(self._running)
        done.sort(key=_order)
        for request in done:
            del self._running[request.rid], self._requests[request.rid]
            self._held -= request.prompt + request.generated
            request.state = "done"
        self.generated_tokens += decoding + len(admitted)
        self.prefill_tokens += prefill
        self.steps += 1
        self.busy_seconds += duration
        self._busy_until = now + duration
        return StepResult(
            start=now,
            duration=duration,
            finished=tuple(r.report() for r in done),
            decoded=decoding,
            admitted=len(admitted),
            prefill_tokens=prefill,
            preempted=preempted,
        )

    # -- internals -------------------------------------------------------------------

    def _key(self, request: _Request) -> tuple[float, ...]:
        if self.policy == "priority":
            return (request.priority, request.submitted, request.order)
        return (request.submitted, request.order)

    def _enqueue(self, request: _Request) -> None:
        request.state = "waiting"
        heapq.heappush(self._waiting, (self._key(request), request.order, request))

    def _head(self) -> _Request | None:
        """The first live waiting request (dropping aborted entries)."""
        while self._waiting:
            request = self._waiting[0][2]
            if request.state == "waiting":
                return request
            heapq.heappop(self._waiting)
        return None

    def _preempt(self) -> tuple[str, ...]:
        """Preempt running requests until the step's KV needs fit; their ids."""
        capacity = self.cost.kv_capacity
        if capacity is None:
            return ()
        total = self._held + len(self._running)  # every running request's need
        victims: list[str] = []
        while total > capacity and self._running:
            victim = max(self._running.values(), key=self._key)  # fcfs: the latest submitted
            del self._running[victim.rid]
            self._held -= victim.prompt + victim.generated
            total -= victim.need
            victim.preemptions += 1
            self.preemptions += 1
            self._enqueue(victim)
            victims.append(victim.rid)
        return tuple(victims)
