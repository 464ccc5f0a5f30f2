"""``dynasor-agents bench``: one command tree over the benchmark packages.

* ``bench record`` samples K paths per question from a real server into a
  trace bank (:mod:`dynasor_bench.traces`);
* ``bench replay`` evaluates stopping and allocation policies on a bank,
  ``bench calibrate`` picks thresholds and saves them as a controller config,
  ``bench live`` runs policies on the real server beside replay's prediction
  (:mod:`dynasor_bench.replay`);
* ``bench online`` serves programs arriving online to four systems and reports
  deadline attainment, measured and simulated (:mod:`dynasor_bench.online`);
* ``bench overhead`` measures what the server component costs
  (:mod:`dynasor_bench.overhead`);
* ``bench engine`` measures decode throughput per dtype on this CPU, side by
  side, and can save the winner for the launcher (:mod:`dynasor_bench.engine`).

The library's ``dynasor-agents`` command finds this tree through the
``dynasor_agents.commands`` entry point; the library never imports this package.

Example:
    >>> bench_main(["record", "--questions", "nope"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    dynasor_agents.errors.InvalidInputError: bad question spec 'nope': ...
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dynasor_bench.engine import _cli as engine_cli
from dynasor_bench.online import _cli as online_cli
from dynasor_bench.overhead import _cli as overhead_cli
from dynasor_bench.replay import _cli as replay_cli
from dynasor_bench.traces import _cli as traces_cli

__all__ = ["bench_main", "build_parser"]


def build_parser(prog: str = "dynasor-agents bench") -> argparse.ArgumentParser:
    """The ``bench`` command tree: one parser, a subcommand per benchmark."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Benchmarks on recorded traces and real servers "
        "(`dynasor-agents bench COMMAND --help`).",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    traces_cli.add_commands(sub)
    replay_cli.add_commands(sub)
    online_cli.add_commands(sub)
    overhead_cli.add_commands(sub)
    engine_cli.add_commands(sub)
    return parser


def bench_main(argv: Sequence[str]) -> int:
    """Run ``dynasor-agents bench ARGV``; the exit code.

    Raises:
        SystemExit: Bad arguments or ``--help`` (from argparse).
        InvalidInputError: Bad input (a malformed spec, a missing bank).
    """
    args = build_parser().parse_args(list(argv))
    code: int = args.run(args)
    return code
