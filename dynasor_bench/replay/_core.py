"""Deterministic replay of a self-consistency program on a trace bank.

A bank holds K recorded paths per question. A *replay* runs one question under
a :class:`~dynasor_agents.controller.CertaintyController` as if the paths were
sampled live, in a given *ordering* (a permutation of the K paths): the i-th
sample the program starts is the path ``order[i]``.

Timing model inside a round: the ``n`` samples of a round start together and
decode at the same rate, so they finish in order of their completion tokens
(ties in ordering order). When the program stops after the j-th completion of a
round, every unfinished sample of the round is cancelled having generated
``min(own length, length of the j-th)`` tokens, which are charged. A sample
exactly as long as the j-th finished at the same instant: like the live driver
(:func:`~dynasor_agents.strategies.drive`), which hands back finished
but undelivered completions on ``Cancel``, it is delivered and votes. A sample
started with a per-sample ``max_tokens`` below its recorded length stops there,
without an answer.

:func:`replay_core` drives the real :func:`self_consistency_core` generator
with a replay driver; :func:`replay_controller` is a lean loop with the same
logic (and the same Certaindex floats), about seven times faster, for the
thousands of runs of a sweep. ``tests/unit_tests/test_replay.py`` checks that
both agree on random banks.

Questions are replayed as :class:`~dynasor_bench.replay._prepare.PreparedQuestion`.

Example (three samples in the first round; after the second finishes, two of
three agree even if the pending one differs, Certaindex 0.42 >= 0.4: the
program stops and the third, cancelled at 20 of its 30 tokens, is charged 20):
    >>> from dynasor_agents.controller import CertaintyController, max_samples, threshold
    >>> from dynasor_bench.replay._prepare import prepare_question
    >>> from dynasor_bench.traces._bank import PathTrace, QuestionTrace
    >>> paths = [PathTrace(text="", answer=a, completion_tokens=n)
    ...          for a, n in [("4", 10), ("4", 30), ("4", 20), ("5", 40)]]
    >>> q = prepare_question(QuestionTrace(id="t:1", source="t", question="?", gold="4",
    ...                                    prompt_tokens=5, paths=paths))
    >>> ctl = CertaintyController(threshold(0.4) | max_samples(4), first_round=3, round_size=1)
    >>> replay_controller(ctl, q, [0, 1, 2, 3])
    Outcome(answer='4', correct=True, samples=2, tokens=50, reason='certain')
    >>> replay_core(ctl, q, [0, 1, 2, 3]) == replay_controller(ctl, q, [0, 1, 2, 3])
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dynasor_agents import (
    adaptive_consistency,
    early_stopping,
    hopeless,
    weighted_consensus,
    weighted_vote,
)
from dynasor_agents.certainty import Votes, certaindex
from dynasor_agents.controller import (
    CertaintyController,
    Policy,
    ProgramState,
    StopReason,
    any_of,
    max_samples,
    threshold,
)
from dynasor_agents.errors import InvalidInputError
from dynasor_agents.strategies import (
    Await,
    Cancel,
    Completion,
    Emit,
    Finish,
    Launch,
    self_consistency_core,
)
from dynasor_bench.replay._prepare import PreparedQuestion, majority

__all__ = [
    "CertaindexMemo",
    "Outcome",
    "replay_controller",
    "replay_core",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one replayed program.

    Attributes:
        answer: The final (normalized) answer, ``None`` if no sample answered.
        correct: Whether ``answer`` equals the normalized gold answer.
        samples: Samples taken: for self-consistency those that finished and
            voted (cancelled ones excluded); each method documents its count.
        tokens: Completion tokens charged, partial tokens of cancelled samples included.
        reason: Why the program stopped (a :class:`StopReason` value or a
            method's own word, e.g. ``"budget"``).
    """

    answer: str | None
    correct: bool
    samples: int
    tokens: int
    reason: str


