"""Answer clustering and the entropy-based Certaindex of self-consistency.

:func:`cluster_answers` groups the answers of N samples by a canonical key into
:class:`Votes`. From the votes:

* :func:`answer_entropy` is the Shannon entropy (nats) of the distribution over
  answer clusters, where every sample without an answer is its own singleton
  cluster (a sample that says nothing can only add uncertainty);
* :func:`certaindex` is the Dynasor paper's normalised Certaindex for
  self-consistency, ``(log n - H) / log n`` with ``n`` samples, in ``[0, 1]``:
  1 when all samples agree, 0 when all differ;
* :func:`majority_share` is the winning cluster's share of all samples.

Writing ``c_i`` for the cluster sizes (abstentions being clusters of size 1),
``H = log n - (1/n) sum c_i log c_i``, hence
``certaindex = sum c_i log c_i / (n log n)``; it is computed in that form, so the
extremes 0 and 1 come out exact.

Example:
    >>> votes = cluster_answers(["18", "$18", "18 dollars", "20", None])
    >>> votes.counts, votes.abstained, votes.winner
    ((('18', 3), ('20', 1)), 1, '18')
    >>> round(certaindex(votes), 4), majority_share(votes)
    (0.4096, 0.6)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynasor_agents.errors import InvalidInputError

from ._extract import normalize_answer

__all__ = ["Votes", "answer_entropy", "certaindex", "cluster_answers", "majority_share"]


@dataclass(frozen=True)
class Votes:
    """The answers of one self-consistency program, grouped into clusters.

    Attributes:
        counts: ``(key, count)`` per answer cluster, most common first, ties in
            order of first appearance (as built by :func:`cluster_answers`).
            Keys are unique and counts positive.
        abstained: Samples that produced no answer.
        representatives: ``(key, raw answer)`` per cluster, in the order of
            ``counts``: the original text of the cluster's first sample, for
            display (e.g. ``"$18"`` for key ``"18"``).

    Example:
        >>> v = Votes(counts=(("18", 2), ("20", 1)), abstained=1)
        >>> v.total, v.winner, v.winner_count, v.share
        (4, '18', 2, 0.5)
    """

    counts: tuple[tuple[str, int], ...] = ()
    abstained: int = 0
    representatives: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        keys = [key for key, _ in self.counts]
        if len(set(keys)) != len(keys):
            raise InvalidInputError(f"Votes.counts has duplicate keys: {keys!r}")
        for key, count in self.counts:
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InvalidInputError(
                    f"Votes.counts[{key!r}] must be a positive int, got {count!r}"
                )
        if isinstance(self.abstained, bool) or not isinstance(self.abstained, int):
            raise InvalidInputError(f"Votes.abstained must be an int, got {self.abstained!r}")
        if self.abstained < 0:
            raise InvalidInputError(f"Votes.abstained must be >= 0, got {self.abstained}")

    @property
    def total(self) -> int:
        """All samples, those that abstained included."""
        return sum(count for _, count in self.counts) + self.abstained

    @property
    def winner(self) -> str | None:
        """Key of the most common answer (earliest on ties); ``None`` if no answers."""
        if not self.counts:
            return None
        return max(self.counts, key=lambda kc: kc[1])[0]

    @property
    def winner_count(self) -> int:
        """Size of the winning cluster; 0 if there are no answers."""
        return max((count for _, count in self.counts), default=0)

    @property
    def share(self) -> float:
        """``winner_count / total``, or 0.0 when there are no samples at all."""
        total = self.total
        return self.winner_count / total if total else 0.0

    def representative_of(self, key: str) -> str | None:
        """The original text of the first answer in cluster ``key``, if known.

        Example:
            >>> cluster_answers(["$18", "18.0"]).representative_of("18")
            '$18'
        """
        return dict(self.representatives).get(key)

    def as_dict(self) -> dict[str, Any]:
        r"""A JSON-ready summary of the votes.

        Example:
            >>> cluster_answers(["\\$18", "18", None]).as_dict()["counts"]
            {'18': 2}
        """
        return {
            "counts": dict(self.counts),
            "abstained": self.abstained,
            "total": self.total,
            "winner": self.winner,
            "winner_count": self.winner_count,
            "share": self.share,
            "representatives": dict(self.representatives),
        }


def cluster_answers(
    answers: Sequence[str | None], *, key: Callable[[str], str] = normalize_answer
) -> Votes:
    r"""Group sample answers into clusters of equal canonical key.

    Args:
        answers: One extracted answer per sample; ``None``, empty or blank
            answers (and answers whose key is empty) count as abstained.
        key: Maps an answer to its clustering key; defaults to
            :func:`normalize_answer`.

    Returns:
        The :class:`Votes`, clusters ordered by count (descending), ties by
        first appearance.

    Raises:
        InvalidInputError: ``answers`` is a single ``str`` rather than a
            sequence of answers, or holds something that is neither ``str``
            nor ``None``.

    Example:
        >>> v = cluster_answers([r"\frac{1}{2}", "0.5", "1/3", "", None])
        >>> v.counts, v.abstained, v.total
        ((('0.5', 2), ('1/3', 1)), 2, 5)
    """
    if isinstance(answers, str):
        raise InvalidInputError("answers must be a sequence of answers, not a single str")
    counts: dict[str, int] = {}
    first_raw: dict[str, str] = {}
    abstained = 0
    for index, answer in enumerate(answers):
        if answer is None:
            abstained += 1
            continue
        if not isinstance(answer, str):
            raise InvalidInputError(
                f"answers[{index}] must be str or None, got {type(answer).__name__}"
            )
        cluster = key(answer) if answer.strip() else ""
        if not cluster:
            abstained += 1
            continue
        counts[cluster] = counts.get(cluster, 0) + 1
        first_raw.setdefault(cluster, answer)
    ordered = sorted(counts.items(), key=lambda kc: -kc[1])  # stable: ties keep first appearance
    return Votes(
        counts=tuple(ordered),
        abstained=abstained,
        representatives=tuple((k, first_raw[k]) for k, _ in ordered),
    )


def _cluster_sizes(votes: Votes) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Sizes of the answer clusters, each abstention being a cluster of size 1."""
    sizes = [count for _, count in votes.counts] + [1] * votes.abstained
    return np.asarray(sizes, dtype=np.float64)


