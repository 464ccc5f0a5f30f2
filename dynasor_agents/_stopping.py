"""Stopping rules from the sampling literature, as controller policies.

Each rule is a :class:`~dynasor_agents.controller.Policy`, like ``threshold``: it
reads the typed :class:`~dynasor_agents.controller.ProgramState` a strategy
reports after a detect step and composes with the others through ``|``
(the first stop wins, so list the rules that stop as ``CERTAIN`` first):

* :class:`adaptive_consistency`: the Beta stopping criterion of
  Adaptive-Consistency (Aggarwal et al., EMNLP 2023, "Let's Sample Step by Step:
  Adaptive-Consistency for Efficient Reasoning and Coding with LLMs");
  :func:`beta_stop_probability` is its exact probability;
* :class:`early_stopping`: Early-Stopping Self-Consistency, ESC (Li et al.,
  ICLR 2024, "Escape Sky-high Cost: Early-stopping Self-Consistency for
  Multi-step Reasoning"): stop when a window of samples is unanimous;
* :class:`weighted_consensus`: the online consensus stop of DeepConf (Fu et al.,
  2025, "Deep Think with Confidence", arXiv:2508.15260): stop when the
  confidence-weighted vote share of the leading answer is high enough;
  :func:`weighted_vote` computes that share;
* :class:`hopeless`: give up on a query whose Certaindex stays very low after
  enough samples (Dynasor's observation that such queries rarely settle and
  their majority is usually wrong).

The answer-based rules read ``state.answers`` (and ``state.confidences``), the
normalized answers of the completed samples in completion order. Strategies that
do not fill them leave them empty, and those rules then never stop.

Example:
    >>> from dynasor_agents.controller import CertaintyController, ProgramState, max_samples
    >>> ctl = CertaintyController(
    ...     adaptive_consistency(0.95) | hopeless(0.2, after=8) | max_samples(16),
    ...     first_round=1,
    ...     round_size=1,
    ... )
    >>> ctl.decide(ProgramState(samples=3, certainty=1.0, answers=("7",) * 3)).stop
    False
    >>> ctl.decide(ProgramState(samples=4, certainty=1.0, answers=("7",) * 4)).reason
    <StopReason.CERTAIN: 'certain'>
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

from dynasor_agents.controller import Policy, ProgramState, StopReason, Verdict
from dynasor_agents.errors import InvalidInputError

__all__ = [
    "adaptive_consistency",
    "beta_stop_probability",
    "early_stopping",
    "hopeless",
    "weighted_consensus",
    "weighted_vote",
]


def _unit(name: str, value: object) -> float:
    """``value`` as a float in ``[0, 1]``, or :class:`InvalidInputError` naming it."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
        raise InvalidInputError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _count(name: str, value: object, minimum: int) -> int:
    """``value`` as an int ``>= minimum``, or :class:`InvalidInputError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _tally(answers: Sequence[str | None]) -> dict[str, int]:
    """Samples per answer (``None`` skipped), in order of first appearance."""
    counts: dict[str, int] = {}
    for answer in answers:
        if answer is not None:
            counts[answer] = counts.get(answer, 0) + 1
    return counts


def beta_stop_probability(v1: int, v2: int) -> float:
    """Adaptive-Consistency's probability that the answer with ``v1`` votes is the majority.

    With a uniform prior on the share ``p`` of the leading answer between the
    two most common ones, the posterior after ``v1`` against ``v2`` votes is
    ``Beta(v1 + 1, v2 + 1)``, and the probability is
    ``P = integral_{0.5}^{1} Beta(p; v1 + 1, v2 + 1) dp = 1 - I_{0.5}(v1 + 1, v2 + 1)``.
    For integer ``a, b`` the regularized incomplete beta function is a binomial
    tail, ``I_x(a, b) = sum_{j=a}^{a+b-1} C(a+b-1, j) x^j (1-x)^(a+b-1-j)``, so
    at ``x = 1/2``, ``P = sum_{j<a} C(a+b-1, j) / 2^(a+b-1)``, computed here in
    exact integer arithmetic (no scipy) and rounded once to a float.

    Args:
        v1: Votes of the leading answer.
        v2: Votes of the runner-up (0 when there is only one answer).

    Returns:
        ``P`` in ``[0, 1]`` (strictly inside mathematically; very lopsided
        counts round to 0.0 or 1.0); 0.5 when ``v1 == v2``.

    Raises:
        InvalidInputError: A count is not an int ``>= 0``.

    Example:
        >>> beta_stop_probability(1, 0), beta_stop_probability(2, 1)
        (0.75, 0.6875)
        >>> beta_stop_probability(3, 0), beta_stop_probability(4, 0)
        (0.9375, 0.96875)
    """
    a = _count("v1", v1, 0) + 1
    b = _count("v2", v2, 0) + 1
    n = a + b - 1
    below, term = 0, 1  # term = C(n, j), built up one j at a time
    for j in range(a):
        below += term
        term = term * (n - j) // (j + 1)
    return below / (1 << n)


class adaptive_consistency(Policy):  # noqa: N801 - lowercase like the other policies
    """Stop as ``CERTAIN`` once the leading answer is the majority with probability ``threshold``.

    The Beta criterion of Adaptive-Consistency: with ``v1 >= v2`` the two
    largest answer counts in ``state.answers`` (``None`` ignored, ``v2 = 0``
    with a single distinct answer), stop when
    :func:`beta_stop_probability` ``(v1, v2) >= threshold``. At 0.95, four
    unanimous answers stop (0.96875) and three do not (0.9375).

    Args:
        threshold: Stop probability in ``[0, 1]`` (the paper uses 0.95).
        min_samples: Do not judge before this many completed samples
            (``len(state.answers)``, abstentions included).

    Raises:
        InvalidInputError: ``threshold`` is outside ``[0, 1]`` or
            ``min_samples`` is not an int ``>= 1``.

    Example:
        >>> rule = adaptive_consistency(0.95)
        >>> rule(ProgramState(samples=4, answers=("a", "a", "a", "a"))).stop
        <StopReason.CERTAIN: 'certain'>
        >>> rule(ProgramState(samples=5, answers=("a", "a", "b", "a", "a"))).stop is None
        True
        >>> adaptive_consistency(95)
        Traceback (most recent call last):
        ...
        dynasor_agents.errors.InvalidInputError: threshold must be a number in [0, 1], got 95
    """

    def __init__(self, threshold: float = 0.95, *, min_samples: int = 2) -> None:
        self.threshold = _unit("threshold", threshold)
        self.min_samples = _count("min_samples", min_samples, 1)

    def __call__(self, state: ProgramState) -> Verdict:
        if len(state.answers) < self.min_samples:
            return Verdict()
        counts = sorted(_tally(state.answers).values(), reverse=True)
        if not counts:
            return Verdict()
        v1, v2 = counts[0], counts[1] if len(counts) > 1 else 0
        if beta_stop_probability(v1, v2) >= self.threshold:
            return Verdict(stop=StopReason.CERTAIN)
        return Verdict()

    def __repr__(self) -> str:
        return f"adaptive_consistency({self.threshold}, min_samples={self.min_samples})"


class early_stopping(Policy):  # noqa: N801
    """Stop as ``CERTAIN`` when the last complete window of ``window`` answers is unanimous.

    ESC samples in windows of ``window`` and stops after the first window whose
    answers are all the same. This rule judges the most recent *complete* window,
    ``answers[k * window:(k + 1) * window]`` for the largest ``k`` with
    ``(k + 1) * window <= len(answers)``; a sample without an answer (``None``)
    breaks the window. A :class:`~dynasor_agents.controller.CertaintyController`
    with ``first_round=round_size=window`` therefore reproduces ESC exactly; with
    other round sizes a window that straddles two rounds is judged at the first
    detect step after it completes.

    Args:
        window: Samples per window (the paper's default is 5).

    Raises:
        InvalidInputError: ``window`` is not an int ``>= 1``.

    Example:
        >>> rule = early_stopping(3)
        >>> rule(ProgramState(samples=3, answers=("a", "a", "a"))).stop
        <StopReason.CERTAIN: 'certain'>
        >>> rule(ProgramState(samples=4, answers=("a", "b", "a", "a"))).stop is None
        True
    """

    def __init__(self, window: int = 5) -> None:
        self.window = _count("window", window, 1)

    def __call__(self, state: ProgramState) -> Verdict:
        complete = len(state.answers) // self.window
        if not complete:
            return Verdict()
        last = state.answers[(complete - 1) * self.window : complete * self.window]
        if last[0] is not None and all(answer == last[0] for answer in last):
            return Verdict(stop=StopReason.CERTAIN)
        return Verdict()

    def __repr__(self) -> str:
        return f"early_stopping({self.window})"


class hopeless(Policy):  # noqa: N801
    """Stop as ``HOPELESS`` when Certaindex is still below ``below`` after ``after`` samples.

    A query whose answers keep scattering is unlikely to settle, and its
    majority is usually wrong: the samples are better spent elsewhere. Since
    ``|`` keeps the first stop, list this rule after the rules that stop as
    ``CERTAIN``.

    Args:
        below: Certaindex in ``[0, 1]`` under which the query counts as hopeless.
        after: Do not judge before this many samples (``state.samples``).

    Raises:
        InvalidInputError: ``below`` is outside ``[0, 1]`` or ``after`` is not
            an int ``>= 1``.

    Example:
        >>> hopeless(0.2, after=8)(ProgramState(samples=8, certainty=0.1)).stop
        <StopReason.HOPELESS: 'hopeless'>
        >>> hopeless(0.2, after=8)(ProgramState(samples=7, certainty=0.1)).stop is None
        True
    """

    def __init__(self, below: float = 0.2, *, after: int = 8) -> None:
        self.below = _unit("below", below)
        self.after = _count("after", after, 1)

    def __call__(self, state: ProgramState) -> Verdict:
        if state.samples >= self.after and state.certainty < self.below:
            return Verdict(stop=StopReason.HOPELESS)
        return Verdict()

    def __repr__(self) -> str:
        return f"hopeless({self.below}, after={self.after})"


def weighted_vote(
    answers: Sequence[str | None], confidences: Sequence[float] = ()
) -> tuple[str | None, float]:
    """The confidence-weighted winner and its share of the answered samples' weight.

    ``share = sum of the winner's confidences / sum of the confidences of all
    answered samples`` (``None`` answers carry no vote). When ``confidences``
    is missing or does not match ``answers`` in length, every sample weighs 1.0
    and the share is the plain majority share among answered samples.

    Args:
        answers: One normalized answer per sample (``None``: no answer).
        confidences: One non-negative confidence per sample, aligned with
            ``answers``; higher means more confident.

    Returns:
        ``(winner, share)``, ties broken by first appearance; ``(None, 0.0)``
        when no sample answered or all answered weights are zero.

    Raises:
        InvalidInputError: ``answers`` is a single ``str``, or a used
            confidence is negative or not finite.

    Example:
        >>> weighted_vote(["a", "b", "b", None])
        ('b', 0.6666666666666666)
        >>> weighted_vote(["a", "b", "b", None], [6.0, 1.0, 1.0, 9.0])
        ('a', 0.75)
    """
    if isinstance(answers, str):
        raise InvalidInputError("answers must be a sequence of answers, not a single str")
    weights: Sequence[float] = confidences
    if len(confidences) != len(answers):
        weights = [1.0] * len(answers)
    totals: dict[str, float] = {}
    for i, (answer, weight) in enumerate(zip(answers, weights, strict=True)):
        if answer is None:
            continue
        w = float(weight)
        if not math.isfinite(w) or w < 0.0:
            raise InvalidInputError(f"confidences[{i}] must be finite and >= 0, got {weight!r}")
        totals[answer] = totals.get(answer, 0.0) + w
    total = sum(totals.values())
    if not totals or total <= 0.0:
        return None, 0.0
    winner = max(totals, key=lambda answer: totals[answer])  # first maximum: first appearance
    return winner, totals[winner] / total


class weighted_consensus(Policy):  # noqa: N801
    """Stop as ``CERTAIN`` once the confidence-weighted vote share reaches ``threshold``.

    DeepConf's online consensus stop: the leading answer's share of the summed
    confidence of all answered samples (:func:`weighted_vote` over
    ``state.answers`` and ``state.confidences``). Without per-sample
    confidences (empty, or not aligned with the answers) every sample weighs
    1.0, so the rule becomes a plain majority-share stop.

    Args:
        threshold: Consensus share in ``[0, 1]`` (DeepConf uses 0.95).
        min_samples: Do not judge before this many completed samples
            (``len(state.answers)``, abstentions included).

    Raises:
        InvalidInputError: ``threshold`` is outside ``[0, 1]`` or
            ``min_samples`` is not an int ``>= 1``.

    Example:
        >>> rule = weighted_consensus(0.9)
        >>> state = ProgramState(samples=3, answers=("a", "a", "b"))
        >>> rule(state).stop is None  # unweighted share 2/3
        True
        >>> rule(ProgramState(samples=3, answers=("a", "a", "b"), confidences=(9, 9, 1))).stop
        <StopReason.CERTAIN: 'certain'>
    """

    def __init__(self, threshold: float = 0.95, *, min_samples: int = 2) -> None:
        self.threshold = _unit("threshold", threshold)
        self.min_samples = _count("min_samples", min_samples, 1)

    def __call__(self, state: ProgramState) -> Verdict:
        if len(state.answers) < self.min_samples:
            return Verdict()
        winner, share = weighted_vote(state.answers, state.confidences)
        if winner is not None and share >= self.threshold:
            return Verdict(stop=StopReason.CERTAIN)
        return Verdict()

    def __repr__(self) -> str:
        return f"weighted_consensus({self.threshold}, min_samples={self.min_samples})"
