"""Tiny trace banks the replay tests build by hand or at random (seeded)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from dynasor_bench.traces._bank import PathTrace, QuestionTrace


def path(answer: str | None, tokens: int, confidence: Sequence[float] | None = None) -> PathTrace:
    """One path; its token confidences default to a flat 1.0 per token."""
    conf = list(confidence) if confidence is not None else [1.0] * tokens
    return PathTrace(
        text=f"\\boxed{{{answer}}}" if answer is not None else "no idea",
        answer=answer,
        completion_tokens=tokens,
        finish_reason="stop",
        logprob=[-0.1] * len(conf),
        confidence=conf,
    )


def question(
    qid: str, paths: Sequence[PathTrace], *, gold: str = "1", source: str = "toy"
) -> QuestionTrace:
    """A question holding ``paths``."""
    return QuestionTrace(
        id=qid, source=source, question="?", gold=gold, prompt_tokens=7, paths=list(paths)
    )


def random_bank(
    seed: int, *, questions: int = 4, k: int = 8, ties: bool = True
) -> list[QuestionTrace]:
    """Random questions: answers from a small alphabet (some ``None``), lengths with
    ties (unless ``ties=False``), random confidences; sources ``easy`` / ``hard``."""
    rng = random.Random(seed)
    bank = []
    for i in range(questions):
        alphabet = ["1", "1", "1", "2", "3", None] if i % 2 == 0 else ["1", "2", "3", "4", None]
        if ties:
            lengths = [rng.choice([5, 8, 8, 12, 20, 30]) for _ in range(k)]
        else:
            lengths = [5 + 3 * j for j in rng.sample(range(4 * k), k)]
        paths = [
            path(rng.choice(alphabet), n, [rng.uniform(0.5, 3.0) for _ in range(n)])
            for n in lengths
        ]
        bank.append(question(f"r{seed}:{i}", paths, source="easy" if i % 2 == 0 else "hard"))
    return bank
