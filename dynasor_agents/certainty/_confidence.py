r"""Trace-level confidence from token logprobs: DeepConf's measures and self-certainty.

Two published signals measure how confident a model was over a whole reasoning
trace, from the top-k logprobs an OpenAI-compatible server returned with it
(read by :func:`~dynasor_agents.certainty.logprob_matrix`):

* **DeepConf** (Fu et al., 2025, "Deep Think with Confidence",
  arXiv:2508.15260): aggregates of the *token confidences*
  (:func:`~dynasor_agents.certainty.token_confidences`; higher is more
  confident) over a trace: the mean, sliding-window *group confidences* and
  their minimum (*lowest group*) and bottom 10% mean, and the *tail confidence*
  over the last tokens (:func:`trace_confidence`).
* **Self-certainty** (Kang et al., 2025, "Scalable Best-of-N Selection for Large
  Language Models via Self-Certainty", arXiv:2502.18581): the divergence
  ``KL(U || P)`` of each token distribution from uniform, averaged over the trace
  (:func:`self_certainty`).

Every signal that takes logprobs accepts any form listed under
:data:`~dynasor_agents.certainty.LogprobsLike`. Nothing here does I/O.

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
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dynasor_agents.errors import InvalidInputError

from ._inputs import finite_vector
from ._logprobs import FloatArray, LogprobsLike, logprob_matrix, token_confidences

__all__ = [
    "DEFAULT_TAIL",
    "DEFAULT_WINDOW",
    "TraceConfidence",
    "bottom_group_confidence",
    "group_confidences",
    "lowest_group_confidence",
    "self_certainty",
    "tail_confidence",
    "trace_confidence",
]

DEFAULT_WINDOW = 2048
"""Group (sliding window) size in tokens, DeepConf's default."""

DEFAULT_TAIL = 2048
"""Tokens averaged by the tail confidence, DeepConf's default."""

_FRACTION_EPS = 1e-9  # so that ceil(0.1 * 30) is 3, not 4


# --------------------------------------------------------------------------- DeepConf


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
    vector = finite_vector(confidences, "confidences")
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
    vector = finite_vector(confidences, "confidences")
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
