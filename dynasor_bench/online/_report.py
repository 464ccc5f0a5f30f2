"""Online benchmark results: SLO attainment, sustained rate, tightest SLO, tables.

A program meets its deadline at SLO scale ``s`` when it finishes without error
within ``s`` x its unit deadline (:meth:`OnlineRow.met`). From the rows of one
or more runs (measured or simulated):

* re-exported from :mod:`._store`: storage (:func:`append_rows`,
  :func:`load_rows`, :func:`done_cells`); :func:`attainment`,
  :func:`latency_percentile`, :func:`tightest_slo` of any set of rows; and
  :func:`max_rate`, the highest arrival rate whose attainment stays at the
  target, interpolated between measured rates (a :class:`RateBound`);
* :func:`summarize_cells` / :func:`rate_table`: one line per (system, rate);
  :func:`headlines` / :func:`headline_table`: per system, the sustained rate and
  tightest SLO as ratios to the baseline; :func:`slo_table`: attainment against
  the SLO scale at one rate;
* the four panels of the online comparison are drawn by
  :func:`~dynasor_bench.online._plots.plot_online`.

Example:
    >>> def row(system, rate, program, latency):
    ...     return OnlineRow(system=system, rate=rate, program=program, question="q",
    ...                      source="gsm8k", strategy="sc-8", arrival=0.0, finish=latency,
    ...                      deadline_unit=10.0, completion_tokens=100, samples=8,
    ...                      answer="4", correct=True)
    >>> latencies = {("baseline", 1.0): [5, 8, 9, 12], ("baseline", 2.0): [9, 14, 20, 30],
    ...              ("dynasor", 1.0): [3, 4, 5, 6], ("dynasor", 2.0): [4, 5, 7, 11]}
    >>> rows = [row(s, r, i, t) for (s, r), ts in latencies.items() for i, t in enumerate(ts)]
    >>> table = headline_table(headlines(rows, slo_scale=1.0, fixed_rate=1.0, target=0.75))
    >>> for line in table.splitlines()[2:]:  # after the header
    ...     print(line)
    | baseline | 1.00 | 1.00x | 0.90 | 1.00x | 100.0 | 100 |
    | dynasor | >=2.00 | >=2.00x | 0.50 | 1.80x | 100.0 | 100 |
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dynasor_agents.errors import InvalidInputError
from dynasor_bench.online._store import (
    RateBound,
    Relation,
    append_rows,
    attainment,
    done_cells,
    latency_percentile,
    load_rows,
    max_rate,
    tightest_slo,
)
from dynasor_bench.workload._workload import SYSTEMS, DeadlineForm, OnlineRow

__all__ = [
    "CellSummary",
    "Headline",
    "RateBound",
    "Ratio",
    "append_rows",
    "attainment",
    "done_cells",
    "form_label",
    "headline_table",
    "headlines",
    "latency_percentile",
    "load_rows",
    "max_rate",
    "rate_table",
    "rows_at_rate",
    "slo_table",
    "summarize_cells",
    "system_order",
    "tightest_slo",
]


def _need(rows: Sequence[OnlineRow], what: str) -> None:
    if not rows:
        raise InvalidInputError(f"{what} needs at least one row, got none")


@dataclass(frozen=True)
class Ratio:
    """A ratio to the baseline: the true ratio is ``relation`` ``value`` (``None``: unknown)."""

    value: float | None
    relation: Relation = "="

    def __str__(self) -> str:
        if self.value is None:
            return "n/a"
        return f"{'' if self.relation == '=' else self.relation}{self.value:.2f}x"


def _rate_ratio(rate: RateBound, base: RateBound) -> Ratio:
    """``rate / base``, bounded as both are (a lower bound on ``base`` bounds the ratio above)."""
    flipped: dict[Relation, Relation] = {"=": "=", ">=": "<=", "<=": ">=", ">": "<", "<": ">"}
    parts = [rate.relation, flipped[base.relation]]
    relations = {r for r in parts if r != "="}
    value = rate.value / base.value
    if not relations:
        return Ratio(value)
    up, down = relations & {">", ">="}, relations & {"<", "<="}
    if up and down:
        return Ratio(None)
    strict = relations & {">", "<"}
    return Ratio(value, next(iter(strict or relations)))


def system_order(rows: Sequence[OnlineRow]) -> list[str]:
    """System names: those of :data:`SYSTEMS` first, in its order, then others as they come."""
    present = dict.fromkeys(row.system for row in rows)
    known = [spec.name for spec in SYSTEMS if spec.name in present]
    return known + [name for name in present if name not in known]


def rows_at_rate(rows: Sequence[OnlineRow], rate: float) -> list[OnlineRow]:
    """The rows of runs at ``rate`` (equal up to rounding)."""
    return [row for row in rows if math.isclose(row.rate, rate, rel_tol=1e-9)]


def _cells(rows: Sequence[OnlineRow]) -> dict[tuple[str, float], list[OnlineRow]]:
    """Rows per (system, rate), systems in :func:`system_order`, rates ascending."""
    cells: dict[tuple[str, float], list[OnlineRow]] = {}
    for row in rows:
        cells.setdefault((row.system, row.rate), []).append(row)
    rank = {name: i for i, name in enumerate(system_order(rows))}
    return dict(sorted(cells.items(), key=lambda item: (rank[item[0][0]], item[0][1])))


@dataclass(frozen=True)
class CellSummary:
    """One (system, rate) cell.

    Attributes:
        system: The system; ``rate`` the arrival rate, programs per second.
        programs: Programs in the cell.
        slo_scale: The SLO scale ``attainment`` is measured at.
        attainment: Share of programs meeting their deadline (0..1).
        p50: Median latency, seconds; ``p90`` the 90th percentile (``inf`` when
            failed programs reach it).
        accuracy: Share of programs answering correctly (failed ones do not).
        tokens: Mean completion tokens per program.
        errors: Programs that failed.
        form: The deadline form ``attainment`` is measured under.
    """

    system: str
    rate: float
    programs: int
    slo_scale: float
    attainment: float
    p50: float
    p90: float
    accuracy: float
    tokens: float
    errors: int
    form: DeadlineForm = "program"


def summarize_cells(
    rows: Sequence[OnlineRow], slo_scale: float, form: DeadlineForm = "program"
) -> list[CellSummary]:
    """One :class:`CellSummary` per (system, rate): systems in comparison order, rates ascending.

    A cell pools its rows over seeds.

    Raises:
        InvalidInputError: ``rows`` is empty, or a row lacks a ``form`` deadline.
    """
    _need(rows, "summarize_cells")
    return [
        CellSummary(
            system=system,
            rate=rate,
            programs=len(cell),
            slo_scale=slo_scale,
            attainment=attainment(cell, slo_scale, form),
            p50=latency_percentile(cell, 50),
            p90=latency_percentile(cell, 90),
            accuracy=sum(row.correct for row in cell) / len(cell),
            tokens=sum(row.completion_tokens for row in cell) / len(cell),
            errors=sum(row.error is not None for row in cell),
            form=form,
        )
        for (system, rate), cell in _cells(rows).items()
    ]


@dataclass(frozen=True)
class Headline:
    """One system's headline numbers.

    Attributes:
        system: The system.
        max_rate: Sustained rate at ``target`` attainment at SLO ``slo_scale``.
        rate_ratio: ``max_rate`` over the baseline's (higher is better).
        tightest_slo: Smallest SLO scale with ``target`` attainment at
            ``fixed_rate`` (``inf``: never; ``None``: no rows at that rate).
        slo_ratio: The baseline's tightest SLO over this one's: how many times
            tighter a deadline it sustains (higher is better).
        accuracy: Share answered correctly at ``fixed_rate`` (``None``: no rows).
        tokens: Mean completion tokens per program at ``fixed_rate``.
        slo_scale: The fixed SLO scale; ``fixed_rate``, ``target`` likewise.
        form: The deadline form both are measured under.
    """

    system: str
    max_rate: RateBound
    rate_ratio: Ratio
    tightest_slo: float | None
    slo_ratio: Ratio
    accuracy: float | None
    tokens: float | None
    slo_scale: float
    fixed_rate: float
    target: float
    form: DeadlineForm = "program"


def headlines(
    rows: Sequence[OnlineRow],
    *,
    slo_scale: float,
    fixed_rate: float,
    target: float = 0.9,
    baseline: str | None = "baseline",
    form: DeadlineForm = "program",
) -> list[Headline]:
    """Per system (in comparison order), its sustained rate and tightest SLO against the baseline.

    Args:
        rows: Every cell's rows.
        slo_scale: The SLO scale the sustained rate is measured at.
        fixed_rate: The rate the tightest SLO, accuracy and tokens are measured at.
        target: The attainment both are measured for.
        baseline: The system ratios divide by; ``None``: the first system.
        form: The deadline form (``program`` or ``fixed``).

    Raises:
        InvalidInputError: ``rows`` is empty, ``target`` is outside (0, 1],
            ``baseline`` names no system in the rows, or a row lacks a ``form``
            deadline.
    """
    _need(rows, "headlines")  # max_rate checks the target
    systems = system_order(rows)
    base_name = systems[0] if baseline is None else baseline
    if base_name not in systems:
        raise InvalidInputError(f"baseline {base_name!r} is not among the systems {systems}")
    rates: dict[str, RateBound] = {}
    slos: dict[str, float | None] = {}
    fixed: dict[str, list[OnlineRow]] = {}
    for system in systems:
        own = [row for row in rows if row.system == system]
        points = [
            (rate, attainment(cell, slo_scale, form)) for (_, rate), cell in _cells(own).items()
        ]
        rates[system] = max_rate(points, target)
        fixed[system] = rows_at_rate(own, fixed_rate)
        slos[system] = tightest_slo(fixed[system], target, form) if fixed[system] else None
    base_slo = slos[base_name]
    out = []
    for system in systems:
        rate_ratio = (
            Ratio(1.0) if system == base_name else _rate_ratio(rates[system], rates[base_name])
        )
        slo = slos[system]
        slo_ratio = Ratio(None)  # unknown unless both reach the target at the fixed rate
        if (
            base_slo is not None
            and slo is not None
            and math.isfinite(base_slo)
            and 0 < slo < math.inf
        ):
            slo_ratio = Ratio(base_slo / slo)
        cell = fixed[system]
        out.append(
            Headline(
                system=system,
                max_rate=rates[system],
                rate_ratio=rate_ratio,
                tightest_slo=slo,
                slo_ratio=slo_ratio,
                accuracy=sum(r.correct for r in cell) / len(cell) if cell else None,
                tokens=sum(r.completion_tokens for r in cell) / len(cell) if cell else None,
                slo_scale=slo_scale,
                fixed_rate=fixed_rate,
                target=target,
                form=form,
            )
        )
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def form_label(form: DeadlineForm) -> str:
    """How a table names the deadline form (the per-program one by default).

    Example:
        >>> form_label("fixed"), form_label("program")
        ('fixed ', '')
    """
    return "fixed " if form == "fixed" else ""


def _slo(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if math.isfinite(value) else "unreachable"


def rate_table(summaries: Sequence[CellSummary]) -> str:
    """A markdown table, one line per cell (as :func:`summarize_cells` orders them).

    Raises:
        InvalidInputError: No summaries, or summaries at different SLO scales.
    """
    if not summaries:
        raise InvalidInputError("rate_table needs at least one cell summary")
    scales = sorted({s.slo_scale for s in summaries})
    forms = {s.form for s in summaries}
    if len(scales) > 1 or len(forms) > 1:
        raise InvalidInputError(f"cell summaries mix SLO scales {scales} or forms {forms}")
    lines = [
        f"| system | rate /s | programs | attainment % @ {form_label(summaries[0].form)}SLO "
        f"x{scales[0]:g} | P50 s | P90 s "
        "| accuracy % | tokens/program | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.system} | {s.rate:g} | {s.programs} | {_pct(s.attainment)} | {s.p50:.1f} "
            f"| {s.p90:.1f} | {_pct(s.accuracy)} | {s.tokens:.0f} | {s.errors} |"
        )
    return "\n".join(lines)


def headline_table(items: Sequence[Headline]) -> str:
    """A markdown table of :func:`headlines` (settings from the first headline).

    Raises:
        InvalidInputError: No headlines.
    """
    if not items:
        raise InvalidInputError("headline_table needs at least one headline")
    first = items[0]
    lines = [
        f"| system | max rate @{100 * first.target:g}% ({form_label(first.form)}SLO "
        f"x{first.slo_scale:g}) /s | ratio "
        f"| tightest SLO @ rate {first.fixed_rate:g} | ratio | accuracy % | tokens/program |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in items:
        tokens = "-" if h.tokens is None else f"{h.tokens:.0f}"
        lines.append(
            f"| {h.system} | {h.max_rate} | {h.rate_ratio} | {_slo(h.tightest_slo)} "
            f"| {h.slo_ratio} | {_pct(h.accuracy)} | {tokens} |"
        )
    return "\n".join(lines)


def _one_rate(rows: Sequence[OnlineRow], rate: float | None) -> tuple[list[OnlineRow], float]:
    if rate is not None:
        chosen = rows_at_rate(rows, rate)
        if not chosen:
            raise InvalidInputError(f"no rows at rate {rate:g}")
        return chosen, rate
    rates = sorted({row.rate for row in rows})
    if len(rates) != 1:
        raise InvalidInputError(f"rows span rates {rates}: name the rate to tabulate")
    return list(rows), rates[0]


def slo_table(
    rows: Sequence[OnlineRow],
    scales: Sequence[float],
    *,
    rate: float | None = None,
    target: float = 0.9,
    form: DeadlineForm = "program",
) -> str:
    """Attainment % per system (lines) at each SLO scale (columns), at one rate.

    Args:
        rows: Rows of one rate, or of several with ``rate`` naming one.
        scales: The SLO scales, one column each.
        rate: The rate to tabulate (``None``: the only one in ``rows``).
        target: The last column is the tightest SLO scale reaching it.
        form: The deadline form (``program`` or ``fixed``).

    Raises:
        InvalidInputError: No rows (at ``rate``), no scales, or several rates
            without ``rate``.
    """
    _need(rows, "slo_table")
    if not scales:
        raise InvalidInputError("slo_table needs at least one SLO scale")
    chosen, at = _one_rate(rows, rate)
    lines = [
        f"| system @ {at:g}/s{', fixed deadline' if form == 'fixed' else ''} | "
        + " | ".join(f"x{s:g}" for s in scales)
        + f" | tightest @{100 * target:g}% |",
        "|---|" + "---|" * (len(scales) + 1),
    ]
    for system in system_order(chosen):
        own = [row for row in chosen if row.system == system]
        cells = " | ".join(_pct(attainment(own, s, form)) for s in scales)
        lines.append(f"| {system} | {cells} | {_slo(tightest_slo(own, target, form))} |")
    return "\n".join(lines)
