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

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from core.llm.client import LLMClient, RetryPolicy, Timeouts
from core.llm.provider import Provider
from tests.fakes.streams import (
    Dialect,
    StressStream,
    anthropic_stream,
    chat_stream,
    responses_stream,
    split_events,
)

Outcome = Literal["pending", "completed", "client_disconnected", "cut", "stopped"]


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


@dataclass
class RecordedRequest:
    method: str
    path: str
    """As sent, e.g. ``/v1/chat/completions``."""
    route: str
    """Without the API prefix, e.g. ``chat/completions``; the key ``enqueue`` uses."""
    query: str
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with ``", "``."""
    body: bytes
    json: Any
    """The parsed body, or None when it is not JSON."""
    time: float
    """``time.monotonic()`` when the request arrived."""
    outcome: Outcome = "pending"
    ended_at: float | None = None
    """``time.monotonic()`` when the response ended, however it ended."""
    text: str | None = None
    """The full reply the model wrote in the response served (``FakeResponse.text``):
    what the platform should show in the end. None when the response didn't say."""


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


class _Signal:
    """Wakes every waiter on each change, so waits can re-check a condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self._event.wait()


class FakeLLMServer:
    def __init__(self, *, api_prefix: str = "/v1", shutdown_timeout: float = 1.0) -> None:
        self.api_prefix = "/" + api_prefix.strip("/") if api_prefix.strip("/") else ""
        self.requests: list[RecordedRequest] = []
        self.client_disconnects = 0
        """Responses that ended because the client went away before they were complete."""
        self.defaults: dict[str, FakeResponse] = default_responses()
        """Per route, used when no response is queued; edit freely."""
        self._queues: dict[str | None, deque[ResponseSource]] = {None: deque()}
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping = asyncio.Event()
        self._signal = _Signal()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("already started")
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: aiohttp cancels a handler when its client disconnects,
        # which is how a stalled or sleeping response learns the client is gone.
        runner = web.AppRunner(
            app,
            handler_cancellation=True,
            shutdown_timeout=self._shutdown_timeout,
            access_log=None,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Ends stalled and sleeping responses (closing their connections), then the server."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await runner.cleanup()
        self._port = None

    async def __aenter__(self) -> FakeLLMServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def texts(self) -> list[str | None]:
        """The model's full reply per request, in arrival order (None where the
        response didn't say): what each reply on the platform should end up showing."""
        return [r.text for r in self.requests]

    @property
    def base_url(self) -> str:
        """E.g. ``http://127.0.0.1:41234/v1``; the client appends ``/chat/completions``."""
        return f"http://127.0.0.1:{self.port}{self.api_prefix}"

    def client(self, model: str = "test-model") -> LLMClient:
        """chatrelay's real client for this server, with short timeouts and no
        retries, as the end-to-end tests use it (close it with ``aclose``)."""
        return LLMClient(
            [Provider(self.base_url, model, api_key="sk-test")],
            timeouts=Timeouts(connect=2, first_token=5, idle=5),
            retry=RetryPolicy(max_retries=0),
        )

    # ------------------------------------------------------------------ scripting

    def enqueue(self, *responses: ResponseSource, path: str | None = None) -> None:
        """Queue responses, first in first out, for one route or (``path=None``) any route.

        ``path`` may be ``"chat/completions"``, ``"/chat/completions"`` or the full
        ``"/v1/chat/completions"``. A route's own queue is served before the shared one.
        """
        key = None if path is None else self._route(path)
        self._queues.setdefault(key, deque()).extend(responses)

    def queued(self, path: str | None = None) -> int:
        """How many scripted responses are still waiting (to check a test used them all)."""
        if path is None:
            return sum(len(q) for q in self._queues.values())
        return len(self._queues.get(self._route(path), ()))

    def _route(self, path: str) -> str:
        if self.api_prefix and (path == self.api_prefix or path.startswith(self.api_prefix + "/")):
            path = path[len(self.api_prefix) :]
        return path.strip("/")

    def _next(self, request: RecordedRequest) -> FakeResponse:
        for key in (request.route, None):
            queue = self._queues.get(key)
            if queue:
                source = queue.popleft()
                return source(request) if callable(source) else source
        default = self.defaults.get(request.route)
        if default is not None:
            return default
        return error_response(404, f"no route {request.path}", error_type="not_found_error")

    # ------------------------------------------------------------------ observing

    # The waits take a defaulted ``timeout`` (hence ASYNC109) so that every wait in a
    # test is bounded without each call wrapping itself in asyncio.timeout.
    async def wait_requests(self, count: int = 1, timeout: float = 2.0) -> RecordedRequest:  # noqa: ASYNC109
        """The ``count``-th request (1-based), once it has arrived."""
        async with asyncio.timeout(timeout):
            await self._signal.wait_until(lambda: len(self.requests) >= count)
        return self.requests[count - 1]

    async def wait_disconnect(self, timeout: float = 2.0, count: int = 1) -> None:  # noqa: ASYNC109
        """Until ``client_disconnects`` reaches ``count``; raises ``TimeoutError`` otherwise.

        A total rather than "the next one", so a disconnect that happened before the
        call still counts."""
        async with asyncio.timeout(timeout):
            await self._signal.wait_until(lambda: self.client_disconnects >= count)

    async def wait_ended(self, request: RecordedRequest, timeout: float = 2.0) -> Outcome:  # noqa: ASYNC109
        """Until the response to ``request`` is over, however it ended."""
        async with asyncio.timeout(timeout):
            await self._signal.wait_until(lambda: request.outcome != "pending")
        return request.outcome

    def _end(self, request: RecordedRequest, outcome: Outcome) -> None:
        if request.outcome != "pending":
            return
        request.outcome = outcome
        request.ended_at = time.monotonic()
        if outcome == "client_disconnected":
            self.client_disconnects += 1
        self._signal.fire()

    # ------------------------------------------------------------------ serving

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            route=self._route(request.path),
            query=request.query_string,
            headers=headers,
            body=raw,
            json=parsed,
            time=time.monotonic(),
        )
        self.requests.append(record)
        self._signal.fire()
        spec = self._next(record)
        record.text = spec.text
        try:
            return await self._send(request, record, spec)
        except asyncio.CancelledError:
            # aiohttp cancels us when the peer goes away (or at the end of shutdown).
            self._end(record, "stopped" if self._stopping.is_set() else "client_disconnected")
            raise

    async def _send(
        self, request: web.Request, record: RecordedRequest, spec: FakeResponse
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=spec.status, headers=spec.headers)
        if "content-type" not in {name.lower() for name in spec.headers}:
            default = "text/event-stream" if 200 <= spec.status < 300 else "application/json"
            response.content_type = spec.content_type or default
        if spec.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(spec.body)
        try:
            if await self._sleep(spec.first_byte_delay):
                return self._abandon(request, record, response, "stopped")
            await response.prepare(request)
            pieces = [chunk for chunk in spec.chunks if chunk]
            for index in range(len(pieces) + 1):
                if index == spec.cut_after:
                    return self._abandon(request, record, response, "cut", reset=spec.reset)
                if index == spec.stall_after:
                    await self._stopping.wait()
                    return self._abandon(request, record, response, "stopped")
                if index == len(pieces):
                    break
                if index and await self._sleep(spec.chunk_delay):
                    return self._abandon(request, record, response, "stopped")
                await response.write(pieces[index])
            await response.write_eof()
        except ConnectionResetError:
            # A write found the peer gone before aiohttp cancelled us.
            self._end(record, "client_disconnected")
            return response
        self._end(record, "completed")
        return response

    async def _sleep(self, delay: float) -> bool:
        """Sleep, unless the server stops first; True when it is stopping."""
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
        return self._stopping.is_set()

    def _abandon(
        self,
        request: web.Request,
        record: RecordedRequest,
        response: web.StreamResponse,
        outcome: Outcome,
        *,
        reset: bool = False,
    ) -> web.StreamResponse:
        """Close the connection with the body unfinished (aiohttp's later write_eof fails
        quietly on the closed transport)."""
        self._end(record, outcome)
        transport = request.transport
        if transport is not None:
            if reset:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            else:
                transport.close()
        return response
