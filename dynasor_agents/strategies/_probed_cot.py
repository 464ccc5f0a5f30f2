r"""``ProbedChainOfThought``: Dynasor-CoT, the probed chain-of-thought core as a Runnable.

For reasoning models with long thinking: decode in chunks through
``/v1/completions`` (a :class:`CompletionsModel`), probe for the answer after
each chunk, and stop once the last probes agree. ``stream`` yields a snapshot
after every chunk and probe whose ``delta`` is the new reasoning (never the
probes), then the result with the answer.

Example (a scripted model that settles on 42 at once; with the ``aggressive``
preset two agreeing probes stop it long before its 4096-token cap):

    >>> from dynasor_agents.strategies._drive import Completion
    >>> async def model(call):
    ...     if call.request.temperature == 0.0:  # a probe
    ...         return Completion("42}", 30, 2, finish_reason="length")
    ...     return Completion(" 6*7 is 42.", 20, call.max_tokens, finish_reason="length")
    >>> cot = ProbedChainOfThought(model, effort="aggressive", max_tokens=4096)
    >>> result = cot.invoke("What is 6*7?")
    >>> result.answer, result.stop_reason.value, result.probe_answers
    ('42', 'certain', ['42', '42'])
    >>> result.reasoning_tokens, result.probe_tokens, result.tokens_saved_estimate
    (384, 4, 3712)

(The third chunk had finished by the time the second probe agreed; its tokens
were spent, so they count.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.prompt_values import ChatPromptValue, PromptValue, StringPromptValue
from langchain_core.runnables import RunnableConfig

from dynasor_agents._sync import LoopThread
from dynasor_agents.certainty import AnswerExtractor, extract_answer
from dynasor_agents.controller import CertaintyController
from dynasor_agents.errors import InvalidInputError
from dynasor_agents.program import DynasorClient, Program
from dynasor_agents.strategies._base import Strategy, StrategyInput, boxed_answer, message_text
from dynasor_agents.strategies._completions import chatml
from dynasor_agents.strategies._cot_core import (
    ProbedChainOfThoughtResult,
    check_config,
    probed_cot_core,
)
from dynasor_agents.strategies._cot_probes import DEFAULT_HEDGES
from dynasor_agents.strategies._drive import Completion, Core, Sampler

__all__ = ["EFFORT_PRESETS", "ProbedChainOfThought"]

EFFORT_PRESETS: Final[dict[str, tuple[int, int]]] = {
    "mild": (4, 512),
    "moderate": (3, 256),
    "aggressive": (2, 128),
}
"""Saving-effort presets as ``(window, chunk_tokens)``, from mild to aggressive.

