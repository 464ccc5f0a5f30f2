r"""``TreeSearch``: step-level tree search (beam, REBASE, MCTS) as a LangChain Runnable.

Steps are continuations of the text so far through ``/v1/completions``
(:class:`~dynasor_agents.strategies._completions.CompletionsModel`), cut at a
delimiter; a step-reward Runnable (or the step's token logprobs) scores them;
the policy decides where to expand; Certaindex (reward signal AND answer
entropy of the finished leaves) decides when to stop, and pending branches are
then cancelled.

Example (a scripted sampler: every branch answers 4 in one step; two agreeing
leaves with high logprob reward make the program certain after one round):

    >>> from dynasor_agents.strategies._drive import Completion
    >>> async def model(call):
    ...     return Completion("So \\boxed{4}", 9, 4, finish_reason="stop", logprobs=[-0.1] * 4)
    >>> ts = TreeSearch(model, policy=beam(width=2, expand=1))
    >>> result = ts.invoke("What is 2 + 2?")
    >>> result.answer, result.nodes, result.rounds, result.stop_reason.value
    ('4', 2, 1, 'certain')
    >>> ts.as_completion(result).text
    'The answer is \\boxed{4}.'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.prompts import BasePromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.runnables.config import merge_configs

from dynasor_agents._sync import LoopThread
from dynasor_agents.certainty import AnswerExtractor, extract_answer
from dynasor_agents.controller import CertaintyController, max_samples
from dynasor_agents.errors import InvalidInputError
from dynasor_agents.program import DynasorClient, Program
from dynasor_agents.strategies._base import (
    Strategy,
    boxed_answer,
    message_text,
    message_usage,
    question_text,
)
from dynasor_agents.strategies._completions import chatml
from dynasor_agents.strategies._drive import Completion, Core, SampleCall, Sampler
from dynasor_agents.strategies._tree_core import (
    ScoreRequest,
    TreeSearchResult,
    check_config,
    tree_search_core,
)
from dynasor_agents.strategies._tree_policies import TreePolicy, beam

__all__ = ["STEP_SYSTEM_PROMPT", "TreeSearch", "reward_completion", "step_prompt"]

STEP_SYSTEM_PROMPT = (
    "Solve the problem step by step, one step per paragraph. Put the final answer in \\boxed{}."
)
"""The system prompt of :func:`step_prompt`."""


def step_prompt(question: str) -> str:
    """The default ``prompt_format``: ChatML with :data:`STEP_SYSTEM_PROMPT`."""
    return chatml(question, system=STEP_SYSTEM_PROMPT)


def reward_completion(value: Any) -> Completion:
    """A step-reward Runnable's output as a :class:`Completion` the core reads.

    The output may be a number, a string holding one, a message whose text is
    one (its ``usage_metadata`` counts as tokens), or a mapping with ``reward``
    and optional ``prompt_tokens`` / ``completion_tokens``.

    Example:
        >>> reward_completion({"reward": 0.5, "completion_tokens": 3}).completion_tokens
        3
    """
    prompt_tokens = completion_tokens = 0
    if isinstance(value, BaseMessage):
        prompt_tokens, completion_tokens = message_usage(value)
        value = message_text(value).strip()
    elif isinstance(value, Mapping) and "reward" in value:
        prompt_tokens = int(value.get("prompt_tokens", 0))
        completion_tokens = int(value.get("completion_tokens", 0))
        value = value["reward"]
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInputError(f"step_reward must return a number, got {value!r}")
    text = value if isinstance(value, str) else repr(float(value))
    return Completion(text, prompt_tokens, completion_tokens, finish_reason="score")


class TreeSearch(Strategy[TreeSearchResult]):
    """Tree search over reasoning steps that stops once Certaindex says it is settled.

    Args:
        model: Sends continuation requests: a
            :class:`~dynasor_agents.strategies._completions.CompletionsModel`
            (vLLM's ``/v1/completions``) or any async ``(SampleCall) ->
            Completion`` callable. Steps rely on the server returning the stop
            string (``include_stop_str_in_output``, which vLLM honors) to tell
            a step end from the end of the text.
        policy: :class:`beam` (default ``beam(4, 2)``), :class:`rebase` or :class:`mcts`.
        step_reward: Scores a step: ``{"question": str, "steps": [str, ...]}``
            to a number in ``reward_range`` (the last step is scored). Its
            config metadata carries ``dynasor_program_id`` and
            ``dynasor_headers``. Without one, ``exp(mean token logprob)``.
        delimiter: Ends a step; the stop sequence of every step request.
        step_tokens: Completion-token cap of one step.
        max_depth: Steps after which a branch ends.
        max_nodes: Steps generated at most.
        reward_range: ``(low, high)`` of ``step_reward``'s output.
        reward_threshold: Reward signal needed to be certain (mean leaf reward
            for MCTS, max for beam and REBASE).
        entropy_threshold: Answer-entropy Certaindex of the leaves needed.
        controller: Token budget (``max_tokens``) and leaf cap (``max_samples``);
            default ``max_samples(32)``.
        extractor: Pulls a leaf's answer from its solution.
        prompt_format: Turns the question into the raw prompt (default
            :func:`step_prompt`, ChatML).
        temperature: Step sampling temperature (``None``: the model's).
        prompt: Formats ``dict`` inputs into messages; the last human message
            is the question.
        client: Sends hints and stop to the server.
        program_ids: Makes the id of each new program (default: uuid4).
        name: The Runnable's name in traces.
        loop: Where sync methods run the async core.

    Raises:
        InvalidInputError: A bad setting (named in the message).
    """

    def __init__(
        self,
        model: Sampler,
        *,
        policy: TreePolicy | None = None,
        step_reward: Runnable[dict[str, Any], Any] | Callable[[dict[str, Any]], Any] | None = None,
        delimiter: str = "\n\n",
        step_tokens: int = 64,
        max_depth: int = 8,
        max_nodes: int = 64,
        reward_range: tuple[float, float] = (0.0, 1.0),
        reward_threshold: float = 0.7,
        entropy_threshold: float = 0.8,
        controller: CertaintyController | None = None,
        extractor: AnswerExtractor = extract_answer,
        prompt_format: Callable[[str], str] = step_prompt,
        temperature: float | None = None,
        prompt: BasePromptTemplate[Any] | None = None,
        client: DynasorClient | None = None,
        program_ids: Callable[[], str | None] = lambda: None,
        name: str | None = None,
        loop: LoopThread | None = None,
    ) -> None:
        if isinstance(model, Runnable) or not callable(model):
            raise InvalidInputError(
                "TreeSearch needs a CompletionsModel (raw /v1/completions continuation) or an "
                f"async (SampleCall) -> Completion callable, got {model!r}"
            )
        policy = beam() if policy is None else policy
        if not isinstance(policy, TreePolicy):
            raise InvalidInputError(
                f"policy must be beam(...), rebase(...) or mcts(...), got {policy!r}"
            )
        if step_reward is not None and not isinstance(step_reward, Runnable):
            if not callable(step_reward):
                raise InvalidInputError(f"step_reward must be a Runnable, got {step_reward!r}")
            step_reward = RunnableLambda(step_reward)
        if temperature is not None and (not math.isfinite(temperature) or temperature < 0):
            raise InvalidInputError(f"temperature must be >= 0, got {temperature!r}")
        check_config(
            delimiter=delimiter,
            step_tokens=step_tokens,
            max_depth=max_depth,
            max_nodes=max_nodes,
            reward_range=reward_range,
            reward_threshold=reward_threshold,
            entropy_threshold=entropy_threshold,
        )
        super().__init__(
            prompt=prompt, client=client, program_ids=program_ids, name=name, loop=loop
        )
        self.model = model
        self.policy = policy
        self.step_reward: Runnable[dict[str, Any], Any] | None = step_reward
        self.delimiter = delimiter
        self.step_tokens = step_tokens
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.reward_range = reward_range
        self.reward_threshold = reward_threshold
        self.entropy_threshold = entropy_threshold
        self.controller = controller or CertaintyController(max_samples(32))
        self.extractor = extractor
        self.prompt_format = prompt_format
        self.temperature = temperature

    def _start(
        self,
        model_input: Any,
        program: Program,
        config: RunnableConfig,
        controller: CertaintyController | None,
    ) -> tuple[Core[TreeSearchResult], Sampler]:
        question = question_text(model_input)
        core = tree_search_core(
            self.prompt_format(question),
            question=question,
            policy=self.policy,
            controller=self.controller if controller is None else controller,
            program_id=program.id,
            scored=self.step_reward is not None,
            delimiter=self.delimiter,
            step_tokens=self.step_tokens,
            max_depth=self.max_depth,
            max_nodes=self.max_nodes,
            reward_range=self.reward_range,
            reward_threshold=self.reward_threshold,
            entropy_threshold=self.entropy_threshold,
            extractor=self.extractor,
            temperature=self.temperature,
        )
        model, reward = self.model, self.step_reward

        async def sample(call: SampleCall) -> Completion:
            request = call.request
            if not isinstance(request, ScoreRequest):
                return await model(call)
            if reward is None:  # pragma: no cover - the core only scores with a reward
                raise InvalidInputError("a score request needs step_reward")
            metadata = {"dynasor_program_id": program.id, "dynasor_headers": call.headers}
            value = await reward.ainvoke(
                {"question": request.question, "steps": list(request.steps)},
                merge_configs(config, {"metadata": metadata}),
            )
            return reward_completion(value)

        return core, sample

    def as_completion(self, result: TreeSearchResult) -> Completion:
        """The answer as one sample of an enclosing strategy, with all the tokens it took."""
        text = boxed_answer(result.answer_text)
        return Completion(text, result.prompt_tokens, result.completion_tokens)
