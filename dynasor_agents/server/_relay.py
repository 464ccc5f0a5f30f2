"""Relay one generation request between the client and vLLM, watching both ways.

Inbound, :meth:`Relay.receive` passes the request through until the program is
stopped; then it answers ``http.disconnect``, which vLLM's handlers (and
Starlette's streaming responses) take as the client having gone: the request is
aborted inside the engine. Outbound, :meth:`Relay.send` forwards the response
unchanged while reading the token usage it reports, from a JSON body or from
server-sent events; when the component asked vLLM for a stream's usage on the
client's behalf, the usage event is read and then dropped, so the client gets
exactly the stream it asked for. After an abort it holds back whatever vLLM still sends, so
:meth:`Relay.finish_aborted` can give the client a clear error instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any, cast

from starlette.types import Message, Receive, Send

from dynasor_agents.server._rewrite import is_usage_only_event

__all__ = ["Relay", "send_json"]

_DISCONNECT: Message = {"type": "http.disconnect"}


async def send_json(
    send: Send,
    status: int,
    body: Any,
    *,
    retry: bool = True,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a complete JSON response; ``retry=False`` tells OpenAI clients not to retry."""
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *headers,
    ]
    if not retry:
        headers.append((b"x-should-retry", b"false"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})


class Relay:
    """Wraps ``receive`` and ``send`` of one request.

    Args:
        receive: The server's receive callable.
        send: The server's send callable.
        aborted: Set to abort the request.
        strip_usage: Drop the stream's usage-only event (the client did not ask
            for it).
    """

    def __init__(
        self, receive: Receive, send: Send, aborted: asyncio.Event, *, strip_usage: bool = False
    ) -> None:
        self._receive = receive
        self._send = send
        self._aborted = aborted
        self._pending: asyncio.Future[Any] | None = None
        self.response_started = False
        self.response_complete = False
        self.streaming = False
        self.status = 0
        self._json_chunks: list[bytes] = []
        self._sse_tail = b""
        self._strip_usage = strip_usage
        self._out_tail = b""
        self.usage_seen = False
        self.prompt_tokens = 0
        self.completion_tokens = 0

    async def receive(self) -> Message:
        """Next inbound message; ``http.disconnect`` once the program is stopped."""
        if self._aborted.is_set():
            return _DISCONNECT
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.ensure_future(self._receive())
        stop: asyncio.Future[object] = asyncio.ensure_future(self._aborted.wait())
        try:
            # If this call is cancelled, the pending receive survives for the next
            # call, so no inbound message is ever lost.
            await asyncio.wait({pending, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if pending.done():
            self._pending = None
            return cast(Message, pending.result())
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        """Forward an outbound message, reading usage; swallowed after an abort."""
        if self._aborted.is_set() and not self.response_complete:
            return
        kind = message["type"]
        if kind == "http.response.start":
            self.response_started = True
            self.status = int(message["status"])
            for name, value in message.get("headers", ()):
                if name.lower() == b"content-type":
                    self.streaming = value.startswith(b"text/event-stream")
        elif kind == "http.response.body":
            body = message.get("body", b"")
            self._observe(body)
            more = message.get("more_body", False)
            if not more:
                self.response_complete = True
                self._finish_json()
            if self._strip_usage and self.streaming and self.status == 200:
                message = {**message, "body": self._without_usage(body, final=not more)}
        await self._send(message)

    def _without_usage(self, body: bytes, *, final: bool) -> bytes:
        """``body`` minus usage-only events (whole events are held until complete)."""
        *events, self._out_tail = (self._out_tail + body).split(b"\n\n")
        kept = b"".join(e + b"\n\n" for e in events if not is_usage_only_event(e))
        if final:
            kept, self._out_tail = kept + self._out_tail, b""
        return kept

    async def finish_aborted(self, error: dict[str, Any], status: int) -> None:
        """End an aborted request's response with ``error``, whatever was sent so far."""
        if self.response_complete:
            return
        self.response_complete = True
        if not self.response_started:
            await send_json(self._send, status, error, retry=False)
        elif self.streaming:
            event = b"data: " + json.dumps(error).encode() + b"\n\ndata: [DONE]\n\n"
            await self._send({"type": "http.response.body", "body": event})
        else:
            await self._send({"type": "http.response.body", "body": b""})

    def close(self) -> None:
        """Drop the pending inbound read, if any."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    # -- usage accounting ---------------------------------------------------------

    def _observe(self, body: bytes) -> None:
        if self.status != 200 or not body:
            return
        if not self.streaming:
            self._json_chunks.append(body)
            return
        data = self._sse_tail + body
        *events, self._sse_tail = data.split(b"\n\n")
        for event in events:
            if b'"usage":{' in event or b'"usage": {' in event:
                for line in event.split(b"\n"):
                    if line.startswith(b"data:"):
                        self._take_usage(line[5:].strip())

    def _finish_json(self) -> None:
        if self._json_chunks:
            self._take_usage(b"".join(self._json_chunks))
            self._json_chunks.clear()

    def _take_usage(self, raw: bytes) -> None:
        with contextlib.suppress(ValueError, TypeError):  # odd usage never breaks a response
            decoded = json.loads(raw)
            usage = decoded.get("usage") if isinstance(decoded, dict) else None
            if isinstance(usage, dict):
                # Usage is cumulative in every event that carries it: keep the latest.
                self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                self.completion_tokens = int(usage.get("completion_tokens") or 0)
                self.usage_seen = True
