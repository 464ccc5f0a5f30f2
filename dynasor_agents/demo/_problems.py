"""Problems for the demo and benchmarks: a few built in, or any math JSONL file.

:func:`load_problems` reads the JSON Lines files in ``../shared/data`` (GSM8K,
MATH-500, AIME 2024, MAWPS) by recognising their fields, so one loader serves
all of them.

Example:
    >>> import json, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "gsm.jsonl"
    >>> _ = path.write_text(json.dumps({"question": "1+1?", "answer": "so\\n#### 2"}) + "\\n")
    >>> load_problems(path)
    [Problem(question='1+1?', gold='2', source='gsm.jsonl:1')]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dynasor_agents.errors import InvalidInputError

__all__ = ["DEFAULT_PROBLEMS", "Problem", "load_problems"]


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
