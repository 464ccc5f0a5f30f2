#!/usr/bin/env bash
# Overhead benchmark: start plain vLLM and vLLM with the Dynasor component side by
# side, send both the same workload (throughput rounds, then one-token latency
# pairs), print the table and the verdicts (throughput ratio >= 0.98, added median
# latency <= 2 ms). Takes about 5-10 minutes on 2 CPU cores.
# Extra arguments go to the module (e.g. --rounds 8 --json bench.json --check).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m dynasor_bench.overhead "$@"
