r"""Final-answer extraction and canonicalisation for self-consistency voting.

Two pure functions turn a model's free-form solution into a clustering key:

* :func:`extract_answer` finds the final answer in a solution text, preferring
  the last ``\boxed{...}``, then a GSM8K ``#### N`` line, then a phrase such as
  "the answer is X", then the last number in the text.
* :func:`normalize_answer` maps equivalent spellings of one answer (``18``,
  ``18.0``, ``$18``, ``18 dollars``, ``\$18``) to one canonical string, so that
  equal answers fall into the same cluster.

Both never raise on any ``str``; nothing here does I/O.

Example:
    >>> extract_answer(r"So the total is \boxed{\$18}.")
    '\\$18'
    >>> normalize_answer(extract_answer(r"So the total is \boxed{\$18}.") or "")
    '18'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction
from typing import TypeAlias

__all__ = ["AnswerExtractor", "extract_answer", "normalize_answer"]

AnswerExtractor: TypeAlias = Callable[[str], str | None]
"""A function from a solution text to its final answer (``None`` if none)."""

# --------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES_RE = re.compile(r"(?<!#)####(?!#)[ \t]*([^\n]*)")
_PHRASE_RE = re.compile(r"\b(?:final\s+answer|answer)\s*(?:is\s*:?|:|=)[ \t]*", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|[!?]")
_NUMBER_IN_TEXT_RE = re.compile(
    r"(?<![\w.])(?:-|\u2212)?\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
)


def _matching_braces(text: str) -> dict[int, int]:
    r"""Map the index of each balanced ``{`` in ``text`` to its closing ``}``.

    A backslash escapes the next character, so ``\{`` and ``\}`` are not
    counted. Runs in one linear pass; unclosed braces are simply absent.
    """
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _last_boxed(text: str) -> str | None:
    r"""Content of the last top-level, balanced, non-empty ``\boxed{}``/``\fbox{}``."""
    pairs = _matching_braces(text)
    spans: list[tuple[int, int]] = []  # (content start, closing brace) of balanced boxes
    for match in _BOX_RE.finditer(text):
        open_at = match.end() - 1
        close_at = pairs.get(open_at)
        if close_at is not None:
            spans.append((open_at + 1, close_at))
    chosen: str | None = None
    outer_end = -1
    for start, end in spans:  # in start order; skip boxes nested in an earlier box
        if start <= outer_end:
            continue
        outer_end = end
        content = text[start:end].strip()
        if content:
            chosen = content
    return chosen


def _last_hashes(text: str) -> str | None:
    """What follows the last GSM8K-style ``#### `` marker on its line.

    A line whose content starts with a letter is taken for a Markdown heading
    (``#### Step 1``) and skipped.
    """
    for match in reversed(list(_HASHES_RE.finditer(text))):
        content = match.group(1).strip()
        if content and not content[0].isalpha():
            return content
    return None


def _clean_phrase_tail(tail: str) -> str:
    """Cut a phrase's answer at the end of its sentence and drop Markdown emphasis."""
    end = _SENTENCE_END_RE.search(tail)
    if end is not None:
        tail = tail[: end.start()]
    return tail.strip().strip("*_`").strip()


def _last_phrase(text: str) -> str | None:
    """X from the last "the answer is X" / "Answer: X" with a non-empty X."""
    for match in reversed(list(_PHRASE_RE.finditer(text))):
        line_end = text.find("\n", match.end())
        content = _clean_phrase_tail(text[match.end() : None if line_end < 0 else line_end])
        if content:
            return content
    return None


def _last_number(text: str) -> str | None:
    """The last number written in ``text`` (sign, ``$`` and ``1,000`` kept verbatim)."""
    last: str | None = None
    for match in _NUMBER_IN_TEXT_RE.finditer(text):
        last = match.group(0)
    return last


def extract_answer(text: str) -> str | None:
    r"""Find the final answer in a model's solution text.

    The first rule that finds something wins:

    1. the content of the last top-level ``\boxed{...}`` or ``\fbox{...}``
       (nested braces are matched by counting, ``\{`` is not a brace);
    2. what follows the last ``#### `` on its line (GSM8K style);
    3. X in the last "the answer is X", "final answer: X" or "Answer: X", up to
       the end of that sentence or line;
    4. the last number in the text (``-3``, ``2.5``, ``1,000``, ``$18``).

    The answer is returned verbatim (stripped); pass it to
    :func:`normalize_answer` for a clustering key.

    Args:
        text: A solution written by a model; any string.

    Returns:
        The final answer, or ``None`` if the text is empty, blank or holds no
        answer by any rule. Never raises.

    Example:
        >>> extract_answer(r"First \boxed{1}, finally \boxed{\frac{1}{2}}")
        '\\frac{1}{2}'
        >>> extract_answer("She pays 3 * 6 = 18.\n#### 18")
        '18'
        >>> extract_answer("Adding up, the answer is 42. Done.")
        '42'
        >>> extract_answer("We get 12 apples, then 1,500 more")
        '1,500'
        >>> extract_answer("no idea") is None
        True
    """
    if not text or text.isspace():
        return None
    for rule in (_last_boxed, _last_hashes, _last_phrase, _last_number):
        found = rule(text)
        if found:
            return found
    return None


# --------------------------------------------------------------------------- normalisation

_MAX_DECIMAL_PLACES = 12
"""Terminating fractions with more decimal places than this render as ``p/q``."""
_MAX_DIGITS = 1000
"""Longer digit strings are not parsed as numbers (keeps ``int()`` cheap and safe)."""
_MAX_PASSES = 16
_MAX_WRAPPER_ROUNDS = 64

_DIGIT_SPACE_RE = re.compile(r"(?<=\d)\\[,!;: ](?=\d)")
_SPACING_RE = re.compile(r"\\(?:[,!;:]|q?quad(?![A-Za-z]))")
_ESCAPED_SPACE_RE = re.compile(r"\\ ")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|displaystyle)(?![A-Za-z])")
_WHITESPACE_RE = re.compile(r"\s+")
_SPACE_AROUND_PUNCT_RE = re.compile(r"\s*([^\w\s\\])\s*")
_TEXT_COMMAND_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox)\s*\{")
_VARIABLE_PREFIX_RE = re.compile(r"^[A-Za-z]\s*=\s*(?=[^=]+$)")
_LEADING_CURRENCY_RE = re.compile(r"^([+-]?)\s*(?:(?:\\\$|\$|\u20ac|\u00a3|\u00a5)\s*)+")
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_PERCENT_DEGREE_RE = re.compile(r"\s*(?:\\%|%|\^\s*\\circ|\^\s*\{\s*\\circ\s*\}|\u00b0|\\degree)$")
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_ATTACHED_UNITS = "cm|mm|km|m|kg|g|mg|lb|lbs|oz|ft|mi|ml|l|s|sec|min|h|hr|hrs|mph"
_UNIT_WORD = r"[A-Za-z][A-Za-z'.]*" + r"(?:\s*\^\s*\{?\d\}?)?"
_NUMBER_RE = re.compile(
    rf"^(?P<sign>[+-]?)\s*(?P<num>{_NUM})"
    rf"(?P<unit>(?:(?:{_ATTACHED_UNITS})(?![A-Za-z'.])(?:\s*\^\s*\{{?\d\}}?)?)?"
    rf"(?:\s+{_UNIT_WORD})*)$"
)
_NOT_UNITS = frozenset({"and", "or", "to", "plus", "minus", "times", "over", "pi", "sqrt"})
_FRAC_RE = re.compile(
    rf"^(?P<sign>[+-]?)\s*\\[dt]?frac\s*\{{\s*(?P<nsign>[+-]?)\s*(?P<num>{_NUM})\s*\}}"
    rf"\s*\{{\s*(?P<dsign>[+-]?)\s*(?P<den>{_NUM})\s*\}}$"
)
_FRAC_SHORT_RE = re.compile(r"^(?P<sign>[+-]?)\s*\\[dt]?frac\s*(?P<num>\d)(?P<den>\d)$")
_SLASH_RE = re.compile(
    rf"^(?P<sign>[+-]?)\s*(?P<num>{_NUM})\s*/\s*(?P<dsign>[+-]?)\s*(?P<den>{_NUM})$"
)


def _decimal_to_fraction(digits: str) -> Fraction | None:
    """Parse an unsigned decimal literal (``1,000``, ``18.``, ``.5``) exactly."""
    digits = digits.replace(",", "")
    if len(digits) > _MAX_DIGITS:
        return None
    whole, _, frac = digits.partition(".")
    return Fraction(int(whole or "0") * 10 ** len(frac) + int(frac or "0"), 10 ** len(frac))


def _signed(value: Fraction | None, *signs: str) -> Fraction | None:
    """Apply each ``-`` in ``signs`` to ``value``."""
    if value is None:
        return None
    return -value if signs.count("-") % 2 else value


def _parse_number(s: str) -> Fraction | None:
    """The exact value of a numeric answer, or ``None`` if ``s`` is not one."""
    s = _PERCENT_DEGREE_RE.sub("", s)
    m = _NUMBER_RE.match(s)
    if m is not None:
        words = {w.strip(".").lower() for w in (m.group("unit") or "").split()}
        if words & _NOT_UNITS:
            return None
        return _signed(_decimal_to_fraction(m.group("num")), m.group("sign"))
    signs: tuple[str, ...] = ()
    m = _FRAC_RE.match(s) or _SLASH_RE.match(s)
    if m is not None:
        signs = tuple(m.groupdict().get(g) or "" for g in ("sign", "nsign", "dsign"))
    else:
        m = _FRAC_SHORT_RE.match(s)
        if m is None:
            return None
        signs = (m.group("sign"),)
    num = _decimal_to_fraction(m.group("num"))
    den = _decimal_to_fraction(m.group("den"))
    if num is None or den is None or den == 0:
        return None
    return _signed(num / den, *signs)


def _render_number(value: Fraction) -> str:
    """Canonical text of an exact number: ``18``, ``0.5``, ``-3``, ``1/3``."""
    if value.denominator == 1:
        return str(value.numerator)
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    places = max(twos, fives)
    if den != 1 or places > _MAX_DECIMAL_PLACES:
        return f"{value.numerator}/{value.denominator}"
    scaled = abs(value.numerator) * 10**places // value.denominator
    whole, frac = divmod(scaled, 10**places)
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{str(frac).zfill(places).rstrip('0')}"


def _peel(s: str) -> str:
    r"""Peel outer whitespace, final periods, math delimiters and ``\boxed{}`` layers.

    Works on indices into ``s`` so that deep nesting stays linear.
    """
    pairs: dict[int, int] | None = None
    lo, hi = 0, len(s)
    while True:
        before = (lo, hi)
        while lo < hi and s[lo].isspace():
            lo += 1
        while hi > lo and (s[hi - 1].isspace() or s[hi - 1] == "."):
            hi -= 1
        for opener, closer in _DELIMITERS:
            if (
                hi - lo >= len(opener) + len(closer)
                and s.startswith(opener, lo, hi)
                and s.endswith(closer, lo, hi)
            ):
                lo, hi = lo + len(opener), hi - len(closer)
        boxed = _BOX_RE.match(s, lo, hi)
        if boxed is not None:
            pairs = _matching_braces(s) if pairs is None else pairs
            if pairs.get(boxed.end() - 1) == hi - 1:
                lo, hi = boxed.end(), hi - 1
        if (lo, hi) == before:
            return s[lo:hi]


def _unwrap_text_commands(s: str) -> str:
    r"""Replace every ``\text{X}`` (and ``\mathrm``, ``\mbox``, ...) by `` X ``, nested too."""
    matches = list(_TEXT_COMMAND_RE.finditer(s))
    if not matches:
        return s
    pairs = _matching_braces(s)
    cuts: list[tuple[int, int]] = []  # spans replaced by a space
    for match in matches:
        close = pairs.get(match.end() - 1)
        if close is not None:
            cuts += [(match.start(), match.end()), (close, close + 1)]
    pieces: list[str] = []
    at = 0
    for start, end in sorted(cuts):
        pieces += [s[at:start], " "]
        at = end
    pieces.append(s[at:])
    return "".join(pieces)


def _strip_wrappers(s: str) -> str:
    r"""Peel math delimiters, ``\boxed{}``, ``\text{}``, currency and a final period."""
    for _ in range(_MAX_WRAPPER_ROUNDS):
        before = s
        s = _WHITESPACE_RE.sub(" ", _unwrap_text_commands(_peel(s))).strip()
        s = _LEADING_CURRENCY_RE.sub(r"\1", s)
        s = _VARIABLE_PREFIX_RE.sub("", s)
        if s == before:
            break
    return s


def _normalize_once(answer: str) -> str:
    """One pass of :func:`normalize_answer`; repeated until it changes nothing."""
    s = answer.replace("\u2212", "-").replace("{,}", ",")
    s = _DIGIT_SPACE_RE.sub("", s)
    s = _SPACING_RE.sub("", s)
    s = _ESCAPED_SPACE_RE.sub(" ", s)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _strip_wrappers(_WHITESPACE_RE.sub(" ", s))
    value = _parse_number(s)
    if value is not None:
        return _render_number(value)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s.lower())
    return _SPACE_AROUND_PUNCT_RE.sub(r"\1", _WHITESPACE_RE.sub(" ", s)).strip()


