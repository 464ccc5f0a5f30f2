"""The report of ``bench online``: measured runs, the simulator beside them, projections.

:func:`write_report` takes the measured rows and the calibration and writes
``online.md`` (every table, the command, the assumptions) and the plots into
the output directory:

* the measured comparison, with the simulator's prediction for the very same
  workloads drawn dashed over it, and a validation table of how far off the
  simulator is, cell by cell;
* a finer sweep of the calibrated CPU engine in the simulator;
* the projection to an H100 serving an 8B model, on one replica and on
  several behind vllm-router (one section per routing policy; rates scaled by
  the replica count).

Every simulated section runs ``seeds`` workloads of ``sim_programs`` programs
per (system, rate) and reports each system's headlines under both deadline
forms with bootstrap 95% intervals (:mod:`._stats`); the numbers also go to
``online_headlines.json``.

Example:
    >>> loads_grid(3.0, 0.5)
    [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynasor_agents.errors import InvalidInputError
from dynasor_bench.online._plan import BankShape, bases, capacity, fixed_deadlines, sweep
from dynasor_bench.online._plots import plot_online
from dynasor_bench.online._report import (
    headline_table,
    headlines,
    rate_table,
    slo_table,
    summarize_cells,
)
from dynasor_bench.online._stats import HeadlineCI, bootstrap_headlines, headline_ci_table
from dynasor_bench.online._store import attainment, latency_percentile
from dynasor_bench.sim._calibrate import Calibration
from dynasor_bench.sim._cost import H100_8B, CostModel
from dynasor_bench.sim._route import RoutingPolicy
from dynasor_bench.traces._bank import BankMeta, QuestionTrace
from dynasor_bench.workload._workload import (
    DEADLINE_FORMS,
    DEFAULT_MIX,
    DeadlineForm,
    OnlineRow,
    SystemSpec,
)

__all__ = ["ONE_ROUND", "ReportSettings", "loads_grid", "validation_table", "write_report"]


@dataclass(frozen=True)
class ReportSettings:
    """What the report of ``bench online`` needs of the run's settings.

    Attributes:
        out: The report directory.
        command: The command line that produced the report (shown in it).
        programs: Programs per measured run.
        sim_programs: Programs per simulated (system, rate, seed) run, all
            replicas together.
        seed: Seed of arrivals, questions and strategies (the first seed of
            the simulated sections, which use ``seed .. seed + seeds - 1``).
        slo_scale: SLO scale of the rate sweep (per-program deadlines).
        seeds: Seeds per simulated section.
        fixed_slo_scale: SLO scale of the rate sweep under fixed deadlines
            (``None``: ``slo_scale``).
        routing: Routing policies of the multi-replica projection (a section each).
        reps: Bootstrap replicates per interval.
        engines: Simulated sections to run: ``cpu`` (the calibrated CPU
            engine) and ``h100`` (the projection).
        sim_loads: Loads of the simulated sweeps (multiples of the baseline's
            estimated capacity, per replica).
        fixed_load: The load (one of ``sim_loads``) of the tightest SLO and accuracy.
    """

    out: Path
    command: str
    programs: int
    sim_programs: int
    seed: int
    slo_scale: float
    seeds: int = 1
    fixed_slo_scale: float | None = None
    routing: tuple[RoutingPolicy, ...] = ("consistent_hash",)
    reps: int = 1000
    engines: tuple[str, ...] = ("cpu", "h100")
    sim_loads: tuple[float, ...] = tuple(round(0.25 * i, 6) for i in range(1, 13))
    fixed_load: float = 1.0

    @property
    def fixed_scale(self) -> float:
        """The SLO scale of the rate sweep under fixed deadlines."""
        return self.slo_scale if self.fixed_slo_scale is None else self.fixed_slo_scale

    def scale(self, form: DeadlineForm) -> float:
        """The rate sweep's SLO scale under ``form``."""
        return self.slo_scale if form == "program" else self.fixed_scale

    @property
    def seed_list(self) -> list[int]:
        """The simulated sections' seeds."""
        return list(range(self.seed, self.seed + self.seeds))


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


def _forms(rows: Sequence[OnlineRow]) -> list[DeadlineForm]:
    """The deadline forms every row has (older stored rows lack the fixed one)."""
    return [f for f in DEADLINE_FORMS if f == "program" or all(r.deadline_fixed for r in rows)]


