r"""DeepConf's confidence-weighted voting: weighted answer clusters and confidence filtering.

DeepConf (Fu et al. 2025, "Deep Think with Confidence", arXiv:2508.15260)
weighs each trace's vote by its confidence (:func:`weighted_votes`, which also
gives a weighted Certaindex) and may first drop the least confident traces
(:func:`filter_confident`).

Example:
    >>> v = weighted_votes(["18", "20", "20"], [0.9, 0.2, 0.2])
    >>> v.winner, round(v.winner_weight, 2)
    ('18', 0.9)
    >>> filter_confident(["18", "20", "20"], [0.9, 0.2, 0.3], keep=0.5)
    ['18', '20']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from dynasor_agents.errors import InvalidInputError

from ._extract import normalize_answer
from ._inputs import finite_vector, optional_texts

__all__ = ["WeightedVotes", "filter_confident", "weighted_votes"]

_T = TypeVar("_T")
_FRACTION_EPS = 1e-9  # so that ceil(0.9 * 10) is 9 even when 0.9 * 10 rounds above 9


@dataclass(frozen=True)
class WeightedVotes:
    """Answers clustered as by :func:`~dynasor_agents.certainty.cluster_answers`, weighted.

    Attributes:
        counts: ``(key, total weight)`` per answer cluster of positive weight,
            heaviest first, ties in order of first appearance.
        abstained: Paths without an answer.
        abstained_weight: Their total weight.
        paths: All paths, abstained and zero-weight ones included.
        certaindex: Weighted Certaindex, ``1 - H / log(paths)`` (see
            :func:`weighted_votes`).
        representatives: ``(key, raw answer)`` per cluster, in ``counts`` order.
    """

    counts: tuple[tuple[str, float], ...]
    abstained: int
    abstained_weight: float
    paths: int
    certaindex: float
    representatives: tuple[tuple[str, str], ...] = ()

    @property
    def winner(self) -> str | None:
        """Key of the heaviest answer (earliest on ties); ``None`` if none has weight."""
        return self.counts[0][0] if self.counts else None

    @property
    def winner_weight(self) -> float:
        """Weight of the winning cluster; 0.0 if there is none."""
        return self.counts[0][1] if self.counts else 0.0

    @property
    def total_weight(self) -> float:
        """Weight of all paths."""
        return sum(weight for _, weight in self.counts) + self.abstained_weight

    @property
    def share(self) -> float:
        """``winner_weight / total_weight``."""
        total = self.total_weight
        return self.winner_weight / total if total > 0 else 0.0


def weighted_votes(
    answers: Sequence[str | None],
    weights: npt.ArrayLike,
    *,
    key: Callable[[str], str] = normalize_answer,
) -> WeightedVotes:
    r"""Confidence-weighted majority voting (DeepConf) with a weighted Certaindex.

    Each answer cluster ``a`` gets ``V(a) = sum_t w_t * [answer(t) = a]`` (Fu
    et al. 2025, eq. 7, with ``w_t`` a trace confidence); the winner is the
    heaviest. The weighted Certaindex follows :func:`certaindex`: every
    abstaining path is a singleton cluster, ``p_c = V(c) / sum_t w_t``,
    ``H = -sum_c p_c log p_c`` and the value is ``1 - H / log n`` with ``n``
    the number of paths, clipped to ``[0, 1]`` (0.0 for a single path, and
    when no answer has positive weight). With equal weights it equals the
    unweighted Certaindex.

    Args:
        answers: One extracted answer per path; ``None``, blank answers and
            answers whose key is empty abstain.
        weights: One non-negative weight per path, not all zero.
        key: The clustering key; :func:`normalize_answer`.

    Returns:
        The :class:`WeightedVotes`.

    Raises:
        InvalidInputError: ``answers`` is empty, a str, or holds a non-str;
            the lengths differ; a weight is negative or not finite; or all
            weights are zero.

    Example:
        >>> v = weighted_votes(["18", "$18", "20", None], [1.0, 1.0, 3.0, 1.0])
        >>> v.counts, v.abstained_weight, v.winner, round(v.certaindex, 4)
        ((('20', 3.0), ('18', 2.0)), 1.0, '20', 0.2704)
    """
    listed = optional_texts(answers, "answers")
    if not listed:
        raise InvalidInputError("weighted_votes needs at least one answer, got none")
    vector = finite_vector(weights, "weights")
    if vector.size != len(listed):
        raise InvalidInputError(f"weights has {vector.size} items but answers has {len(listed)}")
    negative = np.flatnonzero(vector < 0.0)
    if negative.size:
        i = int(negative[0])
        raise InvalidInputError(f"weights[{i}] is {float(vector[i])!r}; must be >= 0")
    total = float(vector.sum())
    if total <= 0.0:
        raise InvalidInputError("weights are all zero")

    sums: dict[str, float] = {}
    first_raw: dict[str, str] = {}
    abstained: list[float] = []
    for answer, weight in zip(listed, vector.tolist(), strict=True):
        cluster = key(answer) if answer is not None and answer.strip() else ""
        if not cluster:
            abstained.append(weight)
            continue
        sums[cluster] = sums.get(cluster, 0.0) + weight
        first_raw.setdefault(cluster, answer or "")
    ordered = sorted(((k, w) for k, w in sums.items() if w > 0.0), key=lambda kw: -kw[1])

    n = len(listed)
    certainty = 0.0
    if n > 1 and ordered:  # no weighted answer at all: nothing to be certain of
        masses = np.asarray([w for _, w in ordered] + abstained, dtype=np.float64)
        p = masses / total
        p = p[p > 0.0]  # a subnormal weight can vanish in the division
        certainty = 1.0 + float(np.sum(p * np.log(p))) / math.log(n)
        certainty = 1.0 if p.size == 1 else min(max(certainty, 0.0), 1.0)
    return WeightedVotes(
        counts=tuple(ordered),
        abstained=len(abstained),
        abstained_weight=float(sum(abstained)),
        paths=n,
        certaindex=certainty,
        representatives=tuple((k, first_raw[k]) for k, _ in ordered),
    )


def filter_confident(
    items: Sequence[_T], confidences: npt.ArrayLike, *, keep: float = 0.9
) -> list[_T]:
    """DeepConf confidence filtering: keep the most confident ``keep`` share of items.

    DeepConf (Fu et al. 2025) votes only over the top ``eta`` percent of traces
    by confidence (``eta`` = 10% or 90%). Here the ``max(1, ceil(keep * n))``
    items of highest confidence are kept; ties at the cut go to the earlier
    item, and the kept items stay in their original order.

    Args:
        items: The items, e.g. answers or traces.
        confidences: One finite confidence per item (higher is better).
        keep: Share of items to keep, in ``(0, 1]``.

    Returns:
        The kept items, in input order.

    Raises:
        InvalidInputError: ``items`` is empty, the lengths differ, a
            confidence is not finite, or ``keep`` is outside ``(0, 1]``.

    Example:
        >>> filter_confident(["a", "b", "c", "d"], [0.9, 0.1, 0.5, 0.7], keep=0.5)
        ['a', 'd']
        >>> filter_confident(["a", "b"], [0.3, 0.3], keep=0.1)
        ['a']
    """
    if isinstance(keep, bool) or not isinstance(keep, int | float) or not 0.0 < keep <= 1.0:
        raise InvalidInputError(f"keep must be in (0, 1], got {keep!r}")
    listed = list(items)
    if not listed:
        raise InvalidInputError("filter_confident needs at least one item, got none")
    vector = finite_vector(confidences, "confidences")
    if vector.size != len(listed):
        raise InvalidInputError(f"confidences has {vector.size} items but items has {len(listed)}")
    count = max(1, math.ceil(keep * len(listed) - _FRACTION_EPS))
    ranked = np.lexsort((np.arange(vector.size), -vector))[:count]  # by -conf, then index
    return [listed[i] for i in sorted(ranked.tolist())]
