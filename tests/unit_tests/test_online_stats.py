"""Bootstrap intervals on the online headlines: known answers, narrowing, coverage."""

from __future__ import annotations

import numpy as np
import pytest

from dynasor_agents.errors import InvalidInputError
from dynasor_bench.online._report import headlines
from dynasor_bench.online._stats import (
    HeadlineCI,
    Interval,
    block_weights,
    bootstrap_headlines,
    headline_ci_table,
)
from dynasor_bench.workload._workload import OnlineRow

RATES = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
# Attainment at SLO scale 1 per rate: the truth, piecewise linear between the rates.
CURVES = {
    "baseline": [1.0, 0.95, 0.85, 0.6, 0.4, 0.3, 0.2, 0.1],  # crosses 90% at 2.5
    "fast": [1.0, 1.0, 1.0, 0.97, 0.93, 0.87, 0.8, 0.6],  # crosses 90% at 5.5
}
TRUE_RATE = {"baseline": 2.5, "fast": 5.5}
FIXED_RATE = 3.0
# Latency / unit ~ U(0, 1/p): attainment at scale 1 is p, and the 90% scale is 0.9/p.
TRUE_SLO = {name: 0.9 / curve[RATES.index(FIXED_RATE)] for name, curve in CURVES.items()}
ACCURACY = {"baseline": 0.6, "fast": 0.55}


def synthetic(
    seeds: int,
    programs: int,
    rng: np.random.Generator,
    systems: tuple[str, ...] = ("baseline", "fast"),
) -> list[OnlineRow]:
    """Independent programs whose attainment curves and SLO quantiles are known exactly."""
    rows = []
    for seed in range(seeds):
        for system in systems:
            for rate, p in zip(RATES, CURVES[system], strict=True):
                scales = rng.uniform(0, 1 / p, size=programs)
                right = rng.random(programs) < ACCURACY[system]
                rows += [
                    OnlineRow(
                        system=system,
                        rate=rate,
                        program=i,
                        question="q",
                        source="s",
                        strategy="sc-8",
                        arrival=0.0,
                        finish=float(scales[i]),
                        deadline_unit=1.0,
                        deadline_fixed=2.0,
                        completion_tokens=100,
                        samples=8,
                        answer="4",
                        correct=bool(right[i]),
                        seed=seed,
                    )
                    for i in range(programs)
                ]
    return rows


