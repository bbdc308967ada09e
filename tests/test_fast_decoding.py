"""msgspec on the per-chunk path reads every stream exactly as the stdlib did.

Two oracles: ``stdlib_decode_object`` is ``decode_object`` as it was before
msgspec (``json.loads`` alone), and each dialect's ``General`` parser is the
real parser with its fast path switched off, fed through plain
``SSEDecoder.feed`` (the general path, unchanged by the fast one). The fast
paths (``feed_data``, ``SSEDecoder.feed_to``'s lone-event lane) must give the
same events on the quirky inputs below and on generated ones.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.llm.anthropic import AnthropicMessages, AnthropicParser
from core.llm.chat import ChatCompletions, ChatParser
from core.llm.dialect import Dialect, StreamParser
from core.llm.errors import decode_object, malformed
from core.llm.events import Event, Finish, ReasoningDelta, StreamError, TextDelta, Usage
from core.llm.responses import OpenAIResponses, ResponsesParser
from core.llm.sse import SSEDecoder


def stdlib_decode_object(data: str) -> dict[str, Any] | StreamError:
    """``decode_object`` before msgspec: the behaviour to keep."""
    try:
        payload = json.loads(data)
    except ValueError:
        return malformed("unparseable JSON", data)
    if type(payload) is not dict:
        return malformed("JSON that is not an object", data)
    return payload


class GeneralChat(ChatParser):
    def feed_data(self, data: str | bytes) -> list[Event] | None:
        return [] if self.done else None


class GeneralAnthropic(AnthropicParser):
    def feed_data(self, data: str | bytes) -> list[Event] | None:
        return [] if self.done else None


class GeneralResponses(ResponsesParser):
    def feed_data(self, data: str | bytes) -> list[Event] | None:
        return [] if self.done else None


DIALECTS: dict[str, tuple[Dialect, type[StreamParser]]] = {
    "chat": (ChatCompletions(), GeneralChat),
    "anthropic": (AnthropicMessages(), GeneralAnthropic),
    "responses": (OpenAIResponses(), GeneralResponses),
}


def general(dialect: str, *chunks: bytes) -> list[Event]:
    """The general path: every chunk through ``SSEDecoder.feed`` and ``feed``."""
    parser: StreamParser = DIALECTS[dialect][1]()
    decoder = SSEDecoder()
    events: list[Event] = []
    for chunk in chunks:
        for sse in decoder.feed(chunk):
            events += parser.feed(sse)
    decoder.close()
    return events + parser.end()


def fast(dialect: str, *chunks: bytes) -> list[Event]:
    """As the client reads: ``SSEDecoder.feed_to`` the real parser."""
    parser = DIALECTS[dialect][0].parser()
    decoder = SSEDecoder()
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed_to(chunk, parser)
    decoder.close()
    return events + parser.end()


def read(dialect: str, *chunks: bytes) -> list[Event]:
    """Both ways, which must agree; the events."""
    events = fast(dialect, *chunks)
    assert repr(events) == repr(general(dialect, *chunks))
    return events


@contextmanager
def digit_limit(limit: int) -> Iterator[None]:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(limit)
    try:
        yield
    finally:
        sys.set_int_max_str_digits(old)


# --- decode_object against json.loads ------------------------------------------

UNPARSEABLE = "unparseable JSON"
NOT_OBJECT = "JSON that is not an object"

QUIRKS: list[tuple[str, str, object]] = [
    # (name, data, expected: a dict's repr, or the malformed problem)
    ("nan", '{"a": NaN}', "{'a': nan}"),
    ("infinities", '{"a": Infinity, "b": -Infinity}', "{'a': inf, 'b': -inf}"),
    ("float overflow is inf", '{"a": 1e400}', "{'a': inf}"),
    ("duplicate keys: the last wins", '{"a": 1, "b": 2, "a": 3}', "{'a': 3, 'b': 2}"),
    (
        "huge integer",
        '{"a": 123456789012345678901234567890}',
        "{'a': 123456789012345678901234567890}",
    ),
    ("integer at the digit limit", '{"a": ' + "7" * 4300 + "}", "{'a': " + "7" * 4300 + "}"),
    ("integer past the digit limit", '{"a": ' + "7" * 4301 + "}", UNPARSEABLE),
    ("escaped lone surrogate", '{"a": "\\ud800"}', "{'a': '\\ud800'}"),
    ("escaped surrogates reversed", '{"a": "\\udf89\\ud83c"}', "{'a': '\\udf89\\ud83c'}"),
    ("escaped pair", '{"a": "\\ud83c\\udf89"}', "{'a': '🎉'}"),
    ("replacement character", '{"a": "a\ufffdb"}', "{'a': 'a\ufffdb'}"),
    ("raw DEL is fine", '{"a": "x\x7fy"}', "{'a': 'x\\x7fy'}"),
    ("raw control character", '{"a": "x\ty"}', UNPARSEABLE),
    ("BOM", '\ufeff{"a": 1}', UNPARSEABLE),
    ("JSON whitespace around", ' \t\r\n{"a": 1} \t\r\n', "{'a': 1}"),
    ("form feed is not JSON whitespace", '\x0c{"a": 1}', UNPARSEABLE),
    ("trailing comma", '{"a": 1,}', UNPARSEABLE),
    ("leading zero", '{"a": 01}', UNPARSEABLE),
    ("trailing data", '{"a": 1} x', UNPARSEABLE),
    ("escaped key", '{"\\u0065rror": 1}', "{'error': 1}"),
    ("array", "[1, 2]", NOT_OBJECT),
    ("NaN alone", "NaN", NOT_OBJECT),
    ("string", '"text"', NOT_OBJECT),
    ("null", "null", NOT_OBJECT),
]


@pytest.mark.parametrize(("data", "expected"), [q[1:] for q in QUIRKS], ids=[q[0] for q in QUIRKS])
def test_decode_object_reads_quirks_as_the_stdlib_did(data: str, expected: str) -> None:
    got = decode_object(data)
    if expected in (UNPARSEABLE, NOT_OBJECT):
        assert got == malformed(expected, data)
    else:
        assert repr(got) == expected
    assert repr(got) == repr(stdlib_decode_object(data))


def test_a_lowered_digit_limit_is_the_stdlibs_too() -> None:
    data = '{"a": ' + "7" * 700 + "}"
    with digit_limit(640):
        assert decode_object(data) == malformed(UNPARSEABLE, data)
    assert decode_object(data) == {"a": int("7" * 700)}


def test_nesting_deeper_than_the_interpreter_allows_still_raises() -> None:
    data = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(RecursionError):
        stdlib_decode_object(data)
    with pytest.raises(RecursionError):
        decode_object(data)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)
MUTATIONS = ["", "\ufeff", "\x00", "\t", "\\", '"', ",", "}", "NaN", "-", "1e", "\ud800", " "]


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(st.text(max_size=5), json_values, max_size=5),
    st.booleans(),
    st.sampled_from(MUTATIONS),
    st.integers(min_value=0),
)
def test_decode_object_matches_the_stdlib_on_generated_text(
    obj: dict[str, Any], ascii_only: bool, insert: str, where: int
) -> None:
    text = json.dumps(obj, ensure_ascii=ascii_only)
    at = where % (len(text) + 1)
    text = text[:at] + insert + text[at:]
    assert repr(decode_object(text)) == repr(stdlib_decode_object(text))


# --- Chat Completions ------------------------------------------------------------

DONE = b"data: [DONE]\n\n"
ENVELOPE = '"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m"'


def chat(choice: str, *extra: str) -> bytes:
    """A chunk from raw JSON text: duplicate keys and non-JSON numbers need text."""
    return ("data: {" + ",".join([ENVELOPE, f'"choices":[{choice}]', *extra]) + "}\n\n").encode()


def text_choice(content: str = '"x"') -> str:
    return '{"index":0,"delta":{"content":' + content + '},"finish_reason":null}'


def test_chat_text_only_chunks() -> None:
    assert read("chat", chat(text_choice()), DONE) == [TextDelta("x"), Finish("stop")]


def test_chat_invalid_utf8_in_content_is_replaced() -> None:
    chunk = chat(text_choice('"aXb"')).replace(b"aXb", b"a\xffb")
    assert read("chat", chat(text_choice()), chunk, DONE) == [
        TextDelta("x"),
        TextDelta("a\ufffdb"),
        Finish("stop"),
    ]


def test_chat_invalid_utf8_in_a_skipped_field_is_harmless() -> None:
    chunk = chat(text_choice()).replace(b'"model":"m"', b'"model":"m\xc0\xaf"')
    assert read("chat", chat(text_choice()), chunk, DONE) == [
        TextDelta("x"),
        TextDelta("x"),
        Finish("stop"),
    ]


def test_chat_nan_and_infinity_are_read_as_before() -> None:
    events = read(
        "chat",
        chat(text_choice(), '"logprobs":NaN'),
        chat('{"delta":{},"finish_reason":"stop"}'),
        chat("", '"usage":{"prompt_tokens":Infinity,"completion_tokens":3}'),
        DONE,
    )
    assert events == [TextDelta("x"), Usage(0, 3, 0), Finish("stop")]


def test_chat_duplicate_keys_the_last_wins() -> None:
    events = read(
        "chat",
        chat('{"delta":{"content":"a","content":"b"}}'),
        chat(text_choice('"first"'), f'"choices":[{text_choice(chr(34) + "last" + chr(34))}]'),
        chat(text_choice(), '"usage":{"prompt_tokens":1,"completion_tokens":1},"usage":null'),
        chat(text_choice('"c"'), '"usage":null,"usage":{"prompt_tokens":2,"completion_tokens":5}'),
        DONE,
    )
    assert events == [
        TextDelta("b"),
        TextDelta("last"),
        TextDelta("x"),
        TextDelta("c"),
        Usage(2, 5, 0),
        Finish("stop"),
    ]


def test_chat_an_escaped_error_key_is_still_an_error() -> None:
    events = read("chat", chat(text_choice(), '"\\u0065rror":{"message":"boom","code":502}'))
    assert events == [TextDelta("x"), StreamError("provider", "boom", retryable=True)]


def test_chat_huge_numbers() -> None:
    big = 10**30
    usage = f'"usage":{{"prompt_tokens":{big},"completion_tokens":1}}'
    events = read("chat", chat(text_choice(), '"created_ns":' + "9" * 600), chat("", usage), DONE)
    assert events == [TextDelta("x"), Usage(big, 1, 0), Finish("stop")]


def test_chat_an_integer_too_long_for_the_stdlib_is_malformed_even_unread() -> None:
    # The typed fast path skips "created_ns" without converting it; json.loads refuses it.
    chunk = chat(text_choice(), '"created_ns":' + "9" * 4301)
    (error,) = read("chat", chunk)
    assert isinstance(error, StreamError)
    assert error == malformed("unparseable JSON", chunk[6:-2].decode())


def test_chat_a_lowered_digit_limit_holds_on_the_fast_path() -> None:
    chunk = chat(text_choice(), '"created_ns":' + "9" * 700)
    with digit_limit(640):
        (error,) = read("chat", chunk)
    assert isinstance(error, StreamError) and error.kind == "malformed"
    assert read("chat", chunk, DONE) == [TextDelta("x"), Finish("stop")]


def test_chat_escaped_lone_surrogate_in_content_is_kept() -> None:
    events = read("chat", chat(text_choice('"\\ud800"')), DONE)
    assert events == [TextDelta("\ud800"), Finish("stop")]


def test_chat_a_bom_inside_the_stream_is_malformed() -> None:
    bom = "\ufeff".encode()
    (first, error) = read("chat", chat(text_choice()), b"data: " + bom + chat(text_choice())[6:])
    assert first == TextDelta("x")
    assert isinstance(error, StreamError) and error.kind == "malformed"
    assert "unparseable JSON" in error.message


@pytest.mark.parametrize("payload", [b"NaN", b"[1, 2]", b'"x"', b"null", b"-Infinity"])
def test_chat_json_that_is_not_an_object(payload: bytes) -> None:
    (error,) = read("chat", b"data: " + payload + b"\n\n")
    assert error == StreamError(
        "malformed", f"the model sent JSON that is not an object: {payload.decode()!r}"
    )


def test_chat_data_without_the_space_and_split_events() -> None:
    lone = chat(text_choice()).replace(b"data: ", b"data:")
    two = chat(text_choice('"a"')) + chat(text_choice('"b"'))
    cut = chat(text_choice('"cut"'))
    events = read("chat", lone, two, cut[:20], cut[20:], DONE)
    assert events == [
        TextDelta("x"),
        TextDelta("a"),
        TextDelta("b"),
        TextDelta("cut"),
        Finish("stop"),
    ]


def test_chat_shapes_the_fast_path_declines() -> None:
    events = read(
        "chat",
        chat('{"delta":{"role":"assistant","content":"r"}}'),
        chat('{"delta":{"content":""}}'),
        chat('{"delta":{"content":5}}'),
        chat('{"delta":{"content":"c","refusal":"no"}}'),
        chat('{"delta":{"content":"d","reasoning_content":"why"}}'),
        chat(text_choice(), '"error":null'),
        # Usage inside a text-only choice (Moonshot) is not read on the fast path,
        # and never was: the dict fast path before msgspec skipped it too.
        chat('{"delta":{"content":"m"},"usage":{"prompt_tokens":4,"completion_tokens":2}}'),
        chat('{"delta":{"content":"f"},"finish_reason":"length"}'),
        DONE,
    )
    assert events == [
        TextDelta("r"),
        TextDelta("c"),
        TextDelta("no"),
        ReasoningDelta("why"),
        TextDelta("d"),
        TextDelta("x"),
        TextDelta("m"),
        TextDelta("f"),
        Finish("length"),
    ]


# --- Anthropic and Responses -----------------------------------------------------


def anthropic(data: str, event: str = "content_block_delta") -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


def test_anthropic_text_and_thinking_with_quirks() -> None:
    events = read(
        "anthropic",
        anthropic(
            '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}'
        ),
        anthropic(
            '{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"a\\ud800"}}'
        ),
        anthropic(
            '{"type":"content_block_delta","delta":{"type":"text_delta","text":"x","text":"y"}}'
        ),
        anthropic(
            '{"type":"content_block_delta","delta":{"type":"text_delta","text":"n"},"z":NaN}'
        ),
        anthropic('{"type":"content_block_delta","delta":{"type":"text_delta","text":""}}'),
        anthropic('{"delta":{"type":"text_delta","text":"typeless"}}'),
        anthropic('{"type":"message_delta","delta":{"stop_reason":"end_turn"}}', "message_delta"),
        anthropic('{"type":"message_stop"}', "message_stop"),
    )
    assert events == [
        ReasoningDelta("hm"),
        TextDelta("a\ud800"),
        TextDelta("y"),
        TextDelta("n"),
        TextDelta("typeless"),
        Finish("stop"),
    ]


def test_anthropic_invalid_utf8_and_a_long_integer() -> None:
    bad = anthropic('{"type":"content_block_delta","delta":{"type":"text_delta","text":"aXb"}}')
    bad = bad.replace(b"aXb", b"a\xed\xa0\x80b")  # a UTF-8-encoded surrogate: invalid
    long = (
        '{"type":"content_block_delta","index":'
        + "1" * 4301
        + ',"delta":{"type":"text_delta","text":"q"}}'
    )
    events = read("anthropic", bad, anthropic(long))
    assert events[0] == TextDelta("a\ufffd\ufffd\ufffdb")
    assert isinstance(events[1], StreamError) and events[1].kind == "malformed"


def responses(data: str) -> bytes:
    return f"event: response.output_text.delta\ndata: {data}\n\n".encode()


def test_responses_deltas_with_quirks() -> None:
    events = read(
        "responses",
        responses('{"type":"response.output_text.delta","output_index":0,"delta":"a"}'),
        responses('{"type":"response.reasoning_summary_text.delta","delta":"think"}'),
        responses('{"type":"response.refusal.delta","delta":"no","delta":"nope"}'),
        responses('{"type":"response.output_text.delta","delta":"\\udf89","logprobs":[Infinity]}'),
        responses('{"type":"response.output_text.delta","delta":7}'),
        responses('{"type":"response.output_text.delta","delta":"z","n":' + "1" * 4301 + "}"),
    )
    assert events == [
        TextDelta("a"),
        ReasoningDelta("think"),
        TextDelta("nope"),
        TextDelta("\udf89"),
        malformed(
            "unparseable JSON", '{"type":"response.output_text.delta","delta":"z","n":' + "1" * 4301
        ),
    ]


# --- generated streams -------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), max_size=6) | st.sampled_from(["", "\ud800", "é🎉"])
numbers = st.integers(min_value=-(10**25), max_value=10**25) | st.floats(allow_nan=True)
scalars = st.none() | st.booleans() | numbers | texts


def perturbed(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with keys dropped, changed to odd values, or extra keys added."""
    return st.fixed_dictionaries(
        {key: st.just(value) | scalars for key, value in base.items()},
        optional={
            "extra": scalars,
            "error": scalars,
            "usage": st.none() | st.just({"prompt_tokens": 1}),
            "refusal": texts,
            "reasoning_content": texts,
        },
    )


