"""Commands ``bench replay``, ``bench calibrate`` and ``bench live``.

``replay`` replays the method suite on a trace bank, prints the markdown report
(match tables, per-source breakdown, every setting) and, with ``--out``, writes
``report.md`` and ``accuracy_vs_tokens.png`` there. With ``--split`` the bank is
split (seeded, stratified by source): every family's setting is chosen on the
calibration half (:func:`choose`, ``--target-drop``) and judged on the test half.

``calibrate`` replays one family's sweep and saves the chosen controller as JSON
(:func:`save_calibration`), for :func:`dynasor_agents.load_controller`.

``live`` runs a few policies against the real server on a bank's questions and
prints them beside replay's prediction for the same questions.

Progress goes to stderr, tables to stdout.

Example:
    >>> import pathlib, tempfile
    >>> from dynasor_bench.traces._bank import PathTrace, QuestionTrace, append_question
    >>> bank = pathlib.Path(tempfile.mkdtemp()) / "toy.jsonl"
    >>> for i in range(2):
    ...     paths = [PathTrace(text="", answer=a, completion_tokens=10 + j, confidence=[1.0] * 8)
    ...              for j, a in enumerate("4454454444")]
    ...     append_question(bank, QuestionTrace(id=f"t:{i}", source="t", question="?", gold="4",
    ...                                         prompt_tokens=1, paths=paths))
    >>> from dynasor_bench import bench_main
    >>> out = bank.parent / "calib.json"
    >>> bench_main(["calibrate", "--bank", str(bank), "--family", "certaindex-step1",
    ...             "--orderings", "3", "--target-drop", "10", "--out", str(out),
    ...             "--quiet"])  # doctest: +ELLIPSIS
    certaindex-step1(t=...): accuracy ...
    0
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dynasor_agents import ControllerSpec, InvalidInputError, Progress
from dynasor_bench.replay._calibrate import choose, save_calibration, split_bank
from dynasor_bench.replay._live import run_live, summarize
from dynasor_bench.replay._methods import ControllerMethod, Method
from dynasor_bench.replay._prepare import DEFAULT_WINDOW
from dynasor_bench.replay._report import Report, run_replay
from dynasor_bench.replay._suite import FAMILIES, default_suite, select
from dynasor_bench.replay._tables import plot_curves, render
from dynasor_bench.traces._bank import QuestionTrace, bank_path, load_bank, load_meta

__all__ = ["LIVE_METHODS", "LiveMethod", "ReplaySettings", "add_commands", "heldout_table"]


@dataclass(frozen=True)
class ReplaySettings:
    """How a command replays a bank (from the common flags).

    Attributes:
        orderings: Orderings of the paths per question.
        seed: Seed of the orderings.
        window: Group-confidence window in tokens.
        workers: Processes.
        quiet: No progress line on stderr.
    """

    orderings: int
    seed: int
    window: int
    workers: int
    quiet: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReplaySettings:
        """The settings of parsed common flags."""
        return cls(args.orderings, args.seed, args.window, args.workers, args.quiet)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bank", required=True, help="bank name (in the cache) or .jsonl path")
    parser.add_argument("--orderings", type=int, default=100, help="orderings per question")
    parser.add_argument("--seed", type=int, default=0, help="seed of the orderings")
    parser.add_argument(
        "--window", type=int, default=DEFAULT_WINDOW, help="group-confidence window (tokens)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes (default: min(2, CPUs))",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _suite(bank: Sequence[QuestionTrace], families: Sequence[str] | None) -> list[Method]:
    k = min(len(q.paths) for q in bank)
    mean_length = float(np.mean([p.completion_tokens for q in bank for p in q.paths]))
    methods = select(default_suite(k, mean_length=mean_length), families)
    if any(not p.confidence for q in bank for p in q.paths):
        dropped = sorted({m.family for m in methods if m.needs_confidence})
        if dropped:
            print(f"[replay] no token confidences in the bank: skipping {dropped}", file=sys.stderr)
        methods = [m for m in methods if not m.needs_confidence]
    return methods


def _replay(
    bank: Sequence[QuestionTrace], methods: Sequence[Method], settings: ReplaySettings, label: str
) -> Report:
    bar = Progress(len(methods), label, stream=io.StringIO() if settings.quiet else None)
    try:
        return run_replay(
            bank,
            methods,
            orderings=settings.orderings,
            seed=settings.seed,
            window=settings.window,
            workers=settings.workers,
            on_method=lambda method: bar.update(1),
        )
    finally:
        bar.close()


def heldout_table(calib: Report, test: Report, *, drop: float) -> str:
    """Per family: the setting chosen on ``calib`` (fixed N=K minus ``drop`` points),
    measured on ``test``."""
    full = test.fixed(test.k)
    lines = [
        f"| method | chosen on calib | calib accuracy % | calib tokens | test accuracy % "
        f"| test tokens/question | test x fixed-K (fixed-K: {100 * full.accuracy:.1f}%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in calib.families:
        if family in ("fixed", "oracle"):
            continue
        try:
            choice = choose(calib, family, drop=drop)
        except InvalidInputError:
            lines.append(f"| {family} | never reaches the target | - | - | - | - | - |")
            continue
        c = choice.stats
        t = test.find(choice.runs.label).stats()
        setting = ", ".join(f"{k}={v:g}" for k, v in choice.runs.method.params.items()) or "-"
        lines.append(
            f"| {family} | {setting} | {100 * c.accuracy:.1f} | {c.tokens:.0f} "
            f"| {100 * t.accuracy:.1f} ± {100 * t.accuracy_std:.1f} "
            f"| {t.tokens:.0f} ± {t.tokens_std:.0f} | {t.tokens / full.tokens:.2f} |"
        )
    for oracle in test.family("oracle"):
        t = oracle.stats()
        lines.append(
            f"| oracle | - | - | - | {100 * t.accuracy:.1f} ± {100 * t.accuracy_std:.1f} "
            f"| {t.tokens:.0f} ± {t.tokens_std:.0f} | {t.tokens / full.tokens:.2f} |"
        )
    return "\n".join(lines)


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``replay``, ``calibrate`` and ``live`` to the ``bench`` command tree."""
    parser = sub.add_parser(
        "replay",
        help="evaluate stopping and allocation policies on a bank",
        description="Replay stopping and allocation policies on a recorded trace bank.",
    )
    _common(parser)
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma list of families (default all): {','.join(FAMILIES)}",
    )
    parser.add_argument("--out", type=Path, default=None, help="directory for report.md and PNGs")
    parser.add_argument(
        "--split", action="store_true", help="calibrate on a seeded half, report on the other"
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the split")
    parser.add_argument(
        "--target-drop", type=float, default=0.5, help="split: accuracy points below fixed N=K"
    )
    parser.set_defaults(run=_replay_command)
    _calibrate_parser(sub)
    _live_parser(sub)


def _replay_command(args: argparse.Namespace) -> int:
    """``bench replay``: replay the suite on a bank; returns 0.

    Raises:
        InvalidInputError: A missing bank or an unknown method family.
    """
    settings = ReplaySettings.from_args(args)
    path = bank_path(args.bank)
    bank = load_bank(path)
    families = args.methods.split(",") if args.methods else None
    methods = _suite(bank, families)
    title = f"Replay of {path.stem}"
    if not args.split:
        report = _replay(bank, methods, settings, "replay")
        text = render(report, title=title)
        _write(args.out, text, [("accuracy_vs_tokens.png", report)])
    else:
        calib_bank, test_bank = split_bank(bank, seed=args.split_seed)
        if not calib_bank or not test_bank:
            raise InvalidInputError(f"the bank is too small to split ({len(bank)} questions)")
        # One suite for both halves (the allocators' budgets scale with the whole bank).
        calib = _replay(calib_bank, methods, settings, "replay calib")
        test = _replay(test_bank, methods, settings, "replay test")
        text = "\n".join(
            [
                f"# {title}: held-out evaluation",
                "",
                f"Settings chosen on {len(calib.ids)} calibration questions for fixed N={calib.k} "
                f"accuracy minus {args.target_drop:g} points; measured on {len(test.ids)} test "
                f"questions ({args.orderings} orderings).",
                "",
                heldout_table(calib, test, drop=args.target_drop),
                "",
                render(test, title=f"{title}: test half"),
            ]
        )
        _write(args.out, text, [("test_accuracy_vs_tokens.png", test)])
    print(text)
    return 0


def _write(out: Path | None, text: str, plots: Sequence[tuple[str, Report]]) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text, encoding="utf-8")
    for name, report in plots:
        plot_curves(report, out / name)
    print(f"[replay] wrote {out / 'report.md'} and plots", file=sys.stderr)


