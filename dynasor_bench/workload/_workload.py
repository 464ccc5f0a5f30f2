"""The online workload: programs arriving as a Poisson process, each with a deadline.

One :class:`OnlineWorkload` is what every system in an online comparison receives:
the same programs (each with a uuid, drawn from the seed) at the same arrival
times. A program is a question from a trace bank run by one strategy of the
mix. Its deadline has two forms (:data:`DeadlineForm`), both reported:

* ``program``: ``slo_scale x difficulty x base``, where ``base`` is the
  strategy's latency on an idle server at average difficulty and
  ``difficulty`` is how much longer the question's source tends to run than
  the bank's average (its recorded paths' mean length over the bank's);
* ``fixed`` (the paper's form): ``slo_scale x`` one deadline per strategy of
  the workload, whatever the question (the paper: 240 s for self-consistency
  on MATH); here the strategy's median latency alone on an idle server (see
  :func:`~dynasor_bench.online._plan.fixed_deadlines`).

Deadlines only judge the results: no system here schedules by them, so one
run gives the attainment at every SLO scale under both forms.

:class:`OnlineRow` is one finished (or failed) program, as measured by the real
load generator or predicted by the simulator; both write the same rows.

Example:
    >>> import numpy as np
    >>> arrivals = poisson_arrivals(2.0, 4, np.random.default_rng(0))
    >>> [round(t, 3) for t in arrivals]
    [0.34, 0.85, 0.86, 0.861]
    >>> row = OnlineRow(system="baseline", rate=2.0, program=0, question="q:1",
    ...                 source="gsm8k", strategy="sc-8", arrival=0.0, finish=3.0,
    ...                 deadline_unit=2.0, completion_tokens=900, samples=8,
    ...                 answer="4", correct=True)
    >>> row.latency, row.met(1.0), row.met(1.5)
    (3.0, False, True)
    >>> fixed = row.model_copy(update={"deadline_fixed": 4.0})
    >>> fixed.met(1.0, "fixed"), fixed.unit("fixed")
    (True, 4.0)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict

from dynasor_agents import hopeless
from dynasor_agents.controller import CertaintyController, max_samples, threshold
from dynasor_agents.errors import InvalidInputError
from dynasor_bench.traces._bank import QuestionTrace

__all__ = [
    "DEADLINE_FORMS",
    "DEFAULT_MIX",
    "DeadlineForm",
    "SYSTEMS",
    "OnlineRow",
    "OnlineStrategy",
    "ProgramSpec",
    "SystemSpec",
    "OnlineWorkload",
    "make_workload",
    "poisson_arrivals",
    "program_uuids",
    "source_difficulty",
]

DeadlineForm = Literal["program", "fixed"]
"""``program``: scale x difficulty x base per program; ``fixed``: scale x one
deadline per strategy (the paper's form)."""
DEADLINE_FORMS: tuple[DeadlineForm, ...] = get_args(DeadlineForm)


@dataclass(frozen=True)
class OnlineStrategy:
    """A self-consistency program of up to ``samples`` paths.

    Without early stop it launches all its samples at once and waits for all
    (the baseline). With early stop it samples in ``rounds`` rounds (default
    two of half each) and stops once Certaindex reaches ``certain`` (also mid-round, cancelling
    what is still running), or gives up when Certaindex is still below
    ``hopeless_below`` after half its samples.

    Example:
        >>> s = OnlineStrategy("sc-8", 8)
        >>> fixed, early = s.controller(early_stop=False), s.controller(early_stop=True)
        >>> (fixed.first_round, fixed.round_size), (early.first_round, early.round_size)
        ((8, 8), (4, 4))
        >>> s.controller(early_stop=True, rounds=1).first_round
        8
    """

    name: str
    samples: int
    certain: float = 0.7
    hopeless_below: float = 0.3

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise InvalidInputError(f"strategy {self.name}: samples must be >= 2")

    def controller(self, *, early_stop: bool, rounds: int = 2) -> CertaintyController:
        """The controller of one program of this strategy.

        Args:
            early_stop: Stop on Certaindex (else run all samples).
            rounds: Detect steps of an early-stopping program; with 1, all
                samples start at once and the program stops mid-round,
                cancelling the rest, once the answer is settled whatever they
                would say.
        """
        n = self.samples
        if not early_stop:
            return CertaintyController(max_samples(n), first_round=n, round_size=n)
        policy = (
            threshold(self.certain)
            | hopeless(self.hopeless_below, after=max(2, n // 2))
            | max_samples(n)
        )
        size = max(1, -(-n // max(1, rounds)))
        return CertaintyController(policy, first_round=size, round_size=size)


DEFAULT_MIX: Mapping[str, tuple[OnlineStrategy, float]] = {
    "sc-8": (OnlineStrategy("sc-8", 8), 0.7),
    "sc-16": (OnlineStrategy("sc-16", 16), 0.3),
}
"""Strategy name to (strategy, share of arrivals)."""


@dataclass(frozen=True)
class SystemSpec:
    """One serving system of the comparison.

    Attributes:
        name: Its name in tables and plots.
        scheduling: ``plain`` is vLLM without our server component (its own
            first-come-first-served order); ``gang``, ``dynasor``, ``las``
            and ``edf`` are our component's program-level policies on vLLM's
            priority scheduler.
        early_stop: Whether the client stops programs on Certaindex.
        description: One line for the report.
        rounds: Detect steps of an early-stopping program (see
            :meth:`OnlineStrategy.controller`).
        deadline_hint: The SLO scale of the per-program deadline the client
            sends as its deadline hint (``arrival + scale x deadline_unit``);
            ``None``: no hint. ``edf`` ranks by it, and the server stops a
            program once it has passed.
    """

    name: str
    scheduling: Literal["plain", "gang", "dynasor", "las", "edf"]
    early_stop: bool
    description: str = ""
    rounds: int = 2
    deadline_hint: float | None = None


SYSTEMS: tuple[SystemSpec, ...] = (
    SystemSpec("baseline", "plain", False, "plain vLLM (FCFS), fixed sample counts"),
    SystemSpec("early-stop", "plain", True, "client Certaindex early stop, plain vLLM (FCFS)"),
    SystemSpec("dynasor", "dynasor", True, "early stop + program scheduling (gang, SRF, aging)"),
    SystemSpec("gang", "gang", False, "gang scheduling alone, fixed sample counts"),
    SystemSpec(
        "srf", "dynasor", False, "program scheduling (gang, SRF, aging) alone, fixed sample counts"
    ),
    SystemSpec(
        "las", "las", False, "least attained service per program (Autellix-like), fixed counts"
    ),
    SystemSpec(
        "edf",
        "edf",
        False,
        "earliest deadline first on per-program deadline hints at SLO x3 (late programs "
        "stopped), fixed sample counts",
        deadline_hint=3.0,
    ),
)
"""The systems ``bench online`` compares, baseline first: the first four as before, then
program scheduling without early stop: ``srf`` (shortest-remaining-first), ``las``
(least attained service) and ``edf`` (earliest deadline first)."""


@dataclass(frozen=True)
class ProgramSpec:
    """One program of a workload.

    Attributes:
        index: Its place in arrival order.
        arrival: Seconds after the run starts.
        question: The bank's question (its gold answer judges the result; the
            simulator also replays its recorded paths).
        strategy: The strategy that runs it.
        difficulty: The question's source's mean path length over the bank's.
        base: The strategy's idle-server latency at difficulty 1, seconds.
        program_id: Its id on the wire (a uuid; empty: ``p<index>``).
        fixed_deadline: Its strategy's fixed deadline at SLO scale 1, seconds
            (the paper's form; ``None``: not set).
    """

    index: int
    arrival: float
    question: QuestionTrace
    strategy: OnlineStrategy
    difficulty: float
    base: float
    program_id: str = ""
    fixed_deadline: float | None = None

    @property
    def id(self) -> str:
        """The program id its requests carry."""
        return self.program_id or f"p{self.index}"

    @property
    def deadline_unit(self) -> float:
        """The per-program deadline at SLO scale 1, seconds after arrival."""
        return self.difficulty * self.base


@dataclass(frozen=True)
class OnlineWorkload:
    """The programs every compared system receives, in arrival order."""

    rate: float
    seed: int
    programs: tuple[ProgramSpec, ...]


class OnlineRow(BaseModel):
    """One program's outcome under one system.

    Attributes:
        system: The system that served it.
        rate: The arrival rate of its run, programs per second.
        program: Its index in the workload.
        question: The question's id; ``source`` its dataset.
        strategy: The strategy's name.
        arrival: Seconds after the run started; ``finish`` likewise.
        deadline_unit: Its per-program deadline at SLO scale 1, seconds after
            arrival (``program`` form).
        completion_tokens: Completion tokens the client was charged.
        samples: Samples that completed.
        answer: The program's answer (normalized); ``correct`` against gold.
        stop_reason: Why the controller stopped it.
        error: Why it failed, if it did (a failed program misses its deadline).
        deadline_fixed: Its strategy's fixed deadline at SLO scale 1
            (``fixed`` form; ``None`` in rows stored before it existed).
        seed: The workload's seed (``None`` in older rows).
        replica: The replica that served it (simulated runs).
    """

    model_config = ConfigDict(frozen=True)

    system: str
    rate: float
    program: int
    question: str
    source: str
    strategy: str
    arrival: float
    finish: float
    deadline_unit: float
    completion_tokens: int
    samples: int
    answer: str | None
    correct: bool
    stop_reason: str | None = None
    error: str | None = None
    deadline_fixed: float | None = None
    seed: int | None = None
    replica: int | None = None

    @property
    def latency(self) -> float:
        """Seconds from arrival to finish."""
        return self.finish - self.arrival

    def unit(self, form: DeadlineForm = "program") -> float:
        """Its deadline at SLO scale 1 in ``form``, seconds after arrival.

        Raises:
            InvalidInputError: An unknown form, or ``fixed`` on a row without one.
        """
        if form == "program":
            return self.deadline_unit
        if form == "fixed":
            if self.deadline_fixed is None:
                raise InvalidInputError(
                    f"{self.system} @ {self.rate:g}/s program {self.program} has no fixed "
                    "deadline (a row stored before the paper's form existed)"
                )
            return self.deadline_fixed
        raise InvalidInputError(f"unknown deadline form {form!r}; choose from {DEADLINE_FORMS}")

    def met(self, slo_scale: float, form: DeadlineForm = "program") -> bool:
        """Whether it finished, without error, within ``slo_scale`` x its unit deadline.

        A :attr:`late` program meets none.
        """
        return not self.late and self.latency <= slo_scale * self.unit(form)

    @property
    def late(self) -> bool:
        """Whether it failed, or the server stopped it because its deadline hint passed
        (stop reason ``deadline``: it answered with what it had, and counts as a miss at
        every SLO scale, else stopping programs at their deadline would meet them all)."""
        return self.error is not None or self.stop_reason == "deadline"


def poisson_arrivals(rate: float, count: int, rng: np.random.Generator) -> list[float]:
    """``count`` arrival times (seconds) of a Poisson process of ``rate`` per second."""
    if not rate > 0:
        raise InvalidInputError(f"arrival rate must be > 0, got {rate!r}")
    if count < 0:
        raise InvalidInputError(f"program count must be >= 0, got {count!r}")
    return [float(t) for t in np.cumsum(rng.exponential(1.0 / rate, size=count))]


def program_uuids(count: int, rng: np.random.Generator) -> list[str]:
    """``count`` version-4 uuids drawn from ``rng`` (reproducible, unlike ``uuid4()``).

    Example:
        >>> ids = program_uuids(2, np.random.default_rng(0))
        >>> ids == program_uuids(2, np.random.default_rng(0)), uuid.UUID(ids[0]).version
        (True, 4)
    """
    return [
        str(uuid.UUID(int=int.from_bytes(rng.bytes(16), "little"), version=4)) for _ in range(count)
    ]


def source_difficulty(questions: Sequence[QuestionTrace]) -> dict[str, float]:
    """Per source, its recorded paths' mean length over the whole bank's.

    Example:
        >>> from dynasor_bench.traces._bank import PathTrace
        >>> def q(src, n):
        ...     p = PathTrace(text="", answer=None, completion_tokens=n)
        ...     return QuestionTrace(id=f"{src}:{n}", source=src, question="", gold="",
        ...                          prompt_tokens=1, paths=[p])
        >>> source_difficulty([q("easy", 100), q("hard", 300)])
        {'easy': 0.5, 'hard': 1.5}
    """
    lengths: dict[str, list[int]] = {}
    for q in questions:
        lengths.setdefault(q.source, []).extend(p.completion_tokens for p in q.paths)
    every = [n for ns in lengths.values() for n in ns]
    if not every or sum(every) == 0:
        raise InvalidInputError("the bank has no recorded tokens to measure difficulty by")
    mean = sum(every) / len(every)
    return {src: (sum(ns) / len(ns)) / mean for src, ns in sorted(lengths.items())}


def make_workload(
    questions: Sequence[QuestionTrace],
    *,
    rate: float,
    count: int,
    seed: int,
    base: Mapping[str, float],
    mix: Mapping[str, tuple[OnlineStrategy, float]] = DEFAULT_MIX,
    fixed: Mapping[str, float] | None = None,
) -> OnlineWorkload:
    """Draw ``count`` programs arriving at ``rate`` per second, reproducibly from ``seed``.

    Questions are drawn uniformly (with replacement once all are used),
    strategies by their shares and program ids as uuids, from generators
    seeded by ``seed`` that do not depend on ``rate``: the same seed gives the
    same programs at every rate, only closer together.

    Args:
        questions: The bank's questions.
        rate: Arrivals per second.
        count: Programs in the run.
        seed: Seeds arrivals, questions and strategies.
        base: Per strategy name, its idle latency at difficulty 1 (seconds).
        mix: Strategy name to (strategy, share).
        fixed: Per strategy name, its fixed deadline at SLO scale 1 (the
            paper's form; seconds). ``None``: programs carry none.

    Raises:
        InvalidInputError: No questions, an empty mix, a share below 0, a
            strategy without a base latency (or without a fixed deadline when
            ``fixed`` is given), or a deadline that is not positive.
    """
    if not questions:
        raise InvalidInputError("the workload needs at least one question")
    names = list(mix)
    shares = np.array([mix[n][1] for n in names], dtype=float)
    if not names or (shares < 0).any() or shares.sum() <= 0:
        raise InvalidInputError(f"strategy shares must be >= 0 and not all 0, got {dict(mix)}")
    missing = [n for n in names if n not in base]
    if missing:
        raise InvalidInputError(f"no base latency for strategies {missing}")
    if fixed is not None:
        missing = [n for n in names if n not in fixed]
        if missing:
            raise InvalidInputError(f"no fixed deadline for strategies {missing}")
        bad = {n: fixed[n] for n in names if not fixed[n] > 0}
        if bad:
            raise InvalidInputError(f"fixed deadlines must be > 0, got {bad}")
    difficulty = source_difficulty(questions)
    pick = np.random.default_rng([seed, 1])
    order = pick.permutation(len(questions))
    chosen = [questions[int(order[i % len(order)])] for i in range(count)]
    kinds = pick.choice(len(names), size=count, p=shares / shares.sum())
    gaps = poisson_arrivals(1.0, count, np.random.default_rng([seed, 2]))
    ids = program_uuids(count, np.random.default_rng([seed, 3]))
    programs = tuple(
        ProgramSpec(
            index=i,
            arrival=gaps[i] / rate,
            question=q,
            strategy=mix[names[int(k)]][0],
            difficulty=difficulty[q.source],
            base=base[names[int(k)]],
            program_id=ids[i],
            fixed_deadline=None if fixed is None else fixed[names[int(k)]],
        )
        for i, (q, k) in enumerate(zip(chosen, kinds, strict=True))
    )
    return OnlineWorkload(rate=rate, seed=seed, programs=programs)
