"""Command lines: ``dynasor-agents bench replay`` and ``dynasor-agents bench calibrate``.

``replay`` replays the method suite on a trace bank, prints the markdown report
(match tables, per-source breakdown, every setting) and, with ``--out``, writes
``report.md`` and ``accuracy_vs_tokens.png`` there. With ``--split`` the bank is
split (seeded, stratified by source): every family's setting is chosen on the
calibration half (:func:`choose`, ``--target-drop``) and judged on the test half.

``calibrate`` replays one family's sweep and saves the chosen controller as JSON
(:func:`save_calibration`), for :func:`load_controller`.

Progress goes to stderr, tables to stdout.

Example:
    >>> import pathlib, tempfile
    >>> from dynasor_agents.bench._traces import PathTrace, QuestionTrace, append_question
    >>> bank = pathlib.Path(tempfile.mkdtemp()) / "toy.jsonl"
    >>> for i in range(2):
    ...     paths = [PathTrace(text="", answer=a, completion_tokens=10 + j, confidence=[1.0] * 8)
    ...              for j, a in enumerate("4454454444")]
    ...     append_question(bank, QuestionTrace(id=f"t:{i}", source="t", question="?", gold="4",
    ...                                         prompt_tokens=1, paths=paths))
    >>> out = bank.parent / "calib.json"
    >>> calibrate_cli(["--bank", str(bank), "--family", "certaindex-step1", "--orderings", "3",
    ...                "--target-drop", "10", "--out", str(out), "--quiet"])  # doctest: +ELLIPSIS
    certaindex-step1(t=...): accuracy ...
    0
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dynasor_agents._progress import Progress
from dynasor_agents.bench._calibrate import choose, save_calibration, split_bank
from dynasor_agents.bench._methods import Method
from dynasor_agents.bench._replay import DEFAULT_WINDOW
from dynasor_agents.bench._report import Report, run_replay
from dynasor_agents.bench._suite import FAMILIES, default_suite, select
from dynasor_agents.bench._tables import plot_curves, render
from dynasor_agents.bench._traces import QuestionTrace, bank_path, load_bank
from dynasor_agents.errors import InvalidInputError

__all__ = ["calibrate_cli", "heldout_table", "replay_main"]


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
    bank: Sequence[QuestionTrace], methods: Sequence[Method], args: argparse.Namespace, label: str
) -> Report:
    bar = Progress(len(methods), label, stream=io.StringIO() if args.quiet else None)
    try:
        return run_replay(
            bank,
            methods,
            orderings=args.orderings,
            seed=args.seed,
            window=args.window,
            workers=args.workers,
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


def replay_main(argv: Sequence[str]) -> int:
    """``dynasor-agents bench replay``: replay the suite on a bank; returns 0.

    Raises:
        SystemExit: Bad arguments or ``--help``.
        InvalidInputError: A missing bank or an unknown method family.
    """
    parser = argparse.ArgumentParser(
        prog="dynasor-agents bench replay",
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
    args = parser.parse_args(list(argv))
    path = bank_path(args.bank)
    bank = load_bank(path)
    families = args.methods.split(",") if args.methods else None
    methods = _suite(bank, families)
    title = f"Replay of {path.stem}"
    if not args.split:
        report = _replay(bank, methods, args, "replay")
        text = render(report, title=title)
        _write(args.out, text, [("accuracy_vs_tokens.png", report)])
    else:
        calib_bank, test_bank = split_bank(bank, seed=args.split_seed)
        if not calib_bank or not test_bank:
            raise InvalidInputError(f"the bank is too small to split ({len(bank)} questions)")
        # One suite for both halves (the allocators' budgets scale with the whole bank).
        calib = _replay(calib_bank, methods, args, "replay calib")
        test = _replay(test_bank, methods, args, "replay test")
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


def calibrate_cli(argv: Sequence[str]) -> int:
    """``dynasor-agents bench calibrate``: choose a family's setting, save it; returns 0.

    Raises:
        SystemExit: Bad arguments or ``--help``.
        InvalidInputError: A missing bank, an unknown family, an unreachable target,
            or a family that is not a controller.
    """
    parser = argparse.ArgumentParser(
        prog="dynasor-agents bench calibrate",
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
    args = parser.parse_args(list(argv))
    path = bank_path(args.bank)
    bank = load_bank(path)
    if args.split:
        bank = split_bank(bank, seed=args.split_seed)[0]
    methods = _suite(bank, [args.family])
    report = _replay(bank, methods, args, "calibrate")
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
