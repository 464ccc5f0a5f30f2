"""The main job: Certaindex early stop beside fixed-N self-consistency on a real server.

:func:`run_demo` runs both arms on the same problems and prints each problem's
answers, samples and tokens, then accuracy, tokens and wall time of each arm
(``dynasor-agents demo``). :func:`mixed_problems` draws the default mix of math
questions from ``../shared/data`` (:data:`DEFAULT_MIX`), :func:`load_problems`
reads any math JSON Lines file there; :data:`DEFAULT_PROBLEMS` are a few built-in
trivia questions for the quick SmolLM2 run, and :func:`short_answer` extracts a
one-word answer written as a sentence (the cookbook uses both).
"""

from dynasor_agents.demo._problems import (
    DEFAULT_MIX,
    DEFAULT_PROBLEMS,
    Problem,
    data_dir,
    load_problems,
    mixed_problems,
    parse_mix,
)
from dynasor_agents.demo._run import ArmReport, DemoReport, DemoSettings, render_report, run_demo
from dynasor_agents.demo._short_answer import short_answer

__all__ = [
    "DEFAULT_MIX",
    "DEFAULT_PROBLEMS",
    "ArmReport",
    "DemoReport",
    "DemoSettings",
    "Problem",
    "data_dir",
    "load_problems",
    "mixed_problems",
    "parse_mix",
    "render_report",
    "run_demo",
    "short_answer",
]
