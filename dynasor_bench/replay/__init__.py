"""Replay: stopping and allocation policies evaluated on a recorded trace bank.

:func:`run_replay` replays every :class:`Method` (controllers through the
library's real self-consistency core, and baselines that are not controllers:
fixed-N, the oracle, DeepConf online, the shared-budget allocator) over many
orderings of each question's paths; :func:`choose` and :func:`save_calibration`
pick and save a setting; :func:`split_bank` holds questions out.
"""

from dynasor_bench.replay._calibrate import Choice, choose, save_calibration, split_bank
from dynasor_bench.replay._methods import ControllerMethod, FixedN, Method
from dynasor_bench.replay._report import MethodRuns, Report, Stats, run_replay

__all__ = [
    "Choice",
    "ControllerMethod",
    "FixedN",
    "Method",
    "MethodRuns",
    "Report",
    "Stats",
    "choose",
    "run_replay",
    "save_calibration",
    "split_bank",
]
