"""Cookbook: self-consistency with Certaindex early stop against a Dynasor-enabled vLLM.

Start a server first (``dynasor-agents demo`` starts one for you; or run vLLM with
``--middleware dynasor_agents.server.DynasorMiddleware --scheduling-policy priority``),
then::

    .venv/bin/python cookbook/self_consistency.py --base-url http://127.0.0.1:8000/v1

It runs the demo's built-in problems (``dynasor_agents.demo.DEFAULT_PROBLEMS``: a
few questions the 135M test model answers consistently and a few it answers almost
at random), streaming each program's Certaindex after every detect step.
"""

from __future__ import annotations

import argparse

from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from dynasor_agents import (
    CertaintyController,
    DynasorClient,
    SelfConsistency,
    max_samples,
    threshold,
)
from dynasor_agents.demo import DEFAULT_PROBLEMS, short_answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()

    chat = ChatOpenAI(base_url=args.base_url, api_key="EMPTY", model=args.model, temperature=0.7)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer with one word or one number only."), ("human", "{question}")]
    )
    sc = SelfConsistency(
        chat,
        controller=CertaintyController(threshold(0.8) | max_samples(16), first_round=4),
        extractor=short_answer,
        client=DynasorClient(args.base_url),  # tells the server when to stop the program
        max_tokens=48,
    )
    chain = prompt | sc
    for problem in DEFAULT_PROBLEMS:
        for step in chain.stream({"question": problem.question}):
            if not step.final:
                print(f"  round {step.rounds}: {step.samples} samples, c={step.certainty:.2f}")
        print(
            f"{problem.question} -> {step.answer_text} (gold {problem.gold}); "
            f"{step.samples} samples, {step.total_tokens} tokens, stop: {step.stop_reason}"
        )


if __name__ == "__main__":
    main()
