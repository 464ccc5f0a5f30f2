"""Engine throughput per dtype on this CPU, measured side by side (``bench engine``).

:func:`measure_dtypes` starts the model's vLLM once per dtype, in alternating
rounds, and times batches of fixed-length generations at several concurrencies;
the result can be saved beside the model, where the launcher's dtype choice
(:func:`dynasor_agents.server.engine_settings`) reads it.
"""

from dynasor_bench.engine._throughput import DtypeSpeeds, measure_dtypes, render_speeds

__all__ = ["DtypeSpeeds", "measure_dtypes", "render_speeds"]
