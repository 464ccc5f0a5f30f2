"""SelfConsistency with fake chat models: stopping logic, cancellation, parity, Runnable API."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.outputs import ChatResult
from langchain_core.prompts import ChatPromptTemplate

from dynasor_agents import (
    PROGRESS_EVENT,
    CertaintyController,
    DeadlineExceededError,
    DynasorClient,
    InvalidInputError,
    ProgramStoppedError,
    SelfConsistency,
    StopReason,
    max_samples,
    max_tokens,
    threshold,
    weighted_consensus,
)
from dynasor_agents.errors import BudgetExhaustedError
from dynasor_agents.protocol import (
    BUDGET_HEADER,
    CERTAINTY_HEADER,
    DEADLINE_HEADER,
    LOAD_PATH,
    PROGRAM_ID_HEADER,
    REMAINING_HEADER,
)

from .strategy_fakes import Recorder, ScriptedChat


def always(text: str, delay: float = 0.0) -> ScriptedChat:
    return ScriptedChat(script=lambda i: (text, delay))


def cycle(*texts: str) -> ScriptedChat:
    return ScriptedChat(script=lambda i: (texts[i % len(texts)], 0.0))


def controller(*, cap: int = 20, first: int = 5, t: float = 0.8) -> CertaintyController:
    return CertaintyController(threshold(t) | max_samples(cap), first_round=first, round_size=first)


async def test_unanimous_answers_stop_at_first_detect_step_and_stop_the_program() -> None:
    recorder = Recorder()
    sc = SelfConsistency(
        always("so \\boxed{18}"), controller=controller(), client=recorder.client()
    )
    result = await sc.ainvoke("q", program_id="p-1")

    assert (result.answer, result.answer_text) == ("18", "18")
    assert result.samples == 5 and result.rounds == 1
    assert result.stop_reason is StopReason.CERTAIN and result.final
    assert result.trajectory == [1.0] and result.votes == {"18": 5}
    assert (result.prompt_tokens, result.completion_tokens) == (50, 15)
    assert recorder.requests == [("POST", "/v1/dynasor/programs/p-1/hints", {"stop": True})]


async def test_scattered_answers_run_to_the_cap_and_finish_the_program() -> None:
    recorder = Recorder()
    sc = SelfConsistency(
        cycle("1", "2", "3", "4"), controller=controller(cap=12, first=4), client=recorder.client()
    )
    result = await sc.ainvoke("q", program_id="p-2")

    assert result.samples == 12 and result.rounds == 3
    assert result.stop_reason is StopReason.MAX_SAMPLES
    assert len(result.trajectory) == 3 and result.certainty < 0.8
    assert recorder.requests == [("DELETE", "/v1/dynasor/programs/p-2", {})]


async def test_equivalent_answers_cluster_together() -> None:
    sc = SelfConsistency(
        cycle("\\boxed{18}", "It costs $18.", "#### 18.0", "18 dollars"), controller=controller()
    )
    result = await sc.ainvoke("q")
    assert result.votes == {"18": 5} and result.stop_reason is StopReason.CERTAIN


async def test_settled_mid_round_cancels_the_samples_still_running() -> None:
    # 7 fast agreeing samples and 3 slow ones: with 10 in the round, 7 agreeing answers
    # reach Certaindex 0.59 even if the 3 pending ones all disagree, so the rest is cancelled.
    model = ScriptedChat(script=lambda i: ("7", 0.0) if i < 7 else ("8", 30.0))
    sc = SelfConsistency(model, controller=controller(cap=10, first=10, t=0.5))
    result = await asyncio.wait_for(sc.ainvoke("q"), timeout=5)

    assert result.stop_reason is StopReason.CERTAIN
    assert result.samples == 7 and result.answer == "7"
    assert model._cancelled == 3


async def test_finished_but_undelivered_samples_are_kept_when_cancelling() -> None:
    # All 8 fast samples finish together; the core decides after 7 of them, and the
    # 8th must still be counted (its tokens were spent).
    model = ScriptedChat(script=lambda i: ("7", 0.0) if i < 8 else ("8", 30.0))
    sc = SelfConsistency(model, controller=controller(cap=10, first=10, t=0.5))
    result = await asyncio.wait_for(sc.ainvoke("q"), timeout=5)
    assert result.samples == 8 and result.completion_tokens == 8 * 3
    assert model._cancelled == 2


async def test_token_budget_caps_requests_and_stops() -> None:
    model = cycle("1", "2", "3")
    ctl = CertaintyController(max_tokens(10) | max_samples(50), first_round=2, round_size=2)
    result = await SelfConsistency(model, controller=ctl, max_tokens=7).ainvoke("q")

    assert result.stop_reason is StopReason.MAX_TOKENS
    assert result.completion_tokens >= 10 and result.samples == 4
    assert [c["max_tokens"] for c in model._calls] == [7, 7, 4, 4]  # min(per-sample, left)


async def test_requests_carry_program_headers_and_certainty_after_first_round() -> None:
    model = cycle("1", "2")
    await SelfConsistency(model, controller=controller(cap=4, first=2)).ainvoke(
        "q", program_id="hdr"
    )
    headers = [c["extra_headers"] for c in model._calls]
    assert all(h[PROGRAM_ID_HEADER] == "hdr" for h in headers)
    assert CERTAINTY_HEADER not in headers[0]
    assert CERTAINTY_HEADER in headers[2]


def test_a_deadline_rides_on_every_request_and_a_bad_one_is_refused() -> None:
    model = cycle("1", "2")
    sc = SelfConsistency(model, controller=controller(cap=4, first=2))
    sc.invoke("q", program_id="due", deadline=1_900_000_000.5)
    assert [c["extra_headers"][DEADLINE_HEADER] for c in model._calls] == ["1900000000.500"] * 4
    with pytest.raises(InvalidInputError, match="deadline must be seconds since the epoch"):
        sc.invoke("q", program_id="due", deadline=float("nan"))


def test_sync_and_async_give_the_same_result() -> None:
    make = lambda: SelfConsistency(  # noqa: E731
        cycle("5", "5", "6", "5"), controller=controller(cap=8, first=4)
    )
    sync = make().invoke("q", program_id="same")
    asyn = asyncio.run(make().ainvoke("q", program_id="same"))
    assert sync == asyn


def test_batch_respects_max_concurrency() -> None:
    model = always("\\boxed{1}", delay=0.01)
    sc = SelfConsistency(model, controller=controller(first=3))
    results = sc.batch(["a", "b", "c", "d"], config={"max_concurrency": 1})
    assert [r.samples for r in results] == [3, 3, 3, 3]
    assert len({r.program_id for r in results}) == 4
    assert model._peak == 3  # one program (its 3 samples) at a time


def test_stream_yields_a_snapshot_per_detect_step_then_the_result() -> None:
    sc = SelfConsistency(cycle("1", "2", "3"), controller=controller(cap=9, first=3))
    chunks = list(sc.stream("q"))
    assert [c.final for c in chunks] == [False, False, False, True]
    assert [c.samples for c in chunks] == [3, 6, 9, 9]
    assert chunks[-1].stop_reason is StopReason.MAX_SAMPLES
    assert all(c.stop_reason is None for c in chunks[:-1])


async def test_astream_events_show_progress_events() -> None:
    sc = SelfConsistency(cycle("1", "2"), controller=controller(cap=4, first=2))
    events = [e async for e in sc.astream_events("q", version="v2")]
    progress = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in progress] == [PROGRESS_EVENT, PROGRESS_EVENT]
    assert [e["data"]["samples"] for e in progress] == [2, 4]


def test_prompt_pipe_and_dict_inputs() -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "Solve: {problem}")])
    model = FakeListChatModel(responses=["The answer is 4."])
    chain = prompt | SelfConsistency(model, controller=controller(first=2))
    assert chain.invoke({"problem": "2+2"}).answer == "4"
    sc = SelfConsistency(model, controller=controller(first=2))
    assert sc.invoke({"question": "2+2"}).answer == "4"  # default prompt


async def test_no_answers_at_all_is_not_certain() -> None:
    result = await SelfConsistency(
        always("I do not know."), controller=controller(cap=6, first=3)
    ).ainvoke("q")
    assert result.answer is None and result.abstained == 6
    assert result.certainty == 0.0 and result.stop_reason is StopReason.MAX_SAMPLES


async def test_server_stop_before_any_sample_raises_typed_error() -> None:
    class StoppedError(Exception):
        code = "program_stopped"

    class Refused(ScriptedChat):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            raise StoppedError("program p is stopped")

    recorder = Recorder()
    sc = SelfConsistency(Refused(script=lambda i: ("", 0)), client=recorder.client())
    with pytest.raises(ProgramStoppedError) as raised:
        await sc.ainvoke("q", program_id="p-stop")
    assert raised.value.program_id == "p-stop" and raised.value.code == "program_stopped"


async def test_server_stop_after_some_samples_returns_what_it_has() -> None:
    class StoppedError(Exception):
        code = "program_stopped"

    counter = itertools.count()

    class Flaky(ScriptedChat):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            if next(counter) >= 2:
                raise StoppedError("stopped")
            return await super()._agenerate(*args, **kwargs)

    result = await SelfConsistency(
        Flaky(script=lambda i: (str(i), 0.0)), controller=controller(cap=10, first=2)
    ).ainvoke("q")
    assert result.stop_reason is StopReason.SERVER_STOPPED and result.samples == 2


async def test_rounds_send_the_remaining_budget_and_samples() -> None:
    model = cycle("1", "2", "3")
    ctl = CertaintyController(max_tokens(100) | max_samples(6), first_round=2, round_size=2)
    await SelfConsistency(model, controller=ctl).ainvoke("q")
    sent = [
        (c["extra_headers"][BUDGET_HEADER], c["extra_headers"][REMAINING_HEADER])
        for c in model._calls
    ]
    # Each sample costs 3 completion tokens; a round's samples share one hint.
    assert sent == [("100", "6"), ("100", "6"), ("94", "4"), ("94", "4"), ("88", "2"), ("88", "2")]


async def test_a_server_deadline_stop_after_some_samples_answers_with_them() -> None:
    class LateError(Exception):
        code = "deadline_exceeded"

    counter = itertools.count()

    class Late(ScriptedChat):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            if next(counter) >= 3:
                raise LateError("program p is stopped (its deadline passed)")
            return await super()._agenerate(*args, **kwargs)

    recorder = Recorder()
    result = await SelfConsistency(
        Late(script=lambda i: (str(i % 2), 0.0)),  # 0, 1: not certain after round 1
        controller=controller(cap=10, first=2),
        client=recorder.client(),
    ).ainvoke("q", program_id="p-late")
    # The refusal ends the round at once: the other sample of round 2 is cancelled.
    assert result.stop_reason is StopReason.DEADLINE and result.samples == 2
    assert result.completions == ["0", "1"] and result.answer == "0"


async def test_a_deadline_stop_before_any_sample_raises_the_typed_error() -> None:
    class LateError(Exception):
        code = "deadline_exceeded"

    class Late(ScriptedChat):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            raise LateError("too late")

    with pytest.raises(DeadlineExceededError) as raised:
        await SelfConsistency(Late(script=lambda i: ("", 0))).ainvoke("q", program_id="p-late")
    assert isinstance(raised.value, ProgramStoppedError)
    assert raised.value.program_id == "p-late" and raised.value.code == "deadline_exceeded"


class BudgetError(Exception):
    """What the openai client raises for a 429 ``budget_exhausted`` answer."""

    code = "budget_exhausted"
    status_code = 429


async def test_server_budget_exhausted_after_some_samples_returns_what_it_has() -> None:
    counter = itertools.count()

    class Spent(ScriptedChat):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            if next(counter) >= 2:  # the whole second round is refused
                raise BudgetError("program p has spent its token budget")
            return await super()._agenerate(*args, **kwargs)

    result = await SelfConsistency(
        Spent(script=lambda i: (str(i), 0.0)), controller=controller(cap=10, first=2)
    ).ainvoke("q")
    assert result.stop_reason is StopReason.MAX_TOKENS and result.samples == 2


async def test_server_budget_exhausted_before_any_sample_raises_typed_error() -> None:
    class Spent(ScriptedChat):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            raise BudgetError("program p has spent its token budget")

    with pytest.raises(BudgetExhaustedError) as raised:
        await SelfConsistency(Spent(script=lambda i: ("", 0))).ainvoke("q", program_id="p-b")
    assert (raised.value.program_id, raised.value.status_code) == ("p-b", 429)


async def test_model_failure_propagates_and_stops_the_program() -> None:
    class Broken(ScriptedChat):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            raise RuntimeError("model exploded")

    recorder = Recorder()
    sc = SelfConsistency(Broken(script=lambda i: ("", 0)), client=recorder.client())
    with pytest.raises(RuntimeError, match="model exploded"):
        await sc.ainvoke("q", program_id="boom")
    assert recorder.requests == [("POST", "/v1/dynasor/programs/boom/hints", {"stop": True})]


@pytest.mark.parametrize("bad", ["", "   ", 42, [], None])
def test_bad_input_is_a_clear_error(bad: Any) -> None:
    sc = SelfConsistency(always("1"))
    with pytest.raises(InvalidInputError, match="input"):
        sc.invoke(bad)


def test_bad_construction_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="Runnable"):
        SelfConsistency("gpt")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="max_tokens"):
        SelfConsistency(always("1"), max_tokens=0)
    with pytest.raises(InvalidInputError, match="program id"):
        SelfConsistency(always("1")).invoke("q", program_id="../../etc")


async def test_result_survives_an_unreachable_server() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("server down", request=request)

    client = DynasorClient("http://dynasor.test", transport=httpx.MockTransport(down), attempts=2)
    sc = SelfConsistency(always("\\boxed{3}"), controller=controller(first=3), client=client)
    result = await sc.ainvoke("q")
    assert result.answer == "3" and result.stop_reason is StopReason.CERTAIN


async def test_a_strategy_composes_over_another_in_one_program() -> None:
    model = cycle("\\boxed{7}", "\\boxed{7}", "\\boxed{9}")
    inner = SelfConsistency(
        model, controller=CertaintyController(max_samples(3), first_round=3), max_tokens=5
    )
    recorder = Recorder()
    outer = SelfConsistency(
        inner,
        controller=CertaintyController(max_samples(2), first_round=2),
        client=recorder.client(),
    )
    result = await outer.ainvoke("q", program_id="composed")
    assert (result.answer, result.samples) == ("7", 2)
    assert len(model._calls) == 6  # 2 outer samples x 3 inner samples
    assert {c["extra_headers"][PROGRAM_ID_HEADER] for c in model._calls} == {"composed"}
    # The tokens of every inner sample are the outer program's.
    assert result.completion_tokens == 6 * 3
    # Only the outer program tells the server it is over, once.
    assert [(m, body) for m, _, body in recorder.requests] == [("DELETE", {})]
    # Inner rounds send no budget of their own: one budget for the whole.
    assert all(BUDGET_HEADER not in c["extra_headers"] for c in model._calls)


async def test_a_refused_sample_does_not_lose_the_ones_still_running() -> None:
    # A budget that covers one request: the server admits the first sample and
    # refuses the second while the first is still generating.
    class OneAdmitted(ScriptedChat):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            if self.calls:
                self.calls += 1
                raise BudgetError("program p has spent its token budget")
            self.calls += 1
            await asyncio.sleep(0.05)  # still running when the refusal arrives
            return await super()._agenerate(*args, **kwargs)

        calls: int = 0

    result = await SelfConsistency(
        OneAdmitted(script=lambda i: ("\\boxed{7}", 0.0)), controller=controller(first=2)
    ).ainvoke("q")
    assert (result.answer, result.samples) == ("7", 1)
    assert result.stop_reason is StopReason.MAX_TOKENS


async def test_confidence_window_weighs_votes_by_trace_confidence() -> None:
    # Three unsure samples say 1, two confident ones say 2. A token's confidence is
    # minus the mean of its top logprobs (here the sampled one only).
    def script(i: int) -> tuple[str, float, list[float]]:
        return ("\\boxed{1}", 0.0, [-0.1] * 4) if i % 2 == 0 else ("\\boxed{2}", 0.0, [-5.0] * 4)

    ctl = CertaintyController(max_samples(5), first_round=5)
    plain = await SelfConsistency(ScriptedChat(script=script), controller=ctl).ainvoke("q")
    weighted = await SelfConsistency(
        ScriptedChat(script=script), controller=ctl, confidence_window=2
    ).ainvoke("q")
    assert (plain.answer, plain.confidences) == ("1", [])
    assert weighted.answer == "2" and weighted.answer_text == "2"
    assert sorted(weighted.confidences) == [0.1, 0.1, 0.1, 5.0, 5.0]


async def test_weighted_consensus_reads_the_live_confidences() -> None:
    def script(i: int) -> tuple[str, float, list[float]]:
        return ("\\boxed{2}", 0.0, [-5.0] * 4) if i < 2 else ("\\boxed{1}", 0.0, [-0.1] * 4)

    ctl = CertaintyController(
        weighted_consensus(0.9, min_samples=4) | max_samples(12), first_round=4, round_size=1
    )
    result = await SelfConsistency(
        ScriptedChat(script=script), controller=ctl, confidence_window=32
    ).ainvoke("q")
    # 2 x 5.0 against 2 x 0.1: a weighted share of 0.98 stops at the first check.
    assert (result.answer, result.samples, result.stop_reason) == ("2", 4, StopReason.CERTAIN)


async def test_confidence_window_without_logprobs_is_a_clear_error() -> None:
    sc = SelfConsistency(always("\\boxed{1}"), confidence_window=32)
    with pytest.raises(InvalidInputError, match="logprobs=True"):
        await sc.ainvoke("q")
    with pytest.raises(InvalidInputError, match="confidence_window"):
        SelfConsistency(always("1"), confidence_window=0)


@pytest.mark.parametrize(("waiting", "first"), [(0, 6), (3, 2), (None, 6)])
async def test_a_load_adaptive_first_round_follows_the_servers_queue(
    waiting: int | None, first: int
) -> None:
    recorder = Recorder(waiting=waiting)  # None: the server has no load route (404)
    model = cycle("1", "2", "3")  # never certain: the program runs to its cap
    ctl = CertaintyController(max_samples(6), first_round=6, round_size=2, busy_first_round=2)
    result = await SelfConsistency(model, controller=ctl, client=recorder.client()).ainvoke("q")
    assert recorder.paths[0] == ("GET", LOAD_PATH)
    assert result.samples == 6
    # The first round's requests all carry no certainty yet.
    assert sum(CERTAINTY_HEADER not in c["extra_headers"] for c in model._calls) == first


def test_busy_first_round_must_be_a_positive_int() -> None:
    with pytest.raises(InvalidInputError, match="busy_first_round must be an int >= 1"):
        CertaintyController(busy_first_round=0)
