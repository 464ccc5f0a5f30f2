"""Sharing one token budget across many questions, ranked by Certaindex.

A batch of questions shares a total budget of ``B`` completion tokens. Every
question first gets a *detect step* of ``detect`` samples; then, one sample at
a time, the budget goes to the active question that ranks first. The ranking
rule is pure (no I/O, no clock), so a live batch scheduler can reuse it:

* a question is *settled* (gets nothing more) when it has ``max_samples``
  samples, when its Certaindex reached ``stop_at`` (the paper's policy; ``None``
  disables it), or when it is *hopeless*: Certaindex below ``floor`` after at
  least ``floor_after`` samples;
* among active questions, those above the floor come first, then the rule's
  :class:`~dynasor_agents.Ranking` (the live ``TokenPool`` ranks with the same
  objects): the lowest Certaindex by default, or the most expected gain with
  :class:`~dynasor_agents.by_gain`; then the fewest samples, then the lowest
  index (:func:`priority`, :func:`pick`).

:func:`allocate` replays this on a trace bank. A sample is charged its
recorded length; when less budget is left than that, it is cut at the budget
(it then has no answer) and allocation ends, so the total never exceeds ``B``.
Detect samples are handed out round-robin (first sample of every question,
then the second, ...), so a budget too small for the detect step is shared
fairly. Each question answers with the majority of its samples.

:func:`gain_observations` reads, from labeled traces, what one more sample was
worth at each Certaindex, the data :meth:`~dynasor_agents.GainCurve.fit` fits
a gain curve to.

Example:
    >>> rule = AllocationRule(detect=2, max_samples=4, floor=0.2, floor_after=4)
    >>> pick([QuestionStatus(2, 1.0), QuestionStatus(2, 0.37), QuestionStatus(4, 0.5)], rule)
    1
    >>> settled(QuestionStatus(4, 0.1), rule), settled(QuestionStatus(3, 0.1), rule)
    ('max_samples', None)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from dynasor_agents import Ranking, lowest_certainty
from dynasor_agents.errors import InvalidInputError
from dynasor_bench.replay._core import CertaindexMemo, Outcome
from dynasor_bench.replay._prepare import PreparedQuestion, majority

__all__ = [
    "AllocationRule",
    "QuestionStatus",
    "allocate",
    "gain_observations",
    "pick",
    "priority",
    "settled",
]


@dataclass(frozen=True)
class AllocationRule:
    """How a shared budget is spread across questions.

    Attributes:
        detect: Samples every question gets first.
        max_samples: Samples a question may get at most (K of the bank).
        stop_at: Settle a question once its Certaindex reaches this (``None``:
            never; the budget then flows to the least certain questions).
        floor: Certaindex under which a question counts as hopeless.
        floor_after: Samples before a question can be judged hopeless.
        ranking: The order of active questions above the floor.
    """

    detect: int = 4
    max_samples: int = 16
    stop_at: float | None = None
    floor: float = 0.2
    floor_after: int = 8
    ranking: Ranking = field(default_factory=lowest_certainty)

    def __post_init__(self) -> None:
        if self.detect < 1 or self.max_samples < self.detect:
            raise InvalidInputError(
                f"need 1 <= detect <= max_samples, got {self.detect}, {self.max_samples}"
            )
        if self.stop_at is not None and not 0.0 <= self.stop_at <= 1.0:
            raise InvalidInputError(f"stop_at must be in [0, 1], got {self.stop_at!r}")
        if not 0.0 <= self.floor <= 1.0:
            raise InvalidInputError(f"floor must be in [0, 1], got {self.floor!r}")
        if self.floor_after < 1:
            raise InvalidInputError(f"floor_after must be >= 1, got {self.floor_after!r}")
        if not isinstance(self.ranking, Ranking):
            raise InvalidInputError(f"ranking must be a Ranking, got {self.ranking!r}")


@dataclass(frozen=True)
class QuestionStatus:
    """What the allocator knows of one question: samples so far and their Certaindex."""

    samples: int
    certainty: float


def settled(status: QuestionStatus, rule: AllocationRule) -> str | None:
    """Why the question gets no more samples (``"max_samples"``, ``"certain"``,
    ``"hopeless"``), or ``None`` while it is active.

    Example:
        >>> settled(QuestionStatus(5, 0.9), AllocationRule(stop_at=0.8))
        'certain'
    """
    if status.samples >= rule.max_samples:
        return "max_samples"
    if rule.stop_at is not None and status.samples >= 2 and status.certainty >= rule.stop_at:
        return "certain"
    if status.samples >= rule.floor_after and status.certainty < rule.floor:
        return "hopeless"
    return None


def priority(
    status: QuestionStatus, rule: AllocationRule, index: int
) -> tuple[bool, float, int, int]:
    """Sort key of an active question: smaller is served first.

    Example:
        >>> rule = AllocationRule()
        >>> priority(QuestionStatus(4, 0.1), rule, 0) > priority(QuestionStatus(4, 0.5), rule, 1)
        True
    """
    return (
        status.certainty < rule.floor,
        rule.ranking.key(status.certainty),
        status.samples,
        index,
    )


def pick(statuses: Sequence[QuestionStatus], rule: AllocationRule) -> int | None:
    """Index of the question to get the next sample, ``None`` when all are settled.

    Questions still in their detect step come first (fewest samples first).
    """
    best: tuple[bool, float, int, int] | None = None
    chosen: int | None = None
    for i, status in enumerate(statuses):
        if settled(status, rule) is not None:
            continue
        key = (
            (False, -1.0, status.samples, i)
            if status.samples < rule.detect
            else priority(status, rule, i)
        )
        if best is None or key < best:
            best, chosen = key, i
    return chosen


@dataclass
class _Question:
    """One question's running state during :func:`allocate`."""

    answers: list[str | None]
    counts: dict[str, int]
    tokens: int = 0
    abstained: int = 0

    def add(self, answer: str | None, tokens: int) -> None:
        self.answers.append(answer)
        self.tokens += tokens
        if answer is None:
            self.abstained += 1
        else:
            self.counts[answer] = self.counts.get(answer, 0) + 1

    def status(self, memo: CertaindexMemo) -> QuestionStatus:
        sizes = tuple(sorted(self.counts.values(), reverse=True))
        value = memo(sizes, self.abstained) if self.answers else 0.0
        return QuestionStatus(len(self.answers), value)


