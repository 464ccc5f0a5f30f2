"""The main job: Certaindex early stop beside fixed-N self-consistency on a real server.

:func:`run_demo` runs both arms on the same problems and prints each problem's
answers, samples and tokens, then the savings (``dynasor-agents demo``).
:data:`DEFAULT_PROBLEMS` are a few built-in questions, :func:`load_problems` reads
any math JSON Lines file of ``../shared/data``, and :func:`short_answer` extracts a
one-word answer written as a sentence (the cookbook uses both).
"""

from dynasor_agents.demo._problems import DEFAULT_PROBLEMS, Problem, load_problems
from dynasor_agents.demo._run import DemoReport, DemoRow, run_demo
from dynasor_agents.demo._short_answer import short_answer

__all__ = [
    "DEFAULT_PROBLEMS",
    "DemoReport",
    "DemoRow",
    "Problem",
    "load_problems",
    "run_demo",
    "short_answer",
]
