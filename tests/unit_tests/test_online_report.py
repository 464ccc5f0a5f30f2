"""Online benchmark results: storage and resume, attainment metrics, headlines, tables, plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dynasor_agents.errors import InvalidInputError
from dynasor_bench.online._plots import plot_online
from dynasor_bench.online._report import (
    CellSummary,
    RateBound,
    append_rows,
    attainment,
    done_cells,
    headline_table,
    headlines,
    latency_percentile,
    load_rows,
    max_rate,
    rate_table,
    slo_table,
    summarize_cells,
    tightest_slo,
)
from dynasor_bench.workload._workload import OnlineRow


def _row(
    system: str = "baseline",
    rate: float = 1.0,
    program: int = 0,
    latency: float = 1.0,
    *,
    unit: float = 10.0,
    arrival: float = 0.0,
    tokens: int = 100,
    correct: bool = True,
    error: str | None = None,
) -> OnlineRow:
    return OnlineRow(
        system=system,
        rate=rate,
        program=program,
        question=f"q:{program}",
        source="gsm8k",
        strategy="sc-8",
        arrival=arrival,
        finish=arrival + latency,
        deadline_unit=unit,
        completion_tokens=tokens,
        samples=8,
        answer="4" if error is None else None,
        correct=correct and error is None,
        error=error,
    )


def _cell(system: str, rate: float, latencies: list[float], **kw: object) -> list[OnlineRow]:
    return [_row(system, rate, i, t, **kw) for i, t in enumerate(latencies)]  # type: ignore[arg-type]


# One cell by hand: unit deadline 10 s, latencies 4, 9, 11, 15 s and one failed program.
# Latency / unit: 0.4, 0.9, 1.1, 1.5, inf.
HAND = [*_cell("baseline", 1.0, [4, 9, 11, 15]), _row(program=4, latency=2, error="boom")]


# --- metrics ------------------------------------------------------------------------------


def test_attainment_by_hand() -> None:
    assert attainment(HAND, 1.0) == pytest.approx(2 / 5)  # 4 and 9 s are within 10 s
    assert attainment(HAND, 1.1) == pytest.approx(3 / 5)  # 11 s is within 11 s
    assert attainment(HAND, 1.5) == pytest.approx(4 / 5)  # 15 s within 15 s; the error misses
    assert attainment(HAND, 1000.0) == pytest.approx(4 / 5)  # a failed program never meets
    assert attainment(HAND, 0.3) == 0.0
    with pytest.raises(InvalidInputError, match="at least one row"):
        attainment([], 1.0)


def test_latency_percentile_counts_failures_as_infinite() -> None:
    # Sorted: 4, 9, 11, 15, inf; numpy's linear rank is q/100 x 4.
    assert latency_percentile(HAND, 0) == pytest.approx(4.0)
    assert latency_percentile(HAND, 50) == pytest.approx(11.0)  # rank 2
    assert latency_percentile(HAND, 70) == pytest.approx(14.2)  # rank 2.8: 11 + 0.8 x 4
    assert latency_percentile(HAND, 75) == pytest.approx(15.0)  # rank 3 exactly
    assert latency_percentile(HAND, 80) == math.inf  # rank 3.2 reaches the failure
    ok = HAND[:4]  # 4, 9, 11, 15: P90 at rank 2.7 is 11 + 0.7 x 4
    assert latency_percentile(ok, 90) == pytest.approx(float(np.percentile([4, 9, 11, 15], 90)))
    assert latency_percentile(ok, 90) == pytest.approx(13.8)
    with pytest.raises(InvalidInputError, match="percentile"):
        latency_percentile(HAND, 101)
    with pytest.raises(InvalidInputError, match="at least one row"):
        latency_percentile([], 50)


def test_tightest_slo_by_hand() -> None:
    # ceil(target x 5)-th smallest of 0.4, 0.9, 1.1, 1.5, inf.
    assert tightest_slo(HAND, 0.4) == pytest.approx(0.9)  # 2nd
    assert tightest_slo(HAND, 0.5) == pytest.approx(1.1)  # ceil(2.5) = 3rd
    assert tightest_slo(HAND, 0.6) == pytest.approx(1.1)  # 3rd (0.6 x 5 is 3, not 3.0000001)
    assert tightest_slo(HAND, 0.8) == pytest.approx(1.5)  # 4th
    assert tightest_slo(HAND, 0.9) == math.inf  # 5th is the failure: unreachable
    with pytest.raises(InvalidInputError, match="target"):
        tightest_slo(HAND, 0.0)
    with pytest.raises(InvalidInputError, match="unit deadline"):
        tightest_slo([_row(unit=0.0)], 0.9)


@pytest.mark.parametrize("seed", range(20))
def test_tightest_slo_is_exact(seed: int) -> None:
    """At the returned scale the target is met; a hair below it is not."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    rows = [
        _row(
            program=i,
            arrival=float(rng.uniform(0, 100)),
            latency=float(rng.choice([0.1, 0.3, 0.7]) * rng.integers(1, 60)),  # awkward floats
            unit=float(rng.choice([0.1, 0.3, 1 / 3, 7.0])),
            error="x" if rng.random() < 0.05 else None,
        )
        for i in range(n)
    ]
    for target in (0.1, 0.5, 0.7, 0.9, 0.95, 1.0):
        s = tightest_slo(rows, target)
        if math.isinf(s):
            assert attainment(rows, 1e300) < target
            continue
        assert attainment(rows, s) >= target
        assert attainment(rows, s * (1 - 1e-9)) < target


