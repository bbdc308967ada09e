"""Chat Completions: captured provider streams through the real SSE decoder, plus
request building and the shared error helpers (``core.llm.errors``)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from core.llm.chat import ChatCompletions
from core.llm.errors import error_message, is_retryable_status, retry_after_seconds
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

DIALECT = ChatCompletions()
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


def data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    """An OpenAI-shaped chunk, for the tests where the envelope does not matter."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return data({**base, "choices": [choice], **extra})


DONE = b"data: [DONE]\n\n"

# Captured from api.openai.com with stream_options.include_usage (ids shortened).
OPENAI_TEXT = (
    b'data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1736000000,'
    b'"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0aa",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
    b'"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1736000000,'
    b'"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0aa",'
    b'"choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],'
    b'"usage":null}\n\n'
    b'data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1736000000,'
    b'"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0aa",'
    b'"choices":[{"index":0,"delta":{"content":" th\xc3\xa9re"},"logprobs":null,'
    b'"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1736000000,'
    b'"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0aa",'
    b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-B1","object":"chat.completion.chunk","created":1736000000,'
    b'"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0aa",'
    b'"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,'
    b'"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    b'"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
    b'"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_TEXT_EVENTS = [TextDelta("Hello"), TextDelta(" thére"), Usage(9, 2, 0), Finish("stop")]


def test_plain_text_with_usage_after_finish() -> None:
    assert run(OPENAI_TEXT) == OPENAI_TEXT_EVENTS


def test_chunk_boundaries_do_not_matter() -> None:
    one_byte_at_a_time = [OPENAI_TEXT[i : i + 1] for i in range(len(OPENAI_TEXT))]
    assert run(*one_byte_at_a_time) == OPENAI_TEXT_EVENTS
    crlf = OPENAI_TEXT.replace(b"\n", b"\r\n")
    assert run(*[crlf[i : i + 7] for i in range(0, len(crlf), 7)]) == OPENAI_TEXT_EVENTS


def test_deepseek_reasoning_content_and_keepalives() -> None:
    stream = (
        b": keep-alive\n\n"
        b'data: {"id":"d1","object":"chat.completion.chunk","created":1,'
        b'"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant",'
        b'"content":null,"reasoning_content":""},"logprobs":null,"finish_reason":null}]}\n\n'
        b'data: {"id":"d1","object":"chat.completion.chunk","created":1,'
        b'"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":null,'
        b'"reasoning_content":"Let me think."},"logprobs":null,"finish_reason":null}]}\n\n'
        b": keep-alive\n\n"
        b'data: {"id":"d1","object":"chat.completion.chunk","created":1,'
        b'"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"42",'
        b'"reasoning_content":null},"logprobs":null,"finish_reason":null}]}\n\n'
        b'data: {"id":"d1","object":"chat.completion.chunk","created":1,'
        b'"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"",'
        b'"reasoning_content":null},"logprobs":null,"finish_reason":"stop"}],"usage":'
        b'{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42,'
        b'"completion_tokens_details":{"reasoning_tokens":25}}}\n\n'
        b"data: [DONE]\n\n"
    )
    assert run(stream) == [
        ReasoningDelta("Let me think."),
        TextDelta("42"),
        Usage(12, 30, 25),
        Finish("stop"),
    ]


def test_reasoning_field_and_both_fields_at_once() -> None:
    events = run(
        chunk({"role": "assistant", "content": "", "reasoning": "Hmm."}),
        # Some servers fill both names with the same text: it must show once.
        chunk({"reasoning": " Yes.", "reasoning_content": " Yes."}),
        chunk({"content": "Done."}),
        chunk({}, "stop"),
        DONE,
    )
    assert events == [
        ReasoningDelta("Hmm."),
        ReasoningDelta(" Yes."),
        TextDelta("Done."),
        Finish("stop"),
    ]


def test_refusal_is_shown_as_text() -> None:
    events = run(
        chunk({"refusal": "I can't"}), chunk({"refusal": " help."}), chunk({}, "stop"), DONE
    )
    assert events == [TextDelta("I can't"), TextDelta(" help."), Finish("stop")]


def test_parallel_tool_calls_fragmented_across_chunks() -> None:
    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"index": index, **fields}

    events = run(
        chunk({"role": "assistant", "content": None}),
        chunk(
            {
                "tool_calls": [
                    call(
                        0,
                        id="call_a",
                        type="function",
                        function={"name": "weather", "arguments": ""},
                    )
                ]
            }
        ),
        chunk({"tool_calls": [call(0, function={"arguments": '{"city"'})]}),
        chunk({"tool_calls": [call(0, function={"arguments": ': "Paris"}'})]}),
        chunk({"tool_calls": [call(1, id="call_b", type="function", function={"name": "time"})]}),
        chunk({"tool_calls": [call(1, function={"arguments": '{"tz": "CET"}'})]}),
        chunk({}, "tool_calls"),
        DONE,
    )
    assert events == [
        ToolCallDelta(0, "call_a", "weather", ""),
        ToolCallDelta(0, None, None, '{"city"'),
        ToolCallDelta(0, None, None, ': "Paris"}'),
        ToolCallDelta(1, "call_b", "time", ""),
        ToolCallDelta(1, None, None, '{"tz": "CET"}'),
        Finish(
            "tool_calls",
            (
                ToolCall(0, "call_a", "weather", '{"city": "Paris"}'),
                ToolCall(1, "call_b", "time", '{"tz": "CET"}'),
            ),
        ),
    ]


