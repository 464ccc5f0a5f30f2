"""Command-line values the benchmark commands share: comma lists of positive numbers.

Example:
    >>> positive_floats("2,0.5", "--loads"), positive_counts("16,1,8", "--streams")
    ([0.5, 2.0], [1, 8, 16])
"""

from __future__ import annotations

from dynasor_agents import InvalidInputError

__all__ = ["positive_counts", "positive_floats"]


def positive_floats(text: str, what: str) -> list[float]:
    """``text`` as comma-separated numbers > 0, ascending.

    Raises:
        InvalidInputError: Naming the flag ``what``.
    """
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InvalidInputError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise InvalidInputError(f"{what} must be numbers > 0, got {text!r}")
    return sorted(values)


def positive_counts(text: str, what: str) -> list[int]:
    """``text`` as comma-separated whole numbers > 0, ascending.

    Raises:
        InvalidInputError: Naming the flag ``what``.
    """
    values = positive_floats(text, what)
    if any(not v.is_integer() for v in values):
        raise InvalidInputError(f"{what} must be whole numbers, got {text!r}")
    return [int(v) for v in values]
