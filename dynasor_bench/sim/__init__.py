"""The simulator: a discrete-event vLLM-like engine driving the library's real code.

:func:`simulate` runs a workload's programs through the real strategy cores and
the server's own admission function on modeled engines (:class:`CostModel`);
:func:`calibrate_engine` fits the CPU cost model from timed requests.
"""

from dynasor_bench.sim._calibrate import Calibration, batch_seconds, calibrate_engine
from dynasor_bench.sim._component import SimComponent, ToEngine
from dynasor_bench.sim._cost import CPU_QWEN_05B, H100_8B, CostModel
from dynasor_bench.sim._engine import Engine
from dynasor_bench.sim._simulate import SimResult, route, simulate

__all__ = [
    "CPU_QWEN_05B",
    "H100_8B",
    "Calibration",
    "CostModel",
    "Engine",
    "SimComponent",
    "SimResult",
    "ToEngine",
    "batch_seconds",
    "calibrate_engine",
    "route",
    "simulate",
]
