"""The main job: Certaindex early stop beside fixed-N self-consistency, on the same questions.

Two arms run one after the other against the same vLLM server with the Dynasor
component, each on every question (several questions in flight):

* **Dynasor**: self-consistency under ``threshold(t) | max_samples(N)``: a first
  round of ``first_round`` samples, then ``round_size`` more per detect step; it
  stops once Certaindex reaches ``t``, even mid-round (the server aborts the
  samples it no longer needs);
* **fixed-N**: self-consistency with always ``N`` samples.

Dynasor runs first, so any prefix-cache warmth helps the baseline, not us. Each
finished question prints a line; at the end come the table (per question: the
answer of each arm, whether it is right, samples, tokens), then accuracy, tokens
and wall time per arm, and a plain sentence on whether accuracy held. Tokens are
the server's own usage counts (prompt and completion).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.prompts import ChatPromptTemplate

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

__all__ = ["ArmReport", "DemoReport", "DemoSettings", "render_report", "run_demo"]

Arm = Literal["dynasor", "fixed"]
ARMS: tuple[Arm, ...] = ("dynasor", "fixed")

SHORT_PROMPT = "Answer with one word or one number only."
MATH_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


def is_correct(answer: str | None, gold: str) -> bool:
    """Whether ``answer`` equals the reference after normalization.

    Example:
        >>> is_correct("18.0", "18"), is_correct(None, "18"), is_correct("\\\\frac{1}{2}", "0.5")
        (True, False, True)
    """
    return answer is not None and normalize_answer(answer) == normalize_answer(gold)


@dataclass(frozen=True)
class DemoSettings:
    """How the two arms sample.

    Attributes:
        samples: Fixed-N's sample count, and Dynasor's cap.
        first_round: Dynasor's first round.
        round_size: Dynasor's samples per later detect step.
        threshold: Dynasor's Certaindex threshold.
        temperature: Sampling temperature (both arms).
        max_tokens: Completion-token cap per sample.
        concurrency: Questions in flight at once within an arm.
        short: One-word answers (the built-in trivia) instead of worked math.
    """

    samples: int = 8
    first_round: int = 4
    round_size: int = 4
    threshold: float = 0.4
    temperature: float = 0.7
    max_tokens: int = 256
    concurrency: int = 5
    short: bool = False

    def describe(self) -> str:
        """One line naming both arms."""
        return (
            f"fixed-N = {self.samples} samples; Dynasor = threshold({self.threshold:g}) | "
            f"max_samples({self.samples}), first round {self.first_round}, then "
            f"{self.round_size} per step; temperature {self.temperature:g}, "
            f"max_tokens {self.max_tokens}"
        )


@dataclass
class ArmReport:
    """One arm's results (``None`` where a question failed) and wall time."""

    results: list[SelfConsistencyResult | None]
    seconds: float = 0.0
    errors: dict[int, str] = field(default_factory=dict)

    def tokens(self) -> int:
        """Prompt and completion tokens the server counted, over all questions."""
        return sum(r.total_tokens for r in self.results if r is not None)

    def correct(self, problems: Sequence[Problem]) -> int:
        """Questions whose answer is right."""
        return sum(
            r is not None and is_correct(r.answer, p.gold)
            for r, p in zip(self.results, problems, strict=True)
        )


@dataclass
class DemoReport:
    """Both arms on the same questions."""

    problems: list[Problem]
    settings: DemoSettings
    arms: dict[str, ArmReport] = field(default_factory=dict)

    @property
    def saved(self) -> float:
        """Share of fixed-N's tokens Dynasor did not spend."""
        base = self.arms["fixed"].tokens()
        return 1.0 - self.arms["dynasor"].tokens() / base if base else 0.0

    @property
    def accuracy_held(self) -> bool:
        """Whether Dynasor answered at least as many questions right as fixed-N."""
        return self.arms["dynasor"].correct(self.problems) >= self.arms["fixed"].correct(
            self.problems
        )


def _prompt(short: bool) -> ChatPromptTemplate:
    system = SHORT_PROMPT if short else MATH_PROMPT.replace("{}", "{{}}")
    return ChatPromptTemplate.from_messages([("system", system), ("human", "{question}")])


def _controller(arm: Arm, s: DemoSettings) -> CertaintyController:
    if arm == "fixed":
        return CertaintyController(max_samples(s.samples), first_round=s.samples)
    return CertaintyController(
        threshold(s.threshold) | max_samples(s.samples),
        first_round=min(s.first_round, s.samples),
        round_size=s.round_size,
    )


