"""Live check: run stopping policies against the real server on a bank's questions.

Replay predicts a policy's accuracy and tokens from recorded paths. This module
runs the same controllers live -- :class:`~dynasor_agents.SelfConsistency`
against the server, with the bank's model, system prompt and sampling
settings -- on a subset of the bank's questions, so the two can be compared
side by side. Live samples are fresh draws, not the recorded paths, so
agreement is expected within sampling noise, not exactly.

Methods run one after another, and each one's compute is read from vLLM's own
``vllm:generation_tokens_total`` counter before and after it: that counts every
token the engine generated, including the partial tokens of samples a stop
cancelled, which is what replay charges too (the client's
``completion_tokens`` only sees samples that finished).

Example:
    >>> row = LiveRow("fixed-4", "q:1", True, 400, 4, "max_samples")
    >>> summarize([row, LiveRow("fixed-4", "q:2", False, 200, 4, "max_samples")])
    {'fixed-4': LiveSummary(questions=2, accuracy=0.5, tokens=300.0, samples=4.0)}
    >>> engine_tokens('vllm:generation_tokens_total{engine="0",model_name="m"} 42.0')
    42.0
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from dynasor_agents import Progress
from dynasor_agents.certainty import normalize_answer
from dynasor_agents.controller import CertaintyController
from dynasor_bench.replay._prepare import DEFAULT_WINDOW
from dynasor_bench.traces._bank import BankMeta, QuestionTrace

__all__ = ["LiveRow", "LiveSummary", "engine_tokens", "run_live", "summarize"]

_COUNTER = "vllm:generation_tokens_total"


def engine_tokens(metrics: str) -> float:
    """Sum of vLLM's generation-token counter in a Prometheus ``/metrics`` text."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(_COUNTER + "{") or line.startswith(_COUNTER + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass(frozen=True)
class LiveRow:
    """One question run live under one method."""

    method: str
    question: str
    correct: bool
    completion_tokens: int
    samples: int
    stop_reason: str | None


@dataclass(frozen=True)
class LiveSummary:
    """A method's live results over the questions."""

    questions: int
    accuracy: float
    tokens: float
    samples: float


def summarize(rows: Sequence[LiveRow]) -> dict[str, LiveSummary]:
    """Per method: questions, accuracy, mean completion tokens and samples per question."""
    out: dict[str, LiveSummary] = {}
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        n = len(mine)
        out[method] = LiveSummary(
            questions=n,
            accuracy=sum(r.correct for r in mine) / n,
            tokens=sum(r.completion_tokens for r in mine) / n,
            samples=sum(r.samples for r in mine) / n,
        )
    return out


async def run_live(
    base_url: str,
    questions: Sequence[QuestionTrace],
    methods: Mapping[str, Callable[[], CertaintyController]],
    meta: BankMeta,
    *,
    api_key: str = "EMPTY",
    concurrency: int = 2,
    progress: Progress | None = None,
    weighted: Collection[str] = (),
    window: int = DEFAULT_WINDOW,
) -> tuple[list[LiveRow], dict[str, float]]:
    """Run every method on every question against the server, one method at a time.

    Returns:
        One row per (method, question), and per method the tokens the engine
        generated per question (from ``/metrics``; cancelled samples included).

    Args:
        base_url: The server's OpenAI base URL (``http://host:port/v1``).
        questions: Questions from a bank (their gold answers judge correctness).
        methods: Name to a factory of the method's controller (one per program).
        meta: The bank's settings: model, system prompt, sampling parameters.
        api_key: The server's API key.
        concurrency: Programs in flight at once.
        progress: Progress line (default: one on stderr).
        weighted: Methods whose votes are weighted by trace confidence: their
            requests ask for the bank's top logprobs and the strategy runs with
            ``confidence_window=window``, as replay's weighted methods.
        window: The group-confidence window of weighted methods (replay's).
    """
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    from dynasor_agents.program import DynasorClient
    from dynasor_agents.strategies import SelfConsistency

    chat = ChatOpenAI(
        base_url=base_url,
        api_key=api_key,  # type: ignore[arg-type]
        model=meta.model,
        temperature=meta.temperature,
        top_p=meta.top_p,
        max_retries=0,
        timeout=1800,
    )
    with_logprobs = chat.model_copy(
        update={"logprobs": True, "top_logprobs": meta.top_logprobs or 5}
    )
    root = base_url.rsplit("/v1", 1)[0]
    client = DynasorClient(root, api_key=api_key)
    bar = progress or Progress(len(questions) * len(methods), "live")
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(name: str, q: QuestionTrace) -> LiveRow:
        weigh = name in weighted
        sc = SelfConsistency(
            with_logprobs if weigh else chat,
            controller=methods[name](),
            client=client,
            max_tokens=meta.max_tokens,
            confidence_window=window if weigh else None,
        )
        messages = [SystemMessage(meta.system_prompt), HumanMessage(q.question)]
        async with gate:
            result = await sc.ainvoke(messages)
        row = LiveRow(
            method=name,
            question=q.id,
            correct=result.answer is not None and result.answer == normalize_answer(q.gold),
            completion_tokens=result.completion_tokens,
            samples=result.samples,
            stop_reason=str(result.stop_reason) if result.stop_reason else None,
        )
        bar.update(1, tokens=row.completion_tokens)
        return row

    import httpx

    rows: list[LiveRow] = []
    engine: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        async with httpx.AsyncClient(base_url=root, headers=headers, timeout=60) as http:
            for name in methods:
                before = engine_tokens((await http.get("/metrics")).text)
                rows.extend(await asyncio.gather(*(one(name, q) for q in questions)))
                after = engine_tokens((await http.get("/metrics")).text)
                engine[name] = (after - before) / max(1, len(questions))
    finally:
        await client.aclose()
    bar.close()
    return rows, engine
