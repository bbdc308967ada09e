"""The model client reuses its connection after a normal reply, over real sockets.

A stream ends with ``[DONE]`` (or the dialect's last event) before HTTP's last,
empty chunk; the client reads that rest of the body, bounded in time and size,
so the connection goes back to the pool instead of being closed. A server that
keeps the body open after the stream's end, sends too much after it or cuts
the connection there never costs the reply more than the bound."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiohttp import web

import core.llm.client as client_module
from core.clock import MonotonicClock
from core.llm.client import BODY_END_BYTES, LLMClient, RetryPolicy, Timeouts
from core.llm.events import Event, Finish, TextDelta
from core.llm.messages import ChatMessage
from core.llm.provider import Provider
from core.reply.engine import Reply
from core.reply.pacing import IMMEDIATE
from tests.fakes.llm_server import FakeLLMServer, FakeResponse, sse_response
from tests.fakes.recording_sink import RecordingSink
from tests.fakes.streams import (
    anthropic_stream,
    chat_stream,
    responses_stream,
    split_bytes,
    split_events,
)

MESSAGES = [ChatMessage("user", "hi")]
PIECES = ["Hel", "lo, ", "wörld ", "🎉", "!"]
TEXT = "".join(PIECES)
STREAMS = {
    "chat": chat_stream(PIECES),
    "anthropic": anthropic_stream(PIECES),
    "responses": responses_stream(PIECES),
}
ROUTES = {"chat": "chat/completions", "anthropic": "messages", "responses": "responses"}


class CountingLLMServer(FakeLLMServer):
    """The fake LLM server, also noting which connection (the client's address and
    port) carried each request."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[Any] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        self.peers.append(transport.get_extra_info("peername") if transport else None)
        return await super()._handle(request)

    @property
    def connections(self) -> int:
        """Distinct connections the requests so far came on."""
        return len(set(self.peers))


@pytest.fixture
async def server() -> AsyncIterator[CountingLLMServer]:
    async with CountingLLMServer() as running:
        for api, body in STREAMS.items():  # what a request nothing is queued for gets
            running.defaults[ROUTES[api]] = sse_response(body)
        yield running


def client_for(server: FakeLLMServer, api: str = "chat", **timeouts: float) -> LLMClient:
    limits: dict[str, float] = {"connect": 2, "first_token": 5, "idle": 5, **timeouts}
    return LLMClient(
        [Provider(server.base_url, "m", api=api, api_key="sk-test")],
        timeouts=Timeouts(**limits),
        retry=RetryPolicy(max_retries=0),
    )


async def events_of(client: LLMClient) -> list[Event]:
    return [event async for event in client.stream(MESSAGES)]


