"""The trace bank: K sampled paths per question, stored once, replayed many times.

A trace bank is one JSON Lines file (``<name>.jsonl``) beside a metadata file
(``<name>.meta.json``) in ``cache_dir()/traces`` (outside the repository). Each
line is one :class:`QuestionTrace`; each of its paths is a :class:`PathTrace`
carrying the text, the extracted answer, token counts, and per-token logprob
summaries (the sampled token's logprob and DeepConf's token confidence over the
top-k), which is enough to recompute every signal in :mod:`dynasor_agents.certainty`
offline, including the confidence at any prefix of a path.

Lines are appended as questions finish, so a recording that stops part-way
resumes where it stopped (:func:`recorded_ids`).

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "bank.jsonl"
    >>> p = PathTrace(text="\\\\boxed{4}", answer="4", completion_tokens=3,
    ...               finish_reason="stop", logprob=[-0.1, -0.2, -0.3], confidence=[3.0, 2.0, 1.0])
    >>> q = QuestionTrace(id="x:1", source="x", question="2+2?", gold="4", prompt_tokens=9,
    ...                   paths=[p])
    >>> append_question(path, q)
    >>> bank = load_bank(path)
    >>> bank[0].paths[0].correct(bank[0].gold), sorted(recorded_ids(path))
    (True, ['x:1'])
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from dynasor_agents.certainty import normalize_answer
from dynasor_agents.errors import InvalidInputError

__all__ = [
    "BankMeta",
    "PathTrace",
    "QuestionTrace",
    "append_question",
    "bank_path",
    "load_bank",
    "load_meta",
    "recorded_ids",
    "save_meta",
]


class PathTrace(BaseModel):
    """One sampled reasoning path.

    Attributes:
        text: The completion text.
        answer: The normalized final answer (``None`` when none was found).
        completion_tokens: Tokens the path generated.
        finish_reason: ``"stop"`` or ``"length"`` (truncated at max_tokens).
        logprob: Per generated token, the sampled token's logprob.
        confidence: Per generated token, DeepConf's ``-(1/k) sum log P(top-j)``.
    """

    text: str
    answer: str | None
    completion_tokens: int
    finish_reason: str | None = None
    logprob: list[float] = Field(default_factory=list)
    confidence: list[float] = Field(default_factory=list)

    def correct(self, gold: str) -> bool:
        """Whether this path's answer equals ``gold`` after normalization."""
        return self.answer is not None and self.answer == normalize_answer(gold)


class QuestionTrace(BaseModel):
    """All paths recorded for one question.

    Attributes:
        id: Stable id, ``<dataset>:<line>``.
        source: The dataset's name (``gsm8k``, ``singleop``, ...).
        question: The question text.
        gold: The reference answer.
        prompt_tokens: Prompt tokens of one request for this question.
        paths: The K sampled paths, in the order the server returned them.
    """

    id: str
    source: str
    question: str
    gold: str
    prompt_tokens: int
    paths: list[PathTrace]


class BankMeta(BaseModel):
    """How a bank was recorded (written once, checked on resume)."""

    model: str
    k: int
    max_tokens: int
    temperature: float
    top_p: float
    top_logprobs: int
    system_prompt: str
    seed: int


def bank_path(name_or_path: str | Path, directory: Path | None = None) -> Path:
    """Resolve a bank name (``gsm-qwen``) or a path to its ``.jsonl`` file.

    Example:
        >>> bank_path("demo", Path("/tmp/t")).as_posix()
        '/tmp/t/demo.jsonl'
        >>> bank_path("/data/b.jsonl").as_posix()
        '/data/b.jsonl'
    """
    text = str(name_or_path)
    if text.endswith(".jsonl") or "/" in text:
        return Path(text)
    if directory is None:
        from dynasor_agents.server import cache_dir

        directory = cache_dir() / "traces"
    return directory / f"{text}.jsonl"


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".meta.json")


def save_meta(path: Path, meta: BankMeta) -> None:
    """Write the bank's metadata beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _meta_path(path).write_text(meta.model_dump_json(indent=2) + "\n", encoding="utf-8")


def load_meta(path: Path) -> BankMeta | None:
    """The bank's metadata, or ``None`` if it has none yet."""
    meta = _meta_path(path)
    if not meta.is_file():
        return None
    return BankMeta.model_validate_json(meta.read_text(encoding="utf-8"))


def append_question(path: Path, question: QuestionTrace) -> None:
    """Append one question's paths (one line, flushed, so an interrupt loses at most it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        # A write cut short by an interrupt leaves a line without its newline: end it,
        # so this question does not join (and get lost in) the broken line.
        if handle.tell() and _last_byte(path) != b"\n":
            handle.write(b"\n")
        handle.write(question.model_dump_json().encode() + b"\n")
        handle.flush()


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1)


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError:
                # A line cut by an interrupted write: the question is recorded again.
                continue


def recorded_ids(path: Path) -> set[str]:
    """Ids of the questions already in the bank (empty if the file is missing)."""
    if not path.is_file():
        return set()
    return {str(row["id"]) for _, row in _lines(path) if "id" in row}


def load_bank(path: str | Path, *, min_paths: int = 1) -> list[QuestionTrace]:
    """Read a trace bank.

    Args:
        path: The bank's ``.jsonl`` file (see :func:`bank_path`).
        min_paths: Skip questions with fewer paths than this.

    Raises:
        InvalidInputError: The file is missing, empty, or a line is not a question.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(
            f"trace bank not found: {path} (record one with `dynasor-agents bench record`)"
        )
    bank: list[QuestionTrace] = []
    seen: set[str] = set()
    for number, row in _lines(path):
        try:
            question = QuestionTrace.model_validate(row)
        except ValidationError as exc:
            raise InvalidInputError(f"{path}:{number}: not a recorded question ({exc})") from exc
        if question.id in seen or len(question.paths) < min_paths:
            continue
        seen.add(question.id)
        bank.append(question)
    if not bank:
        raise InvalidInputError(f"trace bank {path} holds no questions")
    return bank
