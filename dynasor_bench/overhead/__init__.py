"""What the server component costs: plain vLLM against vLLM with it, same workload."""

from dynasor_bench.overhead._benchmark import (
    LoadFigures,
    OverheadReport,
    Workload,
    run_benchmark,
)

__all__ = ["LoadFigures", "OverheadReport", "Workload", "run_benchmark"]
