"""``dynasor-agents bench engine``: decode throughput per dtype, side by side."""

from __future__ import annotations

import argparse
from typing import Any

from dynasor_agents import InvalidInputError
from dynasor_agents.server import CpuInfo, ensure_checkpoint, save_measurement
from dynasor_bench._args import positive_counts
from dynasor_bench.engine._throughput import measure_dtypes, render_speeds
from dynasor_bench.traces._cli import BENCH_MODEL

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``engine`` to the ``bench`` command tree."""
    p = sub.add_parser(
        "engine",
        help="decode throughput per dtype on this CPU, side by side (and save the winner)",
        description=(
            "Start the packaged model's vLLM once per dtype, in alternating rounds, and time "
            "batches of fixed-length generations at each concurrency. With --save the "
            "result is stored beside the converted model, where `serve`, the demo and the "
            "tests read it to choose the dtype on this CPU."
        ),
    )
    p.add_argument("--model", default=BENCH_MODEL, choices=("smollm2", BENCH_MODEL))
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma list, first is 'A'")
    p.add_argument("--streams", default="1,8,16", help="concurrencies to time")
    p.add_argument("--tokens", type=int, default=64, help="tokens per request")
    p.add_argument("--rounds", type=int, default=2, help="server starts per dtype")
    p.add_argument("--save", action="store_true", help="save the result beside the model")
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.set_defaults(run=_engine_command)


def _engine_command(args: argparse.Namespace) -> int:
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if len(dtypes) < 1 or len(set(dtypes)) != len(dtypes):
        raise InvalidInputError(f"--dtypes must name distinct dtypes, got {args.dtypes!r}")
    streams = positive_counts(args.streams, "--streams")
    if args.rounds < 1 or args.tokens < 2:
        raise InvalidInputError("--rounds must be >= 1 and --tokens >= 2")
    model_dir = ensure_checkpoint(model=args.model)
    cpu = CpuInfo.read()
    flags = sorted(f for f in cpu.flags if f.startswith(("avx", "amx", "fma", "f16c")))
    print(f"[engine] {args.model} on {cpu.cores} cores, flags: {' '.join(flags) or '-'}")
    speeds = measure_dtypes(
        model_dir,
        dtypes=dtypes,
        streams=streams,
        tokens=args.tokens,
        rounds=args.rounds,
        startup_timeout=args.startup_timeout,
    )
    print()
    print(f"Decode throughput of {args.model}, {args.tokens}-token requests, "
          f"mean (min-max) over {args.rounds} rounds:")  # fmt: skip
    print()
    print(render_speeds(speeds))
    overall = speeds.overall()
    print()
    print("At 8+ streams: " + ", ".join(f"{d} {v:.1f} tokens/s" for d, v in overall.items()))
    if args.save and len(overall) == 2:
        path = save_measurement(model_dir, cpu, overall)
        best = max(overall, key=lambda d: overall[d])
        print(f"[engine] saved {path}: the launcher now picks {best}")
    return 0
