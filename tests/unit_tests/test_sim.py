"""The online simulator: real programs and policies on simulated engines, in simulated time."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dynasor_agents.errors import InvalidInputError
from dynasor_agents.server._config import ServerConfig
from dynasor_bench.sim._cost import CostModel
from dynasor_bench.sim._route import make_router
from dynasor_bench.sim._simulate import SimResult, simulate
from dynasor_bench.traces._bank import PathTrace, QuestionTrace
from dynasor_bench.workload._workload import (
    SYSTEMS,
    OnlineStrategy,
    OnlineWorkload,
    ProgramSpec,
    SystemSpec,
    make_workload,
)

from .replay_fakes import random_bank

BASELINE, EARLY_STOP, DYNASOR, GANG, SRF, LAS, EDF = SYSTEMS[:7]


def toy(**limits: int) -> CostModel:
    """Every engine step takes 1 s whatever it does."""
    return CostModel("toy", step_base=1.0, per_seq=0.0, per_prefill_token=0.0, **limits)


def question(qid: str, paths: Sequence[tuple[str | None, int]], gold: str = "4") -> QuestionTrace:
    """A question with ``(answer, tokens)`` paths; prompts of 10 tokens."""
    return QuestionTrace(
        id=qid,
        source="toy",
        question="?",
        gold=gold,
        prompt_tokens=10,
        paths=[
            PathTrace(
                text=f"so \\boxed{{{a}}}" if a is not None else "no idea",
                answer=a,
                completion_tokens=n,
                finish_reason="stop",
            )
            for a, n in paths
        ],
    )


def workload(*programs: tuple[float, QuestionTrace, OnlineStrategy]) -> OnlineWorkload:
    specs = tuple(
        ProgramSpec(i, arrival, q, strategy, difficulty=1.0, base=10.0)
        for i, (arrival, q, strategy) in enumerate(programs)
    )
    return OnlineWorkload(rate=1.0, seed=0, programs=specs)


def random_workload(seed: int = 0) -> OnlineWorkload:
    bank = random_bank(7, questions=6, k=8)
    return make_workload(bank, rate=2.0, count=12, seed=seed, base={"sc-8": 5.0, "sc-16": 8.0})


BUSY = CostModel(
    "busy",
    step_base=0.02,
    per_seq=0.001,
    per_prefill_token=0.0005,
    per_context_token=1e-5,
    max_num_seqs=6,
    max_batched_tokens=64,
    kv_capacity=120,  # small: programs preempt one another
)


# -- determinism and rows --------------------------------------------------------------


@pytest.mark.parametrize("system", SYSTEMS, ids=[s.name for s in SYSTEMS])
def test_same_seed_same_rows(system: SystemSpec) -> None:
    work = random_workload()
    runs = [
        simulate(work, system, BUSY, seed=3, replicas=2, request_overhead=0.05) for _ in range(2)
    ]
    assert runs[0] == runs[1]
    rows = runs[0].rows
    assert [r.program for r in rows] == list(range(12))
    assert {r.system for r in rows} == {system.name}
    assert all(r.rate == 2.0 and r.error is None and r.finish > r.arrival for r in rows)
    other = simulate(work, system, BUSY, seed=4, replicas=2, request_overhead=0.05)
    assert [r.finish for r in other.rows] != [r.finish for r in rows]  # the seed matters


def test_rows_carry_the_programs_outcome() -> None:
    q = question("q:1", [("4", 3), ("4", 5), ("5", 4), ("4", 6)])
    run = simulate(workload((2.0, q, OnlineStrategy("sc-4", 4))), BASELINE, toy())
    row = run.rows[0]
    # Fixed: all four paths launched at t=2 together; the longest (6 tokens) ends at t=8.
    assert (row.arrival, row.finish, row.samples, row.completion_tokens) == (2.0, 8.0, 4, 18)
    assert (row.answer, row.correct, row.stop_reason) == ("4", True, "max_samples")
    assert (row.question, row.source, row.strategy, row.deadline_unit) == ("q:1", "toy", "sc-4", 10)
    assert (run.engine_tokens, run.busy_seconds, run.makespan, run.steps) == (18, 6.0, 8.0, 6)
    assert run.prefill_tokens == 10 + 3  # one prompt, three prefix-cache hits
    assert (run.requests, run.aborted, run.replica_tokens) == (4, 0, (18,))
    assert (row.seed, row.replica, row.deadline_fixed) == (0, 0, None)


def test_request_overhead_delays_every_request() -> None:
    q = question("q:1", [("4", 3), ("4", 3)])
    run = simulate(
        workload((0.0, q, OnlineStrategy("sc-2", 2))), BASELINE, toy(), request_overhead=0.5
    )
    assert run.rows[0].finish == 3.5  # the engine sees both at t=0.5, three 1 s steps


# -- early stop ----------------------------------------------------------------------------


def test_early_stop_spends_fewer_engine_tokens_when_paths_agree() -> None:
    bank = [question(f"q:{i}", [("4", 5 + 3 * j + i) for j in range(8)]) for i in range(4)]
    work = workload(*((2.0 * i, q, OnlineStrategy("sc-8", 8)) for i, q in enumerate(bank)))
    fixed = simulate(work, BASELINE, toy(max_num_seqs=8))
    early = simulate(work, EARLY_STOP, toy(max_num_seqs=8))
    assert all(r.correct for r in (*fixed.rows, *early.rows))
    assert {r.samples for r in fixed.rows} == {8}
    assert {r.stop_reason for r in fixed.rows} == {"max_samples"}
    assert {r.stop_reason for r in early.rows} == {"certain"}
    assert max(r.samples for r in early.rows) < 8
    assert early.engine_tokens < fixed.engine_tokens
    assert sum(r.latency for r in early.rows) < sum(r.latency for r in fixed.rows)


@pytest.mark.parametrize("system", [EARLY_STOP, DYNASOR], ids=["plain", "dynasor"])
def test_a_stopped_programs_requests_leave_the_engine(system: SystemSpec) -> None:
    strategy = OnlineStrategy("sc-8", 8, certain=0.55)  # first round 4
    long_tail = question("q:0", [("4", 3), ("4", 3), ("4", 3), ("4", 100)])
    short = question("q:1", [("4", 5)] * 4)
    work = workload((0.0, long_tail, strategy), (1.0, short, strategy))
    run = simulate(work, system, toy(max_num_seqs=4))
    p0, p1 = run.rows
    # p0: three paths end at t=3; three agreeing answers with one pending give
    # Certaindex 0.594 >= 0.55, so it cancels the 100-token path after 3 tokens.
    assert (p0.finish, p0.samples, p0.stop_reason) == (3.0, 3, "certain")
    # p1 waited for the four slots; with the aborted request gone it gets all four
    # at t=3 and they end together at t=8 (the fourth, finished but undelivered
    # when p1 stops, comes back on Cancel and votes).
    assert (p1.finish, p1.samples, p1.stop_reason) == (8.0, 4, "certain")
    assert run.aborted == 1
    assert run.engine_tokens == 3 * 3 + 3 + 4 * 5
    assert run.makespan == 8.0


# -- program scheduling ------------------------------------------------------------------------


def test_gang_runs_an_earlier_programs_requests_first_under_load() -> None:
    # Never certain (four different answers): two rounds of 2 samples.
    strategy = OnlineStrategy("sc-4", 4, certain=0.99, hopeless_below=0.0)
    short = question("q:0", [(a, 3) for a in "1234"], gold="1")
    long = question("q:1", [(a, 10) for a in "1234"], gold="1")
    work = workload((0.0, short, strategy), (0.5, long, strategy))
    cost = toy(max_num_seqs=2)
    plain = simulate(work, SystemSpec("fcfs", "plain", early_stop=True), cost)
    gang = simulate(work, SystemSpec("gang", "gang", early_stop=True), cost)
    # Plain FCFS: p0's round 1 runs [0,3); p1's two requests (queued at 0.5) take
    # both slots [3,13); p0's round 2 (queued at 3) waits and runs [13,16). p1's
    # round 2 (queued at 13) runs [16,26).
    assert [r.finish for r in plain.rows] == [16.0, 26.0]
    # Gang: p0's round 2 (priority 0) jumps ahead of p1's queued requests
    # (priority 1): [3,6). p1 then runs [6,16) and [16,26).
    assert [r.finish for r in gang.rows] == [6.0, 26.0]
    assert [r.samples for r in gang.rows] == [4, 4]


def test_dynasor_scheduling_runs_the_workload() -> None:
    run = simulate(random_workload(), DYNASOR, BUSY, server=ServerConfig(aging=10.0))
    assert len(run.rows) == 12 and all(r.error is None for r in run.rows)
    assert run.engine_tokens > 0 and run.busy_seconds <= run.makespan


def test_srf_reorders_but_runs_every_sample_as_the_baseline_does() -> None:
    work = random_workload(seed=2)
    base, srf = simulate(work, BASELINE, BUSY), simulate(work, SRF, BUSY)
    assert (SRF.name, SRF.scheduling, SRF.early_stop) == ("srf", "dynasor", False)
    assert [(r.samples, r.answer, r.completion_tokens) for r in srf.rows] == [
        (r.samples, r.answer, r.completion_tokens) for r in base.rows
    ]
    assert [r.finish for r in srf.rows] != [r.finish for r in base.rows]  # another order


def test_las_is_fcfs_for_programs_of_one_round() -> None:
    # Every request of a fixed program goes out at once, before it has been served:
    # all rank 0 under least attained service, so arrival order decides, as in FCFS.
    work = random_workload(seed=3)
    las, base = simulate(work, LAS, BUSY), simulate(work, BASELINE, BUSY)
    assert [r.finish for r in las.rows] == pytest.approx([r.finish for r in base.rows])


def _specs(*programs: tuple[float, float, int, int]) -> OnlineWorkload:
    """Programs ``(arrival, deadline unit, samples, path tokens)``, all answering 4."""
    specs = tuple(
        ProgramSpec(
            i,
            arrival,
            question(f"q:{i}", [("4", tokens)] * samples),
            OnlineStrategy(f"sc-{samples}", samples),
            difficulty=1.0,
            base=unit,
        )
        for i, (arrival, unit, samples, tokens) in enumerate(programs)
    )
    return OnlineWorkload(rate=1.0, seed=0, programs=specs)


def test_edf_runs_the_earlier_deadline_first() -> None:
    # Two slots. p0 (due at 300 s at SLO x3) queues two of its four requests at t=0;
    # p1 arrives at 0.5, due at 60.5 s: EDF runs it before p0's queued pair, FCFS after.
    work = _specs((0.0, 100.0, 4, 10), (0.5, 20.0, 2, 10))
    fcfs = simulate(work, BASELINE, toy(max_num_seqs=2))
    edf = simulate(work, EDF, toy(max_num_seqs=2))
    assert edf.rows[1].finish < fcfs.rows[1].finish and edf.rows[0].finish > fcfs.rows[0].finish
    assert all(r.stop_reason == "max_samples" and not r.late for r in edf.rows)


def test_a_late_program_is_stopped_answers_with_what_it_has_and_misses() -> None:
    # Deadline 10 s (unit 10, hint x1): two 3- and 5-token paths are in, two 50-token
    # ones are still running; the table stops the program just after t=10.
    q = question("q:1", [("4", 3), ("4", 5), ("4", 50), ("4", 50)])
    spec = ProgramSpec(0, 0.0, q, OnlineStrategy("sc-4", 4), difficulty=1.0, base=10.0)
    edf_x1 = SystemSpec("edf", "edf", False, deadline_hint=1.0)
    run = simulate(OnlineWorkload(rate=1.0, seed=0, programs=(spec,)), edf_x1, toy())
    (row,) = run.rows
    assert (row.stop_reason, row.samples, row.answer, row.error) == ("deadline", 2, "4", None)
    assert row.finish == pytest.approx(10.0) and run.aborted == 2
    assert row.late and not row.met(100.0)
    # Without a component there is no one to stop it: it runs to its end.
    plain = SystemSpec("plain-hint", "plain", False, deadline_hint=1.0)
    (kept,) = simulate(OnlineWorkload(rate=1.0, seed=0, programs=(spec,)), plain, toy()).rows
    assert (kept.stop_reason, kept.finish) == ("max_samples", 50.0)


# -- the server's budget ---------------------------------------------------------------------


def sc2_under(server: ServerConfig, programs: int = 1) -> SimResult:
    """``programs`` sc-2 programs arriving at once, two 8-token paths saying 4, under
    ``server``, on gang scheduling with fixed counts and ``max_tokens=8``."""
    q = question("q:1", [("4", 8), ("4", 8)])
    work = workload(*[(0.0, q, OnlineStrategy("sc-2", 2))] * programs)
    gang_fixed = SystemSpec("gang", "gang", early_stop=False)
    return simulate(work, gang_fixed, toy(), max_tokens=8, server=server)


def test_a_budget_cut_path_completes_without_an_answer() -> None:
    run = sc2_under(ServerConfig(default_budget=12))
    row = run.rows[0]
    # The first request reserves 8 of the 12 tokens; the second is capped at 4: cut
    # short, it completes without text and abstains.
    assert (row.samples, row.completion_tokens, row.answer, row.correct) == (2, 12, "4", True)
    assert run.engine_tokens == 12


def test_a_program_the_server_refuses_becomes_a_row_with_its_error() -> None:
    run = sc2_under(ServerConfig(max_programs=1), programs=2)
    ok, refused = sorted(run.rows, key=lambda r: r.error is not None)
    assert ok.error is None and ok.answer == "4"
    assert refused.error is not None and "(program p1)" in refused.error
    assert (refused.samples, refused.answer, refused.correct) == (0, None, False)


def test_a_refused_request_keeps_the_sample_admitted_before_it() -> None:
    run = sc2_under(ServerConfig(default_budget=8))
    row = run.rows[0]
    # The first request takes the whole budget; the second is refused. The core
    # waits for the first, answers with it and stops on the spent budget.
    assert row.error is None and row.stop_reason == "max_tokens"
    assert (row.samples, row.answer, row.correct, row.finish) == (1, "4", True, 8.0)
    assert (run.aborted, run.engine_tokens) == (0, 8)


def test_the_client_max_tokens_cuts_paths() -> None:
    q = question("q:1", [("4", 8), ("4", 8)])
    run = simulate(workload((0.0, q, OnlineStrategy("sc-2", 2))), BASELINE, toy(), max_tokens=5)
    row = run.rows[0]
    assert (row.samples, row.completion_tokens, row.answer) == (2, 10, None)


# -- replicas ---------------------------------------------------------------------------


def test_replicas_route_programs_by_id() -> None:
    bank = [question(f"q:{i}", [("4", (i + 1) * n) for n in (1, 2, 3, 4)]) for i in range(6)]
    work = workload(*((0.5 * i, q, OnlineStrategy("sc-4", 4)) for i, q in enumerate(bank)))
    one = simulate(work, BASELINE, toy())
    three = simulate(work, BASELINE, toy(), replicas=3)
    # Fixed programs use each of their four paths once: (i + 1) x 10 tokens.
    router = make_router("consistent_hash", 3, seed=0)
    expected, programs = [0, 0, 0], [0, 0, 0]
    for i in range(6):
        expected[router.assign(f"p{i}")] += (i + 1) * 10
        programs[router.assign(f"p{i}")] += 1
    assert three.replica_tokens == tuple(expected)
    assert three.replica_programs == tuple(programs)
    assert [r.replica for r in three.rows] == [router.assign(f"p{i}") for i in range(6)]
    assert three.engine_tokens == one.engine_tokens == sum(expected)
    assert [r.answer for r in three.rows] == [r.answer for r in one.rows]
    assert three == simulate(work, BASELINE, toy(), replicas=3)


@pytest.mark.parametrize("routing", ["consistent_hash", "random", "sticky_least_loaded"])
def test_every_routing_policy_serves_the_same_programs(routing: str) -> None:
    work = random_workload(seed=1)
    one = simulate(work, DYNASOR, BUSY)
    four = simulate(work, DYNASOR, BUSY, replicas=4, routing=routing)  # type: ignore[arg-type]
    assert four == simulate(work, DYNASOR, BUSY, replicas=4, routing=routing)  # type: ignore[arg-type]
    assert sum(four.replica_programs) == len(work.programs)
    assert [r.program for r in four.rows] == [r.program for r in one.rows]
    assert {r.replica for r in four.rows} <= {0, 1, 2, 3}
    assert all(r.seed == work.seed for r in four.rows)


def test_sticky_least_loaded_routing_balances_programs_in_flight() -> None:
    # Four long programs arrive together: one per replica, whatever their ids hash to.
    bank = [question(f"q:{i}", [("4", 50)] * 4) for i in range(4)]
    work = workload(*((0.0, q, OnlineStrategy("sc-4", 4)) for q in bank))
    run = simulate(work, BASELINE, toy(), replicas=4, routing="sticky_least_loaded")
    assert sorted(r.replica or 0 for r in run.rows) == [0, 1, 2, 3]
    assert run.replica_programs == (1, 1, 1, 1)


def test_unknown_routing_is_an_error() -> None:
    work = random_workload()
    with pytest.raises(InvalidInputError, match="unknown routing policy 'round_robin'"):
        simulate(work, BASELINE, toy(), replicas=2, routing="round_robin")  # type: ignore[arg-type]


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": 0}, "replicas must be >= 1"),
        ({"max_tokens": 0}, "max_tokens must be >= 1"),
        ({"request_overhead": -1.0}, "request_overhead must be finite"),
        ({"request_overhead": float("inf")}, "request_overhead must be finite"),
    ],
)
def test_simulate_validates_its_arguments(kwargs: dict[str, float], message: str) -> None:
    work = workload((0.0, question("q:1", [("4", 3)] * 2), OnlineStrategy("sc-2", 2)))
    with pytest.raises(InvalidInputError, match=message):
        simulate(work, BASELINE, toy(), **kwargs)  # type: ignore[arg-type]


def test_simulate_rejects_questions_an_engine_cannot_hold() -> None:
    work = workload((0.0, question("q:1", [("4", 300)] * 2), OnlineStrategy("sc-2", 2)))
    with pytest.raises(InvalidInputError, match="q:1: 10 prompt \\+ 300 completion tokens"):
        simulate(work, BASELINE, toy(max_num_seqs=4, max_batched_tokens=100))
    small = toy(max_num_seqs=4, max_batched_tokens=100)
    assert isinstance(simulate(work, BASELINE, small, max_tokens=50), SimResult)  # 10 + 50 fit
