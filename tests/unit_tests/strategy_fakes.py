"""Fakes the strategy tests share: a scripted chat model and a recording control server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from dynasor_agents import DynasorClient
from dynasor_agents.protocol import LOAD_PATH

Script = Callable[[int], tuple[str, float] | tuple[str, float, list[float] | None]]


class AsyncOnlyChat(BaseChatModel):
    """Base of the test chat models: strategies only call the async path."""

    @property
    def _llm_type(self) -> str:
        return "fake"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError("the strategies only use the async path")


class ScriptedChat(AsyncOnlyChat):
    """Answers ``script(call_index)`` -> ``(text, delay)`` or ``(text, delay, logprobs)``.

    Records every call's kwargs, how many calls were cancelled and the peak of
    concurrent calls. Each answer reports 10 prompt and 3 completion tokens;
    ``logprobs`` (per-token floats) go into ``response_metadata`` in the chat
    API's format, as ``ChatOpenAI(logprobs=True, top_logprobs=1)`` puts them.
    """

    script: Script
    _calls: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    _cancelled: int = PrivateAttr(default=0)
    _active: int = PrivateAttr(default=0)
    _peak: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        index = len(self._calls)
        self._calls.append(kwargs)
        text, delay, *rest = self.script(index)
        logprobs = rest[0] if rest else None
        self._active += 1
        self._peak = max(self._peak, self._active)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self._cancelled += 1
            raise
        finally:
            self._active -= 1
        metadata: dict[str, Any] = {}
        if logprobs is not None:
            metadata["logprobs"] = {
                "content": [
                    {"token": "t", "logprob": lp, "top_logprobs": [{"token": "t", "logprob": lp}]}
                    for lp in logprobs
                ]
            }
        message = AIMessage(
            content=text,
            usage_metadata={"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
            response_metadata=metadata,
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


class Recorder:
    """An httpx MockTransport that records control requests and answers like the server."""

    def __init__(self, waiting: int | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.waiting = waiting  # what GET /v1/dynasor/load reports (None: no such route)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.requests.append((request.method, request.url.path, body))
        if request.url.path == LOAD_PATH:
            if self.waiting is None:
                return httpx.Response(404, json={"detail": "Not Found"})
            return httpx.Response(200, json={"waiting": self.waiting, "running": 8})
        pid = request.url.path.split("/")[4]
        state = "stopped" if body.get("stop") else "finished"
        return httpx.Response(
            200, json={"id": pid, "state": state, "created": 1.0, "last_activity": 1.0}
        )

    @property
    def paths(self) -> list[tuple[str, str]]:
        """``(method, path)`` of each recorded request."""
        return [(method, path) for method, path, _ in self.requests]

    def client(self) -> DynasorClient:
        return DynasorClient("http://dynasor.test/v1", transport=httpx.MockTransport(self))