def test_tool_calls_without_index_are_told_apart_by_id() -> None:
    def call(call_id: str, name: str, arguments: str) -> bytes:
        fn = {"name": name, "arguments": arguments}
        return chunk({"tool_calls": [{"id": call_id, "type": "function", "function": fn}]})

    events = run(call("c1", "a", "{}"), call("c2", "b", '{"x":1}'), chunk({}, "tool_calls"), DONE)
    assert events[-1] == Finish(
        "tool_calls", (ToolCall(0, "c1", "a", "{}"), ToolCall(1, "c2", "b", '{"x":1}'))
    )


def test_glm_double_finish_and_usage_in_the_finish_chunk() -> None:
    # Z.ai GLM-4.6, trimmed: no "object", reasoning_content, finish_reason twice.
    stream = (
        b'data: {"id":"2025","created":1760000000,"model":"glm-4.6","choices":[{"index":0,'
        b'"delta":{"role":"assistant","reasoning_content":"Need weather."}}]}\n\n'
        b'data: {"id":"2025","created":1760000000,"model":"glm-4.6","choices":[{"index":0,'
        b'"delta":{"role":"assistant","content":"Checking."}}]}\n\n'
        b'data: {"id":"2025","created":1760000000,"model":"glm-4.6","choices":[{"index":0,'
        b'"delta":{"role":"assistant","tool_calls":[{"id":"call_-81","index":0,"type":"function",'
        b'"function":{"name":"get_weather","arguments":"{\\"city\\":\\"Oslo\\"}"}}]}}]}\n\n'
        b'data: {"id":"2025","created":1760000000,"model":"glm-4.6","choices":[{"index":0,'
        b'"finish_reason":"tool_calls","delta":{"role":"assistant","content":""}}],'
        b'"usage":{"prompt_tokens":150,"completion_tokens":40,"prompt_tokens_details":'
        b'{"cached_tokens":43},"total_tokens":190}}\n\n'
        b'data: {"id":"2025","created":1760000000,"model":"glm-4.6","choices":[{"index":0,'
        b'"finish_reason":"tool_calls","delta":{"role":"assistant","content":""}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    assert run(stream) == [
        ReasoningDelta("Need weather."),
        TextDelta("Checking."),
        ToolCallDelta(0, "call_-81", "get_weather", '{"city":"Oslo"}'),
        Usage(150, 40, 0),
        Finish("tool_calls", (ToolCall(0, "call_-81", "get_weather", '{"city":"Oslo"}'),)),
    ]


def test_first_finish_reason_wins() -> None:
    events = run(chunk({"content": "a"}), chunk({}, "length"), chunk({}, "stop"), DONE)
    assert events == [TextDelta("a"), Finish("length")]


def test_litellm_usage_chunk_with_non_empty_choices() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    litellm_usage = data(
        {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {}}], "usage": usage}
    )  # fmt: skip
    events = run(chunk({"content": "hi"}), chunk({}, "stop"), litellm_usage, DONE)
    assert events == [TextDelta("hi"), Usage(5, 1, 0), Finish("stop")]


def test_usage_inside_the_choice_moonshot() -> None:
    events = run(
        data({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                           "usage": {"prompt_tokens": 3, "completion_tokens": 4}}]}),
        DONE,
    )  # fmt: skip
    assert events == [Usage(3, 4, 0), Finish("stop")]


def test_usage_alone_without_finish_reason_still_needs_done() -> None:
    assert run(chunk({"content": "x"}), data({"choices": [], "usage": {"prompt_tokens": 1}})) == [
        TextDelta("x"),
        TRUNCATED,
    ]