def test_max_rate_exact_interpolates() -> None:
    points = [(0.4, 0.7), (0.1, 1.0), (0.8, 0.2), (0.2, 0.95), (1.6, 0.95)]  # unsorted
    bound = max_rate(points, 0.9)
    # Last at/above 0.9 is (0.2, 0.95), first below is (0.4, 0.7):
    # 0.2 + (0.95 - 0.9) / (0.95 - 0.7) x (0.4 - 0.2) = 0.2 + 0.2 x 0.2 = 0.24
    # (the recovery at 1.6 does not count: the scan stops at the first drop).
    assert bound.kind == "exact"
    assert bound.value == pytest.approx(0.24)
    assert str(bound) == "0.24"
    # Exactly at the target counts as sustained: 1 + (0.9 - 0.9) / 0.4 x 1 = 1.
    assert max_rate([(1.0, 0.9), (2.0, 0.5)], 0.9) == RateBound(1.0, "exact")


def test_max_rate_bounds() -> None:
    high = max_rate([(0.5, 0.92), (0.1, 1.0)], 0.9)
    assert (high.kind, high.value, str(high)) == ("at least", 0.5, ">=0.50")
    low = max_rate([(0.3, 0.5), (0.6, 0.2)], 0.9)
    assert (low.kind, low.value, str(low)) == ("below range", 0.3, "<0.30")
    assert str(max_rate([(0.8, 1.0)])) == ">=0.80"
    with pytest.raises(InvalidInputError, match="at least one"):
        max_rate([])
    with pytest.raises(InvalidInputError, match="distinct"):
        max_rate([(1.0, 1.0), (1.0, 0.5)])
    with pytest.raises(InvalidInputError, match="target"):
        max_rate([(1.0, 1.0)], 1.5)


# --- headlines ----------------------------------------------------------------------------


def _ten(system: str, rate: float, met: int, *, tokens: int = 100) -> list[OnlineRow]:
    """Ten programs, unit 10 s: ``met`` of them at 5 s, the rest at 20 s (late at scale 1)."""
    return _cell(system, rate, [5.0] * met + [20.0] * (10 - met), tokens=tokens)


