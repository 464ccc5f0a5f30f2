"""Replay a method suite on a trace bank over many orderings, and summarize.

:func:`run_replay` runs every method on every question under ``orderings``
seeded permutations of its paths (the same permutations for every method, so
methods are compared on the same draws) and returns a :class:`Report` holding,
per method, a ``(orderings, questions)`` array of correctness, tokens and
samples. Summaries (:meth:`MethodRuns.stats`) average over questions within an
ordering, then give the mean and standard deviation across orderings.

Runs are deterministic: the same bank, methods, ``orderings`` and ``seed`` give
the same report, whatever ``workers``.

Example:
    >>> from dynasor_bench.replay._methods import FixedN, Oracle
    >>> from dynasor_bench.traces._bank import PathTrace, QuestionTrace
    >>> paths = [PathTrace(text="", answer=a, completion_tokens=10) for a in "4454"]
    >>> bank = [QuestionTrace(id="t:1", source="t", question="?", gold="4", prompt_tokens=1,
    ...                       paths=paths)]
    >>> report = run_replay(bank, [FixedN(1), FixedN(4), Oracle()], orderings=8, seed=0)
    >>> s = report.find("fixed(n=4)").stats()
    >>> s.accuracy, s.tokens, s.samples
    (1.0, 40.0, 4.0)
    >>> report.find("fixed(n=1)").stats().accuracy  # 7 of the 8 orderings start with a 4
    0.875
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from dynasor_agents.errors import InvalidInputError
from dynasor_bench.replay._methods import Method
from dynasor_bench.replay._prepare import DEFAULT_WINDOW, PreparedQuestion, prepare_bank
from dynasor_bench.replay._prepare import orderings as make_orderings
from dynasor_bench.replay._suite import default_suite
from dynasor_bench.traces._bank import QuestionTrace

__all__ = ["MethodRuns", "Report", "Stats", "run_replay"]

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
_EPS = 1e-9  # accuracy comparisons: means of booleans, equal up to rounding


@dataclass(frozen=True)
class Stats:
    """A method's summary over orderings (accuracy in ``[0, 1]``, tokens per question)."""

    accuracy: float
    accuracy_std: float
    tokens: float
    tokens_std: float
    samples: float


@dataclass
class MethodRuns:
    """Every run of one method: ``(orderings, questions)`` arrays.

    Attributes:
        method: The method.
        correct: Whether each run answered correctly.
        tokens: Completion tokens each run charged.
        samples: Samples each run took.
        reasons: How often each stop reason occurred.
    """

    method: Method
    correct: BoolArray
    tokens: IntArray
    samples: IntArray
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The method's label."""
        return self.method.label

    @property
    def family(self) -> str:
        """The method's family."""
        return self.method.family

    def stats(self, mask: BoolArray | None = None) -> Stats:
        """Mean and spread across orderings, over the questions in ``mask`` (all if ``None``).

        Raises:
            InvalidInputError: ``mask`` selects no question.
        """
        correct, tokens, samples = self.correct, self.tokens, self.samples
        if mask is not None:
            if not mask.any():
                raise InvalidInputError("the question mask selects no question")
            correct, tokens, samples = correct[:, mask], tokens[:, mask], samples[:, mask]
        accuracy = correct.mean(axis=1)
        per_question = tokens.mean(axis=1)
        return Stats(
            accuracy=float(accuracy.mean()),
            accuracy_std=float(accuracy.std()),
            tokens=float(per_question.mean()),
            tokens_std=float(per_question.std()),
            samples=float(samples.mean()),
        )


@dataclass
class Report:
    """The outcome of :func:`run_replay`.

    Attributes:
        ids: Question ids, in bank order.
        sources: Each question's dataset (its difficulty group).
        k: Paths per question used (the smallest K of the bank).
        orderings: Orderings per question.
        seed: The orderings' seed.
        runs: One :class:`MethodRuns` per method, in suite order.
        seconds: Wall time of the replay.
    """

    ids: tuple[str, ...]
    sources: tuple[str, ...]
    k: int
    orderings: int
    seed: int
    runs: list[MethodRuns]
    seconds: float = 0.0

    def find(self, label: str) -> MethodRuns:
        """The runs of the method with this label.

        Raises:
            InvalidInputError: No method has it.
        """
        for runs in self.runs:
            if runs.label == label:
                return runs
        raise InvalidInputError(f"no method {label!r} in the report")

    def family(self, name: str) -> list[MethodRuns]:
        """The runs of every method of a family, in suite order."""
        return [runs for runs in self.runs if runs.family == name]

    @property
    def families(self) -> list[str]:
        """Family names in suite order."""
        return list(dict.fromkeys(runs.family for runs in self.runs))

    def mask(self, source: str | None) -> BoolArray | None:
        """The questions of one source (``None``: all)."""
        if source is None:
            return None
        return np.asarray([s == source for s in self.sources], dtype=np.bool_)

    def fixed(self, n: int, source: str | None = None) -> Stats:
        """Stats of fixed-N self-consistency with ``n`` samples."""
        return self.find(f"fixed(n={n})").stats(self.mask(source))

    def cheapest(
        self, family: str, accuracy: float, source: str | None = None
    ) -> MethodRuns | None:
        """The family's setting with the fewest tokens whose mean accuracy is ``>= accuracy``."""
        mask = self.mask(source)
        reaching = [r for r in self.family(family) if r.stats(mask).accuracy >= accuracy - _EPS]
        return min(reaching, key=lambda r: r.stats(mask).tokens, default=None)


