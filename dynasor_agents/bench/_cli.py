"""``dynasor-agents bench``: record a trace bank, replay policies on it, calibrate.

* ``bench record`` samples K paths per question from a real server (started
  here with the packaged benchmark model unless ``--base-url`` is given) into a
  trace bank outside the repository; rerun the same command to resume.
* ``bench replay`` evaluates stopping and allocation policies on a bank.
* ``bench calibrate`` picks thresholds for a target accuracy or saving and
  saves them as a controller config.
* ``bench online`` serves programs arriving online to four systems and
  reports deadline attainment, measured and simulated (see ``_online_cli``).
* ``bench live`` runs a few policies against the real server on a bank's
  questions and prints them beside replay's prediction for the same questions.

Example:
    >>> bench_main(["record", "--questions", "nope"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dynasor_agents.errors.InvalidInputError: bad question spec 'nope': ...
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from dynasor_agents.bench._record import (
    SYSTEM_PROMPT,
    RecordSettings,
    record_bank,
    select_questions,
)
from dynasor_agents.bench._traces import bank_path

__all__ = ["DEFAULT_QUESTIONS", "bench_main", "data_dir"]

DEFAULT_QUESTIONS = "singleop:40,addsub:40,multiarith:50,gsm8k:90,math500:30"
"""Default recording mix: easy to hard, 250 questions."""
BENCH_MODEL = "qwen2.5-coder-0.5b"


def data_dir() -> Path:
    """The benchmark data directory: ``$DYNASOR_DATA_DIR`` or ``../shared/data``."""
    env = os.environ.get("DYNASOR_DATA_DIR")
    return Path(env) if env else Path("..") / "shared" / "data"


def _record_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


class LiveMethod(NamedTuple):
    """A policy ``bench live`` runs: its terms, round sizes and whether votes are weighted
    by trace confidence (``confidence_window``, replayed with ``weighted=True``)."""

    terms: list[tuple[str, dict[str, float]]]
    first_round: int
    round_size: int
    weighted: bool = False


LIVE_METHODS: dict[str, LiveMethod] = {
    "fixed-16": LiveMethod([("max_samples", {"n": 16})], 16, 16),
    "certaindex-0.7": LiveMethod(
        [("threshold", {"value": 0.7}), ("max_samples", {"n": 16})], 5, 11
    ),
    "certaindex-step1-0.7": LiveMethod(
        [("threshold", {"value": 0.7}), ("max_samples", {"n": 16})],
        5,
        1,
    ),
    "adaptive-consistency-0.95": LiveMethod(
        [("adaptive_consistency", {"threshold": 0.95}), ("max_samples", {"n": 16})],
        1,
        1,
    ),
    "hopeless-0.7-below-0.3": LiveMethod(
        [
            ("threshold", {"value": 0.7}),
            ("hopeless", {"below": 0.3, "after": 8}),
            ("max_samples", {"n": 16}),
        ],
        5,
        1,
    ),
    "wconsensus-hopeless-0.6-below-0.1": LiveMethod(
        [
            ("weighted_consensus", {"threshold": 0.6, "min_samples": 4}),
            ("hopeless", {"below": 0.1, "after": 8}),
            ("max_samples", {"n": 16}),
        ],
        4,
        1,
        weighted=True,
    ),
}
"""The policies ``bench live`` runs."""


def _live_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    live = sub.add_parser(
        "live",
        help="run policies live on a bank's questions, beside replay's prediction",
        description=(
            "Run each policy of the live set (self-consistency, K=16 cap) against a running "
            "server on the bank's first --limit questions, one policy at a time, and print "
            "live accuracy and engine tokens beside replay's mean and spread on the same "
            "questions."
        ),
    )
    live.add_argument("--bank", default="qwen-math", help="bank name or .jsonl path")
    live.add_argument("--base-url", required=True, help="the server (http://host:port/v1)")
    live.add_argument("--api-key", default="EMPTY")
    live.add_argument("--limit", type=int, default=16, help="questions (the bank's first)")
    live.add_argument("--orderings", type=int, default=50, help="replay orderings")
    live.add_argument("--concurrency", type=int, default=2, help="programs in flight")
    live.add_argument("--methods", help=f"comma list of: {', '.join(LIVE_METHODS)}")


def _live(args: argparse.Namespace) -> int:
    from dynasor_agents.bench._live import run_live, summarize
    from dynasor_agents.bench._methods import ControllerMethod
    from dynasor_agents.bench._report import run_replay
    from dynasor_agents.bench._spec import ControllerSpec
    from dynasor_agents.bench._traces import load_bank, load_meta
    from dynasor_agents.errors import InvalidInputError

    path = bank_path(args.bank)
    meta = load_meta(path)
    if meta is None:
        raise InvalidInputError(f"{path} has no metadata (record it with `bench record`)")
    questions = load_bank(path)[: args.limit]
    names = args.methods.split(",") if args.methods else list(LIVE_METHODS)
    unknown = [n for n in names if n not in LIVE_METHODS]
    if unknown:
        raise InvalidInputError(f"unknown live methods {unknown}; known: {list(LIVE_METHODS)}")
    specs = {
        n: ControllerSpec.of(LIVE_METHODS[n].terms, first_round=LIVE_METHODS[n].first_round,
                             round_size=LIVE_METHODS[n].round_size)
        for n in names
    }  # fmt: skip
    weighted = {n for n in names if LIVE_METHODS[n].weighted}
    methods = [ControllerMethod(n, {}, spec, weighted=n in weighted) for n, spec in specs.items()]
    replay = run_replay(questions, methods, orderings=args.orderings)
    rows, engine = asyncio.run(
        run_live(
            args.base_url,
            questions,
            {n: spec.build for n, spec in specs.items()},
            meta,
            api_key=args.api_key,
            concurrency=args.concurrency,
            weighted=weighted,
        )
    )
    live = summarize(rows)
    print(f"\nLive check on {len(questions)} questions of {path.name} ({meta.model}, K<=16)\n")
    print("| method | live accuracy % | replay accuracy % | live engine tokens/q | "
          "replay tokens/q | live client tokens/q |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for n in names:
        stats = replay.find(n).stats()
        print(
            f"| {n} | {100 * live[n].accuracy:.1f} | {100 * stats.accuracy:.1f} ± "
            f"{100 * stats.accuracy_std:.1f} | {engine[n]:.0f} | {stats.tokens:.0f} ± "
            f"{stats.tokens_std:.0f} | {live[n].tokens:.0f} |"
        )
    return 0


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


def bench_main(argv: Sequence[str]) -> int:
    """Run ``dynasor-agents bench ARGV``; the exit code.

    Raises:
        SystemExit: Bad arguments or ``--help`` (from argparse).
        InvalidInputError: Bad input (a malformed spec, a missing bank).
    """
    argv = list(argv)
    if argv and argv[0] == "replay":
        from dynasor_agents.bench._replay_cli import replay_main

        return replay_main(argv[1:])
    if argv and argv[0] == "online":
        from dynasor_agents.bench._online_cli import online_main

        return online_main(argv[1:])
    if argv and argv[0] == "calibrate":
        from dynasor_agents.bench._calibrate import calibrate_main

        return calibrate_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="dynasor-agents bench",
        description="Benchmarks on recorded traces. Commands: record, replay, calibrate, live, "
        "online "
        "(`dynasor-agents bench COMMAND --help`).",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _record_parser(sub)
    _live_parser(sub)
    sub.add_parser("replay", help="evaluate stopping and allocation policies on a bank")
    sub.add_parser("calibrate", help="choose thresholds for a target accuracy or saving")
    sub.add_parser("online", help="deadline attainment under Poisson load, measured and simulated")
    args = parser.parse_args(argv)
    return _live(args) if args.command == "live" else _record(args)
