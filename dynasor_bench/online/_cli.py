"""``dynasor-agents bench online``: deadline attainment under load, measured and simulated.

One command does the whole comparison and can be rerun to resume:

1. **calibrate** (once): start plain vLLM with the bank's model, time decode
   and prefill, fit the simulator's cost model (``calibration.json``);
2. **measure**: for each server configuration (plain vLLM; our component with
   ``dynasor`` scheduling; with ``gang``), start the server and run every
   system that uses it on the same workloads, one per rate (``rows.jsonl``,
   appended per finished cell, so an interrupted run resumes at the next cell);
3. **simulate**: the same workloads in the simulator with the calibrated costs,
   side by side with the measurement (how far off the simulator is), then a
   finer sweep over ``--seeds`` workloads of ``--sim-programs`` programs each,
   and the projection to an H100 serving an 8B model on one and several
   replicas behind vllm-router (a section per ``--routing`` policy);
4. **report**: tables (headlines with bootstrap 95% intervals, under
   per-program and fixed deadlines) and plots into ``--out`` (``online.md``,
   ``online_headlines.json``, PNGs).

Rates are given as loads, multiples of the rate the baseline can just sustain
(estimated from the calibrated costs), unless ``--rates`` sets them.
``--simulate`` (``--no-measure``) skips the measurement and needs a calibration
from an earlier run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from dynasor_agents.errors import InvalidInputError
from dynasor_bench._args import positive_counts, positive_floats
from dynasor_bench.online._plan import BankShape, bases, capacity, fixed_deadlines
from dynasor_bench.sim._calibrate import Calibration, calibrate_engine
from dynasor_bench.sim._cost import CPU_QWEN_05B, CostModel
from dynasor_bench.sim._route import ROUTING_POLICIES, RoutingPolicy
from dynasor_bench.traces._bank import (
    BankMeta,
    QuestionTrace,
    bank_path,
    load_bank,
    load_meta,
)
from dynasor_bench.traces._cli import BENCH_MODEL
from dynasor_bench.workload._workload import DEFAULT_MIX, SYSTEMS, SystemSpec, make_workload

__all__ = ["add_commands"]

SERVER_GROUPS: tuple[str, ...] = ("plain", "dynasor", "gang", "las", "edf")


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``online`` to the ``bench`` command tree."""
    p = sub.add_parser(
        "online",
        help="deadline attainment under Poisson load, measured and simulated",
        description=(__doc__ or "").split("\n\n")[0],
        allow_abbrev=False,
    )
    p.add_argument("--bank", default="qwen-math", help="trace bank: questions, model settings")
    p.add_argument("--programs", type=int, default=16, help="programs per measured run")
    p.add_argument("--seed", type=int, default=0, help="arrivals, questions and strategies")
    p.add_argument("--loads", default="0.5,1", help="rates as multiples of capacity")
    p.add_argument("--rates", help="absolute rates (programs/s); overrides --loads")
    p.add_argument(
        "--slo-scale", type=float, default=3.0, help="SLO scale of the rate sweep (per-program)"
    )
    p.add_argument(
        "--fixed-slo-scale",
        type=float,
        help="SLO scale of the rate sweep under fixed deadlines (default: --slo-scale)",
    )
    p.add_argument("--scales", default="1,1.5,2,3,4,6,8,12", help="SLO scales of the SLO sweep")
    p.add_argument("--systems", help=f"comma list of: {', '.join(s.name for s in SYSTEMS)}")
    p.add_argument("--results", type=Path, help="results directory (default: in the cache)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="report directory")
    p.add_argument("--model", default="qwen", help="served model name")
    p.add_argument(
        "--max-num-seqs",
        type=int,
        default=32,
        help="vLLM's running-request limit on the measured servers and the CPU simulation "
        "(default 32: a CPU's throughput is flat past it, and beyond it requests queue, "
        "which is where a scheduler decides)",
    )
    p.add_argument(
        "--no-measure", "--simulate", dest="no_measure", action="store_true",
        help="only simulate and report",
    )  # fmt: skip
    p.add_argument(
        "--sim-programs",
        type=int,
        default=1000,
        help="programs per simulated (system, rate, seed) run, all replicas together",
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds per simulated cell: --seed, +1, ...")
    p.add_argument("--reps", type=int, default=1000, help="bootstrap replicates per interval")
    p.add_argument("--replicas", default="1,4", help="replica counts of the GPU projection")
    p.add_argument(
        "--routing",
        default="consistent_hash,random",
        help=f"routing policies of the multi-replica projection: {', '.join(ROUTING_POLICIES)}",
    )
    p.add_argument(
        "--engines", default="cpu,h100", help="simulated sections: cpu (calibrated), h100"
    )
    p.add_argument(
        "--sim-loads",
        default=",".join(f"{0.25 * i:g}" for i in range(1, 13)),
        help="loads of the simulated sweeps (multiples of capacity per replica)",
    )
    p.add_argument(
        "--fixed-load",
        type=float,
        default=1.0,
        help="load (one of --sim-loads) of the tightest SLO and accuracy",
    )
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.set_defaults(run=_online_command)


def _systems(text: str | None) -> list[SystemSpec]:
    if not text:
        return list(SYSTEMS)
    by_name = {s.name: s for s in SYSTEMS}
    unknown = [n for n in text.split(",") if n not in by_name]
    if unknown:
        raise InvalidInputError(f"unknown systems {unknown}; choose from {sorted(by_name)}")
    return [by_name[n] for n in text.split(",")]


def _routing(text: str) -> tuple[RoutingPolicy, ...]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in ROUTING_POLICIES]
    if unknown or not names:
        raise InvalidInputError(
            f"unknown routing policies {unknown or [text]}; choose from {list(ROUTING_POLICIES)}"
        )
    return tuple(p for n in dict.fromkeys(names) for p in ROUTING_POLICIES if p == n)


def _engines(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n for n in text.split(",") if n))
    unknown = [n for n in names if n not in ("cpu", "h100")]
    if unknown:
        raise InvalidInputError(f"unknown engines {unknown}; choose from cpu, h100")
    return names


