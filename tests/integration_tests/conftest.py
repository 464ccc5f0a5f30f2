"""Real CPU vLLM servers with the Dynasor component for the integration tests.

* ``vllm`` (session): the main server, started once, with two API keys (so
  ownership can be tested) and the default ``dynasor`` program scheduling.
  Set ``DYNASOR_TEST_BASE_URL`` (e.g. ``http://127.0.0.1:8000/v1``) to reuse a
  running server instead (``DYNASOR_TEST_MODEL`` names its served model,
  default ``smollm2``; ``DYNASOR_TEST_API_KEYS`` its two keys, comma-separated).
* ``servers`` (session): starts servers with other settings on demand (one
  scheduling policy each, ``--max-num-seqs 1`` so queues form) and keeps one
  running at a time, so the machine never runs more than two.

``DYNASOR_TEST_STARTUP_TIMEOUT`` bounds each start-up (seconds, default 300).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from dynasor_agents.server import ServerConfig, VLLMServer, ensure_checkpoint

KEYS = ("key-alice", "key-bob")


@dataclass(frozen=True)
class Backend:
    """Where the integration tests send requests."""

    base_url: str
    model: str
    api_key: str = "EMPTY"
    other_key: str | None = None
    log: Path | None = None  # the server's log, when the tests started it

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    @property
    def auth(self) -> dict[str, str]:
        """The ``Authorization`` header of ``api_key``."""
        return {"Authorization": f"Bearer {self.api_key}"}


def new_id(prefix: str) -> str:
    """A fresh program id starting with ``prefix``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def chat(vllm: Backend, **kwargs: Any) -> ChatOpenAI:
    """A ``ChatOpenAI`` on ``vllm`` with its API key and no client-side retries."""
    return ChatOpenAI(
        base_url=vllm.base_url,
        api_key=vllm.api_key,
        model=vllm.model,
        max_retries=0,
        **kwargs,
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration_tests" in str(item.path):
            item.add_marker(pytest.mark.integration)


def _timeout() -> float:
    return float(os.environ.get("DYNASOR_TEST_STARTUP_TIMEOUT", "300"))


@pytest.fixture(scope="session")
def vllm() -> Iterator[Backend]:
    """The main vLLM server (started once, always stopped)."""
    url = os.environ.get("DYNASOR_TEST_BASE_URL")
    if url:
        keys = os.environ.get("DYNASOR_TEST_API_KEYS", "EMPTY").split(",")
        model = os.environ.get("DYNASOR_TEST_MODEL", "smollm2")
        yield Backend(url.rstrip("/"), model, keys[0], keys[1] if len(keys) > 1 else None)
        return
    server = VLLMServer(
        ensure_checkpoint(),
        served_model_name="smollm2",
        extra_args=["--max-model-len", "2048", "--max-num-seqs", "8", "--api-key", *KEYS],
        api_key=KEYS[0],
    )
    server.start(timeout=_timeout())
    try:
        yield Backend(server.base_url, "smollm2", KEYS[0], KEYS[1], log=server.log_path)
    finally:
        server.stop()


class ServerPool:
    """Starts vLLM servers with given settings, one at a time (the last is kept)."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._server: VLLMServer | None = None

    def get(self, config: ServerConfig, extra_args: Sequence[str] = ()) -> Backend:
        """A running server with ``config`` and ``extra_args`` (restarted if they differ)."""
        key = (config, tuple(extra_args))
        if self._server is None or key != self._key:
            self.close()
            server = VLLMServer(
                ensure_checkpoint(),
                served_model_name="smollm2",
                extra_args=["--max-model-len", "1024", *extra_args],
                config=config,
            )
            server.start(timeout=_timeout())
            self._server, self._key = server, key
        return Backend(self._server.base_url, "smollm2")

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture(scope="session")
def servers() -> Iterator[ServerPool]:
    """Servers with other settings than the main one (always stopped)."""
    pool = ServerPool()
    try:
        yield pool
    finally:
        pool.close()
