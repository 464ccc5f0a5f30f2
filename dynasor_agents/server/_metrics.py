"""Prometheus metrics of the server component, served on vLLM's own ``/metrics``.

vLLM exposes ``prometheus_client``'s default registry on ``/metrics`` (in a
single API-server process), so the component registers one collector there.
Gauges are computed from the program table when scraped; counters are plain
integers the middleware bumps.

=======================================  ==========================================
metric                                   meaning
=======================================  ==========================================
``dynasor_programs{state}``              programs in the table, by lifecycle state
``dynasor_programs_expired_total``       programs freed after their TTL
``dynasor_program_tokens{state,kind}``   prompt/completion tokens of the programs
                                         in the table, by state
``dynasor_tokens_total{kind}``           tokens of every program request served
``dynasor_requests_total``               program requests admitted
``dynasor_requests_aborted_total``       in-flight requests aborted by a stop
``dynasor_requests_rejected_total{code}``  requests refused, by error code
``dynasor_hints_total{source,field}``    hints received (header or endpoint)
``dynasor_scheduling_policy{policy}``    1 for the program scheduling in use
=======================================  ==========================================

Example:
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> from dynasor_agents.server._table import ProgramTable
    >>> table = ProgramTable()
    >>> _ = table.get_or_create("p1")
    >>> metrics = ServerMetrics(table, "dynasor", registry=CollectorRegistry())
    >>> metrics.hints("header", ["certainty"])
    >>> text = generate_latest(metrics.registry).decode()
    >>> 'dynasor_programs{state="active"} 1.0' in text
    True
    >>> 'dynasor_hints_total{field="certainty",source="header"} 1.0' in text
    True
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dynasor_agents.protocol import Lifecycle
from dynasor_agents.server._table import ProgramTable

__all__ = ["ServerMetrics", "engine_queue"]

logger = logging.getLogger("dynasor_agents.server")

_STATES = [s.name.lower() for s in Lifecycle if s is not Lifecycle.EXPIRED]


class ServerMetrics(Collector):
    """The component's counters, and a collector that reports them with the table.

    Args:
        table: The program table to report on.
        policy: Name of the program scheduling policy in use.
        registry: Where to register (``prometheus_client``'s default registry,
            which vLLM serves on ``/metrics``, unless given).
    """

    def __init__(
        self, table: ProgramTable, policy: str, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.table = table
        self.policy = policy
        self.registry = registry if registry is not None else REGISTRY
        self.requests = 0
        self.aborted = 0
        self.rejected: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()
        self._hints: Counter[tuple[str, str]] = Counter()
        try:
            self.registry.register(self)
        except ValueError:  # a second component in one process: first one reports
            logger.warning("dynasor metrics already registered; this instance is not exported")

    # -- what the middleware reports ----------------------------------------------

    def hints(self, source: str, fields: Iterable[str]) -> None:
        """Count hints received from ``source`` (``header`` or ``endpoint``)."""
        for name in fields:
            self._hints[(source, name)] += 1

    def admitted(self) -> None:
        """Count one admitted program request."""
        self.requests += 1

    def rejected_with(self, code: str) -> None:
        """Count one refused request by error code."""
        self.rejected[code] += 1

    def stop_aborted(self, count: int) -> None:
        """Count in-flight requests a stop aborted."""
        self.aborted += count

    def used(self, prompt: int, completion: int) -> None:
        """Count the tokens one request used."""
        self.tokens["prompt"] += prompt
        self.tokens["completion"] += completion

    # -- prometheus ------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        """The metric names (so a second registration is detected as a duplicate)."""
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        """Produce every metric from the counters and the table."""
        programs = GaugeMetricFamily(
            "dynasor_programs", "Programs in the table, by lifecycle state", labels=["state"]
        )
        tokens = GaugeMetricFamily(
            "dynasor_program_tokens",
            "Tokens used by the programs in the table, by state",
            labels=["state", "kind"],
        )
        by_state: Counter[str] = Counter()
        used: Counter[tuple[str, str]] = Counter()
        for record in self.table:
            state = record.state.name.lower()
            by_state[state] += 1
            used[(state, "prompt")] += record.prompt_tokens
            used[(state, "completion")] += record.completion_tokens
        for state in _STATES:
            programs.add_metric([state], by_state[state])
            for kind in ("prompt", "completion"):
                tokens.add_metric([state, kind], used[(state, kind)])
        yield programs
        yield tokens
        yield CounterMetricFamily(
            "dynasor_programs_expired", "Programs freed after their TTL", value=self.table.expired
        )
        total = CounterMetricFamily(
            "dynasor_tokens", "Tokens of every program request served", labels=["kind"]
        )
        for kind in ("prompt", "completion"):
            total.add_metric([kind], self.tokens[kind])
        yield total
        yield CounterMetricFamily(
            "dynasor_requests", "Program requests admitted", value=self.requests
        )
        yield CounterMetricFamily(
            "dynasor_requests_aborted", "In-flight requests aborted by a stop", value=self.aborted
        )
        rejected = CounterMetricFamily(
            "dynasor_requests_rejected", "Program requests refused, by code", labels=["code"]
        )
        for code, count in sorted(self.rejected.items()):
            rejected.add_metric([code], count)
        yield rejected
        hints = CounterMetricFamily(
            "dynasor_hints", "Hints received, by source and field", labels=["source", "field"]
        )
        for (source, name), count in sorted(self._hints.items()):
            hints.add_metric([source, name], count)
        yield hints
        policy = GaugeMetricFamily(
            "dynasor_scheduling_policy", "Program scheduling policy in use", labels=["policy"]
        )
        policy.add_metric([self.policy], 1)
        yield policy


_WAITING = "vllm:num_requests_waiting"
_RUNNING = "vllm:num_requests_running"


def engine_queue(registry: CollectorRegistry) -> tuple[int | None, int | None]:
    """vLLM's waiting and running request counts, from its gauges in ``registry``.

    vLLM's API server keeps its engine's scheduler gauges in the process's
    default registry (vLLM's own load reports read them the same way). Each is
    summed over engines; ``None`` when the registry has no such gauge (a server
    that is not vLLM, or one not yet started).

    Example:
        >>> from prometheus_client import Gauge
        >>> registry = CollectorRegistry()
        >>> waiting = Gauge(_WAITING, "waiting", ["engine"], registry=registry)
        >>> waiting.labels(engine="0").set(3)
        >>> waiting.labels(engine="1").set(2)
        >>> engine_queue(registry)
        (5, None)
    """
    found: dict[str, float] = {}
    for metric in registry.collect():
        if metric.name in (_WAITING, _RUNNING):
            found[metric.name] = sum(s.value for s in metric.samples if s.name == metric.name)
    waiting, running = found.get(_WAITING), found.get(_RUNNING)
    return (
        None if waiting is None else round(waiting),
        None if running is None else round(running),
    )