def _require_samples(votes: Votes, what: str) -> int:
    """``votes.total``, or :class:`InvalidInputError` when it is 0."""
    total = votes.total
    if total == 0:
        raise InvalidInputError(f"{what} needs at least one sample, got none")
    return total


def answer_entropy(votes: Votes) -> float:
    """Shannon entropy (natural log) of the answer distribution.

    Every abstained sample counts as its own singleton cluster, so samples
    without an answer make the distribution more spread, never less.

    Args:
        votes: The clustered answers.

    Returns:
        ``H = -sum p_i log p_i`` over clusters, in ``[0, log n]``.

    Raises:
        InvalidInputError: ``votes`` holds no samples.

    Example:
        >>> answer_entropy(cluster_answers(["a", "a", "a"]))
        0.0
        >>> import math
        >>> math.isclose(answer_entropy(cluster_answers(["a", "b", None])), math.log(3))
        True
    """
    n = _require_samples(votes, "answer_entropy")
    sizes = _cluster_sizes(votes)
    log_n = float(np.log(n))
    entropy = log_n - float(np.sum(sizes * np.log(sizes))) / n
    return min(max(entropy, 0.0), log_n)


def certaindex(votes: Votes) -> float:
    """The normalised-entropy Certaindex ``(log n - H) / log n``, in ``[0, 1]``.

    ``n`` is the number of samples (abstentions included) and ``H`` is
    :func:`answer_entropy`. All answers equal gives 1.0, all distinct gives
    0.0. A single sample is no evidence of agreement and gives 0.0.

    Args:
        votes: The clustered answers.

    Returns:
        The Certaindex, clipped to ``[0, 1]``.

    Raises:
        InvalidInputError: ``votes`` holds no samples.

    Example:
        >>> certaindex(cluster_answers(["18", "$18", "18.0"]))
        1.0
        >>> certaindex(cluster_answers(["1", "2", "3"]))
        0.0
        >>> round(certaindex(cluster_answers(["a", "a", "a", "b"])), 4)
        0.5944
    """
    n = _require_samples(votes, "certaindex")
    if n == 1:
        return 0.0
    sizes = _cluster_sizes(votes)
    value = float(np.sum(sizes * np.log(sizes))) / (n * float(np.log(n)))
    return min(max(value, 0.0), 1.0)


def majority_share(votes: Votes) -> float:
    """The winning cluster's share of all samples, abstentions included.

    Args:
        votes: The clustered answers.

    Returns:
        ``winner_count / total`` in ``[0, 1]``.

    Raises:
        InvalidInputError: ``votes`` holds no samples.

    Example:
        >>> majority_share(cluster_answers(["a", "a", "b", None]))
        0.5
    """
    return votes.winner_count / _require_samples(votes, "majority_share")
