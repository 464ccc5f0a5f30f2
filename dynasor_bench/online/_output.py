"""The report of ``bench online``: measured runs, the simulator beside them, projections.

:func:`write_report` takes the measured rows and the calibration and writes
``online.md`` (every table, the command, the assumptions) and the plots into
the output directory:

* the measured comparison, with the simulator's prediction for the very same
  workloads drawn dashed over it, and a validation table of how far off the
  simulator is, cell by cell;
* a finer sweep of the calibrated CPU engine in the simulator;
* the projection to an H100 serving an 8B model, on one replica and on
  several behind an affinity router (rates scaled by the replica count).

Example:
    >>> loads_grid(3.0, 0.5)
    [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynasor_bench.online._plan import BankShape, bases, capacity, sweep
from dynasor_bench.online._plots import plot_online
from dynasor_bench.online._report import (
    headline_table,
    headlines,
    rate_table,
    slo_table,
    summarize_cells,
)
from dynasor_bench.online._store import attainment, latency_percentile
from dynasor_bench.sim._calibrate import Calibration
from dynasor_bench.sim._cost import H100_8B, CostModel
from dynasor_bench.traces._bank import BankMeta, QuestionTrace
from dynasor_bench.workload._workload import DEFAULT_MIX, OnlineRow, SystemSpec

__all__ = ["ONE_ROUND", "ReportSettings", "loads_grid", "validation_table", "write_report"]


@dataclass(frozen=True)
class ReportSettings:
    """What the report of ``bench online`` needs of the run's settings.

    Attributes:
        out: The report directory.
        command: The command line that produced the report (shown in it).
        programs: Programs per measured run.
        sim_programs: Programs per simulated run (per replica).
        seed: Seed of arrivals, questions and strategies.
        slo_scale: SLO scale of the rate sweep.
    """

    out: Path
    command: str
    programs: int
    sim_programs: int
    seed: int
    slo_scale: float


ONE_ROUND = SystemSpec(
    "dynasor-1round",
    "dynasor",
    True,
    "as dynasor, all samples at once and a mid-round stop (projection only)",
    rounds=1,
)


def loads_grid(top: float, step: float) -> list[float]:
    """Loads ``step, 2 step, ..., top``."""
    return [round(step * i, 6) for i in range(1, round(top / step) + 1)]


def validation_table(
    measured: Sequence[OnlineRow], simulated: Sequence[OnlineRow], slo_scale: float
) -> tuple[str, float]:
    """Measured against simulated per (system, rate); and the mean absolute latency error.

    Returns:
        The markdown table and the mean over cells of ``|sim - real| / real``
        of the mean latency.
    """
    lines = [
        f"| system | rate | attainment @{slo_scale:g} real / sim | mean latency real / sim (s) "
        "| P90 real / sim (s) | tokens/program real / sim |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    errors = []
    for system in dict.fromkeys(r.system for r in measured):
        for rate in sorted({r.rate for r in measured if r.system == system}):
            real = [r for r in measured if r.system == system and r.rate == rate]
            sim = [r for r in simulated if r.system == system and np.isclose(r.rate, rate)]
            if not sim:
                continue
            mean_real = float(np.mean([r.latency for r in real]))
            mean_sim = float(np.mean([r.latency for r in sim]))
            errors.append(abs(mean_sim - mean_real) / mean_real)
            lines.append(
                f"| {system} | {rate:g} | {attainment(real, slo_scale):.0%} / "
                f"{attainment(sim, slo_scale):.0%} | {mean_real:.1f} / {mean_sim:.1f} | "
                f"{latency_percentile(real, 90):.1f} / {latency_percentile(sim, 90):.1f} | "
                f"{np.mean([r.completion_tokens for r in real]):.0f} / "
                f"{np.mean([r.completion_tokens for r in sim]):.0f} |"
            )
    return "\n".join(lines), float(np.mean(errors)) if errors else float("nan")


def _section(
    title: str,
    rows: Sequence[OnlineRow],
    png: Path,
    *,
    slo_scale: float,
    fixed_rate: float,
    scales: Sequence[float],
    overlay: Sequence[OnlineRow] | None = None,
) -> list[str]:
    """Plot ``rows`` into ``png`` and tabulate them under ``title``.

    With ``overlay`` (the simulator's rows for the same workloads), ``rows``
    are measured ones and the plot draws both; without, ``rows`` are simulated.
    """
    if overlay is None:
        plot_online(png, (), rows, slo_scale=slo_scale, fixed_rate=fixed_rate, scales=scales)
    else:
        plot_online(png, rows, overlay, slo_scale=slo_scale, fixed_rate=fixed_rate, scales=scales)
    return [
        f"### {title}",
        "",
        headline_table(headlines(rows, slo_scale=slo_scale, fixed_rate=fixed_rate)),
        "",
        f"Attainment and latency by rate (SLO scale {slo_scale:g}):",
        "",
        rate_table(summarize_cells(rows, slo_scale)),
        "",
        f"Attainment by SLO scale at rate {fixed_rate:g}/s:",
        "",
        slo_table(rows, scales, rate=fixed_rate),
        "",
    ]


def write_report(
    settings: ReportSettings,
    *,
    systems: Sequence[SystemSpec],
    questions: Sequence[QuestionTrace],
    meta: BankMeta,
    shape: BankShape,
    cal: Calibration,
    rates: Sequence[float],
    base: dict[str, float],
    rows: Sequence[OnlineRow],
    scales: Sequence[float],
    replicas: Sequence[int],
) -> Path:
    """Simulate, tabulate and plot; return the written ``online.md``.

    ``scales`` are the SLO scales of the SLO sweep and ``replicas`` the
    replica counts of the projection (both checked by the caller).
    """
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    slo = float(settings.slo_scale)
    common: dict[str, Any] = {
        "seed": settings.seed,
        "mix": DEFAULT_MIX,
        "max_tokens": meta.max_tokens,
    }
    cpu_cap = capacity(cal.cost, shape, DEFAULT_MIX)
    mid_rate = rates[len(rates) // 2]
    doc = [
        "# Online serving under load",
        "",
        "Produced by:",
        "",
        "```bash",
        settings.command,
        "```",
        "",
        f"Bank: {len(questions)} questions; mean path {shape.path_tokens:.0f} tokens, "
        f"prompt {shape.prompt_tokens:.0f}; max_tokens {meta.max_tokens}.",
        f"Calibrated CPU engine: step {cal.cost.step_base * 1000:.1f} ms + "
        f"{cal.cost.per_seq * 1000:.2f} ms per running sequence; prefill "
        f"{cal.prefill_tokens_per_second:.0f} tokens/s; request overhead "
        f"{cal.request_overhead * 1000:.0f} ms; baseline capacity ~{cpu_cap:.3f} programs/s.",
        "Deadline bases (idle latency at difficulty 1): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in base.items())
        + ".",
        "",
    ]
    if rows:
        sim_same = sweep(
            questions, systems, rates, cost=cal.cost, count=settings.programs, base=base,
            overhead=cal.request_overhead, label="validate", **common,
        )  # fmt: skip
        table, error = validation_table(rows, sim_same, slo)
        doc += _section(
            f"Measured on the CPU server ({settings.programs} programs per run)",
            rows, out / "online_measured.png", overlay=sim_same,
            slo_scale=slo, fixed_rate=mid_rate, scales=scales,
        )  # fmt: skip
        doc += [
            "### Simulator against the measured runs (same workloads)",
            "",
            table,
            "",
            f"Mean absolute error of the mean latency over cells: {error:.0%}.",
            "",
        ]
    grid = loads_grid(3.0, 0.25)
    cpu_rates = [round(g * cpu_cap, 5) for g in grid]
    cpu_rows = sweep(
        questions, systems, cpu_rates, cost=cal.cost, count=settings.sim_programs, base=base,
        overhead=cal.request_overhead, label="simulate cpu", **common,
    )  # fmt: skip
    cpu_mid = cpu_rates[grid.index(1.0)]
    doc += _section(
        f"Simulated CPU engine ({settings.sim_programs} programs per run)",
        cpu_rows, out / "online_sim_cpu.png", slo_scale=slo, fixed_rate=cpu_mid, scales=scales,
    )  # fmt: skip
    # On a GPU a round costs a whole path's time whatever its width, so the
    # projection adds Dynasor with one round (all samples at once, mid-round stop).
    gpu_systems = [*systems, ONE_ROUND]
    doc += _projection(
        settings, gpu_systems, questions, shape, H100_8B, grid, slo, scales, replicas, common
    )
    path = out / "online.md"
    path.write_text("\n".join(doc) + "\n")
    print(f"[online] wrote {path}", flush=True)
    return path


def _projection(
    settings: ReportSettings,
    systems: Sequence[SystemSpec],
    questions: Sequence[QuestionTrace],
    shape: BankShape,
    cost: CostModel,
    grid: Sequence[float],
    slo: float,
    scales: Sequence[float],
    replica_counts: Sequence[int],
    common: dict[str, Any],
) -> list[str]:
    base = bases(cost, shape, DEFAULT_MIX, overhead=0.0)
    cap = capacity(cost, shape, DEFAULT_MIX)
    doc = [
        f"## Projection: {cost.name}",
        "",
        f"Baseline capacity ~{cap:.2f} programs/s per replica; deadline bases "
        + ", ".join(f"{k} {v:.2f} s" for k, v in base.items())
        + ".",
        "",
    ]
    for replicas in sorted(replica_counts):
        rates = [round(g * cap * replicas, 5) for g in grid]
        rows = sweep(
            questions, systems, rates, cost=cost, count=settings.sim_programs * replicas,
            base=base, replicas=replicas, label=f"simulate {cost.name} x{replicas}",
            **common,
        )  # fmt: skip
        mid = rates[list(grid).index(1.0)]
        doc += _section(
            f"{replicas} replica(s), {settings.sim_programs * replicas} programs per run",
            rows, settings.out / f"online_{cost.name}_x{replicas}.png",
            slo_scale=slo, fixed_rate=mid, scales=scales,
        )  # fmt: skip
    return doc
