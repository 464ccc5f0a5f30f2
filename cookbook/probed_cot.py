"""Cookbook: probed chain-of-thought (Dynasor-CoT) against a Dynasor-enabled vLLM.

Start a server first (``dynasor-agents demo`` starts one for you; or run vLLM with
``--middleware dynasor_agents.server.DynasorMiddleware --scheduling-policy priority``),
then::

    .venv/bin/python cookbook/probed_cot.py --base-url http://127.0.0.1:8000/v1

The model reasons in chunks through ``/v1/completions``; after each chunk a short
greedy probe asks for the answer, and the program stops once the last probes
agree. It prints the reasoning as it streams (without the probes), then the
answer, every probe's answer, the reasoning and probe tokens, and the estimated
tokens saved against the cap. For a reasoning model (DeepSeek-R1, Qwen3) pass
``--probe think`` (or keep ``auto``, which sees the ``<think>`` tag).
"""

from __future__ import annotations

import argparse

import openai

from dynasor_agents import DynasorClient
from dynasor_agents.strategies import EFFORT_PRESETS, CompletionsModel, ProbedChainOfThought

QUESTIONS = [
    "What is 6 times 7? Think step by step.",
    "Tom has 3 apples and buys 5 more. How many apples does he have? Think step by step.",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--effort", default="aggressive", choices=sorted(EFFORT_PRESETS))
    parser.add_argument("--chunk-tokens", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--probe", default="auto", help="auto, think, dynasor or a suffix")
    args = parser.parse_args()

    client = openai.AsyncOpenAI(base_url=args.base_url, api_key="EMPTY", max_retries=0)
    pcot = ProbedChainOfThought(
        CompletionsModel(client, args.model, temperature=0.6),
        effort=args.effort,
        chunk_tokens=args.chunk_tokens,  # the 135M test model writes short solutions
        max_tokens=args.max_tokens,
        probe=args.probe,
        client=DynasorClient(args.base_url),  # tells the server when to stop the program
    )
    for question in QUESTIONS:
        print(f"== {question}")
        for step in pcot.stream(question):
            print(step.delta, end="", flush=True)  # the reasoning, never the probes
        print(
            f"\n-> {step.answer_text} ({step.stop_reason}, certainty {step.certainty:.2f})\n"
            f"   probes: {step.probe_answers}\n"
            f"   reasoning tokens: {step.reasoning_tokens}, probe tokens: {step.probe_tokens}, "
            f"tokens saved (estimate vs the {args.max_tokens} cap): {step.tokens_saved_estimate}"
        )


if __name__ == "__main__":
    main()
