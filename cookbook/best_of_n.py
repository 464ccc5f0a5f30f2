"""Cookbook: best-of-N with a reward and Certaindex early stop against a Dynasor-enabled vLLM.

Start a server first (``dynasor-agents demo`` starts one for you; or run vLLM with
``--middleware dynasor_agents.server.DynasorMiddleware --scheduling-policy priority``),
then::

    .venv/bin/python cookbook/best_of_n.py --base-url http://127.0.0.1:8000/v1

By default each candidate is scored by the built-in signal, its mean token
probability (the model returns logprobs: ``ChatOpenAI(..., logprobs=True)``);
``--judge`` asks the same model to grade each candidate from 0 to 10 instead.
The program stops as soon as one candidate clears the threshold and cancels the
candidates still running, which the server aborts inside the engine.
"""

from __future__ import annotations

import argparse

from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from dynasor_agents import (
    BestOfN,
    CertaintyController,
    DynasorClient,
    max_samples,
    threshold,
)
from dynasor_agents.demo import DEFAULT_PROBLEMS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--judge", action="store_true", help="grade with an LLM judge")
    args = parser.parse_args()

    chat = ChatOpenAI(
        base_url=args.base_url,
        api_key="EMPTY",
        model=args.model,
        temperature=0.7,
        logprobs=True,  # the built-in reward reads them
    )
    judge = ChatOpenAI(base_url=args.base_url, api_key="EMPTY", model=args.model, temperature=0)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer with one word or one number only."), ("human", "{question}")]
    )
    bon = BestOfN(
        chat,
        reward=judge if args.judge else None,
        controller=CertaintyController(
            threshold(args.threshold, min_samples=1) | max_samples(8), first_round=4
        ),
        client=DynasorClient(args.base_url),  # tells the server when to stop the program
        max_tokens=48,
        reward_max_tokens=4,
    )
    chain = prompt | bon
    for problem in DEFAULT_PROBLEMS:
        for step in chain.stream({"question": problem.question}):
            if not step.final:
                print(f"  round {step.rounds}: {step.samples} scored, best={step.certainty:.2f}")
        best = (step.best or "").strip().replace("\n", " ")
        reward = step.reward or 0.0
        print(
            f"{problem.question} -> {best!r} (gold {problem.gold}); reward {reward:.2f}, "
            f"{step.samples} samples, {step.total_tokens} tokens, stop: {step.stop_reason}"
        )


if __name__ == "__main__":
    main()
