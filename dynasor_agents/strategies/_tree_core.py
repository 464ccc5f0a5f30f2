r"""Tree search over reasoning steps with Certaindex early stop, as a sans-IO core.

The core grows a :class:`~dynasor_agents.strategies._tree_policies.SearchTree`
in rounds. Each round the policy picks nodes to expand; each expansion is one
continuation request (``TextRequest(prompt + steps so far, stop=[delimiter])``,
``step_tokens`` long, tagged ``("step", node_id)``) whose text is one new
step. A step that states a final answer (``\boxed{}``, ``####``, "the answer
is"), ends the text (stop without the delimiter: end of sequence) or reaches
``max_depth`` makes a finished leaf. Each new step is then scored: by a
``("score", node_id)`` request to the step-reward Runnable (concurrent with
the other branches and cancellable like them), or, without one, by
``exp(mean token logprob)`` of the step.

Certaindex combines two signals, and the program is certain only when both
pass their thresholds: the *reward* signal (mean step reward of the finished
leaves for MCTS, max for REBASE and beam, as in the Dynasor paper; the open
nodes stand in before any leaf finished) and the *answer entropy* of the
finished leaves (``certaindex(cluster_answers(...))``, at least 2 leaves;
within a round, pending branches count as distinct answers, so stopping early
cannot be overturned by them). It stops when certain (cancelling pending
branches), when the controller says so (token budget, leaf cap), at
``max_nodes``, or when nothing is left to expand.

Example:
    >>> has_final_answer("so x = 4, and the answer is 4."), has_final_answer("x = 4")
    (True, False)
    >>> round(logprob_reward([-0.1, -0.3]), 4)     # exp(mean token logprob)
    0.8187
"""

from __future__ import annotations

import enum
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dynasor_agents.certainty import (
    AnswerExtractor,
    certaindex,
    cluster_answers,
    extract_answer,
    mean_token_probability,
)
from dynasor_agents.certainty import normalize_answer as _normalize
from dynasor_agents.controller import CertaintyController, ProgramState, StopReason
from dynasor_agents.errors import InvalidInputError, NoSamplesError
from dynasor_agents.protocol import Hints
from dynasor_agents.strategies._completions import TextRequest
from dynasor_agents.strategies._drive import (
    Completion,
    Core,
    Emit,
    Finish,
    Launch,
    await_round,
    server_ended,
)
from dynasor_agents.strategies._tree_policies import Node, SearchTree, TreePolicy

__all__ = [
    "Leaf",
    "ScoreRequest",
    "TreeSearchResult",
    "TreeStopReason",
    "has_final_answer",
    "logprob_reward",
    "tree_search_core",
]

_FINAL_RE = re.compile(
    r"\\(?:boxed|fbox)\s*\{|(?<!#)####(?!#)|\b(?:final\s+answer|answer)\s*(?:is\b|:)",
    re.IGNORECASE,
)


def has_final_answer(step: str) -> bool:
    r"""Whether a step states a final answer (``\boxed{}``, ``####``, "answer is" / "answer:")."""
    return _FINAL_RE.search(step) is not None


def logprob_reward(logprobs: Any) -> float:
    """``exp(mean token logprob)`` of a step, in ``[0, 1]`` (0 for an empty step).

    Reads what :class:`CompletionsModel` returns (the sampled tokens'
    log-probabilities) or any form :func:`mean_token_probability` accepts.

    Raises:
        InvalidInputError: No logprobs (``None``): the server returned none.
    """
    if logprobs is None:
        raise InvalidInputError(
            "TreeSearch without step_reward scores steps by their token logprobs, but the "
            "server returned none; pass step_reward=... or use a server that returns logprobs"
        )
    value = mean_token_probability(logprobs)
    return 0.0 if value is None else value


@dataclass(frozen=True)
class ScoreRequest:
    """Ask the step-reward Runnable to score the last of ``steps``."""

    question: str
    steps: tuple[str, ...]