A smaller window stops on less evidence and a smaller chunk probes more often,
so the program notices a settled answer sooner (saving more reasoning tokens)
at the price of more probe tokens and a higher risk of stopping on an answer
the model would still have revised. ``mild`` (4 probes, every 512 tokens) is
close to the Dynasor paper's conservative setting; ``aggressive`` (2 probes,
every 128 tokens) suits short reasoning and cheap probes."""


def _question(value: Any) -> str:
    """The question in an input: a string, ``{"question": ...}``, or the last human message."""
    if isinstance(value, dict):
        value = value.get("question")
        if not isinstance(value, str):
            raise InvalidInputError('a dict input needs a "question" string')
    elif isinstance(value, StringPromptValue):
        value = value.text
    elif isinstance(value, ChatPromptValue | Sequence) and not isinstance(value, str):
        messages = value.messages if isinstance(value, ChatPromptValue) else value
        human = [m for m in messages if isinstance(m, HumanMessage | str)]
        if not human:
            raise InvalidInputError("the messages hold no human message to ask")
        value = human[-1] if isinstance(human[-1], str) else message_text(human[-1])
    elif isinstance(value, PromptValue | BaseMessage):
        value = value.to_string() if isinstance(value, PromptValue) else message_text(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(
            'input must be a non-empty question string, a dict with a "question", or '
            f"messages with a human message; got {type(value).__name__}"
        )
    return value


class ProbedChainOfThought(Strategy[ProbedChainOfThoughtResult]):
    """Long chain-of-thought that stops once probes say the answer is settled (Dynasor-CoT).

    The reasoning is decoded in chunks of ``chunk_tokens``, each a raw
    continuation of the text so far, so vLLM's prefix cache makes it cheap.
    After each chunk a greedy probe appends an answer-forcing suffix and reads
    the answer; it runs concurrently with the next chunk. Once the last
    ``window`` probes agree (same non-empty answer, none hedging) the running
    chunk is cancelled and the program stops. Every request carries the
    program's id, so a Dynasor-enabled vLLM attributes, schedules and aborts them.

    Args:
        model: A :class:`~dynasor_agents.strategies._completions.CompletionsModel`
            (or any sampler of ``TextRequest`` s).
        effort: Saving-effort preset, see :data:`EFFORT_PRESETS`.
        chunk_tokens: Tokens per chunk (overrides the preset).
        window: Probes that must agree (overrides the preset).
        max_tokens: Cap on the reasoning tokens (probes come on top).
        probe: Probe suffix: ``"auto"`` (``think`` when the text holds
            ``<think>``, else ``dynasor``), a preset of ``PROBE_SUFFIXES`` or a
            literal suffix.
        probe_tokens: Completion-token cap of each probe.
        hedges: Words that make a probe unsure.
        extractor: The answer of a reasoning that ended on its own.
        probe_extractor: The answer in a probe's output (default: up to the
            closing ``}``).
        prompt_format: Turns the question into the prompt text (default ChatML).
        temperature: Sampling temperature of the chunks (``None``: the model's).
        client: Sends hints and stop to the server.
        program_ids: Makes the id of each new program (default: uuid4).
        name: The Runnable's name in traces.
        loop: Where sync methods run the async core.

    Input: a question string, ``{"question": ...}``, or messages (the last human
    message is the question; others are ignored, ``prompt_format`` makes the
    prompt). Output: a :class:`ProbedChainOfThoughtResult`.

    Raises:
        InvalidInputError: An unknown preset or a parameter out of range.
    """

    def __init__(
        self,
        model: Sampler,
        *,
        effort: str = "moderate",
        chunk_tokens: int | None = None,
        window: int | None = None,
        max_tokens: int = 4096,
        probe: str = "auto",
        probe_tokens: int = 32,
        hedges: Sequence[str] = DEFAULT_HEDGES,
        extractor: AnswerExtractor = extract_answer,
        probe_extractor: AnswerExtractor | None = None,
        prompt_format: Callable[[str], str] = chatml,
        temperature: float | None = None,
        client: DynasorClient | None = None,
        program_ids: Callable[[], str | None] = lambda: None,
        name: str | None = None,
        loop: LoopThread | None = None,
    ) -> None:
        if not callable(model):
            raise InvalidInputError(f"model must be a CompletionsModel (a sampler), got {model!r}")
        if effort not in EFFORT_PRESETS:
            raise InvalidInputError(
                f"effort must be one of {sorted(EFFORT_PRESETS)}, got {effort!r}"
            )
        preset_window, preset_chunk = EFFORT_PRESETS[effort]
        self.window = preset_window if window is None else window
        self.chunk_tokens = preset_chunk if chunk_tokens is None else chunk_tokens
        check_config(
            chunk_tokens=self.chunk_tokens,
            window=self.window,
            max_tokens=max_tokens,
            probe_tokens=probe_tokens,
            probe=probe,
        )
        if isinstance(hedges, str):
            raise InvalidInputError("hedges must be a sequence of words, not one string")
        super().__init__(client=client, program_ids=program_ids, name=name, loop=loop)
        self.model = model
        self.effort = effort
        self.max_tokens = max_tokens
        self.probe = probe
        self.probe_tokens = probe_tokens
        self.hedges = tuple(hedges)
        self.extractor = extractor
        self.probe_extractor = probe_extractor
        self.prompt_format = prompt_format
        self.temperature = temperature

    async def _prepare(self, value: StrategyInput, config: RunnableConfig) -> str:
        return _question(value)

    def _start(
        self,
        model_input: Any,
        program: Program,
        config: RunnableConfig,
        controller: CertaintyController | None,
    ) -> tuple[Core[ProbedChainOfThoughtResult], Sampler]:
        # No controller: probes decide when to stop (a batch only reserves its requests).
        core = probed_cot_core(
            prompt_text=self.prompt_format(_question(model_input)),
            program_id=program.id,
            chunk_tokens=self.chunk_tokens,
            window=self.window,
            max_tokens=self.max_tokens,
            probe=self.probe,
            probe_tokens=self.probe_tokens,
            hedges=self.hedges,
            extractor=self.extractor,
            probe_extractor=self.probe_extractor,
            temperature=self.temperature,
        )
        return core, self.model

    def as_completion(self, result: ProbedChainOfThoughtResult) -> Completion:
        """The answer as one sample of an enclosing strategy, with all the tokens it took."""
        text = boxed_answer(result.answer_text or None)
        return Completion(text, result.prompt_tokens, result.completion_tokens, "stop")