@pytest.mark.parametrize(
    ("code", "retryable"),
    [(502, True), (429, True), ("503", True), ("overloaded", True), (400, False), ("bad", False)],
)
def test_mid_stream_error_with_http_200(code: object, retryable: bool) -> None:
    error = {"error": {"code": code, "message": "Provider returned error", "metadata": {}}}
    events = run(chunk({"content": "Par"}), data(error), chunk({"content": "tial"}), DONE)
    assert events == [
        TextDelta("Par"),
        StreamError("provider", "Provider returned error", retryable),
    ]


def test_openrouter_error_chunk_with_finish_reason_error() -> None:
    error = {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "error": {"code": "server_error", "message": "Upstream died"},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    assert run(chunk({"content": "a"}), data(error)) == [
        TextDelta("a"),
        StreamError("provider", "Upstream died", retryable=True),
    ]


def test_text_in_an_error_chunk_is_still_shown() -> None:
    error = {"choices": [{"index": 0, "delta": {"content": "last"}}], "error": {"message": "boom"}}
    assert run(data(error)) == [TextDelta("last"), StreamError("provider", "boom")]


def test_finish_reason_error_alone() -> None:
    events = run(chunk({"content": "a"}), chunk({"content": "b"}, "error"), DONE)
    assert events == [
        TextDelta("a"),
        TextDelta("b"),
        StreamError("provider", "the model stopped with an error"),
    ]


def test_done_without_finish_reason_is_a_stop() -> None:
    # Gemini's compatible API has been seen to never send finish_reason.
    assert run(chunk({"content": "ok"}), DONE) == [TextDelta("ok"), Finish("stop")]


def test_done_without_finish_reason_but_with_tool_calls() -> None:
    fragment = {"index": 0, "id": "c", "function": {"name": "f", "arguments": {"a": 1}}}
    events = run(chunk({"tool_calls": [fragment]}), DONE)
    assert events[-1] == Finish("tool_calls", (ToolCall(0, "c", "f", '{"a": 1}'),))


def test_eof_after_finish_reason_without_done_is_complete() -> None:
    events = run(
        chunk({"content": "ok"}),
        chunk({}, "stop", usage={"prompt_tokens": 1, "completion_tokens": 1}),
    )
    assert events == [TextDelta("ok"), Usage(1, 1, 0), Finish("stop")]


def test_eof_without_finish_is_truncated() -> None:
    assert run(chunk({"content": "half"})) == [TextDelta("half"), TRUNCATED]
    assert run(b"") == [TRUNCATED]
    assert run(chunk({"content": "cut"}), b'data: {"choices":[{"delta":{"con') == [
        TextDelta("cut"),
        TRUNCATED,
    ]


def test_malformed_json_ends_the_stream() -> None:
    events = run(chunk({"content": "a"}), b"data: {not json\n\n", chunk({"content": "b"}), DONE)
    assert events[0] == TextDelta("a")
    error = events[1]
    assert isinstance(error, StreamError)
    assert error.kind == "malformed"
    assert "unparseable JSON" in error.message
    assert "{not json" in error.message


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"null", b"42"])
def test_json_that_is_not_an_object_is_malformed(payload: bytes) -> None:
    (error,) = run(b"data: " + payload + b"\n\n")
    assert isinstance(error, StreamError)
    assert error.kind == "malformed"


def test_odd_shapes_are_malformed_not_crashes() -> None:
    (error,) = run(data({"choices": [{"delta": {"tool_calls": 5}}]}))
    assert isinstance(error, StreamError)
    assert error.kind == "malformed"


def test_data_after_done_is_ignored() -> None:
    decoder = SSEDecoder()
    parser = DIALECT.parser()
    events = [e for sse in decoder.feed(chunk({"content": "a"}) + DONE) for e in parser.feed(sse)]
    assert events == [TextDelta("a"), Finish("stop")]
    assert parser.done
    late = decoder.feed(chunk({"content": "late"}) + data({"error": {"message": "x"}}) + DONE)
    assert [parser.feed(sse) for sse in late] == [[], [], []]
    assert parser.end() == []