def _grid() -> list[OnlineRow]:
    rows = []
    # Rate-1 cells (the fixed rate) by explicit latencies; unit 10 s.
    rows += _cell("baseline", 1.0, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], tokens=400)
    rows += _cell("dynasor", 1.0, [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5], tokens=150)
    rows += _cell("gang", 1.0, [3.0] * 10, tokens=400)
    rows += _ten("early-stop", 1.0, 5, tokens=150)
    # Attainment at scale 1 by rate: baseline 1.0, 0.5, 0.0; dynasor 1.0, 1.0, 0.7;
    # gang 1.0, 1.0, 1.0; early-stop 0.5, 0.5, 0.5.
    for system, met2, met4 in (("baseline", 5, 0), ("dynasor", 10, 7), ("gang", 10, 10)):
        rows += _ten(system, 2.0, met2) + _ten(system, 4.0, met4)
    rows += _ten("early-stop", 2.0, 5) + _ten("early-stop", 4.0, 5)
    return rows


def test_headline_ratios() -> None:
    items = {h.system: h for h in headlines(_grid(), slo_scale=1.0, fixed_rate=1.0)}
    assert list(items) == ["baseline", "early-stop", "dynasor", "gang"]  # SYSTEMS order
    base, dyn, gang, early = items["baseline"], items["dynasor"], items["gang"], items["early-stop"]
    # baseline: 1 + (1.0 - 0.9) / (1.0 - 0.5) x (2 - 1) = 1.2
    assert base.max_rate == RateBound(pytest.approx(1.2), "exact")  # type: ignore[arg-type]
    assert str(base.rate_ratio) == "1.00x"
    # dynasor: 2 + (1.0 - 0.9) / (1.0 - 0.7) x (4 - 2) = 2.6667; / 1.2 = 2.2222
    assert dyn.max_rate.value == pytest.approx(8 / 3)
    assert dyn.rate_ratio.value == pytest.approx(20 / 9)
    assert (str(dyn.max_rate), str(dyn.rate_ratio)) == ("2.67", "2.22x")
    # gang never drops: at least 4, so at least 4 / 1.2 = 3.33x
    assert (str(gang.max_rate), str(gang.rate_ratio)) == (">=4.00", ">=3.33x")
    # early-stop misses even at rate 1: below 1, so below 1 / 1.2 = 0.83x
    assert (str(early.max_rate), str(early.rate_ratio)) == ("<1.00", "<0.83x")
    # Tightest SLO at rate 1, 9th of 10 smallest latency/unit:
    # baseline 0.9, dynasor 0.45, gang 0.3, early-stop 2.0; ratio = baseline's / own.
    assert base.tightest_slo == pytest.approx(0.9)
    assert dyn.tightest_slo == pytest.approx(0.45)
    assert (str(base.slo_ratio), str(dyn.slo_ratio), str(gang.slo_ratio)) == (
        "1.00x",
        "2.00x",
        "3.00x",
    )
    assert early.slo_ratio.value == pytest.approx(0.45)
    assert (dyn.accuracy, dyn.tokens, base.tokens) == (1.0, 150.0, 400.0)


