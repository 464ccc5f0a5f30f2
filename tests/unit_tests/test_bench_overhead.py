"""The overhead benchmark's pure parts: statistics, verdicts, table, workload (no network)."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest

from dynasor_agents.protocol import (
    BUDGET_HEADER,
    CERTAINTY_HEADER,
    PROGRAM_ID_HEADER,
    REMAINING_HEADER,
    Hints,
)
from dynasor_bench.overhead._benchmark import (
    LoadFigures,
    OverheadReport,
    Workload,
    added_ms,
    bootstrap_interval,
    format_table,
    middleware_micro_us,
    percentile,
    render,
    run_batch,
    targets_met,
    throughput_ratio,
    verdicts,
)


def _report(plain_s: float = 2.0, dyn_s: float = 2.0, wrong: int = 0) -> OverheadReport:
    return OverheadReport(
        params={},
        load={
            "plain": LoadFigures(8, 256, plain_s),
            "dynasor": LoadFigures(8, 256, dyn_s, wrong_length=wrong),
        },
        round_ratios=[0.99, 1.01, 1.0],
        latencies_ms={"plain": [30.0, 31.0, 32.0, 50.0], "dynasor": [30.5, 31.5, 32.5, 49.0]},
        block_added_ms=[0.7, -0.2, 0.5],
    )


def test_percentile_interpolates_and_rejects_empty() -> None:
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_throughput_ratio() -> None:
    plain = LoadFigures(tokens=1000, seconds=5.0)
    assert throughput_ratio(plain, LoadFigures(tokens=1000, seconds=5.0)) == 1.0
    assert throughput_ratio(plain, LoadFigures(tokens=1000, seconds=10.0)) == 0.5
    assert math.isnan(throughput_ratio(LoadFigures(), plain))


def test_load_figures_add_sums_batches() -> None:
    total = LoadFigures()
    total.add(LoadFigures(32, 1024, 4.0, 1))
    total.add(LoadFigures(32, 1024, 6.0, 0))
    assert total == LoadFigures(64, 2048, 10.0, 1)
    assert total.tokens_per_second == pytest.approx(204.8)
    assert LoadFigures().tokens_per_second == 0.0


def test_added_ms_is_difference_of_medians() -> None:
    assert added_ms([1.0, 2.0, 100.0], [2.0, 3.0, 4.0]) == 1.0
    assert added_ms([5.0, 5.0], [4.0, 4.0]) == -1.0


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate() -> None:
    plain = [40.0 + (i * 7919 % 13) / 10 for i in range(101)]
    dynasor = [x + 0.5 for x in plain]
    low, high = bootstrap_interval(plain, dynasor, resamples=500)
    assert (low, high) == bootstrap_interval(plain, dynasor, resamples=500)
    assert low <= added_ms(plain, dynasor) <= high


@pytest.mark.parametrize(
    ("ratio", "added", "met"),
    [(0.98, 2.0, True), (0.979, 0.1, False), (1.2, 2.01, False), (0.99, -1.0, True)],
)
def test_verdicts_and_targets(ratio: float, added: float, met: bool) -> None:
    lines = verdicts(ratio, added)
    assert lines[0].startswith(f"throughput ratio = {ratio:.3f} (target >= 0.98)")
    assert lines[1].startswith(f"added median latency = {added:.2f} ms (target <= 2 ms)")
    assert targets_met(ratio, added) is met
    assert all(line.endswith((": met", ": MISSED")) for line in lines)


def test_table_and_render() -> None:
    report = _report(dyn_s=2.02)
    table = format_table(report).splitlines()
    assert table[1].split()[:5] == ["plain", "8", "256", "2.00", "128.0"]
    assert table[2].split()[0] == "dynasor"
    text = "\n".join(render(report))
    assert "ignore_eos honored" in text
    assert "range 0.990..1.010 over 3 rounds" in text
    assert "per block pair 0.50 ms median, range -0.20..0.70 over 3 pairs" in text
    assert text.endswith("added median latency = 0.50 ms (target <= 2 ms): met")
    assert "throughput ratio = 0.990" in text
    report.micro_us = {"plain": 4.0, "dynasor": 60.0}
    assert "56.0 us added per request" in "\n".join(render(report))
    assert "WARNING" in "\n".join(render(_report(wrong=2)))


def test_report_json_has_verdict_numbers() -> None:
    data = _report(dyn_s=4.0).to_json()
    assert data["ratio"] == 0.5
    assert data["added_median_ms"] == 0.5
    assert data["load"]["plain"]["tokens"] == 256


def test_workload_groups_requests_into_programs_with_valid_hints() -> None:
    reqs = Workload(model="m", program_size=4, max_tokens=16).batch("r0", 10)
    assert len(reqs) == 10
    ids = [r.program_id for r in reqs]
    assert ids == ["bench-r0-0"] * 4 + ["bench-r0-1"] * 4 + ["bench-r0-2"] * 2
    assert [r.last for r in reqs].count(True) == 3
    assert [r.headers[REMAINING_HEADER] for r in reqs] == list("3210321010")
    for r in reqs:
        assert r.headers[PROGRAM_ID_HEADER] == r.program_id
        assert r.headers[BUDGET_HEADER] == str(2 * 4 * 16)
        assert {"certainty", "budget", "remaining"} <= set(
            Hints.from_headers(r.headers).model_dump(exclude_none=True)
        )
        assert r.body["max_tokens"] == 16 and r.body["ignore_eos"] is True
        assert r.body["temperature"] == 0.0 and r.body["model"] == "m"
    assert float(reqs[3].headers[CERTAINTY_HEADER]) == 0.75
    assert Workload().batch("x", 2, max_tokens=1)[0].body["max_tokens"] == 1


async def test_micro_benchmark_runs_in_process() -> None:
    micro = await middleware_micro_us(8)
    assert set(micro) == {"plain", "dynasor"}
    assert all(v > 0 for v in micro.values())


async def test_run_batch_finishes_a_program_after_all_its_requests_return() -> None:
    events: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            events.append("delete " + request.url.path.rsplit("/", 1)[1])
            return httpx.Response(404)
        body = json.loads(request.content)
        await asyncio.sleep(0.02 if body["prompt"].startswith("Write") else 0.0)  # first is slow
        events.append("done " + request.headers[PROGRAM_ID_HEADER])
        usage = {"completion_tokens": body["max_tokens"] - (body["prompt"][0] == "D")}
        return httpx.Response(200, json={"usage": usage})

    reqs = Workload(program_size=4, max_tokens=8).batch("t", 8)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x") as c:
        figures = await run_batch(c, reqs, concurrency=8)
    assert figures.requests == 8 and figures.tokens == 8 * 8 - 2 and figures.wrong_length == 2
    for program in ("bench-t-0", "bench-t-1"):
        last_done = max(i for i, e in enumerate(events) if e == "done " + program)
        assert events.index("delete " + program) > last_done