def _calibrate_parser(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "calibrate",
        help="choose thresholds for a target accuracy or saving",
        description="Choose a controller's parameter on a labeled bank and save it as JSON.",
    )
    _common(parser)
    parser.add_argument("--family", default="certaindex-step1", help="method family to calibrate")
    goal = parser.add_mutually_exclusive_group()
    goal.add_argument("--target-drop", type=float, help="accuracy points below fixed N=K")
    goal.add_argument("--target-accuracy", type=float, help="absolute accuracy in [0, 1]")
    goal.add_argument("--target-ratio", type=float, help="max tokens relative to fixed N=K")
    parser.add_argument(
        "--split", action="store_true", help="use only the calibration half of a seeded split"
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--out", type=Path, default=Path("calibration.json"), help="JSON to write")
    parser.set_defaults(run=_calibrate_command)


def _calibrate_command(args: argparse.Namespace) -> int:
    """``bench calibrate``: choose a family's setting, save it; returns 0.

    Raises:
        InvalidInputError: A missing bank, an unknown family, an unreachable target,
            or a family that is not a controller.
    """
    path = bank_path(args.bank)
    bank = load_bank(path)
    if args.split:
        bank = split_bank(bank, seed=args.split_seed)[0]
    methods = _suite(bank, [args.family])
    report = _replay(bank, methods, ReplaySettings.from_args(args), "calibrate")
    drop = args.target_drop
    if drop is None and args.target_accuracy is None and args.target_ratio is None:
        drop = 0.5
    choice = choose(
        report, args.family, accuracy=args.target_accuracy, drop=drop, ratio=args.target_ratio
    )
    save_calibration(args.out, choice, bank=str(path), split=bool(args.split))
    s, full = choice.stats, choice.full
    print(
        f"{choice.runs.label}: accuracy {100 * s.accuracy:.1f}% (fixed N={report.k}: "
        f"{100 * full.accuracy:.1f}%), {s.tokens:.0f} tokens/question "
        f"({s.tokens / full.tokens:.2f} x fixed N={report.k}); saved {args.out}"
    )
    return 0


class LiveMethod(NamedTuple):
    """A policy ``bench live`` runs: its terms, round sizes and whether votes are weighted
    by trace confidence (``confidence_window``, replayed with ``weighted=True``)."""

    terms: list[tuple[str, dict[str, float]]]
    first_round: int
    round_size: int
    weighted: bool = False


LIVE_METHODS: dict[str, LiveMethod] = {
    "fixed-16": LiveMethod([("max_samples", {"n": 16})], 16, 16),
    "certaindex-0.7": LiveMethod(
        [("threshold", {"value": 0.7}), ("max_samples", {"n": 16})], 5, 11
    ),
    "certaindex-step1-0.7": LiveMethod(
        [("threshold", {"value": 0.7}), ("max_samples", {"n": 16})],
        5,
        1,
    ),
    "adaptive-consistency-0.95": LiveMethod(
        [("adaptive_consistency", {"threshold": 0.95}), ("max_samples", {"n": 16})],
        1,
        1,
    ),
    "hopeless-0.7-below-0.3": LiveMethod(
        [
            ("threshold", {"value": 0.7}),
            ("hopeless", {"below": 0.3, "after": 8}),
            ("max_samples", {"n": 16}),
        ],
        5,
        1,
    ),
    "wconsensus-hopeless-0.6-below-0.1": LiveMethod(
        [
            ("weighted_consensus", {"threshold": 0.6, "min_samples": 4}),
            ("hopeless", {"below": 0.1, "after": 8}),
            ("max_samples", {"n": 16}),
        ],
        4,
        1,
        weighted=True,
    ),
}
"""The policies ``bench live`` runs."""


def _live_parser(sub: argparse._SubParsersAction[Any]) -> None:
    live = sub.add_parser(
        "live",
        help="run policies live on a bank's questions, beside replay's prediction",
        description=(
            "Run each policy of the live set (self-consistency, K=16 cap) against a running "
            "server on the bank's first --limit questions, one policy at a time, and print "
            "live accuracy and engine tokens beside replay's mean and spread on the same "
            "questions."
        ),
    )
    live.add_argument("--bank", default="qwen-math", help="bank name or .jsonl path")
    live.add_argument("--base-url", required=True, help="the server (http://host:port/v1)")
    live.add_argument("--api-key", default="EMPTY")
    live.add_argument("--limit", type=int, default=16, help="questions (the bank's first)")
    live.add_argument("--orderings", type=int, default=50, help="replay orderings")
    live.add_argument("--concurrency", type=int, default=2, help="programs in flight")
    live.add_argument("--methods", help=f"comma list of: {', '.join(LIVE_METHODS)}")
    live.set_defaults(run=_live_command)


def _live_command(args: argparse.Namespace) -> int:
    path = bank_path(args.bank)
    meta = load_meta(path)
    if meta is None:
        raise InvalidInputError(f"{path} has no metadata (record it with `bench record`)")
    questions = load_bank(path)[: args.limit]
    names = args.methods.split(",") if args.methods else list(LIVE_METHODS)
    unknown = [n for n in names if n not in LIVE_METHODS]
    if unknown:
        raise InvalidInputError(f"unknown live methods {unknown}; known: {list(LIVE_METHODS)}")
    specs = {
        n: ControllerSpec.of(LIVE_METHODS[n].terms, first_round=LIVE_METHODS[n].first_round,
                             round_size=LIVE_METHODS[n].round_size)
        for n in names
    }  # fmt: skip
    weighted = {n for n in names if LIVE_METHODS[n].weighted}
    methods = [ControllerMethod(n, {}, spec, weighted=n in weighted) for n, spec in specs.items()]
    replay = run_replay(questions, methods, orderings=args.orderings)
    rows, engine = asyncio.run(
        run_live(
            args.base_url,
            questions,
            {n: spec.build for n, spec in specs.items()},
            meta,
            api_key=args.api_key,
            concurrency=args.concurrency,
            weighted=weighted,
        )
    )
    live = summarize(rows)
    print(f"\nLive check on {len(questions)} questions of {path.name} ({meta.model}, K<=16)\n")
    print("| method | live accuracy % | replay accuracy % | live engine tokens/q | "
          "replay tokens/q | live client tokens/q |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for n in names:
        stats = replay.find(n).stats()
        print(
            f"| {n} | {100 * live[n].accuracy:.1f} | {100 * stats.accuracy:.1f} ± "
            f"{100 * stats.accuracy_std:.1f} | {engine[n]:.0f} | {stats.tokens:.0f} ± "
            f"{stats.tokens_std:.0f} | {live[n].tokens:.0f} |"
        )
    return 0
