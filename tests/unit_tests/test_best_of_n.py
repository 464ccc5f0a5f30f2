"""BestOfN with fake chat models and rewards: early stop, cancellation, rewards, Runnable API."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.outputs import ChatResult
from langchain_core.runnables import RunnableLambda

from dynasor_agents import (
    PROGRESS_EVENT,
    CertaintyController,
    InvalidInputError,
    ProgramStoppedError,
    SelfConsistency,
    StopReason,
    max_samples,
    max_tokens,
    threshold,
)
from dynasor_agents.errors import BudgetExhaustedError
from dynasor_agents.protocol import CERTAINTY_HEADER, PROGRAM_ID_HEADER
from dynasor_agents.strategies._best_of_n import BestOfN
from dynasor_agents.strategies._bon_core import CANDIDATE, ScoreRequest, best_of_n_core
from dynasor_agents.strategies._drive import Await, Cancel, Completion, Emit, Finish, Launch

from .strategy_fakes import Recorder, ScriptedChat


def texts(*items: str, delay: float = 0.0) -> ScriptedChat:
    return ScriptedChat(script=lambda i: (items[i % len(items)], delay, None))


def controller(*, cap: int = 8, first: int = 4, t: float = 0.8) -> CertaintyController:
    return CertaintyController(
        threshold(t, min_samples=1) | max_samples(cap), first_round=first, round_size=first
    )


def table(rewards: dict[str, Any]) -> RunnableLambda[dict[str, str], Any]:
    """A reward Runnable looking each candidate up in ``rewards``."""

    async def look_up(x: dict[str, str]) -> Any:
        return rewards[x["candidate"]]

    return RunnableLambda(look_up)


async def test_a_candidate_clearing_the_threshold_stops_and_cancels_the_rest() -> None:
    model = ScriptedChat(script=lambda i: ("good", 0.0, None) if i == 0 else ("bad", 30.0, None))
    recorder = Recorder()
    bon = BestOfN(
        model,
        reward=table({"good": 0.9, "bad": 0.1}),
        controller=controller(),
        client=recorder.client(),
    )
    result = await asyncio.wait_for(bon.ainvoke("q", program_id="p-1"), timeout=5)

    assert (result.best, result.reward, result.best_index) == ("good", 0.9, 0)
    assert result.stop_reason is StopReason.CERTAIN and result.final
    assert result.samples == 1 and result.rounds == 1 and result.trajectory == [0.9]
    assert model._cancelled == 3
    assert (result.prompt_tokens, result.completion_tokens) == (10, 3)
    assert recorder.requests == [("POST", "/v1/dynasor/programs/p-1/hints", {"stop": True})]


async def test_no_candidate_clearing_the_threshold_runs_to_the_cap() -> None:
    recorder = Recorder()
    model = texts("a", "b", "c", "d")
    bon = BestOfN(
        model,
        reward=table({"a": 0.1, "b": 0.5, "c": 0.3, "d": 0.2}),
        controller=controller(cap=8, first=4),
        client=recorder.client(),
    )
    result = await bon.ainvoke("q", program_id="p-2")

    assert result.stop_reason is StopReason.MAX_SAMPLES
    assert result.samples == 8 and result.rounds == 2 and len(model._calls) == 8
    assert (result.best, result.reward, result.certainty) == ("b", 0.5, 0.5)
    assert result.trajectory == [0.5, 0.5]
    assert sorted(c.reward for c in result.candidates) == [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.5, 0.5]
    assert result.completion_tokens == 8 * 3 and result.reward_tokens == 0
    assert recorder.requests == [("DELETE", "/v1/dynasor/programs/p-2", {})]


async def test_builtin_logprob_signal_scores_candidates() -> None:
    logprobs = [[-2.0, -1.0], [-0.01, -0.03], [-0.5]]
    model = ScriptedChat(script=lambda i: (f"c{i}", 0.01 * i, logprobs[i % 3]))
    bon = BestOfN(model, controller=controller(first=3, t=0.95))
    result = await bon.ainvoke("q")

    assert result.stop_reason is StopReason.CERTAIN
    assert result.best == "c1" and result.reward == pytest.approx(math.exp(-0.02))
    assert result.candidates[0].reward == pytest.approx(math.exp(-1.5))


async def test_builtin_signal_without_logprobs_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="logprobs") as raised:
        await BestOfN(texts("x")).ainvoke("q", program_id="p-nolp")
    assert raised.value.program_id == "p-nolp"


async def test_reward_range_normalizes_raw_rewards() -> None:
    bon = BestOfN(
        texts("a", "b"),
        reward=table({"a": 3, "b": "7"}),
        reward_range=(0, 10),
        controller=controller(cap=2, first=2, t=0.9),
    )
    result = await bon.ainvoke("q")
    assert sorted(c.reward for c in result.candidates) == [0.3, 0.7]
    assert result.best == "b" and result.stop_reason is StopReason.MAX_SAMPLES


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (math.nan, "nan"),
        (1.5, "1.5"),
        ("great", "'great'"),
        (None, "None"),
        ({"score": 1}, "{'score': 1}"),
        (True, "True"),
    ],
)
async def test_bad_rewards_are_clear_errors_naming_the_value(bad: Any, shown: str) -> None:
    recorder = Recorder()
    bon = BestOfN(texts("a"), reward=table({"a": bad}), client=recorder.client())
    with pytest.raises(InvalidInputError) as raised:
        await bon.ainvoke("q", program_id="p-bad")
    assert raised.value.program_id == "p-bad" and shown in str(raised.value)
    assert recorder.requests[-1] == ("POST", "/v1/dynasor/programs/p-bad/hints", {"stop": True})


async def test_an_llm_judge_is_called_with_the_program_headers() -> None:
    model = texts("Paris", "Lyon")
    judge = ScriptedChat(
        script=lambda i: ("Score: 9" if i == 0 else "2 out of 10", 0.0, None),
    )
    bon = BestOfN(
        model, reward=judge, controller=controller(cap=2, first=2, t=0.95), reward_max_tokens=4
    )
    result = await bon.ainvoke("Capital of France?", program_id="judged")

    assert sorted(c.reward for c in result.candidates) == [0.2, 0.9]
    assert result.samples == 2 and result.reward_tokens == 2 * 13
    assert result.completion_tokens == 4 * 3  # two candidates and two judge replies
    assert {c["extra_headers"][PROGRAM_ID_HEADER] for c in judge._calls} == {"judged"}
    assert [c["max_tokens"] for c in judge._calls] == [4, 4]


async def test_a_judge_reply_without_a_grade_scores_lowest_and_the_program_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    judge = ScriptedChat(script=lambda i: ("I think it is fine." if i == 0 else "7", 0.0, None))
    bon = BestOfN(texts("Paris", "Lyon"), reward=judge, controller=controller(cap=2, first=2))
    result = await bon.ainvoke("Capital of France?", program_id="ungraded")
    assert sorted(c.reward for c in result.candidates) == [0.0, 0.7]
    assert "judge gave no number" in caplog.text and "ungraded" in caplog.text


async def test_requests_carry_the_program_id_and_certainty_after_the_first_round() -> None:
    model = texts("a", "b")
    bon = BestOfN(model, reward=table({"a": 0.1, "b": 0.2}), controller=controller(cap=4, first=2))
    await bon.ainvoke("q", program_id="hdr")
    headers = [c["extra_headers"] for c in model._calls]
    assert all(h[PROGRAM_ID_HEADER] == "hdr" for h in headers)
    assert CERTAINTY_HEADER not in headers[0] and headers[2][CERTAINTY_HEADER] == "0.2"


async def test_scoring_and_candidates_count_against_the_token_budget() -> None:
    ctl = CertaintyController(max_tokens(12) | max_samples(50), first_round=2, round_size=2)
    judge = ScriptedChat(script=lambda i: ("5", 0.0, None))
    result = await BestOfN(texts("a", "b"), reward=judge, controller=ctl).ainvoke("q")
    assert result.stop_reason is StopReason.MAX_TOKENS
    assert result.completion_tokens >= 12 and result.reward_tokens > 0


def test_core_counts_stragglers_returned_by_cancel() -> None:
    core = best_of_n_core(controller(first=3, t=0.5), program_id="c")
    assert isinstance(next(core), Launch)
    assert isinstance(core.send(None), Await)
    score = core.send(Completion("a", 1, 2, tag=CANDIDATE))
    assert isinstance(score, Launch) and score.request == ScoreRequest("a", 0)
    core.send(None)
    assert isinstance(core.send(Completion("0.6", 5, 1, tag=("score", 0))), Cancel)
    # One candidate had finished (never scored) when the program stopped.
    assert isinstance(core.send([Completion("b", 1, 2, tag=CANDIDATE)]), Emit)
    assert isinstance(core.send(None), Finish)
    with pytest.raises(StopIteration) as done:
        core.send(None)
    result = done.value.value
    assert (result.samples, result.unscored, result.completion_tokens) == (1, 1, 5)
    assert (result.prompt_tokens, result.reward_tokens) == (7, 6)


def test_stream_yields_a_snapshot_per_round_then_the_result() -> None:
    bon = BestOfN(
        texts("a", "b", "c"),
        reward=table({"a": 0.1, "b": 0.2, "c": 0.3}),
        controller=controller(cap=9, first=3),
    )
    chunks = list(bon.stream("q"))
    assert [c.final for c in chunks] == [False, False, False, True]
    assert [c.samples for c in chunks] == [3, 6, 9, 9]
    assert chunks[-1].stop_reason is StopReason.MAX_SAMPLES
    assert all(c.stop_reason is None for c in chunks[:-1])


async def test_astream_events_show_progress_events() -> None:
    bon = BestOfN(
        texts("a", "b"), reward=table({"a": 0.1, "b": 0.2}), controller=controller(cap=4, first=2)
    )
    events = [e async for e in bon.astream_events("q", version="v2")]
    progress = [e for e in events if e["event"] == "on_custom_event"]
    assert [e["name"] for e in progress] == [PROGRESS_EVENT, PROGRESS_EVENT]
    assert [e["data"]["samples"] for e in progress] == [2, 4]


def test_sync_invoke_and_batch() -> None:
    reward = RunnableLambda(lambda x: 0.9 if "4" in x["candidate"] else 0.1)
    model = FakeListChatModel(responses=["It is 4.", "It is 5."])
    bon = BestOfN(model, reward=reward, controller=controller(cap=4, first=2))
    assert bon.invoke({"question": "2 + 2?"}).best == "It is 4."
    results = bon.batch(["a", "b", "c"])
    assert [r.reward for r in results] == [0.9, 0.9, 0.9]
    assert len({r.program_id for r in results}) == 3


async def test_best_of_n_composes_under_self_consistency() -> None:
    model = texts("\\boxed{7}", "\\boxed{9}")
    inner = BestOfN(
        model,
        reward=table({"\\boxed{7}": 0.6, "\\boxed{9}": 0.4}),
        controller=CertaintyController(max_samples(2), first_round=2),
    )
    recorder = Recorder()
    outer = SelfConsistency(
        inner,
        controller=CertaintyController(max_samples(2), first_round=2),
        client=recorder.client(),
    )
    result = await outer.ainvoke("q", program_id="composed")
    assert (result.answer, result.samples) == ("7", 2)
    assert len(model._calls) == 4
    assert {c["extra_headers"][PROGRAM_ID_HEADER] for c in model._calls} == {"composed"}
    assert result.completion_tokens == 4 * 3
    assert [(m, body) for m, _, body in recorder.requests] == [("DELETE", {})]


async def test_server_stop_before_any_score_raises_typed_error() -> None:
    class StoppedError(Exception):
        code = "program_stopped"

    class Refused(ScriptedChat):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            raise StoppedError("program p is stopped")

    bon = BestOfN(Refused(script=lambda i: ("", 0, None)), reward=table({}))
    with pytest.raises(ProgramStoppedError) as raised:
        await bon.ainvoke("q", program_id="p-stop")
    assert raised.value.program_id == "p-stop"


def test_bad_configuration_is_a_clear_error() -> None:
    model = texts("a")
    with pytest.raises(InvalidInputError, match="model must be a LangChain Runnable"):
        BestOfN("gpt")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="reward must be a LangChain Runnable"):
        BestOfN(model, reward=lambda x: 1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="reward_range"):
        BestOfN(model, reward=table({}), reward_range=(1, 0))
    with pytest.raises(InvalidInputError, match="reward_range"):
        BestOfN(model, reward=table({}), reward_range=(0, math.inf))
    with pytest.raises(InvalidInputError, match="max_tokens"):
        BestOfN(model, max_tokens=0)
    with pytest.raises(InvalidInputError, match="reward_max_tokens"):
        BestOfN(model, reward_max_tokens=0)
    with pytest.raises(InvalidInputError, match="controller"):
        BestOfN(model, controller=threshold(0.5))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="input"):
        BestOfN(model).invoke("  ")


def test_a_refused_candidate_does_not_lose_the_scores_still_running() -> None:
    core = best_of_n_core(controller(first=2, t=0.99), program_id="c")
    assert isinstance(next(core), Launch)
    assert isinstance(core.send(None), Await)
    score = core.send(Completion("a", 1, 2, tag=CANDIDATE))
    assert isinstance(score, Launch) and score.request == ScoreRequest("a", 0)
    assert isinstance(core.send(None), Await)
    # The second candidate is refused (budget spent) while the first one's score runs.
    refused = BudgetExhaustedError("program c has spent its token budget", status_code=429)
    assert isinstance(core.throw(refused), Await)
    assert isinstance(core.send(Completion("0.6", 5, 1, tag=("score", 0))), Cancel)
    assert isinstance(core.send([]), Emit)
    assert isinstance(core.send(None), Finish)
    with pytest.raises(StopIteration) as done:
        core.send(None)
    result = done.value.value
    assert (result.samples, result.stop_reason) == (1, StopReason.MAX_TOKENS)


def test_a_refusal_before_any_score_raises_once_nothing_is_running() -> None:
    core = best_of_n_core(controller(first=2, t=0.99), program_id="c")
    next(core)
    core.send(None)
    refused = BudgetExhaustedError("program c has spent its token budget", status_code=429)
    assert isinstance(core.throw(refused), Await)  # the other candidate still runs
    with pytest.raises(BudgetExhaustedError):
        core.throw(refused)
