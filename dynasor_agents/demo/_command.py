"""``dynasor-agents demo``: the command line of the main job.

By default it starts vLLM on 127.0.0.1 with the packaged Qwen2.5-Coder-0.5B and
the Dynasor component, draws the default mix of math questions from
``../shared/data`` and runs both arms (:func:`run_demo`). ``--model smollm2``
is the quick smoke run (the 135M test model on the built-in trivia);
``--questions``, ``--dataset`` and ``--limit`` choose the questions, ``--samples``
and the Dynasor flags the sample budget, ``--base-url`` a running server.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, Final

from dynasor_agents.demo._problems import (
    DEFAULT_MIX,
    DEFAULT_PROBLEMS,
    Problem,
    data_dir,
    load_problems,
    mixed_problems,
)
from dynasor_agents.demo._run import DemoSettings, run_demo
from dynasor_agents.errors import InvalidInputError

__all__ = ["DEMO_MODELS", "add_demo_parser", "demo_command"]

DEMO_MODELS: Final = ("qwen2.5-coder-0.5b", "smollm2")
"""Packaged models the demo can start (the first is the default)."""

_DEFAULTS = DemoSettings()


def add_demo_parser(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``demo`` to a command tree."""
    demo = sub.add_parser(
        "demo",
        help="Certaindex early stop vs fixed-N self-consistency on a local vLLM",
        description=(
            "Start vLLM on 127.0.0.1 with the Dynasor component and a packaged model "
            "(unless --base-url is given), run self-consistency with Certaindex early stop "
            "and with a fixed sample count on the same questions, and print per question "
            "the answers, whether they are right, samples and tokens, then accuracy, "
            "tokens and wall time of each arm."
        ),
    )
    demo.add_argument(
        "--model",
        default=DEMO_MODELS[0],
        choices=DEMO_MODELS,
        help="packaged model to serve (smollm2: a quick smoke run on trivia; its answers "
        "are near random)",
    )
    demo.add_argument(
        "--questions",
        help=f"<dataset>:<count>,... from the data directory (default: {DEFAULT_MIX}; "
        "with smollm2 the built-in trivia)",
    )
    demo.add_argument("--dataset", help="a JSONL file of problems instead (its first --limit)")
    demo.add_argument("--limit", type=int, default=None, help="run only the first N questions")
    demo.add_argument("--data-dir", help="where the datasets are (default: ../shared/data)")
    demo.add_argument("--seed", type=int, default=0, help="which questions the mix draws")
    demo.add_argument(
        "--samples", type=int, default=_DEFAULTS.samples, help="fixed N, and Dynasor's cap"
    )
    demo.add_argument("--first-round", type=int, default=_DEFAULTS.first_round)
    demo.add_argument(
        "--round-size", type=int, default=_DEFAULTS.round_size, help="samples per later step"
    )
    demo.add_argument("--threshold", type=float, default=_DEFAULTS.threshold)
    demo.add_argument("--temperature", type=float, default=_DEFAULTS.temperature)
    demo.add_argument("--max-tokens", type=int, default=None, help="cap per sample")
    demo.add_argument("--concurrency", type=int, default=_DEFAULTS.concurrency)
    demo.add_argument("--base-url", help="use this running server (http://host:port/v1)")
    demo.add_argument("--served-model", help="model name on --base-url (default: --model)")
    demo.add_argument("--api-key", default="EMPTY")
    demo.add_argument("--startup-timeout", type=float, default=300.0)


def _problems(args: argparse.Namespace, short: bool) -> list[Problem]:
    if args.dataset:
        return load_problems(args.dataset, limit=args.limit or 5)
    if short and not args.questions:
        return list(DEFAULT_PROBLEMS)[: args.limit]
    directory = args.data_dir or data_dir()
    return mixed_problems(args.questions or DEFAULT_MIX, directory, seed=args.seed)[: args.limit]


def _settings(args: argparse.Namespace, short: bool) -> DemoSettings:
    settings = DemoSettings(
        samples=args.samples,
        first_round=args.first_round,
        round_size=args.round_size,
        threshold=args.threshold,
        temperature=args.temperature,
        max_tokens=args.max_tokens or (48 if short else _DEFAULTS.max_tokens),
        concurrency=args.concurrency,
        short=short,
    )
    for name in ("samples", "first_round", "round_size", "max_tokens", "concurrency"):
        if getattr(settings, name) < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be >= 1")
    if not 0.0 <= settings.threshold <= 1.0:
        raise InvalidInputError(f"--threshold must be in [0, 1], got {settings.threshold}")
    if settings.temperature < 0:
        raise InvalidInputError(f"--temperature must be >= 0, got {settings.temperature}")
    return settings


def demo_command(args: argparse.Namespace) -> int:
    """Run the demo parsed by :func:`add_demo_parser`; the exit code.

    Raises:
        InvalidInputError: Bad settings, a missing dataset.
    """
    from langchain_openai import ChatOpenAI

    from dynasor_agents.program import DynasorClient
    from dynasor_agents.server import local_server

    short = args.model == "smollm2" and not args.dataset and not args.questions
    problems = _problems(args, short)
    settings = _settings(args, short)
    served = args.served_model or args.model

    def run(base_url: str) -> None:
        chat = ChatOpenAI(
            base_url=base_url,
            api_key=args.api_key,
            model=served,
            temperature=settings.temperature,
            max_retries=1,
            timeout=600,
        )
        key = None if args.api_key == "EMPTY" else args.api_key
        client = DynasorClient(base_url, api_key=key)
        asyncio.run(run_demo(problems, chat, settings, client=client))

    if args.base_url:
        run(args.base_url)
        return 0
    with local_server(args.model, served_model_name=served, timeout=args.startup_timeout) as url:
        run(url)
    return 0
