"""The online load generator: seeded workloads, arrival times kept, rows measured."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from dynasor_agents.errors import InvalidInputError
from dynasor_bench.online._run import program_id, run_online
from dynasor_bench.sim._calibrate import calibrate_engine, fit_decode
from dynasor_bench.sim._cost import CPU_QWEN_05B
from dynasor_bench.workload._workload import (
    SYSTEMS,
    OnlineStrategy,
    make_workload,
    poisson_arrivals,
    source_difficulty,
)
from tests.unit_tests.replay_fakes import path, question, random_bank
from tests.unit_tests.strategy_fakes import ScriptedChat

BASE = {"sc-8": 10.0, "sc-16": 20.0}


def test_seeded_arrivals_are_reproducible() -> None:
    bank = random_bank(0, questions=6)
    one = make_workload(bank, rate=0.5, count=20, seed=3, base=BASE)
    two = make_workload(bank, rate=0.5, count=20, seed=3, base=BASE)
    other = make_workload(bank, rate=0.5, count=20, seed=4, base=BASE)
    assert one == two
    assert [p.arrival for p in one.programs] != [p.arrival for p in other.programs]
    # Another rate: the same programs, arrivals scaled by the rates' ratio.
    fast = make_workload(bank, rate=2.0, count=20, seed=3, base=BASE)
    assert [p.question.id for p in fast.programs] == [p.question.id for p in one.programs]
    assert [p.strategy for p in fast.programs] == [p.strategy for p in one.programs]
    assert [4 * p.arrival for p in fast.programs] == pytest.approx(
        [p.arrival for p in one.programs]
    )
    arrivals = [p.arrival for p in one.programs]
    assert arrivals == sorted(arrivals) and arrivals[0] > 0


def test_poisson_gaps_have_the_rate_as_their_mean() -> None:
    times = poisson_arrivals(4.0, 20_000, np.random.default_rng(1))
    gaps = np.diff([0.0, *times])
    assert gaps.mean() == pytest.approx(0.25, rel=0.03)
    assert gaps.std() == pytest.approx(0.25, rel=0.05)  # exponential: sd = mean
    with pytest.raises(InvalidInputError, match="rate must be > 0"):
        poisson_arrivals(0.0, 3, np.random.default_rng(1))


def test_deadline_is_scale_times_difficulty_times_base() -> None:
    bank = [question("e:1", [path("1", 100)], source="easy"), question("h:1", [path("1", 300)])]
    assert source_difficulty(bank) == {"easy": 0.5, "toy": 1.5}
    wl = make_workload(bank, rate=1.0, count=8, seed=0, base=BASE)
    for p in wl.programs:
        expected = (0.5 if p.question.source == "easy" else 1.5) * BASE[p.strategy.name]
        assert p.deadline_unit == pytest.approx(expected)


def test_programs_get_seeded_uuids_that_every_rate_shares() -> None:
    bank = random_bank(0, questions=6)
    one = make_workload(bank, rate=0.5, count=50, seed=3, base=BASE)
    ids = [p.id for p in one.programs]
    assert len(set(ids)) == 50 and all(uuid.UUID(i).version == 4 for i in ids)
    assert ids == [
        p.id for p in make_workload(bank, rate=4.0, count=50, seed=3, base=BASE).programs
    ]
    assert ids != [
        p.id for p in make_workload(bank, rate=0.5, count=50, seed=4, base=BASE).programs
    ]
    # The uuids come from their own generator: the rest of the workload is as before.
    legacy = dataclasses.replace(one.programs[0], program_id="")
    assert legacy.id == "p0" and legacy.question == one.programs[0].question


def test_fixed_deadlines_are_one_per_strategy() -> None:
    bank = random_bank(0, questions=6)
    wl = make_workload(
        bank, rate=1.0, count=30, seed=0, base=BASE, fixed={"sc-8": 7.0, "sc-16": 9.0}
    )
    assert {(p.strategy.name, p.fixed_deadline) for p in wl.programs} == {
        ("sc-8", 7.0),
        ("sc-16", 9.0),
    }
    assert all(p.fixed_deadline is None for p in make_workload(
        bank, rate=1.0, count=3, seed=0, base=BASE).programs)  # fmt: skip
    with pytest.raises(InvalidInputError, match="no fixed deadline for strategies"):
        make_workload(bank, rate=1.0, count=2, seed=0, base=BASE, fixed={"sc-8": 1.0})
    with pytest.raises(InvalidInputError, match="fixed deadlines must be > 0"):
        make_workload(bank, rate=1.0, count=2, seed=0, base=BASE, fixed={"sc-8": 1.0, "sc-16": 0})


def test_fixed_deadline_is_the_median_idle_latency() -> None:
    from dynasor_bench.online._plan import fixed_deadlines, idle_latencies
    from dynasor_bench.sim._cost import CostModel

    toy = CostModel("toy", step_base=1.0, per_seq=0.0, per_prefill_token=0.0)
    # sc-2 alone on an idle engine waits for its longer path: 1 s per token.
    bank = [question(f"q:{n}", [path("1", n), path("1", 2 * n)]) for n in (10, 20, 30)]
    sc2 = OnlineStrategy("sc-2", 2)
    assert idle_latencies(bank, toy, sc2, max_tokens=100) == [20.0, 40.0, 60.0]
    mix = {"sc-2": (sc2, 1.0)}
    assert fixed_deadlines(bank, toy, mix, max_tokens=100) == {"sc-2": 40.0}
    assert fixed_deadlines(bank, toy, mix, max_tokens=100, quantile=1.0) == {"sc-2": 60.0}
    assert fixed_deadlines(bank, toy, mix, max_tokens=30) == {"sc-2": 30.0}  # cut at 30
    with pytest.raises(InvalidInputError, match="quantile must be in"):
        fixed_deadlines(bank, toy, mix, max_tokens=100, quantile=0.0)


def test_workload_input_errors_name_the_problem() -> None:
    bank = random_bank(0)
    with pytest.raises(InvalidInputError, match="no base latency"):
        make_workload(bank, rate=1.0, count=2, seed=0, base={"sc-8": 1.0})
    with pytest.raises(InvalidInputError, match="at least one question"):
        make_workload([], rate=1.0, count=2, seed=0, base=BASE)
    with pytest.raises(InvalidInputError, match="samples must be >= 2"):
        OnlineStrategy("one", 1)


def test_early_stop_controller_samples_in_rounds() -> None:
    strategy = OnlineStrategy("sc-16", 16)
    fixed = strategy.controller(early_stop=False)
    early = strategy.controller(early_stop=True)
    assert (fixed.first_round, fixed.round_size) == (16, 16)
    assert (early.first_round, early.round_size) == (8, 8)


class FakeTime:
    """A clock that only moves when a sleeper wakes (sleepers wake in the order they
    slept, which for the runner is arrival order, so the clock never goes back)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        target = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, target)