def test_headline_ratio_bounds_and_baseline_choice() -> None:
    rows = _ten("baseline", 1.0, 10) + _ten("baseline", 2.0, 10)  # at least 2
    rows += _ten("dynasor", 1.0, 10) + _ten("dynasor", 2.0, 5)  # 1 + 0.1/0.5 = 1.2
    rows += _ten("gang", 1.0, 10) + _ten("gang", 2.0, 10)  # at least 2
    rows += _ten("early-stop", 2.0, 10)  # nothing at the fixed rate 1
    items = {h.system: h for h in headlines(rows, slo_scale=1.0, fixed_rate=1.0)}
    # baseline at least 2: dynasor's 1.2 is at most 1.2 / 2 = 0.6x; gang's unknown.
    assert str(items["dynasor"].rate_ratio) == "<=0.60x"
    assert str(items["gang"].rate_ratio) == "n/a"
    assert str(items["baseline"].rate_ratio) == "1.00x"  # itself, whatever its bound
    assert items["early-stop"].tightest_slo is None
    assert str(items["early-stop"].slo_ratio) == "n/a"
    table = headline_table(list(items.values()))
    assert "| early-stop | >=2.00 | n/a | - | n/a | - | - |" in table
    # With the baseline below range, an exact rate is above value / its lowest rate.
    low = _ten("baseline", 1.0, 5) + _ten("gang", 1.0, 10) + _ten("gang", 2.0, 5)
    first = headlines(low, slo_scale=1.0, fixed_rate=1.0, baseline=None)
    assert [h.system for h in first] == ["baseline", "gang"]
    assert str(first[1].rate_ratio) == ">1.20x"  # 1.2 / (below 1)
    only = headlines(_ten("gang", 1.0, 10), slo_scale=1.0, fixed_rate=1.0, baseline=None)
    assert str(only[0].rate_ratio) == "1.00x"
    with pytest.raises(InvalidInputError, match="baseline 'baseline'"):
        headlines(_ten("gang", 1.0, 10), slo_scale=1.0, fixed_rate=1.0)


# --- storage ------------------------------------------------------------------------------


def test_append_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "rows.jsonl"
    append_rows(path, HAND[:2])
    append_rows(path, HAND[2:])
    assert load_rows(path) == HAND
    assert path.read_text().count("\n") == len(HAND)


def test_cut_last_line_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    append_rows(path, _cell("baseline", 1.0, [1, 2, 3]))
    cut = _row("gang", 1.0, 0, 4.0).model_dump_json()[:40]  # an interrupted write
    with path.open("a") as handle:
        handle.write(cut)
    rows = load_rows(path)
    assert len(rows) == 3
    assert done_cells(rows) == {("baseline", 1.0)}
    # The next append ends the broken line first; the cut row stays ignored.
    append_rows(path, _cell("gang", 1.0, [4, 5, 6]))
    rows = load_rows(path)
    assert [(r.system, r.program) for r in rows] == [("baseline", i) for i in range(3)] + [
        ("gang", i) for i in range(3)
    ]
    assert done_cells(rows, count=3) == {("baseline", 1.0), ("gang", 1.0)}


def test_rerun_cell_supersedes_partial_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    append_rows(path, _cell("gang", 2.0, [1, 1]))  # a partial first run (2 of 3)
    assert done_cells(load_rows(path), count=3) == set()
    append_rows(path, _cell("gang", 2.0, [7, 8, 9]))
    rows = load_rows(path)
    assert [r.latency for r in rows] == [7, 8, 9]
    assert done_cells(rows, count=3) == {("gang", 2.0)}


def test_done_cells_infers_the_workload_size() -> None:
    rows = _cell("baseline", 1.0, [1, 2, 3]) + _cell("gang", 1.0, [1, 2])
    rows += _cell("dynasor", 2.0, [1, 2])
    assert done_cells(rows) == {("baseline", 1.0), ("dynasor", 2.0)}  # gang lacks program 2
    assert done_cells(rows, count=2) == {("gang", 1.0), ("dynasor", 2.0)}
    with pytest.raises(InvalidInputError, match=">= 1"):
        done_cells(rows, count=0)


def test_bad_lines_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    append_rows(path, HAND[:1])
    with path.open("a") as handle:
        handle.write('{"system": "gang", "rate": 1.0}\n')  # valid JSON, not a row
    with pytest.raises(InvalidInputError, match=r"rows\.jsonl:2: not an online result row"):
        load_rows(path)
    path.write_text(HAND[0].model_dump_json() + "\nnot json at all\n")
    with pytest.raises(InvalidInputError, match=r"rows\.jsonl:2"):
        load_rows(path)
    with pytest.raises(InvalidInputError, match="not found"):
        load_rows(tmp_path / "missing.jsonl")
    assert load_rows(tmp_path / "missing.jsonl", missing_ok=True) == []


# --- tables -------------------------------------------------------------------------------


