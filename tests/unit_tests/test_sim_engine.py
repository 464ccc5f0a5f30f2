"""The simulated continuous-batching engine: hand-computed schedules and step costs."""

from __future__ import annotations

import math
from typing import Any

import pytest

from dynasor_agents.errors import InvalidInputError
from dynasor_bench.sim._cost import CPU_QWEN_05B, H100_8B, CostModel
from dynasor_bench.sim._engine import Engine, FinishedRequest


def toy(**limits: Any) -> CostModel:
    """Every step takes 1 s whatever it does."""
    return CostModel("toy", step_base=1.0, per_seq=0.0, per_prefill_token=0.0, **limits)


def drain(engine: Engine, now: float = 0.0) -> dict[str, tuple[float, FinishedRequest]]:
    """Step until idle; each finished request with the time it finished."""
    done: dict[str, tuple[float, FinishedRequest]] = {}
    while not engine.idle:
        step = engine.step(now)
        now = step.end
        done.update({f.request_id: (now, f) for f in step.finished})
    return done


def finish_times(done: dict[str, tuple[float, FinishedRequest]]) -> dict[str, float]:
    return {rid: t for rid, (t, _) in done.items()}


# -- schedules by hand -----------------------------------------------------------------


def test_two_requests_decode_together() -> None:
    engine = Engine(toy())
    engine.submit("a", prompt_tokens=5, output_tokens=2, max_tokens=None, now=0.0)
    engine.submit("b", prompt_tokens=5, output_tokens=3, max_tokens=None, now=0.0)
    # Step [0,1): both are admitted, prefilled and yield token 1.
    # Step [1,2): both decode token 2: a is done at t=2.
    # Step [2,3): b decodes token 3: done at t=3.
    done = drain(engine)
    assert finish_times(done) == {"a": 2.0, "b": 3.0}
    assert (engine.steps, engine.busy_seconds, engine.generated_tokens) == (3, 3.0, 5)
    assert done["a"][1] == FinishedRequest("a", 5, 2, "stop", prefilled_tokens=5)


def test_one_slot_fcfs_runs_in_submit_order() -> None:
    engine = Engine(toy(max_num_seqs=1))
    engine.submit("a", prompt_tokens=5, output_tokens=2, max_tokens=None, now=0.0)
    engine.submit("b", prompt_tokens=5, output_tokens=3, max_tokens=None, now=0.0)
    # a holds the only slot for steps [0,1) and [1,2): done at t=2.
    # b is admitted at t=2 and needs three steps: 2 + 3 = t=5.
    assert finish_times(drain(engine)) == {"a": 2.0, "b": 5.0}


def test_one_slot_priority_runs_lower_priority_first() -> None:
    engine = Engine(toy(max_num_seqs=1), policy="priority")
    engine.submit("a", prompt_tokens=5, output_tokens=2, max_tokens=None, priority=5, now=0.0)
    engine.submit("b", prompt_tokens=5, output_tokens=3, max_tokens=None, priority=1, now=0.0)
    # b (priority 1) first: steps [0,3), done at t=3; then a: 3 + 2 = t=5.
    assert finish_times(drain(engine)) == {"a": 5.0, "b": 3.0}


def test_priority_none_counts_as_zero_and_ties_go_by_submit_time() -> None:
    engine = Engine(toy(max_num_seqs=1), policy="priority")
    engine.submit("late", prompt_tokens=1, output_tokens=1, max_tokens=None, priority=0, now=0.5)
    engine.submit("none", prompt_tokens=1, output_tokens=1, max_tokens=None, now=0.0)
    engine.submit("neg", prompt_tokens=1, output_tokens=1, max_tokens=None, priority=-1, now=0.9)
    # Order: neg (-1), then none (0, t=0.0), then late (0, t=0.5): one per step.
    assert finish_times(drain(engine, now=1.0)) == {"neg": 2.0, "none": 3.0, "late": 4.0}


