"""Sizing an online run from a cost model, and sweeping it in the simulator.

A rate means little on its own: what matters is the load, the arrival rate
over the rate the baseline can just sustain. :func:`capacity` estimates that
from a cost model (the engine's best token throughput over the baseline's
tokens per program); :func:`base_latency` is a strategy's latency on an idle
server, the ``base`` of every per-program deadline. Both take the bank's mean
path length and prompt, so the same code sizes the CPU runs and the GPU
projection. :func:`fixed_deadlines` gives the paper's form of deadline: one per
strategy, its median latency when it runs alone on an idle engine (simulated,
question by question over the bank).

:func:`sweep` simulates every system on the same workloads over a grid of
rates and seeds (and replicas, with a routing policy), for the validation
against measured runs and for the projection.

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
    >>> from dynasor_bench.traces._bank import PathTrace
    >>> q = QuestionTrace(id="q:1", source="toy", question="?", gold="4", prompt_tokens=10,
    ...                   paths=[PathTrace(text="", answer="4", completion_tokens=n)
    ...                          for n in (10, 20)])
    >>> mix = {"sc-2": (OnlineStrategy("sc-2", 2), 1.0)}
    >>> toy = CostModel("toy", step_base=1.0, per_seq=0.0, per_prefill_token=0.0)
    >>> fixed_deadlines([q], toy, mix, max_tokens=64)  # a 10- and a 20-token path
    {'sc-2': 20.0}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dynasor_agents import InvalidInputError, Progress
from dynasor_bench.sim._cost import CostModel
from dynasor_bench.sim._route import RoutingPolicy
from dynasor_bench.sim._simulate import simulate
from dynasor_bench.traces._bank import QuestionTrace
from dynasor_bench.workload._workload import (
    SYSTEMS,
    OnlineRow,
    OnlineStrategy,
    OnlineWorkload,
    ProgramSpec,
    SystemSpec,
    make_workload,
)

__all__ = [
    "BankShape",
    "base_latency",
    "bases",
    "capacity",
    "fixed_deadlines",
    "idle_latencies",
    "sweep",
]


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


def idle_latencies(
    questions: Sequence[QuestionTrace],
    cost: CostModel,
    strategy: OnlineStrategy,
    *,
    max_tokens: int,
    overhead: float = 0.0,
    seed: int = 0,
) -> list[float]:
    """``strategy``'s latency on every question, each program alone on an idle engine.

    The program runs as the baseline does (all its samples at once, no early
    stop, plain vLLM), its paths drawn as the simulator draws them for
    program ``i`` of ``seed``.
    """
    baseline = SYSTEMS[0]
    out = []
    for i, q in enumerate(questions):
        spec = ProgramSpec(i, 0.0, q, strategy, difficulty=1.0, base=1.0)
        workload = OnlineWorkload(rate=1.0, seed=seed, programs=(spec,))
        result = simulate(
            workload, baseline, cost, seed=seed, max_tokens=max_tokens, request_overhead=overhead
        )
        out.append(result.rows[0].latency)
    return out


def fixed_deadlines(
    questions: Sequence[QuestionTrace],
    cost: CostModel,
    mix: Mapping[str, tuple[OnlineStrategy, float]],
    *,
    max_tokens: int,
    overhead: float = 0.0,
    quantile: float = 0.5,
    seed: int = 0,
) -> dict[str, float]:
    """The paper's form of deadline: one per strategy, at SLO scale 1.

    The paper fixes one deadline per workload (240 s for self-consistency on
    MATH) and sweeps a scale on it. Here it is the ``quantile`` (default the
    median) of the strategy's :func:`idle_latencies` over the bank: at scale 1
    an idle server meets about half of them; a program still waits for its
    longest path, so the scale an idle server needs for 90% is the ratio of
    the idle latencies' 90th percentile to their median.

    Raises:
        InvalidInputError: No questions, or ``quantile`` outside (0, 1].
    """
    if not questions:
        raise InvalidInputError("fixed deadlines need at least one question")
    if not 0 < quantile <= 1:
        raise InvalidInputError(f"quantile must be in (0, 1], got {quantile!r}")
    return {
        name: float(
            np.quantile(
                idle_latencies(
                    questions, cost, strategy, max_tokens=max_tokens, overhead=overhead, seed=seed
                ),
                quantile,
            )
        )
        for name, (strategy, _) in mix.items()
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
    seed: int | Sequence[int],
    base: Mapping[str, float],
    mix: Mapping[str, tuple[OnlineStrategy, float]],
    max_tokens: int,
    overhead: float = 0.0,
    replicas: int = 1,
    routing: RoutingPolicy = "consistent_hash",
    fixed: Mapping[str, float] | None = None,
    label: str = "simulate",
) -> list[OnlineRow]:
    """Simulate every system on the workload of every rate and seed; all rows.

    The workload of a (rate, seed) is the one the real run gets (same seed,
    count, bases), so simulated and measured rows pair up program by program;
    every system gets the same programs, arrivals, paths and (for a seeded
    routing policy) replicas. Rows carry their seed.

    Args:
        seed: One seed or several (each a full workload per rate).
        fixed: Fixed deadlines per strategy (the paper's form), if any.
        routing: How programs spread over ``replicas``.
    """
    seeds = [seed] if isinstance(seed, int) else list(seed)
    bar = Progress(len(systems) * len(rates) * len(seeds), label)
    rows: list[OnlineRow] = []
    for s in seeds:
        for rate in rates:
            workload = make_workload(
                questions, rate=rate, count=count, seed=s, base=base, mix=mix, fixed=fixed
            )
            for system in systems:
                result = simulate(
                    workload,
                    system,
                    cost,
                    seed=s,
                    replicas=replicas,
                    max_tokens=max_tokens,
                    request_overhead=overhead,
                    routing=routing,
                )
                rows.extend(result.rows)
                bar.update(1)
    bar.close()
    return rows
