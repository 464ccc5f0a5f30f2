"""Which question of a batch gets the next tokens: rankings shared by both allocators.

When a batch's tokens are scarce, an allocator must choose which question
samples next. Both allocators choose the same way, with a :class:`Ranking`:
the live :class:`~dynasor_agents.TokenPool` (members between rounds claim
tokens ahead of lower-ranked members) and the replayed allocator of
``dynasor_bench`` (the next sample goes to the top-ranked question).

Two rankings:

* :class:`lowest_certainty` (the default): the lowest Certaindex first, the
  paper's "most uncertain gets more". On our 250-question bank this is what
  the data says too: after the detect step, the least certain questions gain
  the most accuracy per further sample (docs/benchmarks.md);
* :class:`by_gain`: the highest *expected gain* first, read from a
  :class:`GainCurve` that maps Certaindex to the accuracy one more sample is
  expected to add, fitted per workload (:meth:`GainCurve.fit`) from labeled
  traces. It differs from :class:`lowest_certainty` where the gain is not
  monotone, e.g. a model whose least certain questions are hopeless.

A ranking's :meth:`~Ranking.key` is a sort key: smaller is served first.
Ties are broken by the allocator (join order, then fewest samples).

Example:
    >>> curve = GainCurve([(0.0, 0.0), (0.5, 0.04), (1.0, 0.0)])
    >>> [round(curve.gain_at(c), 3) for c in (0.0, 0.25, 0.5, 0.9, 1.0)]
    [0.0, 0.02, 0.04, 0.008, 0.0]
    >>> certainties = [0.05, 0.45, 0.95]
    >>> sorted(certainties, key=lowest_certainty().key)   # the least certain first
    [0.05, 0.45, 0.95]
    >>> sorted(certainties, key=by_gain(curve).key)       # the most to gain first
    [0.45, 0.95, 0.05]
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dynasor_agents.errors import InvalidInputError

__all__ = ["GainCurve", "Piecewise", "Ranking", "by_gain", "lowest_certainty"]


class Piecewise:
    """A piecewise-linear function of Certaindex, flat beyond its ends (checked corners).

    Args:
        points: ``(certainty, value)`` corners, certainties strictly increasing
            in ``[0, 1]``, values finite.
        what: What errors call the values.
        name: What errors call the curve (default: its class's name).
        minimum: The smallest value allowed, if any.

    Example:
        >>> Piecewise([(0.2, 1.0), (0.6, 5.0)]).at(0.5)
        4.0
    """

    def __init__(
        self,
        points: Sequence[tuple[float, float]],
        what: str = "value",
        name: str | None = None,
        minimum: float | None = None,
    ) -> None:
        name = name or type(self).__name__
        try:
            pairs = [(float(c), float(v)) for c, v in points]
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"{name} expects (certainty, {what}) pairs, got {points!r}"
            ) from exc
        if not pairs:
            raise InvalidInputError(f"{name} needs at least one point")
        xs = [c for c, _ in pairs]
        if any(not 0.0 <= c <= 1.0 for c in xs):  # also refuses NaN
            raise InvalidInputError(f"{name} certainties must be in [0, 1], got {xs}")
        if any(b <= a for a, b in itertools.pairwise(xs)):
            raise InvalidInputError(f"{name}: unsorted certainties {xs}")
        if any(not math.isfinite(v) or (minimum is not None and v < minimum) for _, v in pairs):
            bound = "" if minimum is None else f" and >= {minimum:g}"
            raise InvalidInputError(
                f"{name} {what}s must be finite{bound}, got {[v for _, v in pairs]}"
            )
        self.points: tuple[tuple[float, float], ...] = tuple(pairs)
        self._xs = np.array(xs)
        self._ys = np.array([v for _, v in pairs])

    def at(self, certainty: float) -> float:
        """The value at ``certainty``."""
        return float(np.interp(certainty, self._xs, self._ys))


class GainCurve(Piecewise):
    """Expected accuracy gain of one more sample, as a function of Certaindex.

    Piecewise-linear through ``points`` (``(certainty, gain)``, certainties
    strictly increasing in ``[0, 1]``, gains finite), flat beyond its ends.

    Args:
        points: The curve's corners.

    Example:
        >>> round(GainCurve([(0.2, 0.01), (0.6, 0.05)]).gain_at(0.4), 6)
        0.03
        >>> GainCurve.from_dict(GainCurve([(0.5, 0.1)]).to_dict())
        GainCurve([(0.5, 0.1)])
        >>> GainCurve([(0.5, 0.1), (0.5, 0.2)])
        Traceback (most recent call last):
        ...
        dynasor_agents.errors.InvalidInputError: GainCurve: unsorted certainties [0.5, 0.5]
    """

    def __init__(self, points: Sequence[tuple[float, float]]) -> None:
        super().__init__(points, "gain")

    def gain_at(self, certainty: float) -> float:
        """The expected gain at ``certainty``."""
        return self.at(certainty)

    @classmethod
    def fit(cls, observations: Iterable[tuple[float, float]], *, bins: int = 10) -> GainCurve:
        """Fit a curve to ``(certainty, gain)`` observations by binned means.

        Certaindex is cut into ``bins`` equal bins; each non-empty bin becomes a
        corner at the mean certainty of its observations, with their mean gain.

        Args:
            observations: Pairs of a question's Certaindex at some point and the
                accuracy it gained per further sample from there (e.g.
                ``(correct_at_K - correct_now) / (K - n)`` on labeled traces).
            bins: Number of bins.

        Raises:
            InvalidInputError: No observations, or ``bins < 1``.

        Example:
            >>> obs = [(0.1, 0.0), (0.15, 0.0), (0.5, 0.1), (0.55, 0.0), (0.95, 0.0)]
            >>> GainCurve.fit(obs, bins=4).points
            ((0.125, 0.0), (0.525, 0.05), (0.95, 0.0))
        """
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise InvalidInputError(f"bins must be an int >= 1, got {bins!r}")
        try:
            data = np.array(list(observations), dtype=float).reshape(-1, 2)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"GainCurve.fit expects (certainty, gain) pairs: {exc}"
            ) from exc
        if not len(data):
            raise InvalidInputError("GainCurve.fit needs at least one observation")
        if not np.isfinite(data).all() or (data[:, 0] < 0).any() or (data[:, 0] > 1).any():
            raise InvalidInputError("GainCurve.fit: certainties must be in [0, 1], gains finite")
        which = np.minimum((data[:, 0] * bins).astype(int), bins - 1)
        points = []
        for b in range(bins):
            rows = data[which == b]
            if len(rows):
                points.append((round(float(rows[:, 0].mean()), 6), float(rows[:, 1].mean())))
        return cls(points)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``{"points": [[c, g], ...]}``)."""
        return {"points": [list(p) for p in self.points]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GainCurve:
        """Rebuild a curve saved by :meth:`to_dict`."""
        if not isinstance(data, Mapping) or "points" not in data:
            raise InvalidInputError(f"a gain curve needs a 'points' list, got {data!r}")
        return cls(data["points"])

    def __repr__(self) -> str:
        corners = ", ".join(f"({c:g}, {g:.4g})" for c, g in self.points)
        return f"GainCurve([{corners}])"


class Ranking(abc.ABC):
    """Orders a batch's questions for its next tokens: a smaller key is served first."""

    @abc.abstractmethod
    def key(self, certainty: float) -> float:
        """The sort key of a question whose latest Certaindex is ``certainty``."""


class lowest_certainty(Ranking):  # noqa: N801 - lowercase like the policies
    """The least certain question first (the paper's allocation)."""

    def key(self, certainty: float) -> float:
        return certainty

    def __repr__(self) -> str:
        return "lowest_certainty()"


class by_gain(Ranking):  # noqa: N801
    """The question with the most expected gain first.

    Args:
        curve: Expected gain of one more sample against Certaindex.
    """

    def __init__(self, curve: GainCurve) -> None:
        if not isinstance(curve, GainCurve):
            raise InvalidInputError(f"by_gain expects a GainCurve, got {curve!r}")
        self.curve = curve

    def key(self, certainty: float) -> float:
        return -self.curve.gain_at(certainty)

    def __repr__(self) -> str:
        return f"by_gain({self.curve!r})"