def test_max_tokens_cuts_a_request_with_length() -> None:
    engine = Engine(toy())
    engine.submit("cut", prompt_tokens=2, output_tokens=5, max_tokens=3, now=0.0)
    engine.submit("exact", prompt_tokens=2, output_tokens=3, max_tokens=3, now=0.0)
    done = drain(engine)
    assert done["cut"][1].completion_tokens == 3
    assert done["cut"][1].finish_reason == "length"
    assert done["exact"][1].finish_reason == "stop"  # it ended on its own at the cap


# -- step costs ------------------------------------------------------------------------


def test_step_time_is_linear_in_its_counts() -> None:
    cost = CostModel("c", 0.5, per_seq=0.1, per_prefill_token=0.01, per_context_token=0.001)
    # 0.5 + 2 x 0.1 + 10 x 0.01 + 100 x 0.001 = 0.5 + 0.2 + 0.1 + 0.1
    assert cost.step_time(2, 10, 100) == pytest.approx(0.9)
    with pytest.raises(InvalidInputError, match="step counts"):
        cost.step_time(-1, 0, 0)


def test_prefill_and_decode_costs_step_by_step() -> None:
    cost = CostModel("c", 0.5, per_seq=0.1, per_prefill_token=0.01, per_context_token=0.001)
    engine = Engine(cost)
    engine.submit("a", prompt_tokens=100, output_tokens=3, max_tokens=None, now=0.0)
    first = engine.step(0.0)
    # Prefill only: 0.5 + 100 x 0.01 = 1.5 (the new request does not decode yet).
    assert (first.duration, first.decoded, first.admitted, first.prefill_tokens) == (
        pytest.approx(1.5),
        0,
        1,
        100,
    )
    engine.submit("b", prompt_tokens=50, output_tokens=1, max_tokens=None, now=1.2)
    second = engine.step(first.end)
    # a decodes with 100 + 1 tokens of context, b is prefilled:
    # 0.5 + 1 x 0.1 + 50 x 0.01 + 101 x 0.001 = 1.201; b is done at its end.
    assert second.duration == pytest.approx(1.201)
    assert [f.request_id for f in second.finished] == ["b"]
    third = engine.step(second.end)
    # a alone, context 102: 0.5 + 0.1 + 0.102 = 0.702; a's third token ends it.
    assert third.duration == pytest.approx(0.702)
    assert [f.request_id for f in third.finished] == ["a"]
    assert engine.prefill_tokens == 150
    assert engine.busy_seconds == pytest.approx(1.5 + 1.201 + 0.702)


def test_an_idle_step_takes_no_time() -> None:
    engine = Engine(toy())
    step = engine.step(3.0)
    assert (step.duration, step.finished, engine.steps) == (0.0, (), 0)


def test_a_step_cannot_start_before_the_last_one_ended() -> None:
    engine = Engine(toy())
    engine.submit("a", prompt_tokens=1, output_tokens=2, max_tokens=None, now=0.0)
    engine.step(0.0)
    with pytest.raises(InvalidInputError, match="before the previous one ended"):
        engine.step(0.5)


# -- admission ---------------------------------------------------------------------------


def test_head_of_line_blocking_by_the_token_budget() -> None:
    engine = Engine(toy(max_num_seqs=4, max_batched_tokens=100))
    engine.submit("a", prompt_tokens=60, output_tokens=5, max_tokens=None, now=0.0)
    engine.submit("b", prompt_tokens=50, output_tokens=1, max_tokens=None, now=0.0)
    engine.submit("c", prompt_tokens=10, output_tokens=1, max_tokens=None, now=0.0)
    first = engine.step(0.0)
    # Budget 100: a takes 60; b's 50 do not fit in the 40 left, and c (10, which
    # would fit) waits behind it.
    assert (first.admitted, first.prefill_tokens, engine.running, engine.waiting) == (1, 60, 1, 2)
    second = engine.step(first.end)
    # Budget 100 - 1 (a decodes) = 99: b (50) and c (10) both fit now.
    assert (second.admitted, second.prefill_tokens, second.decoded) == (2, 60, 1)
    assert {f.request_id for f in second.finished} == {"b", "c"}