def test_empty_data_and_object_less_chunks_are_fine() -> None:
    events = run(b"data:\n\n", b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n', DONE)
    assert events == [TextDelta("x"), Finish("stop")]


# --- request -----------------------------------------------------------------


def test_headers() -> None:
    assert DIALECT.headers("sk-1") == {"Authorization": "Bearer sk-1"}
    assert DIALECT.headers(None) == {}
    assert DIALECT.headers("") == {}
    assert (DIALECT.name, DIALECT.path) == ("chat", "/chat/completions")


def test_body() -> None:
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "hi", name="alice"),
        ChatMessage("assistant", "hello", name="bot"),
        ChatMessage("user", "yo", name="José María"),
        ChatMessage("user", "?", name="李雷"),
    ]
    assert DIALECT.body("gpt-4o", messages, {}) == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi", "name": "alice"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "yo", "name": "Jos__Mar_a"},
            {"role": "user", "content": "?"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_extra_is_merged_over_the_body() -> None:
    extra = {"temperature": 0.2, "stream_options": {"include_usage": False}, "model": "other"}
    body = DIALECT.body("m", [ChatMessage("user", "hi")], extra)
    assert body["temperature"] == 0.2
    assert body["stream_options"] == {"include_usage": False}
    assert body["model"] == "other"
    assert body["stream"] is True


# --- errors (core.llm.errors, shared by every dialect) ---------------------------


def test_openai_rate_limit_error() -> None:
    body = (
        b'{"error": {"message": "Rate limit reached for gpt-4o in organization org-x on tokens '
        b'per min (TPM): Limit 30000, Used 30000.", "type": "tokens", "param": null, '
        b'"code": "rate_limit_exceeded"}}'
    )
    error = DIALECT.error(429, body, {"retry-after": "20", "x-request-id": "req_1"})
    assert error == StreamError(
        "http",
        "HTTP 429: Rate limit reached for gpt-4o in organization org-x on tokens per min (TPM): "
        "Limit 30000, Used 30000.",
        retryable=True,
        status=429,
        retry_after=20.0,
    )


def test_insufficient_quota_is_not_retried() -> None:
    body = b'{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota",'
    body += b'"param":null,"code":"insufficient_quota"}}'
    error = DIALECT.error(429, body, {})
    assert error.message == "HTTP 429: You exceeded your current quota."
    assert not error.retryable


def test_empty_body_uses_the_status_phrase() -> None:
    error = DIALECT.error(503, b"", httpx.Headers({"Retry-After": "2"}))
    assert (error.message, error.retryable, error.retry_after) == (
        "HTTP 503: Service Unavailable",
        True,
        2.0,
    )
    assert DIALECT.error(599, b"  ", {}).message == "HTTP 599: no details"


def test_server_hint_overrides_the_status() -> None:
    assert not DIALECT.error(500, b"", {"X-Should-Retry": "false"}).retryable
    assert DIALECT.error(400, b"", {"x-should-retry": "true"}).retryable


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error":{"message":"Invalid key","type":"invalid_request_error"}}', "Invalid key"),
        (
            b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            "Overloaded",
        ),
        (b'{"message":"Model not found"}', "Model not found"),
        (b'{"detail":"Not authenticated"}', "Not authenticated"),
        (
            b'{"detail":[{"loc":["body","model"],"msg":"field required","type":"missing"}]}',
            "field required",
        ),
        (
            b'[{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}]',
            "Quota exceeded",
        ),
        (b'{"error":"model is required"}', "model is required"),
        (b'{"error":{"code":"unknown_model"}}', "unknown_model"),
        (b'{"unexpected": true}', '{"unexpected": true}'),
        (b"upstream connect error\n  or disconnect", "upstream connect error or disconnect"),
        (
            b"<html><head><title>502 Bad Gateway</title></head><body>x</body></html>",
            "502 Bad Gateway",
        ),
        (b"\xff\xfe broken bytes", "\ufffd\ufffd broken bytes"),
        (b"", ""),
    ],
)
def test_error_message(body: bytes, message: str) -> None:
    assert error_message(body) == message


def test_long_error_text_is_cut() -> None:
    message = error_message(b"x" * 5000)
    assert len(message) == 200
    assert message.endswith("…")
    assert len(error_message(json.dumps({"message": "y " * 400}).encode())) == 200


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (403, False), (404, False), (408, True), (409, True),
     (422, False), (425, True), (429, True), (500, True), (501, False), (502, True),
     (503, True), (504, True), (505, False), (529, True)],
)  # fmt: skip
def test_is_retryable_status(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], seconds: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after_seconds(headers, now=now) == seconds


def test_retry_after_from_httpx_headers() -> None:
    assert retry_after_seconds(httpx.Headers({"RETRY-AFTER-MS": "1500"})) == 1.5
