"""TreeSearch with fake samplers: policy math, stopping, cancellation, composition, errors."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core.runnables import RunnableLambda

from dynasor_agents import (
    CertaintyController,
    InvalidInputError,
    ProgramStoppedError,
    SelfConsistency,
    StopReason,
    max_samples,
    max_tokens,
)
from dynasor_agents.errors import BudgetExhaustedError
from dynasor_agents.protocol import PROGRAM_ID_HEADER
from dynasor_agents.strategies._completions import TextRequest
from dynasor_agents.strategies._drive import Completion, SampleCall
from dynasor_agents.strategies._tree_core import TreeStopReason, logprob_reward
from dynasor_agents.strategies._tree_policies import (
    SearchTree,
    allocate,
    beam,
    mcts,
    rebase,
    uct,
)
from dynasor_agents.strategies._tree_search import TreeSearch

D = "\n\n"


@dataclass
class Step:
    text: str
    finish: str = "stop"
    logprob: float = -0.05
    delay: float = 0.0


class FakeModel:
    """A sampler scripted by ``script(depth, call_index) -> Step``; records calls, cancels."""

    def __init__(self, script: Callable[[int, int], Step]) -> None:
        self.script = script
        self.calls: list[SampleCall] = []
        self.cancelled = 0

    async def __call__(self, call: SampleCall) -> Completion:
        assert isinstance(call.request, TextRequest)
        index = len(self.calls)
        self.calls.append(call)
        step = self.script(call.request.prompt.count(D), index)
        try:
            await asyncio.sleep(step.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        tokens = max(1, len(step.text.split()))
        lp = None if math.isnan(step.logprob) else [step.logprob] * tokens
        return Completion(step.text, 10, tokens, finish_reason=step.finish, logprobs=lp)

    def depths(self) -> list[int]:
        return [c.request.prompt.count(D) for c in self.calls]


def search(model: FakeModel, **kwargs: Any) -> TreeSearch:
    kwargs.setdefault("prompt_format", lambda q: f"Q: {q}\n")
    return TreeSearch(model, **kwargs)


def two_steps(depth: int, index: int) -> Step:
    return Step("Think about it." + D) if depth == 0 else Step("So \\boxed{4}")


# -- policy math ---------------------------------------------------------------------------


def scored_tree(*rewards: float) -> SearchTree:
    tree = SearchTree()
    for i, r in enumerate(rewards):
        tree.score(tree.add(tree.root, f"s{i}"), r)
    return tree


def test_beam_fills_the_beam_from_the_root_then_keeps_the_top_width() -> None:
    tree = SearchTree()
    assert [(n.id, k) for n, k in beam(3, 2).select(tree)] == [(0, 6)]
    tree = scored_tree(0.1, 0.8, 0.5, 0.9)
    picks = beam(width=2, expand=3).select(tree)
    assert [(n.steps, k) for n, k in picks] == [(("s3",), 3), (("s1",), 3)]
    assert [n.pruned for n in tree.nodes[1:]] == [True, False, True, False]
    assert tree.open_nodes() == [tree.nodes[2], tree.nodes[4]]


def test_rebase_allocates_width_by_softmax_of_rewards() -> None:
    rewards = [0.9, 0.6, 0.3]
    exact = [math.exp(r / 0.3) for r in rewards]
    shares = allocate(rewards, 10, 0.3)
    assert sum(shares) == 10
    assert shares == [round(10 * e / sum(exact)) for e in exact] == [7, 2, 1]
    assert allocate([0.5, 0.5, 0.5], 4, 1.0) == [2, 1, 1]  # largest remainder, first wins ties
    tree = scored_tree(0.9, 0.6, 0.3, 0.0)
    tree.nodes[4].terminal = True  # a finished leaf takes one off the budget
    picks = rebase(width=11, temperature=0.3).select(tree)
    assert [(n.steps, k) for n, k in picks] == [(("s0",), 7), (("s1",), 2), (("s2",), 1)]
    tree = scored_tree(0.9, 0.0)
    assert [k for _, k in rebase(width=2, temperature=0.05).select(tree)] == [2]
    assert tree.nodes[2].pruned


def test_uct_picks_the_child_with_the_best_bound() -> None:
    tree = SearchTree()
    a, b = tree.add(tree.root, "a"), tree.add(tree.root, "b")
    a.reward, a.visits, a.value = 0.8, 10, 8.0
    b.reward, b.visits, b.value = 0.5, 1, 0.5
    tree.root.visits = 11
    assert uct(b, tree.root, 1.41) > uct(a, tree.root, 1.41)
    assert uct(b, tree.root, 1.41) == pytest.approx(0.5 + 1.41 * math.sqrt(math.log(11)))
    assert [(n.steps, k) for n, k in mcts(1, c=1.41, branching=2).select(tree)] == [(("b",), 1)]
    assert [(n.steps, k) for n, k in mcts(1, c=0.0, branching=2).select(tree)] == [(("a",), 1)]
    assert uct(tree.add(a, "new"), a, 1.0) == math.inf  # unvisited children go first


def test_mcts_spreads_one_wave_over_pending_expansions_and_skips_finished_subtrees() -> None:
    tree = SearchTree()
    assert [(n.id, k) for n, k in mcts(5, branching=2).select(tree)] == [(0, 2)]
    a, b = tree.add(tree.root, "a"), tree.add(tree.root, "b")
    tree.score(a, 0.9)
    tree.score(b, 0.1)
    a.terminal = True
    picks = mcts(3, branching=2).select(tree)
    assert [(n.steps, k) for n, k in picks] == [(("b",), 2)]
    b.terminal = True
    assert mcts(3, branching=2).select(tree) == []


# -- the Runnable ---------------------------------------------------------------------------


async def test_steps_split_at_the_delimiter_and_leaves_end_at_an_answer() -> None:
    model = FakeModel(two_steps)
    result = await search(model, policy=beam(width=2, expand=1)).ainvoke("2+2?", program_id="t1")
    assert result.answer == "4" and result.stop_reason is StopReason.CERTAIN and result.final
    assert result.best_path == ["Think about it.", "So \\boxed{4}"]
    assert result.nodes == 4 and result.rounds == 2
    assert [leaf.depth for leaf in result.leaves] == [2, 2]
    first, second = model.calls[0].request, model.calls[2].request
    assert first.prompt == "Q: 2+2?\n" and list(first.stop) == [D] and first.logprobs == 1
    assert second.prompt == "Q: 2+2?\nThink about it." + D
    assert all(c.headers[PROGRAM_ID_HEADER] == "t1" for c in model.calls)
    assert all(c.max_tokens == 64 for c in model.calls)
    assert (result.prompt_tokens, result.completion_tokens) == (40, 2 * 3 + 2 * 2)


async def test_a_custom_delimiter_cuts_text_that_runs_past_it() -> None:
    model = FakeModel(lambda d, i: Step("first<s>second") if i < 2 else Step("\\boxed{9}"))
    ts = search(model, policy=beam(2, 1), delimiter="<s>", prompt_format=lambda q: q)
    result = await ts.ainvoke("q")
    assert result.best_path == ["first", "\\boxed{9}"] and result.answer == "9"
    assert model.calls[2].request.prompt == "qfirst<s>"


async def test_certain_mid_round_cancels_the_pending_branches() -> None:
    model = FakeModel(lambda d, i: Step("\\boxed{7}", delay=30.0 if i == 3 else 0.0))
    ts = search(model, policy=rebase(width=4), reward_threshold=0.5, entropy_threshold=0.5)
    result = await asyncio.wait_for(ts.ainvoke("q"), timeout=5)
    assert result.stop_reason is StopReason.CERTAIN and result.answer == "7"
    assert len(result.leaves) == 3 and model.cancelled == 1
    assert result.entropy_certainty == 1.0


async def test_a_slow_scorer_is_cancelled_too() -> None:
    async def score(inputs: dict[str, Any]) -> float:
        if inputs["steps"][-1] == "slow \\boxed{7}":
            await asyncio.sleep(30)
        return 0.9

    texts = ["\\boxed{7}", "\\boxed{7}", "\\boxed{7}", "slow \\boxed{7}"]
    model = FakeModel(lambda d, i: Step(texts[i]))
    ts = search(model, policy=rebase(width=4), step_reward=score, entropy_threshold=0.5)
    result = await asyncio.wait_for(ts.ainvoke("q"), timeout=5)
    assert result.stop_reason is StopReason.CERTAIN and result.nodes == 4
    assert len(result.leaves) == 3  # the unscored leaf does not vote


async def test_certain_needs_both_the_reward_and_the_answer_entropy() -> None:
    # Agreeing answers with a low reward: not certain.
    low = FakeModel(lambda d, i: Step("\\boxed{3}", logprob=-3.0))
    result = await search(low, policy=beam(3, 1)).ainvoke("q")
    assert result.entropy_certainty == 1.0 and result.reward_certainty < 0.1
    assert result.stop_reason is TreeStopReason.COMPLETE
    # A high reward with scattered answers: not certain either.
    high = FakeModel(lambda d, i: Step(f"\\boxed{{{i}}}", logprob=-0.01))
    result = await search(high, policy=beam(3, 1)).ainvoke("q")
    assert result.reward_certainty > 0.9 and result.entropy_certainty == 0.0
    assert result.stop_reason is TreeStopReason.COMPLETE and result.certainty == 0.0


async def test_a_step_reward_runnable_steers_the_beam() -> None:
    seen: list[dict[str, Any]] = []

    def score(inputs: dict[str, Any]) -> float:
        seen.append(inputs)
        return 9.0 if "good" in inputs["steps"][-1] else 1.0

    names = ["good A", "bad B", "good C", "bad D"]
    model = FakeModel(lambda d, i: Step(names[i] + D) if d == 0 else Step("\\boxed{5}"))
    ts = search(model, policy=beam(2, 2), step_reward=RunnableLambda(score), reward_range=(0, 10))
    result = await ts.ainvoke("q?")
    assert seen[0] == {"question": "q?", "steps": ["good A"]}
    assert all("good" in c.request.prompt for c in model.calls[4:])
    assert result.answer == "5" and result.best_reward == pytest.approx(0.1)
    assert result.votes == {"5": pytest.approx(0.4)}
    assert all(c.request.logprobs is None for c in model.calls)


async def test_max_depth_ends_branches_and_max_nodes_caps_the_tree() -> None:
    model = FakeModel(lambda d, i: Step("more" + D))
    result = await search(model, policy=beam(2, 1), max_depth=3).ainvoke("q")
    assert result.stop_reason is TreeStopReason.MAX_DEPTH
    assert [leaf.depth for leaf in result.leaves] == [3, 3] and max(model.depths()) == 2
    model = FakeModel(lambda d, i: Step("more" + D))
    result = await search(model, policy=rebase(width=4), max_nodes=10).ainvoke("q")
    assert result.stop_reason is TreeStopReason.MAX_NODES and result.nodes == 10
    assert len(model.calls) == 10


async def test_mcts_searches_and_reports_the_mean_reward() -> None:
    def script(depth: int, index: int) -> Step:
        if depth == 0:
            return Step(f"path {index}" + D, logprob=-0.1 * (index + 1))
        return Step("\\boxed{12}", logprob=-0.2)

    model = FakeModel(script)
    result = await search(model, policy=mcts(simulations=3, branching=2)).ainvoke("q")
    assert result.answer == "12" and result.stop_reason is StopReason.CERTAIN
    rewards = [leaf.reward for leaf in result.leaves]
    assert result.reward_certainty == pytest.approx(sum(rewards) / len(rewards))
    assert result.policy == "mcts(simulations=3, c=1.41, branching=2)"


async def test_token_budget_clamps_steps_and_stops() -> None:
    model = FakeModel(lambda d, i: Step("one two three" + D))
    ctl = CertaintyController(max_tokens(10) | max_samples(50))
    result = await search(model, policy=beam(2, 1), controller=ctl).ainvoke("q")
    assert result.stop_reason is StopReason.MAX_TOKENS
    assert [c.max_tokens for c in model.calls] == [10, 10, 4, 4]


async def test_a_server_stop_after_some_steps_ends_the_search() -> None:
    def script(depth: int, index: int) -> Step:
        if depth:
            raise ProgramStoppedError("stopped", program_id="x")
        return Step("a" + D)

    result = await search(FakeModel(script), policy=beam(2, 1)).ainvoke("q")
    assert result.stop_reason is StopReason.SERVER_STOPPED and result.nodes == 2


def test_stream_yields_a_snapshot_per_round_then_the_result() -> None:
    items = list(search(FakeModel(two_steps), policy=beam(2, 1)).stream("q"))
    assert [(s.rounds, s.final) for s in items] == [(1, False), (2, False), (2, True)]
    assert items[0].stop_reason is None and items[-1].stop_reason is StopReason.CERTAIN
    batch = search(FakeModel(two_steps), policy=beam(2, 1)).batch(["a", "b"])
    assert [r.answer for r in batch] == ["4", "4"]


async def test_composes_under_self_consistency_in_one_program() -> None:
    model = FakeModel(two_steps)
    inner = search(model, policy=beam(2, 1))
    sc = SelfConsistency(inner, controller=CertaintyController(first_round=2))
    result = await sc.ainvoke({"question": "2+2?"}, program_id="outer")
    assert result.answer == "4" and result.samples == 2
    assert result.completion_tokens == 2 * (2 * 3 + 2 * 2)
    assert {c.headers[PROGRAM_ID_HEADER] for c in model.calls} == {"outer"}
    assert model.calls[0].request.prompt == "Q: 2+2?\n"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: beam(width=0), "beam width must be an int >= 1"),
        (lambda: rebase(temperature=0), "rebase temperature must be > 0"),
        (lambda: mcts(c=math.nan), "mcts c must be a finite number"),
        (lambda: search(FakeModel(two_steps), delimiter=""), "delimiter must be a non-empty"),
        (lambda: search(FakeModel(two_steps), max_depth=0), "max_depth must be an int >= 1"),
        (lambda: search(FakeModel(two_steps), reward_range=(1, 1)), "reward_range"),
        (lambda: search(FakeModel(two_steps), entropy_threshold=2), "entropy_threshold"),
        (lambda: search(FakeModel(two_steps), policy="beam"), "policy must be"),
        (lambda: TreeSearch(RunnableLambda(lambda x: x)), "needs a CompletionsModel"),
    ],
)
def test_bad_configuration_is_refused_clearly(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        make()


async def test_bad_rewards_and_missing_logprobs_fail_clearly() -> None:
    ts = search(FakeModel(two_steps), step_reward=lambda _: math.nan)
    with pytest.raises(InvalidInputError, match="finite number in") as raised:
        await ts.ainvoke("q", program_id="nan")
    assert raised.value.program_id == "nan"
    ts = search(FakeModel(two_steps), step_reward=lambda _: 3.0)
    with pytest.raises(InvalidInputError, match=r"in \[0.0, 1.0\], got 3.0"):
        await ts.ainvoke("q")
    ts = search(FakeModel(lambda d, i: Step("x", logprob=math.nan)))
    with pytest.raises(InvalidInputError, match="returned none"):
        await ts.ainvoke("q")


def test_logprob_reward_reads_the_sampled_token_logprobs() -> None:
    # CompletionsModel returns the sampled tokens' logprobs (vLLM's token_logprobs).
    assert logprob_reward([-0.5, -0.9]) == pytest.approx(math.exp(-0.7))
    assert logprob_reward([]) == 0.0


async def test_a_refused_step_does_not_lose_the_steps_still_running() -> None:
    # The first step is admitted and still generating when the second is refused.
    def script(depth: int, index: int) -> Step:
        if index == 1:
            raise BudgetExhaustedError("spent", program_id="x", status_code=429)
        return Step("a" + D, delay=0.05)

    result = await search(FakeModel(script), policy=beam(2, 1)).ainvoke("q")
    assert result.stop_reason is StopReason.MAX_TOKENS and result.nodes == 1
