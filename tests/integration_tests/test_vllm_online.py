"""The online benchmark's real-server parts against the CPU vLLM.

* The cost calibration gets exactly the token counts it asks for
  (``ignore_eos``) and fits positive costs from real timings.
* The load generator runs an open-loop workload on the server with our
  component: every program becomes a row, programs start no earlier than
  their arrival, and the server's table ends with each program finished or
  stopped.
"""

from __future__ import annotations

import io

import pytest

from dynasor_agents import DynasorClient
from dynasor_agents._progress import Progress
from dynasor_bench.online._run import program_id, run_online
from dynasor_bench.sim._calibrate import calibrate_engine
from dynasor_bench.sim._cost import CPU_QWEN_05B
from dynasor_bench.traces._bank import PathTrace, QuestionTrace
from dynasor_bench.workload._workload import SYSTEMS, OnlineStrategy, make_workload

from .conftest import Backend, chat

pytestmark = pytest.mark.timeout(300)


async def test_calibration_fits_costs_from_real_timings(vllm: Backend) -> None:
    cal = await calibrate_engine(
        vllm.root_url,
        vllm.model,
        base=CPU_QWEN_05B,
        batches=(1, 4),
        tokens=8,
        long_prompt_words=300,
        repeats=1,
        api_key=vllm.api_key,
    )
    assert cal.cost.step_base > 0 and cal.cost.per_seq >= 0
    assert 0 < cal.prefill_tokens_per_second < float("inf")
    assert cal.request_overhead >= 0
    assert set(cal.decode_seconds) == {1, 4} and all(s > 0 for s in cal.decode_seconds.values())


def _bank() -> list[QuestionTrace]:
    path = PathTrace(text="\\boxed{4}", answer="4", completion_tokens=12)
    return [
        QuestionTrace(
            id=f"toy:{i}",
            source="toy" if i % 2 else "easy",
            question=f"What is {i} plus {4 - i}? Answer with a number.",
            gold="4",
            prompt_tokens=20,
            paths=[path],
        )
        for i in range(4)
    ]


@pytest.mark.parametrize("system", [SYSTEMS[0], SYSTEMS[2]], ids=lambda s: s.name)
async def test_load_generator_runs_programs_at_their_arrivals(vllm: Backend, system) -> None:  # type: ignore[no-untyped-def]
    mix = {"sc-4": (OnlineStrategy("sc-4", 4), 1.0)}
    workload = make_workload(_bank(), rate=4.0, count=4, seed=1, base={"sc-4": 5.0}, mix=mix)
    client = DynasorClient(vllm.root_url, api_key=vllm.api_key)
    try:
        rows = await run_online(
            workload,
            system,
            chat=chat(vllm, temperature=0.8),
            client=client,
            system_prompt="Answer briefly.",
            max_tokens=16,
            progress=Progress(4, "online", stream=io.StringIO()),
        )
        assert [r.program for r in rows] == [0, 1, 2, 3]
        for row, spec in zip(rows, workload.programs, strict=True):
            assert row.error is None, row.error
            assert row.arrival >= spec.arrival - 0.01  # open loop: never early
            assert row.finish > row.arrival
            assert 1 <= row.samples <= 4 and row.completion_tokens > 0
            assert row.deadline_unit == pytest.approx(spec.deadline_unit)
            info = await client.get(program_id(system, workload.rate, spec.index))
            assert info.state in ("finished", "stopped")
            assert info.completion_tokens >= row.completion_tokens
    finally:
        await client.aclose()


async def test_plain_system_sends_no_control_requests(vllm: Backend) -> None:
    # Without a client the programs' samples still carry their ids, but nothing
    # tells the server they ended: the component saw them and still holds them active.
    mix = {"sc-4": (OnlineStrategy("sc-4", 4), 1.0)}
    workload = make_workload(_bank(), rate=8.0, count=2, seed=2, base={"sc-4": 5.0}, mix=mix)
    rows = await run_online(
        workload,
        SYSTEMS[1],
        chat=chat(vllm, temperature=0.8),
        client=None,
        system_prompt="Answer briefly.",
        max_tokens=16,
        progress=Progress(2, "online", stream=io.StringIO()),
    )
    assert all(r.error is None and r.samples >= 1 for r in rows)
    client = DynasorClient(vllm.root_url, api_key=vllm.api_key)
    try:
        for spec in workload.programs:
            info = await client.get(program_id(SYSTEMS[1], workload.rate, spec.index))
            assert info.state == "active" and info.in_flight == 0
    finally:
        await client.aclose()