def _section(
    title: str,
    rows: Sequence[OnlineRow],
    png: Path,
    *,
    settings: ReportSettings,
    fixed_rate: float,
    scales: Sequence[float],
    overlay: Sequence[OnlineRow] | None = None,
    found: dict[str, Any] | None = None,
) -> list[str]:
    """Plot ``rows`` into ``png`` and tabulate them under ``title``, under each deadline form.

    With ``overlay`` (the simulator's rows for the same workloads), ``rows``
    are measured ones and the plot draws both, and the headlines are point
    estimates; without, ``rows`` are simulated and the headlines carry
    bootstrap intervals, which are also stored in ``found[title]``.
    """
    slo = settings.slo_scale
    if overlay is None:
        plot_online(png, (), rows, slo_scale=slo, fixed_rate=fixed_rate, scales=scales)
    else:
        plot_online(png, rows, overlay, slo_scale=slo, fixed_rate=fixed_rate, scales=scales)
    doc = [f"### {title}", ""]
    for form in _forms(rows):
        scale = settings.scale(form)
        doc += [f"Deadlines: {_FORM_TEXT[form]}.", ""]
        if overlay is None:
            rng = np.random.default_rng([settings.seed, 0xB007])
            cis = bootstrap_headlines(
                rows, slo_scale=scale, fixed_rate=fixed_rate, form=form, reps=settings.reps,
                rng=rng,
            )  # fmt: skip
            if found is not None:
                found.setdefault(title, {})[form] = [_json(h) for h in cis]
            doc += [headline_ci_table(cis), "", _ci_note(cis[0]), ""]
        else:
            points = headlines(rows, slo_scale=scale, fixed_rate=fixed_rate, form=form)
            doc += [headline_table(points), ""]
        doc += [
            f"Attainment and latency by rate (SLO scale {scale:g}):",
            "",
            rate_table(summarize_cells(rows, scale, form)),
            "",
            f"Attainment by SLO scale at rate {fixed_rate:g}/s:",
            "",
            slo_table(rows, scales, rate=fixed_rate, form=form),
            "",
        ]
    return doc


_FORM_TEXT: dict[DeadlineForm, str] = {
    "program": "per program, SLO scale x difficulty x base",
    "fixed": "fixed per strategy (the paper's form), SLO scale x the strategy's median "
    "latency alone on an idle engine",
}


def _ci_note(h: HeadlineCI) -> str:
    return (
        f"{h.seeds} seeds x {h.programs} programs per (system, rate); "
        f"{100 * h.level:g}% percentile intervals from {h.reps} paired block-bootstrap "
        f"replicates (blocks of {h.block} consecutive programs, resampled within each seed, "
        "the same for every system and rate). 'censored': share of replicates in which the "
        "system's or the baseline's rate was only bounded by the measured range."
    )


