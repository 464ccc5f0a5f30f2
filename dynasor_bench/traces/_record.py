"""Record a trace bank: K paths per question from a real OpenAI-compatible server.

``dynasor-agents bench record`` calls :func:`record_bank`. Each question is one
chat request with ``n=K`` and ``logprobs`` (``top_logprobs=k``), so the server
shares the prompt's prefill across the K paths. Every finished question is
appended to the bank at once; a rerun skips the questions already there, so a
recording interrupted at any point resumes (and refuses to mix settings: the
model, K and sampling parameters must match the bank's metadata).

Questions are picked by a spec such as ``"singleop:40,gsm8k:80"``: a seeded
sample of that many rows from each ``<name>.jsonl`` in the data directory,
interleaved across datasets so any prefix of the bank mixes difficulties.

Example:
    >>> import json, pathlib, tempfile
    >>> data = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [{"input": f"{i}+1?", "target": i + 1} for i in range(5)]
    >>> _ = (data / "toy.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
    >>> [(q.id, q.gold) for q in select_questions("toy:2", data, seed=0)]
    [('toy:1', '1'), ('toy:4', '4')]
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynasor_agents import Progress
from dynasor_agents.certainty import extract_answer, normalize_answer
from dynasor_agents.demo import mixed_problems
from dynasor_agents.errors import InvalidInputError
from dynasor_bench.traces._bank import (
    BankMeta,
    PathTrace,
    QuestionTrace,
    append_question,
    load_meta,
    recorded_ids,
    save_meta,
)

__all__ = ["BankQuestion", "RecordSettings", "record_bank", "select_questions"]

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class BankQuestion:
    """A question chosen for recording."""

    id: str
    source: str
    question: str
    gold: str


def select_questions(spec: str, data_dir: Path, *, seed: int = 0) -> list[BankQuestion]:
    """Pick a seeded sample of questions per dataset and interleave them
    (:func:`dynasor_agents.demo.mixed_problems`), with bank ids.

    Args:
        spec: ``"<dataset>:<count>,..."``; ``<dataset>`` names ``<dataset>.jsonl``.
        data_dir: Directory of the JSON Lines files.
        seed: Sampling seed (the same seed picks the same questions).

    Raises:
        InvalidInputError: A malformed spec or a missing dataset file.
    """
    return [
        BankQuestion(
            id=f"{file.removesuffix('.jsonl')}:{line}",
            source=file.removesuffix(".jsonl"),
            question=p.question,
            gold=p.gold,
        )
        for p in mixed_problems(spec, data_dir, seed=seed)
        for file, _, line in [p.source.rpartition(":")]
    ]


@dataclass(frozen=True)
class RecordSettings:
    """Sampling settings of a recording (stored as the bank's metadata)."""

    model: str
    k: int = 16
    max_tokens: int = 320
    temperature: float = 0.7
    top_p: float = 0.95
    top_logprobs: int = 5
    system_prompt: str = SYSTEM_PROMPT
    seed: int = 0

    def meta(self) -> BankMeta:
        """These settings as bank metadata."""
        return BankMeta(
            model=self.model,
            k=self.k,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_logprobs=self.top_logprobs,
            system_prompt=self.system_prompt,
            seed=self.seed,
        )


def _path_from_choice(choice: Any) -> PathTrace:
    text = choice.message.content or ""
    raw = extract_answer(text)
    entries = (choice.logprobs.content or []) if choice.logprobs is not None else []
    logprob = [round(float(e.logprob), 4) for e in entries]
    confidence = [
        round(-float(np.mean([t.logprob for t in e.top_logprobs])), 4) if e.top_logprobs else 0.0
        for e in entries
    ]
    return PathTrace(
        text=text,
        answer=normalize_answer(raw) if raw is not None else None,
        completion_tokens=len(entries),
        finish_reason=choice.finish_reason,
        logprob=logprob,
        confidence=confidence,
    )


async def _record_one(client: Any, settings: RecordSettings, q: BankQuestion) -> QuestionTrace:
    response = await client.chat.completions.create(
        model=settings.model,
        messages=[
            {"role": "system", "content": settings.system_prompt},
            {"role": "user", "content": q.question},
        ],
        n=settings.k,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        logprobs=True,
        top_logprobs=settings.top_logprobs,
        seed=hash_seed(settings.seed, q.id),
    )
    paths = [_path_from_choice(c) for c in sorted(response.choices, key=lambda c: c.index)]
    usage = response.usage
    return QuestionTrace(
        id=q.id,
        source=q.source,
        question=q.question,
        gold=q.gold,
        prompt_tokens=usage.prompt_tokens if usage is not None else 0,
        paths=paths,
    )


def hash_seed(seed: int, key: str) -> int:
    """A stable 31-bit seed for one question (Python's ``hash`` is salted per process).

    Example:
        >>> hash_seed(0, "gsm8k:1") == hash_seed(0, "gsm8k:1") != hash_seed(1, "gsm8k:1")
        True
    """
    value = 0
    for ch in f"{seed}/{key}":
        value = (value * 131 + ord(ch)) % 2_147_483_647
    return value


async def record_bank(
    client: Any,
    questions: Sequence[BankQuestion],
    path: Path,
    settings: RecordSettings,
    *,
    concurrency: int = 2,
    progress: Progress | None = None,
) -> int:
    """Record every question not yet in the bank at ``path``; return how many were added.

    Args:
        client: An ``openai.AsyncOpenAI`` pointed at the server.
        questions: What to record (see :func:`select_questions`).
        path: The bank's ``.jsonl`` file; its metadata goes beside it.
        settings: Model and sampling settings; must match an existing bank's.
        concurrency: Questions in flight at once (each is K sequences).
        progress: Progress line (default: one on stderr).

    Raises:
        InvalidInputError: The bank exists with different settings.
    """
    meta = settings.meta()
    existing = load_meta(path)
    if existing is not None and existing != meta:
        raise InvalidInputError(
            f"{path} was recorded with different settings ({existing.model_dump()}); "
            "use another bank name or the same settings"
        )
    save_meta(path, meta)
    done = recorded_ids(path)
    todo = [q for q in questions if q.id not in done]
    bar = progress or Progress(len(questions), "record", initial=len(questions) - len(todo))
    queue: asyncio.Queue[BankQuestion] = asyncio.Queue()
    for q in todo:
        queue.put_nowait(q)

    async def worker() -> None:
        while not queue.empty():
            q = queue.get_nowait()
            trace = await _record_one(client, settings, q)
            append_question(path, trace)
            gold = normalize_answer(q.gold)
            bar.update(
                1,
                tokens=sum(p.completion_tokens for p in trace.paths),
                correct_paths=sum(p.answer == gold for p in trace.paths),
                paths=len(trace.paths),
            )

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    bar.close()
    return len(todo)
