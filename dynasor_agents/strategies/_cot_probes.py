r"""The probes of probed chain-of-thought: forcing an answer mid-reasoning and judging it.

A *probe* appends an answer-forcing suffix to the reasoning so far (a preset of
:data:`PROBE_SUFFIXES`, chosen by :func:`probe_suffix_for`) and decodes a few
tokens greedily. :func:`close_boxed` reads the answer out of its output and
:func:`hedges_in` tells whether it hesitated (:data:`DEFAULT_HEDGES`); each
finished probe is a :class:`Probe`. Over the latest ``window`` probes,
:func:`probes_agree` is the default stopping rule (one non-empty answer and no
hedge) and :func:`probe_agreement` the certainty reported while the program
runs (the share of probes giving the most common answer).

Example:
    >>> probe_suffix_for("<think>6*7 is 42", "auto").endswith("\\boxed{")
    True
    >>> close_boxed("42} so"), hedges_in("42}, wait")
    ('42', True)
    >>> probes = [Probe(index=i, at_tokens=8 * i, answer="42", key="42") for i in range(3)]
    >>> probes_agree(probes, 3), round(probe_agreement(probes[:2], 3), 3)
    (True, 0.667)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Final

from pydantic import BaseModel, ConfigDict

__all__ = [
    "DEFAULT_HEDGES",
    "PROBE_SUFFIXES",
    "THINK_END",
    "Probe",
    "close_boxed",
    "hedges_in",
    "probe_agreement",
    "probe_suffix_for",
    "probes_agree",
]

THINK_END: Final = "</think>"
"""Closes the thinking of reasoning models; the ``think`` probe adds it once."""

PROBE_SUFFIXES: Final[dict[str, str]] = {
    "think": f"\n{THINK_END}\n\nThe final answer is \\boxed{{",
    "dynasor": (
        "\n... Oh, I suddenly got the answer to the whole problem, **Final Answer**: \\boxed{"
    ),
}
"""Answer-forcing probe suffixes: ``think`` closes the thinking of models that
reason inside ``<think>...</think>`` (DeepSeek-R1, Qwen3); ``dynasor`` is the
Dynasor paper's probe for plain instruct models. ``auto`` picks ``think`` when
the text so far holds ``<think>``, else ``dynasor``."""

DEFAULT_HEDGES: Final = (
    "wait",
    "hmm",
    "hold on",
    "but",
    "however",
    "alternatively",
    "not sure",
    "double-check",
)
"""Words that make a probe answer count as unsure (matched as whole words,
case-insensitively, anywhere in the probe's output). The paper's list also has
"no" and "okay", left out here because they are common answers."""


class Probe(BaseModel):
    """One probe: the answer the model gave when forced to answer mid-reasoning.

    Attributes:
        index: Launch order (0 for the probe after the first chunk).
        at_tokens: Reasoning tokens the probe saw.
        answer: The forced answer, verbatim (``None``: empty or unfinished).
        key: ``answer`` normalized for comparison.
        hedged: The probe's output holds a hedge word.
        text: The probe's raw output.
        completion_tokens: Tokens the probe generated.
    """

    model_config = ConfigDict(frozen=True)

    index: int
    at_tokens: int
    answer: str | None
    key: str | None
    hedged: bool = False
    text: str = ""
    completion_tokens: int = 0


def close_boxed(text: str) -> str | None:
    r"""The probe's answer: its output up to the ``}`` closing the suffix's ``\boxed{``.

    Args:
        text: The probe's output (what follows the suffix).

    Returns:
        The stripped answer, or ``None`` when the brace is never closed or
        closes on nothing.

    Example:
        >>> close_boxed(r"\frac{1}{2}} so"), close_boxed("42"), close_boxed(" }")
        ('\\frac{1}{2}', None, None)
    """
    depth, i = 1, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return text[:i].strip() or None
        i += 1
    return None


def hedges_in(text: str, hedges: Sequence[str] = DEFAULT_HEDGES) -> bool:
    """Whether ``text`` holds one of ``hedges`` as a whole word (any case).

    Args:
        text: The probe's output.
        hedges: The hedge words (blank ones are ignored).

    Returns:
        True when one of them occurs.

    Example:
        >>> hedges_in("42}. Wait, let me check"), hedges_in("42} butter")
        (True, False)
    """
    return any(re.search(rf"(?<!\w){re.escape(h)}(?!\w)", text, re.IGNORECASE) for h in hedges if h)


def probe_suffix_for(text: str, probe: str) -> str:
    """The probe suffix to append to ``text`` (prompt plus reasoning so far).

    ``probe`` is a key of :data:`PROBE_SUFFIXES`, ``"auto"`` or a literal
    suffix. When the text already closed its thinking, ``</think>`` is not added again.

    Args:
        text: The prompt plus the reasoning so far.
        probe: A preset name, ``"auto"`` or a literal suffix.

    Returns:
        The suffix.

    Example:
        >>> probe_suffix_for("<think>x", "auto")
        '\\n</think>\\n\\nThe final answer is \\\\boxed{'
        >>> probe_suffix_for("<think>x</think> So", "think")
        '\\nThe final answer is \\\\boxed{'
    """
    if probe == "auto":
        probe = "think" if "<think>" in text or THINK_END in text else "dynasor"
    suffix = PROBE_SUFFIXES.get(probe, probe)
    if THINK_END in suffix and THINK_END in text:
        before, _, after = suffix.partition(THINK_END)
        suffix = before.rstrip() + "\n" + after.lstrip()
    return suffix


def probes_agree(probes: Sequence[Probe], window: int) -> bool:
    """Whether the last ``window`` probes give one non-empty answer and none hedges.

    Args:
        probes: The finished probes, in launch order.
        window: How many of the latest probes must agree.

    Returns:
        True when there are at least ``window`` probes and the last ``window``
        agree.
    """
    last = probes[-window:] if window >= 1 else []
    if len(last) < window or not last:
        return False
    return all(p.key and not p.hedged for p in last) and len({p.key for p in last}) == 1


def probe_agreement(probes: Sequence[Probe], window: int) -> float:
    """Share of the last ``window`` probes giving their most common (unhedged) answer.

    Args:
        probes: The finished probes, in launch order.
        window: How many of the latest probes count (the denominator).

    Returns:
        A share in ``[0, 1]`` (0.0 for a ``window`` below 1).
    """
    counts = Counter(p.key for p in probes[-window:] if p.key and not p.hedged)
    return max(counts.values(), default=0) / window if window >= 1 else 0.0
