"""Run vLLM's OpenAI server with the Dynasor component as a child process.

:class:`VLLMServer` runs the launch recipe of :func:`~dynasor_agents.server.vllm_command`
and :func:`~dynasor_agents.server.vllm_environment` as a child process on
127.0.0.1, waits until it answers, sends one warm-up request and always stops
the whole process group (vLLM forks an engine process). :func:`local_server`
does that for one job with a packaged model; :func:`free_port` finds a port.

Example:
    >>> server = VLLMServer("/models/smol", port=8011, served_model_name="smol")
    >>> server.base_url
    'http://127.0.0.1:8011/v1'
    >>> "--middleware" in server.command()
    True
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from dynasor_agents.server._config import ServerConfig
from dynasor_agents.server._recipe import (
    engine_settings,
    given_options,
    is_cpu_build,
    vllm_command,
    vllm_environment,
)

__all__ = ["ServerStartError", "VLLMServer", "free_port", "local_server"]


class ServerStartError(RuntimeError):
    """vLLM did not become ready; the message includes the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class VLLMServer:
    """A vLLM OpenAI-compatible server in a child process.

    Args:
        model: Model path or name.
        host: Interface to bind (loopback by default).
        port: Port (a free one when omitted).
        served_model_name: Name clients use (default: ``model``).
        extra_args: More vLLM flags, passed through as given; they win over
            the recipe's (see :func:`vllm_command`).
        middleware: Load the Dynasor component (``False``: plain vLLM, e.g. a
            baseline).
        config: The component's settings (default: :class:`ServerConfig` defaults).
        env: Extra environment variables (they win over everything else).
        log_path: Where vLLM's output goes (a temporary file by default).
        api_key: Key for the readiness check and the warm-up request (default:
            the first ``--api-key`` in ``extra_args``, if any).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        served_model_name: str | None = None,
        extra_args: Sequence[str] = (),
        middleware: bool = True,
        config: ServerConfig | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        api_key: str | None = None,
    ) -> None:
        self.model = str(model)
        self.host = host
        self.port = port or free_port()
        self.served_model_name = served_model_name or self.model
        self.extra_args = list(extra_args)
        self.middleware = middleware
        self.config = config or ServerConfig()
        self.env = dict(env or {})
        # A log of our own is removed by stop() (kept when start-up fails).
        self._own_log = log_path is None
        self.log_path = log_path or Path(tempfile.gettempdir()) / (
            f"vllm-{self.port}-{uuid.uuid4().hex[:8]}.log"
        )
        self.api_key = api_key or next(
            (v for v in given_options(self.extra_args).get("--api-key", []) if v), None
        )
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def root_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://host:port/v1``."""
        return self.root_url + "/v1"

    def command(self) -> list[str]:
        """The full command line (see :func:`vllm_command`).

        Raises:
            ValueError: ``extra_args`` conflict with the recipe.
        """
        return vllm_command(
            self.model,
            self.extra_args,
            config=self.config,
            middleware=self.middleware,
            host=self.host,
            port=self.port,
            served_model_name=self.served_model_name,
        )

    def _environment(self) -> dict[str, str]:
        env = vllm_environment(self.config, os.environ, middleware=self.middleware)
        env.update(self.env)
        return env

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def start(self, *, timeout: float = 300.0, warm_up: bool = True) -> VLLMServer:
        """Start vLLM and wait until it serves (then send one warm-up request).

        Raises:
            ServerStartError: It exited or did not answer within ``timeout`` s.
        """
        if self._process is not None:
            return self
        command = self.command()  # before opening the log: it may raise ValueError
        log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._environment(),
            start_new_session=True,  # its own process group, so stop() gets the engine too
        )
        log.close()
        try:
            self.wait_ready(timeout)
            if warm_up:
                self.complete("Hi", max_tokens=4)
        except BaseException:
            self.stop(keep_log=True)  # the error names the log
            raise
        return self

    def wait_ready(self, timeout: float) -> None:
        """Poll ``/health`` and ``/v1/models`` until both answer 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise ServerStartError(
                    f"vLLM exited with code {self._process.returncode} during start-up\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(self.root_url + "/health", timeout=2) as r:
                    if r.status == 200:
                        models = urllib.request.Request(
                            self.base_url + "/models", headers=self._headers()
                        )
                        with urllib.request.urlopen(models, timeout=2):
                            return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise ServerStartError(
            f"vLLM did not become ready on {self.root_url} within {timeout:.0f}s "
            f"(log: {self.log_path})\n" + self.log_tail()
        )

    def complete(self, prompt: str, *, max_tokens: int = 8) -> str:
        """Send one completion request (used as the warm-up); return its text."""
        body = json.dumps(
            {"model": self.served_model_name, "prompt": prompt, "max_tokens": max_tokens}
        ).encode()
        request = urllib.request.Request(
            self.base_url + "/completions",
            data=body,
            headers={"Content-Type": "application/json", **self._headers()},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            text: str = json.load(response)["choices"][0]["text"]
            return text

    def log_tail(self, lines: int = 40) -> str:
        """The last lines vLLM printed."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0, *, keep_log: bool = False) -> None:
        """Stop vLLM and its engine process (idempotent).

        Args:
            timeout: Seconds to wait after SIGTERM before SIGKILL.
            keep_log: Keep the temporary log file this server created (it is
                removed otherwise; a log path you gave is always kept).
        """
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                self._terminate(process, timeout)
        finally:
            if self._own_log and not keep_log:
                self.log_path.unlink(missing_ok=True)

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def local_server(
    model: str, *, served_model_name: str, timeout: float = 300.0, label: str = "dynasor"
) -> Iterator[str]:
    """Start vLLM with a packaged model on 127.0.0.1 for one job; yield its base URL.

    The demo and ``bench record`` use this when no ``--base-url`` is given.

    Args:
        model: A key of ``PACKAGED_MODELS`` (converted once if needed).
        served_model_name: The name requests use.
        timeout: Seconds to wait for the server to answer.
        label: Prefix of the progress lines.
    """
    from dynasor_agents.server._checkpoint import ensure_checkpoint

    server = VLLMServer(
        ensure_checkpoint(model=model),
        served_model_name=served_model_name,
        extra_args=["--max-model-len", "2048"],
    )
    print(f"[{label}] starting vLLM on {server.root_url} (log: {server.log_path})", flush=True)
    if is_cpu_build():
        engine = engine_settings(server.model)
        print(
            f"[{label}] CPU engine: {engine.dtype} ({engine.reason}), "
            f"KV cache {engine.kv_cache_gib} GiB",
            flush=True,
        )
    with server.start(timeout=timeout):
        print(f"[{label}] server ready", flush=True)
        yield server.base_url