def test_max_num_seqs_caps_admission() -> None:
    engine = Engine(toy(max_num_seqs=2))
    for rid in "abc":
        engine.submit(rid, prompt_tokens=1, output_tokens=2, max_tokens=None, now=0.0)
    assert engine.step(0.0).admitted == 2
    # a and b finish at t=2; c then runs [2,4).
    assert finish_times(drain(engine, now=1.0)) == {"a": 2.0, "b": 2.0, "c": 4.0}


def test_requests_submitted_during_a_step_wait_for_the_next() -> None:
    engine = Engine(toy())
    engine.submit("a", prompt_tokens=1, output_tokens=3, max_tokens=None, now=0.0)
    engine.step(0.0)  # [0,1)
    engine.submit("b", prompt_tokens=1, output_tokens=1, max_tokens=None, now=0.5)
    step = engine.step(1.0)
    assert (step.decoded, step.admitted, [f.request_id for f in step.finished]) == (1, 1, ["b"])


def test_prefix_caching_charges_one_token_per_known_prefix() -> None:
    engine = Engine(toy())
    engine.submit("a", prompt_tokens=100, output_tokens=3, max_tokens=None, prefix_key="q", now=0)
    engine.submit("b", prompt_tokens=100, output_tokens=3, max_tokens=None, prefix_key="q", now=0)
    engine.submit("c", prompt_tokens=100, output_tokens=3, max_tokens=None, prefix_key="r", now=0)
    # a pays its 100 tokens; b (same prefix, same step) pays 1; c (another) pays 100.
    assert engine.step(0.0).prefill_tokens == 201
    engine.submit("d", prompt_tokens=100, output_tokens=1, max_tokens=None, prefix_key="q", now=1)
    assert engine.step(1.0).prefill_tokens == 1
    done = drain(engine, now=2.0)
    assert [done[rid][1].prefilled_tokens for rid in "abc"] == [100, 1, 100]


def test_without_prefix_caching_every_prompt_is_prefilled() -> None:
    engine = Engine(toy(prefix_caching=False))
    for rid in "ab":
        engine.submit(
            rid, prompt_tokens=100, output_tokens=1, max_tokens=None, prefix_key="q", now=0
        )
    assert engine.step(0.0).prefill_tokens == 200


# -- abort -------------------------------------------------------------------------------


def test_abort_frees_the_slot_and_is_idempotent() -> None:
    engine = Engine(toy(max_num_seqs=1))
    engine.submit("a", prompt_tokens=1, output_tokens=10, max_tokens=None, now=0.0)
    engine.submit("b", prompt_tokens=1, output_tokens=1, max_tokens=None, now=0.0)
    engine.submit("w", prompt_tokens=1, output_tokens=1, max_tokens=None, now=0.0)
    engine.step(0.0)  # a runs and generates 1 token; b and w wait
    assert engine.abort("a") is True
    assert engine.abort("a") is False  # idempotent
    assert engine.abort("nobody") is False
    assert engine.abort("w") is True  # a waiting request leaves the queue too
    # b takes the freed slot at t=1 and is done at t=2.
    assert finish_times(drain(engine, now=1.0)) == {"b": 2.0}
    assert engine.abort("b") is False  # finished
    assert engine.generated_tokens == 2  # a's one token stays counted
    assert engine.idle


# -- KV cache and preemption ----------------------------------------------------------


def test_kv_preemption_under_fcfs_takes_the_latest_submitted() -> None:
    engine = Engine(toy(kv_capacity=25))
    engine.submit("a", prompt_tokens=10, output_tokens=10, max_tokens=None, now=0.0)
    engine.submit("b", prompt_tokens=10, output_tokens=10, max_tokens=None, now=0.0)
    # Needs after each step: 2 x (10 + generated + 1): 22 (step 1), 24 (step 2), then
    # 26 > 25 at step 3, which preempts b (the latest) and admits nothing.
    steps = [engine.step(float(t)) for t in range(3)]
    assert [s.preempted for s in steps] == [(), (), ("b",)]
    assert (steps[2].admitted, engine.preemptions) == (0, 1)
    # a runs alone to 10 tokens (t=10); b (10 + 2 + 1 = 13 tokens of KV) cannot
    # join it while a needs 13+, then re-prefills 10 + 2 = 12 tokens at t=10 and
    # generates its 8 remaining tokens: t=18.
    done = drain(engine, now=3.0)
    assert finish_times(done) == {"a": 10.0, "b": 18.0}
    b = done["b"][1]
    assert (b.completion_tokens, b.prefilled_tokens, b.preemptions) == (10, 10 + 12, 1)
    assert engine.generated_tokens == 20  # preemption loses no generated token


