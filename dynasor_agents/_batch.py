"""Batch mode: run many questions of one strategy under one shared token budget.

A :class:`BatchAllocator` runs every input of a batch as its own program (its
own program id) concurrently, all drawing on one :class:`TokenPool`. Each
member's controller is the strategy's controller with the allocator's extra
policy, a per-question cap and a :class:`pool_share` on top, so settled (or
hopeless) questions stop early and the tokens they leave go to the uncertain
ones; every request reserves its ``max_tokens`` in the pool before it is sent,
so the batch never spends more than ``total_tokens``.

Use it through a strategy's ``abatch`` / ``batch`` (``allocator=`` on the
strategy, or as a keyword of ``abatch``), or call :meth:`BatchAllocator.arun`
for the results together with their :class:`BatchReport`. The report of the
latest batch is also kept as :attr:`BatchAllocator.last_report`.

Per-sample size. A round is sized in samples of ``p`` tokens: the strategy's
``max_tokens`` (or ``sample_tokens=``); without either, an equal split of the
budget over the first rounds of the batch (``budget / questions /
first_round``), which suits short answers only: set ``max_tokens``.

Example:
    >>> import io
    >>> from langchain_core.language_models import FakeListChatModel
    >>> from dynasor_agents import CertaintyController, SelfConsistency, threshold
    >>> from dynasor_agents import Progress
    >>> out = io.StringIO()
    >>> allocator = BatchAllocator(total_tokens=1000, progress=Progress(0, "batch", stream=out))
    >>> sc = SelfConsistency(
    ...     FakeListChatModel(responses=["\\\\boxed{4}"]),
    ...     controller=CertaintyController(threshold(0.9), first_round=3),
    ...     allocator=allocator,
    ... )
    >>> [r.answer for r in sc.batch(["2 + 2?", "1 + 3?"])]
    ['4', '4']
    >>> report = allocator.last_report
    >>> report.questions, report.settled, report.budget
    (2, 2, 1000)
    >>> out.getvalue().splitlines()[-1].split()[1]
    '2/2'
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list
from pydantic import BaseModel

from dynasor_agents._allocation import PoolMember, TokenPool, pool_share
from dynasor_agents._progress import Progress
from dynasor_agents._ranking import Ranking
from dynasor_agents.controller import CertaintyController, Policy, StopReason, max_tokens
from dynasor_agents.errors import BudgetExhaustedError, InvalidInputError, NoSamplesError

__all__ = ["BatchAllocator", "BatchMember", "BatchReport", "BatchStrategy", "QuestionReport"]

In_contra = TypeVar("In_contra", contravariant=True)
R_co = TypeVar("R_co", bound=BaseModel, covariant=True)
In = TypeVar("In")
R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class BatchMember:
    """One question of a batch, as the strategy running it sees it.

    Attributes:
        pool: Its account in the batch's :class:`TokenPool`: every request of
            the question is reserved in it before it is sent.
        controller: The controller the question decides with: the strategy's
            own with the batch's policies and its share of the pool on top
            (``None`` when the strategy has no ``CertaintyController``).
    """

    pool: PoolMember
    controller: CertaintyController | None


class BatchStrategy(Protocol[In_contra, R_co]):
    """What a :class:`BatchAllocator` runs: a strategy that runs one input as a batch member.

    Every :class:`~dynasor_agents.Strategy` is one.
    """

    async def arun_member(
        self, input: In_contra, config: RunnableConfig, member: BatchMember, **kwargs: Any
    ) -> R_co:
        """Run ``input`` as its own program, deciding and spending as ``member``."""
        ...


@dataclass(frozen=True)
class QuestionReport:
    """How one question of a batch ended.

    Attributes:
        index: Its position in the inputs.
        program_id: Its program's id (``None`` if it failed before a result).
        stop_reason: Why it stopped (the result's ``stop_reason`` value).
        certainty: Its final Certaindex, if the result has one.
        samples: Its completed samples, if the result counts them.
        completion_tokens: Completion tokens the pool charged it.
        pool_limited: The pool once gave it less than it asked.
        pool_capped: The pool stopped it (not even one sample was covered).
        error: The exception's text when it failed.
    """

    index: int
    program_id: str | None
    stop_reason: str | None
    certainty: float | None
    samples: int | None
    completion_tokens: int
    pool_limited: bool = False
    pool_capped: bool = False
    error: str | None = None


@dataclass(frozen=True)
class BatchReport:
    """What a batch spent and how its questions ended.

    Attributes:
        budget: The total completion-token budget (``None``: unlimited).
        per_query_budget: The per-question cap, if any.
        spent: Completion tokens the whole batch spent.
        peak: The highest tokens spent plus reserved at any moment.
        overrun: Tokens models reported beyond the ``max_tokens`` they were sent.
        questions: Questions in the batch.
        settled: Questions that stopped as certain (Certaindex reached the threshold).
        hopeless: Questions that stopped as hopeless.
        capped: Questions stopped by a token or sample cap (pool included).
        pool_capped: Questions the pool stopped (a subset of ``capped``).
        failed: Questions that raised.
        rows: One :class:`QuestionReport` per question, in input order.
    """

    budget: int | None
    per_query_budget: int | None
    spent: int
    peak: int
    overrun: int
    questions: int
    settled: int
    hopeless: int
    capped: int
    pool_capped: int
    failed: int
    rows: tuple[QuestionReport, ...] = ()

    @property
    def left(self) -> int | None:
        """Budget not spent (``None`` without a budget)."""
        return None if self.budget is None else self.budget - self.spent

    def summary(self) -> str:
        """One line: tokens and how the questions ended.

        Example:
            >>> print(BatchReport(1000, None, 640, 700, 0, 4, 3, 0, 1, 1, 0).summary())
            4 questions, 640/1000 tokens: 3 settled, 0 hopeless, 1 capped (1 by pool), 0 failed
        """
        budget = "unlimited" if self.budget is None else str(self.budget)
        return (
            f"{self.questions} questions, {self.spent}/{budget} tokens: {self.settled} settled, "
            f"{self.hopeless} hopeless, {self.capped} capped ({self.pool_capped} by pool), "
            f"{self.failed} failed"
        )


def _classify(reason: str | None) -> str:
    """How a question ended, from its result's ``stop_reason`` value."""
    if reason == StopReason.CERTAIN:
        return "settled"
    if reason == StopReason.HOPELESS:
        return "hopeless"
    if reason in (StopReason.MAX_TOKENS, StopReason.MAX_SAMPLES):
        return "capped"
    return "other"


class BatchAllocator:
    """Runs a batch of questions under per-question caps and one shared token budget.

    Args:
        total_tokens: Completion tokens the whole batch may spend (``None``: no
            total; the pool only counts).
        per_query_tokens: Completion tokens one question may spend at most.
        policy: Extra policy every member composes with its strategy's own
            (e.g. ``threshold(0.9)`` or a :class:`budget_curve`).
        max_concurrency: Questions running at once (``None``: all; the call's
            ``max_concurrency`` config also applies, the smaller wins).
        progress: Print a progress line (questions done, tokens spent,
            settled / hopeless / capped counts) to stderr; or a ``Progress`` to
            print with (its total is set to the batch size when 0).
        sample_tokens: Per-sample ``max_tokens`` when the strategy has none.
        label: The progress line's label.
        ranking: Which waiting question gets tokens first when the budget is
            scarce (default :class:`~dynasor_agents.lowest_certainty`; use
            ``by_gain(curve)`` with a :class:`~dynasor_agents.GainCurve` fitted
            on the workload to serve the questions with most to gain).

    A strategy's ``abatch`` / ``batch`` use the allocator given to the strategy
    (``allocator=``) or to the call (``allocator=`` keyword); without one they
    behave as LangChain's. The strategy needs a ``CertaintyController`` for its
    rounds to be sized and its settled questions to stop; one without (e.g.
    ``ProbedChainOfThought``) still has every request reserved in the pool.
    """

    def __init__(
        self,
        total_tokens: int | None = None,
        per_query_tokens: int | None = None,
        policy: Policy | None = None,
        max_concurrency: int | None = None,
        progress: bool | Progress = True,
        *,
        sample_tokens: int | None = None,
        label: str = "batch",
        ranking: Ranking | None = None,
    ) -> None:
        for name, value in (
            ("total_tokens", total_tokens),
            ("per_query_tokens", per_query_tokens),
            ("max_concurrency", max_concurrency),
            ("sample_tokens", sample_tokens),
        ):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 1
            ):
                raise InvalidInputError(f"{name} must be an int >= 1 or None, got {value!r}")
        if policy is not None and not isinstance(policy, Policy):
            raise InvalidInputError(f"policy must be a Policy, got {policy!r}")
        if ranking is not None and not isinstance(ranking, Ranking):
            raise InvalidInputError(f"ranking must be a Ranking, got {ranking!r}")
        if not isinstance(progress, bool | Progress):
            raise InvalidInputError(f"progress must be a bool or a Progress, got {progress!r}")
        self.total_tokens = total_tokens
        self.per_query_tokens = per_query_tokens
        self.policy = policy
        self.max_concurrency = max_concurrency
        self.progress = progress
        self.sample_tokens = sample_tokens
        self.label = label
        self.ranking = ranking
        self.last_report: BatchReport | None = None
        """The report of the batch that finished last (see :meth:`arun` for concurrent batches)."""

    def __repr__(self) -> str:
        return (
            f"BatchAllocator(total_tokens={self.total_tokens}, "
            f"per_query_tokens={self.per_query_tokens}, policy={self.policy!r})"
        )

    # -- members ------------------------------------------------------------------------

    def _sample_tokens(
        self, strategy: object, base: CertaintyController | None, n: int
    ) -> int | None:
        own = getattr(strategy, "max_tokens", None)
        explicit = self.sample_tokens or (own if isinstance(own, int) and own >= 1 else None)
        if explicit is not None:
            return explicit
        shares = [b for b in (self.per_query_tokens,) if b is not None]
        if self.total_tokens is not None:
            shares.append(self.total_tokens // max(1, n))
        if not shares:
            return None
        first = base.first_round if base is not None else 1
        return max(1, min(shares) // first)

    def _controller(
        self, base: CertaintyController, member: PoolMember, sample: int | None
    ) -> CertaintyController:
        inner: Policy = base.policy
        if self.policy is not None:
            inner = inner | self.policy
        if self.per_query_tokens is not None:
            inner = inner | max_tokens(self.per_query_tokens)
        share = pool_share(
            member,
            inner,
            first_round=base.first_round,
            round_size=base.round_size,
            sample_tokens=sample,
        )
        return dataclasses.replace(base, policy=share)

    def _open_progress(self, n: int) -> Progress | None:
        if self.progress is False:
            return None
        if isinstance(self.progress, Progress):
            if not self.progress.total:
                self.progress.total = n
            return self.progress
        budget = "unlimited" if self.total_tokens is None else str(self.total_tokens)
        return Progress(n, f"{self.label} budget={budget}")

    # -- running --------------------------------------------------------------------------

    async def arun(
        self,
        strategy: BatchStrategy[In, R],
        inputs: Sequence[In],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> tuple[list[R | Exception], BatchReport]:
        """Run ``inputs`` through ``strategy`` as one batch; results in input order.

        Args:
            strategy: The strategy; each input becomes one of its programs.
            inputs: The questions (anything the strategy's ``ainvoke`` takes).
            config: One config for all, or one per input (callbacks, tags,
                ``max_concurrency`` ...).
            return_exceptions: Put a failed question's exception in its place
                instead of raising (the other questions' results are kept).
            **kwargs: Passed to each run (as to ``ainvoke``).

        Returns:
            The results and the batch's :class:`BatchReport` (also stored as
            :attr:`last_report`).

        Raises:
            Exception: The first failure, when ``return_exceptions`` is false;
                the questions still running are cancelled.
        """
        items = list(inputs)
        configs = get_config_list(config, len(items))
        asked = configs[0].get("max_concurrency") if configs else None
        limits = [c for c in (self.max_concurrency, asked) if c]
        base = getattr(strategy, "controller", None)
        if base is not None and not isinstance(base, CertaintyController):
            base = None
        sample = self._sample_tokens(strategy, base, len(items))
        pool = TokenPool(self.total_tokens, ranking=self.ranking)
        first_ask = (base.first_round if base is not None else 1) * (sample or 0)
        if self.per_query_tokens is not None:
            first_ask = min(first_ask, self.per_query_tokens)
        floor = sample or 0
        if self.per_query_tokens is not None:
            floor = min(floor, self.per_query_tokens)
        members = [
            pool.join(str(i), limit=self.per_query_tokens, ask=first_ask, floor=floor)
            for i in range(len(items))
        ]
        seats = [
            BatchMember(m, None if base is None else self._controller(base, m, sample))
            for m in members
        ]
        outcomes: list[Any] = [None] * len(items)
        done = [False] * len(items)
        gate = asyncio.Semaphore(min(limits)) if limits else None
        progress = self._open_progress(len(items)) if items else None
        reported = 0

        def tick(outcome: Any) -> None:
            nonlocal reported
            if progress is None:
                return
            kind = "failed" if isinstance(outcome, BaseException) else _classify(_reason(outcome))
            counts = {k: float(kind == k) for k in ("settled", "hopeless", "capped")}
            progress.update(1, tokens=pool.spent - reported, **counts)
            reported = pool.spent

        async def one(i: int) -> Any:
            async with gate if gate is not None else contextlib.nullcontext():
                try:
                    outcomes[i] = await strategy.arun_member(
                        items[i], configs[i], seats[i], **kwargs
                    )
                except NoSamplesError as exc:
                    outcomes[i] = exc
                    if members[i].capped and members[i].spent == 0:
                        starved = BudgetExhaustedError(
                            f"the batch's token pool was spent before question {i} got a sample",
                            status_code=429,
                            program_id=exc.program_id,
                        )
                        starved.__cause__ = exc
                        outcomes[i] = starved
                except Exception as exc:
                    outcomes[i] = exc
                finally:
                    members[i].leave()
                done[i] = True
                tick(outcomes[i])
                if isinstance(outcomes[i], Exception) and not return_exceptions:
                    raise outcomes[i]
                return outcomes[i]

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(items))]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if progress is not None:
                progress.close()
            self.last_report = report = _report(self, pool, members, outcomes, done)
        return outcomes, report


def _reason(result: Any) -> str | None:
    reason = getattr(result, "stop_reason", None)
    return None if reason is None else str(getattr(reason, "value", reason))


def _report(
    allocator: BatchAllocator,
    pool: TokenPool,
    members: list[PoolMember],
    outcomes: list[Any],
    done: list[bool],
) -> BatchReport:
    rows: list[QuestionReport] = []
    for i, (member, outcome) in enumerate(zip(members, outcomes, strict=True)):
        failed = isinstance(outcome, BaseException) or not done[i]
        certainty = getattr(outcome, "certainty", None)
        samples = getattr(outcome, "samples", None)
        rows.append(
            QuestionReport(
                index=i,
                program_id=None if failed else getattr(outcome, "program_id", None),
                stop_reason=None if failed else _reason(outcome),
                certainty=float(certainty) if isinstance(certainty, int | float) else None,
                samples=samples if isinstance(samples, int) else None,
                completion_tokens=member.spent,
                pool_limited=member.limited,
                pool_capped=member.capped,
                error=(str(outcome) or type(outcome).__name__)
                if isinstance(outcome, BaseException)
                else (None if done[i] else "cancelled"),
            )
        )
    kinds = [_classify(r.stop_reason) if r.error is None else "failed" for r in rows]
    return BatchReport(
        budget=pool.total,
        per_query_budget=allocator.per_query_tokens,
        spent=pool.spent,
        peak=pool.peak,
        overrun=pool.overrun,
        questions=len(rows),
        settled=kinds.count("settled"),
        hopeless=kinds.count("hopeless"),
        capped=kinds.count("capped"),
        pool_capped=sum(
            1 for r, k in zip(rows, kinds, strict=True) if k == "capped" and r.pool_capped
        ),
        failed=kinds.count("failed"),
        rows=tuple(rows),
    )