def _check_orders(
    questions: Sequence[PreparedQuestion], orders: Sequence[Sequence[int]], samples: int
) -> None:
    """One ordering per question, each of at least ``samples`` paths."""
    if len(questions) != len(orders):
        raise InvalidInputError(f"{len(questions)} questions but {len(orders)} orderings")
    for q, order in zip(questions, orders, strict=True):
        if len(order) < samples:
            raise InvalidInputError(
                f"question {q.id}: ordering of {len(order)} < max_samples={samples}"
            )


def allocate(
    questions: Sequence[PreparedQuestion],
    orders: Sequence[Sequence[int]],
    budget: int,
    rule: AllocationRule,
    memo: CertaindexMemo | None = None,
) -> list[Outcome]:
    """Replay the shared-budget allocator on a bank; one outcome per question.

    Args:
        questions: The prepared questions.
        orders: Per question, its ordering of paths (at least ``rule.max_samples``).
        budget: Total completion tokens for all questions.
        rule: The allocation rule.
        memo: A Certaindex cache to share across runs.

    Returns:
        Per question: the majority answer, its samples and tokens, and why it
        stopped (``"budget"`` when the budget ran out while it was active).

    Raises:
        InvalidInputError: Mismatched inputs, a negative budget, or an ordering
            shorter than ``rule.max_samples``.

    Example:
        >>> from dynasor_bench.replay._prepare import prepare_question
        >>> from dynasor_bench.traces._bank import PathTrace, QuestionTrace
        >>> def q(i, answers):
        ...     paths = [PathTrace(text="", answer=a, completion_tokens=10) for a in answers]
        ...     return prepare_question(QuestionTrace(id=f"t:{i}", source="t", question="?",
        ...                             gold="1", prompt_tokens=1, paths=paths))
        >>> qs = [q(0, "1111"), q(1, "1211")]
        >>> rule = AllocationRule(detect=2, max_samples=4, floor=0.0)
        >>> [(o.samples, o.tokens, o.reason) for o in allocate(qs, [[0, 1, 2, 3]] * 2, 60, rule)]
        [(2, 20, 'budget'), (4, 40, 'max_samples')]
    """
    if budget < 0:
        raise InvalidInputError(f"budget must be >= 0, got {budget!r}")
    _check_orders(questions, orders, rule.max_samples)
    memo = memo if memo is not None else CertaindexMemo()
    state = [_Question([], {}) for _ in questions]
    left = budget
    exhausted = budget == 0

    def give(i: int) -> None:
        nonlocal left, exhausted
        q, s = questions[i], state[i]
        path = orders[i][len(s.answers)]
        length, answer = q.lengths[path], q.answers[path]
        if length >= left:
            exhausted = True
            if length > left:
                length, answer = left, None  # cut at the budget: no answer
        left -= length
        s.add(answer, length)

    for _ in range(rule.detect):
        for i in range(len(questions)):
            if not exhausted:
                give(i)
    heap: list[tuple[tuple[bool, float, int, int], int]] = []
    for i, s in enumerate(state):
        status = s.status(memo)
        if settled(status, rule) is None:
            heap.append((priority(status, rule, i), i))
    heapq.heapify(heap)
    while heap and not exhausted:
        _, i = heapq.heappop(heap)
        give(i)
        status = state[i].status(memo)
        if settled(status, rule) is None:
            heapq.heappush(heap, (priority(status, rule, i), i))
    outcomes: list[Outcome] = []
    for q, s in zip(questions, state, strict=True):
        status = s.status(memo)
        reason = settled(status, rule) or "budget"
        answer = majority(s.answers)
        outcomes.append(Outcome(answer, q.is_correct(answer), len(s.answers), s.tokens, reason))
    return outcomes


