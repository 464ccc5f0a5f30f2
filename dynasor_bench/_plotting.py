"""Plotting shared by the reports: matplotlib on demand, one palette.

matplotlib is an optional dependency (the ``bench`` extra), imported by name
when a plot is drawn, with the non-interactive Agg backend.
"""

from __future__ import annotations

import importlib
from typing import Any

from dynasor_agents import InvalidInputError

__all__ = ["COLORS", "pyplot"]

COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
)  # fmt: skip
"""One colour per curve, in order (matplotlib's tab10, then darker ones)."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend.

    Raises:
        InvalidInputError: matplotlib is not installed.
    """
    try:  # imported by name: matplotlib is an optional dependency, untyped here
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InvalidInputError(
            "plots need matplotlib: pip install 'dynasor-agents[bench]'"
        ) from exc
