"""A real HTTP server on 127.0.0.1 that plays an LLM provider, misbehaviour included.

chatrelay's HTTP client, SSE decoder, timeouts, retries and cancellation are only
proven by real sockets: a mocked transport can't stall, drop a connection half-way,
or notice that the client hung up. This server streams scripted bodies piece by
piece (chunked transfer encoding, one write per piece, TCP_NODELAY as aiohttp sets
it) and records every request and every client disconnect.

Usage::

    async with FakeLLMServer() as server:
        server.enqueue(error_response(429, "slow down", retry_after=1))
        server.enqueue(sse_response(chat_stream(["Hel", "lo"])), path="chat/completions")
        ...  # point the client at server.base_url
        await server.wait_disconnect(timeout=2)

Stress replies (``tests.fakes.streams.stress_streams()``: mentions cut at every
position, code fences, a 5,000-character line, a 50 KB reply) are served with
``stress_response(stream)``; ``server.requests[i].text`` (or ``server.texts``) is then
the exact reply the model wrote, for a checker to compare with the platform's text.

A conftest can wrap it as a fixture::

    @pytest.fixture
    async def llm_server() -> AsyncIterator[FakeLLMServer]:
        async with FakeLLMServer() as server:
            yield server
"""

from tests.fakes.llm_server.records import Outcome, RecordedRequest
from tests.fakes.llm_server.responses import (
    FakeResponse,
    ResponseSource,
    default_responses,
    error_response,
    sse_response,
    stress_response,
)
from tests.fakes.llm_server.server import FakeLLMServer

__all__ = [
    "FakeLLMServer",
    "FakeResponse",
    "Outcome",
    "RecordedRequest",
    "ResponseSource",
    "default_responses",
    "error_response",
    "sse_response",
    "stress_response",
]
