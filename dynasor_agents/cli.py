"""The ``dynasor-agents`` command line.

Subcommands:

* ``serve MODEL [vLLM flags]``: replace this process with vLLM's OpenAI server,
  the Dynasor component loaded, our flags (``--program-scheduling``,
  ``--program-ttl``, ...) handed to it as ``DYNASOR_*`` variables and the launch
  recipe of :func:`dynasor_agents.server.vllm_command` applied; every other
  flag goes to vLLM unchanged. ``smollm2`` is the packaged test model.
* ``demo``: start a local vLLM with the Dynasor component and the packaged
  Qwen2.5-Coder-0.5B (the CPU recipe on a CPU build), run Certaindex early-stop
  self-consistency beside fixed-N self-consistency on a mix of math questions,
  print the answers, samples, tokens, accuracy and wall time of each arm
  (:mod:`dynasor_agents.demo`).
* ``prepare-model``: convert the packaged SmolLM2-135M-Instruct GGUF to a cached
  Hugging Face checkpoint (done on demand by ``demo``, ``serve smollm2`` and the
  tests too).

Example (``_run`` is :func:`main` with the exec ``serve`` ends in replaceable):
    >>> def show(file, argv, env):
    ...     print(argv[argv.index("--model") :][:2], argv[-2:], env["DYNASOR_PROGRAM_TTL"])
    >>> _run(["serve", "/models/x", "--program-ttl", "60", "--max-num-seqs", "2"], execute=show)
    ['--model', '/models/x'] ['--max-num-seqs', '2'] 60.0
    0
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Final

from dynasor_agents.demo._command import add_demo_parser, demo_command
from dynasor_agents.errors import DynasorError

__all__ = ["main"]

Execute = Callable[[str, list[str], dict[str, str]], object]
"""Replaces the process, like :func:`os.execvpe` (tests pass a recorder)."""

TEST_MODEL: Final = "smollm2"
"""``serve`` MODEL alias (and served name) of the packaged SmolLM2-135M-Instruct."""

PACKAGED: Final = ("smollm2", "qwen2.5-coder-0.5b")
"""``serve`` / ``prepare-model`` aliases of the packaged models (see
``dynasor_agents.server.PACKAGED_MODELS``); each is served under its alias."""

# serve's own flags: (flag, ServerConfig field, metavar, type, help). The defaults
# in the help mirror ServerConfig's; tests/unit_tests/test_serve_cli.py checks that.
# (ServerConfig itself is not imported here: the package needs the server extra.)
_SERVE_FLAGS: Final[tuple[tuple[str, str, str | None, type, str], ...]] = (
    (
        "--program-scheduling",
        "scheduling",
        None,
        str,
        "program-level scheduling: fcfs (vLLM's own order), gang (a program's requests "
        "together, earlier programs first), dynasor (gang + approximate "
        "shortest-remaining-first + aging), las (least attained service: programs that "
        "have generated the fewest tokens first) or edf (earliest deadline hint first) "
        "(default: dynasor)",
    ),
    (
        "--program-ttl",
        "program_ttl",
        "SECONDS",
        float,
        "seconds a program may stay idle (nothing in flight) before its entry expires "
        "and is freed (default: 600)",
    ),
    (
        "--max-programs",
        "max_programs",
        "N",
        int,
        "most programs the table holds; more get too_many_programs (default: 10000)",
    ),
    (
        "--default-budget",
        "default_budget",
        "TOKENS",
        int,
        "completion tokens a program may spend when its client sends no budget "
        "(default: unlimited)",
    ),
    (
        "--aging",
        "aging",
        "TOKENS_PER_SECOND",
        float,
        "tokens of estimated remaining work forgiven per second a program has existed, "
        "so long programs are not starved by short ones; dynasor only (default: 100)",
    ),
    (
        "--late-programs",
        "late_programs",
        None,
        str,
        "stop: a program whose deadline hint has passed is stopped (its requests are "
        "aborted and refused with deadline_exceeded, and the client answers with what it "
        "has); keep: it runs on (default: stop)",
    ),
    (
        "--request-tokens",
        "request_tokens",
        "N",
        int,
        "tokens a request is assumed to generate before the program has a finished "
        "request to average over, when the request sets no max_tokens (default: 256)",
    ),
)

# The values of serve's flags that take a name (ServerConfig's Literal types).
_SERVE_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "scheduling": ("fcfs", "gang", "dynasor", "las", "edf"),
    "late_programs": ("stop", "keep"),
}

_SERVE_DESCRIPTION = f"""\
Run vLLM's OpenAI-compatible server with the Dynasor component loaded (vLLM
replaces this process). MODEL is a Hugging Face model name or a local
checkpoint directory; "{TEST_MODEL}" is the packaged SmolLM2-135M-Instruct
test model and "{PACKAGED[1]}" the packaged Qwen2.5-Coder-0.5B-Instruct benchmark
model (each converted once and served under its alias)."""

_SERVE_EPILOG = """\
Every other flag goes to vLLM unchanged; see
  python -m vllm.entrypoints.openai.api_server --help
