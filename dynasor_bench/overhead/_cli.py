"""``bench overhead`` (also ``python -m dynasor_bench.overhead``): the command line.

Starts plain vLLM and vLLM with the component one after the other (unless their
URLs are given), runs :func:`run_benchmark` and prints the table and verdicts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from dynasor_bench.overhead._benchmark import (
    SERVERS,
    BenchError,
    Workload,
    middleware_micro_us,
    render,
    run_benchmark,
    say,
    targets_met,
)

__all__ = ["add_commands", "main"]

_HELP = "plain vLLM vs vLLM + the Dynasor component: throughput and added latency"
_DESCRIPTION = "Plain vLLM vs vLLM + the Dynasor component on the same workload."


def _arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--rounds", type=int, default=6, help="throughput rounds (order alternates)")
    p.add_argument("--requests", type=int, default=32, help="requests per round and server")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens per request (ignore_eos)")
    p.add_argument("--latency-requests", type=int, default=300, help="one-token requests each")
    p.add_argument("--latency-block", type=int, default=25, help="latency requests per block")
    p.add_argument("--program-size", type=int, default=4, help="requests per program")
    p.add_argument("--micro", type=int, default=4000, help="in-process iterations (0: skip)")
    p.add_argument("--max-num-seqs", type=int, default=8, help="vLLM --max-num-seqs")
    p.add_argument("--base-url-plain", help="use this running plain vLLM (http://host:port/v1)")
    p.add_argument("--base-url-dynasor", help="use this running vLLM with the component")
    p.add_argument("--model", default="smollm2", help="served model name")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--json", type=Path, help="write the raw figures here")
    p.add_argument("--dynasor-first", action="store_true", help="start that server first")
    p.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return p


def _start(names: Sequence[str], args: argparse.Namespace, started: list[Any]) -> dict[str, str]:
    """Start a vLLM for each of ``names``, one after the other; return their root URLs."""
    from dynasor_agents.server import VLLMServer, ensure_checkpoint

    checkpoint = ensure_checkpoint()
    flags = ["--max-model-len", "1024", "--max-num-seqs", str(args.max_num_seqs)]
    for name in names:
        server = VLLMServer(
            checkpoint, served_model_name=args.model, extra_args=flags, middleware=name == "dynasor"
        )
        started.append(server)
        say(f"[bench] starting {name} vLLM on {server.root_url} (log: {server.log_path})")
        server.start(timeout=args.startup_timeout)
    return {name: server.root_url for name, server in zip(names, started, strict=True)}


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``overhead`` to the ``bench`` command tree."""
    parser = sub.add_parser("overhead", help=_HELP, description=_DESCRIPTION)
    _arguments(parser).set_defaults(run=_overhead_command)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dynasor_bench.overhead ARGV``: the same as ``bench overhead ARGV``."""
    parser = argparse.ArgumentParser(
        prog="python -m dynasor_bench.overhead", description=_DESCRIPTION
    )
    return _overhead_command(_arguments(parser).parse_args(argv))


def _overhead_command(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 unless ``--check`` and a target is missed (130 on Ctrl-C)."""
    work = Workload(**{f.name: getattr(args, f.name) for f in fields(Workload)})
    given = {"plain": args.base_url_plain, "dynasor": args.base_url_dynasor}
    urls = {n: u.rstrip("/").removesuffix("/v1") for n, u in given.items() if u}
    servers: list[Any] = []
    try:
        if missing := [n for n in SERVERS if n not in urls]:
            if args.dynasor_first:  # the instance started first measured ~0.4 ms slower
                missing.reverse()
            urls.update(_start(missing, args, servers))
        report = asyncio.run(run_benchmark(urls, work))
        report.params["started"] = {"order": missing, "max_num_seqs": args.max_num_seqs}
        if args.micro:
            say(f"[bench] in-process middleware micro-benchmark ({args.micro} requests)")
            report.micro_us = asyncio.run(middleware_micro_us(args.micro))
    except KeyboardInterrupt:
        print("[bench] interrupted", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"[bench] error: {exc}", file=sys.stderr)
        return 2
    finally:
        for server in servers:
            server.stop()
    print("\n".join(render(report)))
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    return 1 if args.check and not targets_met(report.ratio, report.added_ms) else 0