def _pinned(path: Path, questions: Sequence[QuestionTrace]) -> list[QuestionTrace]:
    """The questions of the first run of these results (the bank may have grown since).

    Every run of one results directory must draw its workloads from the same
    questions, or resumed cells and the simulator's validation would serve
    other programs than the measured ones.
    """
    if not path.exists():
        path.write_text(json.dumps([q.id for q in questions]) + "\n")
        return list(questions)
    ids = json.loads(path.read_text())
    by_id = {q.id: q for q in questions}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise InvalidInputError(
            f"{len(missing)} questions of {path} are not in the bank (e.g. {missing[0]}); "
            "use a new --results directory for another bank"
        )
    return [by_id[i] for i in ids]


def _load_calibration(path: Path) -> Calibration | None:
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return Calibration(
        cost=CostModel(**raw["cost"]),
        request_overhead=raw["request_overhead"],
        decode_seconds={int(k): v for k, v in raw["decode_seconds"].items()},
        prefill_tokens_per_second=raw["prefill_tokens_per_second"],
    )


def _save_calibration(path: Path, cal: Calibration) -> None:
    data = asdict(cal)
    data["decode_seconds"] = {str(k): v for k, v in cal.decode_seconds.items()}
    path.write_text(json.dumps(data, indent=2) + "\n")


