"""Batch mode and trace recording against the real CPU vLLM.

* ``bench record`` stores what the server returned: per path the answer, the
  completion tokens (equal to the server's usage) and one logprob summary per
  token; a second run adds nothing (resume).
* A batch under one total token budget never spends more than the budget, as
  counted by the server for each program.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import openai
import pytest

from dynasor_agents import (
    BatchAllocator,
    CertaintyController,
    DynasorClient,
    Progress,
    SelfConsistency,
    max_samples,
    threshold,
)
from dynasor_bench import load_bank, record_bank, select_questions
from dynasor_bench.traces._record import RecordSettings

from .conftest import Backend, chat

pytestmark = pytest.mark.timeout(300)


async def test_record_stores_the_servers_paths_and_resumes(vllm: Backend, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"input": f"What is {i} plus {i}?", "target": 2 * i} for i in range(1, 4)]
    (data / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions = select_questions("toy:2", data)
    client = openai.AsyncOpenAI(base_url=vllm.base_url, api_key=vllm.api_key, max_retries=0)
    bank = tmp_path / "bank.jsonl"
    settings = RecordSettings(model=vllm.model, k=3, max_tokens=24)
    quiet = Progress(2, "record", stream=io.StringIO())
    # One question at a time: the bank keeps the order questions finish in.
    added = await record_bank(client, questions, bank, settings, concurrency=1, progress=quiet)
    assert added == 2
    recorded = load_bank(bank)
    assert [q.id for q in recorded] == [q.id for q in questions]
    for q in recorded:
        assert len(q.paths) == 3 and q.prompt_tokens > 0
        for p in q.paths:
            assert 0 < p.completion_tokens <= 24
            assert len(p.logprob) == len(p.confidence) == p.completion_tokens
            assert all(lp <= 0 for lp in p.logprob) and all(c >= 0 for c in p.confidence)
            assert p.finish_reason in ("stop", "length")
    again = Progress(2, "record", stream=io.StringIO())
    assert await record_bank(client, questions, bank, settings, progress=again) == 0


async def test_a_batch_never_spends_more_than_its_budget_by_the_servers_count(
    vllm: Backend,
) -> None:
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    budget = 400
    allocator = BatchAllocator(
        total_tokens=budget, progress=Progress(0, "batch", stream=io.StringIO())
    )
    sc = SelfConsistency(
        chat(vllm, temperature=1.0),
        controller=CertaintyController(threshold(0.9) | max_samples(8), first_round=2),
        client=client,
        max_tokens=24,
        allocator=allocator,
    )
    questions = ["Name a colour.", "Name a fruit.", "What is 2 + 2?", "Name an animal."]
    results = await sc.abatch(questions)
    report = allocator.last_report
    assert report is not None and report.budget == budget
    assert len(results) == 4 and all(r.samples >= 1 for r in results)
    assert report.spent <= budget and report.peak <= budget and report.overrun == 0
    server_tokens = 0
    for result in results:
        info = await client.get(result.program_id)
        server_tokens += info.completion_tokens
    # The server counts every token the batch's programs generated, cancelled
    # samples' partial tokens included: still within the budget.
    assert report.spent <= server_tokens <= budget
    await client.aclose()
