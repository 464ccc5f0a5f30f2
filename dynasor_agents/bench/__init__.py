"""Demo and benchmark drivers (they use the public API and the server launcher)."""

from dynasor_agents.bench._demo import DemoReport, DemoRow, run_demo, short_answer
from dynasor_agents.bench._overhead import LoadFigures, OverheadReport, Workload, run_benchmark
from dynasor_agents.bench._problems import DEFAULT_PROBLEMS, Problem, load_problems

__all__ = [
    "DEFAULT_PROBLEMS",
    "DemoReport",
    "DemoRow",
    "LoadFigures",
    "OverheadReport",
    "Problem",
    "Workload",
    "load_problems",
    "run_benchmark",
    "run_demo",
    "short_answer",
]