def _online_command(args: argparse.Namespace) -> int:
    """Run ``dynasor-agents bench online``; the exit code."""
    from dynasor_agents.server import cache_dir
    from dynasor_bench.online._store import done_cells, load_rows

    for flag in ("programs", "sim_programs", "max_num_seqs", "seeds", "reps"):
        if getattr(args, flag) < 1:
            raise InvalidInputError(f"--{flag.replace('_', '-')} must be >= 1")
    if not args.slo_scale > 0:
        raise InvalidInputError(f"--slo-scale must be > 0, got {args.slo_scale}")
    if args.fixed_slo_scale is not None and not args.fixed_slo_scale > 0:
        raise InvalidInputError(f"--fixed-slo-scale must be > 0, got {args.fixed_slo_scale}")
    routing, engines = _routing(args.routing), _engines(args.engines)
    sim_loads = tuple(positive_floats(args.sim_loads, "--sim-loads"))
    if args.fixed_load not in sim_loads:
        raise InvalidInputError(f"--fixed-load {args.fixed_load:g} must be one of --sim-loads")
    scales, replicas = (
        positive_floats(args.scales, "--scales"),
        positive_counts(args.replicas, "--replicas"),
    )
    systems = _systems(args.systems)
    path = bank_path(args.bank)
    questions, meta = load_bank(path), load_meta(path)
    if meta is None or not questions:
        raise InvalidInputError(
            f"no recorded trace bank at {path}: record one with `dynasor-agents bench record`"
        )
    results = args.results or cache_dir() / "online" / f"{path.stem}-s{args.seed}"
    results.mkdir(parents=True, exist_ok=True)
    questions = _pinned(results / "questions.json", questions)
    shape = BankShape.of(questions)
    cal_path, rows_path = results / "calibration.json", results / "rows.jsonl"
    cal = _load_calibration(cal_path)
    if cal is None and args.no_measure and "cpu" in engines:
        raise InvalidInputError(
            f"no calibration in {results}; run without --simulate first, or simulate only "
            "the projection (--engines h100)"
        )
    rows = load_rows(rows_path, missing_ok=True)
    print(f"[online] {len(questions)} questions from {path}; results in {results}", flush=True)

    if not args.no_measure:
        for group in SERVER_GROUPS:
            members = [s for s in systems if s.scheduling == group]
            if not members:
                continue
            if cal is not None:
                rates, _ = _rates_and_bases(args, cal, shape)
                todo = {(s.name, r) for s in members for r in rates} - done_cells(
                    rows, count=args.programs
                )
                if not todo:
                    continue
            cal = _measure_group(args, group, members, questions, meta, cal, cal_path, rows_path)
            rows = load_rows(rows_path)
    rates = []
    base: dict[str, float] = {}
    fixed: dict[str, float] = {}
    if cal is not None:
        rates, base = _rates_and_bases(args, cal, shape)
        fixed = _fixed(args, cal, questions, meta)
        print(f"[online] rates {rates}; deadline bases {base}; fixed deadlines {fixed}", flush=True)
    elif not args.no_measure:
        raise InvalidInputError("no calibration: nothing was measured")
    from dynasor_bench.online._output import ReportSettings, write_report

    settings = ReportSettings(
        out=args.out,
        command="dynasor-agents bench "
        + shlex.join(sys.argv[2:] if len(sys.argv) > 2 else ["online"]),
        programs=args.programs,
        sim_programs=args.sim_programs,
        seed=args.seed,
        slo_scale=args.slo_scale,
        seeds=args.seeds,
        fixed_slo_scale=args.fixed_slo_scale,
        routing=routing,
        reps=args.reps,
        engines=engines,
        sim_loads=sim_loads,
        fixed_load=args.fixed_load,
    )
    write_report(
        settings, systems=systems, questions=questions, meta=meta, shape=shape, cal=cal,
        rates=rates, base=base, rows=[r for r in rows if r.rate in rates],
        scales=scales, replicas=replicas, fixed=fixed,
    )  # fmt: skip
    return 0


def _rates_and_bases(
    args: argparse.Namespace, cal: Calibration, shape: BankShape
) -> tuple[list[float], dict[str, float]]:
    """The run's rates (from ``--rates``, or ``--loads`` x capacity) and deadline bases."""
    base = bases(cal.cost, shape, DEFAULT_MIX, overhead=cal.request_overhead)
    cap = capacity(cal.cost, shape, DEFAULT_MIX)
    if args.rates:
        rates = positive_floats(args.rates, "--rates")
    else:
        rates = [round(load * cap, 4) for load in positive_floats(args.loads, "--loads")]
    return rates, base


