"""Reasoning strategies as LangChain Runnables, each a sans-IO core run by one driver."""

from dynasor_agents.strategies._actions import (
    Await,
    Cancel,
    Completion,
    Emit,
    Finish,
    Launch,
    drive,
)
from dynasor_agents.strategies._sc_core import SelfConsistencyResult, self_consistency_core
from dynasor_agents.strategies._self_consistency import (
    DEFAULT_PROMPT,
    PROGRESS_EVENT,
    SelfConsistency,
    SelfConsistencyInput,
)

__all__ = [
    "DEFAULT_PROMPT",
    "PROGRESS_EVENT",
    "Await",
    "Cancel",
    "Completion",
    "Emit",
    "Finish",
    "Launch",
    "SelfConsistency",
    "SelfConsistencyInput",
    "SelfConsistencyResult",
    "drive",
    "self_consistency_core",
]
