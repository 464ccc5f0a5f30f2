"""Online serving under load: the real load generator, its results, and the report.

:func:`run_online` serves a workload to a running server; ``bench online``
measures the four systems, runs the simulator beside them and writes the report.
"""

from dynasor_bench.online._run import run_online

__all__ = ["run_online"]
