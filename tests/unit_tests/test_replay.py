"""Replay of stopping rules on trace banks: exactness against the live core, determinism,
hand-worked baselines (fixed-N, oracle, DeepConf online)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np
import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from dynasor_agents import (
    CertaintyController,
    InvalidInputError,
    SelfConsistency,
    max_samples,
    max_tokens,
    threshold,
)
from dynasor_agents._stopping import (
    adaptive_consistency,
    early_stopping,
    hopeless,
    weighted_consensus,
)
from dynasor_bench.replay._core import CertaindexMemo, Outcome, replay_controller, replay_core
from dynasor_bench.replay._methods import DeepConfOnline, FixedN, Oracle, WeightedFixedN
from dynasor_bench.replay._prepare import (
    PreparedQuestion,
    orderings,
    prepare_bank,
    prepare_question,
)
from dynasor_bench.replay._report import run_replay
from dynasor_bench.replay._suite import default_suite

from .replay_fakes import path, question, random_bank
from .strategy_fakes import AsyncOnlyChat


def controllers(k: int) -> list[CertaintyController]:
    """A spread of controllers, all capped at ``k`` samples."""
    cap = max_samples(k)
    return [
        CertaintyController(threshold(0.8) | cap, first_round=5, round_size=k - 5),
        CertaintyController(threshold(0.6) | cap, first_round=5, round_size=1),
        CertaintyController(threshold(0.4) | cap, first_round=4, round_size=2),
        CertaintyController(threshold(0.9) | max_tokens(60) | cap, first_round=3, round_size=3),
        CertaintyController(threshold(0.99) | max_tokens(45) | cap, first_round=4, round_size=4),
        CertaintyController(
            threshold(0.7) | hopeless(0.3, after=4) | cap, first_round=3, round_size=1
        ),
        CertaintyController(adaptive_consistency(0.9) | cap, first_round=1, round_size=1),
        CertaintyController(adaptive_consistency(0.8) | cap, first_round=3, round_size=3),
        CertaintyController(early_stopping(3) | cap, first_round=3, round_size=3),
        CertaintyController(weighted_consensus(0.7) | cap, first_round=4, round_size=1),
    ]


# ------------------------------------------------------------- exactness against the core


@pytest.mark.parametrize("seed", range(12))
def test_lean_replay_equals_driving_the_real_core(seed: int) -> None:
    bank = prepare_bank(random_bank(seed, questions=3, k=8))
    memo = CertaindexMemo()
    for ctl, q in itertools.product(controllers(8), bank):
        for order in orderings(q.id, q.k, 3, seed=seed).tolist():
            assert replay_controller(ctl, q, order, memo) == replay_core(ctl, q, order), (
                ctl,
                q.id,
                order,
            )


@pytest.mark.parametrize("seed", range(6))
def test_weighted_replay_equals_the_core_scoring_each_sample(seed: int) -> None:
    bank = prepare_bank(random_bank(seed, questions=3, k=8))
    memo = CertaindexMemo()
    for ctl, q in itertools.product(controllers(8), bank):
        for order in orderings(q.id, q.k, 2, seed=seed).tolist():
            lean = replay_controller(ctl, q, order, memo, confidences=q.lowest)
            assert lean == replay_core(ctl, q, order, confidences=q.lowest), (ctl, q.id, order)


class BankChat(AsyncOnlyChat):
    """Serves paths in ``order``: call i answers path ``order[i]``, taking
    ``tokens * unit`` seconds and reporting ``tokens`` completion tokens."""

    answers: list[str | None]
    lengths: list[int]
    order: list[int]
    unit: float = 0.003
    _calls: int = PrivateAttr(default=0)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        p = self.order[self._calls]
        self._calls += 1
        await asyncio.sleep(self.lengths[p] * self.unit)
        answer = self.answers[p]
        text = f"so \\boxed{{{answer}}}" if answer is not None else "no idea"
        usage = {"input_tokens": 7, "output_tokens": self.lengths[p], "total_tokens": 0}
        message = AIMessage(content=text, usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])


async def test_replay_equals_the_live_self_consistency_strategy() -> None:
    k = 8
    cases = [
        CertaintyController(threshold(0.6) | max_samples(k), first_round=5, round_size=1),
        CertaintyController(threshold(0.4) | max_samples(k), first_round=4, round_size=4),
        CertaintyController(adaptive_consistency(0.9) | max_samples(k), first_round=3),
    ]
    runs = [
        (ctl, q, orderings(q.id, k, 1, seed=seed)[0].tolist())
        for seed in range(3)
        for q in prepare_bank(random_bank(100 + seed, questions=2, k=k, ties=False))
        for ctl in cases
    ]

    async def live(ctl: CertaintyController, q: PreparedQuestion, order: list[int]) -> Any:
        chat = BankChat(answers=list(q.answers), lengths=list(q.lengths), order=order)
        return await SelfConsistency(chat, controller=ctl).ainvoke("?")

    results = await asyncio.gather(*(live(*run) for run in runs))  # independent programs
    for (ctl, q, order), result in zip(runs, results, strict=True):
        replayed = replay_controller(ctl, q, order)
        got = (result.answer, result.samples, result.stop_reason.value)
        assert got == (replayed.answer, replayed.samples, replayed.reason), (ctl, q.id, order)
        assert result.completion_tokens <= replayed.tokens  # replay adds cancelled partials


def test_stragglers_are_charged_up_to_the_stopping_completion() -> None:
    # Round of 4: lengths 10, 20, 30 (same answer) and 50. After the 3rd, 3 of 4 agree
    # whatever the 4th says (Certaindex 0.59 >= 0.5): stop, the 4th is charged 30.
    q = prepare_question(
        question("h:1", [path("1", 10), path("1", 20), path("1", 30), path("2", 50)])
    )
    ctl = CertaintyController(threshold(0.5) | max_samples(4), first_round=4)
    expected = Outcome("1", True, 3, 10 + 20 + 30 + 30, "certain")
    assert replay_controller(ctl, q, [3, 2, 1, 0]) == expected
    assert replay_core(ctl, q, [3, 2, 1, 0]) == expected


def test_a_straggler_finishing_with_the_last_completion_votes() -> None:
    # Lengths 10, 20, 20: the third finishes together with the second, so it is
    # delivered on Cancel and counted, as the live driver does.
    q = prepare_question(
        question("h:2", [path("1", 10), path("1", 20), path("1", 20), path("1", 9)])
    )
    ctl = CertaintyController(threshold(0.4) | max_samples(4), first_round=3)
    assert replay_controller(ctl, q, [0, 1, 2, 3]) == Outcome("1", True, 3, 50, "certain")


def test_a_controller_asking_beyond_the_bank_is_an_error() -> None:
    q = prepare_question(question("h:3", [path("1", 5), path("2", 5)]))
    ctl = CertaintyController(threshold(1.0) | max_samples(10), first_round=2, round_size=2)
    with pytest.raises(InvalidInputError, match="max_samples\\(2\\)"):
        replay_controller(ctl, q, [0, 1])


# ---------------------------------------------------------------------------- baselines


def test_fixed_n_and_oracle_on_a_hand_worked_question() -> None:
    answers = ["2", "1", "2", "1", "1", None]
    q = prepare_question(question("h:4", [path(a, 10 * (i + 1)) for i, a in enumerate(answers)]))
    order = [0, 1, 2, 3, 4, 5]
    assert FixedN(1).run(q, order) == Outcome("2", False, 1, 10, "max_samples")
    assert FixedN(4).run(q, order) == Outcome("2", False, 4, 100, "max_samples")  # 2-2: first
    assert FixedN(6).run(q, order) == Outcome("1", True, 6, 210, "max_samples")
    # The majority of all six is "1"; the first prefix whose majority is "1" is n=5.
    assert Oracle().run(q, order) == Outcome("1", True, 5, 150, "oracle")
    assert Oracle().run(q, [1, 0, 2, 3, 4, 5]) == Outcome("1", True, 1, 20, "oracle")


def test_weighted_fixed_n_follows_the_confident_paths() -> None:
    q = prepare_question(
        question(
            "h:5", [path("2", 4, [1.0] * 4), path("1", 4, [5.0] * 4), path("2", 4, [1.0] * 4)]
        ),
        window=2,
    )
    assert FixedN(3).run(q, [0, 1, 2]).answer == "2"
    assert WeightedFixedN(3).run(q, [0, 1, 2]).answer == "1"


def test_deepconf_online_on_a_hand_worked_question() -> None:
    warm = [("1", 1.0), ("2", 2.0), ("2", 3.0), ("1", 4.0)]  # lowest group confidences
    paths = [path(a, 6, [c] * 6) for a, c in warm]
    # Groups of 2: [5, 3, 3, 3, 5]; the 2nd (tokens 2-3, mean 3 < bar 3.7) ends at token 3.
    paths.append(path("1", 6, [5.0, 5.0, 1.0, 5.0, 1.0, 9.0]))
    paths.append(path("2", 8, [10.0] * 8))
    paths.append(path("2", 7, [100.0] * 7))
    paths.append(path("1", 5, [50.0] * 5))
    q = prepare_question(question("h:6", paths, gold="2"), window=2)
    method = DeepConfOnline(90.0, 0.95)
    assert method.bar(q, [0, 1, 2, 3]) == pytest.approx(3.7)  # 90th percentile of 1, 2, 3, 4
    assert q.cut_at(4, 3.7) == 3 and q.cut_at(5, 3.7) is None
    # Warm-up: "1" 5.0 vs "2" 5.0 (share 0.5). Path 4 is cut at 3 tokens and does not
    # vote; path 5 brings "2" to 15 of 20 (0.75); path 6 to 115 of 120 (0.958 >= 0.95).
    outcome = method.run(q, [0, 1, 2, 3, 4, 5, 6, 7])
    assert outcome == Outcome("2", True, 7, 24 + 3 + 8 + 7, "certain")
    # DeepConf-high: bar at the 10th percentile (1.3); path 4 stays above it and votes
    # "1" (weight 3), so the share never reaches 0.95 (at best 115 of 123): all 8 run.
    high = DeepConfOnline(10.0, 0.95).run(q, [0, 1, 2, 3, 4, 5, 6, 7])
    assert high == Outcome("2", True, 8, 24 + 6 + 8 + 7 + 5, "max_samples")


# ---------------------------------------------------------------------------- determinism


def test_same_seed_same_report_and_another_seed_other_orderings() -> None:
    bank = random_bank(7, questions=4, k=8)
    suite = default_suite(8, mean_length=15.0)
    one = run_replay(bank, suite, orderings=5, seed=3)
    two = run_replay(bank, suite, orderings=5, seed=3, workers=2)
    for a, b in zip(one.runs, two.runs, strict=True):
        assert a.label == b.label
        assert np.array_equal(a.correct, b.correct) and np.array_equal(a.tokens, b.tokens)
        assert np.array_equal(a.samples, b.samples) and a.reasons == b.reasons
    other = run_replay(bank, suite, orderings=5, seed=4)
    assert not np.array_equal(orderings("x:1", 8, 5, seed=3), orderings("x:1", 8, 5, seed=4))
    assert any(
        not np.array_equal(a.tokens, b.tokens) for a, b in zip(one.runs, other.runs, strict=True)
    )
    # Fixed N=K does not depend on the ordering's order, only on the paths.
    full = one.find("fixed(n=8)").tokens
    assert (full == full[0]).all()