def gain_observations(
    questions: Sequence[PreparedQuestion],
    orders: Sequence[Sequence[int]],
    *,
    start: int,
    samples: int,
    memo: CertaindexMemo | None = None,
) -> Iterator[tuple[float, float]]:
    """What one more sample was worth, at each Certaindex, on labeled traces.

    For every question, ordering and ``n`` in ``[start, samples)``: the
    Certaindex of the first ``n`` samples, and the accuracy the majority gained
    per further sample from there to ``samples``
    (``(correct(samples) - correct(n)) / (samples - n)``; negative when more
    samples made it wrong).

    Raises:
        InvalidInputError: Mismatched inputs, ``start`` not in ``[1, samples)``,
            or an ordering shorter than ``samples``.

    Example:
        >>> from dynasor_bench.replay._prepare import prepare_question
        >>> from dynasor_bench.traces._bank import PathTrace, QuestionTrace
        >>> paths = [PathTrace(text="", answer=a, completion_tokens=5) for a in "5444"]
        >>> q = prepare_question(QuestionTrace(id="t:1", source="t", question="?", gold="4",
        ...                                    prompt_tokens=1, paths=paths))
        >>> [(round(c, 2), g) for c, g in gain_observations([q], [[0, 1, 2, 3]], start=1,
        ...                                                 samples=4)]
        [(0.0, 0.3333333333333333), (0.0, 0.5), (0.42, 0.0)]
    """
    if not 1 <= start < samples:
        raise InvalidInputError(f"need 1 <= start < samples, got {start}, {samples}")
    _check_orders(questions, orders, samples)
    memo = memo if memo is not None else CertaindexMemo()
    for q, order in zip(questions, orders, strict=True):
        answers = [q.answers[p] for p in order[:samples]]
        final = q.is_correct(majority(answers))
        state = _Question([], {})
        for n, answer in enumerate(answers[: samples - 1], start=1):
            state.add(answer, 0)
            if n >= start:
                now = q.is_correct(majority(state.answers))
                yield state.status(memo).certainty, (final - now) / (samples - n)
