"""``BestOfN``: the best-of-N core as a LangChain Runnable, with a pluggable reward.

The reward is one of:

* ``None`` (default): the built-in signal, each candidate's mean token
  probability (``exp`` of its mean token log-probability, see
  :func:`~dynasor_agents.strategies._bon_core.logprob_reward`). The model must
  return logprobs, e.g. ``ChatOpenAI(..., logprobs=True)``.
* a chat model: an LLM judge. Each candidate is graded with ``judge_prompt``
  (default :data:`JUDGE_PROMPT`, a 0-10 scale, so ``reward_range`` defaults
  to ``(0, 10)``); the first number in the judge's reply is the reward. Judge
  calls carry the program's headers, like the candidates.
* any other Runnable (a reward model behind vLLM, a verifier, a lambda): it
  gets ``{"question": ..., "candidate": ...}`` and returns a number in ``[0, 1]``
  (or in ``reward_range``), a string that parses as one, or a message whose
  text holds one (its ``usage_metadata`` counts as the program's tokens).

Example (a reward that likes the answer 42; the first candidate clears the
threshold, so the program stops there and cancels the rest):
    >>> from langchain_core.language_models import FakeListChatModel
    >>> from langchain_core.runnables import RunnableLambda
    >>> model = FakeListChatModel(responses=["It is 42.", "It is 41."])
    >>> like_42 = RunnableLambda(lambda x: 1.0 if "42" in x["candidate"] else 0.2)
    >>> result = BestOfN(model, reward=like_42).invoke("What is six times seven?")
    >>> result.best, result.reward, result.stop_reason.value
    ('It is 42.', 1.0, 'certain')
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseLanguageModel, LanguageModelInput
from langchain_core.messages import BaseMessage
from langchain_core.prompts import BasePromptTemplate, ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig

from dynasor_agents._sync import LoopThread
from dynasor_agents.controller import CertaintyController, max_samples, threshold
from dynasor_agents.errors import InvalidInputError
from dynasor_agents.program import DynasorClient, Program
from dynasor_agents.strategies._base import (
    Strategy,
    StrategyInput,
    chat_sampler,
    message_text,
    message_usage,
    question_text,
)
from dynasor_agents.strategies._bon_core import (
    BestOfNResult,
    ScoreRequest,
    best_of_n_core,
    check_reward_range,
    logprob_reward,
)
from dynasor_agents.strategies._drive import Completion, Core, SampleCall, Sampler

__all__ = ["JUDGE_PROMPT", "BestOfN", "BestOfNInput"]

BestOfNInput = StrategyInput

JUDGE_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "You grade answers. Rate how likely the candidate answer to the question is "
            "correct, from 0 (certainly wrong) to 10 (certainly right). Reply with the "
            "number only.",
        ),
        ("human", "Question:\n{question}\n\nCandidate answer:\n{candidate}"),
    ]
)
"""What an LLM judge (a chat model passed as ``reward``) is asked, on a 0-10 scale."""

logger = logging.getLogger("dynasor_agents")

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _first_number(text: str) -> str:
    """The first number in an LLM's reply (the reply itself if none, for the error)."""
    found = _NUMBER.search(text)
    return found.group() if found else text


def _reward_completion(raw: Any) -> Completion:
    """A reward Runnable's output as a scoring completion whose text is the raw reward."""
    if isinstance(raw, BaseMessage):
        return Completion(_first_number(message_text(raw)), *message_usage(raw))
    if isinstance(raw, str):
        return Completion(raw)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return Completion(repr(float(raw)))
    raise InvalidInputError(
        f"reward must return a number, a numeric string or a message, got {raw!r} "
        f"({type(raw).__name__})"
    )