def run(chat: ScriptedChat, system_index: int, time: FakeTime, count: int = 5) -> list:  # type: ignore[type-arg]
    bank = [question(f"q:{i}", [path("4", 10)] * 4, gold="4") for i in range(3)]
    wl = make_workload(bank, rate=0.5, count=count, seed=0, base=BASE)
    return asyncio.run(
        run_online(
            wl,
            SYSTEMS[system_index],
            chat=chat,
            client=None,
            system_prompt="Be brief.",
            max_tokens=32,
            clock=time.clock,
            sleep=time.sleep,
        )
    )


def test_programs_start_at_their_arrival_times() -> None:
    time = FakeTime()
    chat = ScriptedChat(script=lambda i: ("so \\boxed{4}", 0.0))
    rows = run(chat, 0, time)
    bank = [question(f"q:{i}", [path("4", 10)] * 4, gold="4") for i in range(3)]
    wl = make_workload(bank, rate=0.5, count=5, seed=0, base=BASE)
    assert [r.arrival for r in rows] == pytest.approx([p.arrival for p in wl.programs])
    assert [r.program for r in rows] == [0, 1, 2, 3, 4]
    assert all(r.correct and r.answer == "4" and r.error is None for r in rows)
    assert all(r.system == "baseline" and r.rate == 0.5 for r in rows)
    # Fixed sample counts: every sample of every program ran.
    assert [r.samples for r in rows] == [p.strategy.samples for p in wl.programs]
    assert len(chat._calls) == sum(p.strategy.samples for p in wl.programs)


