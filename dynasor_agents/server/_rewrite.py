"""Read and rewrite the JSON body of one generation request.

The component changes three things in a ``/v1/chat/completions`` or
``/v1/completions`` body, and nothing else:

* ``priority``: set by the program scheduling policy (vLLM's extension field);
* ``max_tokens`` / ``max_completion_tokens``: clamped to the program's budget;
* ``stream_options.include_usage``: turned on for streams whose client did not
  ask, so the server can count their tokens; the extra usage event is then
  removed from what the client receives (:func:`is_usage_only_event`).

A body that is not a JSON object passes through untouched: vLLM answers it
with its own validation error.

Example:
    >>> body = parse_body(b'{"prompt": "Hi", "max_tokens": 50, "n": 2, "stream": true}')
    >>> body.shape.max_tokens, body.shape.n, body.stream, body.client_wants_usage
    (50, 2, True, False)
    >>> body.set_max_tokens(20); body.set_priority(3); body.request_usage()
    >>> json.loads(body.encode())
    {'prompt': 'Hi', 'max_tokens': 20, 'n': 2, 'stream': True, 'priority': 3, \
'stream_options': {'include_usage': True}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from dynasor_agents.server._scheduling import RequestShape

__all__ = ["RequestBody", "is_usage_only_event", "parse_body"]

_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


@dataclass
class RequestBody:
    """A parsed request body and the changes made to it."""

    data: dict[str, Any]
    shape: RequestShape
    stream: bool
    client_wants_usage: bool
    changed: bool = field(default=False)

    def set_priority(self, priority: int) -> None:
        """Set vLLM's ``priority`` field (overriding the client's)."""
        if self.data.get("priority") != priority:
            self.data["priority"] = priority
            self.changed = True

    def set_max_tokens(self, cap: int) -> None:
        """Clamp every token limit the body sets to ``cap`` (set one if none).

        The :attr:`shape` follows, so a scheduling policy prices the request as
        it will run.
        """
        self.shape = replace(self.shape, max_tokens=cap)
        present = [f for f in _TOKEN_FIELDS if self.data.get(f) is not None]
        for name in present or ["max_tokens"]:
            if self.data.get(name) != cap:
                self.data[name] = cap
                self.changed = True

    def request_usage(self) -> None:
        """Ask vLLM to end a stream with a usage event, if the client did not."""
        if self.stream and not self.client_wants_usage:
            options = self.data.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True
            if options.get("continuous_usage_stats"):
                # It had no effect without include_usage: keep the chunks as asked.
                options["continuous_usage_stats"] = False
            self.data["stream_options"] = options
            self.changed = True

    @property
    def strip_usage(self) -> bool:
        """Whether the usage event must be removed before the client sees it."""
        return self.stream and not self.client_wants_usage

    def encode(self) -> bytes:
        """The body as JSON bytes."""
        return json.dumps(self.data, separators=(",", ":")).encode()


def parse_body(raw: bytes) -> RequestBody | None:
    """Parse a generation request body.

    Returns:
        ``None`` when it is not a JSON object or sets ``max_tokens``,
        ``max_completion_tokens`` or ``n`` to something other than a positive
        integer: vLLM refuses such a request itself, and the client should see
        vLLM's error, not a body the component changed.

    Example:
        >>> parse_body(b'{"max_tokens": 0}') is None, parse_body(b'{"n": "2"}') is None
        (True, True)
        >>> parse_body(b'{"max_tokens": 9, "max_completion_tokens": 7}').shape.max_tokens
        7
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    limits: list[int] = []
    for name in (*_TOKEN_FIELDS, "n"):
        value = data.get(name)
        if value is not None and _positive_int(value) is None:
            return None  # vLLM rejects it with its own message; leave the body alone
        if value is not None and name != "n":
            limits.append(value)
    n = _positive_int(data.get("n")) or 1
    options = data.get("stream_options")
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    return RequestBody(
        data=data,
        shape=RequestShape(max_tokens=min(limits) if limits else None, n=n),
        stream=data.get("stream") is True,
        client_wants_usage=wants_usage,
    )


def is_usage_only_event(event: bytes) -> bool:
    """Whether a server-sent event is vLLM's final usage chunk (no choices).

    Example:
        >>> is_usage_only_event(b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":3}}')
        True
        >>> is_usage_only_event(b'data: {"id":"x","choices":[{"text":"a"}]}')
        False
    """
    if b'"usage"' not in event or b'"choices":[]' not in event.replace(b" ", b""):
        return False
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            try:
                decoded = json.loads(line[5:])
            except ValueError:
                return False
            return (
                isinstance(decoded, dict)
                and decoded.get("choices") == []
                and isinstance(decoded.get("usage"), dict)
            )
    return False
