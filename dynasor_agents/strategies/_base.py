"""The Runnable shell every strategy shares: one async path, sync on top, composition.

A strategy subclasses :class:`Strategy` and implements :meth:`Strategy._start`,
which returns its sans-IO core and the sampler that sends the core's requests.
Everything else is here once: input handling, program ids, the driver,
progress events (``dynasor_progress``), ``ainvoke`` / ``astream`` with a
snapshot per round, the sync methods (run on a loop thread), composition
(a strategy whose ``model`` is another strategy runs it as its sampler, nested
in the same program: one id, one budget, one stop) and batch mode: with a
:class:`~dynasor_agents.BatchAllocator`, ``abatch`` / ``batch`` run every input
as its own program under one shared token budget (see :mod:`dynasor_agents._batch`).

Example (a strategy is a Runnable, so it composes with prompts):
    >>> from langchain_core.language_models import FakeListChatModel
    >>> from langchain_core.prompts import ChatPromptTemplate
    >>> from dynasor_agents import CertaintyController, SelfConsistency
    >>> sc = SelfConsistency(
    ...     FakeListChatModel(responses=["\\\\boxed{4}"]),
    ...     controller=CertaintyController(first_round=3),
    ... )
    >>> chain = ChatPromptTemplate.from_template("{q}") | sc
    >>> chain.invoke({"q": "2 + 2?"}).answer
    '4'
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

import httpx
from langchain_core.callbacks import AsyncCallbackManagerForChainRun, adispatch_custom_event
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import BasePromptTemplate, ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import patch_config
from pydantic import BaseModel

from dynasor_agents._allocation import PoolMember
from dynasor_agents._batch import BatchAllocator, BatchMember
from dynasor_agents._sync import LoopThread, default_loop
from dynasor_agents.controller import CertaintyController
from dynasor_agents.errors import DynasorError, InvalidInputError
from dynasor_agents.program import DynasorClient, Program, typed_error
from dynasor_agents.strategies._drive import Completion, Core, SampleCall, Sampler, drive

__all__ = [
    "DEFAULT_PROMPT",
    "PROGRESS_EVENT",
    "Strategy",
    "StrategyInput",
    "boxed_answer",
    "chat_sampler",
    "message_text",
    "message_usage",
    "pooled_sampler",
    "question_text",
]

logger = logging.getLogger("dynasor_agents")

StrategyInput = LanguageModelInput | dict[str, Any]
R = TypeVar("R", bound=BaseModel)

PROGRESS_EVENT = "dynasor_progress"
"""Name of the custom callback event each round dispatches."""

DEFAULT_PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Solve the problem step by step. Put the final answer in \\boxed{{}}."),
        ("human", "{question}"),
    ]
)
"""Formats ``dict`` inputs (``{"question": ...}``) when no ``prompt`` is given."""


def message_text(message: Any) -> str:
    """The text of a chat message (or ``str`` of anything else)."""
    if isinstance(message, BaseMessage):
        return str(message.text)
    return str(message)


def message_usage(message: Any) -> tuple[int, int]:
    """``(prompt, completion)`` tokens from a message's ``usage_metadata``."""
    usage = getattr(message, "usage_metadata", None) or {}
    return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))


def boxed_answer(answer: str | None) -> str:
    r"""An answer as a sample's text that any extractor reads (``""`` for none).

    Strategies render their result this way in :meth:`Strategy.as_completion`.

    Example:
        >>> boxed_answer("42"), boxed_answer(None)
        ('The answer is \\boxed{42}.', '')
    """
    return "" if answer is None else f"The answer is \\boxed{{{answer}}}."


def question_text(model_input: Any) -> str:
    """The question in a prepared input: a string, or its last human message.

    Example:
        >>> question_text([("system", "be brief"), ("human", "2 + 2?")])
        '2 + 2?'
    """
    if isinstance(model_input, str):
        return model_input
    if isinstance(model_input, PromptValue):
        messages = model_input.to_messages()
    elif isinstance(model_input, Sequence):
        messages = convert_to_messages(model_input)
    else:
        raise InvalidInputError(f"cannot find a question in {type(model_input).__name__}")
    if not messages:
        raise InvalidInputError("input has no messages")
    humans = [m for m in messages if isinstance(m, HumanMessage)]
    return message_text(humans[-1] if humans else messages[-1])


def chat_sampler(
    model: Runnable[LanguageModelInput, Any],
    model_input: Any,
    config: RunnableConfig,
    program: Program,
) -> Sampler:
    """A sampler that sends ``model_input`` (or the call's ``request``) to a chat model.

    Each call carries the program's headers (``extra_headers``, which
    ``ChatOpenAI`` forwards) and ``max_tokens``; server error codes become typed
    exceptions (:func:`dynasor_agents.program.typed_error`).
    """

    async def sample(call: SampleCall) -> Completion:
        kwargs: dict[str, Any] = {"extra_headers": call.headers}
        if call.max_tokens is not None:
            kwargs["max_tokens"] = call.max_tokens
        payload = model_input if call.request is None else call.request
        try:
            message = await model.ainvoke(payload, config, **kwargs)
        except Exception as exc:
            typed = typed_error(exc, program.id)
            if typed is not None:
                raise typed from exc
            raise
        metadata = getattr(message, "response_metadata", None) or {}
        return Completion(
            message_text(message),
            *message_usage(message),
            finish_reason=metadata.get("finish_reason"),
            logprobs=metadata.get("logprobs"),
        )

    return sample


