"""The fake LLM provider itself: a real HTTP server on 127.0.0.1 that answers each
request with the next scripted response (or its route's default), piece by piece,
and records how each response ended (completed, cut, stalled, client gone)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections import deque
from typing import Any

from aiohttp import web

from core.llm.client import LLMClient, RetryPolicy, Timeouts
from core.llm.provider import Provider
from tests.fakes.llm_server.records import Outcome, RecordedRequest
from tests.fakes.llm_server.responses import (
    FakeResponse,
    ResponseSource,
    default_responses,
    error_response,
)
from tests.fakes.server import FakeServer, Signal


class FakeLLMServer(FakeServer):
    """A fake LLM provider: serves scripted responses per route, records every request."""

    # aiohttp cancels a handler when its client disconnects, which is how a stalled or
    # sleeping response learns the client is gone.
    handler_cancellation = True
    not_started_error = "server not started"

    def __init__(self, *, api_prefix: str = "/v1", shutdown_timeout: float = 1.0) -> None:
        super().__init__(shutdown_timeout=shutdown_timeout)
        self.api_prefix = "/" + api_prefix.strip("/") if api_prefix.strip("/") else ""
        self.requests: list[RecordedRequest] = []
        self.client_disconnects = 0
        """Responses that ended because the client went away before they were complete."""
        self.defaults: dict[str, FakeResponse] = default_responses()
        """Per route, used when no response is queued; edit freely."""
        self._queues: dict[str | None, deque[ResponseSource]] = {None: deque()}
        self._stopping = asyncio.Event()
        self._signal = Signal()

    # ------------------------------------------------------------------ lifecycle

    def _build_app(self) -> web.Application:
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _on_stop(self) -> None:
        """Ends stalled and sleeping responses (closing their connections) before the
        server stops."""
        self._stopping.set()

    @property
    def texts(self) -> list[str | None]:
        """The model's full reply per request, in arrival order (None where the
        response didn't say): what each reply on the platform should end up showing."""
        return [r.text for r in self.requests]

    @property
    def base_url(self) -> str:
        """E.g. ``http://127.0.0.1:41234/v1``; the client appends ``/chat/completions``."""
        return f"{self.url}{self.api_prefix}"

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