def test_rate_table_numbers() -> None:
    rows = HAND + _cell("dynasor", 1.0, [2, 3], tokens=50) + _ten("baseline", 2.0, 3)
    summaries = summarize_cells(rows, 1.0)
    assert [(s.system, s.rate) for s in summaries] == [
        ("baseline", 1.0),
        ("baseline", 2.0),
        ("dynasor", 1.0),
    ]
    first = summaries[0]
    assert first == CellSummary(
        system="baseline",
        rate=1.0,
        programs=5,
        slo_scale=1.0,
        attainment=pytest.approx(0.4),  # type: ignore[arg-type]
        p50=pytest.approx(11.0),  # type: ignore[arg-type]
        p90=math.inf,  # rank 3.6 reaches the failure
        accuracy=pytest.approx(0.8),  # type: ignore[arg-type]
        tokens=pytest.approx(100.0),  # type: ignore[arg-type]
        errors=1,
    )
    lines = rate_table(summaries).splitlines()
    assert "attainment % @ SLO x1" in lines[0]
    assert lines[2] == "| baseline | 1 | 5 | 40.0 | 11.0 | inf | 80.0 | 100 | 1 |"
    # 3 at 5 s, 7 at 20 s: P50 = 20, P90 = 20; 30% met.
    assert lines[3] == "| baseline | 2 | 10 | 30.0 | 20.0 | 20.0 | 100.0 | 100 | 0 |"
    # 2 and 3 s: P50 = 2.5, P90 = 2 + 0.9 x 1 = 2.9.
    assert lines[4] == "| dynasor | 1 | 2 | 100.0 | 2.5 | 2.9 | 100.0 | 50 | 0 |"
    with pytest.raises(InvalidInputError):
        rate_table([])


def test_headline_table_numbers() -> None:
    lines = headline_table(headlines(_grid(), slo_scale=1.0, fixed_rate=1.0)).splitlines()
    assert lines[0] == (
        "| system | max rate @90% (SLO x1) /s | ratio | tightest SLO @ rate 1 | ratio "
        "| accuracy % | tokens/program |"
    )
    assert lines[2] == "| baseline | 1.20 | 1.00x | 0.90 | 1.00x | 100.0 | 400 |"
    assert lines[3] == "| early-stop | <1.00 | <0.83x | 2.00 | 0.45x | 100.0 | 150 |"
    assert lines[4] == "| dynasor | 2.67 | 2.22x | 0.45 | 2.00x | 100.0 | 150 |"
    assert lines[5] == "| gang | >=4.00 | >=3.33x | 0.30 | 3.00x | 100.0 | 400 |"


def test_slo_table_numbers() -> None:
    rows = HAND + _cell("dynasor", 1.0, [2, 3, 4, 5, 6]) + _ten("baseline", 2.0, 3)
    lines = slo_table(rows, [0.5, 1.0, 1.5], rate=1.0).splitlines()
    assert lines[0] == "| system @ 1/s | x0.5 | x1 | x1.5 | tightest @90% |"
    # baseline (0.4, 0.9, 1.1, 1.5, inf): 1, 2, 4 of 5 met; 90% needs the failure.
    assert lines[2] == "| baseline | 20.0 | 40.0 | 80.0 | unreachable |"
    # dynasor (0.2, 0.3, 0.4, 0.5, 0.6): 4 of 5 met at 0.5, all from 0.6; 5th smallest 0.6.
    assert lines[3] == "| dynasor | 80.0 | 100.0 | 100.0 | 0.60 |"
    with pytest.raises(InvalidInputError, match="span rates"):
        slo_table(rows, [1.0])
    with pytest.raises(InvalidInputError, match="no rows at rate 3"):
        slo_table(rows, [1.0], rate=3.0)


# --- plots --------------------------------------------------------------------------------


