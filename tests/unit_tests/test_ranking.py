"""Rankings: the gain curve, and the same ranking objects ordering both allocators."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from dynasor_agents import (
    BatchAllocator,
    GainCurve,
    InvalidInputError,
    TokenPool,
    budget_curve,
    by_gain,
    lowest_certainty,
)
from dynasor_bench.replay._allocate import AllocationRule, QuestionStatus, pick

# A hump: hopeless (low) and settled (high) questions gain little, the middle most.
HUMP = GainCurve([(0.1, 0.0), (0.5, 0.05), (0.9, 0.0)])


def test_the_curve_interpolates_and_is_flat_beyond_its_ends() -> None:
    assert HUMP.gain_at(0.0) == 0.0 and HUMP.gain_at(1.0) == 0.0
    assert math.isclose(HUMP.gain_at(0.3), 0.025)
    assert math.isclose(HUMP.gain_at(0.7), 0.025)
    assert GainCurve([(0.4, -0.01)]).gain_at(0.9) == -0.01  # one corner: a constant


@pytest.mark.parametrize(
    ("points", "match"),
    [
        ([], "at least one"),
        ([(0.5, 0.1), (0.3, 0.0)], "unsorted"),
        ([(1.5, 0.1)], r"\[0, 1\]"),
        ([(math.nan, 0.1)], r"\[0, 1\]"),
        ([(0.5, math.inf)], "finite"),
        ([("a", 0.1)], "pairs"),
        ([0.5], "pairs"),
    ],
)
def test_bad_curves_are_refused(points: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        GainCurve(points)


def test_fit_takes_the_mean_of_each_bin() -> None:
    obs = [(0.02, 0.0), (0.08, 0.02), (0.55, 0.1), (0.45, 0.06), (1.0, -0.01)]
    curve = GainCurve.fit(obs, bins=10)
    assert curve.points == ((0.05, 0.01), (0.45, 0.06), (0.55, 0.1), (1.0, -0.01))
    with pytest.raises(InvalidInputError, match="at least one"):
        GainCurve.fit([])
    with pytest.raises(InvalidInputError, match="bins"):
        GainCurve.fit(obs, bins=0)
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        GainCurve.fit([(1.2, 0.0)])
    with pytest.raises(InvalidInputError, match="pairs"):
        GainCurve.fit([(0.1, 0.2, 0.3)])


def test_a_curve_survives_json() -> None:
    again = GainCurve.from_dict(json.loads(json.dumps(HUMP.to_dict())))
    assert again.points == HUMP.points
    with pytest.raises(InvalidInputError, match="points"):
        GainCurve.from_dict({"corners": []})


def test_the_two_rankings_disagree_on_hopeless_questions() -> None:
    hopeless, middle, settled = 0.05, 0.5, 0.95
    assert sorted([settled, middle, hopeless], key=lowest_certainty().key) == [
        hopeless,
        middle,
        settled,
    ]
    assert sorted([settled, hopeless, middle], key=by_gain(HUMP).key)[0] == middle
    with pytest.raises(InvalidInputError, match="GainCurve"):
        by_gain(budget_curve([(0.0, 10)]))  # type: ignore[arg-type]


def _second_asker_gets(ranking: Any) -> int:
    """``low`` (Certaindex 0.15) and ``mid`` (0.5) each want a 600-token round of a
    1000-token pool; ``low`` is between rounds, so it claims ahead if ranked ahead."""
    pool = TokenPool(1000, ranking=ranking)
    low, mid = pool.join("low"), pool.join("mid")
    low.certainty, low.ask, low.started = 0.15, 600, True
    return pool.grant(mid, 600, certainty=0.5)


def test_the_pool_serves_its_ranking_first() -> None:
    assert _second_asker_gets(None) == 400  # default: the least certain claims its round
    assert _second_asker_gets(lowest_certainty()) == 400
    assert _second_asker_gets(by_gain(HUMP)) == 600  # by gain: mid is ahead of low
    with pytest.raises(InvalidInputError, match="ranking"):
        TokenPool(100, ranking="gain")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="ranking"):
        BatchAllocator(100, ranking=HUMP)  # type: ignore[arg-type]


def test_the_replayed_allocator_ranks_with_the_same_objects() -> None:
    statuses = [QuestionStatus(8, 0.3), QuestionStatus(8, 0.5), QuestionStatus(8, 0.95)]
    assert pick(statuses, AllocationRule(floor=0.2)) == 0
    assert pick(statuses, AllocationRule(floor=0.2, ranking=by_gain(HUMP))) == 1
    with pytest.raises(InvalidInputError, match="ranking"):
        AllocationRule(ranking=HUMP)  # type: ignore[arg-type]
