"""The server half of Dynasor: a component loaded into vLLM's OpenAI server.

Start vLLM with ``dynasor-agents serve MODEL [vLLM flags]``, or with
``--middleware dynasor_agents.server.DynasorMiddleware`` and the recipe of
:func:`vllm_command` / :func:`vllm_environment` (:class:`VLLMServer` runs that as
a child process). This package imports only the wire protocol, never the
strategies.

The admission decision (:func:`admit`: program table, scheduling policy, hints
and request shape in; :class:`Admitted` or :class:`Refused` out) is sans-IO, so
a simulator runs the very decisions the middleware makes.
"""

from dynasor_agents.server._admission import Admitted, Refused, admit
from dynasor_agents.server._checkpoint import (
    DEFAULT_MODEL,
    ChecksumMismatchError,
    cache_dir,
    ensure_checkpoint,
)
from dynasor_agents.server._config import ServerConfig
from dynasor_agents.server._engine_settings import (
    CpuInfo,
    EngineSettings,
    choose_engine_settings,
    load_measurement,
    save_measurement,
)
from dynasor_agents.server._launch import ServerStartError, VLLMServer, free_port, local_server
from dynasor_agents.server._middleware import DynasorMiddleware
from dynasor_agents.server._recipe import (
    MIDDLEWARE,
    engine_settings,
    is_cpu_build,
    vllm_command,
    vllm_environment,
)
from dynasor_agents.server._scheduling import (
    Dynasor,
    Edf,
    Fcfs,
    Gang,
    Las,
    RequestShape,
    SchedulingPolicy,
    make_policy,
)
from dynasor_agents.server._table import InFlight, ProgramRecord, ProgramTable

__all__ = [
    "DEFAULT_MODEL",
    "MIDDLEWARE",
    "Admitted",
    "ChecksumMismatchError",
    "CpuInfo",
    "Dynasor",
    "DynasorMiddleware",
    "Edf",
    "EngineSettings",
    "Fcfs",
    "Gang",
    "InFlight",
    "Las",
    "ProgramRecord",
    "ProgramTable",
    "Refused",
    "RequestShape",
    "SchedulingPolicy",
    "ServerConfig",
    "ServerStartError",
    "VLLMServer",
    "admit",
    "cache_dir",
    "choose_engine_settings",
    "engine_settings",
    "ensure_checkpoint",
    "free_port",
    "is_cpu_build",
    "load_measurement",
    "local_server",
    "make_policy",
    "save_measurement",
    "vllm_command",
    "vllm_environment",
]
