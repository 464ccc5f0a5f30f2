"""Online workloads: programs arriving as a Poisson process, with deadlines, and the
systems that serve them. Shared by the real load generator and the simulator."""

from dynasor_bench.workload._workload import (
    DEFAULT_MIX,
    SYSTEMS,
    OnlineRow,
    OnlineStrategy,
    OnlineWorkload,
    ProgramSpec,
    SystemSpec,
    make_workload,
)

__all__ = [
    "DEFAULT_MIX",
    "SYSTEMS",
    "OnlineRow",
    "OnlineStrategy",
    "OnlineWorkload",
    "ProgramSpec",
    "SystemSpec",
    "make_workload",
]
