"""The shared-budget allocator: its ranking rule and its budget guarantee."""

from __future__ import annotations

import random

import pytest

from dynasor_agents import InvalidInputError
from dynasor_agents.bench._allocate import (
    AllocationRule,
    QuestionStatus,
    allocate,
    pick,
    priority,
    settled,
)
from dynasor_agents.bench._replay import orderings, prepare_bank, prepare_question

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