class CertaindexMemo:
    """Certaindex by cluster sizes, computed once by the real :func:`certaindex`.

    Replay asks for the same few size patterns millions of times; this caches
    the exact floats the live core would compute (so thresholds compare alike).

    Example:
        >>> memo = CertaindexMemo()
        >>> round(memo((3, 1), 0), 4), memo((2,), 2), memo((), 1)
        (0.5944, 0.25, 0.0)
    """

    def __init__(self) -> None:
        self._values: dict[tuple[tuple[int, ...], int], float] = {}

    def __call__(self, sizes: tuple[int, ...], abstained: int) -> float:
        """Certaindex of clusters of ``sizes`` (descending) plus ``abstained`` singletons."""
        key = (sizes, abstained)
        value = self._values.get(key)
        if value is None:
            counts = tuple((str(i), c) for i, c in enumerate(sizes))
            votes = Votes(counts=counts, abstained=abstained)
            value = certaindex(votes) if votes.total else 0.0
            self._values[key] = value
        return value


def _round(
    q: PreparedQuestion, paths: Sequence[int], cap: int | None
) -> list[tuple[int, str | None, int]]:
    """A round's samples as ``(tokens, answer, path)`` in finish order (a cap truncates)."""
    items: list[tuple[int, str | None, int]] = []
    for path in paths:
        length, answer = q.lengths[path], q.answers[path]
        if cap is not None and length > cap:
            length, answer = cap, None
        items.append((length, answer, int(path)))
    items.sort(key=lambda item: item[0])  # stable: ties keep the ordering's order
    return items


def _take(q: PreparedQuestion, order: Sequence[int], start: int, n: int) -> Sequence[int]:
    if start + n > len(order):
        raise InvalidInputError(
            f"question {q.id}: the program asked for sample {start + n} but the ordering "
            f"holds {len(order)}; compose the controller with max_samples({len(order)})"
        )
    return order[start : start + n]


def replay_core(
    controller: CertaintyController,
    q: PreparedQuestion,
    order: Sequence[int],
    *,
    confidences: Sequence[float] | None = None,
) -> Outcome:
    """Replay ``q`` by driving the real :func:`self_consistency_core` from the bank.

    Args:
        controller: The controller under test (it must stop within ``len(order)``
            samples, e.g. by composing with ``max_samples(K)``).
        q: The prepared question.
        order: The ordering: sample ``i`` is path ``order[i]``.
        confidences: Per path, a trace confidence, which the core gets as the
            sample's score (its ``confidence`` argument).

    Raises:
        InvalidInputError: The controller asked for more samples than ``order`` holds.
    """
    by_text: list[str | None] = []  # the completion text is an index into this list

    def extractor(text: str) -> str | None:
        return by_text[int(text)]

    score = None if confidences is None else (lambda path: float(confidences[path]))
    core = self_consistency_core(
        controller, program_id=q.id, extractor=extractor, key=str, confidence=score
    )
    queue: list[tuple[int, str | None, int]] = []
    taken = charged = last = 0
    reply: Any = None
    try:
        action = next(core)
        while True:
            reply = None
            if isinstance(action, Launch):
                paths = _take(q, order, taken, action.n)
                taken += action.n
                queue, last = _round(q, paths, action.max_tokens), 0
            elif isinstance(action, Await):
                last, answer, path = queue.pop(0)
                charged += last
                by_text.append(answer)
                reply = Completion(str(len(by_text) - 1), q.prompt_tokens, last, logprobs=path)
            elif isinstance(action, Cancel):
                reply = []
                for length, answer, path in queue:
                    charged += min(length, last)
                    if length <= last:  # finished at the same instant: delivered
                        by_text.append(answer)
                        text = str(len(by_text) - 1)
                        reply.append(Completion(text, q.prompt_tokens, length, logprobs=path))
                queue = []
            elif not isinstance(action, Emit | Finish):  # pragma: no cover - the Action union
                raise TypeError(f"unknown action {action!r}")
            action = core.send(reply)
    except StopIteration as done:
        result = done.value
    reason = result.stop_reason.value if result.stop_reason is not None else "unknown"
    return Outcome(result.answer, q.is_correct(result.answer), result.samples, charged, reason)


def _spends_tokens(policy: Policy) -> bool:
    """Whether ``policy`` might stop as ``MAX_TOKENS`` (only then does the mid-round
    budget check need a :meth:`~CertaintyController.decide` call; the rules listed
    here never do, exactly-typed so a subclass cannot change that)."""
    if type(policy) is any_of:
        return any(_spends_tokens(p) for p in policy.policies)
    quiet = (threshold, max_samples, adaptive_consistency, early_stopping, hopeless)
    return type(policy) not in (*quiet, weighted_consensus)


