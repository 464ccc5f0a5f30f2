"""Markdown tables and accuracy-vs-tokens plots of a replay :class:`Report`.

* :func:`summary_table`: every setting of every family (accuracy, tokens per
  question, samples, tokens relative to fixed N=K, stop reasons);
* :func:`match_table`: for a fixed-N accuracy level, the cheapest setting of
  each family that reaches it, as tokens per question and as a ratio to fixed
  N=K; the oracle is always listed;
* :func:`source_table`: per difficulty group (the bank's ``source``), the
  accuracy and tokens of fixed N=K, the oracle, and each family's setting
  chosen at the N=K level on the whole bank;
* :func:`plot_curves`: accuracy against tokens per question, one curve per
  family, a panel for the whole bank and one per source (needs matplotlib).

Example:
    >>> from dynasor_bench.replay._methods import FixedN, Oracle
    >>> from dynasor_bench.replay._report import run_replay
    >>> from dynasor_bench.traces._bank import PathTrace, QuestionTrace
    >>> paths = [PathTrace(text="", answer=a, completion_tokens=10) for a in "4454"]
    >>> bank = [QuestionTrace(id="t:1", source="t", question="?", gold="4", prompt_tokens=1,
    ...                       paths=paths)]
    >>> report = run_replay(bank, [FixedN(n) for n in (1, 2, 3, 4)] + [Oracle()], orderings=4)
    >>> print(match_table(report, 4).splitlines()[2])
    | fixed | n=3 | 100.0 ± 0.0 | 30 ± 0 | 0.75 ± 0.00 |
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynasor_agents.errors import InvalidInputError
from dynasor_bench._plotting import COLORS, pyplot
from dynasor_bench.replay._report import MethodRuns, Report, Stats

__all__ = ["match_levels", "match_table", "plot_curves", "render", "source_table", "summary_table"]

_BASELINES = ("fixed", "oracle")


def _setting(runs: MethodRuns) -> str:
    inner = ", ".join(f"{k}={v:g}" for k, v in runs.method.params.items())
    return inner or "-"


def _acc(s: Stats) -> str:
    return f"{100 * s.accuracy:.1f} ± {100 * s.accuracy_std:.1f}"


def _tok(s: Stats) -> str:
    return f"{s.tokens:.0f} ± {s.tokens_std:.0f}"


def _ratio(s: Stats, full: Stats) -> str:
    if full.tokens <= 0:
        return "-"
    return f"{s.tokens / full.tokens:.2f} ± {s.tokens_std / full.tokens:.2f}"


def match_levels(k: int) -> list[int]:
    """The fixed-N levels the match tables use: 4, 8, 12, 16 (those ``<= k``), and K.

    Example:
        >>> match_levels(16), match_levels(10)
        ([4, 8, 12, 16], [4, 8, 10])
    """
    return sorted({n for n in (4, 8, 12, 16) if n <= k} | {k})


def summary_table(report: Report, source: str | None = None) -> str:
    """Every setting of every family, in suite order."""
    mask = report.mask(source)
    full = report.fixed(report.k, source)
    lines = [
        "| method | setting | accuracy % | tokens/question | samples | x fixed-K | stops |",
        "|---|---|---|---|---|---|---|",
    ]
    for runs in report.runs:
        s = runs.stats(mask)
        total = sum(runs.reasons.values()) or 1
        stops = ", ".join(
            f"{why} {100 * n / total:.0f}%" for why, n in sorted(runs.reasons.items())
        )
        lines.append(
            f"| {runs.family} | {_setting(runs)} | {_acc(s)} | {_tok(s)} | {s.samples:.1f} "
            f"| {_ratio(s, full)} | {stops} |"
        )
    return "\n".join(lines)


def match_table(report: Report, level: int, source: str | None = None) -> str:
    """Per family, the cheapest setting reaching fixed N=``level``'s mean accuracy.

    Raises:
        InvalidInputError: ``level`` is not between 1 and K.
    """
    if not 1 <= level <= report.k:
        raise InvalidInputError(f"level must be in 1..{report.k}, got {level}")
    mask = report.mask(source)
    target = report.fixed(level, source)
    full = report.fixed(report.k, source)
    lines = [
        "| method | setting | accuracy % | tokens/question | x fixed-K |",
        "|---|---|---|---|---|",
    ]
    for family in report.families:
        if family == "oracle":
            continue
        best = report.cheapest(family, target.accuracy, source)
        if best is None:
            lines.append(f"| {family} | never reaches it | - | - | - |")
            continue
        s = best.stats(mask)
        lines.append(f"| {family} | {_setting(best)} | {_acc(s)} | {_tok(s)} | {_ratio(s, full)} |")
    for oracle in report.family("oracle"):
        s = oracle.stats(mask)
        reached = "" if s.accuracy >= target.accuracy - 1e-9 else " (below the level)"
        lines.append(f"| oracle | -{reached} | {_acc(s)} | {_tok(s)} | {_ratio(s, full)} |")
    return "\n".join(lines)


def source_table(report: Report) -> str:
    """Per source: accuracy % / tokens per question of each family's N=K-matched setting."""
    sources = sorted(set(report.sources))
    level = report.fixed(report.k).accuracy
    header = "| method | setting | " + " | ".join(
        f"{s} ({report.sources.count(s)} q)" for s in sources
    )
    lines = [header + " |", "|---|---|" + "---|" * len(sources)]
    chosen: list[MethodRuns] = [report.find(f"fixed(n={report.k})"), *report.family("oracle")]
    for family in report.families:
        if family in _BASELINES:
            continue
        best = report.cheapest(family, level)
        if best is not None:
            chosen.append(best)
    for runs in chosen:
        cells = []
        for source in sources:
            s = runs.stats(report.mask(source))
            cells.append(f"{100 * s.accuracy:.1f} / {s.tokens:.0f}")
        lines.append(f"| {runs.family} | {_setting(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(report: Report, *, title: str = "Replay") -> str:
    """The whole markdown report: match tables, per-source table, every setting."""
    full = report.fixed(report.k)
    parts = [
        f"# {title}",
        "",
        f"{len(report.ids)} questions, K={report.k} paths, {report.orderings} orderings "
        f"(seed {report.seed}); fixed N={report.k}: {_acc(full)}% at {_tok(full)} "
        f"tokens/question. Spreads are standard deviations across orderings; "
        f"replay took {report.seconds:.1f} s.",
    ]
    for level in match_levels(report.k):
        target = report.fixed(level)
        parts += [
            "",
            f"## Matching fixed N={level} ({_acc(target)}%, {_tok(target)} tokens/question)",
            "",
            match_table(report, level),
        ]
    parts += [
        "",
        f"## By source (accuracy % / tokens per question; settings matched at N={report.k})",
        "",
        source_table(report),
        "",
        "## Every setting",
        "",
        summary_table(report),
        "",
    ]
    return "\n".join(parts)


def _panel(axis: Any, report: Report, source: str | None, families: Sequence[str]) -> None:
    """One panel: fixed-N with a band of one standard deviation, other families as lines."""
    mask = report.mask(source)
    markers = "osD^v<>pPXh*"
    others = [f for f in families if f not in _BASELINES]
    for family in families:
        stats = sorted((r.stats(mask) for r in report.family(family)), key=lambda s: s.tokens)
        xs = [s.tokens for s in stats]
        ys = [100 * s.accuracy for s in stats]
        if family == "fixed":
            spread = [100 * s.accuracy_std for s in stats]
            low = [y - e for y, e in zip(ys, spread, strict=True)]
            high = [y + e for y, e in zip(ys, spread, strict=True)]
            axis.fill_between(xs, low, high, color="black", alpha=0.12, linewidth=0)
            axis.plot(xs, ys, "k-o", label=family, markersize=3, linewidth=2)
        elif family == "oracle":
            axis.plot(xs, ys, "r*", label=family, markersize=12)
        else:
            index = others.index(family)
            color = COLORS[index % len(COLORS)]
            marker = markers[index % len(markers)]
            axis.plot(xs, ys, marker=marker, color=color, label=family, markersize=3, linewidth=1)
    axis.set_title(source or "all questions")
    axis.set_xlabel("completion tokens per question")
    axis.set_ylabel("accuracy % (mean over orderings)")
    axis.grid(alpha=0.3)


def plot_curves(report: Report, path: Path, *, families: Sequence[str] | None = None) -> Path:
    """Accuracy vs tokens per question, one curve per family; one panel per source.

    Raises:
        InvalidInputError: matplotlib is not installed.
    """
    plt = pyplot()
    names = list(families) if families is not None else report.families
    sources: list[str | None] = [None, *sorted(set(report.sources))]
    cols = min(3, len(sources))
    rows = (len(sources) + cols - 1) // cols
    figure, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.5 * rows), squeeze=False)
    for index, source in enumerate(sources):
        _panel(axes[index // cols][index % cols], report, source, names)
    for index in range(len(sources), rows * cols):
        axes[index // cols][index % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