def _fixed(
    args: argparse.Namespace, cal: Calibration, questions: Sequence[QuestionTrace], meta: BankMeta
) -> dict[str, float]:
    """The fixed deadlines (paper's form) of the CPU runs, from the calibrated cost model."""
    return fixed_deadlines(
        questions, cal.cost, DEFAULT_MIX, max_tokens=meta.max_tokens,
        overhead=cal.request_overhead, seed=args.seed,
    )  # fmt: skip


def _measure_group(
    args: argparse.Namespace,
    group: str,
    members: Sequence[SystemSpec],
    questions: Sequence[QuestionTrace],
    meta: BankMeta,
    cal: Calibration | None,
    cal_path: Path,
    rows_path: Path,
) -> Calibration:
    """Start the server of ``group``, calibrate if needed, run its pending cells."""
    from dynasor_agents.server import ServerConfig, VLLMServer, ensure_checkpoint

    plain = group == "plain"
    server = VLLMServer(
        ensure_checkpoint(model=BENCH_MODEL),
        served_model_name=args.model,
        extra_args=["--max-model-len", "2048", "--max-num-seqs", str(args.max_num_seqs)],
        middleware=not plain,
        config=None if plain else ServerConfig.model_validate({"scheduling": group}),
    )
    print(f"[online] starting {group} vLLM on {server.root_url}", flush=True)
    with server.start(timeout=args.startup_timeout):
        if cal is None:
            print("[online] calibrating the cost model on the idle server", flush=True)
            limits = replace(CPU_QWEN_05B, name="cpu-calibrated", max_num_seqs=args.max_num_seqs)
            cal = asyncio.run(
                calibrate_engine(
                    server.root_url,
                    args.model,
                    base=limits,
                    temperature=meta.temperature,
                    top_p=meta.top_p,
                )
            )
            _save_calibration(cal_path, cal)
            print(f"[online] {cal}", flush=True)
        rates, base = _rates_and_bases(args, cal, BankShape.of(questions))
        fixed = _fixed(args, cal, questions, meta)
        asyncio.run(
            _run_cells(
                server.root_url,
                plain,
                members,
                rates,
                base,
                fixed,
                questions,
                meta,
                args,
                rows_path,
            )
        )
    return cal


async def _run_cells(
    root_url: str,
    plain: bool,
    members: Sequence[SystemSpec],
    rates: Sequence[float],
    base: dict[str, float],
    fixed: dict[str, float],
    questions: Sequence[QuestionTrace],
    meta: BankMeta,
    args: argparse.Namespace,
    rows_path: Path,
) -> None:
    """Run each pending (system, rate) cell in turn on one server; append its rows."""
    from langchain_openai import ChatOpenAI

    from dynasor_agents.program import DynasorClient
    from dynasor_bench.online._run import run_online
    from dynasor_bench.online._store import append_rows, done_cells, load_rows

    chat = ChatOpenAI(
        base_url=root_url + "/v1",
        api_key="EMPTY",  # type: ignore[arg-type]
        model=args.model,
        temperature=meta.temperature,
        top_p=meta.top_p,
        max_retries=0,
        timeout=3600,
    )
    client = None if plain else DynasorClient(root_url)
    done = done_cells(load_rows(rows_path, missing_ok=True), count=args.programs)
    try:
        for system in members:
            for rate in rates:
                if (system.name, rate) in done:
                    continue
                workload = make_workload(
                    questions, rate=rate, count=args.programs, seed=args.seed, base=base,
                    fixed=fixed,
                )  # fmt: skip
                rows = await run_online(
                    workload,
                    system,
                    chat=chat,
                    client=client,
                    system_prompt=meta.system_prompt,
                    max_tokens=meta.max_tokens,
                )
                append_rows(rows_path, rows)
    finally:
        if client is not None:
            await client.aclose()
