"""Sampling methods replayed on a trace bank: baselines, stopping rules, DeepConf.

A :class:`Method` is one setting of one *family* (``certaindex`` at ``t=0.8``,
``fixed`` at ``n=8``, ...). Given a prepared question and an ordering of its K
paths it returns the :class:`~dynasor_bench.replay._core.Outcome` of running
that method; :meth:`Method.run_bank` runs every question of a bank at once, which
the shared-budget allocator (:mod:`dynasor_bench.replay._allocate`) overrides.

Families here:

* ``fixed``: majority vote of the first ``n`` samples;
* ``fixed-weighted``: the same, votes weighted by DeepConf's lowest group
  confidence (offline confidence-weighted voting, no filtering);
* ``oracle``: stop at the first ``n`` whose majority equals the majority of all
  K, the limit any stopping rule that votes by majority can reach;
* :class:`ControllerMethod`: any :class:`ControllerSpec`, replayed exactly as
  the live self-consistency core runs it (:func:`replay_controller`);
* :class:`DeepConfOnline`: DeepConf's online algorithm (warm-up, confidence bar,
  early termination of low-confidence traces, weighted consensus stop).

Example:
    >>> from dynasor_bench.replay._prepare import prepare_question
    >>> from dynasor_bench.traces._bank import PathTrace, QuestionTrace
    >>> paths = [PathTrace(text="", answer=a, completion_tokens=10) for a in "5445"]
    >>> q = prepare_question(QuestionTrace(id="t:1", source="t", question="?", gold="4",
    ...                                    prompt_tokens=5, paths=paths))
    >>> FixedN(3).run(q, [0, 1, 2, 3])
    Outcome(answer='4', correct=True, samples=3, tokens=30, reason='max_samples')
    >>> Oracle().run(q, [0, 1, 2, 3])  # all four: 2-2 tie, "5" first; one sample says "5"
    Outcome(answer='5', correct=False, samples=1, tokens=10, reason='oracle')
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

import numpy as np

from dynasor_agents import ControllerSpec, weighted_vote
from dynasor_agents.controller import CertaintyController
from dynasor_agents.errors import InvalidInputError
from dynasor_bench.replay._core import CertaindexMemo, Outcome, replay_controller
from dynasor_bench.replay._prepare import PreparedQuestion, majority

__all__ = [
    "ControllerMethod",
    "DeepConfOnline",
    "FixedN",
    "Method",
    "Oracle",
    "WeightedFixedN",
]

Param = float | int
"""A policy parameter's value (as in a :class:`~dynasor_agents.ControllerSpec`)."""


class Method(abc.ABC):
    """One setting of one method family.

    Args:
        family: The family's name (methods of a family form one curve).
        params: The setting's parameters (what a sweep varies).

    Attributes:
        needs_confidence: The method reads token confidences (the bank must
            carry them).
    """

    needs_confidence: bool = False

    def __init__(self, family: str, params: Mapping[str, Param]) -> None:
        self.family = family
        self.params: dict[str, Param] = dict(params)

    @property
    def label(self) -> str:
        """``family(k=v, ...)``, unique within a suite."""
        inner = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.family}({inner})" if inner else self.family

    @property
    def spec(self) -> ControllerSpec | None:
        """The controller spec for methods that are a controller, else ``None``."""
        return None

    @abc.abstractmethod
    def run(self, q: PreparedQuestion, order: Sequence[int]) -> Outcome:
        """Run the method on one question, sample ``i`` being path ``order[i]``."""

    def run_bank(
        self, questions: Sequence[PreparedQuestion], orders: Sequence[Sequence[int]]
    ) -> list[Outcome]:
        """Run every question (``orders[i]`` is question ``i``'s ordering)."""
        if len(questions) != len(orders):
            raise InvalidInputError(f"{len(questions)} questions but {len(orders)} orderings")
        if self.needs_confidence:
            for q in questions:
                if not q.has_confidence:
                    raise InvalidInputError(
                        f"{self.label} needs token confidences; question {q.id} has a path "
                        "without them (record the bank with top logprobs)"
                    )
        return [self.run(q, order) for q, order in zip(questions, orders, strict=True)]

    def __repr__(self) -> str:
        return self.label


def _check_n(name: str, n: int, k: int) -> None:
    if n > k:
        raise InvalidInputError(f"{name} needs {n} samples but the ordering holds {k}")


