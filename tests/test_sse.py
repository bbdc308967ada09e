"""The SSE decoder against the WHATWG rules, fed in every possible way."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.llm.sse import SSEDecoder, SSEEvent


def decode(*chunks: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events


def datas(*chunks: bytes) -> list[str]:
    return [e.data for e in decode(*chunks)]


def test_simple_events() -> None:
    assert datas(b"data: a\n\ndata: b\n\n") == ["a", "b"]


def test_all_three_line_endings() -> None:
    assert datas(b"data: lf\n\ndata: cr\r\rdata: crlf\r\n\r\n") == ["lf", "cr", "crlf"]


def test_crlf_split_across_chunks_is_one_line_break() -> None:
    # If the CR and LF were counted as two line breaks, "b" would be dispatched
    # alone and "a" never joined with it.
    assert datas(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == ["a\nb"]


def test_lone_cr_at_chunk_end_followed_by_text() -> None:
    assert datas(b"data: a\r", b"data: b\r\r") == ["a\nb"]


def test_leading_bom_is_stripped_once_even_when_split() -> None:
    bom = "\ufeff".encode()
    assert datas(bom[:1], bom[1:] + b"data: x\n\n") == ["x"]
    # a second BOM is data, not a BOM: the field name becomes "\ufeffdata" and is ignored
    assert datas(bom + bom + b"data: x\n\n") == []


def test_utf8_character_split_across_chunks() -> None:
    raw = "data: héllo 🎉\n\n".encode()
    cut = raw.index("🎉".encode()) + 2
    assert datas(raw[:cut], raw[cut:]) == ["héllo 🎉"]


def test_comments_are_ignored() -> None:
    assert datas(b": keep-alive\n\n: OPENROUTER PROCESSING\n\ndata: x\n\n") == ["x"]


def test_only_one_space_after_colon_is_removed() -> None:
    assert datas(b"data:  1\n\ndata:2\n\n") == [" 1", "2"]


def test_field_name_with_trailing_space_is_ignored() -> None:
    assert datas(b"data : x\n\n") == []


def test_multiple_data_lines_join_with_newline() -> None:
    assert datas(b"data: a\ndata:\ndata: b\n\n") == ["a\n\nb"]


def test_event_without_data_is_not_dispatched() -> None:
    assert decode(b"event: ping\n\n") == []
    # ...and its event type does not leak into the next event
    assert [e.event for e in decode(b"event: ping\n\ndata: x\n\n")] == ["message"]


def test_empty_data_dispatches_empty_string() -> None:
    assert datas(b"data:\n\n") == [""]
    assert datas(b"data\n\n") == [""]


def test_unterminated_event_at_eof_is_discarded() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\ndata: partial\n") == [SSEEvent("complete")]
    assert decoder.has_partial_event
    assert decoder.close() == []


def test_event_type_and_id_carry_over() -> None:
    events = decode(b"event: delta\nid: 7\ndata: a\n\ndata: b\n\n")
    assert [(e.event, e.id, e.data) for e in events] == [("delta", "7", "a"), ("message", "7", "b")]


def test_id_with_nul_is_ignored() -> None:
    events = decode(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]


def test_retry_only_counts_when_all_digits() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"retry: 1500\n\n")
    assert decoder.retry == 1500
    decoder.feed(b"retry: 20x\n\nretry: -5\n\nretry: 1.5\n\nretry:\n\n")
    assert decoder.retry == 1500


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert datas(b"data: a\xffb\n\n") == ["a\ufffdb"]


def test_field_without_colon_is_a_name_with_empty_value() -> None:
    assert decode(b"event\ndata: x\n\n")[0].event == "message"


STREAM = (
    "\ufeff: comment\r\n"
    "event: one\r\ndata: first line\r\ndata: second ✓\r\n\r\n"
    "id: 42\rdata:no space\r\r"
    ": keep-alive\n\n"
    "data:  two spaces 日本語\n"
    "data\n\n"
    "retry: 3000\nevent: ignored-without-data\n\n"
    "data: last\n\n"
    "data: never dispatched\n"
).encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert decode(*chunks) == decode(STREAM)


def test_reference_stream_decodes_as_the_spec_says() -> None:
    assert [(e.event, e.data, e.id) for e in decode(STREAM)] == [
        ("one", "first line\nsecond ✓", ""),
        ("message", "no space", "42"),
        ("message", " two spaces 日本語\n", "42"),
        ("message", "last", "42"),
    ]


def test_byte_at_a_time() -> None:
    assert decode(*[STREAM[i : i + 1] for i in range(len(STREAM))]) == decode(STREAM)
