"""Batch mode: a shared token pool, allocation policies and the batch runner, with fake models."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda
from pydantic import PrivateAttr

from dynasor_agents import (
    BatchAllocator,
    BatchReport,
    BudgetExhaustedError,
    CertaintyController,
    InvalidInputError,
    ProgramState,
    SelfConsistency,
    SelfConsistencyResult,
    StopReason,
    TokenPool,
    budget_curve,
    max_samples,
    max_tokens,
    pool_share,
    threshold,
)
from dynasor_agents._progress import Progress
from dynasor_agents.strategies._best_of_n import BestOfN

from .strategy_fakes import AsyncOnlyChat

Script = Callable[[str, int], tuple[str | None, int]]
"""``(question, k)`` -> the k-th sample's answer for that question (``None``: none) and
its full length in completion tokens."""


class LengthChat(AsyncOnlyChat):
    """A chat model that answers per question and honours ``max_tokens`` as vLLM does.

    A sample longer than its ``max_tokens`` is cut there: it reports ``max_tokens``
    completion tokens and has no answer. Per-question call counters make the answers
    independent of how the questions' requests interleave.
    """

    script: Script
    delay: float = 0.0
    _counts: dict[str, int] = PrivateAttr(default_factory=dict)
    _caps: list[tuple[str, int | None]] = PrivateAttr(default_factory=list)
    _active: int = PrivateAttr(default=0)
    _peak: int = PrivateAttr(default=0)
    _cancelled: int = PrivateAttr(default=0)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        question = str(messages[-1].content)
        k = self._counts.get(question, 0)
        self._counts[question] = k + 1
        cap: int | None = kwargs.get("max_tokens")
        self._caps.append((question, cap))
        answer, length = self.script(question, k)
        self._active += 1
        self._peak = max(self._peak, self._active)
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self._cancelled += 1
            raise
        finally:
            self._active -= 1
        cut = cap is not None and length > cap
        used = min(length, cap) if cap is not None else length
        text = "still thinking" if cut or answer is None else f"so \\boxed{{{answer}}}"
        message = AIMessage(
            content=text,
            usage_metadata={"input_tokens": 10, "output_tokens": used, "total_tokens": 10 + used},
            response_metadata={"finish_reason": "length" if cut else "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def easy_or_hard(hard: set[str], length: int = 50) -> Script:
    """Easy questions always answer ``7``; hard ones never repeat an answer."""

    def script(question: str, k: int) -> tuple[str | None, int]:
        return (f"{question}-{k}" if question in hard else "7"), length

    return script


def controller(*, t: float = 0.8, cap: int = 40, first: int = 4) -> CertaintyController:
    return CertaintyController(threshold(t) | max_samples(cap), first_round=first, round_size=first)


def quiet(**kwargs: Any) -> BatchAllocator:
    return BatchAllocator(progress=False, **kwargs)


# -- budget_curve -------------------------------------------------------------------------


def test_budget_curve_interpolates_and_is_flat_beyond_its_ends() -> None:
    curve = budget_curve([(0.2, 1000), (0.6, 200)])
    assert [curve.budget_at(c) for c in (0.0, 0.2, 0.4, 0.6, 1.0)] == [1000, 1000, 600, 200, 200]
    one = budget_curve([(0.5, 300)])
    assert one.budget_at(0.0) == one.budget_at(1.0) == 300


def test_budget_curve_verdicts() -> None:
    curve = budget_curve([(0.0, 2000), (0.5, 1200), (0.9, 0)])
    assert curve(ProgramState()).budget == 2000  # no sample yet: Certaindex 0
    assert curve(ProgramState(samples=4, certainty=0.25)).budget == 1600
    stopped = curve(ProgramState(samples=4, certainty=0.9))
    assert (stopped.stop, stopped.budget) == (StopReason.MAX_TOKENS, 0)
    # A zero budget at Certaindex 0 does not stop a program before its first sample.
    assert budget_curve([(0.0, 0), (1.0, 500)])(ProgramState()).stop is None
    # It composes like any policy: the tighter budget wins.
    both = (curve | max_tokens(500))(ProgramState(samples=4, certainty=0.25))
    assert both.budget == 500


@pytest.mark.parametrize(
    ("points", "match"),
    [
        ([], "at least one point"),
        ([(0.5, 100), (0.2, 50)], "unsorted"),
        ([(0.5, 100), (0.5, 50)], "unsorted"),
        ([(1.5, 100)], r"in \[0, 1\]"),
        ([(0.5, -1)], ">= 0"),
        ([(0.5, float("inf"))], ">= 0"),
        ([(0.5,)], "pairs"),
        ("abc", "pairs"),
    ],
)
def test_budget_curve_rejects_bad_points(points: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        budget_curve(points)


# -- the pool's ledger -------------------------------------------------------------------


def test_requests_reserve_before_and_settle_after() -> None:
    pool = TokenPool(300)
    member = pool.join("q")
    cap, held = member.open_call(200)
    assert (cap, held, pool.reserved, pool.free) == (200, 200, 200, 100)
    with pytest.raises(BudgetExhaustedError, match="cannot cover"):
        member.open_call(200)  # 100 free: not enough for another 200
    member.close_call(held, used=150)
    assert (pool.spent, pool.reserved, pool.free, pool.peak) == (150, 0, 150, 200)
    cap, held = member.open_call(None)  # no cap of its own: what is left
    assert cap == 150
    member.close_call(held, used=150)
    assert pool.free == 0 and pool.overrun == 0
    with pytest.raises(BudgetExhaustedError):
        member.open_call(None)


def test_a_member_limit_caps_it_within_an_unbounded_pool() -> None:
    pool = TokenPool(None)
    capped, free = pool.join("capped", limit=100), pool.join("free")
    assert capped.open_call(80) == (80, 80)
    with pytest.raises(BudgetExhaustedError):
        capped.open_call(80)
    assert free.open_call(None) == (None, 0)  # nothing to enforce
    assert pool.free is None


def test_overruns_are_charged_and_counted() -> None:
    pool = TokenPool(100)
    member = pool.join()
    _, held = member.open_call(50)
    member.close_call(held, used=70)  # a model that ignored max_tokens
    assert (pool.spent, pool.overrun) == (70, 20)


def test_bad_pool_arguments_are_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="total"):
        TokenPool(0)
    with pytest.raises(InvalidInputError, match="limit"):
        TokenPool(10).join(limit=-1)
    with pytest.raises(InvalidInputError, match="PoolMember"):
        pool_share("q")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="need"):
        TokenPool(10).grant(TokenPool(10).join(), -1, certainty=0.0)


# -- pool_share: sizing rounds, priority ------------------------------------------------


def test_rounds_fit_the_grant_and_a_member_that_cannot_get_a_sample_stops() -> None:
    pool = TokenPool(1000)
    member = pool.join("q")
    ctl = CertaintyController(
        pool_share(member, threshold(0.9), first_round=4, sample_tokens=300), first_round=4
    )
    first = ctl.decide(ProgramState())
    assert first.next_batch == 3 and member.voucher == 900 and member.limited
    for _ in range(3):
        member.close_call(*member.open_call(300)[1:], used=300)
    assert pool.free == 100
    last = ctl.decide(ProgramState(samples=3, certainty=0.3, completion_tokens=900))
    assert (last.stop, last.reason) == (True, StopReason.MAX_TOKENS)
    assert member.capped and member.ask == 0 and pool.reserved == 0


def test_checks_within_a_round_pass_the_inner_verdict_through() -> None:
    pool = TokenPool(1000)
    member = pool.join("q")
    share = pool_share(member, max_samples(10), first_round=2, sample_tokens=100)
    assert share(ProgramState()).batch_cap == 2
    member.open_call(100)
    member.open_call(100)
    mid = share(ProgramState(samples=1, certainty=0.4))
    assert mid.batch_cap == 9 and member.certainty == 0.4  # max_samples' cap, no new grant
    assert pool.reserved == 200


def test_an_inner_stop_withdraws_the_claim() -> None:
    pool = TokenPool(1000)
    member = pool.join("q", ask=500)
    verdict = pool_share(member, threshold(0.5), sample_tokens=100)(
        ProgramState(samples=4, certainty=0.9)
    )
    assert verdict.stop is StopReason.CERTAIN and member.ask == 0 and pool.reserved == 0


def test_the_inner_budget_caps_the_round_as_a_whole() -> None:
    pool = TokenPool(None)
    member = pool.join("q")
    share = pool_share(member, budget_curve([(0.0, 250)]), first_round=4, sample_tokens=100)
    verdict = share(ProgramState())
    assert verdict.batch_cap == 2 and member.per_sample == 100  # 250 covers 2 samples of 100


def _after_first_round(order: list[str]) -> dict[str, Any]:
    """Two members share 1000 tokens; after a first round of 4 x 100 each, ``sure`` is
    at Certaindex 0.7 and ``unsure`` at 0.2; they ask for a second round in ``order``."""
    pool = TokenPool(1000)
    members = {name: pool.join(name) for name in ("sure", "unsure")}
    shares = {
        name: pool_share(m, max_samples(40), first_round=4, sample_tokens=100)
        for name, m in members.items()
    }
    certainty = {"sure": 0.7, "unsure": 0.2}
    for name in members:
        assert shares[name](ProgramState()).batch_cap == 4
    for name, member in members.items():
        calls = [member.open_call(100) for _ in range(4)]
        shares[name](ProgramState(samples=1, certainty=certainty[name]))  # a check mid-round
        for _, held in calls:
            member.close_call(held, used=100)
    assert pool.free == 200
    state = {
        n: ProgramState(samples=4, certainty=c, completion_tokens=400) for n, c in certainty.items()
    }
    return {name: shares[name](state[name]) for name in order}


@pytest.mark.parametrize("order", [["sure", "unsure"], ["unsure", "sure"]])
def test_when_scarce_the_lowest_certaindex_is_served_first(order: list[str]) -> None:
    verdicts = _after_first_round(order)
    assert verdicts["unsure"].stop is None and verdicts["unsure"].batch_cap == 2
    assert verdicts["sure"].stop is StopReason.MAX_TOKENS


def test_ties_go_to_the_member_that_joined_first_and_plenty_serves_everyone() -> None:
    pool = TokenPool(500)
    a, b = pool.join("a", ask=300), pool.join("b", ask=300)
    assert pool.grant(b, 300, certainty=0.0) == 200  # a (joined first) claims its 300
    assert pool.grant(a, 300, certainty=0.0) == 300
    plenty = TokenPool(10_000)
    plenty.join("c", ask=300)
    d = plenty.join("d", ask=300)
    assert plenty.grant(d, 300, certainty=0.9) == 300 and not d.limited


# -- the batch runner -------------------------------------------------------------------


def random_script(seed: int) -> Script:
    """Per question a random answer distribution (some settle, some never) and random
    completion lengths, some longer than the per-sample cap."""

    def script(question: str, k: int) -> tuple[str | None, int]:
        shape = random.Random(f"{seed}:{question}")
        weights = [shape.random() ** 3 for _ in range(shape.randint(1, 6))]
        draw = random.Random(f"{seed}:{question}:{k}")
        answer = draw.choices(range(len(weights)), weights)[0]
        return (None if answer == 5 else str(answer)), draw.randint(20, 160)

    return script


def run(
    strategy: SelfConsistency, questions: list[str], allocator: BatchAllocator, **kwargs: Any
) -> Any:
    return asyncio.run(allocator.arun(strategy, questions, **kwargs))


@pytest.mark.parametrize("seed", range(16))
def test_the_batch_never_exceeds_its_budget(seed: int) -> None:
    rng = random.Random(seed)
    questions = [f"q{seed}-{i}" for i in range(rng.randint(6, 14))]
    limit = rng.choice([None, 3])
    ctl = controller(t=rng.choice([0.6, 0.8]), cap=16, first=rng.choice([2, 4]))

    def strategy() -> SelfConsistency:
        model = LengthChat(script=random_script(seed))
        return SelfConsistency(model, controller=ctl, max_tokens=120)

    base_results, base = run(strategy(), questions, quiet(max_concurrency=limit))
    reserved_need = sum(r.samples for r in base_results) * 120  # what the samples reserve
    assert base.budget is None and not any(row.pool_limited for row in base.rows)

    one_each = len(questions) * 120
    totals = (rng.randint(base.spent // 5, base.spent), base.spent, one_each, 3 * reserved_need)
    for total in totals:
        sc = strategy()
        allocator = quiet(total_tokens=total, max_concurrency=limit)
        results, report = run(sc, questions, allocator, return_exceptions=True)
        # Never over budget, at any moment, and every token accounted for.
        assert report.spent <= total and report.peak <= total and report.overrun == 0
        assert report.spent == sum(row.completion_tokens for row in report.rows)
        answered = [r for r in results if isinstance(r, SelfConsistencyResult)]
        assert sum(r.completion_tokens for r in answered) == report.spent
        assert all(cap == 120 for _, cap in sc.model._caps)  # type: ignore[attr-defined]
        # A question fails only when the budget cannot give every question a sample.
        failed = [r for r in results if not isinstance(r, SelfConsistencyResult)]
        assert all(isinstance(r, BudgetExhaustedError) for r in failed)
        assert not failed or total < one_each
        # The pool holds questions back only when the budget is short.
        limited = any(row.pool_limited for row in report.rows)
        if total < base.spent:
            assert limited  # unconstrained, the batch spends more than this
        if total >= 3 * reserved_need:
            assert not limited
        if not limited:  # a pool that never held back changes nothing
            assert [(r.answer, r.samples) for r in results] == [
                (r.answer, r.samples) for r in base_results
            ]
        else:  # ... and when it did, little is left
            assert report.left is not None and report.left < len(questions) * 4 * 120


def test_settled_questions_leave_their_tokens_to_the_uncertain_ones() -> None:
    questions = [f"q{i}" for i in range(10)]
    hard = {"q3", "q7"}
    total = 4000  # a fair share of 400 tokens = 8 samples of 50 per question

    def make() -> SelfConsistency:
        return SelfConsistency(
            LengthChat(script=easy_or_hard(hard)), controller=controller(), max_tokens=50
        )

    pooled, report = run(make(), questions, quiet(total_tokens=total))
    fair, _ = run(make(), questions, quiet(per_query_tokens=total // len(questions)))

    assert report.spent <= total and report.settled == 8
    assert all(
        r.samples == 4 and r.stop_reason is StopReason.CERTAIN for r in pooled if r.answer == "7"
    )
    for i in (3, 7):
        assert fair[i].samples == 8
        assert pooled[i].samples > 8  # the easy questions' leftovers went to it
    assert report.spent > total - 2 * 4 * 50  # little is left unspent


def test_hopeless_questions_stop_and_are_counted() -> None:
    import dynasor_agents

    hopeless = getattr(dynasor_agents, "hopeless", None)
    if hopeless is None:  # pragma: no cover - the hopeless rule ships separately
        pytest.skip("no hopeless policy")
    questions = [f"q{i}" for i in range(6)]
    sc = SelfConsistency(
        LengthChat(script=easy_or_hard({"q1", "q4"})), controller=controller(), max_tokens=50
    )
    results, report = run(sc, questions, quiet(total_tokens=10_000, policy=hopeless(0.2, after=8)))
    assert [r.stop_reason for r in results] == [
        StopReason.HOPELESS if i in (1, 4) else StopReason.CERTAIN for i in range(6)
    ]
    assert (report.settled, report.hopeless, report.capped) == (4, 2, 0)
    assert report.spent == (4 * 4 + 2 * 8) * 50


def test_per_query_caps_bind_every_question() -> None:
    questions = ["a", "b", "c"]
    sc = SelfConsistency(
        LengthChat(script=lambda q, k: (str(k), 80)), controller=controller(), max_tokens=100
    )
    results, report = run(sc, questions, quiet(per_query_tokens=250))
    assert all(row.completion_tokens <= 250 for row in report.rows)
    assert all(r.completion_tokens <= 250 for r in results)
    assert all(r.stop_reason is StopReason.MAX_TOKENS for r in results)


def test_a_budget_curve_sizes_the_rounds_of_a_batch() -> None:
    model = LengthChat(script=lambda q, k: (str(k), 30))
    sc = SelfConsistency(model, controller=controller(cap=3), max_tokens=100)
    results, _ = run(sc, ["a", "b"], quiet(policy=budget_curve([(0.0, 250)])))
    # 2 samples of 100 fit a round budget of 250, then max_samples leaves 1.
    assert [(r.samples, r.rounds) for r in results] == [(3, 2), (3, 2)]
    alone, _ = run(sc, ["a", "b"], quiet())
    assert [(r.samples, r.rounds) for r in alone] == [(3, 1), (3, 1)]


async def test_abatch_without_an_allocator_is_langchains() -> None:
    model = LengthChat(script=lambda q, k: (q, 10))
    sc = SelfConsistency(model, controller=controller(first=3))
    results = await sc.abatch(["1", "2", "3"], config={"max_concurrency": 1})
    assert [r.answer for r in results] == ["1", "2", "3"]
    assert len({r.program_id for r in results}) == 3
    assert model._peak == 3  # one program at a time
    alone = [await sc.ainvoke(q) for q in ("1", "2", "3")]
    assert [(r.answer, r.samples) for r in results] == [(r.answer, r.samples) for r in alone]


def test_results_come_in_input_order_and_the_sync_batch_keeps_a_report() -> None:
    questions = [str(i) for i in range(6)]

    def script(question: str, k: int) -> tuple[str | None, int]:
        return question, 10

    class Slower(LengthChat):
        async def _agenerate(
            self, messages: list[BaseMessage], *args: Any, **kwargs: Any
        ) -> ChatResult:
            await asyncio.sleep(0.005 * (6 - int(str(messages[-1].content))))  # later ones first
            return await super()._agenerate(messages, *args, **kwargs)

    allocator = quiet(total_tokens=10_000)
    sc = SelfConsistency(Slower(script=script), controller=controller(), allocator=allocator)
    results = sc.batch(questions)
    assert [r.answer for r in results] == questions
    assert len({r.program_id for r in results}) == 6
    report = allocator.last_report
    assert isinstance(report, BatchReport)
    assert (report.questions, report.settled, report.spent, report.left) == (6, 6, 240, 9760)
    assert [row.index for row in report.rows] == list(range(6))
    assert [row.program_id for row in report.rows] == [r.program_id for r in results]


def test_the_progress_line_shows_questions_tokens_and_outcomes() -> None:
    out = io.StringIO()
    progress = Progress(0, "batch", stream=out, clock=lambda: 0.0, every=0.0)
    sc = SelfConsistency(
        LengthChat(script=easy_or_hard({"h"}, length=10)),
        controller=controller(cap=8),
        max_tokens=20,
    )
    sc.batch(["a", "h", "b"], allocator=BatchAllocator(total_tokens=1000, progress=progress))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[-1].startswith("[batch] 3/3 100%")
    assert "tokens=160" in lines[-1] and "settled=2 hopeless=0 capped=1" in lines[-1]


def test_the_default_progress_line_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    sc = SelfConsistency(LengthChat(script=lambda q, k: ("1", 5)), controller=controller())
    sc.batch(["a", "b"], allocator=BatchAllocator(total_tokens=500))
    err = capsys.readouterr().err
    assert "[batch budget=500] 2/2" in err and "settled=2" in err


async def test_a_failure_is_returned_in_place_and_the_others_are_kept() -> None:
    def script(question: str, k: int) -> tuple[str | None, int]:
        if question == "boom":
            raise RuntimeError("model exploded")
        return question, 10

    sc = SelfConsistency(LengthChat(script=script), controller=controller())
    allocator = quiet(total_tokens=5000)
    results = await sc.abatch(["1", "boom", "3"], allocator=allocator, return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    assert [r.answer for r in (results[0], results[2])] == ["1", "3"]  # type: ignore[union-attr]
    report = allocator.last_report
    assert report is not None and report.failed == 1 and report.settled == 2
    assert report.rows[1].error == "model exploded"


async def test_a_failure_without_return_exceptions_raises_and_cancels_the_rest() -> None:
    def script(question: str, k: int) -> tuple[str | None, int]:
        if question == "boom":
            raise RuntimeError("model exploded")
        return question, 10

    model = LengthChat(script=script, delay=30.0)
    sc = SelfConsistency(model, controller=controller())
    with pytest.raises(RuntimeError, match="model exploded"):
        await asyncio.wait_for(sc.abatch(["1", "boom", "3"], allocator=quiet(total_tokens=5000)), 5)
    assert model._cancelled == 8 and model._active == 0


async def test_a_question_the_pool_cannot_start_fails_with_budget_exhausted() -> None:
    sc = SelfConsistency(
        LengthChat(script=lambda q, k: ("1", 30)), controller=controller(), max_tokens=100
    )
    allocator = quiet(total_tokens=100)
    results = await sc.abatch(["a", "b"], allocator=allocator, return_exceptions=True)
    assert isinstance(results[0], SelfConsistencyResult) and results[0].samples == 1
    assert results[0].stop_reason is StopReason.MAX_TOKENS
    assert isinstance(results[1], BudgetExhaustedError) and "before question 1" in str(results[1])
    report = allocator.last_report
    assert report is not None
    assert (report.spent, report.capped, report.pool_capped, report.failed) == (30, 1, 1, 1)


async def test_config_callbacks_reach_every_question() -> None:
    class Names(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.names: list[str] = []

        async def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
            self.names.append(kwargs.get("name") or "")

    handler = Names()
    sc = SelfConsistency(LengthChat(script=lambda q, k: ("1", 5)), controller=controller())
    await sc.abatch(["a", "b"], config={"callbacks": [handler]}, allocator=quiet())
    assert handler.names.count("SelfConsistency") == 2


def test_max_concurrency_runs_questions_one_at_a_time() -> None:
    model = LengthChat(script=lambda q, k: ("1", 5), delay=0.001)
    sc = SelfConsistency(model, controller=controller(first=3))
    sc.batch(["a", "b", "c"], allocator=quiet(max_concurrency=1))
    assert model._peak == 3
    model2 = LengthChat(script=lambda q, k: ("1", 5), delay=0.001)
    sc2 = SelfConsistency(model2, controller=controller(first=3))
    sc2.batch(["a", "b", "c"], config={"max_concurrency": 2}, allocator=quiet(max_concurrency=5))
    assert model2._peak == 6


async def test_any_strategy_with_a_controller_shares_the_pool() -> None:
    model = LengthChat(script=lambda q, k: (f"{q}{k}", 40))
    bon = BestOfN(
        model,
        reward=RunnableLambda(lambda x: 0.1),
        controller=CertaintyController(threshold(0.9) | max_samples(20), first_round=4),
        max_tokens=50,
    )
    allocator = quiet(total_tokens=600)
    results = await bon.abatch(["a", "b", "c"], allocator=allocator)
    report = allocator.last_report
    assert report is not None and report.spent <= 600 and report.pool_capped >= 1
    assert len({r.program_id for r in results}) == 3
    assert all(cap == 50 for _, cap in model._caps)


async def test_inside_a_batch_the_strategy_keeps_its_own_controller() -> None:
    own = controller(first=2, cap=4)
    seen: list[CertaintyController] = []

    def script(question: str, k: int) -> tuple[str | None, int]:
        seen.append(sc.controller)  # read while the batch runs this question
        return f"{question}{k}", 30

    sc = SelfConsistency(LengthChat(script=script), controller=own, max_tokens=40)
    allocator = quiet(total_tokens=200, per_query_tokens=80)
    await sc.abatch(["a", "b"], allocator=allocator)
    assert seen and all(c is own for c in seen)
    report = allocator.last_report
    # The members still decided with the batch's controllers: per-question cap and pool.
    assert report is not None and report.spent <= 200
    assert all(row.completion_tokens <= 80 for row in report.rows)


def test_bad_allocator_arguments_are_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="total_tokens"):
        BatchAllocator(total_tokens=0)
    with pytest.raises(InvalidInputError, match="max_concurrency"):
        BatchAllocator(max_concurrency=0)
    with pytest.raises(InvalidInputError, match="policy"):
        BatchAllocator(policy="threshold")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="progress"):
        BatchAllocator(progress=io.StringIO())  # type: ignore[arg-type]
    model = LengthChat(script=lambda q, k: ("1", 5))
    with pytest.raises(InvalidInputError, match="allocator"):
        SelfConsistency(model, allocator="pool")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="allocator"):
        SelfConsistency(model).batch(["a"], allocator="pool")