chat_chunks = st.builds(
    lambda choice, top: {**top, "choices": [choice]},
    st.builds(
        lambda delta, rest: {**rest, "delta": delta},
        perturbed({"content": "hi"}),
        perturbed({"index": 0, "finish_reason": None}),
    ),
    perturbed({"id": "c"}),
)
anthropic_chunks = st.builds(
    lambda delta, top: {**top, "delta": delta},
    perturbed({"type": "text_delta", "text": "hi"})
    | perturbed({"type": "thinking_delta", "thinking": "hm"}),
    perturbed({"type": "content_block_delta", "index": 0}),
)
responses_chunks = perturbed({"type": "response.output_text.delta", "delta": "hi"}) | perturbed(
    {"type": "response.reasoning_text.delta", "delta": "hm"}
)
GENERATED = {"chat": chat_chunks, "anthropic": anthropic_chunks, "responses": responses_chunks}


def framed(obj: dict[str, Any], ascii_only: bool, event: bool, raw: bytes) -> bytes:
    text = json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")
    if raw and b'"hi"' in text:
        text = text.replace(b'"hi"', b'"h' + raw + b'i"', 1)
    prefix = (
        b"event: " + str(obj.get("type", "x")).encode("utf-8", "replace") + b"\n" if event else b""
    )
    return prefix + b"data: " + text + b"\n\n"


@pytest.mark.parametrize("dialect", list(GENERATED))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_generated_chunks_read_the_same_both_ways(dialect: str, data: st.DataObject) -> None:
    chunks = data.draw(
        st.lists(
            st.builds(
                framed,
                GENERATED[dialect],
                st.booleans(),
                st.booleans(),
                st.sampled_from([b"", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"]),
            ),
            min_size=1,
            max_size=6,
        )
    )
    read(dialect, *chunks)