class BestOfN(Strategy[BestOfNResult]):
    """Best-of-N that stops as soon as a candidate's reward clears the threshold.

    Candidates are requests to ``model`` carrying the program's headers; each
    is scored as soon as it finishes, concurrently with the others. Certaindex
    is the best normalized reward so far; once it clears the controller's
    threshold the candidates still running are cancelled (vLLM aborts them).

    Args:
        model: A chat model (sampling with a temperature), any Runnable from
            messages to a message, or another strategy (composition).
        reward: ``None`` for the built-in logprob signal, a chat model as an
            LLM judge, or a Runnable from ``{"question", "candidate"}`` to a
            number (see the module docs).
        reward_range: ``(lo, hi)`` of the raw rewards, mapped onto ``[0, 1]``
            (default: ``(0, 10)`` for a judge, else rewards must be in ``[0, 1]``).
        controller: Stop/continue policy over the best reward (default:
            ``threshold(0.8, min_samples=1) | max_samples(8)``, rounds of 4).
            Note ``threshold(t)`` alone waits for 2 scored candidates.
        judge_prompt: What a chat-model judge is asked (default :data:`JUDGE_PROMPT`).
        prompt: Formats ``dict`` inputs (default ``DEFAULT_PROMPT``).
        client: Sends hints and stop to the server.
        max_tokens: Cap on each candidate's completion tokens.
        reward_max_tokens: Cap on each judge reply (chat-model judges only).
        program_ids: Makes the id of each new program (default: uuid4).
        name: The Runnable's name in traces.
        loop: Where sync methods run the async core.

    Output: a :class:`~dynasor_agents.strategies._bon_core.BestOfNResult`;
    ``stream`` yields a snapshot after each round, then the result.

    Raises:
        InvalidInputError: Bad configuration, or a reward that is not a number
            in range (the message names the value and the program).
    """

    def __init__(
        self,
        model: Runnable[LanguageModelInput, Any],
        *,
        reward: Runnable[Any, Any] | None = None,
        reward_range: tuple[float, float] | None = None,
        controller: CertaintyController | None = None,
        judge_prompt: BasePromptTemplate[Any] | None = None,
        prompt: BasePromptTemplate[Any] | None = None,
        client: DynasorClient | None = None,
        max_tokens: int | None = None,
        reward_max_tokens: int | None = None,
        program_ids: Callable[[], str | None] = lambda: None,
        name: str | None = None,
        loop: LoopThread | None = None,
    ) -> None:
        if not isinstance(model, Runnable):
            raise InvalidInputError(f"model must be a LangChain Runnable, got {model!r}")
        if reward is not None and not isinstance(reward, Runnable):
            raise InvalidInputError(
                f"reward must be a LangChain Runnable (or None for logprobs), got {reward!r}"
            )
        for label, value in (("max_tokens", max_tokens), ("reward_max_tokens", reward_max_tokens)):
            if value is not None and value < 1:
                raise InvalidInputError(f"{label} must be >= 1, got {value!r}")
        if controller is not None and not isinstance(controller, CertaintyController):
            raise InvalidInputError(f"controller must be a CertaintyController, got {controller!r}")
        super().__init__(
            prompt=prompt, client=client, program_ids=program_ids, name=name, loop=loop
        )
        self.model = model
        self.reward = reward
        self.judge = isinstance(reward, BaseLanguageModel)
        if reward_range is None and self.judge:
            reward_range = (0.0, 10.0)
        self.reward_range = check_reward_range(reward_range)
        self.controller = controller or CertaintyController(
            threshold(0.8, min_samples=1) | max_samples(8), first_round=4, round_size=4
        )
        self.judge_prompt = judge_prompt or JUDGE_PROMPT
        self.max_tokens = max_tokens
        self.reward_max_tokens = reward_max_tokens

    def _start(
        self,
        model_input: Any,
        program: Program,
        config: RunnableConfig,
        controller: CertaintyController | None,
    ) -> tuple[Core[BestOfNResult], Sampler]:
        core = best_of_n_core(
            self.controller if controller is None else controller,
            program_id=program.id,
            max_tokens=self.max_tokens,
            score=logprob_reward if self.reward is None else None,
            reward_range=self.reward_range,
            reward_max_tokens=self.reward_max_tokens,
        )
        candidates = self.sampler_for(self.model, model_input, program, config)
        question = question_text(model_input)

        async def sample(call: SampleCall) -> Completion:
            if not isinstance(call.request, ScoreRequest):
                return await candidates(call)
            payload = {"question": question, "candidate": call.request.candidate}
            if self.judge:
                judge: Runnable[LanguageModelInput, Any] = self.reward  # type: ignore[assignment]
                messages = await self.judge_prompt.ainvoke(payload, config)
                reply = await chat_sampler(judge, messages, config, program)(
                    dataclasses.replace(call, request=None)
                )
                score = _NUMBER.search(reply.text)
                if score is None:  # a judge that gives no grade gives the lowest one
                    logger.warning(
                        "judge gave no number for candidate %d of program %s: %r",
                        call.request.index,
                        program.id,
                        reply.text[:200],
                    )
                    lowest = (self.reward_range or (0.0, 1.0))[0]
                    return dataclasses.replace(reply, text=repr(float(lowest)))
                return dataclasses.replace(reply, text=score.group())
            assert self.reward is not None  # no scoring requests with the built-in signal
            return _reward_completion(await self.reward.ainvoke(payload, config))

        return core, sample

    def as_completion(self, result: BestOfNResult) -> Completion:
        """The best candidate as one sample, with all the tokens the program took."""
        return Completion(result.best or "", result.prompt_tokens, result.completion_tokens)
