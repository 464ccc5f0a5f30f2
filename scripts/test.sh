#!/usr/bin/env bash
# The whole test suite: set up (once), then lint, types, the layering contracts
# (import-linter), unit tests, doctests and the integration tests, which start a
# real CPU vLLM once per session.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check dynasor_agents dynasor_bench tests cookbook integrations
.venv/bin/mypy
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
