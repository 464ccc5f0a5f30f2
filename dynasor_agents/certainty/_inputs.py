"""Input checks shared by the certainty signals: number vectors and optional answer lists.

Each check returns the input in the form the signal computes with, or raises
:class:`~dynasor_agents.errors.InvalidInputError` naming the argument and the
first bad item.

Example:
    >>> finite_vector([0.5, 1], "scores").tolist(), optional_texts(("18", None), "probes")
    ([0.5, 1.0], ['18', None])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from dynasor_agents.errors import InvalidInputError

__all__ = ["finite_vector", "optional_texts"]


def finite_vector(values: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    """``values`` as a non-empty, finite 1-D float array.

    Args:
        values: The numbers, e.g. one score or weight per path.
        name: The argument's name, for the error message.

    Returns:
        A ``float64`` array of shape ``(len(values),)``.

    Raises:
        InvalidInputError: ``values`` is a str, not numbers, not 1-D, empty or
            holds NaN or an infinity.
    """
    if isinstance(values, str | bytes):
        raise InvalidInputError(f"{name} must be a sequence of numbers, not a str")
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be numbers: {exc}") from exc
    if vector.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D, got shape {vector.shape}")
    if vector.size == 0:
        raise InvalidInputError(f"{name} is empty")
    bad = np.flatnonzero(~np.isfinite(vector))
    if bad.size:
        i = int(bad[0])
        raise InvalidInputError(f"{name}[{i}] is {float(vector[i])!r}; must be finite")
    return vector


def optional_texts(values: Sequence[str | None], name: str) -> list[str | None]:
    """``values`` as a list of str or ``None`` (an answer, or none).

    Args:
        values: One answer (or raw output) per path or probe.
        name: The argument's name, for the error message.

    Returns:
        The items, as a new list.

    Raises:
        InvalidInputError: ``values`` is a single str, or holds an item that is
            neither a str nor ``None``.
    """
    if isinstance(values, str):
        raise InvalidInputError(f"{name} must be a sequence, not a single str")
    listed = list(values)
    for i, value in enumerate(listed):
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"{name}[{i}] must be str or None, got {type(value).__name__}")
    return listed
