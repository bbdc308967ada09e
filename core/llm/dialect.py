"""The seam between the HTTP client and one provider's wire format.

A dialect knows how to phrase a request (path, headers, body) and how to read
its stream back into normalised events; the client knows everything about
HTTP, retries, timeouts and fallbacks, and nothing about any format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from core.llm.events import Event, StreamError
from core.llm.messages import ChatMessage
from core.llm.sse import SSEEvent


class StreamParser(Protocol):
    """Reads one response's SSE events. One parser per response: it holds the
    state of that stream (tool-call fragments, a pending finish, usage)."""

    @property
    def done(self) -> bool:
        """True once a terminal event (``Finish`` or ``StreamError``) was returned;
        later input is ignored."""
        ...

    def feed(self, event: SSEEvent) -> list[Event]:
        """Normalise one SSE event; usually zero or one events come back."""
        ...

    def feed_data(self, data: str | bytes) -> list[Event] | None:
        """The fast path for the hot events (text deltas): what ``feed`` would return
        for an event with this data (or these raw UTF-8 bytes) whatever the SSE
        event's type, or ``None`` when the data is not of the one or two shapes it
        decodes and ``feed`` must read it. Never a different answer than ``feed``.
        ``SSEDecoder.feed_to`` calls it with the bytes of a lone ``data:`` chunk."""
        ...

    def end(self) -> list[Event]:
        """The byte stream ended. Returns the terminal event if none was returned
        yet: a ``Finish`` when the stream said enough to be complete, otherwise a
        ``StreamError(kind="truncated")``."""
        ...


class Dialect(Protocol):
    """One provider API: OpenAI Chat Completions, Anthropic Messages, OpenAI Responses."""

    name: str
    path: str
    """Appended to the provider's base URL, e.g. ``/chat/completions``."""

    def headers(self, api_key: str | None) -> dict[str, str]:
        """Authentication and protocol headers (never logged)."""
        ...

    def body(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        extra: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The JSON request body, streaming on; ``extra`` is merged in last so
        users can set any provider-specific parameter."""
        ...

    def parser(self) -> StreamParser:
        """A fresh parser for one response."""
        ...

    def error(self, status: int, body: bytes, headers: Mapping[str, str]) -> StreamError:
        """Turn a non-2xx response into a ``StreamError`` with the provider's message."""
        ...
