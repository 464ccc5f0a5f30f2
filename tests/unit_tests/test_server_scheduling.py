"""How the component changes what vLLM receives and reports what it did: program
scheduling (vLLM's ``priority``), stream usage, body rewriting, metrics and settings.

Every test drives the component through its HTTP surface around a fake vLLM (see
``server_fakes.py``) and checks what vLLM receives and what the client gets.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.datastructures import Headers
from starlette.types import Message

from dynasor_agents.protocol import (
    BUDGET_HEADER,
    CERTAINTY_HEADER,
    DEADLINE_HEADER,
    PROGRAM_ID_HEADER,
    REMAINING_HEADER,
    ErrorCode,
    program_path,
)
from dynasor_agents.server import DynasorMiddleware
from dynasor_agents.server._config import ServerConfig
from dynasor_agents.server._metrics import ServerMetrics
from dynasor_agents.server._relay import Relay

from .server_fakes import (
    CHAT,
    COMPLETIONS,
    PID,
    Clock,
    Conn,
    FakeVLLM,
    assert_error,
    build,
    chat,
    client_for,
    dumps,
    info,
    post_hints,
    sample,
    scope_for,
    scrape,
    sse_events,
    start,
    stop,
    until,
    within,
)


def hints(certainty: float, remaining: int) -> dict[str, str]:
    return {CERTAINTY_HEADER: str(certainty), REMAINING_HEADER: str(remaining)}


# ----------------------------------------------------------------------------- priority


async def test_fcfs_leaves_the_body_alone(fake: FakeVLLM, clock: Clock) -> None:
    async with client_for(build(fake, clock, scheduling="fcfs")) as client:
        await chat(client, priority=-7, max_tokens=5)
        assert fake.last["priority"] == -7  # the client's own priority
        await chat(client, "other", headers=hints(0.9, 1))
        assert "priority" not in fake.last
        raw = b'{"model": "m",  "max_tokens": 5}'
        response = await within(
            client.post(CHAT, content=raw, headers={PROGRAM_ID_HEADER: "third"})
        )
        assert response.status_code == 200
        assert fake.bodies[-1] == raw  # not even re-encoded
        assert (await info(client)).priority is None


async def test_gang_gives_every_request_its_programs_arrival_number(
    fake: FakeVLLM, clock: Clock
) -> None:
    async with client_for(build(fake, clock, scheduling="gang")) as client:
        for pid in ["a", "a", "b", "a", "b", "c"]:
            clock.now += 1
            await chat(client, pid, headers=hints(0.9, 1), priority=-5)
        assert [body["priority"] for body in fake.received] == [0, 0, 1, 0, 1, 2]
        assert [(await info(client, pid)).priority for pid in "abc"] == [0, 1, 2]


async def test_dynasor_runs_short_certain_programs_before_long_uncertain_ones(
    fake: FakeVLLM, clock: Clock
) -> None:
    async with client_for(build(fake, clock, scheduling="dynasor", aging=0)) as client:
        await chat(client, "long", headers=hints(0.1, 8), max_tokens=100)
        await chat(client, "short", headers=hints(0.9, 1), max_tokens=100)
        long, short = (body["priority"] for body in fake.received)
        assert (long, short) == (720, 10)  # 100 tokens x 8 x 0.9, 100 x 1 x 0.1
        assert (await info(client, "long")).priority == 720
        # Later requests estimate from the tokens really used (11 per request).
        await chat(client, "long", headers=hints(0.5, 4), max_tokens=100)
        assert fake.last["priority"] == 22 == (await info(client, "long")).priority
        # A budget bounds the estimate.
        await chat(client, "budget", headers={**hints(0.0, 50), BUDGET_HEADER: "30"})
        assert fake.last["priority"] == 30


async def test_dynasor_prices_a_request_at_its_budget_clamped_size(
    fake: FakeVLLM, clock: Clock
) -> None:
    async with client_for(build(fake, clock, scheduling="dynasor", aging=0)) as client:
        budget = {**hints(0.0, 1), BUDGET_HEADER: "100"}
        await chat(client, "clamped", headers=budget, max_tokens=100, n=3)
        assert fake.last["max_tokens"] == 33  # 100 tokens left over 3 choices
        assert fake.last["priority"] == 99  # the 3 x 33 it may generate, not 3 x 100


async def test_las_runs_the_least_served_program_first(fake: FakeVLLM, clock: Clock) -> None:
    async with client_for(build(fake, clock, scheduling="las")) as client:
        for _ in range(3):  # each request of "a" generates 11 tokens
            await chat(client, "a", max_tokens=100, priority=-5)
        await chat(client, "b", max_tokens=100)
        assert [body["priority"] for body in fake.received] == [0, 11, 22, 0]
        assert (await info(client, "a")).priority == 22


async def test_edf_ranks_by_deadline_in_ms_after_the_servers_start(
    fake: FakeVLLM, clock: Clock
) -> None:
    async with client_for(build(fake, clock, scheduling="edf")) as client:
        start = clock.now
        await chat(client, "later", headers={DEADLINE_HEADER: f"{start + 90:.3f}"})
        await chat(client, "soon", headers={DEADLINE_HEADER: f"{start + 30:.3f}"})
        clock.now += 5
        await chat(client, "none")  # due an hour after it arrived
        assert [body["priority"] for body in fake.received] == [90_000, 30_000, 3_605_000]


@pytest.mark.parametrize("aging", [0.5, 100.0])
async def test_dynasor_ages_later_programs_by_their_arrival_time(
    fake: FakeVLLM, clock: Clock, aging: float
) -> None:
    async with client_for(build(fake, clock, aging=aging)) as client:
        clock.now += 4
        await chat(client, "first", headers=hints(0.5, 2), max_tokens=100)
        clock.now += 30
        await chat(client, "later", headers=hints(0.5, 2), max_tokens=100)
        clock.now += 30  # the first program's age is fixed at its arrival
        await chat(client, "first", headers=hints(0.5, 2), max_tokens=11)
        first, later, again = (body["priority"] for body in fake.received)
        assert first == round(aging * 4 + 100)
        assert later == round(aging * 34 + 100)
        assert later - first == round(aging * 30)
        assert again == round(aging * 4 + 11)  # 11 tokens per request so far x 2 x 0.5


async def test_dynasor_priorities_stay_within_vllms_integer_range(
    client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    await chat(client, headers={REMAINING_HEADER: str(10**30)}, max_tokens=10**6)
    assert fake.last["priority"] == 2**63 - 1


# ----------------------------------------------------------------------------- header hints


async def test_header_hints_are_recorded_per_request(
    client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    headers = {CERTAINTY_HEADER: "0.5", BUDGET_HEADER: " 120 ", DEADLINE_HEADER: "1700000000.5"}
    await chat(client, headers=headers)
    got = await info(client)
    assert (got.certainty, got.budget, got.deadline) == (0.5, 120, 1700000000.5)
    await chat(client, headers={CERTAINTY_HEADER: "0.75"})
    got = await info(client)
    assert (got.certainty, got.budget, got.deadline) == (0.75, 120, 1700000000.5)
    assert len(fake.calls) == 2


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (CERTAINTY_HEADER, "1.5"),
        (CERTAINTY_HEADER, "-0.01"),
        (CERTAINTY_HEADER, "nan"),
        (CERTAINTY_HEADER, "high"),
        (CERTAINTY_HEADER, ""),
        (BUDGET_HEADER, "-1"),
        (BUDGET_HEADER, "1.5"),
        (BUDGET_HEADER, "lots"),
        (DEADLINE_HEADER, "0"),
        (DEADLINE_HEADER, "tomorrow"),
    ],
)
async def test_bad_header_hint_is_400_and_never_reaches_vllm(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM, header: str, value: str
) -> None:
    response = await chat(client, headers={header: value})
    error = assert_error(response, ErrorCode.INVALID_HINTS, 400)
    field = header.removeprefix("X-Dynasor-").lower()
    assert field in error["message"]
    assert fake.calls == [] and len(mw.table) == 0


# ----------------------------------------------------------------------------- stream usage


async def test_a_stream_is_asked_for_usage_which_is_counted_then_removed(
    client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    request: dict[str, Any] = {"stream": True, "chunks": 2}
    response = await chat(client, **request)
    assert fake.last["stream_options"] == {"include_usage": True}
    assert response.content == b"".join(sse_events(request))  # no usage event
    assert b'"usage":{' not in response.content
    got = await info(client)
    assert (got.prompt_tokens, got.completion_tokens) == (7, 11)


async def test_usage_is_removed_wherever_vllms_body_chunks_are_cut(
    client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    request: dict[str, Any] = {"stream": True, "chunks": 1}
    expected = b"".join(sse_events(request))
    size = len(b"".join(sse_events({**request, "stream_options": {"include_usage": True}})))
    for cut in range(1, size):
        response = await chat(client, **request, cuts=[cut])
        assert response.content == expected, cut
    for cuts in ([1, 2, 3], list(range(1, size))):
        assert (await chat(client, **request, cuts=cuts)).content == expected
    got = await info(client)
    assert (got.requests, got.completion_tokens) == (size + 1, 11 * (size + 1))


@pytest.mark.parametrize(
    "options",
    [
        {"include_usage": True},
        {"include_usage": True, "continuous_usage_stats": True},
        {"include_usage": True, "continuous_usage_stats": False},
    ],
)
async def test_a_client_that_asked_for_usage_gets_it_unchanged(
    client: httpx.AsyncClient, fake: FakeVLLM, options: dict[str, Any]
) -> None:
    request: dict[str, Any] = {"stream": True, "stream_options": options, "split": 7}
    response = await chat(client, **request)
    assert fake.last["stream_options"] == options
    assert response.content == b"".join(sse_events(request))
    assert json.loads(response.content.split(b"\n\n")[-3][6:])["choices"] == []
    assert (await info(client)).completion_tokens == 11


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"include_usage": False},
        {"include_usage": None},
        {"include_usage": False, "continuous_usage_stats": True},
        {"continuous_usage_stats": True, "x_custom": [1]},
    ],
)
async def test_a_client_that_did_not_ask_for_usage_gets_the_stream_it_asked_for(
    client: httpx.AsyncClient, fake: FakeVLLM, options: dict[str, Any]
) -> None:
    request: dict[str, Any] = {"stream": True, "stream_options": options, "split": 5}
    response = await chat(client, **request)
    sent = fake.last["stream_options"]
    assert sent["include_usage"] is True
    assert {
        k: v for k, v in sent.items() if k not in ("include_usage", "continuous_usage_stats")
    } == {
        k: v for k, v in options.items() if k not in ("include_usage", "continuous_usage_stats")
    }  # the client's other options are kept
    assert response.content == b"".join(sse_events(request))  # what vLLM sends for its body
    assert (await info(client)).completion_tokens == 11


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_a_request_that_is_not_a_stream_gets_no_stream_options(
    client: httpx.AsyncClient, fake: FakeVLLM, path: str
) -> None:
    for stream in (False, None, "yes"):
        await chat(client, path=path, stream=stream)
        assert "stream_options" not in fake.last
    await chat(client, path=path)
    assert "stream_options" not in fake.last and "stream" not in fake.last


async def test_no_budget_leaves_the_token_limits_alone(
    client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    await chat(client, max_tokens=100_000, n=3)
    assert (fake.last["max_tokens"], fake.last["n"]) == (100_000, 3)
    await chat(client)
    assert "max_tokens" not in fake.last and "max_completion_tokens" not in fake.last
    assert (await info(client)).budget_left is None


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"hi"', b"null", b"\xff\xfe"])
async def test_a_body_that_is_not_a_json_object_reaches_vllm_untouched(
    client: httpx.AsyncClient, fake: FakeVLLM, raw: bytes
) -> None:
    headers = {PROGRAM_ID_HEADER: PID, BUDGET_HEADER: "0", "content-type": "application/json"}
    response = await within(client.post(CHAT, content=raw, headers=headers))
    assert response.status_code == 400  # vLLM's own answer
    assert fake.bodies == [raw]
    assert Headers(scope=fake.scopes[-1])["content-length"] == str(len(raw))
    assert (await info(client)).requests == 1


# ----------------------------------------------------------------------------- content-length


@pytest.mark.parametrize("request_", [{"stream": True}, {"max_tokens": 10**5}, {"n": 2}])
async def test_a_rewritten_body_carries_its_own_content_length(
    client: httpx.AsyncClient, fake: FakeVLLM, request_: dict[str, Any]
) -> None:
    raw = json.dumps({"model": "m", **request_}, indent=4).encode()
    headers = {PROGRAM_ID_HEADER: PID, BUDGET_HEADER: "100"}
    assert (await within(client.post(CHAT, content=raw, headers=headers))).status_code == 200
    (body,) = fake.bodies
    assert body != raw and len(body) != len(raw)
    lengths = [v for k, v in fake.scopes[-1]["headers"] if k.lower() == b"content-length"]
    assert lengths == [str(len(body)).encode()]
    assert Headers(scope=fake.scopes[-1])[BUDGET_HEADER] == "100"  # other headers kept


async def test_a_chunked_request_body_is_rewritten_whole(
    mw: DynasorMiddleware, fake: FakeVLLM
) -> None:
    raw = dumps({"model": "m", "stream": True, "max_tokens": 300})
    conn = Conn(raw, chunk=3)
    scope = scope_for("POST", CHAT, {PROGRAM_ID_HEADER: PID, BUDGET_HEADER: "100"})
    await within(mw(scope, conn.receive, conn.send))
    assert conn.status == 200
    assert fake.last["max_tokens"] == 100 and fake.last["stream_options"]["include_usage"]
    assert Headers(scope=fake.scopes[-1])["content-length"] == str(len(fake.bodies[-1]))


# ----------------------------------------------------------------------------- relay


async def test_relay_keeps_an_inbound_message_across_a_cancelled_receive() -> None:
    inbound: asyncio.Queue[Message] = asyncio.Queue()
    relay = Relay(inbound.get, Conn().send, asyncio.Event())
    first = asyncio.ensure_future(relay.receive())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    message: Message = {"type": "http.request", "body": b"x", "more_body": False}
    inbound.put_nowait(message)
    assert await within(relay.receive()) == message
    relay.close()


async def test_relay_answers_disconnect_at_once_after_an_abort() -> None:
    aborted = asyncio.Event()
    conn = Conn(b"body")
    relay = Relay(conn.receive, conn.send, aborted)
    assert (await within(relay.receive()))["body"] == b"body"
    waiting = asyncio.ensure_future(relay.receive())  # blocks on the client
    await asyncio.sleep(0)
    aborted.set()
    assert await within(waiting) == {"type": "http.disconnect"}
    assert await within(relay.receive()) == {"type": "http.disconnect"}
    await relay.send({"type": "http.response.start", "status": 200, "headers": []})
    assert conn.sent == []  # swallowed after the abort
    await relay.finish_aborted({"error": {"code": "program_stopped"}}, 409)
    await relay.finish_aborted({"error": {"code": "program_stopped"}}, 409)  # once only
    assert conn.status == 409 and conn.complete
    relay.close()


# ----------------------------------------------------------------------------- metrics


async def test_metrics_report_programs_tokens_hints_and_refusals(
    fake: FakeVLLM, clock: Clock
) -> None:
    dyn = build(fake, clock, scheduling="gang")
    async with client_for(dyn) as client:
        await chat(
            client, "a", headers={CERTAINTY_HEADER: "0.5", BUDGET_HEADER: "100"}, generate=30
        )
        await chat(client, "b", headers={REMAINING_HEADER: "0"})
        await post_hints(client, "c", budget=0, certainty=0.25)
        assert (await chat(client, "c")).status_code == 429
        assert (await chat(client, "c", headers={CERTAINTY_HEADER: "x"})).status_code == 400
        await within(client.delete(program_path("b")))
        await stop(client, "c")
    values = scrape(dyn.metrics.registry)

    def value(name: str, **labels: str) -> float | None:
        return values.get((name, frozenset(labels.items())))

    programs = {s: value("dynasor_programs", state=s) for s in ("active", "stopped", "finished")}
    assert programs == {"active": 1, "stopped": 1, "finished": 1}
    assert value("dynasor_requests_total") == 2
    assert value("dynasor_tokens_total", kind="prompt") == 14
    assert value("dynasor_tokens_total", kind="completion") == 30 + 11
    assert value("dynasor_program_tokens", state="active", kind="completion") == 30
    assert value("dynasor_program_tokens", state="finished", kind="completion") == 11
    assert value("dynasor_program_tokens", state="stopped", kind="prompt") == 0
    hints_seen = {
        (dict(labels)["source"], dict(labels)["field"]): count
        for (name, labels), count in values.items()
        if name == "dynasor_hints_total"
    }
    assert hints_seen == {
        ("header", "certainty"): 1,
        ("header", "budget"): 1,
        ("header", "remaining"): 1,  # a hint of 0 is a hint too
        ("endpoint", "budget"): 1,
        ("endpoint", "certainty"): 1,
        ("endpoint", "stop"): 1,
    }
    assert value("dynasor_requests_rejected_total", code="budget_exhausted") == 1
    assert value("dynasor_requests_rejected_total", code="invalid_hints") == 1
    assert value("dynasor_scheduling_policy", policy="gang") == 1
    assert value("dynasor_scheduling_policy", policy="dynasor") is None
    assert value("dynasor_requests_aborted_total") == 0
    assert value("dynasor_programs_expired_total") == 0


async def test_metrics_count_each_request_a_stop_aborts_once(
    mw: DynasorMiddleware, client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    registry = mw.metrics.registry
    running = [start(mw, {"hang": True}), start(mw, {"hang": True, "stream": True})]
    other = start(mw, {"hang": True}, pid="other")
    await until(lambda: fake.running == 3)
    await stop(client)
    await stop(client)
    await within(asyncio.gather(*(task for task, _ in running)))
    assert sample(registry, "dynasor_requests_aborted_total") == 2
    await within(client.delete(program_path("other")))
    await within(other[0])
    assert sample(registry, "dynasor_requests_aborted_total") == 3
    assert sample(registry, "dynasor_programs", state="stopped") == 1
    assert sample(registry, "dynasor_programs", state="finished") == 1


async def test_a_delete_after_a_stop_does_not_count_the_abort_again(
    mw: DynasorMiddleware, client: httpx.AsyncClient
) -> None:
    hold = asyncio.Event()

    async def deaf(scope: Any, receive: Any, send: Any) -> None:  # ignores disconnects
        await hold.wait()

    dyn = DynasorMiddleware(deaf, table=mw.table, metrics=mw.metrics)
    task, _ = start(dyn, {})
    await until(lambda: sum(len(record.in_flight) for record in mw.table) == 1)
    assert (await stop(client)).aborted == 1
    got = (await within(client.delete(program_path(PID)))).json()
    assert (got["state"], got["aborted"], got["in_flight"]) == ("finished", 1, 1)
    assert sample(mw.metrics.registry, "dynasor_requests_aborted_total") == 1
    hold.set()
    await within(task)


def test_a_second_collector_on_one_registry_only_warns(
    mw: DynasorMiddleware, caplog: pytest.LogCaptureFixture
) -> None:
    registry = mw.metrics.registry
    with caplog.at_level(logging.WARNING, logger="dynasor_agents.server"):
        second = ServerMetrics(mw.table, "fcfs", registry=registry)
    assert "already registered" in caplog.text
    second.rejected_with("budget_exhausted")
    assert sample(registry, "dynasor_scheduling_policy", policy="dynasor") == 1
    assert sample(registry, "dynasor_scheduling_policy", policy="fcfs") is None
    assert sample(registry, "dynasor_requests_rejected_total", code="budget_exhausted") is None


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DYNASOR_SCHEDULING", "fifo"),
        ("DYNASOR_PROGRAM_TTL", "0"),
        ("DYNASOR_PROGRAM_TTL", "inf"),
        ("DYNASOR_PROGRAM_TTL", "soon"),
        ("DYNASOR_MAX_PROGRAMS", "0"),
        ("DYNASOR_MAX_PROGRAMS", "many"),
        ("DYNASOR_DEFAULT_BUDGET", "-5"),
        ("DYNASOR_DEFAULT_BUDGET", "1.5"),
        ("DYNASOR_AGING", "-1"),
        ("DYNASOR_REQUEST_TOKENS", "0"),
    ],
)
def test_a_bad_setting_names_its_variable(variable: str, value: str) -> None:
    environ = {"DYNASOR_SCHEDULING": "gang", variable: value}
    with pytest.raises(ValueError, match=f"^invalid {variable}={value!r}: "):
        ServerConfig.from_env(environ)
    with pytest.raises(ValueError, match=variable):
        DynasorMiddleware(FakeVLLM(), environ=environ, registry=CollectorRegistry())


async def test_the_component_reads_its_settings_from_the_environment(
    fake: FakeVLLM, clock: Clock
) -> None:
    environ = {
        "DYNASOR_SCHEDULING": " gang ",
        "DYNASOR_PROGRAM_TTL": "30",
        "DYNASOR_MAX_PROGRAMS": "5",
        "DYNASOR_DEFAULT_BUDGET": "",  # empty: the default (no budget)
        "DYNASOR_UNKNOWN": "ignored",
        "PATH": "/bin",
    }
    dyn = DynasorMiddleware(fake, environ=environ, registry=CollectorRegistry())
    assert dyn.config == ServerConfig(scheduling="gang", program_ttl=30, max_programs=5)
    assert (dyn.policy.name, dyn.table.ttl, dyn.table.max_programs) == ("gang", 30, 5)
    assert dyn.table.default_budget is None
    async with client_for(dyn) as client:
        await chat(client, "a", max_tokens=10**6)
        await chat(client, "b")
        assert [body.get("priority") for body in fake.received] == [0, 1]
        assert fake.received[0]["max_tokens"] == 10**6
    assert sample(dyn.metrics.registry, "dynasor_scheduling_policy", policy="gang") == 1
    default = DynasorMiddleware(fake, environ={}, registry=CollectorRegistry())
    assert default.config == ServerConfig() and default.policy.name == "dynasor"


@pytest.mark.parametrize(("aging", "starves"), [(0.0, True), (100.0, False)])
def test_without_aging_a_stream_of_short_programs_starves_a_long_one(
    aging: float, starves: bool
) -> None:
    from dynasor_agents.protocol import Hints
    from dynasor_agents.server import ProgramTable
    from dynasor_agents.server._scheduling import Dynasor, RequestShape

    clock = Clock(0.0)
    table = ProgramTable(clock=clock, ttl=1e9)
    policy, shape = Dynasor(aging=aging), RequestShape(max_tokens=16)
    long = table.get_or_create("long")
    long.apply(Hints(certainty=0.1, remaining=4))
    waiting = policy.priority(long, shape, table)  # fixed once queued
    assert waiting is not None
    beaten_by = []
    for second in range(1, 11):  # a new short program every second
        clock.now = float(second)
        short = table.get_or_create(f"short-{second}")
        short.apply(Hints(certainty=0.95, remaining=1))
        priority = policy.priority(short, shape, table)
        assert priority is not None
        beaten_by.append(priority < waiting)
    assert all(beaten_by) is starves
    assert any(beaten_by) is starves  # with aging, not even the first one jumps ahead
