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

import functools
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.prompts import BasePromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig

from dynasor_agents._batch import BatchAllocator
from dynasor_agents._sync import LoopThread
from dynasor_agents.certainty import (
    AnswerExtractor,
    extract_answer,
    lowest_group_confidence,
    token_confidences,
)
from dynasor_agents.controller import CertaintyController
from dynasor_agents.errors import InvalidInputError
from dynasor_agents.program import DynasorClient, Program
from dynasor_agents.strategies._base import (
    DEFAULT_PROMPT,
    PROGRESS_EVENT,
    Strategy,
    StrategyInput,
    boxed_answer,
)
from dynasor_agents.strategies._drive import Completion, Core, Sampler
from dynasor_agents.strategies._sc_core import SelfConsistencyResult, self_consistency_core

__all__ = ["DEFAULT_PROMPT", "PROGRESS_EVENT", "SelfConsistency", "SelfConsistencyInput"]

SelfConsistencyInput = StrategyInput


class SelfConsistency(Strategy[SelfConsistencyResult]):
    """Self-consistency that stops once Certaindex says the answer is settled.

    Each sample is one request to ``model`` carrying the program's headers
    (``extra_headers``, which ``ChatOpenAI`` forwards), so a Dynasor-enabled vLLM
    attributes, schedules and can abort it. Samples the program no longer needs
    are cancelled, which makes vLLM abort them in the engine.

    Args:
        model: A chat model (e.g. ``ChatOpenAI`` pointed at vLLM with a sampling
            temperature), any Runnable from messages to a message, or another
            strategy, whose result is then one sample (composition: one
            program id and one budget for the whole).
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
        allocator: Makes ``abatch`` / ``batch`` one batch under a shared token
            budget (:class:`~dynasor_agents.BatchAllocator`): settled questions
            stop early and leave their tokens to the uncertain ones.
        confidence_window: Weigh each sample's vote by DeepConf's lowest group
            confidence over windows of this many tokens (the ``wconsensus``
            families of the benchmark use 32). Its policies see the weights as
            ``state.confidences`` (``weighted_consensus`` reads them). The
            model must return top logprobs, e.g. ``ChatOpenAI(...,
            logprobs=True, top_logprobs=5)``; a sample without them is an
            :class:`~dynasor_agents.InvalidInputError`.

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
        allocator: BatchAllocator | None = None,
        confidence_window: int | None = None,
    ) -> None:
        if not isinstance(model, Runnable):
            raise InvalidInputError(f"model must be a LangChain Runnable, got {model!r}")
        if max_tokens is not None and max_tokens < 1:
            raise InvalidInputError(f"max_tokens must be >= 1, got {max_tokens!r}")
        if confidence_window is not None and (
            isinstance(confidence_window, bool)
            or not isinstance(confidence_window, int)
            or confidence_window < 1
        ):
            raise InvalidInputError(
                f"confidence_window must be an int >= 1 or None, got {confidence_window!r}"
            )
        super().__init__(
            prompt=prompt,
            client=client,
            program_ids=program_ids,
            name=name,
            loop=loop,
            allocator=allocator,
        )
        self.model = model
        self.controller = controller or CertaintyController()
        self.extractor = extractor
        self.max_tokens = max_tokens
        self.confidence_window = confidence_window

    def _start(
        self,
        model_input: Any,
        program: Program,
        config: RunnableConfig,
        controller: CertaintyController | None,
    ) -> tuple[Core[SelfConsistencyResult], Sampler]:
        core = self_consistency_core(
            self.controller if controller is None else controller,
            program_id=program.id,
            extractor=self.extractor,
            max_tokens=self.max_tokens,
            confidence=None
            if self.confidence_window is None
            else functools.partial(_trace_confidence, window=self.confidence_window),
        )
        return core, self.sampler_for(self.model, model_input, program, config)

    def as_completion(self, result: SelfConsistencyResult) -> Completion:
        """The majority answer as one sample, with all the tokens it took."""
        text = boxed_answer(result.answer_text)
        return Completion(text, result.prompt_tokens, result.completion_tokens)


def _trace_confidence(logprobs: Any, *, window: int) -> float:
    """A sample's vote weight: DeepConf's lowest group confidence over ``window`` tokens."""
    if not logprobs:
        raise InvalidInputError(
            "confidence_window needs each sample's top logprobs; the model returned "
            "none (create it with logprobs=True, top_logprobs=5)"
        )
    return lowest_group_confidence(token_confidences(logprobs), window=window)
