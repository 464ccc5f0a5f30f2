"""The shared-budget allocator: its ranking rule and its budget guarantee."""

from __future__ import annotations

import random

import pytest

from dynasor_agents import GainCurve, InvalidInputError, by_gain, lowest_certainty
from dynasor_bench.replay._allocate import (
    AllocationRule,
    QuestionStatus,
    allocate,
    gain_observations,
    pick,
    priority,
    settled,
)
from dynasor_bench.replay._prepare import orderings, prepare_bank, prepare_question
from dynasor_bench.replay._suite import AllocatorMethod

from .replay_fakes import path, question, random_bank


def test_the_ranking_serves_detect_steps_then_the_least_certain_above_the_floor() -> None:
    rule = AllocationRule(detect=4, max_samples=16, floor=0.2, floor_after=8)
    statuses = [
        QuestionStatus(4, 0.9),
        QuestionStatus(5, 0.1),  # below the floor (not yet hopeless): served last
        QuestionStatus(6, 0.4),
        QuestionStatus(4, 0.4),  # ties on Certaindex: fewer samples first
    ]
    assert pick(statuses, rule) == 3
    assert pick([*statuses, QuestionStatus(2, 1.0)], rule) == 4  # still in its detect step
    assert pick([QuestionStatus(5, 0.1), QuestionStatus(16, 0.5)], rule) == 0
    assert pick([QuestionStatus(16, 0.5), QuestionStatus(8, 0.1)], rule) is None
    assert priority(QuestionStatus(5, 0.1), rule, 0) > priority(QuestionStatus(9, 0.9), rule, 1)
    assert settled(QuestionStatus(8, 0.1), rule) == "hopeless"
    assert settled(QuestionStatus(8, 0.9), AllocationRule(stop_at=0.8)) == "certain"


def test_bad_rules_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="detect"):
        AllocationRule(detect=5, max_samples=4)
    with pytest.raises(InvalidInputError, match="stop_at"):
        AllocationRule(stop_at=1.5)


@pytest.mark.parametrize("seed", range(25))
def test_the_allocator_never_exceeds_the_budget(seed: int) -> None:
    rng = random.Random(seed)
    k = 8
    bank = prepare_bank(random_bank(seed, questions=rng.randint(1, 6), k=k))
    orders = [orderings(q.id, k, 1, seed=seed)[0].tolist() for q in bank]
    total = sum(sum(q.lengths) for q in bank)
    budget = rng.randint(0, total + 20)
    rule = AllocationRule(
        detect=rng.randint(1, 4),
        max_samples=k,
        stop_at=rng.choice([None, 0.5, 0.9]),
        floor=rng.choice([0.0, 0.2, 0.4]),
        floor_after=rng.randint(1, k),
        ranking=rng.choice([lowest_certainty(), by_gain(GainCurve([(0.2, 0.0), (0.6, 0.1)]))]),
    )
    outcomes = allocate(bank, orders, budget, rule)
    assert sum(o.tokens for o in outcomes) <= budget
    assert all(0 <= o.samples <= k for o in outcomes)
    if budget >= total and rule.stop_at is None and rule.floor == 0.0:
        assert all(o.samples == k for o in outcomes)  # enough for everything: fixed N=K


def test_a_cut_sample_has_no_answer_and_ends_the_allocation() -> None:
    q = prepare_question(question("a:1", [path("1", 10), path("1", 10), path("1", 10)]))
    rule = AllocationRule(detect=1, max_samples=3, floor=0.0)
    [outcome] = allocate([q], [[0, 1, 2]], 25, rule)
    assert (outcome.samples, outcome.tokens, outcome.answer) == (3, 25, "1")  # last one cut
    [starved] = allocate([q], [[0, 1, 2]], 5, rule)
    assert (starved.samples, starved.tokens, starved.answer, starved.correct) == (1, 5, None, False)


def test_gain_observations_match_a_hand_worked_question() -> None:
    # Gold "1". Samples in order: 2, 1, 1, 3. Majorities: 2 (wrong), 2 (tie, first
    # seen wins: wrong), 1 (right), 1 (right). From n samples to 4, the gain per
    # further sample is (correct(4) - correct(n)) / (4 - n).
    q = prepare_question(question("h:1", [path(a, 10) for a in ("2", "1", "1", "3")]))
    obs = list(gain_observations([q], [[0, 1, 2, 3]], start=2, samples=4))
    assert [g for _, g in obs] == [0.5, 0.0]
    assert obs[0][0] == 0.0  # two different answers out of two: no agreement
    assert 0.0 < obs[1][0] < 1.0
    with pytest.raises(InvalidInputError, match="start"):
        list(gain_observations([q], [[0, 1, 2, 3]], start=4, samples=4))
    with pytest.raises(InvalidInputError, match="ordering"):
        list(gain_observations([q], [[0, 1]], start=1, samples=4))


@pytest.mark.parametrize("seed", range(10))
def test_cross_fitted_allocation_stays_in_budget_and_never_reads_its_own_labels(
    seed: int,
) -> None:
    rng = random.Random(seed)
    k = 8
    bank = random_bank(seed, questions=rng.randint(2, 7), k=k)
    prepared = prepare_bank(bank)
    orders = [orderings(q.id, k, 1, seed=seed)[0].tolist() for q in prepared]
    rule = AllocationRule(detect=2, max_samples=k, floor=0.1, floor_after=6)
    budget = rng.randint(20, 120)
    method = AllocatorMethod("alloc-gain", budget, rule, cross_fit=True)
    outcomes = method.run_bank(prepared, orders)
    assert len(outcomes) == len(prepared)
    halves = (range(0, len(prepared), 2), range(1, len(prepared), 2))
    for half in halves:  # each half is a batch with its share of the budget
        assert sum(outcomes[i].tokens for i in half) <= budget * len(half)
    # Relabel the even half: its own allocation must not change (its ranking was
    # fitted on the odd half), only whether its answers count as correct.
    relabelled = [
        question(t.id, t.paths, gold="3" if i % 2 == 0 else t.gold, source=t.source)
        for i, t in enumerate(bank)
    ]
    again = method.run_bank(prepare_bank(relabelled), orders)
    for i in halves[0]:
        assert (again[i].samples, again[i].tokens) == (outcomes[i].samples, outcomes[i].tokens)
