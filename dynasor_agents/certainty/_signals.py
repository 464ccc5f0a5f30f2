r"""Certainty signals beside answer entropy: rewards, probes, confidence-weighted votes.

* :func:`reward_certainty`: the Dynasor paper's Certaindex for reward-guided
  search, the normalised reward of the paths (mean for MCTS, max for REBASE).
* :func:`probe_agreement`: the Dynasor-CoT stopping rule for long
  chain-of-thought: stop once the last ``w`` probe answers agree, none is empty
  and none hedges (:func:`hedges`).
* :func:`weighted_votes` and :func:`filter_confident`: DeepConf's
  confidence-weighted majority voting and its filtering of the least confident
  traces (Fu et al. 2025).

Example:
    >>> reward_certainty([0.2, 0.6]), reward_certainty([0.2, 0.6], how="max")
    (0.4, 0.6)
    >>> probe_agreement(["18", "$18", "18.0"], window=3).agreed
    True
    >>> v = weighted_votes(["18", "20", "20"], [0.9, 0.2, 0.2])
    >>> v.winner, round(v.winner_weight, 2)
    ('18', 0.9)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from dynasor_agents.errors import InvalidInputError

from ._extract import normalize_answer

__all__ = [
    "DEFAULT_HEDGE_WORDS",
    "ProbeAgreement",
    "ProbeReason",
    "WeightedVotes",
    "filter_confident",
    "hedges",
    "mean_token_probability",
    "probe_agreement",
    "reward_certainty",
    "weighted_votes",
]

_T = TypeVar("_T")
_FRACTION_EPS = 1e-9  # so that ceil(0.9 * 10) is 9 even when 0.9 * 10 rounds above 9


def _finite_vector(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    """``values`` as a non-empty, finite 1-D float array, or InvalidInputError."""
    if isinstance(values, str | bytes):
        raise InvalidInputError(f"{name} must be a sequence of numbers, not a str")
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be numbers: {exc}") from exc
    if vector.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got shape {vector.shape}")
    if vector.size == 0:
        raise InvalidInputError(f"{name} is empty")
    bad = np.flatnonzero(~np.isfinite(vector))
    if bad.size:
        i = int(bad[0])
        raise InvalidInputError(f"{name}[{i}] is {float(vector[i])!r}; must be finite")
    return vector


# --------------------------------------------------------------------------- rewards


def reward_certainty(
    scores: npt.ArrayLike,
    *,
    value_range: tuple[float, float] | None = None,
    how: Literal["mean", "max"] = "mean",
) -> float:
    """Certaindex of reward-guided search: the normalised reward of the paths.

    The Dynasor paper (Fu et al. 2024, "Efficiently Serving LLM Reasoning
    Programs with Certaindex") measures the certainty of MCTS by the mean and
    of REBASE by the maximum reward-model score of the current paths, in
    ``[0, 1]``. With ``value_range=(lo, hi)`` every score is first min-max
    scaled, ``clip((r - lo) / (hi - lo), 0, 1)``; without it the scores must
    already lie in ``[0, 1]``.

    Args:
        scores: One reward score per path.
        value_range: The range ``(lo, hi)`` of the reward model's scores, if
            not ``[0, 1]``.
        how: ``"mean"`` (MCTS) or ``"max"`` (REBASE).

    Returns:
        The certainty, in ``[0, 1]``.

    Raises:
        InvalidInputError: Empty or non-finite scores, a score outside
            ``[0, 1]`` without ``value_range``, ``lo >= hi``, or an unknown
            ``how``.

    Example:
        >>> reward_certainty([-1.0, 3.0], value_range=(-1.0, 3.0))
        0.5
        >>> reward_certainty([5.0, 9.0], value_range=(0.0, 8.0), how="max")
        1.0
    """
    vector = _finite_vector(scores, "scores")
    if how not in ("mean", "max"):
        raise InvalidInputError(f"how must be 'mean' or 'max', got {how!r}")
    if value_range is None:
        outside = np.flatnonzero((vector < 0.0) | (vector > 1.0))
        if outside.size:
            i = int(outside[0])
            raise InvalidInputError(
                f"scores[{i}] is {float(vector[i])!r}, outside [0, 1]; "
                "pass value_range=(lo, hi) to rescale"
            )
    else:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"value_range must be a pair (lo, hi), got {value_range!r}"
            ) from exc
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InvalidInputError(f"value_range must have finite lo < hi, got {value_range!r}")
        vector = np.clip((vector - lo) / (hi - lo), 0.0, 1.0)
    value = float(vector.mean() if how == "mean" else vector.max())
    return min(max(value, 0.0), 1.0)


# --------------------------------------------------------------------------- probes

DEFAULT_HEDGE_WORDS: tuple[str, ...] = (
    "wait",
    "hmm",
    "but",
    "however",
    "alternatively",
    "let me",
    "double-check",
    "not sure",
    "maybe",
)
"""Words and phrases that mark a probe answer as hesitant."""


def _word_list(words: Iterable[str]) -> tuple[str, ...]:
    if isinstance(words, str):
        raise InvalidInputError("hedge words must be a collection of words, not a single str")
    listed = tuple(words)
    for word in listed:
        if not isinstance(word, str) or not word.split():
            raise InvalidInputError(f"hedge words must be non-blank strings, got {word!r}")
    return listed


@lru_cache(maxsize=64)
def _hedge_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Whole-word, case-insensitive pattern; spaces and hyphens inside a phrase match either."""
    parts = sorted(
        (r"[\s\-]+".join(map(re.escape, re.split(r"[\s\-]+", w.strip()))) for w in words),
        key=len,
        reverse=True,
    )
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def hedges(text: str, *, words: Iterable[str] = DEFAULT_HEDGE_WORDS) -> bool:
    """Whether ``text`` contains a hedging word, case-insensitively and as a whole word.

    Multi-word phrases match across any whitespace, and spaces and hyphens in
    a phrase are interchangeable (``double-check`` matches "double check").

    Args:
        text: A probe's raw output.
        words: The hedging words and phrases; :data:`DEFAULT_HEDGE_WORDS`.

    Returns:
        True when some word occurs in ``text``.

    Raises:
        InvalidInputError: ``text`` is not a str, or ``words`` is a single str
            or holds a blank or non-str word.

    Example:
        >>> hedges("42. Wait, let me check"), hedges("42 butter"), hedges("I'd Double Check")
        (True, False, True)
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a str, got {type(text).__name__}")
    listed = _word_list(words)
    return bool(listed) and _hedge_pattern(listed).search(text) is not None


ProbeReason: TypeAlias = Literal["agreed", "too_few_probes", "empty", "disagree", "hedging"]
"""Why :func:`probe_agreement` did or did not agree."""


@dataclass(frozen=True)
class ProbeAgreement:
    """The verdict of :func:`probe_agreement`.

    Attributes:
        agreed: The last ``window`` probes agree: stop and answer.
        answer: The agreed (normalised) answer; ``None`` unless ``agreed``.
        reason: ``"agreed"``, or the first failed condition, checked in the
            order ``"too_few_probes"``, ``"empty"``, ``"disagree"``,
            ``"hedging"``.
    """

    agreed: bool
    answer: str | None
    reason: ProbeReason


def _optional_texts(values: Sequence[str | None], name: str) -> list[str | None]:
    if isinstance(values, str):
        raise InvalidInputError(f"{name} must be a sequence, not a single str")
    listed = list(values)
    for i, value in enumerate(listed):
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"{name}[{i}] must be str or None, got {type(value).__name__}")
    return listed


def probe_agreement(
    probes: Sequence[str | None],
    *,
    window: int = 3,
    texts: Sequence[str | None] | None = None,
    hedge_words: Iterable[str] = DEFAULT_HEDGE_WORDS,
    key: Callable[[str], str] = normalize_answer,
) -> ProbeAgreement:
    r"""Dynasor-CoT's stopping rule for long chain-of-thought.

    Every few tokens the program *probes* the model for its current answer
    (Fu et al. 2024, Dynasor-CoT). It stops once the last ``window`` probe
    answers are identical after ``key``, none is empty and none of the last
    ``window`` raw probe outputs hedges (:func:`hedges`). Dynasor's reference
    code uses ``window`` 2 to 8 by effort level; 3 is its middle setting.

    Args:
        probes: The probe answers so far, oldest first (``None``: no answer).
        window: How many most recent probes must agree.
        texts: The raw probe outputs checked for hedging, parallel to
            ``probes``; by default ``probes`` themselves.
        hedge_words: Passed to :func:`hedges`.
        key: Maps an answer to its comparison key; :func:`normalize_answer`.

    Returns:
        The :class:`ProbeAgreement`.

    Raises:
        InvalidInputError: ``probes`` or ``texts`` is a str or holds a
            non-str, their lengths differ, or ``window`` is not a positive int.

    Example:
        >>> probe_agreement(["12", "18", r"\$18", "18"])
        ProbeAgreement(agreed=True, answer='18', reason='agreed')
        >>> probe_agreement(["18", "18", "18"], texts=["18}", "18}", "18} wait"]).reason
        'hedging'
        >>> probe_agreement(["18", None, "18"]).reason
        'empty'
    """
    answers = _optional_texts(probes, "probes")
    raw = answers if texts is None else _optional_texts(texts, "texts")
    if len(raw) != len(answers):
        raise InvalidInputError(f"texts has {len(raw)} items but probes has {len(answers)}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InvalidInputError(f"window must be a positive int, got {window!r}")
    words = _word_list(hedge_words)
    if len(answers) < window:
        return ProbeAgreement(agreed=False, answer=None, reason="too_few_probes")
    keys = [key(a) if a is not None and a.strip() else "" for a in answers[-window:]]
    if not all(keys):
        return ProbeAgreement(agreed=False, answer=None, reason="empty")
    if len(set(keys)) != 1:
        return ProbeAgreement(agreed=False, answer=None, reason="disagree")
    if any(t is not None and hedges(t, words=words) for t in raw[-window:]):
        return ProbeAgreement(agreed=False, answer=None, reason="hedging")
    return ProbeAgreement(agreed=True, answer=keys[0], reason="agreed")


# --------------------------------------------------------------------------- weighted votes


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
    listed = _optional_texts(answers, "answers")
    if not listed:
        raise InvalidInputError("weighted_votes needs at least one answer, got none")
    vector = _finite_vector(weights, "weights")
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
    vector = _finite_vector(confidences, "confidences")
    if vector.size != len(listed):
        raise InvalidInputError(f"confidences has {vector.size} items but items has {len(listed)}")
    count = max(1, math.ceil(keep * len(listed) - _FRACTION_EPS))
    ranked = np.lexsort((np.arange(vector.size), -vector))[:count]  # by -conf, then index
    return [listed[i] for i in sorted(ranked.tolist())]


def _token_logprob(entry: Any) -> float:
    if isinstance(entry, int | float):
        return float(entry)
    if isinstance(entry, dict):
        if "logprob" in entry:
            return float(entry["logprob"])
        return max(float(v) for v in entry.values())  # a top-k map: the sampled token's
    return float(entry.logprob)


def mean_token_probability(logprobs: Any) -> float | None:
    """``exp`` of the mean token log-probability (the geometric-mean token probability).

    Accepts what strategies' samplers put on ``Completion.logprobs``: the chat
    API's ``{"content": [{"token", "logprob", ...}, ...]}``
    (``ChatOpenAI(logprobs=True)``), a list of such entries, the sampled
    tokens' log-probabilities as plain numbers (``CompletionsModel``), or
    top-k maps ``{token: logprob}`` (the most likely token stands for the
    sampled one). ``None`` entries are skipped; ``None`` when there are none.

    Example:
        >>> round(mean_token_probability({"content": [{"logprob": -0.1}, {"logprob": -0.3}]}), 4)
        0.8187
        >>> mean_token_probability(None) is None
        True
    """
    entries = logprobs.get("content") if isinstance(logprobs, dict) else logprobs
    values = [_token_logprob(e) for e in entries or () if e is not None]
    if not values:
        return None
    return math.exp(min(0.0, sum(values) / len(values)))
