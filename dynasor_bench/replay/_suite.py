"""The method suite a replay compares: every family with its parameter sweep.

:func:`default_suite` builds all families for a bank of K paths per question;
:func:`select` keeps the families named on the command line. Family names:

=======================  =====================================================
family                   what it is (parameter swept)
=======================  =====================================================
``fixed``                majority of the first n samples (n = 1..K)
``fixed-weighted``       confidence-weighted vote of the first n (n)
``oracle``               first n whose majority is the majority of all K
``certaindex``           the paper's rule: detect once at 5 samples, stop if
                         Certaindex >= t, else run to K (t)
``certaindex-step1``     detect at 5, then after every sample (t); ``-step2``
                         and ``-step4`` detect every 2 / 4 samples
``adaptive-consistency`` Beta stopping, one sample at a time (threshold)
``esc``                  ESC: windows of w samples, stop on a unanimous one (w)
``hopeless``             certaindex-step1 plus hopeless(below, after=8) (t, below)
``share-step1``          stop when the majority's share of answers >= t, one
                         sample at a time after 4 (t)
``wconsensus-step1``     the same with confidence-weighted shares and votes (t)
``wconsensus-hopeless``  wconsensus-step1 plus hopeless(below, after=8) (t, below)
``deepconf-low``         DeepConf online, bar at the 90th percentile (tau)
``deepconf-high``        DeepConf online, bar at the 10th percentile (tau)
``alloc-lowest``         shared budget, next sample to the least certain
                         question (budget per question)
``alloc-threshold``      the same, settling questions at Certaindex >= 0.8
``alloc-gain``           alloc-lowest ranked by expected gain instead: a gain
                         curve cross-fitted on the other half of the bank
=======================  =====================================================

Example:
    >>> suite = default_suite(16, mean_length=100.0)
    >>> sorted({m.family for m in suite}) == sorted(FAMILIES)
    True
    >>> sorted({m.family for m in select(suite, ["esc"])})  # the baselines always stay
    ['esc', 'fixed', 'oracle']
    >>> [m.label for m in suite if m.family == "esc"][:2]
    ['esc(window=2)', 'esc(window=3)']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from dynasor_agents import ControllerSpec, GainCurve, by_gain
from dynasor_agents.errors import InvalidInputError
from dynasor_bench.replay._allocate import AllocationRule, allocate, gain_observations
from dynasor_bench.replay._core import CertaindexMemo, Outcome
from dynasor_bench.replay._methods import (
    ControllerMethod,
    DeepConfOnline,
    FixedN,
    Method,
    Oracle,
    WeightedFixedN,
)
from dynasor_bench.replay._prepare import PreparedQuestion

__all__ = ["FAMILIES", "AllocatorMethod", "default_suite", "select"]

FAMILIES = (
    "fixed",
    "fixed-weighted",
    "oracle",
    "certaindex",
    "certaindex-step1",
    "certaindex-step2",
    "certaindex-step4",
    "adaptive-consistency",
    "esc",
    "hopeless",
    "share-step1",
    "wconsensus-step1",
    "wconsensus-hopeless",
    "deepconf-low",
    "deepconf-high",
    "alloc-lowest",
    "alloc-threshold",
    "alloc-gain",
)
"""Every family :func:`default_suite` builds, in report order."""

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
SHARES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
TAUS = (0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
AC_THRESHOLDS = (0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
ESC_WINDOWS = (2, 3, 4, 5, 6, 8)
HOPELESS_T = (0.5, 0.7, 0.9)
HOPELESS_BELOW = (0.1, 0.2, 0.3)
WC_HOPELESS_T = (0.6, 0.7)
WC_HOPELESS_BELOW = (0.05, 0.1, 0.2)
BUDGETS = (2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16)  # x mean path length, per question


class AllocatorMethod(Method):
    """The shared-budget allocator as a method (it runs the whole bank at once).

    Args:
        family: The family's name.
        budget: Completion tokens per question; the bank's total is ``budget *
            questions``.
        rule: The allocation rule.
        cross_fit: Rank by expected gain, fitted out of sample: the bank is
            split into two halves (alternate questions), each half is one batch
            with its share of the budget, ranked by a :class:`GainCurve` fitted
            on the other half's traces (:func:`gain_observations` from the
            detect step on). The rule's own ranking is then ignored.
    """

    def __init__(
        self, family: str, budget: int, rule: AllocationRule, *, cross_fit: bool = False
    ) -> None:
        if budget < 0:
            raise InvalidInputError(f"budget must be >= 0, got {budget!r}")
        super().__init__(family, {"budget": budget})
        self.budget = budget
        self.rule = rule
        self.cross_fit = cross_fit
        self._memo = CertaindexMemo()

    def run(self, q: PreparedQuestion, order: Sequence[int]) -> Outcome:
        """One question alone, with its own share of the budget."""
        return self.run_bank([q], [order])[0]

    def run_bank(
        self, questions: Sequence[PreparedQuestion], orders: Sequence[Sequence[int]]
    ) -> list[Outcome]:
        """The allocator over all questions, sharing ``budget * len(questions)`` tokens."""
        if not self.cross_fit or len(questions) < 2:
            total = self.budget * len(questions)
            return allocate(questions, orders, total, self.rule, self._memo)
        halves = [list(range(0, len(questions), 2)), list(range(1, len(questions), 2))]
        outcomes: list[Outcome | None] = [None] * len(questions)
        for mine, other in (halves, halves[::-1]):
            curve = GainCurve.fit(
                gain_observations(
                    [questions[i] for i in other],
                    [orders[i] for i in other],
                    start=self.rule.detect,
                    samples=self.rule.max_samples,
                    memo=self._memo,
                )
            )
            rule = dataclasses.replace(self.rule, ranking=by_gain(curve))
            got = allocate(
                [questions[i] for i in mine],
                [orders[i] for i in mine],
                self.budget * len(mine),
                rule,
                self._memo,
            )
            for i, outcome in zip(mine, got, strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]


def _controller(
    family: str,
    params: dict[str, float],
    terms: list[tuple[str, dict[str, float]]],
    *,
    first_round: int,
    round_size: int,
    weighted: bool = False,
) -> ControllerMethod:
    spec = ControllerSpec.of(terms, first_round=first_round, round_size=round_size)
    return ControllerMethod(family, params, spec, weighted=weighted)


def default_suite(k: int, *, mean_length: float, detect: int = 5) -> list[Method]:
    """Every family of the module table, with its sweep, for K paths per question.

    Args:
        k: Paths per question (every controller is capped at ``max_samples(k)``).
        mean_length: Mean completion tokens of a path, which scales the
            allocators' budgets (``BUDGETS`` times it, per question).
        detect: Samples in the first detect step of the Certaindex families.

    Raises:
        InvalidInputError: ``k`` is too small for the detect step.
    """
    if k <= detect:
        raise InvalidInputError(f"the suite needs K > detect={detect}, got K={k}")
    cap: tuple[str, dict[str, float]] = ("max_samples", {"n": k})
    out: list[Method] = [FixedN(n) for n in range(1, k + 1)]
    out += [WeightedFixedN(n) for n in range(1, k + 1)]
    out.append(Oracle())
    for t in THRESHOLDS:
        terms = [("threshold", {"value": t}), cap]
        p = {"t": t}
        out.append(_controller("certaindex", p, terms, first_round=detect, round_size=k - detect))
        for step in (1, 2, 4):
            out.append(
                _controller(f"certaindex-step{step}", p, terms, first_round=detect, round_size=step)
            )
    for a in AC_THRESHOLDS:
        terms = [("adaptive_consistency", {"threshold": a}), cap]
        out.append(
            _controller(
                "adaptive-consistency", {"threshold": a}, terms, first_round=1, round_size=1
            )
        )
    for w in ESC_WINDOWS:
        terms = [("early_stopping", {"window": w}), cap]
        out.append(_controller("esc", {"window": w}, terms, first_round=w, round_size=w))
    for t in HOPELESS_T:
        for below in HOPELESS_BELOW:
            terms = [("threshold", {"value": t}), ("hopeless", {"below": below, "after": 8}), cap]
            out.append(
                _controller(
                    "hopeless", {"t": t, "below": below}, terms, first_round=detect, round_size=1
                )
            )
    for family, weighted in (("share-step1", False), ("wconsensus-step1", True)):
        for t in SHARES:
            terms = [("weighted_consensus", {"threshold": t, "min_samples": 4}), cap]
            out.append(
                _controller(family, {"t": t}, terms, first_round=4, round_size=1, weighted=weighted)
            )
    for t in WC_HOPELESS_T:
        for below in WC_HOPELESS_BELOW:
            terms = [
                ("weighted_consensus", {"threshold": t, "min_samples": 4}),
                ("hopeless", {"below": below, "after": 8}),
                cap,
            ]
            params = {"t": t, "below": below}
            out.append(
                _controller(
                    "wconsensus-hopeless", params, terms, first_round=4, round_size=1, weighted=True
                )
            )
    for percentile in (90.0, 10.0):
        out += [DeepConfOnline(percentile, tau) for tau in TAUS]
    for family, stop_at, cross_fit in (
        ("alloc-lowest", None, False),
        ("alloc-threshold", 0.8, False),
        ("alloc-gain", None, True),
    ):
        # No hopeless floor: on our bank the least certain questions after the
        # detect step gain the most from more samples (see docs/benchmarks.md).
        rule = AllocationRule(detect=detect, max_samples=k, stop_at=stop_at, floor=0.0)
        out += [
            AllocatorMethod(family, round(b * mean_length), rule, cross_fit=cross_fit)
            for b in BUDGETS
            if b <= k
        ]
    return out


def select(methods: Sequence[Method], families: Iterable[str] | None) -> list[Method]:
    """The methods of the named families (all when ``families`` is ``None``).

    ``fixed`` and ``oracle`` are always kept: every report compares against them.

    Raises:
        InvalidInputError: A name is not a family of ``methods``.
    """
    if families is None:
        return list(methods)
    wanted = {name.strip() for name in families if name.strip()}
    known = {m.family for m in methods}
    unknown = sorted(wanted - known)
    if unknown:
        raise InvalidInputError(
            f"unknown method families {unknown}; known: {', '.join(sorted(known))}"
        )
    wanted |= {"fixed", "oracle"}
    return [m for m in methods if m.family in wanted]
