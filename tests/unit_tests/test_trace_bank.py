"""Trace bank recording: format, resume, settings check, progress (fake server)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from dynasor_agents._progress import Progress
from dynasor_agents.errors import InvalidInputError
from dynasor_bench.traces._bank import append_question, load_bank, recorded_ids
from dynasor_bench.traces._record import (
    RecordSettings,
    hash_seed,
    record_bank,
    select_questions,
)


def _data(tmp_path: Path) -> Path:
    rows = [{"input": f"What is {i} + 1?", "target": i + 1} for i in range(6)]
    (tmp_path / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gsm = [{"question": f"Q{i}?", "answer": f"work\n#### {10 * i}"} for i in range(3)]
    (tmp_path / "gsm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm))
    return tmp_path


def _token(lp: float) -> dict[str, Any]:
    return {
        "token": "x",
        "logprob": lp,
        "bytes": None,
        "top_logprobs": [
            {"token": "x", "logprob": lp, "bytes": None},
            {"token": "y", "logprob": math.log(0.25), "bytes": None},
        ],
    }


class FakeServer:
    """Answers chat requests with n choices; path i answers ``\\boxed{i % 2}``."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_after = fail_after

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        if self.fail_after is not None and len(self.requests) > self.fail_after:
            return httpx.Response(500, json={"error": {"message": "boom", "type": "x"}})
        choices = [
            {
                "index": i,
                "finish_reason": "stop" if i else "length",
                "message": {"role": "assistant", "content": f"so \\boxed{{{i % 2}}}"},
                "logprobs": {"content": [_token(-0.5)] * (i + 1)},
            }
            for i in range(body["n"])
        ]
        usage = {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}
        return httpx.Response(
            200,
            json={
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": choices,
                "usage": usage,
            },
        )


def _client(server: FakeServer) -> AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    return AsyncOpenAI(base_url="http://fake/v1", api_key="k", http_client=http, max_retries=0)


def test_select_questions_interleaves_and_is_seeded(tmp_path: Path) -> None:
    data = _data(tmp_path)
    picked = select_questions("toy:3,gsm:2", data, seed=1)
    assert [q.source for q in picked] == ["toy", "gsm", "toy", "gsm", "toy"]
    assert picked == select_questions("toy:3,gsm:2", data, seed=1)
    assert {q.gold for q in picked if q.source == "gsm"} <= {"0", "10", "20"}
    assert len(select_questions("toy:99", data)) == 6  # capped at the file's size


@pytest.mark.parametrize("spec", ["toy", "toy:0", ":3", "toy:x", "toy:2,,gsm:1"])
def test_bad_specs_are_named(tmp_path: Path, spec: str) -> None:
    with pytest.raises(InvalidInputError, match="bad question spec"):
        select_questions(spec, _data(tmp_path))


async def test_record_stores_answers_tokens_and_confidences(tmp_path: Path) -> None:
    server = FakeServer()
    questions = select_questions("toy:2", _data(tmp_path))
    bank = tmp_path / "b.jsonl"
    out = io.StringIO()
    settings = RecordSettings(model="m", k=3, top_logprobs=2)
    added = await record_bank(  # one at a time: the bank keeps the order questions finish in
        _client(server), questions, bank, settings, concurrency=1,
        progress=Progress(2, "r", stream=out),
    )  # fmt: skip
    assert added == 2
    loaded = load_bank(bank)
    assert [q.id for q in loaded] == [q.id for q in questions]
    first = loaded[0]
    assert first.prompt_tokens == 7
    assert [p.answer for p in first.paths] == ["0", "1", "0"]
    assert [p.completion_tokens for p in first.paths] == [1, 2, 3]
    assert first.paths[0].finish_reason == "length"
    # DeepConf token confidence: -(1/k) * sum of the top-k logprobs.
    expected = round(-(-0.5 + math.log(0.25)) / 2, 4)
    assert first.paths[2].confidence == [expected] * 3
    assert first.paths[2].logprob == [-0.5] * 3
    body = server.requests[0]
    assert (body["n"], body["logprobs"], body["top_logprobs"]) == (3, True, 2)
    assert body["seed"] == hash_seed(0, questions[0].id)
    assert body["messages"][0]["role"] == "system"
    assert "r] 2/2 100%" in out.getvalue()


async def test_record_resumes_and_skips_recorded_questions(tmp_path: Path) -> None:
    questions = select_questions("toy:4", _data(tmp_path))
    bank = tmp_path / "b.jsonl"
    settings = RecordSettings(model="m", k=2)
    failing = FakeServer(fail_after=2)
    with pytest.raises(Exception, match="boom"):
        await record_bank(
            _client(failing), questions, bank, settings, concurrency=1,
            progress=Progress(4, "r", stream=io.StringIO()),
        )  # fmt: skip
    assert len(recorded_ids(bank)) == 2  # what finished before the failure is kept
    # A half-written last line (an interrupted write) is ignored and re-recorded.
    with bank.open("a") as handle:
        handle.write('{"id": "toy:')
    server = FakeServer()
    added = await record_bank(
        _client(server), questions, bank, settings,
        progress=Progress(4, "r", stream=io.StringIO()),
    )  # fmt: skip
    assert added == 2
    assert len(server.requests) == 2
    assert sorted(q.id for q in load_bank(bank)) == sorted(q.id for q in questions)


async def test_record_refuses_other_settings(tmp_path: Path) -> None:
    questions = select_questions("toy:1", _data(tmp_path))
    bank = tmp_path / "b.jsonl"
    quiet = Progress(1, "r", stream=io.StringIO())
    await record_bank(_client(FakeServer()), questions, bank, RecordSettings(model="m", k=2))
    with pytest.raises(InvalidInputError, match="different settings"):
        await record_bank(
            _client(FakeServer()), questions, bank, RecordSettings(model="m", k=4), progress=quiet
        )


def test_load_bank_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="trace bank not found"):
        load_bank(tmp_path / "none.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:1: not a recorded question"):
        load_bank(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InvalidInputError, match="holds no questions"):
        load_bank(empty)


def test_load_bank_drops_duplicates_and_short_questions(tmp_path: Path) -> None:
    from dynasor_bench.traces._bank import PathTrace, QuestionTrace

    path = tmp_path / "b.jsonl"
    one = PathTrace(text="", answer="1", completion_tokens=1)
    for qid, paths in [("a", [one, one]), ("a", [one, one]), ("b", [one])]:
        append_question(
            path,
            QuestionTrace(id=qid, source="s", question="?", gold="1", prompt_tokens=1, paths=paths),
        )
    assert [q.id for q in load_bank(path, min_paths=2)] == ["a"]


def test_progress_on_a_log_prints_lines_at_most_every_interval() -> None:
    out = io.StringIO()
    ticks = iter([0.0, 1.0, 2.0, 30.0, 31.0])
    bar = Progress(4, "x", stream=out, clock=lambda: next(ticks), every=10.0)
    bar.update(1)  # t=1: first line
    bar.update(1)  # t=2: too soon
    bar.update(1)  # t=30: a line
    bar.update(1)  # t=31: the last item always prints
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[-1].startswith("[x] 4/4 100%")
    assert "6.0/min" in lines[1]  # under one item a second, the rate is per minute
