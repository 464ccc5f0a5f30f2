"""Session fixture: one real CPU vLLM with the Dynasor component for all integration tests.

Set ``DYNASOR_TEST_BASE_URL`` (e.g. ``http://127.0.0.1:8000/v1``) to reuse a running
server instead (``DYNASOR_TEST_MODEL`` names its served model, default ``smollm2``).
``DYNASOR_TEST_STARTUP_TIMEOUT`` bounds start-up (seconds, default 300).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from dynasor_agents.server import VLLMServer, ensure_checkpoint


@dataclass(frozen=True)
class Backend:
    """Where the integration tests send requests."""

    base_url: str
    model: str

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration_tests" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def vllm() -> Iterator[Backend]:
    """The real vLLM server (started once, always stopped)."""
    url = os.environ.get("DYNASOR_TEST_BASE_URL")
    if url:
        yield Backend(url.rstrip("/"), os.environ.get("DYNASOR_TEST_MODEL", "smollm2"))
        return
    server = VLLMServer(
        ensure_checkpoint(),
        served_model_name="smollm2",
        extra_args=["--max-model-len", "2048", "--max-num-seqs", "8"],
    )
    timeout = float(os.environ.get("DYNASOR_TEST_STARTUP_TIMEOUT", "300"))
    server.start(timeout=timeout)
    try:
        yield Backend(server.base_url, "smollm2")
    finally:
        server.stop()
