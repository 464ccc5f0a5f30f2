"""Trace-bank questions prepared for replay, and the orderings replay draws.

:func:`prepare_question` reduces a :class:`QuestionTrace` to the plain tuples
replay reads (answers, lengths, running group confidences); :func:`orderings`
draws the seeded permutations of a question's paths that every method replays;
:func:`majority` is the vote of a fixed set of answers.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dynasor_agents import InvalidInputError
from dynasor_agents.certainty import group_confidences, normalize_answer
from dynasor_bench.traces._bank import QuestionTrace

__all__ = [
    "DEFAULT_WINDOW",
    "IntArray",
    "PreparedQuestion",
    "majority",
    "orderings",
    "prepare_bank",
    "prepare_question",
]

DEFAULT_WINDOW = 32
"""Group-confidence window in tokens for replay (DeepConf uses 2048 on traces of
tens of thousands of tokens; bank traces are 100-320 tokens long)."""

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class PreparedQuestion:
    """A :class:`QuestionTrace` reduced to what replay reads, in plain tuples.

    Attributes:
        id: The question's id.
        source: Its dataset (the difficulty group of the reports).
        gold: The normalized gold answer.
        prompt_tokens: Prompt tokens of one request.
        answers: Per path, its normalized answer (``None``: no answer).
        lengths: Per path, its completion tokens.
        lowest: Per path, DeepConf's lowest group confidence over ``window``
            tokens (``nan`` when the path has no token confidences).
        running_min: Per path, the running minimum of its group confidences:
            entry ``g`` is the lowest confidence of groups ``0..g``.
        first_end: Per path, the token at which its first group is complete
            (``min(window, tokens)``); group ``g`` ends ``g`` tokens later.
        window: The group-confidence window the fields above used.
    """

    id: str
    source: str
    gold: str
    prompt_tokens: int
    answers: tuple[str | None, ...]
    lengths: tuple[int, ...]
    lowest: tuple[float, ...]
    running_min: tuple[npt.NDArray[np.float64], ...]
    first_end: tuple[int, ...]
    window: int

    @property
    def k(self) -> int:
        """Paths recorded."""
        return len(self.answers)

    @property
    def has_confidence(self) -> bool:
        """Whether every path carries token confidences."""
        return not any(np.isnan(self.lowest))

    def is_correct(self, answer: str | None) -> bool:
        """Whether ``answer`` (normalized) is the gold answer."""
        return answer is not None and answer == self.gold

    def cut_at(self, path: int, bar: float) -> int | None:
        """Token at which DeepConf's online filter stops ``path`` for ``bar``.

        The path is stopped at the first group (a window of tokens, checked as
        soon as it is complete) whose mean confidence is below ``bar``;
        ``None`` when no group is, i.e. when its lowest group confidence is
        ``>= bar``. A path shorter than the window has one group, checked at
        its end.

        Example (groups of 2 tokens: 3, 2, 1, 2; the third, tokens 3-4, is the
        first below 1.5):
            >>> from dynasor_bench.traces._bank import PathTrace, QuestionTrace
            >>> p = PathTrace(text="", answer="1", completion_tokens=5,
            ...               confidence=[3.0, 3.0, 1.0, 1.0, 3.0])
            >>> q = prepare_question(QuestionTrace(id="t", source="t", question="?", gold="1",
            ...                                    prompt_tokens=1, paths=[p]), window=2)
            >>> q.lowest[0], q.cut_at(0, 1.5), q.cut_at(0, 0.5)
            (1.0, 4, None)
        """
        mins = self.running_min[path]
        if mins.size == 0 or mins[-1] >= bar:
            return None
        group = int(np.searchsorted(-mins, -bar, side="right"))  # first g: mins[g] < bar
        return min(self.first_end[path] + group, self.lengths[path])


def prepare_question(question: QuestionTrace, *, window: int = DEFAULT_WINDOW) -> PreparedQuestion:
    """Precompute what replay needs from one question (answers, lengths, confidences).

    Blank answers become ``None`` (they abstain, as in :func:`cluster_answers`).

    Raises:
        InvalidInputError: The question has no paths, or ``window < 1``.
    """
    if not question.paths:
        raise InvalidInputError(f"question {question.id} has no recorded paths")
    if window < 1:
        raise InvalidInputError(f"window must be >= 1, got {window!r}")
    lowest: list[float] = []
    running: list[npt.NDArray[np.float64]] = []
    first_end: list[int] = []
    for path in question.paths:
        if path.confidence:
            groups = group_confidences(path.confidence, window=window)
            mins = np.minimum.accumulate(groups)
            lowest.append(float(mins[-1]))
            running.append(mins)
            first_end.append(min(window, len(path.confidence)))
        else:
            lowest.append(float("nan"))
            running.append(np.empty(0, dtype=np.float64))
            first_end.append(0)
    return PreparedQuestion(
        id=question.id,
        source=question.source,
        gold=normalize_answer(question.gold),
        prompt_tokens=question.prompt_tokens,
        answers=tuple(p.answer if p.answer and p.answer.strip() else None for p in question.paths),
        lengths=tuple(int(p.completion_tokens) for p in question.paths),
        lowest=tuple(lowest),
        running_min=tuple(running),
        first_end=tuple(first_end),
        window=window,
    )


def prepare_bank(
    bank: Sequence[QuestionTrace], *, window: int = DEFAULT_WINDOW
) -> list[PreparedQuestion]:
    """:func:`prepare_question` for every question of a bank."""
    return [prepare_question(q, window=window) for q in bank]


def orderings(question_id: str, k: int, count: int, *, seed: int = 0) -> IntArray:
    """``count`` seeded permutations of ``range(k)`` for one question.

    The seed mixes ``seed`` with a hash of the question id, so a question's
    orderings do not depend on which other questions are replayed with it.

    Example:
        >>> a = orderings("gsm8k:1", 4, 2, seed=0)
        >>> a.shape, sorted(a[0].tolist())
        ((2, 4), [0, 1, 2, 3])
        >>> bool((a == orderings("gsm8k:1", 4, 2, seed=0)).all())
        True
    """
    if k < 1 or count < 1:
        raise InvalidInputError(f"orderings needs k >= 1 and count >= 1, got {k}, {count}")
    rng = np.random.default_rng([seed, zlib.crc32(question_id.encode("utf-8"))])
    base = np.tile(np.arange(k, dtype=np.int64), (count, 1))
    return np.asarray(rng.permuted(base, axis=1), dtype=np.int64)


def majority(answers: Sequence[str | None]) -> str | None:
    """The most common answer, earliest on ties; ``None`` if none answered.

    Example:
        >>> majority(["5", None, "4", "4", "5"]), majority([None])
        ('5', None)
    """
    counts: dict[str, int] = {}
    for answer in answers:
        if answer is not None:
            counts[answer] = counts.get(answer, 0) + 1
    if not counts:
        return None
    return max(counts, key=counts.__getitem__)  # dicts keep first-appearance order
