"""A dependency-free progress line for long runs (recording, replay, batches).

On a terminal it redraws one line in place; in a log file (or under CI) it
prints a full line at most every ``every`` seconds, so logs stay readable. The
clock and the output stream are injected, so tests drive it without sleeping.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> ticks = iter([0.0, 1.0, 2.0, 3.0])
    >>> bar = Progress(2, "record", stream=out, clock=lambda: next(ticks), every=0.0)
    >>> bar.update(1, tokens=100)
    >>> bar.update(1, tokens=50)
    >>> bar.close()
    >>> print(out.getvalue().strip().splitlines()[-1])
    [record] 2/2 100% 1.0/s eta 0s tokens=150
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _rate(per_second: float) -> str:
    if per_second >= 1 or per_second == 0:
        return f"{per_second:.1f}/s"
    return f"{per_second * 60:.1f}/min"


class Progress:
    """Count finished items and show rate, ETA and running totals.

    Args:
        total: Items expected (``0`` if unknown).
        label: Shown in brackets at the start of the line.
        stream: Where to write (default ``sys.stderr``).
        clock: Seconds, monotonic (default ``time.monotonic``).
        every: Minimum seconds between lines when not on a terminal.
        initial: Items already done (e.g. resumed from a file); they do not count
            toward the rate.
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float = 10.0,
        initial: int = 0,
    ) -> None:
        self.total = total
        self.label = label
        self.done = initial
        self._initial = initial
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._every = every
        self._start = clock()
        self._last = float("-inf")
        self._totals: dict[str, float] = {}
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())

    def update(self, n: int = 1, **totals: float) -> None:
        """Mark ``n`` more items done and add ``totals`` to the running sums."""
        self.done += n
        for key, value in totals.items():
            self._totals[key] = self._totals.get(key, 0.0) + value
        now = self._clock()
        if self._tty or now - self._last >= self._every or self.done >= self.total > 0:
            self._last = now
            self._write(now)

    def _line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = (self.done - self._initial) / elapsed
        parts = [f"[{self.label}]"]
        if self.total:
            left = max(self.total - self.done, 0)
            eta = left / rate if rate > 0 else float("inf")
            eta_text = f"{eta:.0f}s" if eta != float("inf") else "?"
            parts.append(f"{self.done}/{self.total} {100 * self.done / self.total:.0f}%")
            parts.append(f"{_rate(rate)} eta {eta_text}")
        else:
            parts.append(f"{self.done} {_rate(rate)}")
        parts.extend(f"{key}={_number(value)}" for key, value in self._totals.items())
        return " ".join(parts)

    def _write(self, now: float) -> None:
        line = self._line(now)
        if self._tty:
            self._stream.write("\r\x1b[2K" + line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Finish the line (on a terminal) so later output starts on a new one."""
        if self._tty:
            self._write(self._clock())
            self._stream.write("\n")
            self._stream.flush()
