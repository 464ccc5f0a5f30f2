"""Calibration: pick a method's parameter on a labeled bank and save it for live use.

The profiler replays one method family's sweep (:func:`run_replay`) and picks,
with :func:`choose`, either

* the cheapest setting whose mean accuracy reaches a target, given as an
  absolute accuracy or as "fixed N=K accuracy minus ``drop`` points"; or
* the most accurate setting whose tokens stay within ``ratio`` of fixed N=K.

A controller family's choice is saved as a calibration file
(:func:`save_calibration`, the format of :mod:`dynasor_agents`'s
``write_calibration``), and the library's ``load_controller`` rebuilds the
controller, so a strategy runs with the calibrated threshold::

    SelfConsistency(model, controller=load_controller("calib.json"))

:func:`split_bank` makes a seeded calibration / test split (stratified by
source), so thresholds can be chosen on one half and judged on the other.

Example:
    >>> import pathlib, tempfile
    >>> from dynasor_agents import load_controller
    >>> from dynasor_bench.replay._methods import FixedN
    >>> from dynasor_bench.replay._report import run_replay
    >>> from dynasor_bench.traces._bank import PathTrace, QuestionTrace
    >>> paths = [PathTrace(text="", answer=a, completion_tokens=10) for a in "4454"]
    >>> bank = [QuestionTrace(id="t:1", source="t", question="?", gold="4", prompt_tokens=1,
    ...                       paths=paths)]
    >>> report = run_replay(bank, [FixedN(n) for n in (1, 2, 3, 4)], orderings=8)
    >>> choice = choose(report, "fixed", drop=0.0)  # as accurate as N=4, fewest tokens
    >>> choice.runs.label, choice.stats.accuracy
    ('fixed(n=3)', 1.0)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "calib.json"
    >>> _ = save_calibration(path, choice)
    >>> ctl = load_controller(path)
    >>> ctl.policy, ctl.first_round, ctl.round_size
    (max_samples(3), 3, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynasor_agents import InvalidInputError, write_calibration
from dynasor_bench.replay._report import MethodRuns, Report, Stats
from dynasor_bench.traces._bank import QuestionTrace

__all__ = [
    "Choice",
    "choose",
    "save_calibration",
    "split_bank",
]

_EPS = 1e-9


@dataclass(frozen=True)
class Choice:
    """The setting :func:`choose` picked, with what it measured.

    Attributes:
        runs: The chosen method's runs.
        stats: Its summary on the calibration questions.
        full: Fixed N=K's summary on the same questions.
        target: What was asked (``{"accuracy": a}`` or ``{"ratio": r}``).
        report: The replay it was chosen from.
    """

    runs: MethodRuns
    stats: Stats
    full: Stats
    target: dict[str, float]
    report: Report

    def measured(self) -> dict[str, Any]:
        """The JSON-ready measurements saved with a calibration."""
        return {
            "family": self.runs.family,
            "setting": self.runs.method.params,
            "accuracy": self.stats.accuracy,
            "accuracy_std": self.stats.accuracy_std,
            "tokens_per_question": self.stats.tokens,
            "tokens_std": self.stats.tokens_std,
            "samples": self.stats.samples,
            "token_ratio": self.stats.tokens / self.full.tokens if self.full.tokens else None,
            "fixed_k_accuracy": self.full.accuracy,
            "fixed_k_tokens": self.full.tokens,
            "k": self.report.k,
            "questions": len(self.report.ids),
            "orderings": self.report.orderings,
            "seed": self.report.seed,
            "target": self.target,
        }


def choose(
    report: Report,
    family: str,
    *,
    accuracy: float | None = None,
    drop: float | None = None,
    ratio: float | None = None,
) -> Choice:
    """Pick a family's setting for an accuracy target or a token budget.

    Give exactly one of:

    Args:
        report: A replay holding the family's sweep and fixed N=K.
        family: The method family.
        accuracy: Reach this mean accuracy (in ``[0, 1]``) with the fewest tokens.
        drop: Reach fixed N=K's accuracy minus ``drop`` percentage points with
            the fewest tokens.
        ratio: Spend at most ``ratio`` times fixed N=K's tokens, with the best
            accuracy (ties: fewer tokens).

    Raises:
        InvalidInputError: Not exactly one target, an unknown family, or no
            setting meets the target.
    """
    given = [
        name
        for name, v in (("accuracy", accuracy), ("drop", drop), ("ratio", ratio))
        if v is not None
    ]
    if len(given) != 1:
        raise InvalidInputError(f"give exactly one of accuracy, drop, ratio; got {given or 'none'}")
    candidates = report.family(family)
    if not candidates:
        raise InvalidInputError(f"the report has no method family {family!r}: {report.families}")
    full = report.fixed(report.k)
    scored = [(runs, runs.stats()) for runs in candidates]
    if ratio is not None:
        budget = ratio * full.tokens
        within = [(r, s) for r, s in scored if s.tokens <= budget + _EPS]
        if not within:
            raise InvalidInputError(
                f"no setting of {family} spends <= {ratio:g} x fixed N={report.k}"
            )
        runs, stats = max(within, key=lambda rs: (rs[1].accuracy, -rs[1].tokens))
        return Choice(runs, stats, full, {"ratio": ratio}, report)
    goal = accuracy if accuracy is not None else full.accuracy - (drop or 0.0) / 100.0
    reaching = [(r, s) for r, s in scored if s.accuracy >= goal - _EPS]
    if not reaching:
        best = max(s.accuracy for _, s in scored)
        raise InvalidInputError(
            f"no setting of {family} reaches accuracy {100 * goal:.2f}% (best {100 * best:.2f}%)"
        )
    runs, stats = min(reaching, key=lambda rs: (rs[1].tokens, -rs[1].accuracy))
    return Choice(runs, stats, full, {"accuracy": goal}, report)


def save_calibration(path: Path, choice: Choice, **extra: Any) -> dict[str, Any]:
    """Write the chosen controller and its measurements as a calibration file
    (:func:`dynasor_agents.write_calibration`); return the data.

    Args:
        path: Where to write.
        choice: From :func:`choose`; its method must be a controller.
        extra: More fields for ``measured`` (e.g. the bank's name).

    Raises:
        InvalidInputError: The chosen method is not a controller.
    """
    spec = choice.runs.method.spec
    if spec is None:
        raise InvalidInputError(
            f"{choice.runs.label} is not a controller, so it cannot be saved for strategies"
        )
    return write_calibration(path, spec, {**choice.measured(), **extra})


def split_bank(
    bank: Sequence[QuestionTrace], *, seed: int = 0, fraction: float = 0.5
) -> tuple[list[QuestionTrace], list[QuestionTrace]]:
    """A seeded calibration / test split, stratified by source.

    Within each source, a seeded shuffle puts ``round(fraction * n)`` questions
    in the calibration half; both halves keep bank order.

    Raises:
        InvalidInputError: ``fraction`` is outside ``(0, 1)``.

    Example:
        >>> from dynasor_bench.traces._bank import QuestionTrace
        >>> bank = [QuestionTrace(id=f"s:{i}", source="s", question="", gold="1",
        ...                       prompt_tokens=1, paths=[]) for i in range(6)]
        >>> calib, test = split_bank(bank, seed=1)
        >>> len(calib), len(test), {q.id for q in calib} & {q.id for q in test}
        (3, 3, set())
    """
    if not 0.0 < fraction < 1.0:
        raise InvalidInputError(f"fraction must be in (0, 1), got {fraction!r}")
    rng = np.random.default_rng(seed)
    calib_ids: set[str] = set()
    for source in sorted({q.source for q in bank}):
        ids = sorted(q.id for q in bank if q.source == source)
        chosen = rng.permutation(len(ids))[: round(fraction * len(ids))]
        calib_ids.update(ids[i] for i in chosen)
    calib = [q for q in bank if q.id in calib_ids]
    test = [q for q in bank if q.id not in calib_ids]
    return calib, test
