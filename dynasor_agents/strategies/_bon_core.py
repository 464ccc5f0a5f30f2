"""Best-of-N with a reward and Certaindex early stop, as a sans-IO core.

The core samples candidates in rounds and scores each one as soon as it
finishes: either locally from the candidate itself (``score=``, e.g. the
built-in :func:`logprob_reward`), or by launching a *scoring request*
(:class:`ScoreRequest`, tagged ``("score", index)``) that the strategy's sampler
sends to a reward model or an LLM judge, concurrently with the candidates still
running. Certaindex is the best normalized reward so far: rewards only add
evidence, so once one candidate clears the controller's threshold the program
is settled whatever the pending candidates return, and the core cancels them.

Example (the core asks for a scoring request per candidate; the reward comes
back as the scoring completion's text):
    >>> from dynasor_agents.controller import CertaintyController, max_samples, threshold
    >>> from dynasor_agents.strategies._drive import Completion, Launch
    >>> core = best_of_n_core(
    ...     CertaintyController(threshold(0.9, min_samples=1) | max_samples(8), first_round=2),
    ...     program_id="doc",
    ... )
    >>> action = next(core)
    >>> isinstance(action, Launch), action.n, action.tag
    (True, 2, ('candidate',))
    >>> action = core.send(None)                                    # Await
    >>> action = core.send(Completion("x = 7", 10, 5, tag=CANDIDATE))
    >>> action.request, action.tag
    (ScoreRequest(candidate='x = 7', index=0), ('score', 0))
    >>> action = core.send(None)                                    # Await
    >>> type(core.send(Completion("0.95", tag=("score", 0)))).__name__  # clears 0.9
    'Cancel'
    >>> type(core.send([])).__name__, type(core.send(None)).__name__
    ('Emit', 'Finish')
    >>> try:
    ...     core.send(None)
    ... except StopIteration as done:
    ...     result = done.value
    >>> result.best, result.reward, result.samples, result.stop_reason.value
    ('x = 7', 0.95, 1, 'certain')
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from dynasor_agents.certainty import mean_token_probability
from dynasor_agents.controller import CertaintyController, ProgramState, StopReason
from dynasor_agents.errors import InvalidInputError, NoSamplesError
from dynasor_agents.protocol import Hints
from dynasor_agents.strategies._drive import (
    Completion,
    Core,
    Emit,
    Finish,
    Launch,
    await_round,
    server_ended,
)

__all__ = [
    "CANDIDATE",
    "BestOfNResult",
    "RewardRange",
    "ScoreRequest",
    "ScoredCandidate",
    "best_of_n_core",
    "check_reward_range",
    "logprob_reward",
    "normalize_reward",
]

CANDIDATE: Final = ("candidate",)
"""Tag of candidate requests; scoring requests are tagged ``("score", index)``."""

RewardRange = tuple[float, float]


@dataclass(frozen=True)
class ScoreRequest:
    """The ``request`` of a scoring launch: score candidate ``index``, whose text is given."""

    candidate: str
    index: int


class ScoredCandidate(BaseModel):
    """One candidate and its normalized reward in ``[0, 1]``."""

    model_config = ConfigDict(frozen=True)

    index: int
    text: str
    reward: float


class BestOfNResult(BaseModel):
    """The outcome of a best-of-N program (or a snapshot while it runs).

    Attributes:
        program_id: The program's id (also on the server).
        best: Text of the best-scored candidate (``None`` before any score).
        best_index: Its index (candidates are numbered in finish order).
        reward: Its normalized reward in ``[0, 1]``.
        certainty: Certaindex: the best normalized reward (0 before any score).
        trajectory: Certaindex after each round.
        candidates: Every scored candidate, in scoring order.
        samples: Scored candidates.
        unscored: Candidates that finished but were not scored (the program
            stopped first); their tokens are counted.
        rounds: Rounds taken.
        prompt_tokens: Prompt tokens of all candidates and scoring requests.
        completion_tokens: Completion tokens of all candidates and scoring requests.
        reward_tokens: The part of the tokens the scoring requests spent.
        stop_reason: Why it stopped; ``None`` in a snapshot of a running program.
        final: ``False`` for progress snapshots, ``True`` for the result.
    """

    model_config = ConfigDict(frozen=True)

    program_id: str
    best: str | None
    best_index: int | None = None
    reward: float | None = None
    certainty: float
    trajectory: list[float] = Field(default_factory=list)
    candidates: list[ScoredCandidate] = Field(default_factory=list)
    samples: int
    unscored: int = 0
    rounds: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reward_tokens: int = 0
    stop_reason: StopReason | None = None
    final: bool = False

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


def check_reward_range(reward_range: Sequence[float] | None) -> RewardRange | None:
    """Validate a ``(lo, hi)`` reward range (finite, ``lo < hi``).

    Example:
        >>> check_reward_range((0, 10))
        (0.0, 10.0)
        >>> check_reward_range((1, 1))
        Traceback (most recent call last):
        ...
        dynasor_agents.errors.InvalidInputError: reward_range must be two finite numbers lo < hi, got (1, 1)
    """  # noqa: E501
    if reward_range is None:
        return None
    try:
        lo, hi = (float(v) for v in reward_range)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InvalidInputError(
            f"reward_range must be two finite numbers lo < hi, got {reward_range!r}"
        )
    return lo, hi


def normalize_reward(value: Any, reward_range: RewardRange | None = None) -> float:
    """A raw reward (a number, or a string that parses as one) normalized to ``[0, 1]``.

    Without ``reward_range`` the reward must already lie in ``[0, 1]``; with
    ``(lo, hi)`` it must lie in that range and is mapped linearly onto ``[0, 1]``.

    Example:
        >>> normalize_reward("0.25"), normalize_reward(7, (0, 10))
        (0.25, 0.7)
        >>> normalize_reward(7)
        Traceback (most recent call last):
        ...
        dynasor_agents.errors.InvalidInputError: reward 7.0 is outside [0, 1]; pass reward_range=(lo, hi) to normalize it

    Raises:
        InvalidInputError: Not a number, NaN or infinite, or outside the range.
    """  # noqa: E501
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise InvalidInputError(f"reward must be a number, got {value!r}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise InvalidInputError(f"reward must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(number):
        raise InvalidInputError(f"reward must be a finite number, got {value!r}")
    lo, hi = reward_range or (0.0, 1.0)
    if not lo <= number <= hi:
        hint = "" if reward_range else "; pass reward_range=(lo, hi) to normalize it"
        raise InvalidInputError(f"reward {number!r} is outside [{lo:g}, {hi:g}]{hint}")
    return (number - lo) / (hi - lo)


def logprob_reward(done: Completion) -> float:
    """The built-in reward: the candidate's mean token probability, in ``[0, 1]``.

    Raises:
        InvalidInputError: The candidate carries no logprobs.
    """
    value = mean_token_probability(done.logprobs)
    if value is None:
        raise InvalidInputError(
            "no reward was given and the candidate has no token logprobs: pass reward=... "
            "or sample with logprobs (e.g. ChatOpenAI(..., logprobs=True))"
        )
    return value


def best_of_n_core(
    controller: CertaintyController,
    *,
    program_id: str,
    max_tokens: int | None = None,
    score: Callable[[Completion], float] | None = None,
    reward_range: RewardRange | None = None,
    reward_max_tokens: int | None = None,
) -> Core[BestOfNResult]:
    """The best-of-N program as a generator of actions.

    Args:
        controller: Decides stop / continue after each round; its state's
            ``certainty`` is the best normalized reward and ``samples`` counts
            scored candidates (so ``threshold(t, min_samples=1)`` stops on the
            first candidate that clears ``t``).
        program_id: Put on the result.
        max_tokens: Cap on each candidate's completion tokens.
        score: Scores a finished candidate locally (e.g. :func:`logprob_reward`);
            ``None`` launches a :class:`ScoreRequest` per candidate, whose
            completion's text is the raw reward.
        reward_range: ``(lo, hi)`` of raw rewards, mapped onto ``[0, 1]``.
        reward_max_tokens: ``max_tokens`` of each scoring request.

    Raises:
        InvalidInputError: A reward is not a number, not finite, or out of range.
        NoSamplesError: The program ended without a single scored candidate.
        ProgramStoppedError: The server refused the program before any score.
        BudgetExhaustedError: The server's budget was spent before any score.
    """
    reward_range = check_reward_range(reward_range)
    texts: list[str] = []
    scored: list[ScoredCandidate] = []
    state = ProgramState()
    reward_tokens = 0
    reason: StopReason | None = None

    def snapshot(final: bool) -> BestOfNResult:
        best = max(scored, key=lambda c: (c.reward, -c.index)) if scored else None
        return BestOfNResult(
            program_id=program_id,
            best=best.text if best else None,
            best_index=best.index if best else None,
            reward=best.reward if best else None,
            certainty=state.certainty,
            trajectory=list(state.trajectory),
            candidates=list(scored),
            samples=state.samples,
            unscored=len(texts) - len(scored),
            rounds=state.rounds,
            prompt_tokens=state.prompt_tokens,
            completion_tokens=state.completion_tokens,
            reward_tokens=reward_tokens,
            stop_reason=reason if final else None,
            final=final,
        )

    def spend(done: Completion) -> None:
        nonlocal state, reward_tokens
        state = replace(
            state,
            prompt_tokens=state.prompt_tokens + done.prompt_tokens,
            completion_tokens=state.completion_tokens + done.completion_tokens,
        )
        if _is_score(done.tag):
            reward_tokens += done.prompt_tokens + done.completion_tokens

    def take_score(index: int, raw: Any) -> None:
        nonlocal state
        reward = normalize_reward(raw, reward_range)
        scored.append(ScoredCandidate(index=index, text=texts[index], reward=reward))
        state = replace(state, samples=len(scored), certainty=max(state.certainty, reward))

    def add_candidate(done: Completion) -> int:
        texts.append(done.text)
        if score is not None:
            take_score(len(texts) - 1, score(done))
        return len(texts) - 1

    def take(done: Completion, *, hints: Hints) -> Launch | None:
        """Record one completion; a new candidate without ``score`` gets a scoring request."""
        spend(done)
        if _is_score(done.tag):
            take_score(done.tag[1], done.text)
            return None
        index = add_candidate(done)
        if score is not None:
            return None
        return Launch(
            n=1,
            max_tokens=reward_max_tokens,
            hints=hints,
            request=ScoreRequest(done.text, index),
            tag=("score", index),
        )

    def settled(pending: int) -> StopReason | None:
        """Rewards only add evidence: a cleared threshold stays cleared."""
        if not scored:
            return None
        verdict = controller.decide(state)
        if verdict.reason in (StopReason.CERTAIN, StopReason.MAX_TOKENS):
            return verdict.reason
        return None

    while reason is None:
        decision = controller.decide(state)
        if decision.stop:
            reason = decision.reason
            break
        cap = decision.budget
        hints = Hints(
            certainty=state.certainty if state.samples else None,
            budget=cap,
            remaining=decision.remaining,
        )
        per_sample = max_tokens if cap is None else min(cap, max_tokens or cap)
        yield Launch(n=decision.next_batch, max_tokens=per_sample, hints=hints, tag=CANDIDATE)
        reason, stragglers = yield from await_round(
            decision.next_batch,
            take=functools.partial(take, hints=hints),
            settled=settled,
            answered=lambda: bool(scored),
        )
        for done in stragglers:
            spend(done)
            if _is_score(done.tag):
                take_score(done.tag[1], done.text)
            else:
                add_candidate(done)
        state = replace(
            state, trajectory=(*state.trajectory, state.certainty), rounds=state.rounds + 1
        )
        yield Emit(snapshot(final=False))

    if not scored:
        raise NoSamplesError("best-of-n ended without a single scored candidate")
    # Settled early: abort stragglers anywhere. Ran out of samples or tokens: finish.
    yield Finish(stop=reason is StopReason.CERTAIN or server_ended(reason))
    return snapshot(final=True)


def _is_score(tag: Any) -> bool:
    return isinstance(tag, tuple) and len(tag) == 2 and tag[0] == "score"
