r"""Token-level confidence from logprobs: DeepConf confidences and self-certainty.

A reasoning trace that an OpenAI-compatible server returned with ``top_logprobs``
carries, at every position ``i``, the log-probabilities ``log P_i(1..k)`` of the
model's ``k`` most likely next tokens. Two published signals are computed here:

* **DeepConf** (Fu et al., 2025, "Deep Think with Confidence",
  arXiv:2508.15260): the *token confidence* ``C_i = -(1/k) sum_j log P_i(j)``
  (:func:`token_confidences`; higher is more confident) and its aggregates over a
  trace: the mean, sliding-window *group confidences* and their minimum
  (*lowest group*) and bottom 10% mean, and the *tail confidence* over the last
  tokens (:func:`trace_confidence`).
* **Self-certainty** (Kang et al., 2025, "Scalable Best-of-N Selection for Large
  Language Models via Self-Certainty", arXiv:2502.18581): the divergence
  ``KL(U || P)`` of each token distribution from uniform, averaged over the trace
  (:func:`self_certainty`).

:func:`logprob_matrix` turns the logprobs of a chat completion, a (vLLM/OpenAI)
completion or plain lists of floats into one array; every signal accepts any of
those forms (see :data:`LogprobsLike`). Nothing here does I/O.

Example:
    >>> import math
    >>> rows = [[math.log(0.5), math.log(0.25), math.log(0.25)]] * 4
    >>> trace = trace_confidence(rows, window=2, tail=2)
    >>> trace.tokens, round(trace.mean, 4), round(trace.lowest_group, 4)
    (4, 1.1552, 1.1552)
    >>> round(self_certainty(rows), 4)
    0.0566
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from dynasor_agents.errors import InvalidInputError

__all__ = [
    "DEFAULT_TAIL",
    "DEFAULT_WINDOW",
    "FloatArray",
    "LogprobsLike",
    "TraceConfidence",
    "bottom_group_confidence",
    "group_confidences",
    "logprob_matrix",
    "lowest_group_confidence",
    "self_certainty",
    "tail_confidence",
    "token_confidences",
    "trace_confidence",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]
"""A numpy array of ``float64``."""

LogprobsLike: TypeAlias = Any
"""The logprobs of one trace, in any of the forms :func:`logprob_matrix` reads.

* a 2-D array, or a sequence of per-position sequences, of top-k logprobs
  (floats; rows may differ in length);
* an OpenAI chat ``choice.logprobs`` (``ChoiceLogprobs`` or its dict) or its
  ``.content`` list, each item carrying ``top_logprobs`` whose entries have a
  ``logprob`` (attribute or key);
