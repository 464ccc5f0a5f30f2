"""Cookbook: step-level tree search (beam, REBASE or MCTS) with Certaindex early stop.

Start a server first (``dynasor-agents demo`` starts one for you; or run vLLM with
``--middleware dynasor_agents.server.DynasorMiddleware --scheduling-policy priority``),
then::

    .venv/bin/python cookbook/tree_search.py --base-url http://127.0.0.1:8000/v1 --policy rebase

Each step is a raw ``/v1/completions`` continuation cut at a blank line; without a
step-reward model the step's own token logprobs score it (``exp(mean logprob)``). The
program stops once the best (REBASE, beam) or mean (MCTS) step reward AND the answer
entropy of the finished branches both say the answer is settled, and the branches
still running are cancelled (vLLM aborts them).
"""

from __future__ import annotations

import argparse

import openai

from dynasor_agents import CertaintyController, DynasorClient, max_samples, max_tokens
from dynasor_agents.demo import DEFAULT_PROBLEMS
from dynasor_agents.strategies import (
    CompletionsModel,
    TreePolicy,
    TreeSearch,
    beam,
    mcts,
    rebase,
)


def make_policy(name: str, width: int) -> TreePolicy:
    if name == "beam":
        return beam(width=width, expand=2)
    if name == "rebase":
        return rebase(width=width, temperature=0.2)
    return mcts(simulations=width, c=1.41, branching=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--policy", choices=["beam", "rebase", "mcts"], default="rebase")
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--budget", type=int, default=2000, help="completion tokens per problem")
    args = parser.parse_args()

    client = openai.AsyncOpenAI(base_url=args.base_url, api_key="EMPTY", max_retries=0)
    search = TreeSearch(
        CompletionsModel(client, args.model, temperature=0.8),
        policy=make_policy(args.policy, args.width),
        step_tokens=48,
        max_depth=6,
        max_nodes=48,
        reward_threshold=0.6,
        entropy_threshold=0.7,
        controller=CertaintyController(max_tokens(args.budget) | max_samples(16)),
        client=DynasorClient(args.base_url),  # tells the server when to stop the program
    )
    for problem in DEFAULT_PROBLEMS:
        for step in search.stream(problem.question):
            if not step.final:
                print(
                    f"  round {step.rounds}: {step.nodes} nodes, {len(step.leaves)} leaves, "
                    f"reward={step.reward_certainty:.2f} entropy={step.entropy_certainty:.2f}"
                )
        print(f"{problem.question} -> {step.answer_text} (gold {problem.gold})")
        for i, text in enumerate(step.best_path, 1):
            print(f"    step {i}: {text.strip()[:100]}")
        print(
            f"  {step.nodes} nodes, {step.total_tokens} tokens, "
            f"certainty {step.certainty:.2f}, stop: {step.stop_reason}"
        )


if __name__ == "__main__":
    main()
