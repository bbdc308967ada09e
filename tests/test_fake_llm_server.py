"""The fake LLM server and stream builders do what other tests rely on them to do.

A fake that silently sends one blob instead of pieces, never stalls, or misses a
disconnect would make the real tests pass for the wrong reason, so each behaviour
is checked from the outside with httpx, and each builder's bytes with an SSE parse
written independently of chatrelay's decoder.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx
import pytest

from tests.fakes.llm_server import (
    FakeLLMServer,
    FakeResponse,
    error_response,
    sse_response,
    stress_response,
)
from tests.fakes.streams import (
    BOM,
    CODE_FENCE_TEXT,
    MENTION_SAMPLES,
    Tool,
    anthropic_stream,
    chat_stream,
    chunk_text,
    code_fence_streams,
    expected_text,
    large_reply_stream,
    long_line_stream,
    mention_stress_streams,
    responses_stream,
    split_bytes,
    split_events,
    split_text,
    stress_streams,
    two_way_splits,
)

# --------------------------------------------------------------------------- helpers


def parse_sse(body: bytes) -> tuple[list[tuple[str | None, str]], int]:
    """(event, data) pairs and the number of comment lines: a deliberately naive parse
    (blank-line blocks) that shares nothing with the decoder under test."""
    text = body.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n")
    events: list[tuple[str | None, str]] = []
    comments = 0
    for block in text.split("\n\n"):
        event: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith(":"):
                comments += 1
            elif line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
            else:
                assert line == "", f"unexpected line {line!r}"
        if data:
            events.append((event, "\n".join(data)))
    return events, comments


def datas(body: bytes) -> list[str]:
    return [data for _, data in parse_sse(body)[0]]


def chunks_of(body: bytes) -> list[dict[str, Any]]:
    """The JSON chunks of a chat stream, [DONE] excluded."""
    return [json.loads(d) for d in datas(body) if d != "[DONE]"]


def deltas(body: bytes, key: str) -> str:
    return "".join(
        c["choices"][0]["delta"].get(key) or ""
        for c in chunks_of(body)
        if c.get("choices") and "delta" in c["choices"][0]
    )


def typed_events(body: bytes) -> list[dict[str, Any]]:
    """Events with ``event:`` lines whose name must match the JSON ``type``."""
    out = []
    for event, data in parse_sse(body)[0]:
        payload = json.loads(data)
        assert event == payload["type"]
        out.append(payload)
    return out


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as running:
        yield running


@pytest.fixture
async def client(server: FakeLLMServer) -> AsyncIterator[httpx.AsyncClient]:
    timeout = httpx.Timeout(2.0, read=1.0)
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=timeout, trust_env=False
    ) as http:
        yield http


# --------------------------------------------------------------------------- chat builder


def test_chat_stream_has_openai_shape() -> None:
    body = chat_stream(["Hel", "lo ", "wörld"], model="m1")
    chunks = chunks_of(body)
    first = chunks[0]
    assert first["object"] == "chat.completion.chunk"
    assert first["id"] == "chatcmpl-1" and first["model"] == "m1"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert first["choices"][0]["finish_reason"] is None
    assert deltas(body, "content") == "Hello wörld" == expected_text(["Hel", "lo ", "wörld"])
    finish = chunks[-2]
    assert finish["choices"][0]["finish_reason"] == "stop" and "usage" not in finish
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    assert datas(body)[-1] == "[DONE]"
    assert "wörld".encode() in body  # raw UTF-8, not \u escapes


def test_chat_stream_provider_quirks() -> None:
    zai = chunks_of(
        chat_stream(["a"], object_field=False, usage_style="in_finish", double_finish=True)
    )
    assert all("object" not in c for c in zai)
    finishes = [c for c in zai if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishes) == 2 and "usage" in finishes[-1] and "usage" not in finishes[0]
    assert all(c["choices"] for c in zai)

    litellm = chunks_of(chat_stream(["a"], usage_style="litellm"))
    assert litellm[-1]["choices"] == [{"index": 0, "delta": {}}] and "usage" in litellm[-1]

    body = chat_stream(["x", "y"], reasoning=["th", "ink"], reasoning_field="reasoning")
    assert deltas(body, "reasoning") == "think" and deltas(body, "content") == "xy"

    _, comments = parse_sse(chat_stream(["a", "b", "c", "d"], keepalive_every=2))
    assert comments == 3  # one up front, then after pieces 2 and 4

    gemini = chat_stream(["a"], finish=None, done=False, usage=None)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks_of(gemini))
    assert "[DONE]" not in datas(gemini)


def test_chat_stream_mid_stream_error_ends_the_body() -> None:
    body = chat_stream(["a", "b", "c"], error_after=2)
    last = json.loads(datas(body)[-1])
    assert last["error"]["message"] and "choices" not in last
    assert deltas(body, "content") == "ab"
    assert "[DONE]" not in datas(body)


def test_chat_stream_tool_call_fragments() -> None:
    tool = Tool("get_weather", ['{"ci', 'ty": "Par', 'is"}'])
    body = chat_stream([], tool_calls=[tool, Tool("noop", ["{}"])], finish="tool_calls")
    frags = [
        tc
        for c in chunks_of(body)
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    firsts = [f for f in frags if "id" in f]
    assert [(f["index"], f["id"], f["function"]["name"]) for f in firsts] == [
        (0, "call_1", "get_weather"),
        (1, "call_2", "noop"),
    ]
    args = "".join(f["function"]["arguments"] for f in frags if f["index"] == 0)
    assert json.loads(args) == {"city": "Paris"}
    assert all("name" not in f["function"] for f in frags if "id" not in f)
    assert chunks_of(body)[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_crlf_and_bom_change_only_the_framing() -> None:
    plain = chat_stream(["é", "b"], keepalive_every=1)
    odd = chat_stream(["é", "b"], keepalive_every=1, crlf=True, bom=True)
    assert odd.startswith(BOM) and b"\r\n\r\n" in odd
    assert odd.count(b"\n") == odd.count(b"\r\n")
    assert parse_sse(odd) == parse_sse(plain)


# --------------------------------------------------------------------------- anthropic builder


def test_anthropic_stream_event_order_and_content() -> None:
    body = anthropic_stream(
        ["Hi", " there"], thinking=["hm", "m"], tool_use=[Tool("f", ['{"a"', ":1}"])]
    )
    events = typed_events(body)
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert events[0]["message"]["usage"]["input_tokens"] == 10
    blocks = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert blocks == ["thinking", "text", "tool_use"]
    by_kind: dict[str, str] = {}
    for e in events:
        if e["type"] == "content_block_delta":
            d = e["delta"]
            value = d.get("text") or d.get("thinking") or d.get("partial_json") or d["signature"]
            by_kind[d["type"]] = by_kind.get(d["type"], "") + value
    assert by_kind["text_delta"] == "Hi there"
    assert by_kind["thinking_delta"] == "hmm"
    assert json.loads(by_kind["input_json_delta"]) == {"a": 1}
    assert by_kind["signature_delta"]
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-2]["usage"] == {"output_tokens": 20}
    starts = sum(k == "content_block_start" for k in kinds)
    assert starts == sum(k == "content_block_stop" for k in kinds) == 3


def test_anthropic_stream_error_and_truncation() -> None:
    events = typed_events(
        anthropic_stream(["a", "b", "c"], error="overloaded_error", error_after=1)
    )
    assert events[-1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert sum(e["type"] == "content_block_delta" for e in events) == 1
    truncated = [e["type"] for e in typed_events(anthropic_stream(["a"], stop=False))]
    assert "message_stop" not in truncated and "message_delta" not in truncated


# --------------------------------------------------------------------------- responses builder


def test_responses_stream_sequence_and_terminal_event() -> None:
    body = responses_stream(["Hel", "lo"], reasoning=["why"], tool_calls=[Tool("f", ["{}"])])
    events = typed_events(body)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    summary = "".join(
        e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta"
    )
    assert (text, summary) == ("Hello", "why")
    final = events[-1]
    assert final["type"] == "response.completed"
    assert final["response"]["status"] == "completed"
    assert final["response"]["usage"]["output_tokens"] == 20
    types = [item["type"] for item in final["response"]["output"]]
    assert types == ["reasoning", "message", "function_call"]
    assert "[DONE]" not in datas(body)


@pytest.mark.parametrize("status", ["incomplete", "failed"])
def test_responses_stream_unhappy_endings(status: Literal["incomplete", "failed"]) -> None:
    final = typed_events(responses_stream(["a"], status=status))[-1]
    assert final["type"] == f"response.{status}"
    assert final["response"]["status"] == status
    assert final["response"]["incomplete_details" if status == "incomplete" else "error"]


def test_responses_stream_truncated_and_error() -> None:
    assert typed_events(responses_stream(["a"], terminal=False))[-1]["type"] == (
        "response.output_item.done"
    )
    last = typed_events(responses_stream(["a"], error="server_error"))[-1]
    assert last["type"] == "error" and last["code"] == "server_error"


# --------------------------------------------------------------------------- cutting


def test_split_bytes_fixed_and_listed_sizes() -> None:
    data = bytes(range(10))
    assert split_bytes(data, 4) == [data[:4], data[4:8], data[8:]]
    assert split_bytes(data, [1, 2]) == [data[:1], data[1:3], data[3:]]
    assert split_bytes(data, [6, 6, 6]) == [data[:6], data[6:]]
    with pytest.raises(ValueError):
        split_bytes(data, 0)


def test_split_bytes_random_is_seeded_and_cuts_anywhere() -> None:
    body = chat_stream(["é€😀"], crlf=True)
    assert split_bytes(body, seed=3) == split_bytes(body, seed=3)
    assert split_bytes(body, seed=3) != split_bytes(body, seed=4)
    inside_char = between_cr_lf = False
    for seed in range(30):
        pieces = split_bytes(body, seed=seed)
        assert b"".join(pieces) == body and all(pieces)
        for piece in pieces[:-1]:
            try:
                piece.decode("utf-8")
            except UnicodeDecodeError:
                inside_char = True
            between_cr_lf |= piece.endswith(b"\r")
    assert inside_char and between_cr_lf


def test_split_events_and_two_way_splits() -> None:
    body = chat_stream(["a", "b"], keepalive_every=1, crlf=True)
    events = split_events(body)
    assert b"".join(events) == body
    assert all(e.endswith(b"\r\n\r\n") for e in events)
    assert len(events) == len(datas(body)) + parse_sse(body)[1]
    splits = list(two_way_splits(b"abcd"))
    assert splits == [[b"a", b"bcd"], [b"ab", b"cd"], [b"abc", b"d"]]


# --------------------------------------------------------------------------- server


async def test_stream_arrives_in_separate_pieces(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(FakeResponse(chunks=[b"data: 1\n\n", b"data: 2\n\n", b"da"], chunk_delay=0.05))
    arrivals: list[tuple[float, bytes]] = []
    async with client.stream("POST", "/chat/completions", json={}) as resp:
        assert resp.headers["transfer-encoding"] == "chunked"
        assert resp.headers["content-type"] == "text/event-stream"
        async for piece in resp.aiter_raw():
            arrivals.append((time.monotonic(), piece))
    assert [p for _, p in arrivals] == [b"data: 1\n\n", b"data: 2\n\n", b"da"]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) > 0.03
    assert server.requests[0].outcome == "completed"


async def test_split_body_is_delivered_intact(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    body = chat_stream(["日本", "語"])
    server.enqueue(FakeResponse(chunks=split_bytes(body, seed=5)))
    resp = await client.post("/chat/completions", json={})
    assert resp.content == body


async def test_error_status_headers_and_json_body(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(error_response(429, "rate limited", retry_after=1))
    server.enqueue(error_response(529, "busy", anthropic=True, headers={"X-Extra": "y"}))
    resp = await client.post("/chat/completions", json={})
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "1"
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["content-length"] == str(len(resp.content))
    assert resp.json()["error"] == {
        "message": "rate limited",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }
    resp = await client.post("/messages", json={})
    assert resp.status_code == 529 and resp.headers["x-extra"] == "y"
    assert resp.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }


async def test_requests_are_recorded(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    before = time.monotonic()
    await client.post(
        "/chat/completions?x=1",
        json={"model": "m", "stream": True},
        headers={"Authorization": "Bearer k", "X-Custom": "v"},
    )
    await client.post("/responses", content=b"not json")
    first, second = server.requests
    assert (first.method, first.path, first.route, first.query) == (
        "POST",
        "/v1/chat/completions",
        "chat/completions",
        "x=1",
    )
    assert first.headers["authorization"] == "Bearer k" and first.headers["x-custom"] == "v"
    assert first.json == {"model": "m", "stream": True}
    assert before <= first.time <= second.time <= time.monotonic()
    assert second.route == "responses" and second.json is None and second.body == b"not json"
    assert await server.wait_requests(2, timeout=0.1) is second


async def test_queues_per_path_shared_queue_and_defaults(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(FakeResponse(chunks=[b"chat-1"]), path="/v1/chat/completions")
    server.enqueue(FakeResponse(chunks=[b"chat-2"]), path="chat/completions")
    server.enqueue(FakeResponse(chunks=[b"any"]))
    server.enqueue(lambda req: FakeResponse(chunks=[req.json["model"].encode()]))
    assert server.queued() == 4 and server.queued("chat/completions") == 2

    assert (await client.post("/responses", json={})).content == b"any"
    assert (await client.post("/chat/completions", json={})).content == b"chat-1"
    assert (await client.post("/chat/completions", json={})).content == b"chat-2"
    assert (await client.post("/chat/completions", json={"model": "echo"})).content == b"echo"
    assert server.queued() == 0

    chat = await client.post("/chat/completions", json={})
    assert datas(chat.content)[-1] == "[DONE]" and deltas(chat.content, "content")
    messages = await client.post("/messages", json={})
    assert typed_events(messages.content)[-1]["type"] == "message_stop"
    responses = await client.post("/responses", json={})
    assert typed_events(responses.content)[-1]["type"] == "response.completed"
    missing = await client.post("/embeddings", json={})
    assert missing.status_code == 404 and "error" in missing.json()


async def test_stall_keeps_connection_open_without_data(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(FakeResponse(chunks=[b"data: 1\n\n", b"data: 2\n\n"], stall_after=1))
    got: list[bytes] = []
    with pytest.raises(httpx.ReadTimeout):
        async with client.stream(
            "POST", "/chat/completions", json={}, timeout=httpx.Timeout(2.0, read=0.3)
        ) as resp:
            assert resp.status_code == 200
            async for piece in resp.aiter_raw():
                got.append(piece)
    assert got == [b"data: 1\n\n"]
    await server.wait_disconnect(timeout=2)  # the client dropped the connection on timeout


@pytest.mark.parametrize(
    "spec",
    [
        FakeResponse(chunks=[b"a", b"b"], stall_after=1),
        FakeResponse(chunks=[b"a", b"b"], chunk_delay=10),
    ],
    ids=["stalled", "slow"],
)
async def test_closing_the_stream_is_seen_at_once(
    server: FakeLLMServer, client: httpx.AsyncClient, spec: FakeResponse
) -> None:
    server.enqueue(spec)
    async with client.stream("POST", "/chat/completions", json={}) as resp:
        async for piece in resp.aiter_raw():
            assert piece == b"a"
            break
        closed_at = time.monotonic()
    await server.wait_disconnect(timeout=2)
    record = server.requests[0]
    assert record.outcome == "client_disconnected" and server.client_disconnects == 1
    assert record.ended_at is not None and record.ended_at - closed_at < 0.5


async def test_cancelling_before_the_first_byte_is_a_disconnect(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(FakeResponse(chunks=[b"a"], first_byte_delay=10))
    request = asyncio.create_task(client.post("/chat/completions", json={}))
    await server.wait_requests(1)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await server.wait_disconnect(timeout=2)
    assert server.requests[0].outcome == "client_disconnected"


async def test_wait_disconnect_times_out_when_nobody_hangs_up(server: FakeLLMServer) -> None:
    with pytest.raises(TimeoutError):
        await server.wait_disconnect(timeout=0.05)


async def test_first_byte_delay_holds_the_headers(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(FakeResponse(chunks=[b"a"], first_byte_delay=0.2))
    start = time.monotonic()
    resp = await client.post("/chat/completions", json={})
    assert resp.content == b"a" and time.monotonic() - start >= 0.18


async def test_cut_ends_the_body_without_its_terminator(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(FakeResponse(chunks=[b"a", b"b", b"c"], chunk_delay=0.02, cut_after=2))
    got: list[bytes] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", "/chat/completions", json={}) as resp:
            async for piece in resp.aiter_raw():
                got.append(piece)
    assert b"".join(got) == b"ab"
    assert await server.wait_ended(server.requests[0], timeout=1) == "cut"
    assert server.client_disconnects == 0


async def test_cut_with_reset(server: FakeLLMServer, client: httpx.AsyncClient) -> None:
    server.enqueue(FakeResponse(chunks=[b"a", b"b"], cut_after=1, reset=True))
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.post("/chat/completions", json={})
    assert server.requests[0].outcome == "cut"


async def test_content_length_body_can_be_cut(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    server.enqueue(FakeResponse(chunks=[b"{", b"}"], chunked=False, cut_after=1))
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/chat/completions", json={})


async def test_stop_ends_stalled_responses_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = FakeLLMServer()
    await server.start()
    server.enqueue(FakeResponse(chunks=[b"a", b"b"], stall_after=1))
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False, timeout=2) as http:

        async def read() -> bytes:
            got = b""
            async with http.stream("POST", "/chat/completions", json={}) as resp:
                async for piece in resp.aiter_raw():
                    got += piece
            return got

        reader = asyncio.create_task(read())
        await server.wait_requests(1)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(httpx.RemoteProtocolError):
            await reader
    assert server.requests[0].outcome == "stopped" and server.client_disconnects == 0
    current = asyncio.current_task()
    assert [t for t in asyncio.all_tasks() if t is not current] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    with pytest.raises(RuntimeError):
        _ = server.base_url


async def test_sse_response_sends_one_event_per_write(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    body = anthropic_stream(["a", "b"])
    server.enqueue(sse_response(body, chunk_delay=0.02))
    async with client.stream("POST", "/messages", json={}) as resp:
        pieces = [piece async for piece in resp.aiter_raw()]
    assert pieces == split_events(body) and len(pieces) == len(typed_events(body))


# --------------------------------------------------------------------------- stress replies


def anthropic_text(body: bytes) -> str:
    return "".join(
        e["delta"]["text"]
        for e in typed_events(body)
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta"
    )


def responses_text(body: bytes) -> str:
    return "".join(
        e["delta"] for e in typed_events(body) if e["type"] == "response.output_text.delta"
    )


def test_mention_streams_split_every_token_at_every_position() -> None:
    """Hold-back code is only proven if a mention can arrive cut anywhere: every sample
    comes cut at each offset from just before its token to just after it, and once
    with each character of the token on its own."""
    streams = mention_stress_streams()
    for name, (text, token) in MENTION_SAMPLES.items():
        mine = [s for s in streams if s.name.startswith(f"{name}/")]
        assert all(s.text == text and all(s.pieces) for s in mine)
        start = text.index(token)
        cuts: set[int] = set()
        for stream in mine:
            if not stream.name.endswith("/chars"):
                ends = itertools.accumulate(len(p) for p in stream.pieces)
                cuts |= {0, *ends}  # the text's own edges count as clean cuts
        assert {c - start for c in cuts} >= set(range(len(token) + 1)), name
        [chars] = [s for s in mine if s.name.endswith("/chars")]
        assert list(token) == [p for p in chars.pieces if len(p) == 1][: len(token)]
        assert len(mine) == len(token) + 2
    assert MENTION_SAMPLES["bare_everyone"][0].endswith("@everyone")  # a token at the end
    assert MENTION_SAMPLES["slack_channel"][0].startswith("<!channel>")  # and at the start


def test_code_fence_streams_cut_through_the_fences() -> None:
    streams = code_fence_streams()
    assert {s.text for s in streams} == {CODE_FENCE_TEXT}
    assert CODE_FENCE_TEXT.endswith("\n```\nstill code")  # the reply ends in an open fence
    opening = CODE_FENCE_TEXT.index("```python")
    cuts = {len(s.pieces[0]) - opening for s in streams if s.name.startswith("fence/open")}
    assert cuts == set(range(len("```python\n") + 1))
    assert all(1 <= len(p) <= 5 for s in streams if "seed" in s.name for p in s.pieces)


def test_long_line_and_large_reply() -> None:
    line = long_line_stream()
    assert max(len(word) for word in line.text.split()) == 5_000
    assert line == long_line_stream() and line != long_line_stream(seed=1)
    assert all(1 <= len(p) <= 64 for p in line.pieces)

    large = large_reply_stream()
    assert len(large.text.encode()) >= 50_000 > len(large.text)  # multi-byte characters
    assert large == large_reply_stream()
    fences = [x for x in large.text.split("\n") if x.startswith("```")]
    assert fences and len(fences) % 2 == 0
    assert all(1 <= len(p) <= 40 for p in large.pieces)
    assert {s.name for s in stress_streams()} >= {"long_line/5000", "large_reply/50000"}


def test_split_and_chunk_text() -> None:
    assert split_text("abcdef", [4, 2, 2, 0, 9]) == ("ab", "cd", "ef")
    assert chunk_text("abcdefg", 3) == ("abc", "def", "g")
    assert chunk_text("abcdefg", [1, 2]) == ("a", "bc", "d", "ef", "g")
    assert chunk_text("x" * 100, seed=4) == chunk_text("x" * 100, seed=4)
    assert chunk_text("x" * 100, seed=4) != chunk_text("x" * 100, seed=5)


@pytest.mark.parametrize("dialect", ["chat", "anthropic", "responses"])
def test_stress_bodies_carry_exactly_the_text(
    dialect: Literal["chat", "anthropic", "responses"],
) -> None:
    decode = {
        "chat": lambda body: deltas(body, "content"),
        "anthropic": anthropic_text,
        "responses": responses_text,
    }[dialect]
    for stream in stress_streams():
        assert decode(stream.body(dialect)) == stream.text, stream.name


async def test_served_stress_reply_tells_what_the_model_wrote(
    server: FakeLLMServer, client: httpx.AsyncClient
) -> None:
    """A checker compares the platform's final text with ``requests[i].text``: the
    server copies it from the response it served, one model piece per SSE event."""
    large = large_reply_stream()
    mention = mention_stress_streams()[3]
    server.enqueue(stress_response(large), stress_response(mention, "anthropic"))
    first = await client.post("/chat/completions", json={})
    second = await client.post("/messages", json={})
    await client.post("/chat/completions", json={})  # the default reply: text unknown
    assert deltas(first.content, "content") == large.text
    assert anthropic_text(second.content) == mention.text
    assert server.texts == [large.text, mention.text, None]
    assert server.requests[1].text == mention.text
    assert len(split_events(first.content)) > len(large.pieces)