serve adds these vLLM flags:
  --middleware dynasor_agents.server.DynasorMiddleware  (beside any of yours)
  --scheduling-policy priority  (program scheduling sets the request priority;
                                 fcfs needs --program-scheduling fcfs)
  --enable-prefix-caching
  --dtype DTYPE --enforce-eager --no-enable-chunked-prefill  (CPU build)
On a CPU build DTYPE is chosen for this CPU: bfloat16 where it computes
bfloat16 natively (AVX-512 BF16 or AMX), else float32 (bfloat16 would be
emulated), unless `dynasor-agents bench engine` measured otherwise here.
A flag you pass yourself (--flag value, --flag=value or its --no- opposite)
replaces ours. Our flags reach the component as DYNASOR_* environment
variables; unless already set, serve also sets VLLM_CPU_KVCACHE_SPACE (an
eighth of the memory in GiB, 2 to 8) and VLLM_CPU_NUM_OF_RESERVED_CPU=0 (CPU
build), VLLM_NO_USAGE_STATS=1 and, for a local MODEL, HF_HUB_OFFLINE=1.

example:
  dynasor-agents serve smollm2 --max-model-len 2048 --port 8000 --api-key KEY"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dynasor-agents",
        description="Certaindex-guided reasoning programs on vLLM.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run vLLM's OpenAI server with the Dynasor component (any vLLM flag)",
        usage="%(prog)s [-h] MODEL [Dynasor flags] [vLLM flags ...]",
        description=_SERVE_DESCRIPTION,
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a vLLM flag must never be read as an abbreviation of ours
    )
    ours = serve.add_argument_group("Dynasor flags")
    for flag, field, metavar, kind, text in _SERVE_FLAGS:
        choices = _SERVE_CHOICES.get(field)
        ours.add_argument(flag, dest=field, type=kind, metavar=metavar, choices=choices, help=text)

    add_demo_parser(sub)

    prepare = sub.add_parser("prepare-model", help="convert a packaged model once (cached)")
    prepare.add_argument("name", nargs="?", default=TEST_MODEL, choices=PACKAGED)

    sub.add_parser(
        "bench",
        help="benchmarks: record a trace bank, replay or calibrate policies on it",
        add_help=False,  # `bench --help` is answered by the bench command itself
    )
    return parser


COMMANDS_GROUP: Final = "dynasor_agents.commands"
"""Entry-point group of commands other packages add (``bench`` comes from dynasor_bench)."""


def _plugin(name: str) -> Callable[[Sequence[str]], int]:
    """The command ``name`` that an installed package registered in :data:`COMMANDS_GROUP`.

    Raises:
        InvalidInputError: No installed package provides it.
    """
    from importlib.metadata import entry_points

    from dynasor_agents.errors import InvalidInputError

    found = entry_points(group=COMMANDS_GROUP, name=name)
    if not found:
        raise InvalidInputError(
            f"no installed package provides `dynasor-agents {name}`; reinstall dynasor-agents "
            "(its distribution ships the benchmark suite, dynasor_bench, that provides bench)"
        )
    command: Callable[[Sequence[str]], int] = next(iter(found)).load()
    return command