def text_of(events: Sequence[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def assert_whole(events: Sequence[Event]) -> None:
    assert text_of(events) == TEXT
    assert isinstance(events[-1], Finish)


@pytest.mark.parametrize("path", ["fast", "httpx", "gzip"])
@pytest.mark.parametrize("api", ["chat", "anthropic", "responses"])
async def test_two_replies_in_a_row_share_one_connection(
    server: CountingLLMServer, api: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = STREAMS[api]
    if path == "httpx":  # the ordinary path: httpx reads every chunk
        monkeypatch.setattr(client_module, "FAST_PATH", False)
    for _ in range(2):
        if path == "gzip":
            response = FakeResponse(
                chunks=split_bytes(gzip.compress(body), 40), headers={"Content-Encoding": "gzip"}
            )
        else:
            response = sse_response(body)
        server.enqueue(response, path=ROUTES[api])
    client = client_for(server, api)
    try:
        first = await events_of(client)
        second = await events_of(client)
    finally:
        await client.aclose()
    assert first == second
    assert_whole(first)
    assert [r.outcome for r in server.requests] == ["completed", "completed"]
    assert server.client_disconnects == 0
    assert server.connections == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_stream_cut_anywhere_still_reuses_its_connection(
    server: CountingLLMServer, seed: int
) -> None:
    for _ in range(3):
        server.enqueue(FakeResponse(chunks=split_bytes(STREAMS["chat"], seed=seed)))
    client = client_for(server)
    try:
        for _ in range(3):
            assert_whole(await events_of(client))
    finally:
        await client.aclose()
    assert server.connections == 1


async def test_replies_through_the_engine_share_one_connection(
    server: CountingLLMServer,
) -> None:
    client = client_for(server)
    try:
        for _ in range(3):
            sink = RecordingSink(MonotonicClock(), append_only=True)
            result = await Reply(sink, pacing=IMMEDIATE).run(client.stream(MESSAGES))
            assert result.outcome.state == "done" and result.text == TEXT
    finally:
        await client.aclose()
    assert len(server.requests) == 3
    assert server.connections == 1


@pytest.mark.parametrize("api", ["chat", "anthropic", "responses"])
async def test_a_body_left_open_after_the_end_holds_the_reply_only_for_the_bound(
    server: CountingLLMServer, api: str
) -> None:
    pieces = split_events(STREAMS[api])
    server.enqueue(sse_response(STREAMS[api], stall_after=len(pieces)), path=ROUTES[api])
    client = client_for(server, api, idle=10, body_end=0.2)
    try:
        started = time.monotonic()
        events = await asyncio.wait_for(events_of(client), 10)
        elapsed = time.monotonic() - started
        assert_whole(events)
        assert 0.2 <= elapsed < 1.0  # the bound, not the idle timeout (10 s)
        await server.wait_disconnect(timeout=1)  # that connection was closed, not pooled
        assert_whole(await events_of(client))
    finally:
        await client.aclose()
    assert server.connections == 2


@pytest.mark.parametrize("path", ["fast", "httpx"])
async def test_more_than_a_little_after_the_end_is_not_read(
    server: CountingLLMServer, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "httpx":
        monkeypatch.setattr(client_module, "FAST_PATH", False)
    body = STREAMS["chat"]
    comment = b": " + b"x" * 8190 + b"\n\n"
    after = (BODY_END_BYTES // len(comment) + 4) * [comment]
    server.enqueue(FakeResponse(chunks=[*split_events(body), comment]))  # a little: read
    # Too much (written after the end is read, so it is read after it): closed.
    server.enqueue(FakeResponse(chunks=[*split_events(body), *after], chunk_delay=0.01))
    client = client_for(server, body_end=10)
    try:
        for _ in range(3):
            assert_whole(await asyncio.wait_for(events_of(client), 10))
    finally:
        await client.aclose()
    assert server.peers[0] == server.peers[1] != server.peers[2]


async def test_a_connection_cut_after_the_end_still_ends_the_reply(
    server: CountingLLMServer,
) -> None:
    pieces = split_events(STREAMS["chat"])
    server.enqueue(FakeResponse(chunks=pieces, cut_after=len(pieces)))
    server.enqueue(FakeResponse(chunks=pieces, cut_after=len(pieces), reset=True))
    client = client_for(server)
    try:
        for _ in range(3):
            assert_whole(await asyncio.wait_for(events_of(client), 5))
    finally:
        await client.aclose()
    assert server.connections == 3


async def test_a_stop_while_waiting_for_the_body_s_end_closes_the_connection(
    server: CountingLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pieces = split_events(STREAMS["chat"])
    server.enqueue(FakeResponse(chunks=pieces, stall_after=len(pieces)))
    client = client_for(server, idle=10, body_end=10)
    seen: list[Event] = []
    waiting = asyncio.Event()
    finish_body = LLMClient._finish_body

    async def noted(self: LLMClient, *args: Any) -> None:
        waiting.set()  # the Stop below comes while the client waits for the body's end
        await finish_body(self, *args)

    monkeypatch.setattr(LLMClient, "_finish_body", noted)

    async def read() -> None:
        async for event in client.stream(MESSAGES):
            seen.append(event)

    task = asyncio.create_task(read())
    try:
        await asyncio.wait_for(waiting.wait(), 2)
        assert text_of(seen) == TEXT
        assert not task.done() and not any(isinstance(e, Finish) for e in seen)
        task.cancel()  # a user's Stop
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_disconnect(timeout=1)
    finally:
        await client.aclose()
