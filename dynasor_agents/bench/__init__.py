"""Demo and benchmark drivers (they use the public API and the server launcher).

* the demo (:func:`run_demo`) and the overhead benchmark (:func:`run_benchmark`);
* trace banks: :func:`record_bank` samples K paths per question from a server,
  :func:`load_bank` reads them back;
* replay: :func:`run_replay` evaluates stopping and allocation policies on a bank;
* calibration: :func:`save_calibration` / :func:`load_controller` store chosen
  thresholds as a config a strategy loads
  (``SelfConsistency(model, controller=load_controller("calib.json"))``).

The command line is ``dynasor-agents bench record|replay|calibrate``.
"""

from dynasor_agents._progress import Progress
from dynasor_agents.bench._calibrate import load_calibration, load_controller, save_calibration
from dynasor_agents.bench._demo import DemoReport, DemoRow, run_demo, short_answer
from dynasor_agents.bench._overhead import LoadFigures, OverheadReport, Workload, run_benchmark
from dynasor_agents.bench._problems import DEFAULT_PROBLEMS, Problem, load_problems
from dynasor_agents.bench._record import RecordSettings, record_bank, select_questions
from dynasor_agents.bench._report import Report, run_replay
from dynasor_agents.bench._traces import PathTrace, QuestionTrace, load_bank

__all__ = [
    "DEFAULT_PROBLEMS",
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
