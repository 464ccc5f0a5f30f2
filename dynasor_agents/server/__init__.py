"""The server half of Dynasor: a component loaded into vLLM's OpenAI server.

Start vLLM with ``--middleware dynasor_agents.server.DynasorMiddleware`` (or use
:class:`VLLMServer`, which does that and applies the CPU recipe). This package
imports only the wire protocol, never the strategies.
"""

from dynasor_agents.server._checkpoint import DEFAULT_MODEL, cache_dir, ensure_checkpoint
from dynasor_agents.server._launch import (
    MIDDLEWARE,
    ServerStartError,
    VLLMServer,
    free_port,
    is_cpu_build,
)
from dynasor_agents.server._middleware import DynasorMiddleware
from dynasor_agents.server._table import InFlight, ProgramRecord, ProgramTable

__all__ = [
    "DEFAULT_MODEL",
    "MIDDLEWARE",
    "DynasorMiddleware",
    "InFlight",
    "ProgramRecord",
    "ProgramTable",
    "ServerStartError",
    "VLLMServer",
    "cache_dir",
    "ensure_checkpoint",
    "free_port",
    "is_cpu_build",
]
