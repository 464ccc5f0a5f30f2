"""The four panels of the online comparison (PNG), measured solid, simulated dashed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dynasor_agents import InvalidInputError
from dynasor_bench._plotting import COLORS, pyplot
from dynasor_bench.online._report import rows_at_rate, summarize_cells, system_order
from dynasor_bench.online._store import attainment
from dynasor_bench.workload import OnlineRow

__all__ = ["plot_online"]


def plot_online(
    path: str | Path,
    measured: Sequence[OnlineRow],
    simulated: Sequence[OnlineRow] = (),
    *,
    slo_scale: float,
    fixed_rate: float,
    scales: Sequence[float],
    target: float = 0.9,
) -> Path:
    """Four panels comparing the systems; one colour per system.

    Panels: attainment vs arrival rate at ``slo_scale``; P90 latency vs rate
    (failed programs reaching the P90 leave a gap); attainment vs SLO scale at
    ``fixed_rate``; completion tokens per program vs rate. Measured rows are
    solid lines with markers, simulated ones dashed lines (with a small cross
    only where a system has a single point, which a line cannot show).

    Args:
        path: The PNG to write (parent directories are created).
        measured: Rows from real runs; ``simulated``: rows from the simulator.
        slo_scale: The SLO scale of the rate panels.
        fixed_rate: The rate of the SLO-scale panel.
        scales: The SLO scales of that panel.
        target: Where the horizontal target line goes.

    Raises:
        InvalidInputError: No rows at all, no scales, or matplotlib missing.
    """
    if not measured and not simulated:
        raise InvalidInputError("plot_online needs measured or simulated rows, got neither")
    if not scales:
        raise InvalidInputError("plot_online needs at least one SLO scale")
    plt = pyplot()
    colors = {
        name: COLORS[i % len(COLORS)]
        for i, name in enumerate(system_order([*measured, *simulated]))
    }
    figure, axes = plt.subplots(2, 2, figsize=(12, 9), squeeze=False)
    by_rate, p90, by_scale, tokens = axes[0][0], axes[0][1], axes[1][0], axes[1][1]
    xs_scale = sorted(scales)
    for origin, rows in (("measured", measured), ("simulated", simulated)):
        if not rows:
            continue
        summaries = summarize_cells(rows, slo_scale)
        for system in system_order(rows):
            cells = [c for c in summaries if c.system == system]
            xs = [c.rate for c in cells]
            dashed = origin == "simulated"
            style: dict[str, Any] = {
                "color": colors[system],
                "label": f"{system} ({origin})",
                "linestyle": "--" if dashed else "-",
                "marker": ("x" if len(xs) == 1 else "") if dashed else "o",
                "markersize": 5,
            }
            by_rate.plot(xs, [100 * c.attainment for c in cells], **style)
            p90.plot(xs, [c.p90 if math.isfinite(c.p90) else math.nan for c in cells], **style)
            tokens.plot(xs, [c.tokens for c in cells], **style)
            at = rows_at_rate([row for row in rows if row.system == system], fixed_rate)
            if at:
                style["marker"] = ("x" if len(xs_scale) == 1 else "") if dashed else "o"
                by_scale.plot(xs_scale, [100 * attainment(at, s) for s in xs_scale], **style)
    for axis in (by_rate, by_scale):
        axis.axhline(100 * target, color="grey", linestyle=":", linewidth=1)
        axis.set_ylim(-2, 102)
        axis.set_ylabel("SLO attainment %")
    by_scale.axvline(slo_scale, color="grey", linestyle=":", linewidth=1)
    labels = (
        (by_rate, f"Attainment vs arrival rate (SLO x{slo_scale:g})", "arrival rate, programs/s"),
        (p90, "P90 latency vs arrival rate", "arrival rate, programs/s"),
        (by_scale, f"Attainment vs SLO scale (rate {fixed_rate:g}/s)", "SLO scale"),
        (tokens, "Completion tokens per program", "arrival rate, programs/s"),
    )
    for axis, title, xlabel in labels:
        axis.set_title(title)
        axis.set_xlabel(xlabel)
        axis.grid(alpha=0.3)
    p90.set_ylabel("P90 latency, s")
    tokens.set_ylabel("tokens/program")
    handles, names = by_rate.get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8)
    figure.suptitle(f"Online serving (horizontal line: {100 * target:g}% target)")
    figure.tight_layout(rect=(0, 0.07, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
