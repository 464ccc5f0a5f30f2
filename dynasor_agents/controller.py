"""The certainty controller: small composable policies over one typed program state.

After each round (a *detect step* in the paper) a strategy hands the controller a
:class:`ProgramState`; the controller returns a :class:`Decision`: stop (and why)
or continue with the next batch size and the token budget left. Policies compose
like tenacity's stop conditions: ``a | b`` stops as soon as either does, and the
tighter of their batch and budget caps wins.

Example:
    >>> ctl = CertaintyController(threshold(0.8) | max_samples(20), first_round=5)
    >>> ctl.decide(ProgramState()).next_batch
    5
    >>> settled = ProgramState(samples=5, certainty=1.0, trajectory=(1.0,))
    >>> ctl.decide(settled).reason
    <StopReason.CERTAIN: 'certain'>
    >>> ctl.decide(ProgramState(samples=18, certainty=0.3)).next_batch  # capped at 20
    2
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from dataclasses import dataclass

from dynasor_agents.errors import InvalidInputError

__all__ = [
    "CertaintyController",
    "Decision",
    "Policy",
    "ProgramState",
    "StopReason",
    "Verdict",
    "any_of",
    "max_samples",
    "max_tokens",
    "threshold",
]


class StopReason(enum.StrEnum):
    """Why a reasoning program stopped."""

    CERTAIN = "certain"
    """Certaindex reached the threshold: the answer is settled."""
    MAX_SAMPLES = "max_samples"
    """The sample cap was reached."""
    MAX_TOKENS = "max_tokens"
    """The token budget was spent."""
    SERVER_STOPPED = "server_stopped"
    """The server refused the program (stopped by another party)."""
    DEADLINE = "deadline"
    """The server stopped the program because its deadline passed."""
    FINISHED = "finished"
    """The model ended on its own (e.g. a chain of thought reached its answer)."""
    HOPELESS = "hopeless"
    """Certaindex stayed very low after enough samples: the query is unlikely to
    settle, and its majority is usually wrong; stop spending on it."""


@dataclass(frozen=True)
class ProgramState:
    """Everything a policy may look at, after the latest completed sample.

    Attributes:
        samples: Completed samples, including those with no answer.
        certainty: Latest Certaindex in ``[0, 1]``.
        trajectory: Certaindex after each detect step so far.
        rounds: Completed detect steps.
        prompt_tokens: Prompt tokens spent so far.
        completion_tokens: Completion tokens spent so far.
        answers: The normalized answer of each completed sample, in completion
            order (``None``: no answer found); empty when the strategy does not
            report answers. Answer-based rules such as ``adaptive_consistency``
            read these.
        confidences: Optional per-sample trace confidence aligned with
            ``answers``, higher meaning more confident (e.g. DeepConf's lowest
            group confidence); empty when the strategy has none.
    """

    samples: int = 0
    certainty: float = 0.0
    trajectory: tuple[float, ...] = ()
    rounds: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    answers: tuple[str | None, ...] = ()
    confidences: tuple[float, ...] = ()

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Verdict:
    """One policy's opinion: stop (with a reason), and caps on batch and budget."""

    stop: StopReason | None = None
    batch_cap: int | None = None
    budget: int | None = None

    def merge(self, other: Verdict) -> Verdict:
        """Combine two verdicts: the first stop wins, the tighter caps win."""
        return Verdict(
            stop=self.stop or other.stop,
            batch_cap=_min_opt(self.batch_cap, other.batch_cap),
            budget=_min_opt(self.budget, other.budget),
        )


def _min_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


class Policy(abc.ABC):
    """A small rule over :class:`ProgramState`; combine rules with ``|``."""

    @abc.abstractmethod
    def __call__(self, state: ProgramState) -> Verdict:
        """Judge the state."""

    def __or__(self, other: Policy) -> any_of:
        return any_of(self, other)


class any_of(Policy):  # noqa: N801 - lowercase like tenacity's policy objects
    """Stop when any member policy stops; the tightest caps apply."""

    def __init__(self, *policies: Policy) -> None:
        flat: list[Policy] = []
        self.policies: tuple[Policy, ...]
        for p in policies:
            if not isinstance(p, Policy):
                raise InvalidInputError(f"any_of expects Policy objects, got {p!r}")
            flat.extend(p.policies if isinstance(p, any_of) else (p,))
        self.policies = tuple(flat)

    def __call__(self, state: ProgramState) -> Verdict:
        verdict = Verdict()
        for p in self.policies:
            verdict = verdict.merge(p(state))
        return verdict

    def __repr__(self) -> str:
        return " | ".join(repr(p) for p in self.policies)