def _cell(result: SelfConsistencyResult | None, gold: str) -> str:
    if result is None:
        return f"{'failed':>12} -- {'-':>2} {'-':>6}"
    mark = "ok" if is_correct(result.answer, gold) else "--"
    answer = (result.answer_text or "-")[:12]
    return f"{answer:>12} {mark} {result.samples:>2} {result.total_tokens:>6}"


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def render_report(report: DemoReport) -> list[str]:
    """The table and the summary, as lines."""
    problems = report.problems
    dyn, fix = report.arms["dynasor"], report.arms["fixed"]
    lines = [
        f"{'#':>2}  {'question':<34} {'gold':>8} | {'fixed-N answer':>12} ok  n tokens"
        f" | {'Dynasor answer':>12} ok  n tokens",
    ]
    for i, p in enumerate(problems):
        lines.append(
            f"{i + 1:>2}  {_short(p.question, 34):<34} {_short(p.gold, 8):>8} | "
            f"{_cell(fix.results[i], p.gold)} | {_cell(dyn.results[i], p.gold)}"
        )
    n = len(problems)
    for name, arm in (("fixed-N", fix), ("Dynasor", dyn)):
        samples = sum(r.samples for r in arm.results if r is not None)
        lines.append(
            f"{name:>8}: accuracy {arm.correct(problems)}/{n}, {arm.tokens()} tokens, "
            f"{samples} samples, {arm.seconds:.0f} s"
        )
    verdict = "held" if report.accuracy_held else "did NOT hold"
    lines.append(
        f"Dynasor used {1 - report.saved:.0%} of fixed-N's tokens (saved {report.saved:.1%}); "
        f"accuracy {verdict}: Dynasor {dyn.correct(problems)}/{n}, "
        f"fixed-N {fix.correct(problems)}/{n}."
    )
    return lines


async def run_demo(
    problems: Sequence[Problem],
    chat: BaseChatModel,
    settings: DemoSettings,
    *,
    client: DynasorClient | None = None,
    out: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> DemoReport:
    """Run both arms on ``problems`` and print the comparison as it goes.

    Args:
        problems: The questions and reference answers.
        chat: The chat model of the server (``ChatOpenAI`` on a Dynasor-enabled vLLM).
        settings: How the arms sample.
        client: Tells the server when a program stops (its in-flight samples are
            aborted); ``None``: only the client cancels.
        out: Where lines go.
        clock: Wall time, for each arm's duration.
    """
    report = DemoReport(list(problems), settings)
    extractor = short_answer if settings.short else extract_answer
    out(f"[demo] {len(problems)} questions; {settings.describe()}")
    for arm in ARMS:
        strategy = SelfConsistency(
            chat,
            controller=_controller(arm, settings),
            extractor=extractor,
            prompt=_prompt(settings.short),
            client=client,
            max_tokens=settings.max_tokens,
        )
        report.arms[arm] = await _run_arm(arm, strategy, report.problems, settings, out, clock)
    for line in render_report(report):
        out(line)
    return report


async def _run_arm(
    arm: Arm,
    strategy: SelfConsistency,
    problems: Sequence[Problem],
    settings: DemoSettings,
    out: Callable[[str], None],
    clock: Callable[[], float],
) -> ArmReport:
    name = "Dynasor" if arm == "dynasor" else "fixed-N"
    result = ArmReport([None] * len(problems))
    gate = asyncio.Semaphore(max(1, settings.concurrency))
    done = 0
    started = clock()
    out(f"[demo] {name} arm: {len(problems)} questions, {settings.concurrency} at a time")

    async def one(index: int, problem: Problem) -> None:
        nonlocal done
        async with gate:
            try:
                outcome: Any = await strategy.ainvoke({"question": problem.question})
            except Exception as exc:  # a failed question is reported, not fatal
                result.errors[index] = f"{type(exc).__name__}: {exc}"
                outcome = None
        result.results[index] = outcome
        done += 1
        if outcome is None:
            line = f"failed ({result.errors[index]})"
        else:
            mark = "right" if is_correct(outcome.answer, problem.gold) else "wrong"
            line = (
                f"{outcome.answer_text or '-'} ({mark}, gold {problem.gold}), "
                f"{outcome.samples} samples, {outcome.total_tokens} tokens"
            )
        out(f"[demo] {name} {done}/{len(problems)} {clock() - started:5.0f}s  q{index + 1}: {line}")

    await asyncio.gather(*(one(i, p) for i, p in enumerate(problems)))
    result.seconds = clock() - started
    return result
