"""Online benchmark rows: on disk, and what a set of them measures.

Storage: one :class:`OnlineRow` per JSON line, appended. A run appends each
(system, rate) cell's rows as it finishes (:func:`append_rows`), so a run that
stops part-way resumes per cell: the cells :func:`done_cells` reports complete
are skipped, the others are run again. An interrupt can cut the last line
short; :func:`append_rows` ends such a line before writing, and
:func:`load_rows` ignores it (its cell is then incomplete and is run again).
When a cell is run again its new rows supersede the old ones: :func:`load_rows`
keeps the last row of each (system, rate, seed, program). Rows written before a
field existed still load (``deadline_fixed``, ``seed`` and ``replica`` are then
``None``).

Measures of any set of rows (usually one cell): :func:`attainment`,
:func:`latency_percentile`, :func:`tightest_slo`, under either deadline form
(``form``: ``program`` or ``fixed``, see :data:`DeadlineForm`); and from (rate,
attainment) points, the sustained rate :func:`max_rate`. Tables and plots over them are in
:mod:`._report`, which re-exports all of this.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "online" / "rows.jsonl"
    >>> def row(program, finish):
    ...     return OnlineRow(system="baseline", rate=0.5, program=program, question="q:1",
    ...                      source="gsm8k", strategy="sc-8", arrival=0.0, finish=finish,
    ...                      deadline_unit=2.0, completion_tokens=900, samples=8,
    ...                      answer="4", correct=True)
    >>> append_rows(path, [row(0, 1.0), row(1, 3.0)])
    >>> with path.open("a") as handle:  # an interrupted write of the next cell
    ...     _ = handle.write('{"system":"gang","rate":0.5,"prog')
    >>> rows = load_rows(path)
    >>> [r.latency for r in rows], done_cells(rows, count=2)
    ([1.0, 3.0], {('baseline', 0.5)})
    >>> attainment(rows, 1.0), tightest_slo(rows, 1.0), latency_percentile(rows, 50)
    (0.5, 1.5, 2.0)
    >>> str(max_rate([(0.5, 1.0), (1.0, 0.8), (2.0, 0.5)], target=0.9))
    '0.75'
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import ValidationError

from dynasor_agents.errors import InvalidInputError
from dynasor_bench.workload._workload import DeadlineForm, OnlineRow

__all__ = [
    "RateBound",
    "Relation",
    "append_rows",
    "attainment",
    "done_cells",
    "latency_percentile",
    "load_rows",
    "max_rate",
    "slo_scales",
    "tightest_slo",
]

Relation = Literal["=", ">=", "<=", ">", "<"]
"""How a true value relates to a reported one (``=``: it is that value)."""

_PREFIX = '{"system":'  # how every line model_dump_json writes begins (system is the first field)


def append_rows(path: str | Path, rows: Iterable[OnlineRow]) -> None:
    """Append rows to ``path`` (one JSON line each), creating the file and its directories.

    A line left without its newline by an interrupted write is ended first, so
    the new rows do not join (and get lost in) it. The rows go out in one write,
    flushed.
    """
    path = Path(path)
    data = b"".join(row.model_dump_json().encode() + b"\n" for row in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        if handle.tell() and _last_byte(path) != b"\n":
            data = b"\n" + data
        handle.write(data)
        handle.flush()


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1)


def _is_cut(text: str) -> bool:
    """Whether ``text`` (not valid JSON) looks like the start of one of our lines, cut short."""
    return text.startswith(_PREFIX) or _PREFIX.startswith(text)


def load_rows(path: str | Path, *, missing_ok: bool = False) -> list[OnlineRow]:
    """Read the rows of ``path``, in file order, the last of each (system, rate, seed, program).

    Lines cut short by an interrupted write (the beginning of a row that is
    not valid JSON) are ignored: their programs were not recorded.

    Args:
        path: The JSON Lines file :func:`append_rows` wrote.
        missing_ok: Return ``[]`` for a missing file (a run that has not
            started) instead of raising.

    Raises:
        InvalidInputError: The file is missing (unless ``missing_ok``), or a
            line is neither a row nor a cut-short row (naming file and line).
    """
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return []
        raise InvalidInputError(f"online results not found: {path}")
    latest: dict[tuple[str, float, int | None, int], tuple[int, OnlineRow]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                row = OnlineRow.model_validate_json(text)
            except ValidationError as exc:
                if any(e["type"] == "json_invalid" for e in exc.errors()) and _is_cut(text):
                    continue
                raise InvalidInputError(
                    f"{path}:{number}: not an online result row ({exc.errors()[0]['msg']})"
                ) from exc
            latest[(row.system, row.rate, row.seed, row.program)] = (number, row)
    return [row for _, row in sorted(latest.values(), key=lambda item: item[0])]


def done_cells(rows: Iterable[OnlineRow], *, count: int | None = None) -> set[tuple[str, float]]:
    """The (system, rate) cells whose rows cover every program of their workload.

    Args:
        rows: Rows as :func:`load_rows` returns them (one per program).
        count: Programs per workload. Without it, a rate's workload is taken
            to have as many programs as its largest index among all systems'
            rows, plus one: pass it when you know it, since a cell whose last
            programs were lost, run alone at its rate, would look complete.

    Raises:
        InvalidInputError: ``count`` is below 1.

    Example:
        >>> def row(system, program):
        ...     return OnlineRow(system=system, rate=1.0, program=program, question="q",
        ...                      source="s", strategy="sc-8", arrival=0.0, finish=1.0,
        ...                      deadline_unit=1.0, completion_tokens=1, samples=1,
        ...                      answer=None, correct=False)
        >>> rows = [row("baseline", 0), row("baseline", 1), row("gang", 0)]
        >>> sorted(done_cells(rows)), sorted(done_cells(rows, count=3))
        ([('baseline', 1.0)], [])
    """
    if count is not None and count < 1:
        raise InvalidInputError(f"programs per workload must be >= 1, got {count}")
    programs: dict[tuple[str, float], set[int]] = {}
    for row in rows:
        programs.setdefault((row.system, row.rate), set()).add(row.program)
    expected: dict[float, int] = {}
    for (_, rate), seen in programs.items():
        expected[rate] = max(expected.get(rate, 0), max(seen) + 1)
    return {
        cell
        for cell, seen in programs.items()
        if seen == set(range(count if count is not None else expected[cell[1]]))
    }


def _need(rows: Sequence[OnlineRow], what: str) -> None:
    if not rows:
        raise InvalidInputError(f"{what} needs at least one row, got none")


def _check_target(target: float) -> None:
    if not 0 < target <= 1:
        raise InvalidInputError(f"the attainment target must be in (0, 1], got {target!r}")


def attainment(
    rows: Sequence[OnlineRow], slo_scale: float, form: DeadlineForm = "program"
) -> float:
    """The share of ``rows`` that met their ``form`` deadline at ``slo_scale`` (failed ones miss).

    Raises:
        InvalidInputError: ``rows`` is empty, or a row has no ``form`` deadline.
    """
    _need(rows, "attainment")
    return sum(row.met(slo_scale, form) for row in rows) / len(rows)


def latency_percentile(rows: Sequence[OnlineRow], q: float) -> float:
    """The ``q``-th percentile (0..100, numpy's linear method) of the rows' latencies, seconds.

    A failed program counts as an infinite latency, so the result is ``inf``
    when the percentile reaches into them.

    Raises:
        InvalidInputError: ``rows`` is empty or ``q`` is outside 0..100.
    """
    _need(rows, "a latency percentile")
    if not 0 <= q <= 100:
        raise InvalidInputError(f"percentile must be in [0, 100], got {q!r}")
    values = np.sort([math.inf if row.error is not None else row.latency for row in rows])
    upper = values[math.ceil(q / 100 * (len(values) - 1))]
    if not np.isfinite(upper):
        return math.inf
    # The linear method reads only the two values around the rank: capping the
    # failed programs at the upper one changes nothing else and avoids inf - inf.
    return float(np.percentile(np.minimum(values, upper), q))


def slo_scales(rows: Sequence[OnlineRow], form: DeadlineForm = "program") -> list[float]:
    """Each row's latency over its ``form`` unit deadline (``inf`` for a failed or
    deadline-stopped program): the smallest SLO scale at which it meets its deadline.

    Raises:
        InvalidInputError: A unit deadline is missing or not positive.
    """
    out = []
    for row in rows:
        unit = row.unit(form)
        if not unit > 0:
            raise InvalidInputError(
                f"{row.system} @ {row.rate:g}/s program {row.program}: unit deadline must be "
                f"> 0, got {unit!r}"
            )
        out.append(math.inf if row.late else row.latency / unit)
    return out


def tightest_slo(
    rows: Sequence[OnlineRow], target: float = 0.9, form: DeadlineForm = "program"
) -> float:
    """The smallest SLO scale at which at least ``target`` of ``rows`` meet their deadline.

    It is the ``ceil(target x n)``-th smallest latency / unit deadline (nudged up
    by rounding ulps if needed so that :func:`attainment` agrees), or ``inf``
    when that program failed.

    Raises:
        InvalidInputError: ``rows`` is empty, ``target`` is outside (0, 1], or a
            unit deadline is missing or not positive.
    """
    _need(rows, "the tightest SLO")
    _check_target(target)
    ordered = sorted(slo_scales(rows, form))
    scale = ordered[max(1, math.ceil(target * len(ordered) - 1e-9)) - 1]
    while math.isfinite(scale) and attainment(rows, scale, form) < target:
        scale = float(np.nextafter(scale, math.inf))  # latency/unit*unit can round below latency
    return scale


@dataclass(frozen=True)
class RateBound:
    """The sustained arrival rate, or the bound on it the measured range gives.

    Attributes:
        value: Programs per second.
        kind: ``exact`` (interpolated where attainment crosses the target),
            ``at least`` (attainment never dropped: ``value`` is the highest
            rate measured) or ``below range`` (even the lowest rate, ``value``,
            missed the target).
    """

    value: float
    kind: Literal["exact", "at least", "below range"]

    @property
    def relation(self) -> Relation:
        """How the true rate relates to ``value``."""
        relations: dict[str, Relation] = {"exact": "=", "at least": ">=", "below range": "<"}
        return relations[self.kind]

    def __str__(self) -> str:
        prefix = "" if self.kind == "exact" else self.relation
        return f"{prefix}{_sig(self.value)}"


def _sig(value: float) -> str:
    """Two decimals, or three significant digits for small rates (0.0316)."""
    if not 0 < value < 1:
        return f"{value:.2f}"
    text = f"{value:.3g}"
    return text + "0" * max(0, 2 - len(text.split(".")[1]))


def max_rate(points: Sequence[tuple[float, float]], target: float = 0.9) -> RateBound:
    """The rate at which attainment first drops below ``target``, scanning rates upward.

    Args:
        points: ``(rate, attainment)`` pairs, in any order, rates distinct.
        target: The attainment to sustain.

    Raises:
        InvalidInputError: No points, a repeated rate, or ``target`` outside (0, 1].

    Example:
        >>> str(max_rate([(0.2, 1.0), (0.4, 0.95)])), str(max_rate([(0.2, 0.5)]))
        ('>=0.40', '<0.20')
    """
    _check_target(target)
    if not points:
        raise InvalidInputError("max_rate needs at least one (rate, attainment) point")
    ordered = sorted(points)
    rates = [rate for rate, _ in ordered]
    if len(set(rates)) < len(rates):
        raise InvalidInputError(f"rates must be distinct, got {rates}")
    if ordered[0][1] < target:
        return RateBound(ordered[0][0], "below range")
    for (low, above), (high, below) in itertools.pairwise(ordered):
        if below < target:
            return RateBound(low + (above - target) / (above - below) * (high - low), "exact")
    return RateBound(ordered[-1][0], "at least")
