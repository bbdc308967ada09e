"""Anthropic Messages: captured streams through the real SSE decoder, and request building."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.llm.anthropic import OPENING, AnthropicMessages
from core.llm.events import (
    Event,
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from core.llm.messages import ChatMessage
from core.llm.sse import SSEDecoder

DIALECT = AnthropicMessages()
TRUNCATED = StreamError("truncated", "the stream ended before the model finished", True)


def run(*chunks: bytes) -> list[Event]:
    """Feeds the chunks as the client does and checks the one-terminal rule."""
    decoder = SSEDecoder()
    parser = DIALECT.parser()
    events: list[Event] = []
    for chunk in chunks:
        for sse in decoder.feed(chunk):
            events.extend(parser.feed(sse))
    decoder.close()
    events.extend(parser.end())
    terminals = [e for e in events if isinstance(e, Finish | StreamError)]
    assert terminals == events[-1:], events
    assert parser.done
    return events


def sse(obj: dict[str, Any]) -> bytes:
    return f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n".encode()


def start(input_tokens: int = 10, **usage: int) -> bytes:
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-sonnet-4-5",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1, **usage},
    }
    return sse({"type": "message_start", "message": message})


def block(index: int, content_block: dict[str, Any]) -> bytes:
    return sse({"type": "content_block_start", "index": index, "content_block": content_block})


def delta(index: int, **fields: Any) -> bytes:
    return sse({"type": "content_block_delta", "index": index, "delta": fields})


def stop_block(index: int) -> bytes:
    return sse({"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str | None, output_tokens: int = 5) -> bytes:
    return sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        }
    )


STOP = sse({"type": "message_stop"})

# Captured from api.anthropic.com (ids shortened).
TEXT_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_01X","type":"message","role":"assistant",'
    b'"model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,'
    b'"output_tokens":1,"service_tier":"standard"}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":" there \xf0\x9f\x91\x8b"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":12}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)


def test_plain_text() -> None:
    assert run(TEXT_STREAM) == [
        TextDelta("Hi"),
        TextDelta(" there 👋"),
        Usage(25, 12),
        Finish("stop"),
    ]


def test_split_into_small_chunks() -> None:
    pieces = [TEXT_STREAM[i : i + 5] for i in range(0, len(TEXT_STREAM), 5)]
    assert run(*pieces)[:2] == [TextDelta("Hi"), TextDelta(" there 👋")]


def test_cache_tokens_count_as_input() -> None:
    events = run(
        start(3, cache_creation_input_tokens=100, cache_read_input_tokens=2000),
        message_delta("end_turn", 7),
        STOP,
    )
    assert events == [Usage(2103, 7), Finish("stop")]


def test_thinking_then_text() -> None:
    events = run(
        start(),
        block(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, type="thinking_delta", thinking="Let me add."),
        delta(0, type="thinking_delta", thinking=" 2+2=4."),
        delta(0, type="signature_delta", signature="EqQBCgIYAh..."),
        stop_block(0),
        block(1, {"type": "text", "text": ""}),
        delta(1, type="text_delta", text="4"),
        stop_block(1),
        message_delta("end_turn", 30),
        STOP,
    )
    assert events == [
        ReasoningDelta("Let me add."),
        ReasoningDelta(" 2+2=4."),
        TextDelta("4"),
        Usage(10, 30),
        Finish("stop"),
    ]


def test_block_start_with_initial_text() -> None:
    events = run(
        start(),
        block(0, {"type": "thinking", "thinking": "Hm"}),
        block(1, {"type": "text", "text": "Hello"}),
        STOP,
    )
    assert events[:2] == [ReasoningDelta("Hm"), TextDelta("Hello")]


def test_tool_use_fragments_are_assembled() -> None:
    tool = {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {}}
    events = run(
        start(),
        block(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="Checking."),
        stop_block(0),
        block(1, tool),
        delta(1, type="input_json_delta", partial_json=""),
        delta(1, type="input_json_delta", partial_json='{"location": "Pa'),
        delta(1, type="input_json_delta", partial_json='ris"}'),
        stop_block(1),
        block(2, {"type": "tool_use", "id": "toolu_01B", "name": "now", "input": {}}),
        stop_block(2),
        message_delta("tool_use", 40),
        STOP,
    )
    assert events == [
        TextDelta("Checking."),
        ToolCallDelta(1, "toolu_01A", "get_weather", ""),
        ToolCallDelta(1, None, None, '{"location": "Pa'),
        ToolCallDelta(1, None, None, 'ris"}'),
        ToolCallDelta(2, "toolu_01B", "now", ""),
        Usage(10, 40),
        Finish(
            "tool_calls",
            (
                ToolCall(1, "toolu_01A", "get_weather", '{"location": "Paris"}'),
                ToolCall(2, "toolu_01B", "now", "{}"),
            ),
        ),
    ]


def test_server_tool_input_is_not_a_tool_call() -> None:
    events = run(
        start(),
        block(0, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"}),
        delta(0, type="input_json_delta", partial_json='{"query": "x"}'),
        stop_block(0),
        message_delta("end_turn"),
        STOP,
    )
    assert events == [Usage(10, 5), Finish("stop")]


@pytest.mark.parametrize(
    ("stop_reason", "reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("brand_new_reason", "brand_new_reason"),
    ],
)
def test_stop_reasons(stop_reason: str, reason: str) -> None:
    assert run(start(), message_delta(stop_reason), STOP)[-1] == Finish(reason)


@pytest.mark.parametrize(
    ("error_type", "retryable"),
    [
        ("overloaded_error", True),
        ("rate_limit_error", True),
        ("api_error", True),
        ("invalid_request_error", False),
    ],
)
def test_error_event(error_type: str, retryable: bool) -> None:
    error = {"type": "error", "error": {"type": error_type, "message": "Overloaded"}}
    events = run(
        start(),
        block(0, {"type": "text", "text": ""}),
        delta(0, type="text_delta", text="a"),
        sse(error),
        STOP,
    )
    assert events == [TextDelta("a"), StreamError("provider", "Overloaded", retryable)]


def test_eof_after_stop_reason_is_complete() -> None:
    events = run(start(), delta(0, type="text_delta", text="a"), message_delta("max_tokens", 9))
    assert events == [TextDelta("a"), Usage(10, 9), Finish("length")]


def test_eof_mid_message_is_truncated() -> None:
    assert run(start(), delta(0, type="text_delta", text="a")) == [TextDelta("a"), TRUNCATED]
    assert run(b"") == [TRUNCATED]


def test_type_falls_back_to_the_event_name() -> None:
    assert run(b"event: message_stop\ndata: {}\n\n") == [Finish("stop")]


def test_malformed_json() -> None:
    (error,) = run(b"event: message_start\ndata: {oops\n\n", STOP)
    assert isinstance(error, StreamError)
    assert error.kind == "malformed"
    assert "unparseable JSON" in error.message


def test_unexpected_shape_is_malformed() -> None:
    (error,) = run(sse({"type": "content_block_delta", "index": 0, "delta": "text"}))
    assert isinstance(error, StreamError)
    assert error.kind == "malformed"


def test_events_after_message_stop_are_ignored() -> None:
    decoder = SSEDecoder()
    parser = DIALECT.parser()
    stream = start() + STOP + delta(0, type="text_delta", text="late") + STOP
    assert [parser.feed(e) for e in decoder.feed(stream)] == [
        [],
        [Usage(10, 1), Finish("stop")],
        [],
        [],
    ]
    assert parser.end() == []


def test_empty_deltas_and_unknown_events_produce_nothing() -> None:
    events = run(
        start(),
        delta(0, type="text_delta", text=""),
        delta(0, type="citations_delta", citation={}),
        sse({"type": "some_future_event", "x": 1}),
        b"event: ping\ndata:\n\n",
        STOP,
    )
    assert events == [Usage(10, 1), Finish("stop")]


# --- request -----------------------------------------------------------------


def test_headers() -> None:
    assert DIALECT.headers("sk-ant-1") == {
        "anthropic-version": "2023-06-01",
        "x-api-key": "sk-ant-1",
    }
    assert DIALECT.headers(None) == {"anthropic-version": "2023-06-01"}
    assert (DIALECT.name, DIALECT.path) == ("anthropic", "/messages")


def test_body_with_system_names_and_alternation() -> None:
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "hi", name="alice"),
        ChatMessage("user", "me too", name="bob"),
        ChatMessage("assistant", "Hello both."),
        ChatMessage("system", "Answer in French."),
        ChatMessage("assistant", "   "),
        ChatMessage("assistant", "Anything else?"),
        ChatMessage("user", "no"),
    ]
    assert DIALECT.body("claude-x", messages, {}) == {
        "model": "claude-x",
        "max_tokens": 4096,
        "system": "Be brief.\n\nAnswer in French.",
        "messages": [
            {"role": "user", "content": "alice: hi\n\nbob: me too"},
            {"role": "assistant", "content": "Hello both.\n\nAnything else?"},
            {"role": "user", "content": "no"},
        ],
        "stream": True,
    }


def test_body_without_system_and_starting_with_the_assistant() -> None:
    messages = [ChatMessage("assistant", "Welcome!"), ChatMessage("user", "thanks")]
    body = DIALECT.body("m", messages, {})
    assert "system" not in body
    assert body["messages"] == [
        {"role": "user", "content": OPENING},
        {"role": "assistant", "content": "Welcome!"},
        {"role": "user", "content": "thanks"},
    ]


def test_final_assistant_prefill_loses_trailing_whitespace() -> None:
    body = DIALECT.body("m", [ChatMessage("user", "q"), ChatMessage("assistant", "{\n ")], {})
    assert body["messages"][-1] == {"role": "assistant", "content": "{"}


def test_extra_overrides_max_tokens_and_adds_fields() -> None:
    extra = {"max_tokens": 64000, "thinking": {"type": "enabled", "budget_tokens": 2000}}
    body = DIALECT.body("m", [ChatMessage("user", "q")], extra)
    assert body["max_tokens"] == 64000
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    assert body["stream"] is True


def test_http_error() -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},'
    body += b'"request_id":"req_1"}'
    assert DIALECT.error(529, body, {"retry-after": "3"}) == StreamError(
        "http", "HTTP 529: Overloaded", retryable=True, status=529, retry_after=3.0
    )
    error = DIALECT.error(400, b'{"type":"error","error":{"type":"invalid_request_error",'
                          b'"message":"max_tokens: Field required"}}', {})  # fmt: skip
    assert (error.message, error.retryable) == ("HTTP 400: max_tokens: Field required", False)
