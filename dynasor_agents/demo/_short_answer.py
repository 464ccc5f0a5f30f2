"""An answer extractor for one-word answers written as a sentence.

The demo's built-in trivia questions are answered in a sentence ("The capital of
France is Paris."), not with a boxed number; :func:`short_answer` finds the word
or number that answers.
"""

from __future__ import annotations

import re

from dynasor_agents.certainty import extract_answer

__all__ = ["short_answer"]

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_SENTENCE_END = re.compile(r"(?<!\d)[.!?\n]|[.!?](?!\d)")
_COPULA = re.compile(r"\b(?:is|are|was)\b(.*)", re.IGNORECASE)
_FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "usually",
        "typically",
        "primarily",
        "generally",
        "often",
        "always",
        "actually",
        "mostly",
        "very",
        "deep",
        "light",
        "bright",
        "called",
        "known",
        "as",
    ]
)


def short_answer(text: str) -> str | None:
    """Extractor for one-word answers written as a sentence.

    In the first sentence: a number if it has one (via :func:`extract_answer`),
    else the first content word after "is/are/was" (or of the sentence).

    Example:
        >>> short_answer("The capital of France is Paris."), short_answer("It is 5.")
        ('Paris', '5')
        >>> short_answer("The sky is usually a deep blue."), short_answer("  ")
        ('blue', None)
    """
    sentence = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    if not sentence:
        return None
    if any(ch.isdigit() for ch in sentence):
        return extract_answer(sentence)
    copula = _COPULA.search(sentence)
    words = _WORD.findall(copula.group(1) if copula else sentence)
    content = [w for w in words if w.lower() not in _FILLER] or words
    return str(content[0]) if content else None