def normalize_answer(answer: str) -> str:
    r"""Map an extracted answer to its canonical clustering key.

    Peels surrounding ``$...$``, ``\(...\)``, ``\boxed{}``, ``\text{}``
    wrappers, a leading currency sign (``$``, ``\$``, ``€``, ``£``), a leading
    ``x =``, a trailing period, ``%`` / degree signs, LaTeX spacing commands and
    ``\left``/``\right``. If what remains is a number, optionally followed by
    unit words (``18 dollars``, ``5 cm``), or a simple fraction (``\frac{1}{2}``,
    ``\dfrac{1}{2}``, ``1/2``), it is rendered exactly: an integer when whole,
    else a decimal when it terminates within 12 places, else ``p/q``. Anything
    else is lowercased, with whitespace collapsed, dropped next to punctuation
    (``(1, 2)`` -> ``(1,2)``) and ``\dfrac``/``\tfrac`` spelled ``\frac``.

    Args:
        answer: An answer as returned by :func:`extract_answer`; any string.

    Returns:
        The canonical key (``""`` for a blank answer). Never raises.

    Example:
        >>> [normalize_answer(a) for a in ["18", "18.0", "$18", "18 dollars", "018", "18."]]
        ['18', '18', '18', '18', '18', '18']
        >>> normalize_answer(r"\dfrac{1}{2}"), normalize_answer("0.50"), normalize_answer("1/3")
        ('0.5', '0.5', '1/3')
        >>> normalize_answer("1,000"), normalize_answer("-3.0"), normalize_answer("30%")
        ('1000', '-3', '30')
        >>> normalize_answer(r"\left( 2,\, \sqrt{3} \right)")
        '(2,\\sqrt{3})'
    """
    s = answer
    for _ in range(_MAX_PASSES):
        nxt = _normalize_once(s)
        if nxt == s:
            break
        s = nxt
    return s
