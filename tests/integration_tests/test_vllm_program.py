"""Self-consistency and the server component against the real CPU vLLM (SmolLM2-135M)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from langchain_core.prompts import ChatPromptTemplate

from dynasor_agents import (
    CertaintyController,
    DynasorClient,
    Hints,
    ProgramStoppedError,
    SelfConsistency,
    StopReason,
    max_samples,
    threshold,
)
from dynasor_agents.protocol import PROGRAM_ID_HEADER

from .conftest import Backend, chat

pytestmark = pytest.mark.timeout(300)


def first_word(text: str) -> str | None:
    match = re.search(r"[A-Za-z]+", text)
    return match.group(0).lower() if match else None


async def running_requests(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    values = re.findall(r"^vllm:num_requests_running\{[^}]*\} ([0-9.e+-]+)$", text, re.M)
    assert values, "vLLM's /metrics has no vllm:num_requests_running"
    return sum(float(v) for v in values)


async def test_server_attributes_requests_and_tokens_to_the_program(vllm: Backend) -> None:
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    sc = SelfConsistency(
        chat(vllm, temperature=0.8),
        controller=CertaintyController(max_samples(4), first_round=4),
        client=client,
        max_tokens=24,
    )
    pid = f"attr-{uuid.uuid4().hex[:8]}"
    result = await sc.ainvoke("What is 3 + 4?", program_id=pid)

    assert result.program_id == pid
    assert result.samples == 4
    assert result.completion_tokens > 0 and result.prompt_tokens > 0
    info = await client.get(pid)
    assert info.requests == 4
    # The server counted exactly the usage the responses reported.
    assert info.prompt_tokens == result.prompt_tokens
    assert info.completion_tokens == result.completion_tokens
    assert info.state == "finished"  # ran to its sample cap: finished, not stopped


async def test_a_settled_prompt_stops_at_the_first_detect_step(vllm: Backend) -> None:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Reply with exactly one word: OK."), ("human", "{question}")]
    )
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    sc = SelfConsistency(
        chat(vllm, temperature=0.0),
        controller=CertaintyController(threshold(0.8) | max_samples(12), first_round=4),
        extractor=first_word,
        prompt=prompt,
        client=client,
        max_tokens=8,
    )
    result = await sc.ainvoke({"question": "Are you ready?"})

    assert result.stop_reason is StopReason.CERTAIN
    assert result.samples == 4 < 12
    assert result.rounds == 1 and result.certainty == 1.0
    assert (await client.get(result.program_id)).state == "stopped"


async def test_stop_hint_aborts_streaming_requests_inside_vllm(vllm: Backend) -> None:
    pid = f"stop-{uuid.uuid4().hex[:8]}"
    oai = openai.AsyncOpenAI(base_url=vllm.base_url, api_key=vllm.api_key, max_retries=0)
    chunks = [0, 0, 0, 0]
    errors: list[BaseException] = []

    async def stream(i: int) -> None:
        response = await oai.chat.completions.create(
            model=vllm.model,
            messages=[{"role": "user", "content": f"Write a very long story number {i}."}],
            max_tokens=1500,
            stream=True,
            extra_headers={PROGRAM_ID_HEADER: pid},
        )
        try:
            async for _ in response:
                chunks[i] += 1
        except openai.APIError as exc:
            errors.append(exc)

    async with httpx.AsyncClient(base_url=vllm.root_url, timeout=10, headers=vllm.auth) as http:
        tasks = [asyncio.create_task(stream(i)) for i in range(4)]
        deadline = time.monotonic() + 60
        while sum(chunks) < 20 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert await running_requests(http) >= 1

        stopped_at = time.monotonic()
        info = await DynasorClient(vllm.base_url, api_key=vllm.api_key).send_hints(
            pid, Hints(stop=True)
        )
        assert info.state == "stopped" and info.aborted >= 1
        while await running_requests(http) > 0:
            assert time.monotonic() - stopped_at < 2.0, "vLLM still runs the stopped program"
            await asyncio.sleep(0.05)
        drained = time.monotonic() - stopped_at

        await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
        seen = list(chunks)
        await asyncio.sleep(1.0)
        assert chunks == seen, "generation kept growing after the stop"
        metrics = (await http.get("/metrics")).text
    aborted = re.findall(r"^dynasor_requests_aborted_total ([0-9.e+-]+)$", metrics, re.M)
    assert aborted and float(aborted[0]) >= 4  # counted on vLLM's own /metrics
    assert drained < 2.0
    # Every stream ended with the stable error code, not a silently truncated answer.
    assert len(errors) == 4
    assert all(getattr(e, "code", None) == "program_stopped" for e in errors)


async def test_stopped_program_is_refused_and_server_stays_up(vllm: Backend) -> None:
    pid = f"refuse-{uuid.uuid4().hex[:8]}"
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    await client.send_hints(pid, Hints(stop=True))

    oai = openai.AsyncOpenAI(base_url=vllm.base_url, api_key=vllm.api_key, max_retries=0)
    with pytest.raises(openai.ConflictError) as raised:
        await oai.chat.completions.create(
            model=vllm.model,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            extra_headers={PROGRAM_ID_HEADER: pid},
        )
    assert raised.value.code == "program_stopped"

    sc = SelfConsistency(chat(vllm), client=client, max_tokens=4)
    with pytest.raises(ProgramStoppedError) as typed:
        await sc.ainvoke("hi", program_id=pid)
    assert typed.value.program_id == pid and typed.value.code == "program_stopped"

    async with httpx.AsyncClient(base_url=vllm.root_url, headers=vllm.auth) as http:
        assert (await http.get("/health")).status_code == 200
    # Other programs are unaffected.
    ok = await oai.chat.completions.create(
        model=vllm.model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert ok.choices


def test_sync_invoke_batch_and_stream_against_vllm(vllm: Backend) -> None:
    # Sync calls run on the library's own loop thread. langchain-openai caches one
    # async HTTP client per (base_url, timeout) per process, and the async tests
    # above bound that client's connections to pytest's loop: a distinct timeout
    # gives this model its own client, as a real sync-only program would have.
    sc = SelfConsistency(
        chat(vllm, temperature=0.8, timeout=123),
        controller=CertaintyController(max_samples(2), first_round=2),
        client=DynasorClient(vllm.base_url, api_key=vllm.api_key),
        max_tokens=8,
    )
    assert sc.invoke("Say a number.").samples == 2
    results = sc.batch(["One?", "Two?", "Three?"], config={"max_concurrency": 2})
    assert [r.samples for r in results] == [2, 2, 2]
    streamed = list(sc.stream("Say a color."))
    assert streamed[-1].final and not any(s.final for s in streamed[:-1])


def readme_snippet() -> str:
    """The Python block of the README's "Using it" section."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Using it", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's 'Using it' has no python block"
    return match.group(1)