def _split_model(rest: list[str]) -> tuple[str, list[str]] | None:
    """MODEL (the first argument, or else ``--model``'s value) and vLLM's flags."""
    if rest and not rest[0].startswith("-"):
        return rest[0], rest[1:]
    for i, arg in enumerate(rest):
        name, eq, value = arg.partition("=")
        if name.replace("_", "-") != "--model":
            continue
        if eq:
            return value, rest[:i] + rest[i + 1 :]
        if i + 1 < len(rest) and not rest[i + 1].startswith("-"):
            return rest[i + 1], rest[:i] + rest[i + 2 :]
        break
    return None


def _serve(
    args: argparse.Namespace,
    rest: list[str],
    *,
    execute: Execute,
    environ: Mapping[str, str],
) -> int:
    """Validate our flags, build vLLM's command line and environment, exec it."""
    from pydantic import ValidationError

    from dynasor_agents import server

    def fail(message: str) -> int:
        print(f"dynasor-agents serve: error: {message}", file=sys.stderr)
        return 2

    flags = {field: flag for flag, field, *_ in _SERVE_FLAGS}
    values = {field: getattr(args, field) for field in flags}
    try:
        config = server.ServerConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        return fail(f"argument {flags.get(field, field)}: {err['msg']} (got {values.get(field)!r})")

    split = _split_model(rest)
    if split is None:
        return fail("MODEL is required before vLLM's flags: dynasor-agents serve MODEL [flags]")
    model, vllm_args = split

    served = None
    local = Path(model).exists()
    if model in PACKAGED:
        served = model
        model, local = str(server.ensure_checkpoint(model=model)), True
    try:
        command = server.vllm_command(model, vllm_args, config=config, served_model_name=served)
    except ValueError as exc:
        return fail(str(exc))
    env = server.vllm_environment(config, environ, offline=local)
    if "--dtype" in command[: len(command) - len(vllm_args)]:  # the CPU recipe chose it
        engine = server.engine_settings(model)
        print(f"[dynasor] CPU engine: {engine.dtype} ({engine.reason})", file=sys.stderr)
    added = [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()) if environ.get(k) != v]
    print(f"[dynasor] exec {' '.join(added)} {shlex.join(command)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    execute(command[0], command, env)
    return 0  # reached only when ``execute`` returns (a test double)


def _run(
    argv: Sequence[str] | None = None,
    *,
    execute: Execute = os.execvpe,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run the command line ``argv``; the exit code.

    Args:
        argv: Arguments after the program name (default: ``sys.argv[1:]``).
        execute: What ``serve`` calls to replace the process with vLLM.
        environ: The environment ``serve`` starts from (default: ``os.environ``).

    Raises:
        SystemExit: Bad arguments (code 2) or ``--help`` (code 0), from argparse.
    """
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in ("serve", "bench"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "bench":
            return _plugin("bench")(rest)
        if args.command == "serve":
            return _serve(
                args, rest, execute=execute, environ=os.environ if environ is None else environ
            )
        if args.command == "demo":
            return demo_command(args)
        if args.command == "prepare-model":
            from dynasor_agents.server import ensure_checkpoint

            print(ensure_checkpoint(model=args.name))
            return 0
    except (DynasorError, FileNotFoundError) as exc:
        print(f"dynasor-agents: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1  # pragma: no cover - argparse rejects unknown commands


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _stop_cleanly_on_sigterm() -> None:
    """Make SIGTERM raise :class:`SystemExit` (exit code 143) in the main thread.

    Python's default SIGTERM ends the process at once, so a ``with`` block that
    started vLLM (the demo, ``bench``) never stops it and the server outlives
    its command. As an exception, SIGTERM unwinds those blocks like Ctrl-C does.
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dynasor-agents`` console script."""
    _stop_cleanly_on_sigterm()
    return _run(argv)


if __name__ == "__main__":
    sys.exit(main())