class threshold(Policy):  # noqa: N801
    """Stop as ``CERTAIN`` once Certaindex reaches ``value`` at a detect step.

    Args:
        value: The Certaindex threshold in ``[0, 1]``.
        min_samples: Do not judge before this many samples (default 2; one
            sample is no evidence).

    Example:
        >>> threshold(0.7)(ProgramState(samples=5, certainty=0.75)).stop
        <StopReason.CERTAIN: 'certain'>
        >>> threshold(1.5)
        Traceback (most recent call last):
        ...
        dynasor_agents.errors.InvalidInputError: threshold must be in [0, 1], got 1.5
    """

    def __init__(self, value: float, *, min_samples: int = 2) -> None:
        if not 0.0 <= value <= 1.0:
            raise InvalidInputError(f"threshold must be in [0, 1], got {value!r}")
        if min_samples < 1:
            raise InvalidInputError(f"min_samples must be >= 1, got {min_samples!r}")
        self.value = float(value)
        self.min_samples = min_samples

    def __call__(self, state: ProgramState) -> Verdict:
        if state.samples >= self.min_samples and state.certainty >= self.value:
            return Verdict(stop=StopReason.CERTAIN)
        return Verdict()

    def __repr__(self) -> str:
        return f"threshold({self.value})"


class max_samples(Policy):  # noqa: N801
    """Stop after ``n`` samples; never start more than are left.

    Example:
        >>> max_samples(8)(ProgramState(samples=6)).batch_cap
        2
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise InvalidInputError(f"max_samples must be >= 1, got {n!r}")
        self.n = n

    def __call__(self, state: ProgramState) -> Verdict:
        left = self.n - state.samples
        if left <= 0:
            return Verdict(stop=StopReason.MAX_SAMPLES, batch_cap=0)
        return Verdict(batch_cap=left)

    def __repr__(self) -> str:
        return f"max_samples({self.n})"


class max_tokens(Policy):  # noqa: N801
    """Stop once the program spent ``n`` completion tokens; report what is left.

    The remaining budget is sent to the server, which clamps ``max_tokens``.

    Example:
        >>> max_tokens(1000)(ProgramState(completion_tokens=400)).budget
        600
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise InvalidInputError(f"max_tokens must be >= 1, got {n!r}")
        self.n = n

    def __call__(self, state: ProgramState) -> Verdict:
        left = self.n - state.completion_tokens
        if left <= 0:
            return Verdict(stop=StopReason.MAX_TOKENS, budget=0)
        return Verdict(budget=left)

    def __repr__(self) -> str:
        return f"max_tokens({self.n})"


@dataclass(frozen=True)
class Decision:
    """What to do after a detect step.

    Attributes:
        stop: Whether the program should stop now.
        reason: Why it stops (``None`` while it continues).
        next_batch: Samples to start in the next round (0 when stopping).
        budget: Completion tokens the program may still spend, if capped.
        remaining: Samples the program may still start (this round's
            included), if capped; sent to the server's scheduler.
    """

    stop: bool
    reason: StopReason | None = None
    next_batch: int = 0
    budget: int | None = None
    remaining: int | None = None


@dataclass(frozen=True)
class CertaintyController:
    """Decides stop / continue, batch size and budget from a :class:`ProgramState`.

    Args:
        policy: The stop and cap rules, e.g. ``threshold(0.8) | max_samples(20)``.
        first_round: Samples in the first round (the first detect step).
        round_size: Samples in each later round.
        busy_first_round: The first round while the server's engine has requests
            waiting (``None``: always ``first_round``). With a strategy's
            ``client``, each program asks the server's load when it starts
            (:meth:`for_load`): set ``first_round`` to the whole sample cap to
            run every sample at once while the engine is idle (the fastest
            answer), and this to a detect-at-5 round to stop early and save the
            engine for other programs once requests queue.

    Example:
        >>> ctl = CertaintyController(max_samples(16), first_round=16, busy_first_round=5)
        >>> ctl.for_load(waiting=0).first_round, ctl.for_load(waiting=7).first_round
        (16, 5)
        >>> ctl.for_load(waiting=None).first_round  # load unknown: as if idle
        16
    """

    policy: Policy = dataclasses.field(default_factory=lambda: threshold(0.8) | max_samples(20))
    first_round: int = 5
    round_size: int = 5
    busy_first_round: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.policy, Policy):
            raise InvalidInputError(f"policy must be a Policy, got {self.policy!r}")
        for name in ("first_round", "round_size", "busy_first_round"):
            value = getattr(self, name)
            if name == "busy_first_round" and value is None:
                continue
            if not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be an int >= 1, got {value!r}")

    @property
    def load_adaptive(self) -> bool:
        """Whether the first round depends on the server's load."""
        return self.busy_first_round is not None

    def for_load(self, waiting: int | None) -> CertaintyController:
        """This controller for a program starting while ``waiting`` requests queue.

        Returns:
            A copy whose ``first_round`` is ``busy_first_round`` when requests
            wait, else this controller unchanged (also when ``waiting`` is
            unknown, ``None``).
        """
        if self.busy_first_round is None or not waiting:
            return self
        return dataclasses.replace(self, first_round=self.busy_first_round)

    def decide(self, state: ProgramState) -> Decision:
        """Judge ``state`` and return the next :class:`Decision`."""
        verdict = self.policy(state)
        if verdict.stop is not None:
            return Decision(stop=True, reason=verdict.stop, budget=verdict.budget)
        batch = self.first_round if state.samples == 0 else self.round_size
        if verdict.batch_cap is not None:
            batch = min(batch, verdict.batch_cap)
        return Decision(
            stop=False, next_batch=batch, budget=verdict.budget, remaining=verdict.batch_cap
        )
