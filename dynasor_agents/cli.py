"""The ``dynasor-agents`` command line.

Subcommands:

* ``demo``: start a local vLLM with the Dynasor component (the CPU recipe on a
  CPU build), run Certaindex early-stop self-consistency beside fixed-N
  self-consistency, print the answers, samples, tokens and the savings.
* ``prepare-model``: convert the packaged SmolLM2-135M-Instruct GGUF to a cached
  Hugging Face checkpoint (done on demand by ``demo`` and the tests too).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from dynasor_agents.errors import DynasorError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynasor-agents",
        description="Certaindex-guided reasoning programs on vLLM.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="early-stop self-consistency vs fixed-N on a local vLLM",
        description=(
            "Start vLLM on 127.0.0.1 with the Dynasor component (unless --base-url is "
            "given) and compare Certaindex early stop with fixed-N self-consistency."
        ),
    )
    demo.add_argument("--dataset", help="JSONL file of problems, e.g. ../shared/data/gsm8k.jsonl")
    demo.add_argument("--limit", type=int, default=None, help="problems to run (dataset: 5)")
    demo.add_argument("--samples", type=int, default=16, help="fixed N, and Dynasor's cap")
    demo.add_argument("--first-round", type=int, default=4, help="samples per detect step")
    demo.add_argument("--threshold", type=float, default=0.8, help="Certaindex to stop at")
    demo.add_argument("--temperature", type=float, default=0.5, help="sampling temperature")
    demo.add_argument("--max-tokens", type=int, default=None, help="cap per sample")
    demo.add_argument("--concurrency", type=int, default=2, help="problems in flight")
    demo.add_argument("--base-url", help="use this running server (http://host:port/v1)")
    demo.add_argument("--model", default="smollm2", help="served model name")
    demo.add_argument("--api-key", default="EMPTY")
    demo.add_argument("--startup-timeout", type=float, default=300.0)

    sub.add_parser("prepare-model", help="convert the packaged test model once (cached)")
    return parser


def _demo(args: argparse.Namespace) -> int:
    from dynasor_agents.bench import DEFAULT_PROBLEMS, load_problems, run_demo

    if args.dataset:
        problems = load_problems(args.dataset, limit=args.limit or 5)
    else:
        problems = list(DEFAULT_PROBLEMS)[: args.limit]
    short = not args.dataset
    max_tokens = args.max_tokens or (48 if short else 256)

    def run(base_url: str) -> None:
        asyncio.run(
            run_demo(
                problems,
                base_url=base_url,
                model=args.model,
                api_key=args.api_key,
                samples=args.samples,
                first_round=args.first_round,
                certainty=args.threshold,
                temperature=args.temperature,
                max_tokens=max_tokens,
                short=short,
                concurrency=args.concurrency,
            )
        )

    if args.base_url:
        run(args.base_url)
        return 0
    from dynasor_agents.server import VLLMServer, ensure_checkpoint

    checkpoint = ensure_checkpoint()
    server = VLLMServer(
        checkpoint, served_model_name=args.model, extra_args=["--max-model-len", "2048"]
    )
    print(f"[dynasor] starting vLLM on {server.root_url} (log: {server.log_path})", flush=True)
    with server.start(timeout=args.startup_timeout):
        print("[dynasor] server ready", flush=True)
        run(server.base_url)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dynasor-agents`` console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "prepare-model":
            from dynasor_agents.server import ensure_checkpoint

            print(ensure_checkpoint())
            return 0
    except (DynasorError, FileNotFoundError) as exc:
        print(f"dynasor-agents: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
