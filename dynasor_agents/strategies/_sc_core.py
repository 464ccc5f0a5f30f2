"""Self-consistency with Certaindex early stop, as a sans-IO core.

The core samples in rounds. After each round (a detect step) it computes the
Certaindex of the answers so far and asks the controller whether to stop. Within
a round it also stops early, cancelling the samples still running, when the
answer is settled *whatever they return*: it judges a pessimistic state in which
every pending sample gives a distinct answer of its own. The state's ``answers``
hold the normalized answers of the completed samples only (nothing for pending
ones, whose answers are unknown), so answer-based rules such as
``adaptive_consistency`` judge, mid-round, the samples that have come in, as
their sequential definitions do.

Example:
    >>> from dynasor_agents.controller import CertaintyController, max_samples, threshold
    >>> from dynasor_agents.strategies._drive import Await, Completion, Launch
    >>> core = self_consistency_core(
    ...     CertaintyController(threshold(0.9) | max_samples(10), first_round=3),
    ...     program_id="doc",
    ... )
    >>> action = next(core)
    >>> isinstance(action, Launch), action.n
    (True, 3)
    >>> action = core.send(None)
    >>> for _ in range(3):
    ...     action = core.send(Completion("so \\\\boxed{7}", 10, 5))
    >>> type(action).__name__           # a progress snapshot after the round
    'Emit'
    >>> type(core.send(None)).__name__  # settled: tell the server to stop
    'Finish'
    >>> try:
    ...     core.send(None)
    ... except StopIteration as done:
    ...     result = done.value
    >>> result.answer, result.samples, result.stop_reason.value, result.completion_tokens
    ('7', 3, 'certain', 15)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dynasor_agents._stopping import weighted_vote
from dynasor_agents.certainty import (
    AnswerExtractor,
    certaindex,
    cluster_answers,
    extract_answer,
    normalize_answer,
)
from dynasor_agents.controller import CertaintyController, ProgramState, StopReason
from dynasor_agents.errors import NoSamplesError
from dynasor_agents.protocol import Hints
from dynasor_agents.strategies._drive import (
    Completion,
    Core,
    Emit,
    Finish,
    Launch,
    await_round,
    server_ended,
)

__all__ = ["SelfConsistencyResult", "self_consistency_core"]


class SelfConsistencyResult(BaseModel):
    """The outcome of a self-consistency program (or a snapshot while it runs).

    Attributes:
        program_id: The program's id (also on the server).
        answer: The majority answer, normalized (``None`` if no sample answered);
            the confidence-weighted one when samples are scored.
        answer_text: The majority answer as the first sample that gave it wrote it.
        certainty: Certaindex of the answers at the end.
        trajectory: Certaindex after each detect step.
        votes: Samples per normalized answer, most common first.
        samples: Completed samples (including those without an answer).
        abstained: Samples without an extractable answer.
        rounds: Detect steps taken.
        prompt_tokens: Prompt tokens of all completed samples.
        completion_tokens: Completion tokens of all completed samples.
        stop_reason: Why it stopped; ``None`` in a snapshot of a running program.
        final: ``False`` for progress snapshots, ``True`` for the result.
        completions: The text of every completed sample, in finish order.
        confidences: Each completed sample's trace confidence (its vote's
            weight), in finish order; empty when votes are not weighted.
    """

    model_config = ConfigDict(frozen=True)

    program_id: str
    answer: str | None
    answer_text: str | None = None
    certainty: float
    trajectory: list[float] = Field(default_factory=list)
    votes: dict[str, int] = Field(default_factory=dict)
    samples: int
    abstained: int = 0
    rounds: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stop_reason: StopReason | None = None
    final: bool = False
    completions: list[str] = Field(default_factory=list)
    confidences: list[float] = Field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


def self_consistency_core(
    controller: CertaintyController,
    *,
    program_id: str,
    extractor: AnswerExtractor = extract_answer,
    key: Callable[[str], str] = normalize_answer,
    max_tokens: int | None = None,
    confidence: Callable[[Any], float] | None = None,
) -> Core[SelfConsistencyResult]:
    """The self-consistency program as a generator of actions.

    Args:
        controller: Decides stop / continue after each detect step.
        program_id: Put on the result.
        extractor: Pulls the final answer out of a sample's text.
        key: Normalizes answers so equal answers cluster.
        max_tokens: Cap on each sample's completion tokens.
        confidence: Scores a sample from its ``logprobs`` (higher is more
            confident). When given, ``state.confidences`` carries the scores
            (for rules such as ``weighted_consensus``) and the answer is the
            confidence-weighted vote (:func:`~dynasor_agents.weighted_vote`).

    Raises:
        NoSamplesError: The program ended without a single sample.
        ProgramStoppedError: The server refused the program before any sample.
        BudgetExhaustedError: The server's budget for the program was spent
            before any sample finished (later, or while some of a round's samples
            were admitted, the program stops with what they give).
    """
    texts: list[str] = []
    raw: list[str | None] = []
    answers: list[str | None] = []  # normalized, None when no answer (as cluster_answers)
    weights: list[float] = []  # each sample's confidence, when ``confidence`` is given
    state = ProgramState()
    reason: StopReason | None = None

    def snapshot(final: bool) -> SelfConsistencyResult:
        votes = cluster_answers(raw, key=key)
        winner = votes.winner if confidence is None else weighted_vote(answers, weights)[0]
        return SelfConsistencyResult(
            program_id=program_id,
            answer=winner,
            answer_text=votes.representative_of(winner) if winner else None,
            certainty=state.certainty,
            trajectory=list(state.trajectory),
            votes=dict(votes.counts),
            samples=state.samples,
            abstained=votes.abstained,
            rounds=state.rounds,
            prompt_tokens=state.prompt_tokens,
            completion_tokens=state.completion_tokens,
            stop_reason=reason if final else None,
            final=final,
            completions=list(texts),
            confidences=list(weights),
        )

    def measured(pending: int = 0) -> ProgramState:
        """The state with Certaindex recomputed; ``pending`` samples count as distinct.

        ``answers`` holds the completed samples only: pending ones add nothing.
        """
        votes = cluster_answers([*raw, *([None] * pending)], key=key)
        return replace(
            state,
            samples=votes.total,
            certainty=certaindex(votes) if votes.total else 0.0,
            answers=tuple(answers),
            confidences=tuple(weights),
        )

    def normalized(answer: str | None) -> str | None:
        """The clustering key of one extracted answer; ``None`` where it abstains."""
        if not isinstance(answer, str) or not answer.strip():  # cluster_answers rejects non-str
            return None
        return key(answer) or None

    def record(done: Completion) -> None:
        nonlocal state
        if confidence is not None:
            weights.append(float(confidence(done.logprobs)))
        texts.append(done.text)
        raw.append(extractor(done.text))
        answers.append(normalized(raw[-1]))
        state = replace(
            measured(),
            prompt_tokens=state.prompt_tokens + done.prompt_tokens,
            completion_tokens=state.completion_tokens + done.completion_tokens,
        )

    def settled(pending: int) -> StopReason | None:
        """Settled whatever the ``pending`` samples say, or out of tokens: stop now."""
        early = controller.decide(measured(pending))
        spent = controller.decide(state)
        if early.reason is StopReason.CERTAIN:
            return StopReason.CERTAIN
        if spent.reason is StopReason.MAX_TOKENS:
            return StopReason.MAX_TOKENS
        return None

    while reason is None:
        decision = controller.decide(state)
        if decision.stop:
            reason = decision.reason
            break
        cap = decision.budget
        per_sample = max_tokens if cap is None else min(cap, max_tokens or cap)
        yield Launch(
            n=decision.next_batch,
            max_tokens=per_sample,
            hints=Hints(
                certainty=state.certainty if state.samples else None,
                budget=cap,
                remaining=decision.remaining,
            ),
        )
        reason, stragglers = yield from await_round(
            decision.next_batch, take=record, settled=settled, answered=lambda: bool(raw)
        )
        for done in stragglers:
            record(done)
        state = measured()
        state = replace(
            state, trajectory=(*state.trajectory, state.certainty), rounds=state.rounds + 1
        )
        yield Emit(snapshot(final=False))

    if not raw:
        raise NoSamplesError("self-consistency ended without a single sample")
    # Settled early: abort stragglers anywhere. Ran out of samples or tokens: finish.
    yield Finish(stop=reason is StopReason.CERTAIN or server_ended(reason))
    return snapshot(final=True)
