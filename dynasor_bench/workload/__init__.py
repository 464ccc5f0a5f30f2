"""Online workloads: programs arriving as a Poisson process, with deadlines, and the
systems that serve them. Shared by the real load generator and the simulator."""

from dynasor_bench.workload._workload import (
    DEADLINE_FORMS,
    DEFAULT_MIX,
    SYSTEMS,
    DeadlineForm,
    OnlineRow,
    OnlineStrategy,
    OnlineWorkload,
    ProgramSpec,
    SystemSpec,
    make_workload,
)

__all__ = [
    "DEADLINE_FORMS",
    "DEFAULT_MIX",
    "SYSTEMS",
    "DeadlineForm",
    "OnlineRow",
    "OnlineStrategy",
    "OnlineWorkload",
    "ProgramSpec",
    "SystemSpec",
    "make_workload",
]
