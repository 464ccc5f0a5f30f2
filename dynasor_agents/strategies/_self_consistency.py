"""``SelfConsistency``: the self-consistency core as a LangChain Runnable.

Example (a fake chat model that always answers 42; the program stops after the
first detect step because every sample agrees):

    >>> from langchain_core.language_models import FakeListChatModel
    >>> model = FakeListChatModel(responses=["The answer is 42."])
    >>> sc = SelfConsistency(model, controller=CertaintyController(first_round=4))
    >>> result = sc.invoke("What is six times seven?")
    >>> result.answer, result.samples, result.stop_reason.value
    ('42', 4, 'certain')
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, adispatch_custom_event
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import BasePromptTemplate, ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config

from dynasor_agents._sync import LoopThread, default_loop
from dynasor_agents.certainty import AnswerExtractor, extract_answer
from dynasor_agents.controller import CertaintyController
from dynasor_agents.errors import InvalidInputError
from dynasor_agents.program import DynasorClient, Program, typed_error
from dynasor_agents.strategies._actions import Completion, SampleCall, drive
from dynasor_agents.strategies._sc_core import SelfConsistencyResult, self_consistency_core

__all__ = ["DEFAULT_PROMPT", "PROGRESS_EVENT", "SelfConsistency", "SelfConsistencyInput"]

SelfConsistencyInput = LanguageModelInput | dict[str, Any]

PROGRESS_EVENT = "dynasor_progress"
"""Name of the custom callback event each detect step dispatches."""

DEFAULT_PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Solve the problem step by step. Put the final answer in \\boxed{{}}."),
        ("human", "{question}"),
    ]
)
"""Formats ``dict`` inputs (``{"question": ...}``) when no ``prompt`` is given."""


def _message_text(message: Any) -> str:
    if isinstance(message, BaseMessage):
        return str(message.text)
    return str(message)


def _usage(message: Any) -> tuple[int, int]:
    usage = getattr(message, "usage_metadata", None) or {}
    return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))


class SelfConsistency(Runnable[SelfConsistencyInput, SelfConsistencyResult]):
    """Self-consistency that stops once Certaindex says the answer is settled.

    Each sample is one request to ``model`` carrying the program's headers
    (``extra_headers``, which ``ChatOpenAI`` forwards), so a Dynasor-enabled vLLM
    attributes, schedules and can abort it. Samples the program no longer needs
    are cancelled, which makes vLLM abort them in the engine.

    Args:
        model: A chat model (e.g. ``ChatOpenAI`` pointed at vLLM with a sampling
            temperature) or any Runnable from messages to a message.
        controller: Stop/continue policy (default: ``threshold(0.8) |
            max_samples(20)``, first round 5, then rounds of 5).
        extractor: Pulls the final answer from a sample's text.
        prompt: Formats ``dict`` inputs (default :data:`DEFAULT_PROMPT`).
        client: Sends hints and stop to the server; without one the program
            still runs (e.g. against a plain OpenAI-compatible server).
        max_tokens: Cap on each sample's completion tokens.
        program_ids: Makes the id of each new program (default: uuid4).
        name: The Runnable's name in traces.
        loop: Where sync methods run the async core (default: one loop per
            process, see :mod:`dynasor_agents._sync`).

    Input: a string, a list of messages, a ``PromptValue`` (so ``prompt | sc``
    works) or a dict formatted by ``prompt``. Output: a
    :class:`SelfConsistencyResult`. ``stream`` yields a snapshot after each
    detect step and then the final result. Pass ``program_id=...`` to
    ``invoke`` to name the program.
    """

    def __init__(
        self,
        model: Runnable[LanguageModelInput, Any],
        *,
        controller: CertaintyController | None = None,
        extractor: AnswerExtractor = extract_answer,
        prompt: BasePromptTemplate[Any] | None = None,
        client: DynasorClient | None = None,
        max_tokens: int | None = None,
        program_ids: Callable[[], str | None] = lambda: None,
        name: str | None = None,
        loop: LoopThread | None = None,
    ) -> None:
        if not isinstance(model, Runnable):
            raise InvalidInputError(f"model must be a LangChain Runnable, got {model!r}")
        if max_tokens is not None and max_tokens < 1:
            raise InvalidInputError(f"max_tokens must be >= 1, got {max_tokens!r}")
        self.model = model
        self.controller = controller or CertaintyController()
        self.extractor = extractor
        self.prompt = prompt or DEFAULT_PROMPT
        self.client = client
        self.max_tokens = max_tokens
        self.program_ids = program_ids
        self.name = name or "SelfConsistency"
        self._loop = loop or default_loop()

    # -- the one async core -------------------------------------------------------

    async def _prepare(self, value: SelfConsistencyInput, config: RunnableConfig) -> Any:
        if isinstance(value, dict):
            return await self.prompt.ainvoke(value, config)
        if isinstance(value, str | PromptValue):
            if isinstance(value, str) and not value.strip():
                raise InvalidInputError("input is an empty string")
            return value
        if isinstance(value, Sequence) and value:
            return value
        raise InvalidInputError(
            "input must be a non-empty string, a list of messages, a PromptValue or a "
            f"dict for the prompt template; got {type(value).__name__}"
        )

    async def _run(
        self,
        value: SelfConsistencyInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        *,
        program_id: str | None = None,
        on_snapshot: Callable[[SelfConsistencyResult], Any] | None = None,
    ) -> SelfConsistencyResult:
        model_input = await self._prepare(value, config)
        program = Program(program_id or self.program_ids(), client=self.client)
        child = patch_config(config, callbacks=run_manager.get_child())

        async def sample(call: SampleCall) -> Completion:
            kwargs: dict[str, Any] = {"extra_headers": call.headers}
            if call.max_tokens is not None:
                kwargs["max_tokens"] = call.max_tokens
            try:
                message = await self.model.ainvoke(model_input, child, **kwargs)
            except Exception as exc:
                typed = typed_error(exc, program.id)
                if typed is not None:
                    raise typed from exc
                raise
            return Completion(_message_text(message), *_usage(message))

        async def emit(snapshot: SelfConsistencyResult) -> None:
            await adispatch_custom_event(PROGRESS_EVENT, snapshot.model_dump(), config=child)
            if on_snapshot is not None:
                await on_snapshot(snapshot)

        core = self_consistency_core(
            self.controller,
            program_id=program.id,
            extractor=self.extractor,
            max_tokens=self.max_tokens,
        )
        return await drive(core, sampler=sample, program=program, emit=emit)

    async def ainvoke(
        self, input: SelfConsistencyInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> SelfConsistencyResult:
        """Run one program; ``program_id=`` names it."""
        return await self._acall_with_config(self._run, input, config, **kwargs)

    async def astream(
        self,
        input: SelfConsistencyInput,
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> AsyncIterator[SelfConsistencyResult]:
        """Yield a snapshot after each detect step, then the final result."""

        async def one() -> AsyncIterator[SelfConsistencyInput]:
            yield input

        async for item in self._atransform_stream_with_config(
            one(), self._snapshots, config, **kwargs
        ):
            yield item

    async def _snapshots(
        self,
        inputs: AsyncIterator[SelfConsistencyInput],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[SelfConsistencyResult]:
        queue: asyncio.Queue[SelfConsistencyResult] = asyncio.Queue()
        async for value in inputs:
            task = asyncio.ensure_future(
                self._run(value, run_manager, config, on_snapshot=queue.put, **kwargs)
            )
            try:
                while not task.done() or not queue.empty():
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield getter.result()
                    else:
                        getter.cancel()
                yield task.result()
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    # -- sync methods call the async path --------------------------------------------

    def invoke(
        self, input: SelfConsistencyInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> SelfConsistencyResult:
        """Run one program (sync; runs :meth:`ainvoke` on a helper loop)."""
        return self._loop.run(self.ainvoke(input, config, **kwargs))

    def batch(
        self,
        inputs: list[SelfConsistencyInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[SelfConsistencyResult]:
        """Run many programs concurrently (``max_concurrency`` in config applies)."""
        return self._loop.run(
            self.abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        )

    def stream(
        self,
        input: SelfConsistencyInput,
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> Iterator[SelfConsistencyResult]:
        """Sync :meth:`astream`."""
        yield from self._loop.iterate(self.astream(input, config, **kwargs))