def run(rows: list[OnlineRow], seed: int = 0, **kw: object) -> dict[str, HeadlineCI]:
    found = bootstrap_headlines(
        rows, slo_scale=1.0, fixed_rate=FIXED_RATE, rng=np.random.default_rng(seed), reps=400,
        **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return {h.system: h for h in found}


def test_intervals_cover_the_truth_and_narrow_with_more_programs() -> None:
    # 5 seeds x 1,000 programs, as a simulated cell. (How often 95% intervals miss is
    # the next test's business: here every interval of one data set must cover.)
    large = run(synthetic(5, 1000, np.random.default_rng(2)))
    for system in CURVES:
        h = large[system]
        assert h.max_rate.covers(TRUE_RATE[system]), (system, h.max_rate)
        assert h.tightest_slo.covers(TRUE_SLO[system]), (system, h.tightest_slo)
        assert h.accuracy.covers(ACCURACY[system]), (system, h.accuracy)
    fast = large["fast"]
    assert fast.rate_ratio.covers(TRUE_RATE["fast"] / TRUE_RATE["baseline"]), fast.rate_ratio
    assert fast.slo_ratio.covers(TRUE_SLO["baseline"] / TRUE_SLO["fast"]), fast.slo_ratio
    assert large["baseline"].rate_ratio.value == 1.0
    small = run(synthetic(5, 100, np.random.default_rng(1)))
    for system in CURVES:  # ten times the programs: about a third of the width
        assert large[system].max_rate.width < 0.5 * small[system].max_rate.width
        assert large[system].tightest_slo.width < 0.5 * small[system].tightest_slo.width
    assert large["fast"].rate_ratio.width < 0.5 * small["fast"].rate_ratio.width


def test_points_are_the_headlines_of_all_rows() -> None:
    rows = synthetic(3, 50, np.random.default_rng(3))
    found = run(rows)
    for point in headlines(rows, slo_scale=1.0, fixed_rate=FIXED_RATE):
        h = found[point.system]
        assert h.max_rate.value == point.max_rate.value
        assert h.max_rate.relation == point.max_rate.relation
        assert h.tightest_slo.value == point.tightest_slo
        assert h.accuracy.value == point.accuracy
        assert h.rate_ratio.value == point.rate_ratio.value
        assert h.slo_ratio.value == point.slo_ratio.value
        assert (h.seeds, h.programs, h.block, h.reps) == (3, 50, 8, 400)  # ceil(sqrt(50))


def test_the_fixed_form_divides_by_the_fixed_deadline() -> None:
    rows = synthetic(2, 50, np.random.default_rng(4))
    program, fixed = run(rows)["baseline"], run(rows, form="fixed")["baseline"]
    assert program.tightest_slo.value is not None
    assert fixed.tightest_slo.value == pytest.approx(program.tightest_slo.value / 2)  # unit 2 s
    assert fixed.form == "fixed"


def test_nominal_coverage_of_the_threshold_rate_and_the_tightest_slo() -> None:
    # 40 independent data sets: a 95% interval should miss the truth about twice
    # (34 or more covered has probability 0.99 at a true 95%).
    rates = slos = 0
    for k in range(40):
        rows = synthetic(5, 60, np.random.default_rng(100 + k), systems=("baseline",))
        h = run(rows, seed=k)["baseline"]
        rates += h.max_rate.covers(TRUE_RATE["baseline"])
        slos += h.tightest_slo.covers(TRUE_SLO["baseline"])
    assert rates >= 34 and slos >= 34, (rates, slos)


def test_block_weights_resample_whole_runs_of_programs() -> None:
    w = block_weights(12, 500, 4, np.random.default_rng(0))
    assert w.shape == (500, 12) and (w.sum(axis=1) == 12).all()
    # Circular blocks: every program is drawn once per replicate on average.
    assert w.mean(axis=0) == pytest.approx(np.ones(12), abs=0.2)
    # Three blocks of four: the counts of neighbours within a block move together.
    assert np.corrcoef(w[:, 0], w[:, 1])[0, 1] > 0.5
    iid = block_weights(12, 500, 1, np.random.default_rng(0))
    assert abs(np.corrcoef(iid[:, 0], iid[:, 1])[0, 1]) < 0.2
    assert (
        block_weights(12, 3, 4, np.random.default_rng(1))
        == block_weights(12, 3, 4, np.random.default_rng(1))
    ).all()


def test_bad_inputs_name_the_problem() -> None:
    rows = synthetic(1, 5, np.random.default_rng(5))
    with pytest.raises(InvalidInputError, match=r"no rows at rate 2\.5"):
        bootstrap_headlines(rows, slo_scale=1.0, fixed_rate=2.5, rng=np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match=r"fast @ 8/s has 4 of the 5 programs"):
        bootstrap_headlines(rows[:-1], slo_scale=1.0, fixed_rate=3.0, rng=np.random.default_rng(0))
    with pytest.raises(InvalidInputError, match="reps and block must be >= 1"):
        bootstrap_headlines(
            rows, slo_scale=1.0, fixed_rate=3.0, rng=np.random.default_rng(0), reps=0
        )
    with pytest.raises(InvalidInputError, match="needs rows"):
        bootstrap_headlines([], slo_scale=1.0, fixed_rate=3.0, rng=np.random.default_rng(0))


def test_table_shows_points_intervals_and_censoring() -> None:
    table = headline_ci_table(list(run(synthetic(2, 40, np.random.default_rng(6))).values()))
    header, _, base, fast = table.splitlines()
    assert "max rate @90% (SLO x1) /s [95% CI]" in header and "accuracy % [95% CI]" in header
    assert base.startswith("| baseline | ") and "| 1.00x [1.00x, 1.00x] |" in base
    assert fast.startswith("| fast | ") and "x [" in fast and base.endswith("| 100 | 0% |")
    assert str(Interval(None, 0.0, 1.0)) == "n/a"
    assert Interval(1.0, float("nan"), float("inf")).format(1) == "1.0 [n/a, inf]"