class TreeStopReason(enum.StrEnum):
    """Stop reasons of tree search beyond the controller's :class:`StopReason`."""

    MAX_DEPTH = "max_depth"
    """Every branch ended, some only because they reached ``max_depth``."""
    MAX_NODES = "max_nodes"
    """The node cap was reached."""
    COMPLETE = "complete"
    """Every branch ended with a final answer or the end of the text."""


class Leaf(BaseModel):
    """A finished branch: its answer, the reward of its last step and its depth."""

    model_config = ConfigDict(frozen=True)

    answer: str | None
    reward: float
    depth: int


class TreeSearchResult(BaseModel):
    """The outcome of a tree-search program (or a snapshot while it runs).

    Attributes:
        program_id: The program's id (also on the server).
        policy: The policy, e.g. ``"rebase(width=8, temperature=0.2)"``.
        answer: The answer with the largest total leaf reward, normalized.
        answer_text: That answer as its best leaf wrote it.
        best_path: The steps of the best leaf with that answer (of the best
            scored node while no leaf finished).
        best_reward: The step reward at the end of ``best_path``.
        leaves: Every finished, scored leaf.
        votes: Total leaf reward per normalized answer, largest first.
        nodes: Nodes created (steps generated).
        rounds: Rounds (selection/expansion waves) taken.
        prompt_tokens: Prompt tokens of all requests, scoring included.
        completion_tokens: Completion tokens of all requests, scoring included.
        certainty: ``min(reward_certainty, entropy_certainty)``.
        reward_certainty: The reward signal (mean for MCTS, max otherwise).
        entropy_certainty: Answer-entropy Certaindex of the finished leaves.
        trajectory: ``certainty`` after each round.
        stop_reason: Why it stopped; ``None`` in a snapshot of a running program.
        final: ``False`` for progress snapshots, ``True`` for the result.
    """

    model_config = ConfigDict(frozen=True)

    program_id: str
    policy: str
    answer: str | None
    answer_text: str | None = None
    best_path: list[str] = Field(default_factory=list)
    best_reward: float | None = None
    leaves: list[Leaf] = Field(default_factory=list)
    votes: dict[str, float] = Field(default_factory=dict)
    nodes: int = 0
    rounds: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    certainty: float = 0.0
    reward_certainty: float = 0.0
    entropy_certainty: float = 0.0
    trajectory: list[float] = Field(default_factory=list)
    stop_reason: StopReason | TreeStopReason | None = None
    final: bool = False

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


