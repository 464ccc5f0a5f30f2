#!/usr/bin/env bash
# The whole test suite: set up (once), then lint, types, the layering contracts
# (import-linter), unit tests, doctests and the integration tests, which start a
# real CPU vLLM once per session.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check dynasor_agents dynasor_bench tests cookbook integrations
# mypy reports type errors with exit 1 and crashes with exit 2; one fresh-clone run of
# 2026-12-03 crashed ("INTERNAL ERROR", mypy 2.4.1) and passed when run again, so a crash
# gets one more run, with its traceback; type errors fail at once.
mypy_status=0
.venv/bin/mypy || mypy_status=$?
if [ "$mypy_status" -eq 2 ]; then
  echo "[test] mypy crashed (exit 2); running it once more with --show-traceback" >&2
  .venv/bin/mypy --show-traceback
elif [ "$mypy_status" -ne 0 ]; then
  exit "$mypy_status"
fi
.venv/bin/lint-imports
exec .venv/bin/python -m pytest "$@"
