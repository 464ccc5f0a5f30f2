"""ProbedChainOfThought (Dynasor-CoT) with scripted samplers: probing, stopping, streaming."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import httpx
import openai
import pytest

from dynasor_agents import (
    CertaintyController,
    InvalidInputError,
    ProgramStoppedError,
    SelfConsistency,
    StopReason,
)
from dynasor_agents.protocol import PROGRAM_ID_HEADER
from dynasor_agents.strategies._completions import CompletionsModel, TextRequest
from dynasor_agents.strategies._cot_core import (
    CHUNK_TAG,
    ProbedChainOfThoughtResult,
    ProbeTag,
    probed_cot_core,
)
from dynasor_agents.strategies._cot_probes import PROBE_SUFFIXES, THINK_END, probe_suffix_for
from dynasor_agents.strategies._drive import (
    Await,
    Cancel,
    Completion,
    Emit,
    Finish,
    Launch,
    SampleCall,
)
from dynasor_agents.strategies._probed_cot import EFFORT_PRESETS, ProbedChainOfThought

from .strategy_fakes import Recorder

DYNASOR = PROBE_SUFFIXES["dynasor"]


class Scripted:
    """A fake CompletionsModel: chunk ``i`` and probe ``j`` answer from their scripts.

    A chunk uses all the tokens it may (``length``) unless its script says
    ``(text, "stop")``; probes are the requests at temperature 0. Records every
    call, how many were cancelled and the peak of concurrent requests.
    """

    def __init__(
        self,
        chunks: Sequence[str | tuple[str, str]] = (" thinking.",),
        probes: Sequence[str] = ("7}",),
        *,
        chunk_delay: float = 0.0,
        probe_delay: float = 0.0,
        fail_chunk: int | None = None,
    ) -> None:
        self.chunks, self.probes = list(chunks), list(probes)
        self.chunk_delay, self.probe_delay = chunk_delay, probe_delay
        self.fail_chunk = fail_chunk
        self.calls: list[SampleCall] = []
        self.chunk_calls: list[SampleCall] = []
        self.probe_calls: list[SampleCall] = []
        self.cancelled = self.active = self.peak = 0

    async def __call__(self, call: SampleCall) -> Completion:
        assert isinstance(call.request, TextRequest)
        self.calls.append(call)
        is_probe = call.request.temperature == 0.0
        mine = self.probe_calls if is_probe else self.chunk_calls
        index = len(mine)
        mine.append(call)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.probe_delay if is_probe else self.chunk_delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
        if is_probe:
            text = self.probes[min(index, len(self.probes) - 1)]
            return Completion(text, 50, 3, finish_reason="length")
        if index == self.fail_chunk:
            raise ProgramStoppedError("stopped", program_id="x")
        script = self.chunks[min(index, len(self.chunks) - 1)]
        text, reason = script if isinstance(script, tuple) else (script, "length")
        used = call.max_tokens or 0 if reason == "length" else 5
        return Completion(text, 40, used, finish_reason=reason)


def cot(model: Any, **kwargs: Any) -> ProbedChainOfThought:
    kwargs.setdefault("probe", "dynasor")
    return ProbedChainOfThought(model, **kwargs)


# -- stopping --------------------------------------------------------------------------


async def test_stops_once_window_probes_agree_and_cancels_the_running_chunk() -> None:
    model = Scripted(probes=["7}"], chunk_delay=0.05, probe_delay=0.005)
    recorder = Recorder()
    pcot = cot(model, window=2, chunk_tokens=100, max_tokens=1000, client=recorder.client())
    result = await pcot.ainvoke("q", program_id="agree")

    assert (result.answer, result.stop_reason, result.certainty) == ("7", StopReason.CERTAIN, 1.0)
    assert result.probe_answers == ["7", "7"] and result.chunks == 2
    assert result.reasoning_tokens == 200 and result.probe_tokens == 6
    assert result.tokens_saved_estimate == 800 and not result.ended_naturally
    assert model.cancelled == 1 and len(model.chunk_calls) == 3  # the third chunk was running
    assert result.completion_tokens == 206 and result.prompt_tokens == 2 * 40 + 2 * 50
    assert recorder.paths == [("POST", "/v1/dynasor/programs/agree/hints")]  # stop
    assert result.trajectory == [0.5, 1.0] and result.final


async def test_a_hedging_probe_prevents_stopping() -> None:
    model = Scripted(probes=["7}", "7} Wait, maybe", "7}", "7}"])
    result = await cot(model, window=2, chunk_tokens=10, max_tokens=1000).ainvoke("q")
    assert [p.hedged for p in result.probes] == [False, True, False, False]
    assert result.probe_answers == ["7"] * 4 and result.stop_reason is StopReason.CERTAIN


@pytest.mark.parametrize("empty", ["}", "7 and then", "  } ok"])
async def test_an_empty_or_unfinished_probe_prevents_stopping(empty: str) -> None:
    model = Scripted(probes=["7}", empty, "7}", "7}"])
    result = await cot(model, window=2, chunk_tokens=10, max_tokens=1000).ainvoke("q")
    assert result.probe_answers == ["7", None, "7", "7"]
    assert result.stop_reason is StopReason.CERTAIN


async def test_a_natural_end_takes_the_answer_from_the_text() -> None:
    model = Scripted(chunks=[" a", (" so \\boxed{5}", "stop"), " more"], probes=["1}", "2}"])
    recorder = Recorder()
    pcot = cot(model, window=2, chunk_tokens=10, max_tokens=1000, client=recorder.client())
    result = await pcot.ainvoke("q", program_id="nat")
    assert result.answer == "5" and result.ended_naturally
    assert result.stop_reason is StopReason.FINISHED and result.tokens_saved_estimate == 0
    assert result.reasoning == " a so \\boxed{5}" and result.chunks == 2
    assert recorder.paths == [("DELETE", "/v1/dynasor/programs/nat")]  # finish, not stop


async def test_a_natural_end_without_an_answer_forces_one_with_a_probe() -> None:
    model = Scripted(chunks=[("I am done.", "stop")], probes=["9}"])
    result = await cot(model, window=2).ainvoke("q")
    assert result.answer == "9" and result.ended_naturally and result.probe_answers == ["9"]
    assert model.probe_calls[0].request.prompt.endswith("I am done." + DYNASOR)


async def test_the_token_cap_stops_with_the_last_probe_answer() -> None:
    model = Scripted(probes=["1}", "2}", "3}"])
    result = await cot(model, window=3, chunk_tokens=100, max_tokens=250).ainvoke("q")
    assert result.stop_reason is StopReason.MAX_TOKENS
    assert [c.max_tokens for c in model.chunk_calls] == [100, 100, 50]
    assert result.reasoning_tokens == 250 and result.tokens_saved_estimate == 0
    assert result.answer == "3" and [p.at_tokens for p in result.probes] == [100, 200, 250]


async def test_a_stopped_program_keeps_the_latest_probe_answer() -> None:
    model = Scripted(probes=["1}", "2}"], fail_chunk=2)
    result = await cot(model, window=3, chunk_tokens=10).ainvoke("q")
    assert result.stop_reason is StopReason.SERVER_STOPPED and result.answer == "2"
    with pytest.raises(ProgramStoppedError):
        await cot(Scripted(fail_chunk=0)).ainvoke("q")


# -- probes ----------------------------------------------------------------------------


async def test_think_suffix_is_not_added_twice_once_thinking_closed() -> None:
    model = Scripted(
        chunks=["<think>hmm", f" ok{THINK_END}\nSo", " it is"], probes=["1}", "2}", "3}"]
    )
    pcot = ProbedChainOfThought(model, window=3, chunk_tokens=10, max_tokens=30)
    await pcot.ainvoke("q")
    prompts = [c.request.prompt for c in model.probe_calls]
    assert prompts[0].endswith("<think>hmm\n</think>\n\nThe final answer is \\boxed{")
    assert all(p.count(THINK_END) == 1 for p in prompts)
    assert prompts[1].endswith(f"{THINK_END}\nSo\nThe final answer is \\boxed{{")
    assert probe_suffix_for("plain", "auto") == DYNASOR
    assert probe_suffix_for("x", "ANSWER: ") == "ANSWER: "  # a literal suffix


async def test_probes_run_alongside_the_next_chunk() -> None:
    model = Scripted(probes=["1}", "2}", "3}"], chunk_delay=0.01, probe_delay=0.005)
    await cot(model, window=3, chunk_tokens=10, max_tokens=30).ainvoke("q")
    assert model.peak >= 2
    probe, chunk = model.probe_calls[0], model.chunk_calls[1]
    assert probe.request.prompt == chunk.request.prompt + DYNASOR  # same prefix
    assert (probe.request.temperature, probe.max_tokens) == (0.0, 32)


def test_core_launches_probe_and_next_chunk_before_waiting_in_any_finish_order() -> None:
    core = probed_cot_core(
        prompt_text="P", program_id="c", chunk_tokens=4, window=2, probe="dynasor"
    )
    first_chunk = next(core)
    assert isinstance(first_chunk, Launch) and first_chunk.tag == CHUNK_TAG
    assert core.send(None) == Await()

    def after_chunk(text: str) -> ProbeTag:
        probe = core.send(Completion(text, 1, 4, "length", tag=CHUNK_TAG))
        chunk = core.send(None)
        assert isinstance(probe, Launch) and isinstance(chunk, Launch) and chunk.tag == CHUNK_TAG
        assert isinstance(core.send(None), Emit) and core.send(None) == Await()
        return probe.tag  # type: ignore[no-any-return]

    first = after_chunk(" a")
    second = after_chunk(" b")  # the next chunk finished before the first probe
    after_chunk(" c")
    # The second probe answers before the first: no window of two finished yet.
    assert isinstance(core.send(Completion("5}", 1, 1, tag=second)), Emit)
    assert core.send(None) == Await()
    assert core.send(Completion("5}", 1, 1, tag=first)) == Cancel()  # now 0 and 1 agree
    straggler = Completion(" d", 1, 4, "length", tag=CHUNK_TAG)
    assert core.send([straggler]) == Finish(stop=True)
    with pytest.raises(StopIteration) as done:
        core.send(None)
    result: ProbedChainOfThoughtResult = done.value.value
    assert result.answer == "5" and result.reasoning == " a b c d" and result.chunks == 4
    assert [p.index for p in result.probes] == [0, 1]  # the cancelled third is dropped


# -- the Runnable -----------------------------------------------------------------------


def test_effort_presets_and_explicit_overrides() -> None:
    model = Scripted()
    assert [
        (cot(model, effort=e).window, cot(model, effort=e).chunk_tokens) for e in EFFORT_PRESETS
    ] == [
        (4, 512),
        (3, 256),
        (2, 128),
    ]
    custom = cot(model, effort="mild", chunk_tokens=64)
    assert (custom.window, custom.chunk_tokens) == (4, 64)
    custom.invoke("q")
    assert model.chunk_calls[0].max_tokens == 64


@pytest.mark.parametrize(
    "kwargs",
    [
        {"effort": "extreme"},
        {"chunk_tokens": 0},
        {"window": 0},
        {"max_tokens": -1},
        {"probe_tokens": 0},
        {"probe": ""},
        {"hedges": "wait"},
        {"window": True},
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        ProbedChainOfThought(Scripted(), **kwargs)


@pytest.mark.parametrize("bad", ["", "   ", {"q": "x"}, {"question": 3}, [], 42])
def test_bad_input_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidInputError):
        cot(Scripted()).invoke(bad)
    with pytest.raises(InvalidInputError):
        ProbedChainOfThought("not a model")  # type: ignore[arg-type]


async def test_inputs_become_a_chatml_prompt() -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    for value in ("2+2?", {"question": "2+2?"}, [SystemMessage("s"), HumanMessage("2+2?")]):
        model = Scripted()
        await cot(model, window=1).ainvoke(value)
        assert model.chunk_calls[0].request.prompt == (
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        )


async def test_stream_yields_reasoning_deltas_without_probes_then_the_answer() -> None:
    model = Scripted(chunks=[" step one.", " step two.", " step three."], probes=["1}", "4}", "4}"])
    steps = [s async for s in cot(model, window=2, chunk_tokens=10).astream("q")]
    final = steps[-1]
    assert final.final and final.answer == "4" and all(not s.final for s in steps[:-1])
    assert "".join(s.delta for s in steps) == final.reasoning
    assert final.reasoning.startswith(" step one. step two.")
    assert not any("Final Answer" in s.delta or "}" in s.delta for s in steps)
    assert steps[0].delta == " step one." and steps[0].answer is None
    sync_steps = list(cot(Scripted(), window=1).stream("q"))
    assert sync_steps[-1].answer == "7"


async def test_composes_under_self_consistency_in_one_program() -> None:
    model = Scripted(probes=["7}"])
    inner = cot(model, window=2, chunk_tokens=10)
    sc = SelfConsistency(inner, controller=CertaintyController(first_round=3))
    result = await sc.ainvoke("q", program_id="sc-cot")
    assert result.answer == "7" and result.samples == 3
    assert {c.headers[PROGRAM_ID_HEADER] for c in model.calls} == {"sc-cot"}
    assert result.completion_tokens >= 3 * (20 + 6)  # each sample's chunks and probes
    assert inner.as_completion(await inner.ainvoke("q")).text == "The answer is \\boxed{7}."


async def test_every_request_through_openai_carries_the_program_id() -> None:
    seen: list[tuple[dict[str, Any], httpx.Headers]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((body, request.headers))
        probe = body["temperature"] == 0.0
        text = "42}" if probe else " six sevens are 42."
        choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
        used = 2 if probe else body["max_tokens"]
        return httpx.Response(
            200,
            json={
                "id": "c",
                "object": "text_completion",
                "created": 1,
                "model": "smol",
                "choices": [choice],
                "usage": {"prompt_tokens": 9, "completion_tokens": used, "total_tokens": 9 + used},
            },
        )

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = openai.AsyncOpenAI(
        base_url="http://vllm.test/v1", api_key="k", http_client=http, max_retries=0
    )
    pcot = ProbedChainOfThought(CompletionsModel(client, "smol"), effort="aggressive")
    result = await pcot.ainvoke("6*7?", program_id="pcot-1")
    assert result.answer == "42" and result.stop_reason is StopReason.CERTAIN
    assert len(seen) >= 4 and all(h[PROGRAM_ID_HEADER] == "pcot-1" for _, h in seen)
    chunks = [b for b, _ in seen if b["temperature"] != 0.0]
    assert chunks[1]["prompt"] == chunks[0]["prompt"] + " six sevens are 42."
    assert result.tokens_saved_estimate > 0