def _json(h: HeadlineCI) -> dict[str, Any]:
    """``h`` as JSON-safe data (infinities and NaNs as strings)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    data: dict[str, Any] = clean(asdict(h))
    return data


def write_report(
    settings: ReportSettings,
    *,
    systems: Sequence[SystemSpec],
    questions: Sequence[QuestionTrace],
    meta: BankMeta,
    shape: BankShape,
    cal: Calibration | None,
    rates: Sequence[float],
    base: dict[str, float],
    rows: Sequence[OnlineRow],
    scales: Sequence[float],
    replicas: Sequence[int],
    fixed: Mapping[str, float] | None = None,
) -> Path:
    """Simulate, tabulate and plot; return the written ``online.md``.

    ``scales`` are the SLO scales of the SLO sweep and ``replicas`` the
    replica counts of the projection (both checked by the caller); ``fixed``
    the CPU runs' fixed deadlines (computed here when omitted). Without a
    calibration (``cal`` ``None``) only the projection can be simulated: no
    measured rows, no ``cpu`` engine.

    Raises:
        InvalidInputError: No calibration for measured rows or the CPU
            engine, or ``settings.fixed_load`` not among its loads.
    """
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    common: dict[str, Any] = {"mix": DEFAULT_MIX, "max_tokens": meta.max_tokens}
    grid = sorted(settings.sim_loads)
    if settings.fixed_load not in grid:
        raise InvalidInputError(f"the fixed load {settings.fixed_load} is not among {grid}")
    found: dict[str, Any] = {}
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
        "",
    ]
    if cal is not None:
        doc += _cpu(settings, systems, questions, meta, shape, cal, rates, base, rows,
                    scales, fixed, grid, common, found)  # fmt: skip
    elif rows or "cpu" in settings.engines:
        raise InvalidInputError("measured rows and the CPU engine need a calibration")
    if "h100" in settings.engines:
        # On a GPU a round costs a whole path's time whatever its width, so the
        # projection adds Dynasor with one round (all samples at once, mid-round stop).
        gpu_systems = [*systems, ONE_ROUND]
        doc += _projection(
            settings, gpu_systems, questions, shape, H100_8B, grid, scales, replicas, common,
            found,
        )  # fmt: skip
    path = out / "online.md"
    path.write_text("\n".join(doc) + "\n")
    (out / "online_headlines.json").write_text(json.dumps(found, indent=1) + "\n")
    print(f"[online] wrote {path}", flush=True)
    return path


def _cpu(
    settings: ReportSettings,
    systems: Sequence[SystemSpec],
    questions: Sequence[QuestionTrace],
    meta: BankMeta,
    shape: BankShape,
    cal: Calibration,
    rates: Sequence[float],
    base: dict[str, float],
    rows: Sequence[OnlineRow],
    scales: Sequence[float],
    fixed: Mapping[str, float] | None,
    grid: Sequence[float],
    common: dict[str, Any],
    found: dict[str, Any],
) -> list[str]:
    """The CPU sections: measured against simulated, and the simulated CPU sweep."""
    out = settings.out
    cpu_cap = capacity(cal.cost, shape, DEFAULT_MIX)
    if fixed is None:
        fixed = fixed_deadlines(
            questions, cal.cost, DEFAULT_MIX, max_tokens=meta.max_tokens,
            overhead=cal.request_overhead,
        )  # fmt: skip
    doc = [
        f"Calibrated CPU engine: step {cal.cost.step_base * 1000:.1f} ms + "
        f"{cal.cost.per_seq * 1000:.2f} ms per running sequence; prefill "
        f"{cal.prefill_tokens_per_second:.0f} tokens/s; request overhead "
        f"{cal.request_overhead * 1000:.0f} ms; baseline capacity ~{cpu_cap:.3f} programs/s.",
        "Deadline bases (idle latency at difficulty 1): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in base.items())
        + "; fixed deadlines (median idle latency): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in fixed.items())
        + ".",
        "",
    ]
    if rows:
        mid_rate = rates[len(rates) // 2]
        sim_same = sweep(
            questions, systems, rates, cost=cal.cost, count=settings.programs, base=base,
            overhead=cal.request_overhead, label="validate", seed=settings.seed, fixed=fixed,
            **common,
        )  # fmt: skip
        table, error = validation_table(rows, sim_same, settings.slo_scale)
        doc += _section(
            f"Measured on the CPU server ({settings.programs} programs per run)",
            rows, out / "online_measured.png", overlay=sim_same, settings=settings,
            fixed_rate=mid_rate, scales=scales,
        )  # fmt: skip
        doc += [
            "### Simulator against the measured runs (same workloads)",
            "",
            table,
            "",
            f"Mean absolute error of the mean latency over cells: {error:.0%}.",
            "",
        ]
    if "cpu" in settings.engines:
        cpu_rates = [round(g * cpu_cap, 5) for g in grid]
        cpu_rows = sweep(
            questions, systems, cpu_rates, cost=cal.cost, count=settings.sim_programs,
            base=base, overhead=cal.request_overhead, label="simulate cpu",
            seed=settings.seed_list, fixed=fixed, **common,
        )  # fmt: skip
        cpu_mid = cpu_rates[grid.index(settings.fixed_load)]
        doc += _section(
            f"Simulated CPU engine ({settings.seeds} seeds x {settings.sim_programs} programs "
            "per run)",
            cpu_rows, out / "online_sim_cpu.png", settings=settings, fixed_rate=cpu_mid,
            scales=scales, found=found,
        )  # fmt: skip
    return doc


def _projection(
    settings: ReportSettings,
    systems: Sequence[SystemSpec],
    questions: Sequence[QuestionTrace],
    shape: BankShape,
    cost: CostModel,
    grid: Sequence[float],
    scales: Sequence[float],
    replica_counts: Sequence[int],
    common: dict[str, Any],
    found: dict[str, Any],
) -> list[str]:
    base = bases(cost, shape, DEFAULT_MIX, overhead=0.0)
    fixed = fixed_deadlines(questions, cost, DEFAULT_MIX, max_tokens=common["max_tokens"])
    cap = capacity(cost, shape, DEFAULT_MIX)
    doc = [
        f"## Projection: {cost.name}",
        "",
        f"Baseline capacity ~{cap:.2f} programs/s per replica; deadline bases "
        + ", ".join(f"{k} {v:.2f} s" for k, v in base.items())
        + "; fixed deadlines "
        + ", ".join(f"{k} {v:.2f} s" for k, v in fixed.items())
        + ".",
        "",
    ]
    for replicas in sorted(replica_counts):
        rates = [round(g * cap * replicas, 5) for g in grid]
        mid = rates[list(grid).index(settings.fixed_load)]
        for routing in settings.routing if replicas > 1 else settings.routing[:1]:
            rows = sweep(
                questions, systems, rates, cost=cost, count=settings.sim_programs, base=base,
                replicas=replicas, routing=routing, seed=settings.seed_list, fixed=fixed,
                label=f"simulate {cost.name} x{replicas} {routing}", **common,
            )  # fmt: skip
            where = f", {routing} routing" if replicas > 1 else ""
            suffix = f"_{routing}" if replicas > 1 else ""
            doc += _section(
                f"{replicas} replica(s){where}, {settings.seeds} seeds x "
                f"{settings.sim_programs} programs per run",
                rows, settings.out / f"online_{cost.name}_x{replicas}{suffix}.png",
                settings=settings, fixed_rate=mid, scales=scales, found=found,
            )  # fmt: skip
    return doc