def test_a_system_with_a_deadline_hint_sends_it() -> None:
    chat = ScriptedChat(script=lambda i: ("so \\boxed{4}", 0.0))
    bank = [question(f"q:{i}", [path("4", 10)] * 4, gold="4") for i in range(3)]
    wl = make_workload(bank, rate=0.5, count=2, seed=0, base=BASE)
    edf = next(s for s in SYSTEMS if s.name == "edf")
    time = FakeTime()
    rows = asyncio.run(
        run_online(
            wl, edf, chat=chat, client=None, system_prompt="b", max_tokens=32,
            clock=time.clock, sleep=time.sleep, wall=lambda: 1e9,
        )
    )  # fmt: skip
    assert all(r.error is None for r in rows)
    first = chat._calls[0]["extra_headers"]  # deadline: wall + x3 the unit (1 x 10 s)
    assert float(first["X-Dynasor-Deadline"]) == 1e9 + 3 * wl.programs[0].deadline_unit


def test_early_stop_system_spends_fewer_samples() -> None:
    fixed = run(ScriptedChat(script=lambda i: ("\\boxed{4}", 0.0)), 0, FakeTime())
    early = run(ScriptedChat(script=lambda i: ("\\boxed{4}", 0.0)), 1, FakeTime())
    assert sum(r.samples for r in early) < sum(r.samples for r in fixed)
    assert all(r.stop_reason == "certain" for r in early)


def test_a_failing_program_is_a_row_with_its_error() -> None:
    def script(i: int) -> tuple[str, float]:
        raise RuntimeError("server went away")

    rows = run(ScriptedChat(script=script), 0, FakeTime(), count=2)
    assert [r.correct for r in rows] == [False, False]
    assert all(r.error and "server went away" in r.error for r in rows)
    assert not rows[0].met(1e9)


def test_program_ids_name_system_rate_and_index() -> None:
    assert program_id(SYSTEMS[0], 0.125, 3) == "online-baseline-r0.125-p3"


def test_fit_decode_recovers_a_line() -> None:
    # step(B) = 0.05 + 0.004 B seconds per decode step
    seconds = {b: 0.05 + 0.004 * b for b in (1, 8, 32)}
    base, per_seq = fit_decode(seconds)
    assert (base, per_seq) == (pytest.approx(0.05), pytest.approx(0.004))
    with pytest.raises(InvalidInputError, match="two batch sizes"):
        fit_decode({1: 1.0})


