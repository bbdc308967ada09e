"""OpenAI Responses: captured streams through the real SSE decoder, and request building."""

from __future__ import annotations

import json
from typing import Any

import pytest

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
from core.llm.responses import OpenAIResponses
from core.llm.sse import SSEDecoder

DIALECT = OpenAIResponses()
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


def sse(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n".encode()


def response(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "status": status, "model": "gpt-5", **fields}


USAGE = {
    "input_tokens": 20,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 70,
    "output_tokens_details": {"reasoning_tokens": 64},
    "total_tokens": 90,
}
COMPLETED = sse("response.completed", response=response("completed", usage=USAGE))

# Captured from api.openai.com (ids shortened, some fields trimmed).
TEXT_STREAM = (
    b"event: response.created\n"
    b'data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1",'
    b'"object":"response","created_at":1760000000,"status":"in_progress","model":"gpt-4.1",'
    b'"output":[],"usage":null}}\n\n'
    b"event: response.in_progress\n"
    b'data: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1",'
    b'"object":"response","status":"in_progress","output":[],"usage":null}}\n\n'
    b"event: response.output_item.added\n"
    b'data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,'
    b'"item":{"id":"msg_1","type":"message","status":"in_progress","content":[],'
    b'"role":"assistant"}}\n\n'
    b"event: response.content_part.added\n"
    b'data: {"type":"response.content_part.added","sequence_number":3,"item_id":"msg_1",'
    b'"output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],'
    b'"text":""}}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1",'
    b'"output_index":0,"content_index":0,"delta":"Bonjour","logprobs":[]}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1",'
    b'"output_index":0,"content_index":0,"delta":" \xc3\xa0 tous","logprobs":[]}\n\n'
    b"event: response.output_text.done\n"
    b'data: {"type":"response.output_text.done","sequence_number":6,"item_id":"msg_1",'
    b'"output_index":0,"content_index":0,"text":"Bonjour \xc3\xa0 tous","logprobs":[]}\n\n'
    b"event: response.output_item.done\n"
    b'data: {"type":"response.output_item.done","sequence_number":7,"output_index":0,'
    b'"item":{"id":"msg_1","type":"message","status":"completed","role":"assistant"}}\n\n'
    b"event: response.completed\n"
    b'data: {"type":"response.completed","sequence_number":8,"response":{"id":"resp_1",'
    b'"object":"response","status":"completed","output":[],"usage":{"input_tokens":11,'
    b'"input_tokens_details":{"cached_tokens":0},"output_tokens":4,'
    b'"output_tokens_details":{"reasoning_tokens":0},"total_tokens":15}}}\n\n'
)


def test_plain_text() -> None:
    assert run(TEXT_STREAM) == [
        TextDelta("Bonjour"),
        TextDelta(" à tous"),
        Usage(11, 4, 0),
        Finish("stop"),
    ]


def test_split_into_small_chunks() -> None:
    pieces = [TEXT_STREAM[i : i + 3] for i in range(0, len(TEXT_STREAM), 3)]
    assert run(*pieces)[:2] == [TextDelta("Bonjour"), TextDelta(" à tous")]


def test_reasoning_summary_and_reasoning_text() -> None:
    events = run(
        sse("response.output_item.added", output_index=0, item={"type": "reasoning", "id": "rs"}),
        sse("response.reasoning_summary_part.added", output_index=0, summary_index=0),
        sse("response.reasoning_summary_text.delta", output_index=0, delta="**Plan**"),
        sse("response.reasoning_summary_part.added", output_index=0, summary_index=1),
        sse("response.reasoning_summary_text.delta", output_index=0, delta="Then."),
        sse("response.reasoning_text.delta", output_index=0, delta="raw"),
        sse("response.output_text.delta", output_index=1, delta="Answer"),
        sse("response.refusal.delta", output_index=1, delta=" (partly refused)"),
        COMPLETED,
    )
    assert events == [
        ReasoningDelta("**Plan**"),
        ReasoningDelta("\n\n"),
        ReasoningDelta("Then."),
        ReasoningDelta("raw"),
        TextDelta("Answer"),
        TextDelta(" (partly refused)"),
        Usage(20, 70, 64),
        Finish("stop"),
    ]


def test_function_calls_are_assembled() -> None:
    def added(index: int, call_id: str, name: str) -> bytes:
        item = {"type": "function_call", "id": f"fc_{index}", "call_id": call_id, "name": name,
                "arguments": "", "status": "in_progress"}  # fmt: skip
        return sse("response.output_item.added", output_index=index, item=item)

    def args(index: int, piece: str) -> bytes:
        return sse("response.function_call_arguments.delta", output_index=index, delta=piece)

    events = run(
        sse("response.created", response=response("in_progress")),
        added(1, "call_A", "get_weather"),
        args(1, '{"city":'),
        args(1, '"Oslo"}'),
        sse("response.function_call_arguments.done", output_index=1, arguments='{"city":"Oslo"}'),
        added(2, "call_B", "now"),
        COMPLETED,
    )
    assert events == [
        ToolCallDelta(1, "call_A", "get_weather", ""),
        ToolCallDelta(1, None, None, '{"city":'),
        ToolCallDelta(1, None, None, '"Oslo"}'),
        ToolCallDelta(2, "call_B", "now", ""),
        Usage(20, 70, 64),
        Finish(
            "tool_calls",
            (
                ToolCall(1, "call_A", "get_weather", '{"city":"Oslo"}'),
                ToolCall(2, "call_B", "now", "{}"),
            ),
        ),
    ]


def test_arguments_only_in_the_done_event() -> None:
    item = {"type": "function_call", "call_id": "c", "name": "f", "arguments": ""}
    events = run(
        sse("response.output_item.added", output_index=0, item=item),
        sse("response.function_call_arguments.done", output_index=0, arguments='{"a":1}'),
        COMPLETED,
    )
    assert events[1] == ToolCallDelta(0, None, None, '{"a":1}')
    assert events[-1] == Finish("tool_calls", (ToolCall(0, "c", "f", '{"a":1}'),))


@pytest.mark.parametrize(
    ("details", "reason"),
    [
        ({"reason": "max_output_tokens"}, "length"),
        ({"reason": "content_filter"}, "content_filter"),
        ({"reason": "something_new"}, "something_new"),
        (None, "incomplete"),
    ],
)
def test_incomplete(details: dict[str, str] | None, reason: str) -> None:
    incomplete = response("incomplete", incomplete_details=details, usage=USAGE)
    events = run(
        sse("response.output_text.delta", delta="Once upon"),
        sse("response.incomplete", response=incomplete),
    )
    assert events == [TextDelta("Once upon"), Usage(20, 70, 64), Finish(reason)]


def test_incomplete_without_usage() -> None:
    incomplete = response("incomplete", incomplete_details={"reason": "max_output_tokens"})
    assert run(sse("response.incomplete", response=incomplete)) == [Finish("length")]


@pytest.mark.parametrize(("code", "retryable"), [("server_error", True), ("invalid_prompt", False)])
def test_failed(code: str, retryable: bool) -> None:
    failed = response("failed", error={"code": code, "message": "Something broke"})
    events = run(
        sse("response.output_text.delta", delta="Hi"), sse("response.failed", response=failed)
    )
    assert events == [TextDelta("Hi"), StreamError("provider", "Something broke", retryable)]


def test_failed_without_details() -> None:
    failed = response("failed", error=None)
    assert run(sse("response.failed", response=failed)) == [
        StreamError("provider", "the model failed to answer")
    ]


def test_error_event() -> None:
    error = sse("error", code="rate_limit_exceeded", message="Slow down", param=None)
    assert run(error, COMPLETED) == [StreamError("provider", "Slow down", retryable=True)]
    nested = sse("error", error={"type": "invalid_request_error", "message": "Bad input"})
    assert run(nested) == [StreamError("provider", "Bad input")]


def test_eof_without_terminal_is_truncated() -> None:
    assert run(sse("response.output_text.delta", delta="half")) == [TextDelta("half"), TRUNCATED]
    assert run(b"") == [TRUNCATED]


def test_type_falls_back_to_the_event_name() -> None:
    stream = (
        b'event: response.output_text.delta\ndata: {"delta": "x"}\n\n'
        b'event: response.completed\ndata: {"response": {}}\n\n'
    )
    assert run(stream) == [TextDelta("x"), Finish("stop")]


def test_malformed_json() -> None:
    (error,) = run(b"event: response.created\ndata: {nope\n\n", COMPLETED)
    assert isinstance(error, StreamError)
    assert error.kind == "malformed"
    assert "unparseable JSON" in error.message


def test_unexpected_shape_is_malformed() -> None:
    (error,) = run(sse("response.completed", response="done"))
    assert isinstance(error, StreamError)
    assert error.kind == "malformed"


def test_events_after_the_terminal_are_ignored() -> None:
    decoder = SSEDecoder()
    parser = DIALECT.parser()
    stream = COMPLETED + sse("response.output_text.delta", delta="late") + COMPLETED
    assert [parser.feed(e) for e in decoder.feed(stream)] == [
        [Usage(20, 70, 64), Finish("stop")],
        [],
        [],
    ]
    assert parser.end() == []


# --- request -----------------------------------------------------------------


def test_headers() -> None:
    assert DIALECT.headers("sk-1") == {"Authorization": "Bearer sk-1"}
    assert DIALECT.headers(None) == {}
    assert (DIALECT.name, DIALECT.path) == ("responses", "/responses")


def test_body() -> None:
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "hi", name="alice"),
        ChatMessage("assistant", "hello"),
        ChatMessage("system", "Use French."),
        ChatMessage("user", "bye"),
    ]
    assert DIALECT.body("gpt-5", messages, {"reasoning": {"summary": "auto"}}) == {
        "model": "gpt-5",
        "instructions": "Be brief.\n\nUse French.",
        "input": [
            {"role": "user", "content": "alice: hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
        ],
        "stream": True,
        "reasoning": {"summary": "auto"},
    }


def test_body_without_system_and_extra_override() -> None:
    body = DIALECT.body("m", [ChatMessage("user", "q")], {"instructions": "x", "store": False})
    assert body == {
        "model": "m",
        "input": [{"role": "user", "content": "q"}],
        "stream": True,
        "instructions": "x",
        "store": False,
    }
    assert "instructions" not in DIALECT.body("m", [ChatMessage("user", "q")], {})


def test_http_error() -> None:
    body = b'{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error",'
    body += b'"param":"model","code":"model_not_found"}}'
    assert DIALECT.error(404, body, {}) == StreamError(
        "http", "HTTP 404: The model `gpt-9` does not exist", status=404
    )
