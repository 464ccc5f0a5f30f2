"""dynasor-bench: the benchmark suite of dynasor-agents, built on its public API.

Subpackages, one concern each:

* :mod:`dynasor_bench.traces`: trace banks. :func:`record_bank` samples K paths
  per question from a server, :func:`load_bank` reads them back.
* :mod:`dynasor_bench.replay`: :func:`run_replay` evaluates stopping and
  allocation policies on a bank against fixed-N, the published rules and the
  oracle; :func:`save_calibration` stores the chosen thresholds as a calibration
  file the library loads (``SelfConsistency(model,
  controller=dynasor_agents.load_controller("calib.json"))``); the live check.
* :mod:`dynasor_bench.workload`: online workloads, programs arriving as a
  Poisson process with deadlines (:func:`make_workload`), and the four systems
  compared.
* :mod:`dynasor_bench.sim`: :func:`simulate` replays a workload on a
  discrete-event engine (:class:`CostModel`, calibrated on the CPU or
  :data:`H100_8B`) with the library's real strategy cores and server admission.
* :mod:`dynasor_bench.online`: :func:`run_online` serves a workload to a real
  server, and ``bench online`` measures, simulates and reports.
* :mod:`dynasor_bench.overhead`: :func:`run_benchmark`, what the server
  component costs in throughput and latency.

The command line is ``dynasor-agents bench record|replay|calibrate|live|online|overhead``
(also ``python -m dynasor_bench``). The library never imports this package.
"""

from dynasor_bench._cli import bench_main
from dynasor_bench.online import run_online
from dynasor_bench.overhead import LoadFigures, OverheadReport, Workload, run_benchmark
from dynasor_bench.replay import Report, run_replay, save_calibration
from dynasor_bench.sim import CPU_QWEN_05B, H100_8B, CostModel, SimResult, simulate
from dynasor_bench.traces import (
    PathTrace,
    QuestionTrace,
    RecordSettings,
    load_bank,
    record_bank,
    select_questions,
)
from dynasor_bench.workload import (
    SYSTEMS,
    OnlineRow,
    OnlineStrategy,
    OnlineWorkload,
    SystemSpec,
    make_workload,
)

__all__ = [
    "CPU_QWEN_05B",
    "H100_8B",
    "SYSTEMS",
    "CostModel",
    "LoadFigures",
    "OnlineRow",
    "OnlineStrategy",
    "OnlineWorkload",
    "OverheadReport",
    "PathTrace",
    "QuestionTrace",
    "RecordSettings",
    "Report",
    "SimResult",
    "SystemSpec",
    "Workload",
    "bench_main",
    "load_bank",
    "make_workload",
    "record_bank",
    "run_benchmark",
    "run_online",
    "run_replay",
    "save_calibration",
    "select_questions",
    "simulate",
]
