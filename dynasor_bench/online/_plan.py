"""Sizing an online run from a cost model, and sweeping it in the simulator.

A rate means little on its own: what matters is the load, the arrival rate
over the rate the baseline can just sustain. :func:`capacity` estimates that
from a cost model (the engine's best token throughput over the baseline's
tokens per program); :func:`base_latency` is a strategy's latency on an idle
server, the ``base`` of every deadline. Both take the bank's mean path length
and prompt, so the same code sizes the CPU runs and the GPU projection.

:func:`sweep` simulates every system on the same workloads over a grid of
rates (and replicas), for the validation against measured runs and for the
projection.

Example:
    >>> from dynasor_bench.sim._cost import CostModel
    >>> from dynasor_bench.workload._workload import OnlineStrategy
    >>> cost = CostModel("toy", step_base=0.01, per_seq=0.001, per_prefill_token=0.0001,
    ...                  max_num_seqs=64)
    >>> shape = BankShape(path_tokens=200.0, prompt_tokens=100.0)
    >>> round(base_latency(cost, shape, samples=8, overhead=0.0), 3)
    3.62
    >>> round(capacity(cost, shape, {"sc-8": (OnlineStrategy("sc-8", 8), 1.0)}), 4)
    0.5405
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dynasor_agents import Progress
from dynasor_bench.sim._cost import CostModel
from dynasor_bench.sim._simulate import simulate
from dynasor_bench.traces._bank import QuestionTrace
from dynasor_bench.workload._workload import (
    OnlineRow,
    OnlineStrategy,
    SystemSpec,
    make_workload,
)

__all__ = ["BankShape", "base_latency", "bases", "capacity", "sweep"]


@dataclass(frozen=True)
class BankShape:
    """A bank's mean completion tokens per path and prompt tokens per question."""

    path_tokens: float
    prompt_tokens: float

    @classmethod
    def of(cls, questions: Sequence[QuestionTrace]) -> BankShape:
        """Measure ``questions``."""
        paths = [p.completion_tokens for q in questions for p in q.paths]
        return cls(
            path_tokens=sum(paths) / max(1, len(paths)),
            prompt_tokens=sum(q.prompt_tokens for q in questions) / max(1, len(questions)),
        )


def base_latency(cost: CostModel, shape: BankShape, *, samples: int, overhead: float) -> float:
    """Idle-server seconds of a fixed ``samples``-path program of average paths.

    One prefill step for the prompt, then ``path_tokens`` decode steps of
    ``samples`` sequences holding (on average) the prompt plus half a path.
    """
    context = samples * (shape.prompt_tokens + shape.path_tokens / 2)
    prefill = cost.step_time(0, int(shape.prompt_tokens), 0)
    decode = shape.path_tokens * cost.step_time(samples, 0, int(context))
    return overhead + prefill + decode


def bases(
    cost: CostModel,
    shape: BankShape,
    mix: Mapping[str, tuple[OnlineStrategy, float]],
    *,
    overhead: float,
) -> dict[str, float]:
    """:func:`base_latency` of every strategy of ``mix``."""
    return {
        name: base_latency(cost, shape, samples=s.samples, overhead=overhead)
        for name, (s, _) in mix.items()
    }


def capacity(
    cost: CostModel, shape: BankShape, mix: Mapping[str, tuple[OnlineStrategy, float]]
) -> float:
    """Programs per second the engine sustains at best with fixed sample counts.

    Args:
        cost: The engine.
        shape: The bank's path and prompt lengths.
        mix: Strategy name to (strategy, share).
    """
    share = sum(w for _, w in mix.values())
    samples = sum(s.samples * w for s, w in mix.values()) / share
    batch = cost.max_num_seqs
    context = int(batch * (shape.prompt_tokens + shape.path_tokens / 2))
    if cost.kv_capacity is not None:
        context = min(context, cost.kv_capacity)
    tokens_per_second = batch / cost.step_time(batch, 0, context)
    return tokens_per_second / (samples * shape.path_tokens)


def sweep(
    questions: Sequence[QuestionTrace],
    systems: Sequence[SystemSpec],
    rates: Sequence[float],
    *,
    cost: CostModel,
    count: int,
    seed: int,
    base: Mapping[str, float],
    mix: Mapping[str, tuple[OnlineStrategy, float]],
    max_tokens: int,
    overhead: float = 0.0,
    replicas: int = 1,
    label: str = "simulate",
) -> list[OnlineRow]:
    """Simulate every system on the workload of every rate; all rows.

    The workload of a rate is the one the real run gets (same seed, count,
    bases), so simulated and measured rows pair up program by program.
    """
    bar = Progress(len(systems) * len(rates), label)
    rows: list[OnlineRow] = []
    for rate in rates:
        workload = make_workload(questions, rate=rate, count=count, seed=seed, base=base, mix=mix)
        for system in systems:
            result = simulate(
                workload,
                system,
                cost,
                seed=seed,
                replicas=replicas,
                max_tokens=max_tokens,
                request_overhead=overhead,
            )
            rows.extend(result.rows)
            bar.update(1)
    bar.close()
    return rows
