"""Run the async core from synchronous code: one event loop in a helper thread.

Strategies are written once, as coroutines. Their sync methods hand the
coroutine to a :class:`LoopThread`, a daemon thread owning one long-lived event
loop. Reusing one loop matters: HTTP clients (httpx, openai) keep pooled
connections bound to the loop that opened them, so a fresh ``asyncio.run`` per
call would hand a closed loop's connections to the next call.

Strategies share :func:`default_loop` unless given their own: langchain-openai
caches one async HTTP client per process, so every sync call that may reach the
same ``ChatOpenAI`` must run on the same loop. Mixing a strategy's sync and
async methods in one process therefore needs a model with its own async client.

Example:
    >>> import asyncio
    >>> runner = LoopThread()
    >>> async def double(x: int) -> int:
    ...     await asyncio.sleep(0)
    ...     return 2 * x
    >>> runner.run(double(21))
    42
    >>> async def count(n: int):
    ...     for i in range(n):
    ...         yield i
    >>> list(runner.iterate(count(3)))
    [0, 1, 2]
    >>> runner.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["LoopThread", "default_loop"]

T = TypeVar("T")


class LoopThread:
    """A daemon thread running one asyncio loop; started lazily, thread-safe."""

    def __init__(self, name: str = "dynasor-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and wait for its result.

        Raises:
            RuntimeError: Called from the loop thread itself (it would deadlock).
        """
        loop = self._ensure()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LoopThread.run called from its own loop; use the async method")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async iterator from sync code, one item per round trip."""

        async def step() -> tuple[bool, T | None]:
            try:
                return True, await agen.__anext__()
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self.run(step())
                if not more:
                    return
                yield item  # type: ignore[misc]
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(RuntimeError, concurrent.futures.CancelledError):
                    self.run(aclose())

    def close(self) -> None:
        """Stop the loop and join the thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


@functools.cache
def default_loop() -> LoopThread:
    """The process-wide loop thread that sync strategy methods use by default.

    One per process on purpose: see the module docstring (pooled connections of
    langchain-openai's shared client are bound to one loop).
    """
    return LoopThread(name="dynasor-sync")
