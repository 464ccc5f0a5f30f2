"""Programs on the server: token budgets, hint validation, ownership, expiry, table limits,
deadlines.

Every test drives the component through its HTTP surface around a fake vLLM (see
``server_fakes.py``) and checks what the client gets and what vLLM receives.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge

from dynasor_agents.protocol import (
    BUDGET_HEADER,
    CERTAINTY_HEADER,
    DEADLINE_HEADER,
    LOAD_PATH,
    PROGRAM_ID_HEADER,
    REMAINING_HEADER,
    ErrorCode,
    Hints,
    Lifecycle,
    ServerLoad,
    hints_path,
    program_path,
)
from dynasor_agents.server import DynasorMiddleware, ProgramTable

from .server_fakes import (
    CHAT,
    COMPLETIONS,
    OTHER_TOKEN,
    PID,
    TOKEN,
    Clock,
    FakeAuth,
    FakeVLLM,
    Passthrough,
    assert_error,
    bearer,
    build,
    chat,
    client_for,
    info,
    post_hints,
    sample,
    sse_data,
    start,
    stop,
    until,
    within,
)

BUDGET_100 = {BUDGET_HEADER: "100"}


# ----------------------------------------------------------------------------- budget


@pytest.mark.parametrize(
    ("path", "asked", "sent"),
    [
        (CHAT, {"max_tokens": 500}, {"max_tokens": 100}),
        (CHAT, {"max_completion_tokens": 500}, {"max_completion_tokens": 100}),
        (
            CHAT,
            {"max_tokens": 500, "max_completion_tokens": 400},
            {"max_tokens": 100, "max_completion_tokens": 100},
        ),
        (CHAT, {}, {"max_tokens": 100}),
        (CHAT, {"max_tokens": 30}, {"max_tokens": 30}),
        (COMPLETIONS, {"max_tokens": 500}, {"max_tokens": 100}),
        (COMPLETIONS, {}, {"max_tokens": 100}),
    ],
)
async def test_a_budget_clamps_the_token_limits_vllm_receives(
    client: httpx.AsyncClient,
    fake: FakeVLLM,
    path: str,
    asked: dict[str, int],
    sent: dict[str, int],
) -> None:
    response = await chat(client, path=path, headers=BUDGET_100, **asked)
    assert response.status_code == 200
    limits = {k: v for k, v in fake.last.items() if k in ("max_tokens", "max_completion_tokens")}
    assert limits == sent
    assert fake.last["model"] == "m"  # the rest of the body is kept


async def test_n_choices_split_the_budget_and_their_usage_is_charged(
    client: httpx.AsyncClient, fake: FakeVLLM, mw: DynasorMiddleware
) -> None:
    response = await chat(client, headers=BUDGET_100, n=2, max_tokens=500, generate=500)
    assert response.status_code == 200 and fake.last["max_tokens"] == 50
    assert response.json()["usage"]["completion_tokens"] == 100
    got = await info(client)
    assert (got.completion_tokens, got.budget, got.budget_left) == (100, 100, 0)

    refused = await chat(client, headers=BUDGET_100, max_tokens=1)
    error = assert_error(refused, ErrorCode.BUDGET_EXHAUSTED, 429)
    assert PID in error["message"] and "100 completion tokens used" in error["message"]
    assert len(fake.received) == 1  # vLLM never saw it
    assert sample(mw.metrics.registry, "dynasor_requests_rejected_total", code="budget_exhausted")
    # The component keeps serving other programs.
    assert (await chat(client, "other", headers=BUDGET_100)).status_code == 200


async def test_reported_usage_is_charged_and_later_requests_get_what_is_left(
    client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    await chat(client, headers=BUDGET_100, max_tokens=500, generate=30)
    got = await info(client)
    assert (got.completion_tokens, got.budget_left, got.prompt_tokens) == (30, 70, 7)
    await chat(client, headers=BUDGET_100, max_tokens=500, stream=True, generate=500)
    assert fake.last["max_tokens"] == 70
    got = await info(client)
    assert (got.completion_tokens, got.budget_left) == (100, 0)
    assert_error(await chat(client, headers=BUDGET_100), ErrorCode.BUDGET_EXHAUSTED, 429)
    assert_error(await chat(client, stream=True), ErrorCode.BUDGET_EXHAUSTED, 429)
    assert len(fake.received) == 2


async def test_concurrent_requests_reserve_so_their_caps_fit_the_budget(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM
) -> None:
    first = start(mw, {"hang": True, "max_tokens": 60, "generate": 10}, headers=BUDGET_100)
    await until(lambda: fake.running == 1)
    second = start(mw, {"hang": True, "max_tokens": 60, "generate": 10}, headers=BUDGET_100)
    await until(lambda: fake.running == 2)
    assert [body["max_tokens"] for body in fake.received] == [60, 40]
    got = await info(client)
    assert (got.in_flight, got.budget_left, got.completion_tokens) == (2, 0, 0)

    third = await chat(client, headers=BUDGET_100, max_tokens=1)
    assert_error(third, ErrorCode.BUDGET_EXHAUSTED, 429)
    assert "100 reserved" in third.json()["error"]["message"]

    fake.release.set()
    await within(asyncio.gather(first[0], second[0]))
    assert first[1].status == second[1].status == 200
    got = await info(client)  # reservations are replaced by the tokens really used
    assert (got.in_flight, got.completion_tokens, got.budget_left) == (0, 20, 80)


async def test_a_repeated_budget_header_keeps_counting_and_a_new_value_resets(
    client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    for _ in range(2):  # one round of samples, each with the same header
        await chat(client, headers=BUDGET_100, generate=30)
    got = await info(client)
    assert (got.completion_tokens, got.budget_left) == (60, 40)
    await chat(client, headers=BUDGET_100, max_tokens=500)
    assert fake.last["max_tokens"] == 40

    await chat(client, headers={BUDGET_HEADER: "50"}, generate=5)  # a new round
    assert fake.last["max_tokens"] == 50
    got = await info(client)
    assert (got.budget, got.completion_tokens, got.budget_left) == (50, 76, 45)


async def test_posted_budget_hints_always_reset_the_count(
    client: httpx.AsyncClient, fake: FakeVLLM
) -> None:
    await chat(client, headers=BUDGET_100, generate=60)
    response = await post_hints(client, budget=100)
    assert response.status_code == 200 and response.json()["budget_left"] == 100
    await chat(client, headers=BUDGET_100, max_tokens=500)  # a repeat of the same value
    assert fake.last["max_tokens"] == 100
    response = await post_hints(client, budget=0)
    assert response.json()["budget_left"] == 0
    assert_error(await chat(client), ErrorCode.BUDGET_EXHAUSTED, 429)


@pytest.mark.parametrize("how", ["stop", "client_left"])
async def test_a_request_ended_without_usage_is_charged_its_reservation(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM, how: str
) -> None:
    task, conn = start(mw, {"hang": True, "max_tokens": 80}, headers=BUDGET_100)
    await until(lambda: fake.running == 1)
    if how == "stop":
        await stop(client)
    else:
        conn.leave()
    await within(task)
    got = await info(client)
    assert (got.in_flight, got.completion_tokens, got.budget_left) == (0, 80, 20)
    if how == "client_left":
        await chat(client, headers=BUDGET_100, max_tokens=500)
        assert fake.last["max_tokens"] == 20


@pytest.mark.parametrize(("status", "charged"), [(400, 0), (422, 0), (500, 80)])
async def test_a_request_vllm_refuses_is_not_charged(
    client: httpx.AsyncClient, fake: FakeVLLM, status: int, charged: int
) -> None:
    """A 4xx generated nothing; a 5xx may have, so it keeps its reservation."""
    response = await chat(client, headers=BUDGET_100, max_tokens=80, status=status)
    assert response.status_code == status
    got = await info(client)
    assert (got.requests, got.completion_tokens, got.budget_left) == (1, charged, 100 - charged)


async def test_the_default_budget_applies_until_a_program_sends_its_own(
    fake: FakeVLLM, clock: Clock
) -> None:
    dyn = build(fake, clock, default_budget=50)
    async with client_for(dyn) as client:
        await chat(client, max_tokens=500, generate=20)
        assert fake.last["max_tokens"] == 50
        got = await info(client)
        assert (got.budget, got.budget_left) == (None, 30)
        await chat(client, "own", headers={BUDGET_HEADER: "200"}, max_tokens=500)
        assert fake.last["max_tokens"] == 200
        await chat(client, generate=30)
        assert_error(await chat(client), ErrorCode.BUDGET_EXHAUSTED, 429)
        assert dyn.table.default_budget == 50


@pytest.mark.parametrize("via", ["header", "endpoint"])
async def test_a_budget_of_zero_is_exhausted_at_once(
    client: httpx.AsyncClient, fake: FakeVLLM, via: str
) -> None:
    if via == "endpoint":
        await post_hints(client, budget=0)
        response = await chat(client)
    else:
        response = await chat(client, headers={BUDGET_HEADER: "0"})
    assert_error(response, ErrorCode.BUDGET_EXHAUSTED, 429)
    assert fake.calls == []
    assert (await info(client)).requests == 0


requests_st = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(1, 120)),  # max_tokens asked
        st.integers(1, 4),  # n
        st.integers(0, 150),  # tokens each choice would generate
        st.booleans(),  # streamed
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget=st.integers(0, 300), requests=requests_st, concurrent=st.booleans())
async def test_a_budget_is_never_overspent(
    budget: int, requests: list[tuple[int | None, int, int, bool]], concurrent: bool
) -> None:
    fake = FakeVLLM()
    dyn = build(fake, Clock())
    headers = {BUDGET_HEADER: str(budget)}
    charged: int | None = None  # what the sequential run expects to be charged
    bodies: list[dict[str, Any]] = []
    for max_tokens, n, generate, stream in requests:
        body: dict[str, Any] = {"n": n, "generate": generate, "stream": stream}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        bodies.append(body)
    if concurrent:  # all in flight at once (admitted ones hang), then released together
        started = [start(dyn, {**b, "hang": True}, headers=headers) for b in bodies]
        conns = [conn for _, conn in started]

        def settled() -> bool:  # each request is hanging in vLLM or was refused
            refused = sum(1 for c in conns if c.sent and c.sent[0]["status"] == 429)
            return fake.running + refused == len(conns)

        await until(settled)
        fake.release.set()
        await within(asyncio.gather(*(task for task, _ in started)))
        statuses = [conn.status for conn in conns]
        # Admitted together: their reservations alone must fit in the budget.
        assert sum(body["max_tokens"] * body["n"] for body in fake.received) <= budget
    else:
        charged = 0
        statuses = []
        async with client_for(dyn) as client:
            for b in bodies:
                response = await chat(client, headers=headers, **b)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    cap = fake.last["max_tokens"] * fake.last["n"]
                    assert cap <= budget - charged  # what is left, never more
                    charged += fake.last["n"] * min(b["generate"], fake.last["max_tokens"])
                else:
                    assert budget - charged < b["n"]  # refused only when nothing is left
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) == len(fake.received)
    assert all(body["max_tokens"] >= 1 for body in fake.received)  # caps are never < 1
    record = dyn.table.get(PID)
    assert record is not None and not record.in_flight
    assert record.completion_tokens <= budget
    assert record.budget_left == budget - record.completion_tokens
    assert charged is None or record.completion_tokens == charged


# ----------------------------------------------------------------------------- malformed hints


@pytest.mark.parametrize(
    ("header", "value", "field"),
    [
        (BUDGET_HEADER, "-1", "budget"),
        (BUDGET_HEADER, "abc", "budget"),
        (BUDGET_HEADER, "1e309", "budget"),
        (BUDGET_HEADER, "1e3", "budget"),
        (BUDGET_HEADER, "nan", "budget"),
        (CERTAINTY_HEADER, "nan", "certainty"),
        (CERTAINTY_HEADER, "inf", "certainty"),
        (REMAINING_HEADER, "-3", "remaining"),
        (REMAINING_HEADER, "2.5", "remaining"),
        (REMAINING_HEADER, "many", "remaining"),
        (DEADLINE_HEADER, "-5", "deadline"),
    ],
)
async def test_a_malformed_hint_header_is_400_naming_the_field(
    client: httpx.AsyncClient,
    mw: DynasorMiddleware,
    fake: FakeVLLM,
    header: str,
    value: str,
    field: str,
) -> None:
    response = await chat(client, headers={header: value}, max_tokens=5)
    error = assert_error(response, ErrorCode.INVALID_HINTS, 400)
    assert error["message"].startswith(f"{field}:")
    assert fake.calls == [] and len(mw.table) == 0
    assert sample(mw.metrics.registry, "dynasor_requests_rejected_total", code="invalid_hints")
    # The component keeps serving, with the same header fixed (a deadline in the future).
    fixed = "1" if header != DEADLINE_HEADER else f"{time.time() + 3600:.3f}"
    assert (await chat(client, headers={header: fixed})).status_code == 200
    assert len(fake.received) == 1


@pytest.mark.parametrize(
    "hints",
    [{"budget": -1}, {"budget": "abc"}, {"remaining": -3}, {"certainty": "nan"}, {"stop": "x"}],
)
async def test_malformed_posted_hints_are_400_naming_the_field(
    client: httpx.AsyncClient, mw: DynasorMiddleware, hints: dict[str, Any]
) -> None:
    error = assert_error(await post_hints(client, **hints), ErrorCode.INVALID_HINTS, 400)
    (field,) = hints
    assert field in error["message"]
    assert len(mw.table) == 0
    assert (await post_hints(client, certainty=0.5)).status_code == 200


@pytest.mark.parametrize("pid", ["bad id", "a" * 129, "../x", "a?b"])
async def test_a_malformed_program_id_is_400_and_the_component_keeps_serving(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM, pid: str
) -> None:
    response = await chat(client, pid, headers=BUDGET_100)
    error = assert_error(response, ErrorCode.INVALID_PROGRAM_ID, 400)
    assert error["param"] == PROGRAM_ID_HEADER
    assert fake.calls == [] and len(mw.table) == 0
    assert (await chat(client)).status_code == 200 and len(fake.received) == 1


# ----------------------------------------------------------------------------- ownership


async def test_a_program_is_invisible_to_other_api_keys(
    secured: tuple[httpx.AsyncClient, DynasorMiddleware], fake: FakeVLLM
) -> None:
    client, dyn = secured
    mine, theirs = bearer(TOKEN), bearer(OTHER_TOKEN)
    assert (await chat(client, headers={**mine, **BUDGET_100})).status_code == 200

    not_found = [
        await within(client.get(program_path(PID), headers=theirs)),
        await within(client.delete(program_path(PID), headers=theirs)),
        await post_hints(client, headers=theirs, stop=True),
        await post_hints(client, headers=theirs, budget=5),
        await chat(client, headers=theirs),
        await chat(client, headers={**theirs, BUDGET_HEADER: "0"}),
    ]
    for response in not_found:
        error = assert_error(response, ErrorCode.PROGRAM_NOT_FOUND, 404)
        assert PID in error["message"] and "key" not in error["message"]
    assert len(fake.received) == 1

    got = await info(client, headers=mine)  # untouched by the other key
    assert (got.state, got.requests, got.budget, got.aborted) == ("active", 1, 100, 0)
    assert (await chat(client, headers=mine)).status_code == 200
    # The other key has programs of its own.
    assert (await chat(client, "theirs", headers=theirs)).status_code == 200
    assert (await info(client, "theirs", headers=theirs)).requests == 1
    assert (await within(client.get(program_path("theirs"), headers=mine))).status_code == 404
    owners = {record.id: record.owner for record in dyn.table}
    assert None not in owners.values() and owners[PID] != owners["theirs"]


async def test_without_an_api_key_programs_have_no_owner(
    client: httpx.AsyncClient, mw: DynasorMiddleware
) -> None:
    await chat(client, headers=bearer(TOKEN))  # a key nobody checks changes nothing
    await chat(client)
    record = mw.table.get(PID)
    assert record is not None and record.owner is None and record.requests == 2


# ----------------------------------------------------------------------------- expiry


async def test_an_idle_program_expires_after_its_ttl_and_its_id_starts_afresh(
    fake: FakeVLLM, clock: Clock
) -> None:
    dyn = build(fake, clock, program_ttl=10)
    registry = dyn.metrics.registry
    async with client_for(dyn) as client:
        await chat(client, headers=BUDGET_100, generate=60)
        await chat(client, "busy")
        clock.now += 10
        assert (await info(client)).requests == 1  # exactly the TTL: not yet
        assert (await chat(client, "busy")).status_code == 200
        clock.now += 1
        assert_error(await within(client.get(program_path(PID))), ErrorCode.PROGRAM_NOT_FOUND, 404)
        assert len(dyn.table) == 1 and dyn.table.get("busy") is not None
        assert sample(registry, "dynasor_programs_expired_total") == 1
        assert sample(registry, "dynasor_programs", state="active") == 1

        clock.now += 100
        await chat(client, headers=BUDGET_100, max_tokens=500)
        assert fake.last["max_tokens"] == 100  # a fresh budget, not the old one's 40
        got = await info(client)
        assert (got.requests, got.completion_tokens, got.created) == (1, 11, clock.now)
        assert sample(registry, "dynasor_programs_expired_total") == 2  # "busy" went too


async def test_a_program_with_a_request_in_flight_does_not_expire(
    fake: FakeVLLM, clock: Clock
) -> None:
    dyn = build(fake, clock, program_ttl=10)
    async with client_for(dyn) as client:
        task, conn = start(dyn, {"hang": True})
        await until(lambda: fake.running == 1)
        clock.now += 1000
        assert dyn.table.sweep() == 0
        assert (await info(client)).in_flight == 1
        fake.release.set()
        await within(task)
        assert conn.status == 200
        clock.now += 10  # idle time counts from the end of the request
        assert (await info(client)).completion_tokens == 11
        clock.now += 1
        assert (await within(client.get(program_path(PID)))).status_code == 404
        assert len(dyn.table) == 0 and dyn.table.expired == 1


async def test_a_stopped_program_expires_too(fake: FakeVLLM, clock: Clock) -> None:
    dyn = build(fake, clock, program_ttl=10)
    async with client_for(dyn) as client:
        await stop(client)
        clock.now += 11
        assert (await within(client.get(program_path(PID)))).status_code == 404
        assert (await chat(client)).status_code == 200  # a new program under the old id


# ----------------------------------------------------------------------------- table limits


async def test_a_full_table_refuses_new_programs_until_others_expire(
    fake: FakeVLLM, clock: Clock
) -> None:
    dyn = build(fake, clock, max_programs=2, program_ttl=10)
    async with client_for(dyn) as client:
        for pid in ("p1", "p2"):
            assert (await chat(client, pid)).status_code == 200
        for response in (await chat(client, "p3"), await post_hints(client, "p3", budget=5)):
            error = assert_error(response, ErrorCode.TOO_MANY_PROGRAMS, 503)
            assert "2 programs" in error["message"]
        assert len(fake.received) == 2 and len(dyn.table) == 2
        assert (await chat(client, "p1")).status_code == 200  # known programs still run
        registry = dyn.metrics.registry
        assert sample(registry, "dynasor_requests_rejected_total", code="too_many_programs") == 2

        clock.now += 5
        assert (await chat(client, "p1")).status_code == 200
        clock.now += 6  # p2 idle for 11 s, p1 for 6 s
        assert (await chat(client, "p3")).status_code == 200
        assert sorted(record.id for record in dyn.table) == ["p1", "p3"]
        assert_error(await chat(client, "p4"), ErrorCode.TOO_MANY_PROGRAMS, 503)


async def test_finished_programs_still_count_until_they_expire(
    fake: FakeVLLM, clock: Clock
) -> None:
    dyn = build(fake, clock, max_programs=1, program_ttl=10)
    async with client_for(dyn) as client:
        await chat(client, "p1")
        assert (await within(client.delete(program_path("p1")))).json()["state"] == "finished"
        assert_error(await chat(client, "p2"), ErrorCode.TOO_MANY_PROGRAMS, 503)
        clock.now += 11
        assert (await chat(client, "p2")).status_code == 200


# ----------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", TOKEN, f"Basic {TOKEN}"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", program_path(PID)),
        ("DELETE", program_path(PID)),
        ("POST", hints_path(PID)),
        ("GET", LOAD_PATH),
    ],
)
async def test_control_endpoints_need_the_api_key(
    secured: tuple[httpx.AsyncClient, DynasorMiddleware],
    fake: FakeVLLM,
    authorization: str | None,
    method: str,
    path: str,
) -> None:
    client, dyn = secured
    headers = {"Authorization": authorization} if authorization else {}
    response = await within(client.request(method, path, json={"stop": True}, headers=headers))
    assert response.status_code == 401 and response.json() == {"error": "Unauthorized"}
    assert len(dyn.table) == 0 and fake.calls == []


async def test_control_endpoints_work_with_the_api_key(
    secured: tuple[httpx.AsyncClient, DynasorMiddleware], auth: FakeAuth
) -> None:
    client, _ = secured
    good = {"Authorization": f"Bearer {TOKEN}"}
    missing = await within(client.get(program_path(PID), headers=good))
    assert_error(missing, ErrorCode.PROGRAM_NOT_FOUND, 404)
    response = await within(client.post(hints_path(PID), json={"stop": True}, headers=good))
    assert response.status_code == 200 and response.json()["state"] == "stopped"
    response = await within(client.get(program_path(PID), headers=good))
    assert response.status_code == 200 and response.json()["state"] == "stopped"
    assert auth.checked == 3
    assert (await within(client.delete(program_path(PID), headers=good))).status_code == 200


async def test_unauthenticated_generation_is_left_to_vllm(
    secured: tuple[httpx.AsyncClient, DynasorMiddleware], fake: FakeVLLM
) -> None:
    client, dyn = secured
    denied = await chat(client)
    assert denied.status_code == 401 and denied.json() == {"error": "Unauthorized"}
    # Not even a bad header hint or id is reported before authentication.
    denied = await chat(client, "bad id", headers={CERTAINTY_HEADER: "7"})
    assert denied.status_code == 401
    assert len(dyn.table) == 0 and fake.calls == []

    ok = await chat(client, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    (record,) = dyn.table  # owned by the key's digest; never the key itself
    assert (record.id, record.requests, record.completion_tokens) == (PID, 1, 11)
    assert record.owner is not None and TOKEN not in record.owner
    assert dyn.table.get(PID) is None  # not visible without the owner


async def test_the_authenticator_is_looked_up_once_through_the_app_chain(
    secured: tuple[httpx.AsyncClient, DynasorMiddleware], auth: FakeAuth
) -> None:
    _, dyn = secured
    assert dyn._authenticator() is auth
    dyn.app = Passthrough(Passthrough(FakeVLLM()))  # cached: not looked up again
    assert dyn._authenticator() is auth
    assert (
        DynasorMiddleware(Passthrough(FakeVLLM()), registry=CollectorRegistry())._authenticator()
        is None
    )


# ----------------------------------------------------------------------------- program table


def test_program_table_records_created_and_last_activity_from_its_clock() -> None:
    clock = Clock(10.0)
    table = ProgramTable(clock=clock)
    record = table.get_or_create("p1")
    assert (record.created, record.last_activity, record.state) == (10.0, 10.0, Lifecycle.ACTIVE)

    clock.now = 15.0
    assert table.get_or_create("p1") is record
    assert (record.created, record.last_activity) == (10.0, 15.0)
    clock.now = 20.0
    table.touch(record)
    assert record.last_activity == 20.0
    clock.now = 30.0
    handle = record.begin_request()
    assert table.stop("p1") == 1 and table.stop("p1") == 0
    assert handle.aborted.is_set() and record.info().state == "stopped"
    assert (record.created, record.last_activity, record.aborted) == (10.0, 30.0, 1)

    clock.now = 40.0
    assert table.finish("p1") is record and record.state is Lifecycle.FINISHED
    assert table.stop("p1") == 0 and record.state is Lifecycle.FINISHED  # only forward
    record.end_request(handle, 3, 4, measured=True)
    info = record.info()
    assert (info.created, info.last_activity, info.in_flight, info.requests) == (10.0, 40.0, 0, 1)
    assert (info.prompt_tokens, info.completion_tokens, info.state) == (3, 4, "finished")

    assert table.get("nope") is None and table.finish("nope") is None and table.stop("nope") == 0
    assert len(table) == 1 and [r.id for r in table] == ["p1"]


def test_program_table_defaults_to_wall_clock_time() -> None:
    before = time.time()
    record = ProgramTable().get_or_create("p1", owner="key-1")
    assert before <= record.created <= time.time() and record.owner == "key-1"


# ----------------------------------------------------------------------------- deadlines


async def test_a_program_past_its_deadline_is_stopped_and_refused_with_deadline_exceeded(
    client: httpx.AsyncClient, clock: Clock, fake: FakeVLLM
) -> None:
    due = {DEADLINE_HEADER: f"{clock.now + 10:.3f}"}
    assert (await chat(client, headers=due)).status_code == 200
    clock.now += 20
    for request in ({}, {"stream": True}):
        response = await chat(client, headers=due, **request)
        error = assert_error(response, ErrorCode.DEADLINE_EXCEEDED, 409)
        assert PID in error["message"] and "deadline passed" in error["message"]
    assert len(fake.calls) == 1  # vLLM never saw the late requests
    got = await info(client)
    assert (got.state, got.requests) == ("stopped", 1)


async def test_a_deadline_that_passes_mid_stream_aborts_it_at_the_next_sweep(
    client: httpx.AsyncClient, mw: DynasorMiddleware, clock: Clock, fake: FakeVLLM
) -> None:
    request = {"stream": True, "hang": True}
    task, conn = start(mw, request, headers={DEADLINE_HEADER: f"{clock.now + 5:.3f}"})
    await until(lambda: fake.running == 1)
    clock.now += 6  # past the deadline and past the sweep interval (1 s)
    assert (await chat(client, "another")).status_code == 200  # any request sweeps
    await within(task)
    assert fake.disconnects == 1
    data = sse_data(conn.body)
    assert json.loads(data[1])["error"]["code"] == ErrorCode.DEADLINE_EXCEEDED.value
    assert data[-1] == "[DONE]"
    assert (await info(client)).state == "stopped"
    assert (await info(client, "another")).state == "active"


async def test_with_late_programs_keep_a_late_program_runs_on(fake: FakeVLLM, clock: Clock) -> None:
    mw = build(fake, clock, late_programs="keep")
    async with client_for(mw) as client:
        due = {DEADLINE_HEADER: f"{clock.now + 1:.3f}"}
        clock.now += 5
        assert (await chat(client, headers=due)).status_code == 200
        assert (await info(client)).state == "active"


async def test_a_deadline_stop_is_idempotent_and_a_later_deadline_does_not_revive() -> None:
    now = [100.0]
    table = ProgramTable(clock=lambda: now[0])
    record = table.get_or_create("p")
    record.apply(Hints(deadline=150.0))
    assert not table.stop_if_late(record)
    now[0] = 151.0
    handle = record.begin_request()
    assert table.stop_if_late(record) and handle.aborted.is_set()
    assert not table.stop_if_late(record)  # idempotent: already stopped
    record.apply(Hints(deadline=500.0))
    assert record.state is Lifecycle.STOPPED and record.stop_code is ErrorCode.DEADLINE_EXCEEDED
    assert table.stop("p") == 0  # a later stop keeps the first stop's code
    assert record.stop_code is ErrorCode.DEADLINE_EXCEEDED


# ----------------------------------------------------------------------------- load


async def test_load_reports_vllms_queue_and_the_programs_in_flight(
    client: httpx.AsyncClient, mw: DynasorMiddleware, fake: FakeVLLM
) -> None:
    empty = await within(client.get(LOAD_PATH))
    assert empty.status_code == 200
    assert ServerLoad.model_validate(empty.json()) == ServerLoad(in_flight=0, programs=0)
    # vLLM's scheduler gauges live in the same registry as the component's metrics.
    waiting = Gauge("vllm:num_requests_waiting", "w", ["engine"], registry=mw.metrics.registry)
    running = Gauge("vllm:num_requests_running", "r", ["engine"], registry=mw.metrics.registry)
    waiting.labels(engine="0").set(3)
    running.labels(engine="0").set(8)
    task, _ = start(mw, {"hang": True})
    await until(lambda: fake.running == 1)
    load = ServerLoad.model_validate((await within(client.get(LOAD_PATH))).json())
    assert (load.waiting, load.running, load.in_flight, load.programs) == (3, 8, 1, 1)
    assert load.busy
    fake.release.set()
    await within(task)
    wrong = await within(client.post(LOAD_PATH, json={}))
    assert_error(wrong, ErrorCode.METHOD_NOT_ALLOWED, 405)
    assert wrong.headers["allow"] == "GET"
