"""Problems for the demo and benchmarks: a few built in, or any math JSONL file.

:func:`load_problems` reads the JSON Lines files in ``../shared/data`` (GSM8K,
MATH-500, AIME 2024, MAWPS) by recognising their fields, so one loader serves
all of them; :func:`mixed_problems` draws a seeded mix over several of them
(the demo's default, :data:`DEFAULT_MIX`: easy and hard questions together).

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "gsm.jsonl"
    >>> _ = path.write_text(json.dumps({"question": "1+1?", "answer": "so\\n#### 2"}) + "\\n")
    >>> load_problems(path)
    [Problem(question='1+1?', gold='2', source='gsm.jsonl:1')]
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from dynasor_agents.errors import InvalidInputError

__all__ = [
    "DEFAULT_MIX",
    "DEFAULT_PROBLEMS",
    "Problem",
    "data_dir",
    "load_problems",
    "mixed_problems",
    "parse_mix",
]


@dataclass(frozen=True)
class Problem:
    """One question and its reference answer."""

    question: str
    gold: str
    source: str = "builtin"


DEFAULT_PROBLEMS: tuple[Problem, ...] = (
    Problem("What is the capital of France?", "Paris"),
    Problem("What is 2 + 3?", "5"),
    Problem("What color is the sky on a clear day?", "blue"),
    Problem("Tom has 4 apples and buys 3 more. How many apples does he have now?", "7"),
    Problem("What is the largest planet in our solar system?", "Jupiter"),
    Problem("What is 10 minus 4?", "6"),
)
"""Short questions of mixed difficulty for a 135M model: some it answers the
same way every time, some it answers almost at random, which is the spread
certainty-guided early stop exploits. The same set lives in the cookbook."""

_QUESTION_FIELDS = ("question", "problem", "input")
_ANSWER_FIELDS = ("answer", "target")


def _gold(row: dict[str, object], field: str) -> str:
    value = str(row[field])
    if "####" in value:  # GSM8K: the solution ends in "#### N"
        value = value.rsplit("####", 1)[1]
    return value.strip()


def load_problems(path: str | Path, *, limit: int | None = None) -> list[Problem]:
    """Read problems from a JSON Lines file.

    Each row needs a question field (``question``, ``problem`` or ``input``) and
    an answer field (``answer`` or ``target``; GSM8K's ``#### N`` is handled).

    Args:
        path: The ``.jsonl`` file.
        limit: Read at most this many problems.

    Raises:
        InvalidInputError: The file is missing, empty, or a row lacks the fields.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"dataset file not found: {path}")
    problems: list[Problem] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if limit is not None and len(problems) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            q = next((f for f in _QUESTION_FIELDS if f in row), None)
            a = next((f for f in _ANSWER_FIELDS if f in row), None)
            if q is None or a is None:
                raise InvalidInputError(
                    f"{path}:{number}: a row needs one of {_QUESTION_FIELDS} and one of "
                    f"{_ANSWER_FIELDS}; it has {sorted(row)}"
                )
            problems.append(Problem(str(row[q]), _gold(row, a), f"{path.name}:{number}"))
    if not problems:
        raise InvalidInputError(f"{path} holds no problems")
    return problems


DEFAULT_MIX = "singleop:2,addsub:1,multiarith:1,gsm8k:1"
"""The demo's questions: easy one-step and two-step arithmetic, and a grade-school
word problem, where a small model's samples agree often and seldom. Five, so that
both arms finish in minutes on a 2-core CPU (Qwen2.5-Coder-0.5B decodes about
40-60 tokens/s there, and a fixed-8 arm spends about 8,000)."""


def data_dir() -> Path:
    """The benchmark data directory: ``$DYNASOR_DATA_DIR`` or ``../shared/data``."""
    env = os.environ.get("DYNASOR_DATA_DIR")
    return Path(env) if env else Path("..") / "shared" / "data"


def parse_mix(spec: str) -> list[tuple[str, int]]:
    """``"<dataset>:<count>,..."`` as pairs.

    Raises:
        InvalidInputError: A malformed spec.

    Example:
        >>> parse_mix("gsm8k:3, singleop:1")
        [('gsm8k', 3), ('singleop', 1)]
    """
    parts: list[tuple[str, int]] = []
    for item in spec.split(","):
        name, _, count = item.strip().partition(":")
        if not name or not count.isdigit() or int(count) < 1:
            raise InvalidInputError(
                f"bad question spec {item!r}: expected <dataset>:<count>, e.g. 'gsm8k:80'"
            )
        parts.append((name, int(count)))
    return parts


def mixed_problems(spec: str, directory: str | Path, *, seed: int = 0) -> list[Problem]:
    """A seeded sample of questions per dataset, interleaved (one of each in turn).

    Args:
        spec: ``"<dataset>:<count>,..."``; ``<dataset>`` names ``<dataset>.jsonl``.
        directory: Where the JSON Lines files are (:func:`data_dir`).
        seed: Sampling seed (the same seed picks the same questions).

    Returns:
        Problems whose ``source`` is ``"<file>:<line>"``.

    Raises:
        InvalidInputError: A malformed spec or a missing dataset file.
    """
    mix = parse_mix(spec)
    if not Path(directory).is_dir():
        raise InvalidInputError(
            f"data directory not found: {directory} (give --data-dir or set "
            "DYNASOR_DATA_DIR; the default ../shared/data is relative to where you run)"
        )
    groups: list[list[Problem]] = []
    for name, count in mix:
        problems = load_problems(Path(directory) / f"{name}.jsonl")
        rng = random.Random(f"{seed}:{name}")
        picked = sorted(rng.sample(range(len(problems)), min(count, len(problems))))
        groups.append([problems[i] for i in picked])
    mixed: list[Problem] = []
    for layer in range(max((len(g) for g in groups), default=0)):
        mixed.extend(g[layer] for g in groups if layer < len(g))
    return mixed