def _unit(name: str, value: float) -> float:
    if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def check_config(
    *,
    delimiter: str,
    step_tokens: int,
    max_depth: int,
    max_nodes: int,
    reward_range: tuple[float, float],
    reward_threshold: float,
    entropy_threshold: float,
) -> None:
    """Raise :class:`InvalidInputError` naming the first bad setting."""
    if not isinstance(delimiter, str) or not delimiter:
        raise InvalidInputError(f"delimiter must be a non-empty string, got {delimiter!r}")
    for name, value in (
        ("step_tokens", step_tokens),
        ("max_depth", max_depth),
        ("max_nodes", max_nodes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be an int >= 1, got {value!r}")
    lo, hi = reward_range
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InvalidInputError(f"reward_range must be finite (low, high), got {reward_range!r}")
    _unit("reward_threshold", reward_threshold)
    _unit("entropy_threshold", entropy_threshold)


def tree_search_core(
    prompt: str,
    *,
    question: str,
    policy: TreePolicy,
    controller: CertaintyController,
    program_id: str,
    scored: bool,
    delimiter: str = "\n\n",
    step_tokens: int = 64,
    max_depth: int = 8,
    max_nodes: int = 64,
    reward_range: tuple[float, float] = (0.0, 1.0),
    reward_threshold: float = 0.7,
    entropy_threshold: float = 0.8,
    extractor: AnswerExtractor = extract_answer,
    key: Callable[[str], str] = _normalize,
    temperature: float | None = None,
) -> Core[TreeSearchResult]:
    """The tree-search program as a generator of actions.

    Args:
        prompt: The formatted prompt that steps continue.
        question: The bare question, for the step-reward Runnable.
        policy: :class:`beam`, :class:`rebase` or :class:`mcts`.
        controller: Token budget and leaf cap (``max_samples`` counts leaves).
        program_id: Put on the result.
        scored: Score steps with ``ScoreRequest`` s (else by token logprobs).
        delimiter: Ends a step (the stop sequence).
        step_tokens: Completion-token cap of one step.
        max_depth: Steps after which a branch is a finished leaf.
        max_nodes: Steps generated at most.
        reward_range: ``(low, high)`` of raw step rewards, mapped to ``[0, 1]``.
        reward_threshold: The reward signal needed to be certain.
        entropy_threshold: The answer-entropy Certaindex needed to be certain.
        extractor: Pulls a leaf's answer out of its whole solution.
        key: Normalizes answers so equal answers cluster.
        temperature: Sampling temperature of steps (``None``: the model's).

    Raises:
        InvalidInputError: A bad setting, a step reward that is not a finite
            number in ``reward_range``, or no logprobs for built-in scoring.
        ProgramStoppedError: The server refused the program before any step.
        BudgetExhaustedError: The budget was spent before any step.
    """
    check_config(
        delimiter=delimiter,
        step_tokens=step_tokens,
        max_depth=max_depth,
        max_nodes=max_nodes,
        reward_range=reward_range,
        reward_threshold=reward_threshold,
        entropy_threshold=entropy_threshold,
    )
    tree = SearchTree()
    state = ProgramState()
    signals = (0.0, 0.0)
    reason: StopReason | TreeStopReason | None = None
    depth_capped = False
    lo, hi = reward_range

    def measure(pending: int = 0) -> tuple[float, float]:
        leaves = tree.leaves()
        pool = [n.reward for n in leaves] or [n.reward for n in tree.open_nodes()]
        values = [r for r in pool if r is not None]
        reward = 0.0
        if values:
            reward = sum(values) / len(values) if policy.aggregate == "mean" else max(values)
        entropy = 0.0
        if len(leaves) >= 2:
            answers = [n.answer for n in leaves] + [None] * pending
            entropy = certaindex(cluster_answers(answers, key=key))
        return reward, entropy

    def certain(pair: tuple[float, float]) -> bool:
        return pair[0] >= reward_threshold and pair[1] >= entropy_threshold

    def spend(done: Completion) -> None:
        nonlocal state
        state = replace(
            state,
            prompt_tokens=state.prompt_tokens + done.prompt_tokens,
            completion_tokens=state.completion_tokens + done.completion_tokens,
        )

    def grow(parent: Node, done: Completion) -> Node:
        nonlocal depth_capped
        head, sep, _ = done.text.partition(delimiter)
        node = tree.add(parent, head)
        ended = done.finish_reason == "stop" and not sep  # end of sequence, not the delimiter
        final = ended or has_final_answer(head)
        if final or node.depth >= max_depth:
            node.terminal = True
            node.answer = extractor(delimiter.join(node.steps))
            depth_capped = depth_capped or not final
        return node

    def reward_of(done: Completion) -> float:
        try:
            value = float(done.text)
        except ValueError:
            raise InvalidInputError(f"step reward must be a number, got {done.text!r}") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise InvalidInputError(
                f"step reward must be a finite number in [{lo}, {hi}], got {value!r}"
            )
        return (value - lo) / (hi - lo)

    def deliver(done: Completion, *, straggler: bool = False) -> Node | None:
        """Record a finished request; returns a new node that still needs scoring."""
        spend(done)
        kind, node_id = done.tag
        if kind == "score":
            tree.score(tree.nodes[node_id], reward_of(done))
            return None
        node = grow(tree.nodes[node_id], done)
        if not scored:
            tree.score(node, logprob_reward(done.logprobs))
            return None
        return None if straggler else node

    def take(done: Completion, *, hints: Hints) -> Launch | None:
        """Record one completion; a new step that needs scoring gets a scoring request."""
        fresh = deliver(done)
        if fresh is None:
            return None
        score = ScoreRequest(question, fresh.steps)
        return Launch(1, None, hints, request=score, tag=("score", fresh.id))

    def settled(pending: int) -> StopReason | None:
        """Certain whatever the ``pending`` branches say, or out of tokens: stop now."""
        nonlocal state
        state = replace(state, samples=len(tree.leaves()))
        if certain(measure(pending)):
            return StopReason.CERTAIN
        if controller.decide(state).reason is StopReason.MAX_TOKENS:
            return StopReason.MAX_TOKENS
        return None

    def snapshot(final: bool) -> TreeSearchResult:
        leaves = tree.leaves()
        votes: dict[str, tuple[float, int]] = {}
        for leaf in leaves:
            k = key(leaf.answer) if leaf.answer else ""
            if k:
                weight, count = votes.get(k, (0.0, 0))
                votes[k] = (weight + (leaf.reward or 0.0), count + 1)
        ranked = sorted(votes, key=lambda k: votes[k], reverse=True)
        answer = ranked[0] if ranked else None
        pool = [n for n in leaves if answer is not None and n.answer and key(n.answer) == answer]
        pool = pool or leaves or [n for n in tree.nodes if n.reward is not None]
        best = max(pool, key=lambda n: (n.reward or 0.0, n.depth), default=None)
        return TreeSearchResult(
            program_id=program_id,
            policy=repr(policy),
            answer=answer,
            answer_text=best.answer if answer is not None and best is not None else None,
            best_path=list(best.steps) if best is not None else [],
            best_reward=best.reward if best is not None else None,
            leaves=[Leaf(answer=n.answer, reward=n.reward or 0.0, depth=n.depth) for n in leaves],
            votes={k: round(votes[k][0], 6) for k in ranked},
            nodes=tree.size,
            rounds=state.rounds,
            prompt_tokens=state.prompt_tokens,
            completion_tokens=state.completion_tokens,
            certainty=state.certainty,
            reward_certainty=signals[0],
            entropy_certainty=signals[1],
            trajectory=list(state.trajectory),
            stop_reason=reason if final else None,
            final=final,
        )

    while reason is None:
        decision = controller.decide(state)
        if decision.stop:
            reason = decision.reason
            break
        if tree.size >= max_nodes:
            reason = TreeStopReason.MAX_NODES
            break
        room = max_nodes - tree.size
        picks: list[tuple[Node, int]] = []
        for node, n in policy.select(tree):
            n = min(n, room)
            if n > 0:
                picks.append((node, n))
                room -= n
        if not picks:
            reason = TreeStopReason.MAX_DEPTH if depth_capped else TreeStopReason.COMPLETE
            break
        cap = decision.budget
        hints = Hints(
            certainty=state.certainty if state.rounds else None,
            budget=cap,
            remaining=decision.remaining,
        )
        for node, n in picks:
            text = prompt + "".join(step + delimiter for step in node.steps)
            request = TextRequest(
                text,
                stop=[delimiter],
                temperature=temperature,
                logprobs=None if scored else 1,
                extra={"include_stop_str_in_output": True},
            )
            per_step = step_tokens if cap is None else min(cap, step_tokens)
            yield Launch(n, per_step, hints, request=request, tag=("step", node.id))
        reason, stragglers = yield from await_round(
            sum(n for _, n in picks),
            take=functools.partial(take, hints=hints),
            settled=settled,
            answered=lambda: tree.size > 0,
        )
        for done in stragglers:
            deliver(done, straggler=True)
        signals = measure()
        state = replace(
            state,
            samples=len(tree.leaves()),
            certainty=min(signals),
            rounds=state.rounds + 1,
            trajectory=(*state.trajectory, min(signals)),
        )
        if reason is None and certain(signals):
            reason = StopReason.CERTAIN
        yield Emit(snapshot(final=False))

    if tree.size == 0:
        raise NoSamplesError("tree search ended without a single step")
    yield Finish(stop=reason is StopReason.CERTAIN or server_ended(reason))
    return snapshot(final=True)
