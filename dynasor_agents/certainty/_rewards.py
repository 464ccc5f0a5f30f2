"""Certaindex of reward-guided search: the normalised reward of the paths.

For tree search guided by a reward model the Dynasor paper measures certainty
by the reward-model scores of the current paths, not by answer entropy: their
mean for MCTS, their maximum for REBASE (:func:`reward_certainty`).

Example:
    >>> reward_certainty([0.2, 0.6]), reward_certainty([0.2, 0.6], how="max")
    (0.4, 0.6)
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from dynasor_agents.errors import InvalidInputError

from ._inputs import finite_vector

__all__ = ["reward_certainty"]


def reward_certainty(
    scores: npt.ArrayLike,
    *,
    value_range: tuple[float, float] | None = None,
    how: Literal["mean", "max"] = "mean",
) -> float:
    """Certaindex of reward-guided search: the normalised reward of the paths.

    The Dynasor paper (Fu et al. 2024, "Efficiently Serving LLM Reasoning
    Programs with Certaindex") measures the certainty of MCTS by the mean and
    of REBASE by the maximum reward-model score of the current paths, in
    ``[0, 1]``. With ``value_range=(lo, hi)`` every score is first min-max
    scaled, ``clip((r - lo) / (hi - lo), 0, 1)``; without it the scores must
    already lie in ``[0, 1]``.

    Args:
        scores: One reward score per path.
        value_range: The range ``(lo, hi)`` of the reward model's scores, if
            not ``[0, 1]``.
        how: ``"mean"`` (MCTS) or ``"max"`` (REBASE).

    Returns:
        The certainty, in ``[0, 1]``.

    Raises:
        InvalidInputError: Empty or non-finite scores, a score outside
            ``[0, 1]`` without ``value_range``, ``lo >= hi``, or an unknown
            ``how``.

    Example:
        >>> reward_certainty([-1.0, 3.0], value_range=(-1.0, 3.0))
        0.5
        >>> reward_certainty([5.0, 9.0], value_range=(0.0, 8.0), how="max")
        1.0
    """
    vector = finite_vector(scores, "scores")
    if how not in ("mean", "max"):
        raise InvalidInputError(f"how must be 'mean' or 'max', got {how!r}")
    if value_range is None:
        outside = np.flatnonzero((vector < 0.0) | (vector > 1.0))
        if outside.size:
            i = int(outside[0])
            raise InvalidInputError(
                f"scores[{i}] is {float(vector[i])!r}, outside [0, 1]; "
                "pass value_range=(lo, hi) to rescale"
            )
    else:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"value_range must be a pair (lo, hi), got {value_range!r}"
            ) from exc
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InvalidInputError(f"value_range must have finite lo < hi, got {value_range!r}")
        vector = np.clip((vector - lo) / (hi - lo), 0.0, 1.0)
    value = float(vector.mean() if how == "mean" else vector.max())
    return min(max(value, 0.0), 1.0)