def test_kv_preemption_under_priority_takes_the_largest_priority() -> None:
    engine = Engine(toy(kv_capacity=25), policy="priority")
    engine.submit("a", prompt_tokens=10, output_tokens=10, max_tokens=None, priority=1, now=0.0)
    engine.submit("b", prompt_tokens=10, output_tokens=10, max_tokens=None, priority=0, now=0.1)
    steps = [engine.step(float(t)) for t in range(3)]
    assert steps[2].preempted == ("a",)  # later-submitted b has the smaller priority
    assert finish_times(drain(engine, now=3.0)) == {"b": 10.0, "a": 18.0}


# -- validation and presets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_seq": -1.0}, "per_seq must be a finite number >= 0"),
        ({"per_prefill_token": math.nan}, "per_prefill_token must be a finite number"),
        ({"step_base": 0.0}, "step_base must be > 0"),
        ({"max_num_seqs": 0}, "max_num_seqs must be >= 1"),
        ({"max_num_seqs": 8, "max_batched_tokens": 4}, "must be >= max_num_seqs"),
        ({"kv_capacity": 0}, "kv_capacity must be >= 1"),
        ({"name": ""}, "no name"),
    ],
)
def test_cost_model_validation(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "name": "bad",
        "step_base": 1.0,
        "per_seq": 0.0,
        "per_prefill_token": 0.0,
    }
    with pytest.raises(InvalidInputError, match=message):
        CostModel(**{**fields, **kwargs})


def test_submit_validation() -> None:
    engine = Engine(toy(max_num_seqs=4, max_batched_tokens=100, kv_capacity=50))
    engine.submit("a", prompt_tokens=1, output_tokens=1, max_tokens=None, now=0.0)
    with pytest.raises(InvalidInputError, match="already in the engine"):
        engine.submit("a", prompt_tokens=1, output_tokens=1, max_tokens=None, now=0.0)
    with pytest.raises(InvalidInputError, match="must be >= 1"):
        engine.submit("z", prompt_tokens=1, output_tokens=0, max_tokens=None, now=0.0)
    with pytest.raises(InvalidInputError, match=r"exceed what one step or the KV cache holds \(50"):
        engine.submit("big", prompt_tokens=40, output_tokens=20, max_tokens=None, now=0.0)
    engine.submit("capped", prompt_tokens=40, output_tokens=20, max_tokens=10, now=0.0)  # fits
    with pytest.raises(InvalidInputError, match="fcfs or priority"):
        Engine(toy(), policy="sjf")  # type: ignore[arg-type]


def test_presets() -> None:
    kv_bytes = 32 * 8 * 128 * 2 * 2  # Llama-3-8B: layers x KV heads x dims x (K, V) x bf16
    assert kv_bytes == 131_072
    assert H100_8B.kv_capacity == int(60e9 // kv_bytes)
    assert H100_8B.per_context_token == pytest.approx(kv_bytes / 2.4e12, rel=0.01)
    assert H100_8B.step_base == pytest.approx(16e9 / 2.4e12, rel=0.05)
    assert (H100_8B.max_num_seqs, H100_8B.max_batched_tokens) == (256, 8192)
    assert (CPU_QWEN_05B.step_base, CPU_QWEN_05B.per_seq, CPU_QWEN_05B.per_prefill_token) == (
        0.05,
        0.004,
        0.0004,
    )
    assert CPU_QWEN_05B.kv_capacity is None
