"""The server the tests start runs with the engine settings chosen for this CPU."""

from __future__ import annotations

import re

import pytest

from dynasor_agents.server import engine_settings, ensure_checkpoint, is_cpu_build

from .conftest import Backend


def test_the_test_server_runs_the_dtype_chosen_for_this_cpu(vllm: Backend) -> None:
    if vllm.log is None:
        pytest.skip("the tests did not start this server (DYNASOR_TEST_BASE_URL)")
    if not is_cpu_build():
        pytest.skip("the dtype is chosen for CPU builds of vLLM only")
    chosen = engine_settings(ensure_checkpoint())
    log = vllm.log.read_text(encoding="utf-8", errors="replace")
    # vLLM logs its engine config once at start-up, e.g. "... dtype=torch.float32, ..."
    used = set(re.findall(r"dtype=torch\.(\w+)", log))
    assert used == {chosen.dtype}, f"chose {chosen.dtype} ({chosen.reason}), vLLM used {used}"
