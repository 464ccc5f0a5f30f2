"""The simulator: a discrete-event vLLM-like engine driving the library's real code.

:func:`simulate` runs a workload's programs through the real strategy cores and
the server's own admission function on modeled engines (:class:`CostModel`);
:func:`calibrate_engine` fits the CPU cost model from timed requests;
:func:`make_router` spreads programs over replicas as vllm-router does.
"""

from dynasor_bench.sim._calibrate import Calibration, batch_seconds, calibrate_engine
from dynasor_bench.sim._component import SimComponent, ToEngine
from dynasor_bench.sim._cost import CPU_QWEN_05B, H100_8B, CostModel
from dynasor_bench.sim._engine import Engine
from dynasor_bench.sim._route import (
    ROUTING_POLICIES,
    HashRing,
    Router,
    RoutingPolicy,
    fbi_hash,
    make_router,
)
from dynasor_bench.sim._simulate import SimResult, simulate

__all__ = [
    "CPU_QWEN_05B",
    "H100_8B",
    "ROUTING_POLICIES",
    "Calibration",
    "CostModel",
    "Engine",
    "HashRing",
    "Router",
    "RoutingPolicy",
    "SimComponent",
    "SimResult",
    "ToEngine",
    "batch_seconds",
    "calibrate_engine",
    "fbi_hash",
    "make_router",
    "simulate",
]
