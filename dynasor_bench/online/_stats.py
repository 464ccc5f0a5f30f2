"""Confidence intervals on the online headlines: a paired, stratified block bootstrap.

A simulated comparison runs several seeds; each seed is one workload of ``n``
programs that every system serves at every rate (the same questions,
strategies, uuids and arrival order; only the gaps shrink as the rate grows).
The headlines (:func:`~dynasor_bench.online._report.headlines`) are functions of
all those rows, pooled over seeds: per system, the highest rate at which
attainment stays at the target, the tightest SLO scale meeting the target at
one rate, the accuracy there, and the first two as ratios to the baseline.
:func:`bootstrap_headlines` puts a percentile interval on each.

**What is resampled, and why.** A replicate draws, for every seed, ``n``
program indices in blocks of ``block`` consecutive programs (a circular
block bootstrap; default ``ceil(sqrt(n))``, 32 of 1,000), and applies the same
indices to every system and rate of that seed:

* *programs, not seeds*: five seeds are too few to resample; a percentile
  interval from five values cannot reach past the extreme seeds and covers
  poorly;
* *blocks, not single programs*: in one run, programs that arrive close
  together share a queue, so their latencies are correlated; resampling
  single programs would treat them as independent and give intervals that are
  too narrow (``block=1`` does that, for comparison);
* *within each seed*: seeds are independent runs, so the pooled estimate's
  variance is the sum of the seeds', and every replicate keeps each seed's
  ``n`` programs;
* *the same indices for every system and rate* (paired): the systems serve the
  same programs, so a ratio's interval reflects how the systems differ on the
  same programs, not how one workload differs from another.

What the intervals do not cover: the simulator's own error against the real
server, and the bank (questions and recorded paths are fixed).

Example (one system whose attainment falls from 100% to 80% between rates 1
and 2: the 90% crossing is at 1.5):
    >>> def row(rate, program, latency, seed=0):
    ...     return OnlineRow(system="baseline", rate=rate, program=program, question="q",
    ...                      source="s", strategy="sc-8", arrival=0.0, finish=latency,
    ...                      deadline_unit=1.0, completion_tokens=10, samples=8,
    ...                      answer="4", correct=program % 2 == 0, seed=seed)
    >>> rows = [row(1.0, i, 0.5) for i in range(10)]
    >>> rows += [row(2.0, i, 0.5 if i < 8 else 2.0) for i in range(10)]
    >>> (h,) = bootstrap_headlines(rows, slo_scale=1.0, fixed_rate=1.0, reps=200,
    ...                            rng=np.random.default_rng(0))
    >>> h.max_rate.value, h.max_rate.low <= 1.5 <= h.max_rate.high, h.accuracy.value
    (1.5, True, 0.5)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from dynasor_agents.errors import InvalidInputError
from dynasor_bench.online._report import Ratio, form_label, headlines, system_order
from dynasor_bench.online._store import RateBound, Relation, slo_scales
from dynasor_bench.workload._workload import DeadlineForm, OnlineRow

__all__ = [
    "HeadlineCI",
    "Interval",
    "block_weights",
    "bootstrap_headlines",
    "headline_ci_table",
]

_Array = NDArray[np.float64]


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval.

    Attributes:
        value: The estimate on the observed rows (``None``: undefined there).
        low: Lower end of the interval; ``high`` the upper end (``nan``: no
            replicate defined it).
        relation: How the truth relates to ``value`` when the measured range
            only bounds it (as :class:`~dynasor_bench.online._store.RateBound`).

    Example:
        >>> str(Interval(1.234, 1.1, 1.4)), str(Interval(2.0, 1.5, 2.0, ">="))
        ('1.23 [1.10, 1.40]', '>=2.00 [1.50, 2.00]')
        >>> Interval(1.0, 0.9, 1.2).covers(1.1), round(Interval(1.0, 0.9, 1.2).width, 3)
        (True, 0.3)
    """

    value: float | None
    low: float
    high: float
    relation: Relation = "="

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def covers(self, truth: float) -> bool:
        """Whether ``truth`` lies in the interval."""
        return bool(self.low <= truth <= self.high)

    def format(self, digits: int = 2, suffix: str = "") -> str:
        """``value [low, high]`` with ``digits`` decimals and ``suffix`` on each number."""
        if self.value is None:
            return "n/a"

        def fmt(x: float) -> str:
            if math.isnan(x):
                return "n/a"
            return ("inf" if x > 0 else "-inf") if math.isinf(x) else f"{x:.{digits}f}{suffix}"

        prefix = "" if self.relation == "=" else self.relation
        return f"{prefix}{fmt(self.value)} [{fmt(self.low)}, {fmt(self.high)}]"

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class HeadlineCI:
    """One system's headlines with bootstrap intervals.

    Attributes:
        system: The system.
        max_rate: Highest rate at ``target`` attainment at SLO ``slo_scale``.
        rate_ratio: ``max_rate`` over the baseline's, paired per replicate.
        tightest_slo: Smallest SLO scale with ``target`` attainment at ``fixed_rate``.
        slo_ratio: The baseline's tightest SLO over this one's (higher: tighter).
        accuracy: Share answered correctly at ``fixed_rate``.
        tokens: Mean completion tokens per program at ``fixed_rate``.
        censored: Share of replicates in which this system's or the
            baseline's rate was only bounded (attainment never fell below the
            target in the range, or already missed it at the lowest rate).
        slo_scale: As in :func:`bootstrap_headlines`; ``fixed_rate``,
            ``target``, ``form`` likewise.
        seeds: Seeds pooled; ``programs`` programs per seed (the smallest).
        block: Block length of the resampling.
        reps: Replicates drawn.
        level: The intervals' coverage.
    """

    system: str
    max_rate: Interval
    rate_ratio: Interval
    tightest_slo: Interval
    slo_ratio: Interval
    accuracy: Interval
    tokens: float
    censored: float
    slo_scale: float
    fixed_rate: float
    target: float
    form: DeadlineForm
    seeds: int
    programs: int
    block: int
    reps: int
    level: float


