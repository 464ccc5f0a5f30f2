"""Calibrate the simulator's cost model from timed requests to a real server.

Two measurements, each on prompts made unique so the prefix cache cannot help:

* **decode**: ``B`` concurrent requests of exactly ``T`` tokens
  (``ignore_eos``) take ``T - 1`` decode steps longer than ``B`` requests of
  one token; timing both for several ``B`` and fitting
  ``step(B) = step_base + per_seq x B`` by least squares gives the decode costs;
* **prefill**: one request of ``max_tokens=1`` with a long prompt against one
  with a short prompt; the difference over the extra prompt tokens is the cost
  per prefilled token, and the short request's time less one step is the fixed
  cost of a request (HTTP and API server), the simulator's request overhead.

Example:
    >>> fit = fit_decode({1: 0.06, 4: 0.075, 16: 0.135})
    >>> round(fit[0], 3), round(fit[1], 4)
    (0.055, 0.005)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import httpx
import numpy as np

from dynasor_agents.errors import InvalidInputError
from dynasor_bench.sim._cost import CostModel

__all__ = ["Calibration", "batch_seconds", "calibrate_engine", "fit_decode"]

_FILLER = "The quick brown fox jumps over the lazy dog. "


@dataclass(frozen=True)
class Calibration:
    """Measured costs of one server, and the cost model fitted to them.

    Attributes:
        cost: The fitted cost model.
        request_overhead: Seconds a request costs besides engine steps.
        decode_seconds: Per concurrency ``B``, the mean seconds per decode step.
        prefill_tokens_per_second: Measured prefill speed.
    """

    cost: CostModel
    request_overhead: float
    decode_seconds: Mapping[int, float]
    prefill_tokens_per_second: float


def fit_decode(step_seconds: Mapping[int, float]) -> tuple[float, float]:
    """Least-squares ``(step_base, per_seq)`` from seconds per decode step by batch size."""
    if len(step_seconds) < 2:
        raise InvalidInputError("fitting decode costs needs at least two batch sizes")
    batches = np.array(sorted(step_seconds), dtype=float)
    per_step = np.array([step_seconds[int(b)] for b in batches])
    slope, intercept = np.polyfit(batches, per_step, 1)
    return max(float(intercept), 1e-6), max(float(slope), 0.0)


async def _timed(
    http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int, sampling: dict[str, float]
) -> tuple[float, int]:
    """Seconds one request took, and its prompt tokens."""
    start = time.perf_counter()
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}
    reply = await http.post("/v1/completions", json=body | sampling)
    reply.raise_for_status()
    usage = reply.json()["usage"]
    if usage["completion_tokens"] != max_tokens:
        raise RuntimeError(
            f"calibration asked {max_tokens} tokens, the server gave {usage['completion_tokens']}"
        )
    return time.perf_counter() - start, int(usage["prompt_tokens"])


async def batch_seconds(
    http: httpx.AsyncClient,
    model: str,
    b: int,
    tokens: int,
    repeats: int,
    sampling: dict[str, float],
) -> float:
    """Fastest of ``repeats`` runs of ``b`` concurrent ``tokens``-token requests."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        calls = (_timed(http, model, _unique(8), tokens, sampling) for _ in range(b))
        await asyncio.gather(*calls)
        runs.append(time.perf_counter() - start)
    return min(runs)


def _unique(words: int) -> str:
    text = (_FILLER * (words // 9 + 1)).split()[:words]
    return uuid.uuid4().hex + " " + " ".join(text)


async def calibrate_engine(
    root_url: str,
    model: str,
    *,
    base: CostModel,
    batches: Sequence[int] = (1, 4, 8, 16, 32),
    tokens: int = 48,
    long_prompt_words: int = 600,
    repeats: int = 2,
    temperature: float = 0.0,
    top_p: float = 1.0,
    api_key: str = "EMPTY",
    transport: httpx.AsyncBaseTransport | None = None,
) -> Calibration:
    """Time requests against the server at ``root_url`` and fit ``base``'s costs.

    Args:
        root_url: ``http://host:port`` of a warmed-up, otherwise idle server.
        model: The served model name.
        base: The cost model whose time costs are replaced (limits are kept).
        batches: Concurrencies ``B`` to time decode at.
        tokens: Tokens each decode request generates.
        long_prompt_words: Words of the long prompt of the prefill measurement.
        repeats: Runs per measurement (the fastest is kept: noise only adds).
        temperature: Sampling temperature, as the workload samples: on a CPU
            the sampler (top-p sorts the vocabulary) is much of a step.
        top_p: Nucleus sampling, likewise.
        api_key: The server's key.
        transport: HTTP transport (tests pass a mock).

    Raises:
        RuntimeError: The server did not generate exactly the tokens asked.
        httpx.HTTPStatusError: The server refused a request.
    """
    headers = {"Authorization": f"Bearer {api_key}"}
    sampling = {"temperature": temperature, "top_p": top_p}
    async with httpx.AsyncClient(
        base_url=root_url, headers=headers, timeout=600, transport=transport
    ) as http:
        short, short_tokens = min(
            [await _timed(http, model, _unique(8), 1, sampling) for _ in range(repeats)]
        )
        long, long_tokens = min(
            [
                await _timed(http, model, _unique(long_prompt_words), 1, sampling)
                for _ in range(repeats)
            ]
        )
        decode: dict[int, float] = {}
        for b in batches:
            # B requests of 1 token against B of ``tokens``: the difference is
            # ``tokens - 1`` decode steps of B sequences, overheads cancelled.
            one = await batch_seconds(http, model, b, 1, repeats, sampling)
            full = await batch_seconds(http, model, b, tokens, repeats, sampling)
            if full <= one:
                raise RuntimeError(
                    f"decoding {tokens} tokens x {b} took no longer than 1 token x {b} "
                    f"({full:.3f} s vs {one:.3f} s): is the server busy? raise tokens"
                )
            decode[b] = (full - one) / (tokens - 1)
    step_base, per_seq = fit_decode(decode)
    per_prefill = max(long - short, 0.0) / max(1, long_tokens - short_tokens)
    overhead = max(short - step_base - per_seq, 0.0)
    cost = replace(base, step_base=step_base, per_seq=per_seq, per_prefill_token=per_prefill)
    return Calibration(
        cost=cost,
        request_overhead=overhead,
        decode_seconds=decode,
        prefill_tokens_per_second=1.0 / per_prefill if per_prefill > 0 else float("inf"),
    )
