"""Decode throughput of one model per dtype, measured side by side on this machine.

Each round starts vLLM with the model in one dtype (rounds alternate the dtypes,
so drift on a shared machine hits both), warms it up, then for each concurrency
``B`` times ``B`` concurrent requests of exactly ``tokens`` tokens
(``ignore_eos``, unique prompts so the prefix cache cannot help, the workload's
sampling) and records ``B x tokens / seconds``. The report gives, per dtype and
concurrency, the mean over rounds and the spread (min-max), and the ratio of
the two dtypes' means.

Example:
    >>> speeds = DtypeSpeeds({"float32": {8: [50.0, 54.0]}, "bfloat16": {8: [25.0, 27.0]}})
    >>> speeds.mean("float32", 8), speeds.best(8)
    (52.0, 'float32')
    >>> print(render_speeds(speeds))
    | streams | float32 tokens/s | bfloat16 tokens/s | float32 / bfloat16 |
    |---|---|---|---|
    | 8 | 52.0 (50.0-54.0) | 26.0 (25.0-27.0) | 2.00x |
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dynasor_agents import InvalidInputError
from dynasor_agents.server import VLLMServer
from dynasor_bench.sim import batch_seconds

__all__ = ["DtypeSpeeds", "measure_dtypes", "render_speeds"]


@dataclass
class DtypeSpeeds:
    """Measured decode throughput: per dtype, per concurrency, one value per round.

    Attributes:
        runs: ``runs[dtype][streams]`` holds tokens/s of each round.
    """

    runs: dict[str, dict[int, list[float]]] = field(default_factory=dict)

    @property
    def dtypes(self) -> list[str]:
        """The dtypes measured, in the order first measured."""
        return list(self.runs)

    @property
    def streams(self) -> list[int]:
        """The concurrencies measured."""
        return sorted({b for per in self.runs.values() for b in per})

    def mean(self, dtype: str, streams: int) -> float:
        """Mean tokens/s of ``dtype`` at ``streams`` over the rounds."""
        values = self.runs[dtype][streams]
        return sum(values) / len(values)

    def best(self, streams: int) -> str:
        """The faster dtype at ``streams``."""
        return max(self.dtypes, key=lambda d: self.mean(d, streams))

    def overall(self) -> dict[str, float]:
        """Per dtype, the mean tokens/s over the concurrencies of 8 streams or more
        (how reasoning programs load an engine), else over all of them."""
        loaded = [b for b in self.streams if b >= 8] or self.streams
        return {d: sum(self.mean(d, b) for b in loaded) / len(loaded) for d in self.dtypes}


def render_speeds(speeds: DtypeSpeeds) -> str:
    """The side-by-side table (markdown)."""
    dtypes = speeds.dtypes
    head = " | ".join(f"{d} tokens/s" for d in dtypes)
    ratio = f" | {dtypes[0]} / {dtypes[1]} |" if len(dtypes) == 2 else " |"
    lines = [f"| streams | {head}{ratio}", "|---" * (len(dtypes) + 1 + (len(dtypes) == 2)) + "|"]
    for b in speeds.streams:
        cells = []
        for d in dtypes:
            values = speeds.runs[d][b]
            cells.append(f"{speeds.mean(d, b):.1f} ({min(values):.1f}-{max(values):.1f})")
        tail = ""
        if len(dtypes) == 2:
            tail = f" | {speeds.mean(dtypes[0], b) / speeds.mean(dtypes[1], b):.2f}x"
        lines.append(f"| {b} | {' | '.join(cells)}{tail} |")
    return "\n".join(lines)


async def _measure(
    root_url: str,
    model: str,
    streams: Sequence[int],
    tokens: int,
    sampling: Mapping[str, float],
) -> dict[int, float]:
    async with httpx.AsyncClient(base_url=root_url, timeout=600) as http:
        await batch_seconds(http, model, 2, 8, 1, dict(sampling))  # warm-up
        out = {}
        for b in streams:
            seconds = await batch_seconds(http, model, b, tokens, 1, dict(sampling))
            out[b] = b * tokens / seconds
        return out


def measure_dtypes(
    model_dir: str | Path,
    *,
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    streams: Sequence[int] = (1, 8, 16),
    tokens: int = 64,
    rounds: int = 2,
    temperature: float = 0.7,
    top_p: float = 0.95,
    startup_timeout: float = 300.0,
    say: Callable[[str], None] = print,
) -> DtypeSpeeds:
    """Measure decode throughput of the model in ``model_dir`` per dtype.

    Args:
        model_dir: A converted checkpoint (``ensure_checkpoint``).
        dtypes: The dtypes to compare, in the order of the first round.
        streams: Concurrencies to time.
        tokens: Tokens each request generates.
        rounds: Rounds per dtype; each round starts a fresh server.
        temperature: Sampling temperature (on a CPU the sampler is much of a step).
        top_p: Nucleus sampling, likewise.
        startup_timeout: Seconds to wait for each server.
        say: Progress lines.

    Raises:
        InvalidInputError: Bad arguments.
        ServerStartError: A server did not start.
    """
    if rounds < 1 or tokens < 2 or not streams or not dtypes:
        raise InvalidInputError("measure_dtypes needs rounds >= 1, tokens >= 2, streams, dtypes")
    speeds = DtypeSpeeds({d: {b: [] for b in streams} for d in dtypes})
    limit = str(max(streams))
    for r in range(rounds):
        order = list(dtypes) if r % 2 == 0 else list(reversed(dtypes))
        for dtype in order:
            server = VLLMServer(
                model_dir,
                served_model_name="bench",
                extra_args=[
                    "--dtype",
                    dtype,
                    "--max-model-len",
                    "1024",
                    "--max-num-seqs",
                    limit,
                ],
                middleware=False,
            )
            say(f"[engine] round {r + 1}/{rounds}: starting vLLM in {dtype}")
            started = time.monotonic()
            with server.start(timeout=startup_timeout):
                say(f"[engine] {dtype} ready in {time.monotonic() - started:.0f} s; timing")
                sampling = {"temperature": temperature, "top_p": top_p}
                measured = asyncio.run(
                    _measure(server.root_url, "bench", streams, tokens, sampling)
                )
            for b, value in measured.items():
                speeds.runs[dtype][b].append(value)
            say(
                f"[engine] {dtype}: "
                + ", ".join(f"{b} streams {v:.1f} tokens/s" for b, v in measured.items())
            )
    return speeds