def test_the_readmes_snippet_runs_and_prints_a_meaningful_line(
    vllm: Backend, tmp_path: Path
) -> None:
    code = readme_snippet()
    for old, new in (  # pointed at the test server, with its API key
        ('"http://127.0.0.1:8000/v1"', repr(vllm.base_url)),
        (
            'DynasorClient("http://127.0.0.1:8000")',
            f"DynasorClient({vllm.root_url!r}, api_key={vllm.api_key!r})",
        ),
        ('api_key="EMPTY"', f"api_key={vllm.api_key!r}"),
        ('model="smollm2"', f"model={vllm.model!r}"),
    ):
        assert old in code, f"the README snippet changed: {old} not found"
        code = code.replace(old, new)
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    started = time.monotonic()
    # Run as a user would, in a fresh interpreter.
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, check=False
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip().splitlines()[-1]
    match = re.fullmatch(
        r"answer (.+), Certaindex ([01]\.\d\d), (\d) samples, (\d+) tokens, stopped: (\w+)", line
    )
    assert match, line
    assert 1 <= int(match[3]) <= 8 and int(match[4]) > 0
    assert match[5] in {reason.value for reason in StopReason}
    print(f"\n[README snippet] {line} ({seconds:.1f} s, interpreter start included)")


async def test_load_reads_vllms_own_queue(vllm: Backend) -> None:
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    idle = await client.load()
    # vLLM's gauges are found in its process (numbers, not None); nothing queues.
    assert idle.waiting == 0 and idle.running is not None
    pid = f"load-{uuid.uuid4().hex[:8]}"
    body = {
        "model": vllm.model,
        "messages": [{"role": "user", "content": "Count to a thousand."}],
        "max_tokens": 48,
        "ignore_eos": True,
    }
    async with httpx.AsyncClient(
        base_url=vllm.base_url, headers={**vllm.auth, PROGRAM_ID_HEADER: pid}, timeout=120
    ) as http:
        # The test server runs at most 8 sequences: 14 requests must queue.
        post = http.post
        requests = [asyncio.create_task(post("/chat/completions", json=body)) for _ in range(14)]
        busiest = idle
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(r.done() for r in requests):
            load = await client.load()
            if (load.waiting or 0) > (busiest.waiting or 0):
                busiest = load
            await asyncio.sleep(0.05)
        responses = await asyncio.gather(*requests)
    assert all(r.status_code == 200 for r in responses)
    assert busiest.busy and busiest.waiting is not None and busiest.waiting >= 1
    assert busiest.running is not None and busiest.running <= 8
    assert busiest.in_flight >= busiest.waiting and busiest.programs >= 1
    await client.aclose()


async def test_a_program_past_its_deadline_is_stopped_and_answers_with_what_it_has(
    vllm: Backend,
) -> None:
    client = DynasorClient(vllm.base_url, api_key=vllm.api_key)
    sc = SelfConsistency(
        chat(vllm, temperature=0.8),
        # No stop rule but the cap: 20 rounds of 2, far longer than the deadline.
        controller=CertaintyController(max_samples(40), first_round=2, round_size=2),
        client=client,
        max_tokens=48,
    )
    pid = f"late-{uuid.uuid4().hex[:8]}"
    started = time.time()
    result = await sc.ainvoke("What is 3 + 4?", program_id=pid, deadline=started + 6)
    took = time.time() - started
    assert result.stop_reason is StopReason.DEADLINE, result.stop_reason
    assert 2 <= result.samples < 40 and result.answer_text is not None
    info = await client.get(pid)
    assert info.state == "stopped" and info.deadline == pytest.approx(started + 6, abs=1e-3)
    print(f"\n[deadline] stopped {took - 6:.1f} s after its deadline with {result.samples} samples")
    await client.aclose()
