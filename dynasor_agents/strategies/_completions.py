"""Raw-text continuation through ``/v1/completions``, for strategies that extend a prefix.

Tree search extends partial solutions step by step and probed chain-of-thought
decodes in chunks; both send the whole text so far as the prompt, which vLLM's
prefix cache turns into a cheap continuation. :class:`CompletionsModel` wraps
an ``openai.AsyncOpenAI`` client (pointed at vLLM) as a sampler: the call's
``request`` is a :class:`TextRequest`, the program's headers ride along, usage
and the sampled tokens' logprobs come back on the :class:`Completion`, and Dynasor error codes
become typed exceptions.

Example:
    >>> chatml("What is 2 + 2?")
    '<|im_start|>user\\nWhat is 2 + 2?<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

from dynasor_agents.errors import InvalidInputError
from dynasor_agents.program import typed_error
from dynasor_agents.protocol import PROGRAM_ID_HEADER
from dynasor_agents.strategies._drive import Completion, SampleCall

__all__ = ["CompletionsModel", "TextRequest", "chatml"]


def chatml(question: str, system: str | None = None) -> str:
    """Format a question in the ChatML template (SmolLM2, Qwen) up to the assistant turn."""
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
    return f"{head}<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


@dataclass(frozen=True)
class TextRequest:
    """One raw completion request.

    Attributes:
        prompt: The full text to continue.
        stop: Stop sequences.
        temperature: Sampling temperature (``None``: the model's default).
        logprobs: Ask for token log-probabilities (the API's top-k count; ``None``:
            none). The completion carries the sampled tokens' own log-probabilities.
        extra: More body fields for vLLM (e.g. ``{"ignore_eos": True}``).
    """

    prompt: str
    stop: Sequence[str] = ()
    temperature: float | None = None
    logprobs: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class CompletionsModel:
    """Sends :class:`TextRequest` s to an OpenAI-compatible ``/v1/completions``.

    Args:
        client: An ``openai.AsyncOpenAI`` pointed at the server (``max_retries=0``
            is wise: the server's stop errors are final).
        model: The served model name.
        temperature: Default sampling temperature.
    """

    def __init__(self, client: openai.AsyncOpenAI, model: str, *, temperature: float = 0.7):
        if not model:
            raise InvalidInputError("model must be a served model name")
        self.client = client
        self.model = model
        self.temperature = temperature

    async def __call__(self, call: SampleCall) -> Completion:
        """Send one request; the sampler protocol of :func:`drive`."""
        request = call.request
        if not isinstance(request, TextRequest):
            raise InvalidInputError(
                f"CompletionsModel needs a TextRequest, got {type(request).__name__}"
            )
        temperature = self.temperature if request.temperature is None else request.temperature
        program_id = call.headers.get(PROGRAM_ID_HEADER)
        try:
            response = await self.client.completions.create(
                model=self.model,
                prompt=request.prompt,
                max_tokens=call.max_tokens,
                temperature=temperature,
                stop=list(request.stop) or None,
                logprobs=request.logprobs,
                extra_headers=call.headers,
                extra_body=request.extra or None,
            )
        except openai.APIStatusError as exc:
            typed = typed_error(exc, program_id)
            if typed is not None:
                raise typed from exc
            raise
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            choice.text,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason,
            # The sampled tokens' own log-probabilities (top-k maps would leave
            # readers guessing which entry was sampled).
            logprobs=choice.logprobs.token_logprobs if choice.logprobs else None,
        )