* an OpenAI/vLLM completions ``choice.logprobs`` (or its dict) or its
  ``top_logprobs`` list: one ``{token: logprob}`` mapping per position, entries
  possibly ``None`` (values may also be objects with ``.logprob``, as vLLM's).
"""

DEFAULT_WINDOW = 2048
"""Group (sliding window) size in tokens, DeepConf's default."""

DEFAULT_TAIL = 2048
"""Tokens averaged by the tail confidence, DeepConf's default."""

_POSITIVE_TOLERANCE = 1e-6  # logprobs a hair above 0 are rounding, not errors
_FRACTION_EPS = 1e-9  # so that ceil(0.1 * 30) is 3, not 4


# --------------------------------------------------------------------------- adapters


_MISSING = object()


def _field(obj: object, name: str) -> object:
    """``obj[name]`` for a mapping, else ``obj.name``; ``_MISSING`` when absent."""
    return obj.get(name, _MISSING) if isinstance(obj, Mapping) else getattr(obj, name, _MISSING)


def _entry_value(entry: object, where: str) -> float:
    """One logprob: a number, or an object/dict carrying ``logprob``."""
    if type(entry) is float:  # the common case, far cheaper than the ABC check below
        return entry
    if isinstance(entry, Real) and not isinstance(entry, bool):
        return float(entry)
    value = _field(entry, "logprob")
    if isinstance(value, Real) and not isinstance(value, bool):
        return float(value)
    raise InvalidInputError(f"{where} must be a logprob or carry one, got {type(entry).__name__}")


def _entries(items: object, where: str) -> list[float]:
    """The logprobs of one position from a list of entries (``None`` -> none)."""
    if items is None:
        return []
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise InvalidInputError(f"{where} must be a list of logprobs, got {type(items).__name__}")
    return [_entry_value(entry, f"{where}[{j}]") for j, entry in enumerate(items)]


def _row_values(row: object, index: int) -> list[float]:
    """The top-k logprobs at position ``index``, whatever form the position has."""
    where = f"logprobs[{index}]"
    if row is None:
        return []
    if isinstance(row, Mapping):
        top = row.get("top_logprobs", _MISSING)
        if top is not _MISSING and not isinstance(top, Real):  # a chat content item
            return _entries(top, f"{where}.top_logprobs")
        return [_entry_value(v, f"{where}[{k!r}]") for k, v in row.items()]  # {token: lp}
    top = getattr(row, "top_logprobs", _MISSING)
    if top is not _MISSING:  # a chat content item object (ChatCompletionTokenLogprob)
        return _entries(top, f"{where}.top_logprobs")
    if isinstance(row, Real):
        raise InvalidInputError(f"{where} is a number; expected a position's top-k logprobs")
    return _entries(row, where)


def _unwrap(logprobs: object) -> object:
    """The per-position list inside a chat or completions ``logprobs`` object."""
    for name in ("content", "top_logprobs"):
        inner = _field(logprobs, name)
        if inner is _MISSING:
            continue
        if inner is None:
            raise InvalidInputError(f"logprobs.{name} is None: request top_logprobs=k")
        return inner
    if isinstance(logprobs, Mapping):
        raise InvalidInputError("a logprobs mapping must hold 'content' or 'top_logprobs'")
    return logprobs


def _finish(matrix: FloatArray, k: int | None) -> FloatArray:
    """Validate a padded matrix, drop empty rows, sort rows, apply ``k``."""
    for bad, what in ((np.isnan(matrix), "NaN"), (np.isposinf(matrix), "+inf")):
        if bad.any():
            raise InvalidInputError(f"logprobs contain {what}")
    if (matrix > _POSITIVE_TOLERANCE).any():
        raise InvalidInputError(f"logprobs must be <= 0, got {float(matrix.max())!r}")
    matrix = np.minimum(matrix, 0.0)
    present = np.isfinite(matrix)
    matrix = matrix[present.any(axis=1)]
    if matrix.shape[0] == 0:
        raise InvalidInputError("no position carries top logprobs (request top_logprobs=k)")
    matrix = -np.sort(-matrix, axis=1)  # descending: column 0 is the top-1 token
    if k is not None:
        counts = np.isfinite(matrix).sum(axis=1)
        short = np.flatnonzero(counts < k)
        if short.size:
            raise InvalidInputError(
                f"k={k} but {short.size} position(s) carry fewer top logprobs "
                f"(the first has {int(counts[short[0]])})"
            )
        matrix = matrix[:, :k]
    return np.ascontiguousarray(matrix)


def logprob_matrix(logprobs: LogprobsLike, *, k: int | None = None) -> FloatArray:
    """The top-k logprobs of a trace as a ``(positions, k)`` float array.

    Rows are sorted in descending order (column 0 holds the most likely token).
    Positions that carry no top logprobs (``None``, an empty list) are skipped,
    as DeepConf's reference code does. Rows shorter than the longest one are
    padded with ``-inf``, which every function here reads as "absent"; for the
    same reason a ``-inf`` in the input counts as an absent entry.

    Args:
        logprobs: Any form listed under :data:`LogprobsLike`.
        k: If given, use exactly the ``k`` largest logprobs of every position
            (vLLM may return ``k + 1`` entries: the top-k plus the sampled
            token); a position with fewer than ``k`` raises.

    Returns:
        A ``float64`` array of shape ``(positions with logprobs, k or max row)``.

    Raises:
        InvalidInputError: The input is empty or of no known form, holds NaN,
            ``+inf`` or a positive value, no position has logprobs, or a
            position has fewer than ``k`` entries.

    Example:
        >>> chat = {"content": [
        ...     {"token": "4", "logprob": -0.1, "top_logprobs": [
        ...         {"token": "4", "logprob": -0.1}, {"token": "5", "logprob": -2.5}]},
        ...     {"token": "!", "logprob": -0.3, "top_logprobs": []},
        ... ]}
        >>> logprob_matrix(chat).tolist()
        [[-0.1, -2.5]]
        >>> logprob_matrix([{"a": -1.0, "b": -0.5}, None, {"c": -0.2}]).tolist()
        [[-0.5, -1.0], [-0.2, -inf]]
        >>> logprob_matrix([[-0.5, -1.0, -3.0]], k=2).tolist()
        [[-0.5, -1.0]]
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InvalidInputError(f"k must be a positive int or None, got {k!r}")
    if logprobs is None:
        raise InvalidInputError("logprobs is None; expected the logprobs of a trace")
    if isinstance(logprobs, np.ndarray):
        if logprobs.ndim != 2 or logprobs.size == 0 or logprobs.dtype.kind not in "iuf":
            raise InvalidInputError(
                f"logprobs array must be 2-D, numeric, non-empty: {logprobs.dtype} {logprobs.shape}"
            )
        return _finish(logprobs.astype(np.float64), k)
    positions = _unwrap(logprobs)
    if isinstance(positions, str | bytes) or not isinstance(positions, Iterable):
        raise InvalidInputError(
            "logprobs must be a sequence of positions or a chat/completions logprobs "
            f"object, got {type(positions).__name__}"
        )
    rows = [_row_values(row, i) for i, row in enumerate(positions)]
    if not rows:
        raise InvalidInputError("logprobs is empty: no positions")
    width = max(len(row) for row in rows)
    matrix = np.full((len(rows), max(width, 1)), -np.inf, dtype=np.float64)
    for i, row in enumerate(rows):
        matrix[i, : len(row)] = row
    return _finish(matrix, k)


# --------------------------------------------------------------------------- DeepConf


def token_confidences(logprobs: LogprobsLike, *, k: int | None = None) -> FloatArray:
    """DeepConf token confidence at every position of a trace.

    ``C_i = -(1/k) * sum_{j=1..k} log P_i(j)``, the mean negative logprob of the
    top-k tokens at position ``i`` (Fu et al. 2025, eq. 2). A peaked
    distribution has one logprob near 0 and the others very negative, hence a
    high ``C_i``; a flat one gives a low ``C_i``. With ragged rows each
    position averages over the entries it has.

    Args:
        logprobs: Any form listed under :data:`LogprobsLike`.
        k: Passed to :func:`logprob_matrix`.

    Returns:
        One confidence (``>= 0``) per position that carries logprobs.

    Raises:
        InvalidInputError: As :func:`logprob_matrix`.

    Example:
        >>> import math
        >>> token_confidences([[math.log(0.5), math.log(0.25)], [0.0]]).round(4).tolist()
        [1.0397, 0.0]
    """
    matrix = logprob_matrix(logprobs, k=k)
    present = np.isfinite(matrix)
    total = np.where(present, matrix, 0.0).sum(axis=1)
    return np.asarray(-total / present.sum(axis=1), dtype=np.float64) + 0.0  # no -0.0


def _confidence_vector(confidences: npt.ArrayLike) -> FloatArray:
    """Per-token confidences as a finite, non-empty 1-D float array."""
    try:
        vector = np.asarray(confidences, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"confidences must be numbers: {exc}") from exc
    if vector.ndim != 1:
        raise InvalidInputError(f"confidences must be 1-D, got shape {vector.shape}")
    if vector.size == 0:
        raise InvalidInputError("confidences is empty")
    if not np.isfinite(vector).all():
        raise InvalidInputError("confidences must be finite (no NaN or inf)")
    return vector


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive int, got {value!r}")
    return value


def group_confidences(confidences: npt.ArrayLike, *, window: int = DEFAULT_WINDOW) -> FloatArray:
    """DeepConf group confidences: means over every sliding window of tokens.

    ``C_G = (1/|G|) * sum_{t in G} C_t`` for each window ``G`` of ``window``
    consecutive tokens, stride 1 (``len - window + 1`` groups), as in DeepConf's
    reference ``compute_least_grouped``. A trace no longer than the window is
    one group: the whole trace.

    Args:
        confidences: Per-token confidences, e.g. from :func:`token_confidences`.
        window: Tokens per group (DeepConf uses 2048).

    Returns:
        The group confidences, in trace order.

    Raises:
        InvalidInputError: Empty or non-finite confidences, or a bad ``window``.

    Example:
        >>> group_confidences([1.0, 2.0, 3.0, 6.0], window=2).tolist()
        [1.5, 2.5, 4.5]
        >>> group_confidences([1.0, 2.0], window=8).tolist()
        [1.5]
    """
    vector = _confidence_vector(confidences)
    window = _positive_int(window, "window")
    if vector.size <= window:
        return np.array([vector.mean()], dtype=np.float64)
    sums = np.concatenate(([0.0], np.cumsum(vector)))
    return np.asarray((sums[window:] - sums[:-window]) / window, dtype=np.float64)


def lowest_group_confidence(confidences: npt.ArrayLike, *, window: int = DEFAULT_WINDOW) -> float:
    """DeepConf lowest group confidence: ``min_G C_G`` over the sliding windows.

    Args:
        confidences: Per-token confidences.
        window: Tokens per group.

    Returns:
        The smallest group confidence.

    Raises:
        InvalidInputError: As :func:`group_confidences`.

    Example:
        >>> lowest_group_confidence([3.0, 1.0, 1.0, 3.0], window=2)
        1.0
    """
    return float(group_confidences(confidences, window=window).min())


def bottom_group_confidence(
    confidences: npt.ArrayLike, *, window: int = DEFAULT_WINDOW, fraction: float = 0.1
) -> float:
    """DeepConf bottom-10% group confidence: the mean of the lowest groups.

    The lowest ``max(1, ceil(fraction * G))`` of the ``G`` group confidences
    are averaged (the paper does not say how to round; rounding up keeps at
    least one group).

    Args:
        confidences: Per-token confidences.
        window: Tokens per group.
        fraction: Share of groups averaged, in ``(0, 1]`` (DeepConf: 0.1).

    Returns:
        The mean of the lowest groups.

    Raises:
        InvalidInputError: As :func:`group_confidences`, or ``fraction``
            outside ``(0, 1]``.

    Example:
        >>> bottom_group_confidence([4.0, 0.0, 2.0, 2.0, 6.0], window=2, fraction=0.5)
        1.5
    """
    if not 0.0 < fraction <= 1.0:
        raise InvalidInputError(f"fraction must be in (0, 1], got {fraction!r}")
    groups = np.sort(group_confidences(confidences, window=window))
    count = max(1, math.ceil(fraction * groups.size - _FRACTION_EPS))
    return float(groups[:count].mean())


def tail_confidence(confidences: npt.ArrayLike, *, tail: int = DEFAULT_TAIL) -> float:
    """DeepConf tail confidence: the mean confidence of the last ``tail`` tokens.

    A trace shorter than ``tail`` is averaged whole.

    Args:
        confidences: Per-token confidences.
        tail: Tokens at the end of the trace to average (DeepConf uses 2048).

    Returns:
        ``mean(C_t)`` over the last ``tail`` tokens.

    Raises:
        InvalidInputError: Empty or non-finite confidences, or a bad ``tail``.

    Example:
        >>> tail_confidence([0.0, 1.0, 2.0, 4.0], tail=2)
        3.0
    """
    vector = _confidence_vector(confidences)
    return float(vector[-_positive_int(tail, "tail") :].mean())


@dataclass(frozen=True)
class TraceConfidence:
    """DeepConf's confidence measures of one trace (higher is more confident).

    Attributes:
        tokens: Positions that carried logprobs.
        mean: Average trace confidence, ``mean_t C_t``.
        lowest_group: Lowest group confidence, ``min_G C_G``.
        bottom_group: Mean of the lowest ``bottom_fraction`` of groups.
        tail: Mean confidence of the last ``tail`` tokens.
    """

    tokens: int
    mean: float
    lowest_group: float
    bottom_group: float
    tail: float


def trace_confidence(
    logprobs: LogprobsLike,
    *,
    window: int = DEFAULT_WINDOW,
    tail: int = DEFAULT_TAIL,
    bottom_fraction: float = 0.1,
    k: int | None = None,
) -> TraceConfidence:
    """All of DeepConf's trace-level confidences from the logprobs of one trace.

    Args:
        logprobs: Any form listed under :data:`LogprobsLike`.
        window: Tokens per group for the group confidences.
        tail: Tokens averaged by the tail confidence.
        bottom_fraction: Share of groups in the bottom-group mean.
        k: Passed to :func:`logprob_matrix`.

    Returns:
        The :class:`TraceConfidence`.

    Raises:
        InvalidInputError: As :func:`logprob_matrix` and the group functions.

    Example:
        >>> t = trace_confidence([[-0.1, -2.0], [-1.0, -1.0], [-0.5, -1.5]], window=2, tail=1)
        >>> t.tokens, round(t.mean, 4), round(t.lowest_group, 4), round(t.tail, 4)
        (3, 1.0167, 1.0, 1.0)
    """
    confidences = token_confidences(logprobs, k=k)
    return TraceConfidence(
        tokens=int(confidences.size),
        mean=float(confidences.mean()),
        lowest_group=lowest_group_confidence(confidences, window=window),
        bottom_group=bottom_group_confidence(confidences, window=window, fraction=bottom_fraction),
        tail=tail_confidence(confidences, tail=tail),
    )


# --------------------------------------------------------------------------- self-certainty


def self_certainty(logprobs: LogprobsLike, *, k: int | None = None) -> float:
    """Self-certainty of a trace: ``KL(U || P)`` averaged over its tokens.

    Kang et al. (2025), eq. 4::

        SC = -(1 / (n V)) * sum_{i=1..n} sum_{j=1..V} log(V * p_ij)

    over ``n`` tokens and a vocabulary of ``V``: 0 for a uniform distribution,
    larger the more peaked. An API returns only the top-k logprobs, so each
    position's top-k are renormalised to a distribution over those ``k``
    tokens and ``V = k`` (per position, with ragged rows). This is the exact
    self-certainty when the full vocabulary is given, and a top-k truncation
    of it otherwise; a position with a single logprob contributes 0.

    Args:
        logprobs: Any form listed under :data:`LogprobsLike`.
        k: Passed to :func:`logprob_matrix`.

    Returns:
        The self-certainty, ``>= 0``.

    Raises:
        InvalidInputError: As :func:`logprob_matrix`.

    Example:
        >>> import math
        >>> self_certainty([[math.log(0.5), math.log(0.5)]])
        0.0
        >>> round(self_certainty([[math.log(0.8), math.log(0.2)]]), 4)  # -(log 1.6 + log 0.4)/2
        0.2231
    """
    matrix = logprob_matrix(logprobs, k=k)
    present = np.isfinite(matrix)
    width = present.sum(axis=1)
    top = matrix[:, :1]  # rows are sorted, so the first entry is the largest and finite
    log_norm = top[:, 0] + np.log(np.exp(matrix - top).sum(axis=1))
    mean_logprob = np.where(present, matrix, 0.0).sum(axis=1) / width
    per_token = np.maximum(log_norm - mean_logprob - np.log(width), 0.0)
    return float(per_token.mean())
