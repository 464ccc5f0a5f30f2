"""Every strategy against the real CPU vLLM with small budgets.

Each test checks that the program's requests carry its id (the server attributes
them), that the end of the program reaches the server (stopped or finished),
that the result is well formed, and that its tokens match the server's count.
"""

from __future__ import annotations

import openai
import pytest

from dynasor_agents import (
    BestOfN,
    CertaintyController,
    CompletionsModel,
    DynasorClient,
    ProbedChainOfThought,
    SelfConsistency,
    StopReason,
    TreeSearch,
    beam,
    max_samples,
    max_tokens,
    mcts,
    rebase,
    threshold,
)
from dynasor_agents.strategies import TreePolicy

from .conftest import Backend, chat, new_id

pytestmark = pytest.mark.timeout(300)


async def test_best_of_n_scores_by_logprobs_and_matches_the_servers_count(
    vllm: Backend,
) -> None:
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    bon = BestOfN(
        chat(vllm, temperature=0.9, logprobs=True),
        controller=CertaintyController(threshold(1.0) | max_samples(4), first_round=4),
        client=client,
        max_tokens=16,
    )
    pid = new_id("bon")
    result = await bon.ainvoke("Name a fruit.", program_id=pid)
    assert result.samples == 4 and result.stop_reason is StopReason.MAX_SAMPLES
    assert result.best and 0.0 < result.reward <= 1.0
    assert result.reward == max(c.reward for c in result.candidates)
    info = await client.get(pid)
    assert info.state == "finished" and info.requests == 4
    assert (info.prompt_tokens, info.completion_tokens) == (
        result.prompt_tokens,
        result.completion_tokens,
    )


async def test_best_of_n_stops_the_program_once_a_candidate_clears_the_bar(
    vllm: Backend,
) -> None:
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    bon = BestOfN(
        chat(vllm, temperature=0.9, logprobs=True),
        controller=CertaintyController(
            threshold(0.0, min_samples=1) | max_samples(8), first_round=4
        ),
        client=client,
        max_tokens=16,
    )
    pid = new_id("bon-stop")
    result = await bon.ainvoke("Name a colour.", program_id=pid)
    assert result.stop_reason is StopReason.CERTAIN and result.samples >= 1
    info = await client.get(pid)
    assert info.state == "stopped" and info.in_flight == 0


def completions(vllm: Backend, temperature: float = 0.8) -> CompletionsModel:
    client = openai.AsyncOpenAI(base_url=vllm.base_url, api_key=vllm.api_key, max_retries=0)
    return CompletionsModel(client, vllm.model, temperature=temperature)


@pytest.mark.parametrize("policy", [beam(width=2, expand=2), rebase(width=3), mcts(simulations=2)])
async def test_tree_search_expands_steps_in_one_program(vllm: Backend, policy: TreePolicy) -> None:
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    search = TreeSearch(
        completions(vllm),
        policy=policy,
        step_tokens=12,
        max_depth=2,
        max_nodes=8,
        controller=CertaintyController(max_samples(4) | max_tokens(400)),
        client=client,
    )
    pid = new_id("tree")
    result = await search.ainvoke("What is 3 + 4? Answer in short steps.", program_id=pid)
    assert result.final and result.stop_reason is not None
    assert 1 <= result.nodes <= 8 and result.rounds >= 1
    assert result.completion_tokens > 0
    info = await client.get(pid)
    assert info.state in ("finished", "stopped") and info.in_flight == 0
    # Every step request (and its logprob scoring, which is local) was the program's.
    assert info.requests == result.nodes
    assert info.completion_tokens == result.completion_tokens


async def test_probed_chain_of_thought_stops_before_the_cap_once_probes_agree(
    vllm: Backend,
) -> None:
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    cot = ProbedChainOfThought(
        completions(vllm, temperature=0.0),
        chunk_tokens=24,
        window=2,
        max_tokens=480,
        client=client,
    )
    pid = new_id("cot")
    question = "What is the capital of France? Explain at length, with its whole history."
    result = await cot.ainvoke(question, program_id=pid)
    # The 135M model settles on its probe answer (right or wrong) within a few chunks.
    assert result.stop_reason is StopReason.CERTAIN and result.answer
    assert result.reasoning_tokens < 480 and result.tokens_saved_estimate == 480 - (
        result.reasoning_tokens
    )
    assert result.probe_tokens > 0 and len(result.probes) >= 2
    info = await client.get(pid)
    assert info.state == "stopped" and info.in_flight == 0
    assert info.completion_tokens == result.completion_tokens
    assert result.completion_tokens == result.reasoning_tokens + result.probe_tokens


async def test_self_consistency_over_probed_chains_is_one_program(vllm: Backend) -> None:
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    inner = ProbedChainOfThought(
        completions(vllm, temperature=0.8), chunk_tokens=16, window=2, max_tokens=96
    )
    outer = SelfConsistency(
        inner, controller=CertaintyController(max_samples(2), first_round=2), client=client
    )
    pid = new_id("composed")
    result = await outer.ainvoke("What is 2 + 3?", program_id=pid)
    assert result.samples == 2 and result.completion_tokens > 0
    info = await client.get(pid)
    # Every chunk and probe of both chains was attributed to the one program.
    assert info.requests >= 4 and info.completion_tokens == result.completion_tokens
    assert info.state in ("finished", "stopped")


async def test_self_consistency_weighs_votes_by_the_servers_top_logprobs(vllm: Backend) -> None:
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    sc = SelfConsistency(
        chat(vllm, temperature=0.9, logprobs=True, top_logprobs=5),
        controller=CertaintyController(max_samples(4), first_round=4),
        client=client,
        max_tokens=16,
        confidence_window=8,
    )
    pid = new_id("wsc")
    result = await sc.ainvoke("What is 2 + 3? Answer with a number.", program_id=pid)
    assert result.samples == 4 and len(result.confidences) == 4
    assert all(c > 0.0 for c in result.confidences)  # -mean of top-5 logprobs: positive
    info = await client.get(pid)
    assert info.requests == 4 and info.completion_tokens == result.completion_tokens
