"""What an engine step costs, and the engine's limits: the simulator's cost model.

A step's time is ``step_base + per_seq x decoding + per_prefill_token x
prefilled + per_context_token x context``, under the limits ``max_num_seqs``,
``max_batched_tokens`` and ``kv_capacity``. Presets: :data:`CPU_QWEN_05B`
(placeholders, to be calibrated with :func:`~dynasor_bench.sim.calibrate_engine`)
and :data:`H100_8B` (its docstring shows the arithmetic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dynasor_agents import InvalidInputError

__all__ = ["CPU_QWEN_05B", "H100_8B", "CostModel"]


@dataclass(frozen=True)
class CostModel:
    """How long an engine step takes, and the engine's limits.

    ``step_time = step_base + per_seq * decode_seqs + per_prefill_token *
    prefill_tokens + per_context_token * context_tokens``.

    Attributes:
        name: Shown in reports.
        step_base: Seconds per step whatever it does (reading the weights); > 0.
        per_seq: Seconds per decoding sequence per step.
        per_prefill_token: Seconds per uncached prompt token prefilled.
        per_context_token: Seconds per token of KV context held by the decoding
            sequences, per step (attention reads it).
        max_num_seqs: Most requests running at once (vLLM ``--max-num-seqs``).
        max_batched_tokens: Tokens one step may process (``--max-num-batched-tokens``).
        kv_capacity: KV cache size in tokens (``None``: unlimited).
        prefix_caching: Whether a known prefix skips its prefill.

    Example:
        >>> round(H100_8B.step_time(decode_seqs=100, prefill_tokens=0, context_tokens=30_000), 5)
        0.01165
    """

    name: str
    step_base: float
    per_seq: float
    per_prefill_token: float
    per_context_token: float = 0.0
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    kv_capacity: int | None = None
    prefix_caching: bool = True

    def __post_init__(self) -> None:
        rates = ("step_base", "per_seq", "per_prefill_token", "per_context_token")
        problems = [
            f"{f} must be a finite number >= 0, got {getattr(self, f)!r}"
            for f in rates
            if not (isinstance(getattr(self, f), int | float) and 0 <= getattr(self, f) < math.inf)
        ]
        if not problems and not self.step_base > 0:
            problems.append(f"step_base must be > 0 (a step takes time), got {self.step_base!r}")
        if self.max_num_seqs < 1:
            problems.append(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_batched_tokens < self.max_num_seqs:
            problems.append(
                f"max_batched_tokens ({self.max_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}), as vLLM requires"
            )
        if self.kv_capacity is not None and self.kv_capacity < 1:
            problems.append(f"kv_capacity must be >= 1 or None, got {self.kv_capacity}")
        if problems or not self.name:
            raise InvalidInputError(
                f"cost model {self.name!r}: " + "; ".join(problems or ["no name"])
            )

    @property
    def request_limit(self) -> int:
        """Most prompt plus output tokens one request may have (one step, the KV cache)."""
        if self.kv_capacity is None:
            return self.max_batched_tokens
        return min(self.max_batched_tokens, self.kv_capacity)

    def step_time(self, decode_seqs: int, prefill_tokens: int, context_tokens: int) -> float:
        """Seconds one step takes.

        Args:
            decode_seqs: Requests that decode one token in the step.
            prefill_tokens: Uncached prompt tokens prefilled in the step.
            context_tokens: KV tokens the decoding requests attend to.

        Raises:
            InvalidInputError: A count is negative.
        """
        if min(decode_seqs, prefill_tokens, context_tokens) < 0:
            counts = (decode_seqs, prefill_tokens, context_tokens)
            raise InvalidInputError(f"step counts must be >= 0, got {counts}")
        return (
            self.step_base
            + self.per_seq * decode_seqs
            + self.per_prefill_token * prefill_tokens
            + self.per_context_token * context_tokens
        )


CPU_QWEN_05B = CostModel("cpu-qwen-0.5b", step_base=0.05, per_seq=0.004, per_prefill_token=4e-4)
"""Qwen2.5-0.5B on the tests' CPU vLLM server: placeholders until calibrated against
measured step times; no KV limit (the CPU cache is large for these short paths)."""

H100_8B = CostModel(
    "h100-8b",
    step_base=0.007,  # 16 GB of bf16 weights read per step: 16e9 / 2.4e12 = 6.7 ms
    per_seq=0.00003,  # sampling, scheduling and per-sequence activations: ~30 us
    per_prefill_token=0.00008,  # ~12k prompt tokens/s (2 x 8e9 FLOP/token = 16 GFLOP at ~20% MFU)
    per_context_token=5.5e-8,  # 131_072 bytes of KV / 2.4e12 bytes/s = 5.46e-8 s per token
    kv_capacity=457_763,  # ~60 GB free after weights and activations: 60e9 // 131_072
)
"""An 8B Llama-3-like model in bf16 on one H100 80 GB (decode is HBM-bandwidth bound).

Assumed: 2.4 TB/s effective bandwidth (~70% of 3.35 TB/s) and Llama-3-8B's
grouped-query attention (32 layers x 8 KV heads x 128 dims).

* ``step_base``: 16 GB of weights read per step: 16e9 / 2.4e12 = 6.7 ms, ~7 ms.
* ``per_context_token``: a token's KV is 32 x 8 x 128 x 2 (K, V) x 2 bytes =
  131,072 bytes, read per step: 131,072 / 2.4e12 = 5.46e-8 s, ~5.5e-8 (1.3e-8
  would need ~10 TB/s, or a 4x smaller cache).
* ``per_prefill_token``: 2 x 8e9 = 16 GFLOP per token, 1.6e-5 s at the 989
  TFLOPS bf16 peak; 8e-5 s (~12k tokens/s) assumes ~20% MFU (conservative).
* ``per_seq``: 30 us per running sequence (sampling, bookkeeping).
* ``kv_capacity``: 80 GB x 0.9 (vLLM's default utilization) minus 16 GB of
  weights and the activations leaves ~60 GB: 60e9 // 131,072 = 457,763 tokens.
* ``max_num_seqs`` 256 and ``max_batched_tokens`` 8192: vLLM's defaults.
"""