def _run_chunk(
    methods: Sequence[Method],
    questions: Sequence[PreparedQuestion],
    orders: Sequence[Sequence[Sequence[int]]],
) -> list[tuple[BoolArray, IntArray, IntArray, dict[str, int]]]:
    """Run ``methods`` over all orderings; ``orders[r][i]`` is question i's r-th ordering."""
    out: list[tuple[BoolArray, IntArray, IntArray, dict[str, int]]] = []
    shape = (len(orders), len(questions))
    for method in methods:
        correct = np.zeros(shape, dtype=np.bool_)
        tokens = np.zeros(shape, dtype=np.int64)
        samples = np.zeros(shape, dtype=np.int64)
        reasons: Counter[str] = Counter()
        for r, per_question in enumerate(orders):
            for i, outcome in enumerate(method.run_bank(questions, per_question)):
                correct[r, i] = outcome.correct
                tokens[r, i] = outcome.tokens
                samples[r, i] = outcome.samples
                reasons[outcome.reason] += 1
        out.append((correct, tokens, samples, dict(reasons)))
    return out


def _chunks(methods: Sequence[Method], count: int) -> list[list[int]]:
    """Method indices dealt round-robin into ``count`` chunks (mixing cheap and dear)."""
    chunks: list[list[int]] = [[] for _ in range(max(1, min(count, len(methods))))]
    for i in range(len(methods)):
        chunks[i % len(chunks)].append(i)
    return chunks


def run_replay(
    bank: Sequence[QuestionTrace],
    methods: Sequence[Method] | None = None,
    *,
    orderings: int = 100,
    seed: int = 0,
    window: int = DEFAULT_WINDOW,
    workers: int = 1,
    on_method: Callable[[Method], None] | None = None,
) -> Report:
    """Replay ``methods`` on every question of ``bank`` under seeded orderings.

    Args:
        bank: The recorded questions.
        methods: The methods (default: :func:`default_suite` for the bank).
        orderings: Orderings per question.
        seed: Seed of the orderings.
        window: Group-confidence window for DeepConf's signals (tokens).
        workers: Processes to spread the methods over (1: in this process).
            They are spawned, not forked (the caller may run threads), so a
            script calling this with ``workers > 1`` needs the usual
            ``if __name__ == "__main__":`` guard.
        on_method: Called as each method finishes (e.g. a progress bar).

    Raises:
        InvalidInputError: An empty bank, ``orderings < 1``, ``workers < 1``,
            or a method that cannot run on this bank.
    """
    if not bank:
        raise InvalidInputError("the bank holds no questions")
    if orderings < 1 or workers < 1:
        raise InvalidInputError(f"orderings and workers must be >= 1, got {orderings}, {workers}")
    start = time.monotonic()
    questions = prepare_bank(bank, window=window)
    k = min(q.k for q in questions)
    if methods is None:
        mean_length = float(np.mean([n for q in questions for n in q.lengths]))
        methods = default_suite(k, mean_length=mean_length)
    per_question = [make_orderings(q.id, q.k, orderings, seed=seed)[:, :k] for q in questions]
    orders = [[p[r].tolist() for p in per_question] for r in range(orderings)]
    results: list[tuple[BoolArray, IntArray, IntArray, dict[str, int]] | None]
    results = [None] * len(methods)
    if workers == 1:
        for i, method in enumerate(methods):
            results[i] = _run_chunk([method], questions, orders)[0]
            if on_method is not None:
                on_method(method)
    else:
        context = multiprocessing.get_context("spawn")  # no fork: callers may run threads
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            jobs = {
                pool.submit(_run_chunk, [methods[i] for i in chunk], questions, orders): chunk
                for chunk in _chunks(methods, max(4 * workers, len(methods) // 4))
            }
            for job in concurrent.futures.as_completed(jobs):
                for i, result in zip(jobs[job], job.result(), strict=True):
                    results[i] = result
                    if on_method is not None:
                        on_method(methods[i])
    runs = [
        MethodRuns(method, *result)
        for method, result in zip(methods, results, strict=True)
        if result is not None
    ]
    return Report(
        ids=tuple(q.id for q in questions),
        sources=tuple(q.source for q in questions),
        k=k,
        orderings=orderings,
        seed=seed,
        runs=runs,
        seconds=time.monotonic() - start,
    )
