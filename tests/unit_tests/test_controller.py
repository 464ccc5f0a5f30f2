"""The certainty controller and its composable policies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynasor_agents import (
    CertaintyController,
    InvalidInputError,
    ProgramState,
    StopReason,
    max_samples,
    max_tokens,
    threshold,
)
from dynasor_agents.controller import Verdict, any_of


def test_first_round_then_round_size() -> None:
    ctl = CertaintyController(max_samples(100), first_round=5, round_size=3)
    assert ctl.decide(ProgramState()).next_batch == 5
    assert ctl.decide(ProgramState(samples=5)).next_batch == 3


def test_threshold_stops_only_at_or_above_value_and_after_min_samples() -> None:
    policy = threshold(0.7, min_samples=3)
    assert policy(ProgramState(samples=5, certainty=0.7)).stop is StopReason.CERTAIN
    assert policy(ProgramState(samples=5, certainty=0.69)).stop is None
    assert policy(ProgramState(samples=2, certainty=1.0)).stop is None


def test_composition_first_stop_wins_and_tightest_caps_apply() -> None:
    policy = threshold(0.9) | max_samples(10) | max_tokens(500)
    assert isinstance(policy, any_of) and len(policy.policies) == 3  # flattened
    verdict = policy(ProgramState(samples=8, certainty=0.5, completion_tokens=100))
    assert verdict == Verdict(stop=None, batch_cap=2, budget=400)
    both = policy(ProgramState(samples=10, certainty=0.95))
    assert both.stop is StopReason.CERTAIN  # order of composition decides the reason
    assert repr(policy) == "threshold(0.9) | max_samples(10) | max_tokens(500)"


def test_max_tokens_stops_with_zero_budget() -> None:
    ctl = CertaintyController(max_tokens(100))
    decision = ctl.decide(ProgramState(samples=3, completion_tokens=120))
    assert decision.stop and decision.reason is StopReason.MAX_TOKENS and decision.budget == 0


def test_batch_is_capped_by_remaining_samples() -> None:
    ctl = CertaintyController(max_samples(7), first_round=5, round_size=5)
    assert ctl.decide(ProgramState(samples=5)).next_batch == 2
    assert ctl.decide(ProgramState(samples=7)).reason is StopReason.MAX_SAMPLES


@pytest.mark.parametrize(
    "make",
    [
        lambda: threshold(-0.1),
        lambda: threshold(1.01),
        lambda: threshold(0.5, min_samples=0),
        lambda: max_samples(0),
        lambda: max_tokens(0),
        lambda: CertaintyController(first_round=0),
        lambda: CertaintyController(round_size=-1),
        lambda: CertaintyController(policy="threshold"),  # type: ignore[arg-type]
        lambda: any_of(threshold(0.5), 3),  # type: ignore[arg-type]
    ],
)
def test_invalid_configuration_names_the_problem(make: object) -> None:
    with pytest.raises(InvalidInputError) as raised:
        make()  # type: ignore[operator]
    assert isinstance(raised.value, ValueError)
    assert "got" in str(raised.value)


@given(
    samples=st.integers(0, 200),
    certainty=st.floats(0, 1),
    tokens=st.integers(0, 10_000),
    cap=st.integers(1, 64),
)
def test_decisions_never_exceed_caps(samples: int, certainty: float, tokens: int, cap: int) -> None:
    ctl = CertaintyController(threshold(0.8) | max_samples(cap) | max_tokens(5000))
    d = ctl.decide(ProgramState(samples=samples, certainty=certainty, completion_tokens=tokens))
    if d.stop:
        assert d.next_batch == 0 and d.reason is not None
    else:
        assert 1 <= d.next_batch <= cap - samples
        assert d.budget is not None and 0 < d.budget <= 5000
