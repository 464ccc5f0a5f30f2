"""Stopping rules from the literature: Adaptive-Consistency, ESC, DeepConf consensus, hopeless."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynasor_agents import (
    CertaintyController,
    InvalidInputError,
    Policy,
    ProgramState,
    SelfConsistency,
    StopReason,
    adaptive_consistency,
    beta_stop_probability,
    early_stopping,
    hopeless,
    max_samples,
    threshold,
    weighted_consensus,
    weighted_vote,
)
from dynasor_agents.controller import Verdict, any_of

from .strategy_fakes import ScriptedChat


def answered(*answers: str | None, confidences: tuple[float, ...] = ()) -> ProgramState:
    return ProgramState(samples=len(answers), answers=answers, confidences=confidences)


# -- Adaptive-Consistency -------------------------------------------------------------


@pytest.mark.parametrize(
    ("v1", "v2", "expected"),
    [
        # P = sum_{j<a} C(n, j) / 2^n with a = v1 + 1, b = v2 + 1, n = a + b - 1.
        (1, 0, 0.75),  # a=2, n=2: (C(2,0) + C(2,1)) / 4 = (1 + 2) / 4
        (3, 0, 0.9375),  # a=4, n=4: (1 + 4 + 6 + 4) / 16 = 15/16 = 1 - 0.5^4
        (4, 0, 0.96875),  # a=5, n=5: (1 + 5 + 10 + 10 + 5) / 32 = 31/32 = 1 - 0.5^5
        (2, 1, 0.6875),  # a=3, b=2, n=4: (1 + 4 + 6) / 16 = 11/16
        (0, 0, 0.5),  # a=1, n=1: C(1,0) / 2: the uniform prior
        (1, 2, 0.3125),  # a=2, b=3, n=4: (1 + 4) / 16 = 5/16 = 1 - P(2, 1)
    ],
)
def test_beta_stop_probability_matches_hand_worked_values(
    v1: int, v2: int, expected: float
) -> None:
    assert beta_stop_probability(v1, v2) == expected


@given(st.integers(0, 300), st.integers(0, 300))
def test_beta_stop_probability_is_symmetric_and_a_probability(v1: int, v2: int) -> None:
    p = beta_stop_probability(v1, v2)
    assert 0.0 <= p <= 1.0  # 1 - 2**-54 rounds to 1.0
    assert (0.0 < p < 1.0) or abs(v1 - v2) > 50
    assert math.isclose(p + beta_stop_probability(v2, v1), 1.0)
    assert (p > 0.5) == (v1 > v2) and (p == 0.5) == (v1 == v2)


def test_beta_stop_probability_grows_with_the_lead() -> None:
    ps = [beta_stop_probability(v1, 2) for v1 in range(2, 12)]
    assert ps == sorted(ps) and len(set(ps)) == len(ps)


def test_adaptive_consistency_four_unanimous_stop_three_do_not() -> None:
    rule = adaptive_consistency(0.95)
    assert rule(answered("a", "a", "a")).stop is None  # 0.9375 < 0.95
    assert rule(answered("a", "a", "a", "a")).stop is StopReason.CERTAIN  # 0.96875


def test_adaptive_consistency_uses_the_top_two_counts_and_ignores_none() -> None:
    rule = adaptive_consistency(0.95)
    # v1=4, v2=0 once None is ignored: 31/32 >= 0.95.
    assert rule(answered("a", None, "a", None, "a", "a")).stop is StopReason.CERTAIN
    # v1=4, v2=1: a=5, b=2, n=6: sum_{j<5} C(6, j) / 64 = (64 - 6 - 1) / 64 = 57/64 < 0.95.
    assert beta_stop_probability(4, 1) == 57 / 64
    assert rule(answered("a", "b", "a", "a", "a")).stop is None
    # A third answer does not change (v1, v2) = (4, 1), hence 57/64 >= 0.85.
    assert adaptive_consistency(0.85)(answered("a", "b", "c", "a", "a", "a")).stop is not None
    assert adaptive_consistency(0.5)(answered(None, None, None)).stop is None  # no answers


def test_adaptive_consistency_waits_for_min_samples() -> None:
    rule = adaptive_consistency(0.7, min_samples=3)
    assert rule(answered("a", "a")).stop is None  # P(2, 0) = 7/8, but only 2 samples
    assert rule(answered("a", "a", "a")).stop is StopReason.CERTAIN
    # Samples still running (counted in state.samples) are not answers yet.
    assert rule(ProgramState(samples=5, answers=("a",))).stop is None


# -- Early-Stopping Self-Consistency --------------------------------------------------


def test_esc_window_of_identical_answers_stops() -> None:
    assert early_stopping(5)(answered(*"aaaaa")).stop is StopReason.CERTAIN


@pytest.mark.parametrize(
    "window", [("a", "a", "b", "a", "a"), ("a", "a", None, "a", "a"), (None,) * 5]
)
def test_esc_window_with_a_different_or_missing_answer_does_not_stop(
    window: tuple[str | None, ...],
) -> None:
    assert early_stopping(5)(answered(*window)).stop is None


def test_esc_judges_only_the_last_complete_window() -> None:
    rule = early_stopping(5)
    assert rule(answered(*"aaaa")).stop is None  # no complete window yet
    assert rule(answered(*"abcde", *"bbbbb")).stop is StopReason.CERTAIN  # window 1
    assert rule(answered(*"bbbbb", *"abcde")).stop is None  # window 0 is no longer judged
    assert rule(answered(*"aaaaa", *"ab")).stop is StopReason.CERTAIN  # window 1 incomplete
    assert rule(answered(*"bbbbb", *"abcde", *"bbbb")).stop is None
    assert rule(answered("a", *"bbbbb")).stop is None  # windows are aligned, not sliding


def test_esc_window_of_one_stops_on_any_answer() -> None:
    assert early_stopping(1)(answered("x")).stop is StopReason.CERTAIN
    assert early_stopping(1)(answered("x", None)).stop is None


# -- hopeless -------------------------------------------------------------------------


def test_hopeless_boundaries() -> None:
    rule = hopeless(0.2, after=8)
    assert rule(ProgramState(samples=8, certainty=0.19)).stop is StopReason.HOPELESS
    assert rule(ProgramState(samples=8, certainty=0.2)).stop is None  # strictly below
    assert rule(ProgramState(samples=7, certainty=0.0)).stop is None  # too early
    assert rule(ProgramState(samples=30, certainty=0.0)).stop is StopReason.HOPELESS
    assert rule(ProgramState()).stop is None
    assert StopReason.HOPELESS.value == "hopeless"


# -- DeepConf weighted consensus ------------------------------------------------------


def test_weighted_vote_without_confidences_is_the_answered_majority_share() -> None:
    assert weighted_vote(["a", "b", "a", None]) == ("a", 2 / 3)
    assert weighted_vote(["a", "b"]) == ("a", 0.5)  # tie: first appearance
    assert weighted_vote(["b", "a", "a", "b"]) == ("b", 0.5)
    assert weighted_vote([None, None]) == (None, 0.0)
    assert weighted_vote([]) == (None, 0.0)


def test_weighted_vote_weights_by_confidence() -> None:
    # a: 6 + 0 = 6; b: 1 + 1 = 2; the None's 9 is not an answered vote: 6 / 8 = 0.75.
    assert weighted_vote(["a", "b", "b", None, "a"], [6.0, 1.0, 1.0, 9.0, 0.0]) == ("a", 0.75)
    # Length mismatch: the confidences are ignored, everyone weighs 1.
    assert weighted_vote(["a", "b", "b"], [6.0, 1.0]) == ("b", 2 / 3)
    assert weighted_vote(["a", "b"], [0.0, 0.0]) == (None, 0.0)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_weighted_vote_rejects_bad_confidences(bad: float) -> None:
    with pytest.raises(InvalidInputError, match=r"confidences\[1\]"):
        weighted_vote(["a", "b"], [1.0, bad])
    assert weighted_vote(["a", None], [1.0, bad]) == ("a", 1.0)  # unused weight


def test_weighted_vote_rejects_a_single_string() -> None:
    with pytest.raises(InvalidInputError, match="single str"):
        weighted_vote("abc")


def test_weighted_consensus_with_and_without_confidences() -> None:
    rule = weighted_consensus(0.95)
    plain = answered(*"aaaaaaaaaaaaaaaaaaab")  # 19 / 20 = 0.95
    assert rule(plain).stop is StopReason.CERTAIN
    assert rule(answered(*"aaaaaaaaab")).stop is None  # 9 / 10
    # 9 * 1.0 against 0.25: 9 / 9.25 = 0.973 >= 0.95.
    weighted = answered(*"aaaaaaaaab", confidences=(1.0,) * 9 + (0.25,))
    assert rule(weighted).stop is StopReason.CERTAIN
    # The low-confidence majority loses its consensus: 2 / (2 + 8) = 0.2.
    assert rule(answered("a", "a", "b", confidences=(1.0, 1.0, 8.0))).stop is None
    # Misaligned confidences fall back to equal weights: 2 / 3.
    assert rule(answered("a", "a", "b", confidences=(9.0, 9.0))).stop is None


def test_weighted_consensus_waits_for_min_samples() -> None:
    assert weighted_consensus(0.9)(answered("a")).stop is None
    assert weighted_consensus(0.9)(answered("a", "a")).stop is StopReason.CERTAIN
    assert weighted_consensus(0.9, min_samples=3)(answered("a", "a")).stop is None
    assert weighted_consensus(0.5)(answered(None, None)).stop is None


# -- validation, repr and composition -------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: adaptive_consistency(1.5), "threshold .* got 1.5"),
        (lambda: adaptive_consistency(-0.1), "threshold .* got -0.1"),
        (lambda: adaptive_consistency(math.nan), "threshold .* got nan"),
        (lambda: adaptive_consistency(0.9, min_samples=0), "min_samples .* got 0"),
        (lambda: early_stopping(0), "window .* got 0"),
        (lambda: early_stopping(2.5), "window .* got 2.5"),  # type: ignore[arg-type]
        (lambda: early_stopping(True), "window .* got True"),
        (lambda: hopeless(2.0), "below .* got 2.0"),
        (lambda: hopeless("0.2"), "below .* got '0.2'"),  # type: ignore[arg-type]
        (lambda: hopeless(0.2, after=0), "after .* got 0"),
        (lambda: weighted_consensus(1.01), "threshold .* got 1.01"),
        (lambda: weighted_consensus(0.9, min_samples=-3), "min_samples .* got -3"),
        (lambda: beta_stop_probability(-1, 0), "v1 .* got -1"),
        (lambda: beta_stop_probability(1, 0.5), "v2 .* got 0.5"),  # type: ignore[arg-type]
    ],
)
def test_arguments_are_validated(make: Callable[[], object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        make()


def test_reprs() -> None:
    policy = adaptive_consistency() | early_stopping() | weighted_consensus(0.9) | hopeless()
    assert repr(policy) == (
        "adaptive_consistency(0.95, min_samples=2) | early_stopping(5)"
        " | weighted_consensus(0.9, min_samples=2) | hopeless(0.2, after=8)"
    )


def test_composition_with_max_samples() -> None:
    policy = adaptive_consistency(0.95) | max_samples(6)
    assert isinstance(policy, any_of) and len(policy.policies) == 2
    assert policy(answered("a", "b", "a")) == Verdict(batch_cap=3)
    assert policy(answered(*"aaaa")) == Verdict(stop=StopReason.CERTAIN, batch_cap=2)
    assert policy(answered(*"ababab")).stop is StopReason.MAX_SAMPLES
    ctl = CertaintyController(early_stopping(3) | max_samples(8), first_round=3, round_size=3)
    assert ctl.decide(answered(*"abc")).next_batch == 3
    assert ctl.decide(answered(*"abc", *"ddd")).reason is StopReason.CERTAIN
    assert ctl.decide(answered(*"abc", *"dde")).next_batch == 2  # capped at 8


def test_composition_order_decides_between_certain_and_hopeless() -> None:
    # 4 equal answers and 8 abstentions: the answered ones agree, Certaindex is ~0.19.
    state = ProgramState(samples=12, certainty=0.19, answers=("a",) * 4 + (None,) * 8)
    assert (adaptive_consistency() | hopeless())(state).stop is StopReason.CERTAIN
    assert (hopeless() | adaptive_consistency())(state).stop is StopReason.HOPELESS


# -- end to end with SelfConsistency --------------------------------------------------


def always(text: str, delay: float = 0.0) -> ScriptedChat:
    return ScriptedChat(script=lambda i: (text, delay))


async def test_adaptive_consistency_stops_self_consistency_after_four_samples() -> None:
    ctl = CertaintyController(
        adaptive_consistency(0.95) | max_samples(16), first_round=1, round_size=1
    )
    model = always("so \\boxed{18}")
    result = await SelfConsistency(model, controller=ctl).ainvoke("q")
    assert result.samples == 4 and result.rounds == 4 and len(model._calls) == 4
    assert result.stop_reason is StopReason.CERTAIN and result.answer == "18"


async def test_early_stopping_stops_self_consistency_after_one_window() -> None:
    ctl = CertaintyController(early_stopping(5) | max_samples(40), first_round=5, round_size=5)
    model = always("so \\boxed{18}")
    result = await SelfConsistency(model, controller=ctl).ainvoke("q")
    assert result.samples == 5 and result.rounds == 1 and len(model._calls) == 5
    assert result.stop_reason is StopReason.CERTAIN


async def test_early_stopping_runs_on_while_windows_disagree() -> None:
    # Window 0 holds a "19"; window 1 is unanimous.
    model = ScriptedChat(script=lambda i: ("\\boxed{19}" if i == 2 else "\\boxed{18}", 0.0))
    ctl = CertaintyController(early_stopping(5) | max_samples(40), first_round=5, round_size=5)
    result = await SelfConsistency(model, controller=ctl).ainvoke("q")
    assert result.samples == 10 and result.rounds == 2
    assert result.stop_reason is StopReason.CERTAIN and result.votes == {"18": 9, "19": 1}


async def test_answer_rules_stop_mid_round_on_the_completed_samples() -> None:
    # 4 fast agreeing samples and 6 slow ones in one round: 4 answers reach 31/32.
    model = ScriptedChat(script=lambda i: ("7", 0.0) if i < 4 else ("8", 30.0))
    ctl = CertaintyController(
        adaptive_consistency(0.95) | max_samples(10), first_round=10, round_size=10
    )
    result = await asyncio.wait_for(SelfConsistency(model, controller=ctl).ainvoke("q"), 5)
    assert result.stop_reason is StopReason.CERTAIN
    assert result.samples == 4 and model._cancelled == 6


async def test_early_stopping_mid_round_when_the_round_spans_windows() -> None:
    model = ScriptedChat(script=lambda i: ("7", 0.0) if i < 5 else ("8", 30.0))
    ctl = CertaintyController(early_stopping(5) | max_samples(8), first_round=8, round_size=8)
    result = await asyncio.wait_for(SelfConsistency(model, controller=ctl).ainvoke("q"), 5)
    assert result.stop_reason is StopReason.CERTAIN
    assert result.samples == 5 and model._cancelled == 3


class Spy(Policy):
    """Records every state it judges; never stops."""

    def __init__(self) -> None:
        self.states: list[ProgramState] = []

    def __call__(self, state: ProgramState) -> Verdict:
        self.states.append(state)
        return Verdict()


async def test_self_consistency_reports_normalized_answers_in_completion_order() -> None:
    texts = ["\\boxed{18}", "I do not know", "It costs $18.", "#### 20"]
    model = ScriptedChat(script=lambda i: (texts[i], 0.0))
    spy = Spy()
    ctl = CertaintyController(spy | max_samples(4), first_round=2, round_size=2)
    await SelfConsistency(model, controller=ctl).ainvoke("q")
    final = ("18", None, "18", "20")  # "I do not know" has no answer
    assert spy.states[-1].answers == final
    assert all(s.answers == final[: len(s.answers)] for s in spy.states)  # prefixes
    # The mid-round checks count pending samples but list only the completed answers.
    assert ProgramState(samples=2, certainty=0.0, answers=("18",)) in [
        ProgramState(samples=s.samples, certainty=s.certainty, answers=s.answers)
        for s in spy.states
    ]
    assert all(s.confidences == () for s in spy.states)


def test_threshold_is_unaffected_by_answers() -> None:
    state = ProgramState(samples=4, certainty=0.5, answers=("a",) * 4)
    assert threshold(0.8)(state).stop is None