def block_weights(n: int, reps: int, block: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """How often each of ``n`` programs is drawn in each of ``reps`` circular block resamples.

    Each replicate strings together ``ceil(n / block)`` blocks of ``block``
    consecutive indices (wrapping past the end), starting at uniform random
    places, and keeps the first ``n`` indices; its counts sum to ``n``.

    Example:
        >>> w = block_weights(10, 3, 4, np.random.default_rng(0))
        >>> w.shape, w.sum(axis=1).tolist()
        ((3, 10), [10, 10, 10])
    """
    if n < 1 or reps < 1 or block < 1:
        raise InvalidInputError(f"n, reps and block must be >= 1, got {n}, {reps}, {block}")
    block = min(block, n)
    blocks = -(-n // block)
    starts = rng.integers(0, n, size=(reps, blocks))
    index = ((starts[:, :, None] + np.arange(block)) % n).reshape(reps, -1)[:, :n]
    flat = (index + n * np.arange(reps)[:, None]).ravel()
    return np.bincount(flat, minlength=reps * n).reshape(reps, n)


@dataclass
class _Seed:
    """One seed's rows as arrays: every system at every rate over the same programs."""

    scales: _Array  # (systems, rates, n): latency / unit deadline, inf when failed
    correct: _Array  # (systems, n) at the fixed rate
    weights: _Array  # (1 + reps, n): row 0 the observed rows


def _grid(
    rows: Sequence[OnlineRow],
    systems: Sequence[str],
    rates: Sequence[float],
    fixed: int,
    form: DeadlineForm,
) -> dict[int | None, tuple[_Array, _Array]]:
    """Per seed, the latency/unit array (systems, rates, n) and correctness at the fixed rate."""
    cells: dict[tuple[int | None, str, int], list[OnlineRow]] = {}
    rate_index = {rate: i for i, rate in enumerate(rates)}
    for row in rows:
        cells.setdefault((row.seed, row.system, rate_index[row.rate]), []).append(row)
    seeds = sorted({row.seed for row in rows}, key=lambda s: (s is None, s or 0))
    out: dict[int | None, tuple[_Array, _Array]] = {}
    for seed in seeds:
        n = 1 + max(row.program for row in rows if row.seed == seed)
        scales = np.full((len(systems), len(rates), n), np.nan)
        correct = np.zeros((len(systems), n))
        for i, system in enumerate(systems):
            for j, rate in enumerate(rates):
                cell = cells.get((seed, system, j), [])
                programs = [row.program for row in cell]
                if sorted(programs) != list(range(n)):
                    raise InvalidInputError(
                        f"seed {seed}: {system} @ {rate:g}/s has {len(set(programs))} of the "
                        f"{n} programs (each seed needs every system at every rate, once each)"
                    )
                scales[i, j, programs] = slo_scales(cell, form)
                if j == fixed:
                    correct[i, programs] = [row.correct for row in cell]
        out[seed] = (scales, correct)
    return out


def _max_rates(attain: _Array, rates: _Array, target: float) -> tuple[_Array, NDArray[np.bool_]]:
    """Per (replicate, system): the rate where attainment first falls below ``target``
    (interpolated, as :func:`~dynasor_bench.online._store.max_rate`), and whether it
    was only bounded."""
    below = attain < target
    first = below.argmax(axis=2)
    dropped = below.any(axis=2)
    lo = np.maximum(first - 1, 0)
    a_hi = np.take_along_axis(attain, lo[..., None], axis=2)[..., 0]
    a_lo = np.take_along_axis(attain, first[..., None], axis=2)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = rates[lo] + (a_hi - target) / (a_hi - a_lo) * (rates[first] - rates[lo])
    value = np.where(~dropped, rates[-1], np.where(first == 0, rates[0], exact))
    return value, ~dropped | (first == 0)


def _tightest(values: _Array, weights: _Array, target: float) -> _Array:
    """Per replicate: the smallest value whose weighted share at or below it reaches ``target``."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    cumulative = np.cumsum(weights[:, order], axis=1)
    need = np.ceil(target * cumulative[:, -1:] - 1e-9)
    picked: _Array = ordered[(cumulative >= need).argmax(axis=1)]
    return picked


def _interval(
    samples: _Array, value: float | None, level: float, relation: Relation = "="
) -> Interval:
    finite = samples[~np.isnan(samples)]
    if value is None or not finite.size:
        return Interval(value, math.nan, math.nan, relation)
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha], method="inverted_cdf")
    return Interval(value, float(low), float(high), relation)


def _ratio_value(ratio: Ratio) -> tuple[float | None, Relation]:
    return ratio.value, ratio.relation


def bootstrap_headlines(
    rows: Sequence[OnlineRow],
    *,
    slo_scale: float,
    fixed_rate: float,
    rng: np.random.Generator,
    form: DeadlineForm = "program",
    target: float = 0.9,
    baseline: str = "baseline",
    reps: int = 1000,
    level: float = 0.95,
    block: int | None = None,
) -> list[HeadlineCI]:
    """Each system's headlines with percentile intervals (see the module doc).

    The point estimates are those of
    :func:`~dynasor_bench.online._report.headlines` on all rows (pooled over
    seeds); each interval is the ``level`` percentile interval of ``reps``
    paired, stratified block-bootstrap replicates.

    Args:
        rows: Every (system, rate, seed) cell, each holding programs ``0..n-1``
            of its seed's workload (``n`` may differ between seeds).
        slo_scale: The SLO scale of the sustained rate.
        fixed_rate: The rate (one of the rows') of the tightest SLO and accuracy.
        rng: Draws the resamples.
        form: The deadline form.
        target: The attainment both are measured for.
        baseline: The system ratios divide by.
        reps: Bootstrap replicates.
        level: The intervals' coverage.
        block: Programs per block (default ``ceil(sqrt(n))`` of the smallest seed).

    Raises:
        InvalidInputError: No rows, a missing baseline, a cell lacking
            programs, ``fixed_rate`` not among the rates, or a bad ``reps``,
            ``level``, ``block`` or ``target``.
    """
    if not rows:
        raise InvalidInputError("bootstrap_headlines needs rows, got none")
    if reps < 1 or not 0 < level < 1 or (block is not None and block < 1):
        raise InvalidInputError(
            f"reps and block must be >= 1 and level in (0, 1), got {reps}, {block}, {level}"
        )
    found = headlines(
        rows, slo_scale=slo_scale, fixed_rate=fixed_rate, target=target, baseline=baseline,
        form=form,
    )  # fmt: skip
    points = {h.system: h for h in found}
    systems = system_order(rows)
    rates = sorted({row.rate for row in rows})
    fixed = [i for i, rate in enumerate(rates) if math.isclose(rate, fixed_rate, rel_tol=1e-9)]
    if not fixed:
        raise InvalidInputError(f"no rows at rate {fixed_rate:g} (rates: {rates})")
    grid = _grid(rows, systems, rates, fixed[0], form)
    sizes = [scales.shape[2] for scales, _ in grid.values()]
    length = block if block is not None else math.ceil(math.sqrt(min(sizes)))
    seeds = [
        _Seed(
            scales,
            correct,
            np.vstack(
                [np.ones((1, scales.shape[2])), block_weights(scales.shape[2], reps, length, rng)]
            ),
        )
        for scales, correct in grid.values()
    ]
    total = float(sum(sizes))
    shape = (1 + reps, len(systems), len(rates))
    met = np.zeros((1 + reps, len(systems) * len(rates)))
    for s in seeds:
        met += s.weights @ (s.scales <= slo_scale).reshape(-1, s.scales.shape[2]).T
    attain = met.reshape(shape) / total
    rate_values, bounded = _max_rates(attain, np.asarray(rates, dtype=float), target)
    weights = np.hstack([s.weights for s in seeds])
    correct = np.hstack([s.correct for s in seeds])  # (systems, N)
    accuracy = weights @ correct.T / total  # (1 + reps, systems)
    slos = np.stack(
        [
            _tightest(np.concatenate([s.scales[i, fixed[0]] for s in seeds]), weights, target)
            for i in range(len(systems))
        ],
        axis=1,
    )  # (1 + reps, systems)
    b = systems.index(baseline)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_ratios = rate_values / rate_values[:, b : b + 1]
        slo_ratios = slos[:, b : b + 1] / slos
    level_ = float(level)
    out = []
    for i, system in enumerate(systems):
        h = points[system]
        rate_bound: RateBound = h.max_rate
        ratio_value, ratio_relation = _ratio_value(h.rate_ratio)
        slo_value, slo_rel = _ratio_value(h.slo_ratio)
        rest = slice(1, None)
        out.append(
            HeadlineCI(
                system=system,
                max_rate=_interval(
                    rate_values[rest, i], rate_bound.value, level_, rate_bound.relation
                ),
                rate_ratio=_interval(rate_ratios[rest, i], ratio_value, level_, ratio_relation),
                tightest_slo=_interval(slos[rest, i], h.tightest_slo, level_),
                slo_ratio=_interval(slo_ratios[rest, i], slo_value, level_, slo_rel),
                accuracy=_interval(accuracy[rest, i], h.accuracy, level_),
                tokens=h.tokens if h.tokens is not None else math.nan,
                censored=float(np.mean(bounded[rest, i] | bounded[rest, b])),
                slo_scale=slo_scale,
                fixed_rate=fixed_rate,
                target=target,
                form=form,
                seeds=len(seeds),
                programs=min(sizes),
                block=length,
                reps=reps,
                level=level_,
            )
        )
    return out


def headline_ci_table(items: Sequence[HeadlineCI]) -> str:
    """A markdown table of :func:`bootstrap_headlines` (settings from the first).

    Raises:
        InvalidInputError: No items.
    """
    if not items:
        raise InvalidInputError("headline_ci_table needs at least one headline")
    first = items[0]
    form = form_label(first.form)
    ci = f"[{100 * first.level:g}% CI]"
    lines = [
        f"| system | max rate @{100 * first.target:g}% ({form}SLO x{first.slo_scale:g}) /s {ci} "
        f"| ratio {ci} | tightest {form}SLO @ rate {first.fixed_rate:g} {ci} | ratio {ci} "
        f"| accuracy % {ci} | tokens/program | censored |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for h in items:
        accuracy = Interval(
            None if h.accuracy.value is None else 100 * h.accuracy.value,
            100 * h.accuracy.low,
            100 * h.accuracy.high,
        )
        lines.append(
            f"| {h.system} | {h.max_rate.format(3)} | {h.rate_ratio.format(2, 'x')} "
            f"| {h.tightest_slo.format(2)} | {h.slo_ratio.format(2, 'x')} "
            f"| {accuracy.format(1)} | {h.tokens:.0f} | {100 * h.censored:.0f}% |"
        )
    return "\n".join(lines)
