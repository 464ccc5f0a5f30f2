r"""Reading logprobs: a trace's top-k logprobs as a matrix, and per-token measures.

An OpenAI-compatible server asked for ``top_logprobs`` returns, at every
position ``i`` of a trace, the log-probabilities ``log P_i(1..k)`` of the
model's ``k`` most likely next tokens, in one of several shapes: a chat
completion's ``choice.logprobs`` (one item per token, each with its
``top_logprobs``), a (vLLM/OpenAI) completions ``choice.logprobs`` (one
``{token: logprob}`` mapping per position) or plain lists of floats.

* :func:`logprob_matrix` reads any of them (see :data:`LogprobsLike`) into one
  ``(positions, k)`` array;
* :func:`token_confidences` turns each row into DeepConf's *token confidence*
  ``C_i = -(1/k) sum_j log P_i(j)`` (Fu et al., 2025, "Deep Think with
  Confidence", arXiv:2508.15260), the per-token input of the trace-level
  confidences;
* :func:`mean_token_probability` reads the *sampled* tokens' logprobs instead
  (what the strategies' samplers return) and gives their geometric-mean
  probability.

Nothing here does I/O.

Example:
    >>> import math
    >>> rows = [[math.log(0.5), math.log(0.25), math.log(0.25)]] * 4
    >>> logprob_matrix(rows).shape, token_confidences(rows).round(4).tolist()
    ((4, 3), [1.1552, 1.1552, 1.1552, 1.1552])
    >>> round(mean_token_probability([math.log(0.5), math.log(0.125)]), 4)
    0.25
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Real
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from dynasor_agents.errors import InvalidInputError

__all__ = [
    "FloatArray",
    "LogprobsLike",
    "logprob_matrix",
    "mean_token_probability",
    "token_confidences",
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

_POSITIVE_TOLERANCE = 1e-6  # logprobs a hair above 0 are rounding, not errors


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
    padded with ``-inf``, which every signal over the matrix reads as
    "absent"; for the same reason a ``-inf`` in the input counts as an absent
    entry.

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


# --------------------------------------------------------------------------- token confidence


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


# --------------------------------------------------------------------------- sampled tokens


def _token_logprob(entry: Any) -> float:
    if isinstance(entry, int | float):
        return float(entry)
    if isinstance(entry, dict):
        if "logprob" in entry:
            return float(entry["logprob"])
        return max(float(v) for v in entry.values())  # a top-k map: the sampled token's
    return float(entry.logprob)


def mean_token_probability(logprobs: Any) -> float | None:
    """``exp`` of the mean token log-probability (the geometric-mean token probability).

    Accepts what strategies' samplers put on ``Completion.logprobs``: the chat
    API's ``{"content": [{"token", "logprob", ...}, ...]}``
    (``ChatOpenAI(logprobs=True)``), a list of such entries, the sampled
    tokens' log-probabilities as plain numbers (``CompletionsModel``), or
    top-k maps ``{token: logprob}`` (the most likely token stands for the
    sampled one). ``None`` entries are skipped; ``None`` when there are none.

    Args:
        logprobs: The sampled tokens' logprobs in any of those forms, or ``None``.

    Returns:
        ``exp(mean logprob)`` in ``[0, 1]``, or ``None`` without any logprob.

    Example:
        >>> round(mean_token_probability({"content": [{"logprob": -0.1}, {"logprob": -0.3}]}), 4)
        0.8187
        >>> mean_token_probability(None) is None
        True
    """
    entries = logprobs.get("content") if isinstance(logprobs, dict) else logprobs
    values = [_token_logprob(e) for e in entries or () if e is not None]
    if not values:
        return None
    return math.exp(min(0.0, sum(values) / len(values)))