class FixedN(Method):
    """Self-consistency with exactly ``n`` samples: majority vote, all tokens spent."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise InvalidInputError(f"fixed-N needs n >= 1, got {n!r}")
        super().__init__("fixed", {"n": n})
        self.n = n

    @property
    def spec(self) -> ControllerSpec:
        """``max_samples(n)`` in one round of ``n``."""
        return ControllerSpec.of(
            [("max_samples", {"n": self.n})], first_round=self.n, round_size=self.n
        )

    def run(self, q: PreparedQuestion, order: Sequence[int]) -> Outcome:
        _check_n(self.label, self.n, len(order))
        chosen = order[: self.n]
        answer = majority([q.answers[p] for p in chosen])
        tokens = sum(q.lengths[p] for p in chosen)
        return Outcome(answer, q.is_correct(answer), self.n, tokens, "max_samples")


class WeightedFixedN(Method):
    """``n`` samples, confidence-weighted vote (weights: lowest group confidence)."""

    needs_confidence = True

    def __init__(self, n: int) -> None:
        if n < 1:
            raise InvalidInputError(f"fixed-N needs n >= 1, got {n!r}")
        super().__init__("fixed-weighted", {"n": n})
        self.n = n

    def run(self, q: PreparedQuestion, order: Sequence[int]) -> Outcome:
        _check_n(self.label, self.n, len(order))
        chosen = order[: self.n]
        answer, _ = weighted_vote([q.answers[p] for p in chosen], [q.lowest[p] for p in chosen])
        tokens = sum(q.lengths[p] for p in chosen)
        return Outcome(answer, q.is_correct(answer), self.n, tokens, "max_samples")


class Oracle(Method):
    """Stop at the first ``n`` whose majority equals the majority of all samples.

    The final answer is the majority of all K (so accuracy equals fixed N=K);
    the tokens are the fewest a majority-vote stopping rule could spend to
    reach it on this ordering.
    """

    def __init__(self) -> None:
        super().__init__("oracle", {})

    def run(self, q: PreparedQuestion, order: Sequence[int]) -> Outcome:
        answers = [q.answers[p] for p in order]
        final = majority(answers)
        n = len(order)
        for i in range(1, len(order) + 1):
            if majority(answers[:i]) == final:
                n = i
                break
        tokens = sum(q.lengths[p] for p in order[:n])
        return Outcome(final, q.is_correct(final), n, tokens, "oracle")


class ControllerMethod(Method):
    """A :class:`CertaintyController`, replayed as the self-consistency core runs it.

    Args:
        family: The family's name.
        params: The swept parameters (for labels and calibration).
        spec: The controller; it must stop within K samples (compose with
            ``max_samples(K)``).
        weighted: Feed each sample's lowest group confidence to the state
            (``state.confidences``) and vote with the weights (see
            :func:`replay_controller`).
    """

    def __init__(
        self,
        family: str,
        params: Mapping[str, Param],
        spec: ControllerSpec,
        *,
        weighted: bool = False,
    ) -> None:
        super().__init__(family, params)
        self._spec = spec
        self.controller: CertaintyController = spec.build()
        self.weighted = weighted
        self.needs_confidence = weighted
        self._memo = CertaindexMemo()

    @property
    def spec(self) -> ControllerSpec:
        """The controller this method replays."""
        return self._spec

    def run(self, q: PreparedQuestion, order: Sequence[int]) -> Outcome:
        confidences = q.lowest if self.weighted else None
        return replay_controller(self.controller, q, order, self._memo, confidences=confidences)


class DeepConfOnline(Method):
    """DeepConf online (Fu et al. 2025, Algorithm 2), replayed.

    Per question: the first ``warmup`` samples run in full; the bar ``s`` is the
    ``percentile``-th percentile of their lowest group confidences (DeepConf-low
    keeps the top 10%: percentile 90; DeepConf-high keeps the top 90%:
    percentile 10). Later samples run one at a time; each is terminated as soon
    as a complete window of its tokens has mean confidence below ``s`` (its
    tokens up to there are charged, it does not vote). Before each new sample,
    the confidence-weighted consensus over the voting samples (warm-up ones
    included, weights = lowest group confidence) is checked: at ``>= tau`` the
    method stops; it also stops after K samples. The answer is the weighted
    vote. ``samples`` counts every started sample, terminated ones included.

    Args:
        percentile: 90 for DeepConf-low, 10 for DeepConf-high.
        tau: Consensus threshold (the paper uses 0.95).
        warmup: Warm-up samples (``N_init``; here 4).
    """

    needs_confidence = True

    def __init__(self, percentile: float, tau: float = 0.95, *, warmup: int = 4) -> None:
        if not 0.0 <= percentile <= 100.0:
            raise InvalidInputError(f"percentile must be in [0, 100], got {percentile!r}")
        if not 0.0 <= tau <= 1.0:
            raise InvalidInputError(f"tau must be in [0, 1], got {tau!r}")
        if warmup < 1:
            raise InvalidInputError(f"warmup must be >= 1, got {warmup!r}")
        name = {90.0: "deepconf-low", 10.0: "deepconf-high"}.get(float(percentile))
        super().__init__(name or f"deepconf-p{percentile:g}", {"tau": tau})
        self.percentile = float(percentile)
        self.tau = float(tau)
        self.warmup = warmup

    def bar(self, q: PreparedQuestion, warm: Sequence[int]) -> float:
        """The confidence bar from the warm-up paths."""
        return float(np.percentile([q.lowest[p] for p in warm], self.percentile))

    def run(self, q: PreparedQuestion, order: Sequence[int]) -> Outcome:
        k = len(order)
        warm = order[: min(self.warmup, k)]
        bar = self.bar(q, warm)
        answers = [q.answers[p] for p in warm]
        weights = [q.lowest[p] for p in warm]
        tokens = sum(q.lengths[p] for p in warm)
        started = len(warm)
        reason = "max_samples"
        while True:
            winner, share = weighted_vote(answers, weights)
            if winner is not None and share >= self.tau:
                reason = "certain"
                break
            if started >= k:
                break
            path = order[started]
            started += 1
            cut = q.cut_at(path, bar)
            if cut is None:
                tokens += q.lengths[path]
                answers.append(q.answers[path])
                weights.append(q.lowest[path])
            else:
                tokens += cut
        answer = weighted_vote(answers, weights)[0]
        return Outcome(answer, q.is_correct(answer), started, tokens, reason)
