#!/usr/bin/env bash
# The main job: set up (once), start a local vLLM with the Dynasor component and
# compare Certaindex early-stop self-consistency with fixed-N on a few problems.
# Extra arguments go to `dynasor-agents demo` (e.g. --dataset ../shared/data/gsm8k.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dynasor-agents demo "$@"