def _png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_writes_png(tmp_path: Path) -> None:
    measured = _grid() + HAND
    simulated = [r.model_copy(update={"finish": r.finish * 0.9}) for r in _grid()]
    kw = {"slo_scale": 1.0, "fixed_rate": 1.0, "scales": [0.5, 1.0, 2.0]}
    out = plot_online(tmp_path / "plots" / "both.png", measured, simulated, **kw)  # type: ignore[arg-type]
    assert _png(out)
    assert _png(plot_online(tmp_path / "m.png", measured, **kw))  # type: ignore[arg-type]
    assert _png(plot_online(tmp_path / "s.png", [], simulated, **kw))  # type: ignore[arg-type]
    # One rate per system, one scale, a fixed rate nobody ran, all failures.
    single = [*_ten("baseline", 0.5, 4), _row("gang", 0.5, 0, error="boom")]
    assert _png(
        plot_online(
            tmp_path / "one.png", single, single, slo_scale=1.0, fixed_rate=7.0, scales=[1.0]
        )
    )
    with pytest.raises(InvalidInputError, match="neither"):
        plot_online(tmp_path / "none.png", [], **kw)  # type: ignore[arg-type]


def test_small_rates_keep_three_significant_digits() -> None:
    # CPU rates are a few hundredths of a program per second: 0.03 would hide them.
    assert str(RateBound(0.03157, "exact")) == "0.0316"
    assert str(RateBound(0.5, "at least")) == ">=0.50"
    assert str(RateBound(19.061, "exact")) == "19.06"


# --- deadline forms, seeds and older rows -------------------------------------------------


def _fixed(rows: list[OnlineRow], unit: float) -> list[OnlineRow]:
    return [r.model_copy(update={"deadline_fixed": unit}) for r in rows]


def test_the_fixed_form_judges_every_program_by_one_deadline() -> None:
    # HAND latencies 4, 9, 11, 15 s and a failure; fixed deadline 20 s, per-program 10 s.
    rows = _fixed(HAND, 20.0)
    assert attainment(rows, 1.0, "fixed") == pytest.approx(4 / 5)
    assert attainment(rows, 0.5, "fixed") == pytest.approx(2 / 5)  # 4 and 9 s within 10 s
    assert attainment(rows, 0.5) == pytest.approx(1 / 5)  # per-program: 4 s within 5 s
    assert tightest_slo(rows[:4], 0.75, "fixed") == pytest.approx(11 / 20)
    assert tightest_slo(rows[:4], 0.75) == pytest.approx(1.1)
    table = slo_table(rows, [0.5, 1.0], form="fixed")
    assert table.splitlines()[0].startswith("| system @ 1/s, fixed deadline | x0.5 | x1 |")
    assert table.splitlines()[2] == "| baseline | 40.0 | 80.0 | unreachable |"
    (h,) = headlines(rows, slo_scale=1.0, fixed_rate=1.0, target=0.75, form="fixed")
    assert h.form == "fixed" and h.tightest_slo == pytest.approx(0.75)
    assert "fixed SLO x1" in headline_table([h])
    assert "@ fixed SLO x1" in rate_table(summarize_cells(rows, 1.0, "fixed"))


def test_rows_stored_before_the_new_fields_still_load(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    old = HAND[0].model_dump(exclude={"deadline_fixed", "seed", "replica"})
    path.write_text(json.dumps(old) + "\n")
    (row,) = load_rows(path)
    assert (row.deadline_fixed, row.seed, row.replica) == (None, None, None)
    assert row.met(1.0) and attainment([row], 1.0) == 1.0
    with pytest.raises(InvalidInputError, match="has no fixed deadline"):
        attainment([row], 1.0, "fixed")
    with pytest.raises(InvalidInputError, match="unknown deadline form 'soft'"):
        row.unit("soft")  # type: ignore[arg-type]


def test_seeds_are_kept_apart(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    seeded = [r.model_copy(update={"seed": s}) for s in (0, 1) for r in HAND[:2]]
    append_rows(path, seeded)
    assert load_rows(path) == seeded
