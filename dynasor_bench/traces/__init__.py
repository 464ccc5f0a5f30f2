"""Trace banks: K recorded paths per question, with answers, tokens and confidences.

:func:`record_bank` samples them from a server (``bench record``, resumable),
:func:`load_bank` reads a bank back, :func:`bank_path` resolves a bank's name.
"""

from dynasor_bench.traces._bank import (
    BankMeta,
    PathTrace,
    QuestionTrace,
    append_question,
    bank_path,
    load_bank,
    load_meta,
)
from dynasor_bench.traces._record import RecordSettings, record_bank, select_questions

__all__ = [
    "BankMeta",
    "PathTrace",
    "QuestionTrace",
    "RecordSettings",
    "append_question",
    "bank_path",
    "load_bank",
    "load_meta",
    "record_bank",
    "select_questions",
]
