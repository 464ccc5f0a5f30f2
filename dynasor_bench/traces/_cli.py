"""``dynasor-agents bench record``: sample K paths per question into a trace bank.

The server is started here with the packaged benchmark model unless
``--base-url`` is given; rerun the same command to resume an interrupted
recording.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from dynasor_agents.demo import data_dir
from dynasor_bench.traces._bank import bank_path
from dynasor_bench.traces._record import (
    SYSTEM_PROMPT,
    RecordSettings,
    record_bank,
    select_questions,
)

__all__ = ["BENCH_MODEL", "DEFAULT_QUESTIONS", "add_commands"]

DEFAULT_QUESTIONS = "singleop:40,addsub:40,multiarith:50,gsm8k:90,math500:30"
"""Default recording mix: easy to hard, 250 questions."""
BENCH_MODEL = "qwen2.5-coder-0.5b"
"""The packaged benchmark model (Qwen2.5-Coder-0.5B-Instruct) the benchmarks serve."""


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``record`` to the ``bench`` command tree."""
    rec = sub.add_parser(
        "record",
        help="sample K paths per question into a trace bank (resumable)",
        description=(
            "Record a trace bank: K sampled paths per question with answers, token counts "
            "and logprob summaries. Starts vLLM with the packaged benchmark model unless "
            "--base-url is given. Rerun the same command to resume an interrupted recording."
        ),
    )
    rec.add_argument("--bank", default="qwen-math", help="bank name or .jsonl path")
    rec.add_argument("--questions", default=DEFAULT_QUESTIONS, help="<dataset>:<count>,...")
    rec.add_argument("--data-dir", type=Path, default=None, help="default: ../shared/data")
    rec.add_argument("-k", "--paths", type=int, default=16, help="paths per question (K)")
    rec.add_argument("--max-tokens", type=int, default=320)
    rec.add_argument("--temperature", type=float, default=0.7)
    rec.add_argument("--top-p", type=float, default=0.95)
    rec.add_argument("--top-logprobs", type=int, default=5)
    rec.add_argument("--seed", type=int, default=0, help="question sample and sampling seed")
    rec.add_argument("--concurrency", type=int, default=2, help="questions in flight")
    rec.add_argument("--base-url", help="use this running server (http://host:port/v1)")
    rec.add_argument("--model", default=BENCH_MODEL, help="served model name")
    rec.add_argument("--api-key", default="EMPTY")
    rec.add_argument("--startup-timeout", type=float, default=300.0)
    rec.set_defaults(run=_record)


def _record(args: argparse.Namespace) -> int:
    from openai import AsyncOpenAI

    questions = select_questions(args.questions, args.data_dir or data_dir(), seed=args.seed)
    settings = RecordSettings(
        model=args.model,
        k=args.paths,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_logprobs=args.top_logprobs,
        system_prompt=SYSTEM_PROMPT,
        seed=args.seed,
    )
    path = bank_path(args.bank)
    print(f"[record] {len(questions)} questions x {args.paths} paths -> {path}", flush=True)

    def run(base_url: str) -> int:
        client = AsyncOpenAI(base_url=base_url, api_key=args.api_key, timeout=3600)
        added = asyncio.run(
            record_bank(client, questions, path, settings, concurrency=args.concurrency)
        )
        print(f"[record] added {added} questions; bank: {path}", flush=True)
        return 0

    if args.base_url:
        return run(args.base_url)
    from dynasor_agents.server import local_server

    with local_server(
        BENCH_MODEL, served_model_name=args.model, timeout=args.startup_timeout, label="record"
    ) as base_url:
        return run(base_url)