def pooled_sampler(sampler: Sampler, pool: PoolMember) -> Sampler:
    """``sampler`` with each request reserved in, and settled with, a batch member's ``pool``.

    A request the pool cannot cover raises
    :class:`~dynasor_agents.errors.BudgetExhaustedError` (the strategies stop
    with ``MAX_TOKENS`` on it, as when the server refuses a spent budget). A
    request for something else than the program's prompt (``call.request``
    set, e.g. a scoring request) without ``max_tokens`` is not reserved, only
    charged. A request that never comes back (cancelled or failed) is charged
    its whole reservation, as the server charges an aborted request.
    """

    async def sample(call: SampleCall) -> Completion:
        cap, reserved = pool.open_call(call.max_tokens, sample=call.request is None)
        if cap != call.max_tokens:
            call = dataclasses.replace(call, max_tokens=cap)
        used: int | None = None
        try:
            done = await sampler(call)
            used = done.completion_tokens
            return done
        finally:
            # A request that never came back (cancelled by a stop, or failed) may have
            # generated up to its cap in the engine before the abort reached it: charge
            # the whole reservation, so the engine's own count stays within the budget.
            pool.close_call(reserved, reserved if used is None else used)

    return sample


class Strategy(Runnable[StrategyInput, R]):
    """Base of every strategy Runnable.

    Args:
        prompt: Formats ``dict`` inputs (default :data:`DEFAULT_PROMPT`).
        client: Sends hints and stop to the server; without one the program
            still runs (e.g. against a plain OpenAI-compatible server).
        program_ids: Makes the id of each new program (default: uuid4).
        name: The Runnable's name in traces.
        loop: Where sync methods run the async core (default: one loop per
            process, see :mod:`dynasor_agents._sync`).
        allocator: Runs ``abatch`` / ``batch`` as one batch under a shared
            token budget (default: LangChain's batch, one ``ainvoke`` per input).

    Pass ``program_id=...`` to ``invoke`` to name the program, and
    ``deadline=time.time() + 60`` to tell the server when it must be done (it
    stops a late program, which then answers with what it has).
    """

    def __init__(
        self,
        *,
        prompt: BasePromptTemplate[Any] | None = None,
        client: DynasorClient | None = None,
        program_ids: Callable[[], str | None] = lambda: None,
        name: str | None = None,
        loop: LoopThread | None = None,
        allocator: BatchAllocator | None = None,
    ) -> None:
        if allocator is not None and not isinstance(allocator, BatchAllocator):
            raise InvalidInputError(f"allocator must be a BatchAllocator, got {allocator!r}")
        self.prompt = prompt or DEFAULT_PROMPT
        self.client = client
        self.program_ids = program_ids
        self.name = name or type(self).__name__
        self._loop = loop or default_loop()
        self.allocator = allocator

    @property
    def controller(self) -> CertaintyController:
        """The strategy's own :class:`CertaintyController` (strategies that have one set it).

        A question of a batch (see :class:`~dynasor_agents.BatchAllocator`)
        decides with its member's controller instead, which ``_start`` is given.
        """
        try:
            own: CertaintyController = self.__dict__["_controller"]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no controller") from None
        return own

    @controller.setter
    def controller(self, value: CertaintyController) -> None:
        self.__dict__["_controller"] = value

    # -- what a strategy provides ---------------------------------------------------

    @abc.abstractmethod
    def _start(
        self,
        model_input: Any,
        program: Program,
        config: RunnableConfig,
        controller: CertaintyController | None,
    ) -> tuple[Core[R], Sampler]:
        """The strategy's core for one program, and the sampler its requests go to.

        Args:
            model_input: The prepared input.
            program: The program the core runs as.
            config: The run's config.
            controller: The controller of a batch member (the strategy's own
                with the batch's policies and its share of the pool on top),
                which the core decides with instead of :attr:`controller`;
                ``None`` outside a batch (and for a nested strategy).
        """

    @abc.abstractmethod
    def as_completion(self, result: R) -> Completion:
        """The result as one sample of an enclosing strategy (composition)."""

    # -- the one async path ------------------------------------------------------------

    async def _prepare(self, value: StrategyInput, config: RunnableConfig) -> Any:
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

    def sampler_for(
        self,
        model: Runnable[LanguageModelInput, Any],
        model_input: Any,
        program: Program,
        config: RunnableConfig,
    ) -> Sampler:
        """How this strategy samples ``model``: a chat model, or a nested strategy."""
        if isinstance(model, Strategy):
            inner = model

            async def nested(call: SampleCall) -> Completion:
                payload = model_input if call.request is None else call.request
                result = await inner.arun_nested(payload, program, config)
                return inner.as_completion(result)

            return nested
        return chat_sampler(model, model_input, config, program)

    async def arun_nested(self, model_input: Any, program: Program, config: RunnableConfig) -> R:
        """Run as a sample of an enclosing strategy, inside its ``program``."""
        core, sampler = self._start(model_input, program, config, None)
        return await drive(core, sampler=sampler, program=program, nested=True)

    async def _run(
        self,
        value: StrategyInput,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        *,
        program_id: str | None = None,
        deadline: float | None = None,
        on_snapshot: Callable[[R], Any] | None = None,
        member: BatchMember | None = None,
    ) -> R:
        model_input = await self._prepare(value, config)
        program = Program(program_id or self.program_ids(), client=self.client, deadline=deadline)
        child = patch_config(config, callbacks=run_manager.get_child())

        async def emit(snapshot: R) -> None:
            await adispatch_custom_event(PROGRESS_EVENT, snapshot.model_dump(), config=child)
            if on_snapshot is not None:
                await on_snapshot(snapshot)

        controller = None if member is None else member.controller
        if controller is None:
            controller = await self._controller_for_load()
        core, sampler = self._start(model_input, program, child, controller)
        if member is not None:  # a batch member: every request goes through the pool
            sampler = pooled_sampler(sampler, member.pool)
        return await drive(core, sampler=sampler, program=program, emit=emit)

    async def _controller_for_load(self) -> CertaintyController | None:
        """The strategy's controller sized for the server's load, or ``None`` (its own).

        Only a load-adaptive controller with a client asks the server; a server
        that cannot say (an error, no component) leaves the controller as is.
        """
        own: CertaintyController | None = getattr(self, "controller", None)
        if own is None or not own.load_adaptive or self.client is None:
            return None
        try:
            load = await self.client.load()
        except (DynasorError, httpx.HTTPError) as exc:
            logger.debug("no server load (%s); first round of %d", exc, own.first_round)
            return None
        return own.for_load(load.waiting)

    async def ainvoke(
        self, input: StrategyInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> R:
        """Run one program; ``program_id=`` names it, ``deadline=`` (epoch seconds) bounds it."""
        return await self._acall_with_config(self._run, input, config, **kwargs)

    async def arun_member(
        self,
        input: StrategyInput,
        config: RunnableConfig | None,
        member: BatchMember,
        **kwargs: Any,
    ) -> R:
        """Run one program as a question of a batch (what :class:`BatchAllocator` calls).

        As :meth:`ainvoke`, but the core decides with ``member.controller`` and
        every request is reserved in, and settled with, ``member.pool``.
        """
        return await self._acall_with_config(self._run, input, config, member=member, **kwargs)

    async def astream(
        self,
        input: StrategyInput,
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> AsyncIterator[R]:
        """Yield a snapshot after each round, then the final result."""

        async def one() -> AsyncIterator[StrategyInput]:
            yield input

        async for item in self._atransform_stream_with_config(
            one(), self._snapshots, config, **kwargs
        ):
            yield item

    async def _snapshots(
        self,
        inputs: AsyncIterator[StrategyInput],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[R]:
        queue: asyncio.Queue[R] = asyncio.Queue()
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
        self, input: StrategyInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> R:
        """Run one program (sync; runs :meth:`ainvoke` on a helper loop)."""
        return self._loop.run(self.ainvoke(input, config, **kwargs))

    async def abatch(
        self,
        inputs: list[StrategyInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[R]:
        """Run many programs concurrently (``max_concurrency`` in config applies).

        With an allocator (the strategy's, or ``allocator=`` here) the inputs
        run as one batch under its shared token budget
        (:meth:`BatchAllocator.arun`; its report is then the allocator's
        ``last_report``); without one, as LangChain's ``abatch``. Results come
        in input order; with ``return_exceptions=True`` a failed input's
        exception takes its place.
        """
        allocator = kwargs.pop("allocator", None) or self.allocator
        if allocator is None:
            return await super().abatch(
                inputs, config, return_exceptions=return_exceptions, **kwargs
            )
        if not isinstance(allocator, BatchAllocator):
            raise InvalidInputError(f"allocator must be a BatchAllocator, got {allocator!r}")
        results, _ = await allocator.arun(
            self, inputs, config, return_exceptions=return_exceptions, **kwargs
        )
        return results  # type: ignore[return-value] # exceptions only with return_exceptions

    def batch(
        self,
        inputs: list[StrategyInput],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[R]:
        """Run many programs concurrently: :meth:`abatch` on the helper loop."""
        return self._loop.run(
            self.abatch(inputs, config, return_exceptions=return_exceptions, **kwargs)
        )

    def stream(
        self,
        input: StrategyInput,
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> Iterator[R]:
        """Sync :meth:`astream`."""
        yield from self._loop.iterate(self.astream(input, config, **kwargs))
