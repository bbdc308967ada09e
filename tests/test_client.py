"""The LLM client over real HTTP against the fake provider: every dialect, split
bytes, retries before the first token only, timeouts, fallbacks, cancel."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Sequence

import pytest

from core.llm.client import LLMClient, RetryPolicy, Timeouts
from core.llm.events import Event, Finish, ReasoningDelta, StreamError, TextDelta, ToolCall, Usage
from core.llm.messages import ChatMessage
from core.llm.provider import Provider
from tests.fakes.llm_server import FakeLLMServer, FakeResponse, error_response, sse_response
from tests.fakes.streams import (
    Tool,
    anthropic_stream,
    chat_stream,
    responses_stream,
    split_bytes,
    split_events,
)

MESSAGES = [ChatMessage("system", "be brief"), ChatMessage("user", "hi", name="U1")]
PIECES = ["Hel", "lo, ", "wörld ", "🎉", "!"]


def client_for(
    server: FakeLLMServer,
    *,
    api: str = "chat",
    models: Sequence[str] = ("m",),
    sleeps: list[float] | None = None,
    timeouts: Timeouts | None = None,
    retries: int = 2,
) -> LLMClient:
    async def record(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    providers = [Provider(server.base_url, model, api=api, api_key="sk-test") for model in models]
    return LLMClient(
        providers,
        timeouts=timeouts or Timeouts(connect=2, first_token=2, idle=2),
        retry=RetryPolicy(max_retries=retries, base_delay=0.01),
        sleep=record,
        jitter=lambda: 0.5,
    )


async def collect(client: LLMClient) -> list[Event]:
    try:
        return [event async for event in client.stream(MESSAGES)]
    finally:
        await client.aclose()


def text_of(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_chat_stream_cut_anywhere_arrives_whole(llm_server: FakeLLMServer, seed: int) -> None:
    body = chat_stream(PIECES, reasoning=["thinking…"], crlf=seed == 2, bom=seed == 3)
    llm_server.enqueue(FakeResponse(chunks=split_bytes(body, seed=seed)))
    events = await collect(client_for(llm_server))
    assert text_of(events) == "".join(PIECES)
    assert ReasoningDelta("thinking…") in events
    assert events[-2:] == [Usage(10, 20), Finish("stop")]
    request = llm_server.requests[0]
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.json is not None and request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True}


async def test_anthropic_dialect_over_http(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(sse_response(anthropic_stream(PIECES, thinking=["hmm"])))
    events = await collect(client_for(llm_server, api="anthropic"))
    assert text_of(events) == "".join(PIECES)
    assert ReasoningDelta("hmm") in events
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    request = llm_server.requests[0]
    assert request.path.endswith("/messages")
    assert request.headers["x-api-key"] == "sk-test"


async def test_responses_dialect_over_http(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(sse_response(responses_stream(PIECES)))
    events = await collect(client_for(llm_server, api="responses"))
    assert text_of(events) == "".join(PIECES)
    assert isinstance(events[-1], Finish)
    assert llm_server.requests[0].path.endswith("/responses")


async def test_tool_calls_are_assembled(llm_server: FakeLLMServer) -> None:
    tool = Tool("lookup", ['{"q": ', '"x"}'], id="call_1")
    llm_server.enqueue(sse_response(chat_stream([], tool_calls=[tool], finish="tool_calls")))
    events = await collect(client_for(llm_server))
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "tool_calls"
    assert finish.tool_calls == (ToolCall(0, "call_1", "lookup", '{"q": "x"}'),)


async def test_429_is_retried_after_retry_after(llm_server: FakeLLMServer) -> None:
    sleeps: list[float] = []
    llm_server.enqueue(error_response(429, "slow down", retry_after=3))
    llm_server.enqueue(error_response(503, "overloaded"))
    llm_server.enqueue(sse_response(chat_stream(PIECES)))
    events = await collect(client_for(llm_server, sleeps=sleeps))
    assert text_of(events) == "".join(PIECES)
    assert len(llm_server.requests) == 3
    assert sleeps[0] == 3.0  # Retry-After honoured
    assert 0 < sleeps[1] < 1  # then backoff


async def test_client_error_is_not_retried_but_falls_back(llm_server: FakeLLMServer) -> None:
    sleeps: list[float] = []
    llm_server.enqueue(error_response(404, "no such model"))
    llm_server.enqueue(sse_response(chat_stream(PIECES)))
    events = await collect(client_for(llm_server, models=("gone", "backup"), sleeps=sleeps))
    assert text_of(events) == "".join(PIECES)
    assert [r.json["model"] for r in llm_server.requests if r.json] == ["gone", "backup"]
    assert sleeps == []


async def test_all_providers_failing_names_each(llm_server: FakeLLMServer) -> None:
    for _ in range(4):
        llm_server.enqueue(error_response(500, "broken"))
    events = await collect(client_for(llm_server, models=("a", "b"), retries=1))
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert "a@127.0.0.1" in events[0].message and "b@127.0.0.1" in events[0].message
    assert "HTTP 500" in events[0].message
    assert len(llm_server.requests) == 4


async def test_no_retry_after_the_first_token(llm_server: FakeLLMServer) -> None:
    body = chat_stream(PIECES)
    llm_server.enqueue(FakeResponse(chunks=split_events(body), cut_after=3))
    events = await collect(client_for(llm_server))
    assert len(llm_server.requests) == 1
    error = events[-1]
    assert isinstance(error, StreamError) and error.kind == "truncated"
    assert text_of(events)  # the partial text came through first


async def test_mid_stream_provider_error_with_200(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(
        sse_response(chat_stream(PIECES, error_after=2, error_message="upstream died"))
    )
    events = await collect(client_for(llm_server))
    assert text_of(events) == "".join(PIECES[:2])
    assert isinstance(events[-1], StreamError) and "upstream died" in events[-1].message


async def test_stream_without_finish_or_done_is_truncated(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(sse_response(chat_stream(PIECES, finish=None, done=False)))
    events = await collect(client_for(llm_server))
    assert isinstance(events[-1], StreamError) and events[-1].kind == "truncated"


async def test_idle_timeout_after_first_token(llm_server: FakeLLMServer) -> None:
    body = chat_stream(PIECES)
    llm_server.enqueue(FakeResponse(chunks=split_events(body), stall_after=3))
    client = client_for(llm_server, timeouts=Timeouts(connect=1, first_token=5, idle=0.3))
    events = await asyncio.wait_for(collect(client), 5)
    assert isinstance(events[-1], StreamError) and events[-1].kind == "timeout"
    assert "sent nothing for 0.3s" in events[-1].message
    assert len(llm_server.requests) == 1


async def test_keepalives_do_not_count_as_a_first_token(llm_server: FakeLLMServer) -> None:
    keepalives = [b": keep-alive\n\n"] * 50
    llm_server.enqueue(FakeResponse(chunks=keepalives, chunk_delay=0.05, stall_after=50))
    llm_server.enqueue(sse_response(chat_stream(PIECES)))
    client = client_for(llm_server, timeouts=Timeouts(connect=1, first_token=0.5, idle=1))
    events = await asyncio.wait_for(collect(client), 5)
    assert text_of(events) == "".join(PIECES)  # timed out, retried, then answered
    assert len(llm_server.requests) == 2


async def test_connect_error_is_retried_then_reported() -> None:
    sleeps: list[float] = []

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    client = LLMClient(
        [Provider("http://127.0.0.1:9/v1", "m")],
        retry=RetryPolicy(max_retries=2, base_delay=0.01),
        sleep=record,
    )
    events = [event async for event in client.stream(MESSAGES)]
    await client.aclose()
    assert len(sleeps) == 2
    assert isinstance(events[-1], StreamError) and events[-1].kind == "connect"


async def test_closing_the_stream_closes_the_http_response(llm_server: FakeLLMServer) -> None:
    body = chat_stream(PIECES * 20)
    llm_server.enqueue(FakeResponse(chunks=split_bytes(body, 30), stall_after=5))
    client = client_for(llm_server)
    stream = client.stream(MESSAGES)
    first = await anext(stream)
    assert first is not None
    await stream.aclose()  # what a user's Stop does
    await llm_server.wait_disconnect(timeout=1)
    await client.aclose()


async def test_cancelling_the_reading_task_closes_the_http_response(
    llm_server: FakeLLMServer,
) -> None:
    llm_server.enqueue(FakeResponse(chunks=split_bytes(chat_stream(PIECES), 30), stall_after=2))
    client = client_for(llm_server)

    async def read() -> None:
        async for _ in client.stream(MESSAGES):
            pass

    task = asyncio.create_task(read())
    await llm_server.wait_requests(1, timeout=1)
    await asyncio.sleep(0.05)
    task.cancel()
    await llm_server.wait_disconnect(timeout=1)
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.aclose()


async def test_non_stream_200_is_an_error(llm_server: FakeLLMServer) -> None:
    llm_server.enqueue(
        FakeResponse(chunks=[b'{"error": {"message": "bad key"}}'], content_type="application/json")
    )
    events = await collect(client_for(llm_server, retries=0))
    assert isinstance(events[-1], StreamError) and "bad key" in events[-1].message


async def test_compressed_stream_is_decoded(llm_server: FakeLLMServer) -> None:
    body = gzip.compress(chat_stream(PIECES))
    llm_server.enqueue(
        FakeResponse(chunks=split_bytes(body, 25), headers={"Content-Encoding": "gzip"})
    )
    events = await collect(client_for(llm_server))
    assert text_of(events) == "".join(PIECES)
