"""The main job's logic on a scripted chat model: both arms, the table, the verdict."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from dynasor_agents import InvalidInputError
from dynasor_agents.demo import (
    DemoSettings,
    Problem,
    mixed_problems,
    run_demo,
)
from dynasor_agents.demo._command import _problems, _settings, add_demo_parser

from .strategy_fakes import AsyncOnlyChat

PROBLEMS = [Problem("What is 2 + 2?", "4"), Problem("What is 3 + 5?", "8")]


class ByQuestion(AsyncOnlyChat):
    """Answers the i-th call on a question with ``answers[question][i]`` (cycling), boxed;
    13 tokens each. A question without a script fails (``KeyError``)."""

    answers: dict[str, list[str]]
    _seen: dict[str, int] = PrivateAttr(default_factory=dict)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        question = str(messages[-1].content)
        script = self.answers[question]
        i = self._seen.get(question, 0)
        self._seen[question] = i + 1
        message = AIMessage(
            content=f"so \\boxed{{{script[i % len(script)]}}}",
            usage_metadata={"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


def settings(**kw: object) -> DemoSettings:
    base = {"samples": 6, "first_round": 3, "round_size": 1, "threshold": 0.6, "concurrency": 2}
    return DemoSettings(**{**base, **kw})  # type: ignore[arg-type]


async def test_dynasor_stops_early_on_agreement_and_both_arms_are_reported() -> None:
    chat = ByQuestion(
        answers={"What is 2 + 2?": ["4"], "What is 3 + 5?": ["8", "9", "8", "7", "8", "8"]},
    )
    lines: list[str] = []
    report = await run_demo(
        PROBLEMS, chat, settings(), out=lines.append, clock=iter(range(100)).__next__
    )
    dyn, fix = report.arms["dynasor"], report.arms["fixed"]
    assert [r.samples for r in fix.results if r] == [6, 6]
    assert dyn.results[0] is not None and dyn.results[0].samples == 3  # all agree at once
    assert dyn.results[1] is not None and dyn.results[1].samples > 3
    assert dyn.correct(PROBLEMS) == fix.correct(PROBLEMS) == 2 and report.accuracy_held
    assert dyn.tokens() < fix.tokens() and 0 < report.saved < 1
    text = "\n".join(lines)
    assert lines[0].startswith("[demo] 2 questions; fixed-N = 6 samples")
    assert "[demo] Dynasor arm: 2 questions" in text and "[demo] fixed-N 2/2" in text
    assert text.index("Dynasor arm") < text.index("fixed-N arm")  # Dynasor first
    assert "accuracy 2/2" in text and "accuracy held" in text and "saved" in text


async def test_a_failed_question_is_reported_and_accuracy_that_drops_is_said_plainly() -> None:
    chat = ByQuestion(
        # Dynasor sees "5, 5, 5" first and stops; fixed-N's six samples vote 4.
        answers={"What is 2 + 2?": ["5", "5", "5", "4", "4", "4", "4", "4", "4", "4"]},
    )
    lines: list[str] = []
    problems = [PROBLEMS[0], Problem("What is 3 + 5?", "8")]
    report = await run_demo(problems, chat, settings(), out=lines.append)
    assert report.arms["dynasor"].errors and report.arms["fixed"].errors  # no script: KeyError
    assert "failed (KeyError" in "\n".join(lines)
    assert report.arms["dynasor"].correct(problems) == 0
    assert report.arms["fixed"].correct(problems) == 1
    assert not report.accuracy_held and "accuracy did NOT hold" in lines[-1]


def write_dataset(directory: Path, name: str, count: int) -> None:
    rows = [{"input": f"{name} question {i}?", "target": i} for i in range(count)]
    (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_mix_is_seeded_interleaved_and_checked(tmp_path: Path) -> None:
    write_dataset(tmp_path, "easy", 20)
    write_dataset(tmp_path, "hard", 20)
    mix = mixed_problems("easy:2,hard:3", tmp_path, seed=1)
    assert [p.source.split(".")[0] for p in mix] == ["easy", "hard", "easy", "hard", "hard"]
    assert mix == mixed_problems("easy:2,hard:3", tmp_path, seed=1)
    assert mix != mixed_problems("easy:2,hard:3", tmp_path, seed=2)
    with pytest.raises(InvalidInputError, match="bad question spec"):
        mixed_problems("easy", tmp_path)
    with pytest.raises(InvalidInputError, match="dataset file not found"):
        mixed_problems("missing:1", tmp_path)
    with pytest.raises(InvalidInputError, match=r"data directory not found.*DYNASOR_DATA_DIR"):
        mixed_problems("easy:1", tmp_path / "nowhere")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_demo_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["demo", *argv])


def test_the_command_defaults_to_qwen_on_the_math_mix_and_smollm2_to_trivia(
    tmp_path: Path,
) -> None:
    for name in ("singleop", "addsub", "multiarith", "gsm8k"):
        write_dataset(tmp_path, name, 10)
    args = parse("--data-dir", str(tmp_path))
    assert args.model == "qwen2.5-coder-0.5b"
    problems = _problems(args, short=False)
    assert len(problems) == 5 and {p.source.split(".")[0] for p in problems} == {
        "singleop", "addsub", "multiarith", "gsm8k"
    }  # fmt: skip
    assert _settings(args, short=False).max_tokens == 256
    smoke = parse("--model", "smollm2", "--limit", "3")
    assert [p.source for p in _problems(smoke, short=True)] == ["builtin"] * 3
    assert _settings(smoke, short=True).max_tokens == 48
    with pytest.raises(InvalidInputError, match="--samples must be >= 1"):
        _settings(parse("--samples", "0"), short=False)
    with pytest.raises(InvalidInputError, match="--threshold must be in"):
        _settings(parse("--threshold", "2"), short=False)
