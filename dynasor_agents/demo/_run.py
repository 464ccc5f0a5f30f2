"""The main job: Certaindex early stop side by side with fixed-N self-consistency.

For each problem the demo runs two self-consistency programs against the same
vLLM server: a fixed-N baseline (always ``samples`` samples) and Dynasor
(``threshold(t) | max_samples(samples)``, detect step every ``first_round``
samples). It prints each problem's answers, samples and tokens as it finishes,
then the totals and the tokens saved, all as measured from the server's usage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dynasor_agents import (
    CertaintyController,
    DynasorClient,
    SelfConsistency,
    SelfConsistencyResult,
    extract_answer,
    max_samples,
    normalize_answer,
    threshold,
)
from dynasor_agents.demo._problems import Problem
from dynasor_agents.demo._short_answer import short_answer

__all__ = ["DemoReport", "DemoRow", "run_demo"]

SHORT_PROMPT = "Answer with one word or one number only."
MATH_PROMPT = "Solve the problem step by step. Put the final answer in \\boxed{}."


def _correct(answer: str | None, gold: str) -> bool:
    return answer is not None and normalize_answer(answer) == normalize_answer(gold)


@dataclass(frozen=True)
class DemoRow:
    """One problem's two runs."""

    problem: Problem
    fixed: SelfConsistencyResult
    dynasor: SelfConsistencyResult


@dataclass
class DemoReport:
    """All rows plus totals."""

    rows: list[DemoRow] = field(default_factory=list)
    seconds: float = 0.0

    def total(self, which: str) -> int:
        """Total tokens (prompt + completion) of ``fixed`` or ``dynasor``."""
        return sum(getattr(r, which).total_tokens for r in self.rows)

    def correct(self, which: str) -> int:
        """Problems whose majority answer matches the reference."""
        return sum(_correct(getattr(r, which).answer, r.problem.gold) for r in self.rows)

    @property
    def saved(self) -> float:
        """Share of the baseline's tokens that Dynasor did not spend."""
        base = self.total("fixed")
        return 1.0 - self.total("dynasor") / base if base else 0.0


def _cell(result: SelfConsistencyResult, gold: str) -> str:
    mark = "ok" if _correct(result.answer, gold) else "--"
    answer = (result.answer_text or "-")[:10]
    return f"{answer:>10} {mark} {result.samples:>3} {result.total_tokens:>6}"


HEADER = (
    f"{'#':>2}  {'question':<40} {'gold':>8} | {'fixed-N answer':>10} ok  n  tokens"
    f" | {'dynasor answer':>10} ok  n  tokens  cert  stop"
)


def format_row(index: int, row: DemoRow) -> str:
    """One line of the table."""
    q = row.problem.question.replace("\n", " ")
    q = q if len(q) <= 40 else q[:37] + "..."
    d = row.dynasor
    reason = d.stop_reason.value if d.stop_reason else "-"
    return (
        f"{index:>2}  {q:<40} {row.problem.gold[:8]:>8} | {_cell(row.fixed, row.problem.gold)}"
        f" | {_cell(d, row.problem.gold)}  {d.certainty:4.2f}  {reason}"
    )


async def run_demo(
    problems: Sequence[Problem],
    *,
    base_url: str,
    model: str,
    api_key: str = "EMPTY",
    samples: int = 16,
    first_round: int = 4,
    certainty: float = 0.8,
    temperature: float = 0.5,
    max_tokens: int = 48,
    short: bool = True,
    concurrency: int = 2,
    out: Callable[[str], None] = print,
) -> DemoReport:
    """Run both programs on every problem and print the comparison as it goes.

    Args:
        problems: The questions and reference answers.
        base_url: The OpenAI base URL of a Dynasor-enabled vLLM (``.../v1``).
        model: The served model name.
        api_key: The server's API key, if any.
        samples: The baseline's fixed sample count, and Dynasor's cap.
        first_round: Samples per detect step.
        certainty: Dynasor's Certaindex threshold.
        temperature: Sampling temperature.
        max_tokens: Cap per sample.
        short: One-word answers (built-in problems) instead of worked math.
        concurrency: Problems in flight at once.
        out: Where lines go.
    """
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        base_url=base_url,
        api_key=api_key,  # type: ignore[arg-type]
        model=model,
        temperature=temperature,
        max_retries=1,
        timeout=300,
    )
    client = DynasorClient(base_url, api_key=None if api_key == "EMPTY" else api_key)
    extractor = short_answer if short else extract_answer
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", SHORT_PROMPT if short else MATH_PROMPT.replace("{}", "{{}}")),
            ("human", "{question}"),
        ]
    )

    def program(ctl: CertaintyController) -> SelfConsistency:
        return SelfConsistency(
            chat, controller=ctl, extractor=extractor, prompt=prompt, client=client,
            max_tokens=max_tokens,
        )  # fmt: skip

    fixed = program(CertaintyController(max_samples(samples), first_round=samples))
    dynasor = program(
        CertaintyController(
            threshold(certainty) | max_samples(samples),
            first_round=first_round,
            round_size=first_round,
        )
    )
    report = DemoReport()
    out(
        f"[dynasor] {len(problems)} problems; fixed-N = {samples} samples; "
        f"Dynasor = threshold({certainty}) | max_samples({samples}), detect every {first_round}"
    )
    out(HEADER)
    gate = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()
    started = time.monotonic()

    async def one(index: int, problem: Problem) -> None:
        async with gate:
            inputs = {"question": problem.question}
            base, dyn = await asyncio.gather(fixed.ainvoke(inputs), dynasor.ainvoke(inputs))
        row = DemoRow(problem, base, dyn)
        async with lock:
            report.rows.append(row)
            out(format_row(index, row))

    await asyncio.gather(*(one(i, p) for i, p in enumerate(problems, start=1)))
    report.seconds = time.monotonic() - started
    n = len(report.rows)
    out(
        f"[dynasor] tokens: fixed-N {report.total('fixed')}, Dynasor {report.total('dynasor')}"
        f" -> saved {report.saved:.1%}; correct: fixed-N {report.correct('fixed')}/{n}, "
        f"Dynasor {report.correct('dynasor')}/{n}; {report.seconds:.0f}s"
    )
    return report
