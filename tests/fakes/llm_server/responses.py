"""Scripted responses: what the fake LLM server sends for one request, and the
builders for the usual ones (a provider's error, an SSE stream, a stress reply)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.llm_server.records import RecordedRequest
from tests.fakes.streams import (
    Dialect,
    StressStream,
    anthropic_stream,
    chat_stream,
    responses_stream,
    split_events,
)


@dataclass
class FakeResponse:
    """What the server sends for one request, and how badly."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    """Body pieces; each is written separately (empty pieces are skipped)."""
    chunk_delay: float = 0.0
    """Seconds between two pieces."""
    first_byte_delay: float = 0.0
    """Seconds before the status line and headers go out."""
    stall_after: int | None = None
    """After this many pieces, send nothing more but keep the connection open until the
    client goes away or the server stops. ``len(chunks)`` stalls before the end marker."""
    cut_after: int | None = None
    """After this many pieces, close the connection without ending the body."""
    reset: bool = False
    """Cut with a TCP RST instead of a FIN. The client may then lose pieces it had not read."""
    content_type: str | None = None
    """Default: ``text/event-stream`` for 2xx, ``application/json`` otherwise. A
    ``Content-Type`` in ``headers`` wins."""
    chunked: bool = True
    """False sends a ``Content-Length`` instead (error bodies usually come that way)."""
    text: str | None = None
    """The reply the model wrote in this stream, when the test knows it (set by
    ``stress_response``): copied to the request's record, for checkers."""

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


ResponseSource = FakeResponse | Callable[["RecordedRequest"], FakeResponse]
"""A fixed response, or one built from the request (to echo the model, say)."""


def error_response(
    status: int,
    message: str,
    retry_after: float | None = None,
    *,
    error_type: str | None = None,
    anthropic: bool = False,
    headers: dict[str, str] | None = None,
) -> FakeResponse:
    """An HTTP error before any stream, with the provider's JSON error body."""
    kind = error_type or _ERROR_TYPES.get(status, "api_error")
    payload: dict[str, Any]
    if anthropic:
        payload = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        payload = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    all_headers = dict(headers or {})
    if retry_after is not None:
        seconds = int(retry_after) if float(retry_after).is_integer() else retry_after
        all_headers["Retry-After"] = str(seconds)
    return FakeResponse(
        status=status,
        headers=all_headers,
        chunks=[json.dumps(payload).encode()],
        chunked=False,
    )


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "service_unavailable",
    529: "overloaded_error",
}


def sse_response(body: bytes, **kwargs: Any) -> FakeResponse:
    """A stream body sent one SSE event per write, as providers flush it."""
    return FakeResponse(chunks=split_events(body), **kwargs)


def stress_response(stream: StressStream, dialect: Dialect = "chat", **kwargs: Any) -> FakeResponse:
    """A stress reply served one model piece per SSE event, as providers flush them,
    with ``text`` set so the request's record tells a checker what the model wrote.
    ``kwargs`` go to ``FakeResponse`` (``chunk_delay``, ``stall_after``...)."""
    return sse_response(stream.body(dialect), text=stream.text, **kwargs)


def default_responses() -> dict[str, FakeResponse]:
    """A short valid stream per route, so a test only scripts what it cares about."""
    return {
        "chat/completions": sse_response(chat_stream(["Hello", ", world"])),
        "messages": sse_response(anthropic_stream(["Hello", ", world"])),
        "responses": sse_response(responses_stream(["Hello", ", world"])),
    }