def replay_controller(
    controller: CertaintyController,
    q: PreparedQuestion,
    order: Sequence[int],
    memo: CertaindexMemo | None = None,
    *,
    confidences: Sequence[float] | None = None,
) -> Outcome:
    """Replay ``q`` under ``controller``: :func:`replay_core`'s outcome, computed lean.

    The loop makes the same :meth:`CertaintyController.decide` calls on equal
    :class:`ProgramState` values as :func:`self_consistency_core` (after each
    round, and within a round the pessimistic check that counts pending
    samples as distinct answers), without generators, texts or snapshots.

    Args:
        controller: The controller under test.
        q: The prepared question.
        order: The ordering: sample ``i`` is path ``order[i]``.
        memo: A Certaindex cache to share across runs (one is made if omitted).
        confidences: Per path, a trace confidence, as the live core's
            ``confidence`` scores (``SelfConsistency(confidence_window=...)``):
            ``state.confidences`` carries the completed samples' confidences
            (aligned with ``state.answers``, for rules such as
            ``weighted_consensus``) and the answer is the confidence-weighted
            vote (:func:`weighted_vote`).

    Raises:
        InvalidInputError: The controller asked for more samples than ``order``
            holds, or ``confidences`` does not match the paths.
    """
    if confidences is not None and len(confidences) != q.k:
        raise InvalidInputError(f"question {q.id}: {len(confidences)} confidences for {q.k} paths")
    memo = memo if memo is not None else CertaindexMemo()
    decide = controller.decide
    spends = _spends_tokens(controller.policy)
    raw: list[str | None] = []  # answers of completed samples, in finish order
    weights: list[float] = []  # their confidences, when given
    counts: dict[str, int] = {}
    abstained = 0
    # The fields of the core's ProgramState, kept as locals (replace() is slow).
    certainty, rounds, prompt, completion = 0.0, 0, 0, 0
    trajectory: tuple[float, ...] = ()
    reason: StopReason | None = None
    taken = charged = 0

    def certainty_of(pending: int) -> float:
        if not raw and not pending:
            return 0.0
        return memo(tuple(sorted(counts.values(), reverse=True)), abstained + pending)

    def state(samples: int, value: float) -> ProgramState:
        return ProgramState(
            samples=samples,
            certainty=value,
            trajectory=trajectory,
            rounds=rounds,
            prompt_tokens=prompt,
            completion_tokens=completion,
            answers=tuple(raw),
            confidences=tuple(weights),
        )

    def record(length: int, answer: str | None, path: int) -> None:
        nonlocal abstained, prompt, completion
        raw.append(answer)
        if confidences is not None:
            weights.append(float(confidences[path]))
        if answer is None:
            abstained += 1
        else:
            counts[answer] = counts.get(answer, 0) + 1
        prompt += q.prompt_tokens
        completion += length

    while reason is None:
        decision = decide(state(len(raw), certainty))
        if decision.stop:
            reason = decision.reason
            break
        queue = _round(q, _take(q, order, taken, decision.next_batch), decision.budget)
        taken += decision.next_batch
        pending, last, finished = len(queue), 0, 0
        for length, answer, path in queue:
            pending -= 1
            finished += 1
            charged += length
            last = length
            record(length, answer, path)
            if pending:
                early = decide(state(len(raw) + pending, certainty_of(pending))).reason
                if early is StopReason.CERTAIN:
                    reason = early
                    break
                if spends:
                    certainty = certainty_of(0)  # the core's state after this completion
                    if decide(state(len(raw), certainty)).reason is StopReason.MAX_TOKENS:
                        reason = StopReason.MAX_TOKENS
                        break
        if reason is not None:
            for length, answer, path in queue[finished:]:
                charged += min(length, last)
                if length <= last:  # finished with the last one: delivered on Cancel, votes
                    record(length, answer, path)
        certainty = certainty_of(0)
        trajectory = (*trajectory, certainty)
        rounds += 1
    answer = majority(raw) if confidences is None else weighted_vote(raw, weights)[0]
    word = reason.value if reason is not None else "unknown"
    return Outcome(answer, q.is_correct(answer), len(raw), charged, word)
