"""CompletionsModel: raw continuation requests with program headers, usage, typed errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from dynasor_agents.errors import BudgetExhaustedError, InvalidInputError
from dynasor_agents.protocol import PROGRAM_ID_HEADER
from dynasor_agents.strategies._completions import CompletionsModel, TextRequest
from dynasor_agents.strategies._drive import SampleCall


def model_for(handler: Any) -> CompletionsModel:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    client = openai.AsyncOpenAI(
        base_url="http://vllm.test/v1", api_key="k", http_client=http, max_retries=0
    )
    return CompletionsModel(client, "smol", temperature=0.3)


async def test_a_text_request_carries_headers_and_returns_usage() -> None:
    seen: list[tuple[dict[str, Any], httpx.Headers]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((json.loads(request.content), request.headers))
        return httpx.Response(
            200,
            json={
                "id": "c",
                "object": "text_completion",
                "created": 1,
                "model": "smol",
                "choices": [
                    {
                        "index": 0,
                        "text": " 4",
                        "finish_reason": "stop",
                        "logprobs": {
                            "tokens": [" ", "4"],
                            "token_logprobs": [-0.5, -0.25],
                            "top_logprobs": [{" ": -0.5}, {"4": -0.25, "5": -2.0}],
                            "text_offset": [0, 1],
                        },
                    }
                ],
                "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
            },
        )

    call = SampleCall(
        TextRequest("2+2=", stop=["\n"], extra={"ignore_eos": False}), 16, {PROGRAM_ID_HEADER: "p"}
    )
    done = await model_for(handler)(call)
    assert (done.text, done.prompt_tokens, done.completion_tokens) == (" 4", 9, 2)
    assert done.finish_reason == "stop"
    assert done.logprobs == [-0.5, -0.25]  # the sampled tokens' own, not the top-k maps
    body, headers = seen[0]
    assert body["prompt"] == "2+2=" and body["max_tokens"] == 16 and body["stop"] == ["\n"]
    assert body["temperature"] == 0.3 and body["ignore_eos"] is False
    assert headers[PROGRAM_ID_HEADER] == "p"


async def test_server_codes_become_typed_errors_and_bad_requests_are_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = {"message": "spent", "type": "x", "param": None, "code": "budget_exhausted"}
        return httpx.Response(429, json={"error": error}, headers={"x-should-retry": "false"})

    model = model_for(handler)
    with pytest.raises(BudgetExhaustedError) as raised:
        await model(SampleCall(TextRequest("x"), 4, {PROGRAM_ID_HEADER: "p9"}))
    assert raised.value.program_id == "p9" and raised.value.status_code == 429
    with pytest.raises(InvalidInputError, match="TextRequest"):
        await model(SampleCall("just a string", 4, {}))
