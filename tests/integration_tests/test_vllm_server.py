"""The server component's budgets, ownership, validation and metrics, inside the real CPU vLLM."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import openai
import pytest

from dynasor_agents.protocol import (
    BUDGET_HEADER,
    CERTAINTY_HEADER,
    PROGRAM_ID_HEADER,
    REMAINING_HEADER,
    hints_path,
    program_path,
)

from .conftest import Backend, new_id

pytestmark = pytest.mark.timeout(300)


def http(vllm: Backend, key: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=vllm.root_url,
        timeout=120,
        headers={"Authorization": f"Bearer {key or vllm.api_key}"},
    )


async def complete(
    client: httpx.AsyncClient, vllm: Backend, headers: dict[str, str], **body: Any
) -> httpx.Response:
    payload = {"model": vllm.model, "prompt": "Count: one, two,", "ignore_eos": True, **body}
    return await client.post("/v1/completions", json=payload, headers=headers)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? ([0-9.e+-]+)$", line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def test_budget_clamps_max_tokens_then_refuses_with_budget_exhausted(
    vllm: Backend,
) -> None:
    pid = new_id("budget")
    headers = {PROGRAM_ID_HEADER: pid, BUDGET_HEADER: "40"}
    async with http(vllm) as client:
        first = await complete(client, vllm, headers, max_tokens=25)
        assert first.status_code == 200, first.text
        assert first.json()["usage"]["completion_tokens"] == 25
        # Only 15 tokens are left: vLLM is asked for 15, not 64.
        second = await complete(client, vllm, headers, max_tokens=64)
        assert second.status_code == 200, second.text
        assert second.json()["usage"]["completion_tokens"] == 15
        third = await complete(client, vllm, headers, max_tokens=8)
        assert third.status_code == 429 and error_code(third) == "budget_exhausted"
        assert third.headers["x-should-retry"] == "false"
        info = (await client.get(program_path(pid))).json()
    assert info["completion_tokens"] == 40 and info["budget_left"] == 0


async def test_concurrent_requests_never_exceed_the_budget(vllm: Backend) -> None:
    pid = new_id("concurrent")
    headers = {PROGRAM_ID_HEADER: pid, BUDGET_HEADER: "50"}
    async with http(vllm) as client:
        responses = await asyncio.gather(
            *(complete(client, vllm, headers, max_tokens=32) for _ in range(3))
        )
        used = [r.json()["usage"]["completion_tokens"] for r in responses if r.status_code == 200]
        refused = [error_code(r) for r in responses if r.status_code != 200]
        info = (await client.get(program_path(pid))).json()
    assert sum(used) <= 50 and sorted(used) == [18, 32]
    assert refused == ["budget_exhausted"]
    assert info["completion_tokens"] == sum(used)


async def test_streamed_usage_is_counted_without_changing_the_stream(vllm: Backend) -> None:
    pid = new_id("stream")
    oai = openai.AsyncOpenAI(base_url=vllm.base_url, api_key=vllm.api_key, max_retries=0)
    stream = await oai.chat.completions.create(
        model=vllm.model,
        messages=[{"role": "user", "content": "Tell me about the sea."}],
        max_tokens=64,
        stream=True,
        extra_headers={PROGRAM_ID_HEADER: pid, BUDGET_HEADER: "12"},
        extra_body={"ignore_eos": True},
    )
    chunks = [chunk async for chunk in stream]
    # The client did not ask for usage: it gets no usage chunk (the server asked for one).
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"  # clamped to the budget
    async with http(vllm) as client:
        info = (await client.get(program_path(pid))).json()
    assert info["completion_tokens"] == 12 and info["prompt_tokens"] > 0

    asked = await oai.chat.completions.create(
        model=vllm.model,
        messages=[{"role": "user", "content": "Tell me about the sea."}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={PROGRAM_ID_HEADER: new_id("stream")},
        extra_body={"ignore_eos": True},
    )
    chunks = [chunk async for chunk in asked]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_another_key_cannot_see_or_change_a_program(vllm: Backend) -> None:
    assert vllm.other_key, "the main test server runs with two API keys"
    pid = new_id("owned")
    async with http(vllm) as alice, http(vllm, vllm.other_key) as bob:
        made = await complete(alice, vllm, {PROGRAM_ID_HEADER: pid}, max_tokens=2)
        assert made.status_code == 200
        attempts = [
            await bob.get(program_path(pid)),
            await bob.post(hints_path(pid), json={"stop": True}),
            await bob.delete(program_path(pid)),
            await complete(bob, vllm, {PROGRAM_ID_HEADER: pid}, max_tokens=2),
        ]
        assert [(r.status_code, error_code(r)) for r in attempts] == [
            (404, "program_not_found")
        ] * 4
        mine = (await alice.get(program_path(pid))).json()
        assert mine["state"] == "active" and mine["requests"] == 1
        # A key vLLM does not know is refused before the component looks at anything.
        async with http(vllm, "key-mallory") as mallory:
            assert (await mallory.get(program_path(pid))).status_code == 401


@pytest.mark.parametrize(
    ("headers", "code", "named"),
    [
        ({PROGRAM_ID_HEADER: "../etc/passwd"}, "invalid_program_id", PROGRAM_ID_HEADER),
        ({PROGRAM_ID_HEADER: "x" * 129}, "invalid_program_id", PROGRAM_ID_HEADER),
        ({PROGRAM_ID_HEADER: "ok-id", BUDGET_HEADER: "-5"}, "invalid_hints", "budget"),
        ({PROGRAM_ID_HEADER: "ok-id", BUDGET_HEADER: "lots"}, "invalid_hints", "budget"),
        ({PROGRAM_ID_HEADER: "ok-id", CERTAINTY_HEADER: "nan"}, "invalid_hints", "certainty"),
        ({PROGRAM_ID_HEADER: "ok-id", REMAINING_HEADER: "-1"}, "invalid_hints", "remaining"),
    ],
)
async def test_malformed_ids_and_hint_headers_get_400_with_stable_codes(
    vllm: Backend, headers: dict[str, str], code: str, named: str
) -> None:
    async with http(vllm) as client:
        response = await complete(client, vllm, headers, max_tokens=2)
        assert response.status_code == 400 and error_code(response) == code
        error = response.json()["error"]
        assert named in (error["param"] or "") + error["message"]
        assert (await complete(client, vllm, {}, max_tokens=2)).status_code == 200  # still up


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"certainty": 2}', "certainty"),
        (b'{"budget": "many"}', "budget"),
        (b'{"stop": true, "colour": "red"}', "colour"),
        (b"not json", "json"),
        (b"[1, 2]", "body"),
    ],
)
async def test_malformed_hint_bodies_get_400_invalid_hints(
    vllm: Backend, body: bytes, named: str
) -> None:
    pid = new_id("hints")
    async with http(vllm) as client:
        response = await client.post(
            hints_path(pid), content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400 and error_code(response) == "invalid_hints"
        assert named in response.json()["error"]["message"].lower()
        assert (await client.get(program_path(pid))).status_code == 404  # nothing recorded
        assert (await client.get("/health")).status_code == 200


async def test_program_metrics_are_on_vllms_metrics_endpoint(vllm: Backend) -> None:
    pid = new_id("metrics")
    async with http(vllm) as client:
        before = (await client.get("/metrics")).text
        headers = {PROGRAM_ID_HEADER: pid, CERTAINTY_HEADER: "0.5", BUDGET_HEADER: "100"}
        assert (await complete(client, vllm, headers, max_tokens=3)).status_code == 200
        await client.post(hints_path(pid), json={"stop": True})
        after = (await client.get("/metrics")).text
    assert metric(after, "dynasor_scheduling_policy", policy="dynasor") == 1
    assert metric(after, "dynasor_programs", state="stopped") >= 1
    for field in ("certainty", "budget"):
        grew = metric(after, "dynasor_hints_total", source="header", field=field) - metric(
            before, "dynasor_hints_total", source="header", field=field
        )
        assert grew == 1
    assert metric(after, "dynasor_hints_total", source="endpoint", field="stop") >= 1
    completion = metric(after, "dynasor_tokens_total", kind="completion")
    assert completion - metric(before, "dynasor_tokens_total", kind="completion") == 3
    assert metric(after, "dynasor_program_tokens", state="stopped", kind="completion") >= 3
    assert "vllm:num_requests_running" in after  # vLLM's own metrics are still there
