"""Demo and benchmark drivers (they use the public API and the server launcher).

* the demo (:func:`run_demo`) and the overhead benchmark (:func:`run_benchmark`);
* trace banks: :func:`record_bank` samples K paths per question from a server,
  :func:`load_bank` reads them back;
* replay: :func:`run_replay` evaluates stopping and allocation policies on a bank;
* calibration: :func:`save_calibration` / :func:`load_controller` store chosen
  thresholds as a config a strategy loads
  (``SelfConsistency(model, controller=load_controller("calib.json"))``).

* online serving: :func:`make_workload` draws programs arriving as a Poisson
  process with deadlines, :func:`run_online` serves them to a real server,
  :func:`simulate` replays them on a discrete-event engine (:class:`CostModel`,
  calibrated on the CPU or :data:`H100_8B`) with the real cores and server
  policies.

The command line is ``dynasor-agents bench record|replay|calibrate|live|online``.
"""

from dynasor_agents._progress import Progress
from dynasor_agents.bench._calibrate import load_calibration, load_controller, save_calibration
from dynasor_agents.bench._demo import DemoReport, DemoRow, run_demo, short_answer
from dynasor_agents.bench._online import run_online
from dynasor_agents.bench._overhead import LoadFigures, OverheadReport, Workload, run_benchmark
from dynasor_agents.bench._problems import DEFAULT_PROBLEMS, Problem, load_problems
from dynasor_agents.bench._record import RecordSettings, record_bank, select_questions
from dynasor_agents.bench._report import Report, run_replay
from dynasor_agents.bench._sim import SimResult, simulate
from dynasor_agents.bench._sim_engine import CPU_QWEN_05B, H100_8B, CostModel
from dynasor_agents.bench._traces import PathTrace, QuestionTrace, load_bank
from dynasor_agents.bench._workload import (
    SYSTEMS,
    OnlineRow,
    OnlineStrategy,
    OnlineWorkload,
    SystemSpec,
    make_workload,
)

__all__ = [
    "CPU_QWEN_05B",
    "DEFAULT_PROBLEMS",
    "H100_8B",
    "SYSTEMS",
    "CostModel",
    "OnlineRow",
    "OnlineStrategy",
    "OnlineWorkload",
    "SimResult",
    "SystemSpec",
    "make_workload",
    "run_online",
    "simulate",
    "DemoReport",
    "DemoRow",
    "LoadFigures",
    "OverheadReport",
    "PathTrace",
    "Problem",
    "Progress",
    "QuestionTrace",
    "RecordSettings",
    "Report",
    "Workload",
    "load_bank",
    "load_calibration",
    "load_controller",
    "load_problems",
    "record_bank",
    "run_benchmark",
    "run_demo",
    "run_replay",
    "save_calibration",
    "select_questions",
    "short_answer",
]
