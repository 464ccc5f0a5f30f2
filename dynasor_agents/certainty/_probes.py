r"""Dynasor-CoT's stopping rule for long chain-of-thought: probe agreement and hedges.

Every few tokens a long reasoning program *probes* the model for its current
answer. :func:`probe_agreement` says when to stop: once the last ``w`` probe
answers agree, none is empty and none hedges (:func:`hedges`: a word such as
"wait" or "hmm" from :data:`DEFAULT_HEDGE_WORDS`).

Example:
    >>> probe_agreement(["18", "$18", "18.0"], window=3).agreed
    True
    >>> probe_agreement(["18", "18", "18"], texts=["18", "18", "18, hmm"]).reason
    'hedging'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, TypeAlias

from dynasor_agents.errors import InvalidInputError

from ._extract import normalize_answer
from ._inputs import optional_texts

__all__ = [
    "DEFAULT_HEDGE_WORDS",
    "ProbeAgreement",
    "ProbeReason",
    "hedges",
    "probe_agreement",
]


DEFAULT_HEDGE_WORDS: tuple[str, ...] = (
    "wait",
    "hmm",
    "but",
    "however",
    "alternatively",
    "let me",
    "double-check",
    "not sure",
    "maybe",
)
"""Words and phrases that mark a probe answer as hesitant."""


def _word_list(words: Iterable[str]) -> tuple[str, ...]:
    if isinstance(words, str):
        raise InvalidInputError("hedge words must be a collection of words, not a single str")
    listed = tuple(words)
    for word in listed:
        if not isinstance(word, str) or not word.split():
            raise InvalidInputError(f"hedge words must be non-blank strings, got {word!r}")
    return listed


@lru_cache(maxsize=64)
def _hedge_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Whole-word, case-insensitive pattern; spaces and hyphens inside a phrase match either."""
    parts = sorted(
        (r"[\s\-]+".join(map(re.escape, re.split(r"[\s\-]+", w.strip()))) for w in words),
        key=len,
        reverse=True,
    )
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def hedges(text: str, *, words: Iterable[str] = DEFAULT_HEDGE_WORDS) -> bool:
    """Whether ``text`` contains a hedging word, case-insensitively and as a whole word.

    Multi-word phrases match across any whitespace, and spaces and hyphens in
    a phrase are interchangeable (``double-check`` matches "double check").

    Args:
        text: A probe's raw output.
        words: The hedging words and phrases; :data:`DEFAULT_HEDGE_WORDS`.

    Returns:
        True when some word occurs in ``text``.

    Raises:
        InvalidInputError: ``text`` is not a str, or ``words`` is a single str
            or holds a blank or non-str word.

    Example:
        >>> hedges("42. Wait, let me check"), hedges("42 butter"), hedges("I'd Double Check")
        (True, False, True)
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a str, got {type(text).__name__}")
    listed = _word_list(words)
    return bool(listed) and _hedge_pattern(listed).search(text) is not None


ProbeReason: TypeAlias = Literal["agreed", "too_few_probes", "empty", "disagree", "hedging"]
"""Why :func:`probe_agreement` did or did not agree."""


@dataclass(frozen=True)
class ProbeAgreement:
    """The verdict of :func:`probe_agreement`.

    Attributes:
        agreed: The last ``window`` probes agree: stop and answer.
        answer: The agreed (normalised) answer; ``None`` unless ``agreed``.
        reason: ``"agreed"``, or the first failed condition, checked in the
            order ``"too_few_probes"``, ``"empty"``, ``"disagree"``,
            ``"hedging"``.
    """

    agreed: bool
    answer: str | None
    reason: ProbeReason


def probe_agreement(
    probes: Sequence[str | None],
    *,
    window: int = 3,
    texts: Sequence[str | None] | None = None,
    hedge_words: Iterable[str] = DEFAULT_HEDGE_WORDS,
    key: Callable[[str], str] = normalize_answer,
) -> ProbeAgreement:
    r"""Dynasor-CoT's stopping rule for long chain-of-thought.

    Every few tokens the program *probes* the model for its current answer
    (Fu et al. 2024, Dynasor-CoT). It stops once the last ``window`` probe
    answers are identical after ``key``, none is empty and none of the last
    ``window`` raw probe outputs hedges (:func:`hedges`). Dynasor's reference
    code uses ``window`` 2 to 8 by effort level; 3 is its middle setting.

    Args:
        probes: The probe answers so far, oldest first (``None``: no answer).
        window: How many most recent probes must agree.
        texts: The raw probe outputs checked for hedging, parallel to
            ``probes``; by default ``probes`` themselves.
        hedge_words: Passed to :func:`hedges`.
        key: Maps an answer to its comparison key; :func:`normalize_answer`.

    Returns:
        The :class:`ProbeAgreement`.

    Raises:
        InvalidInputError: ``probes`` or ``texts`` is a str or holds a
            non-str, their lengths differ, or ``window`` is not a positive int.

    Example:
        >>> probe_agreement(["12", "18", r"\$18", "18"])
        ProbeAgreement(agreed=True, answer='18', reason='agreed')
        >>> probe_agreement(["18", "18", "18"], texts=["18}", "18}", "18} wait"]).reason
        'hedging'
        >>> probe_agreement(["18", None, "18"]).reason
        'empty'
    """
    answers = optional_texts(probes, "probes")
    raw = answers if texts is None else optional_texts(texts, "texts")
    if len(raw) != len(answers):
        raise InvalidInputError(f"texts has {len(raw)} items but probes has {len(answers)}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InvalidInputError(f"window must be a positive int, got {window!r}")
    words = _word_list(hedge_words)
    if len(answers) < window:
        return ProbeAgreement(agreed=False, answer=None, reason="too_few_probes")
    keys = [key(a) if a is not None and a.strip() else "" for a in answers[-window:]]
    if not all(keys):
        return ProbeAgreement(agreed=False, answer=None, reason="empty")
    if len(set(keys)) != 1:
        return ProbeAgreement(agreed=False, answer=None, reason="disagree")
    if any(t is not None and hedges(t, words=words) for t in raw[-window:]):
        return ProbeAgreement(agreed=False, answer=None, reason="hedging")
    return ProbeAgreement(agreed=True, answer=keys[0], reason="agreed")