def test_calibration_asks_for_exact_lengths_on_unique_prompts() -> None:
    seen: list[dict] = []  # type: ignore[type-arg]

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        await asyncio.sleep(0.005 * body["max_tokens"])  # longer answers take longer
        prompt = 12 if len(body["prompt"]) < 200 else 700
        usage = {"prompt_tokens": prompt, "completion_tokens": body["max_tokens"]}
        return httpx.Response(200, json={"usage": usage})

    cal = asyncio.run(
        calibrate_engine(
            "http://x",
            "m",
            base=CPU_QWEN_05B,
            batches=(1, 2),
            tokens=4,
            repeats=1,
            temperature=0.7,
            top_p=0.95,
            transport=httpx.MockTransport(handler),
        )
    )
    assert all(b["ignore_eos"] and b["model"] == "m" for b in seen)
    # Sampled as the workload samples: on a CPU the sampler is much of a step.
    assert all(b["temperature"] == 0.7 and b["top_p"] == 0.95 for b in seen)
    prompts = [b["prompt"] for b in seen]
    assert len(set(prompts)) == len(prompts)  # the prefix cache cannot help
    assert sorted(cal.decode_seconds) == [1, 2]
    assert cal.cost.max_num_seqs == CPU_QWEN_05B.max_num_seqs

    def short(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"usage": {"prompt_tokens": 5, "completion_tokens": 0}})

    async def inverted(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        await asyncio.sleep(0.03 if body["max_tokens"] == 1 else 0.0)
        usage = {"prompt_tokens": 5, "completion_tokens": body["max_tokens"]}
        return httpx.Response(200, json={"usage": usage})

    with pytest.raises(RuntimeError, match="is the server busy"):
        asyncio.run(
            calibrate_engine(
                "http://x",
                "m",
                base=CPU_QWEN_05B,
                repeats=1,
                transport=httpx.MockTransport(inverted),
            )
        )
    with pytest.raises(RuntimeError, match="asked 1 tokens, the server gave 0"):
        asyncio.run(
            calibrate_engine(
                "http://x", "m", base=CPU_QWEN_05B, transport=httpx.MockTransport(short)
            )
        )


def test_report_simulates_beside_the_measurement_and_writes_tables_and_plots(
    tmp_path: Path,
) -> None:
    from dynasor_bench.online._output import ReportSettings, write_report
    from dynasor_bench.online._plan import BankShape, bases
    from dynasor_bench.sim._calibrate import Calibration
    from dynasor_bench.sim._simulate import simulate
    from dynasor_bench.traces._bank import BankMeta
    from dynasor_bench.workload._workload import DEFAULT_MIX

    bank = random_bank(3, questions=6, k=16)
    cost = dataclasses.replace(CPU_QWEN_05B, name="toy-cpu", max_num_seqs=8)
    cal = Calibration(cost, 0.01, {1: 0.05, 8: 0.08}, 2000.0)
    shape = BankShape.of(bank)
    base = bases(cost, shape, DEFAULT_MIX, overhead=0.01)
    # "Measured" rows stand in from the simulator itself: the validation is then exact.
    wl = make_workload(bank, rate=0.05, count=3, seed=0, base=base)
    rows = [
        r
        for s in SYSTEMS
        for r in simulate(wl, s, cost, max_tokens=320, request_overhead=0.01).rows
    ]
    settings = ReportSettings(
        out=tmp_path, command="bench online", slo_scale=3.0, seed=0, programs=3, sim_programs=3,
        seeds=2, routing=("consistent_hash", "random"), reps=50,
    )  # fmt: skip
    meta = BankMeta(model="m", k=16, max_tokens=320, temperature=0.7, top_p=0.95,
                    top_logprobs=5, system_prompt="s", seed=0)  # fmt: skip
    path = write_report(
        settings, systems=SYSTEMS, questions=bank, meta=meta, shape=shape, cal=cal,
        rates=[0.05], base=base, rows=rows, scales=[1.0, 2.0, 4.0], replicas=[1, 2],
    )  # fmt: skip
    text = path.read_text()
    assert "Mean absolute error of the mean latency over cells: 0%." in text
    assert "## Projection: h100-8b" in text and "| dynasor-1round |" in text
    # Simulated sections: intervals under both deadline forms; measured: points (their
    # rows have no fixed deadline, as rows stored before it existed).
    assert text.count("[95% CI]") >= 4 * 4 and "fixed SLO" in text
    assert "Deadlines: fixed per strategy" in text
    found = json.loads((tmp_path / "online_headlines.json").read_text())
    assert set(found) == {
        "Simulated CPU engine (2 seeds x 3 programs per run)",
        "1 replica(s), 2 seeds x 3 programs per run",
        "2 replica(s), consistent_hash routing, 2 seeds x 3 programs per run",
        "2 replica(s), random routing, 2 seeds x 3 programs per run",
    }
    assert {h["system"] for h in found["1 replica(s), 2 seeds x 3 programs per run"]["fixed"]} == {
        *(s.name for s in SYSTEMS),
        "dynasor-1round",
    }
    for png in (
        "online_measured",
        "online_sim_cpu",
        "online_h100-8b_x1",
        "online_h100-8b_x2_consistent_hash",
        "online_h100-8b_x2_random",
    ):
        assert (tmp_path / f"{png}.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--programs", "0"], "--programs must be >= 1"),
        (["--slo-scale", "-1"], "--slo-scale must be > 0"),
        (["--scales", "1,x"], "--scales must be comma-separated numbers"),
        (["--systems", "baseline,fastest"], "unknown systems"),
        (["--replicas", "1,2.5"], "--replicas must be whole numbers"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--routing", "consistent_hash,round_robin"], "unknown routing policies"),
        (["--engines", "tpu"], "unknown engines"),
        (["--fixed-slo-scale", "0"], "--fixed-slo-scale must be > 0"),
    ],
)
def test_online_command_names_bad_arguments(argv: list[str], message: str) -> None:
    from dynasor_bench import bench_main

    with pytest.raises(InvalidInputError, match=message):
        bench_main(["online", *argv])
