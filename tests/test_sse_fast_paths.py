"""The SSE decoder's fast paths against a plain reference of the WHATWG rules.

``feed`` splits a chunk of whole LF-terminated lines without the incremental
UTF-8 decoder when nothing is carried over; ``feed_to`` hands a lone ``data:``
event to the parser as raw bytes. Both must give exactly the events (data,
type, id, retry) the rules give, for every stream and every way of cutting it.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from core.llm.sse import SSEDecoder, SSEEvent

Row = tuple[str, str, str, int | None]
"""An event as (data, type, id, retry)."""


def reference(stream: bytes) -> list[Row]:
    """The spec's interpretation, written as plainly as possible: the whole
    stream decoded at once, a leading BOM dropped, split at CRLF, CR or LF."""
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = re.split("\r\n|\r|\n", text)
    lines.pop()  # not ended by a line break: never a complete line
    events: list[Row] = []
    data: list[str] | None = None
    kind, last_id, retry = "", "", None
    for line in lines:
        if not line:
            if data is not None:
                events.append(("\n".join(data), kind or "message", last_id, retry))
            data, kind = None, ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data = [*(data or []), value]
        elif name == "event":
            kind = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            retry = int(value)
    return events


def rows(events: list[SSEEvent]) -> list[Row]:
    return [(e.data, e.event, e.id, e.retry) for e in events]


class Recorder:
    """A parser for ``feed_to`` that takes lone data as bytes when ``fast``."""

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self.lone = 0

    def feed(self, event: SSEEvent) -> list[tuple[str, str | None]]:
        return [(event.data, event.event)]

    def feed_data(self, data: bytes) -> list[tuple[str, str | None]] | None:
        if not self.fast:
            return None
        self.lone += 1
        return [(data.decode("utf-8", "replace"), None)]  # the lane does not know the type


def fed(chunks: list[bytes]) -> list[Row]:
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    decoder.close()
    return rows(events)


def fed_to(chunks: list[bytes], parser: Recorder) -> list[tuple[str, str | None]]:
    decoder = SSEDecoder()
    out: list[tuple[str, str | None]] = []
    for chunk in chunks:
        out += decoder.feed_to(chunk, parser)
    return out


LINES = [
    "data: x",
    'data: {"a": 1}',
    "data:y",
    "data",
    "data:",
    "data:  two",
    "data: é🎉",
    "event: t",
    "event:u",
    "id: 1",
    "id: 2\x00",
    "retry: 10",
    "retry: x",
    ": keep-alive",
    "",
    "",
    "data : ignored",
    "\ufeffdata: b",
]
streams = st.builds(
    lambda bom, parts, tail: (b"\xef\xbb\xbf" if bom else b"") + b"".join(parts) + tail,
    st.booleans(),
    st.lists(
        st.builds(
            lambda line, end, junk: line.encode() + junk + end,
            st.sampled_from(LINES),
            st.sampled_from([b"\n", b"\n", b"\n", b"\r", b"\r\n"]),
            st.sampled_from([b"", b"", b"", b"\xff", b"\xe2\x82", b"\xed\xa0\x80"]),
        ),
        max_size=25,
    ),
    st.sampled_from([b"", b"\n", b"data: cut"]),
)


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(stream) + 1) for p in points})
    return [stream[a:b] for a, b in zip([0, *marks], [*marks, len(stream)], strict=True)]


@settings(max_examples=500, deadline=None)
@given(streams, st.lists(st.integers(min_value=0), max_size=10))
def test_any_stream_cut_anywhere_decodes_as_the_rules_say(stream: bytes, points: list[int]) -> None:
    expected = reference(stream)
    assert fed(cut(stream, points)) == expected
    assert fed([stream]) == expected
    assert fed([bytes([b]) for b in stream]) == expected


@settings(max_examples=500, deadline=None)
@given(streams, st.lists(st.integers(min_value=0), max_size=10))
def test_feed_to_gives_the_parser_what_feed_gives(stream: bytes, points: list[int]) -> None:
    chunks = cut(stream, points)
    expected = reference(stream)
    assert fed_to(chunks, Recorder(fast=False)) == [(e[0], e[1]) for e in expected]
    recorder = Recorder(fast=True)
    got = fed_to(chunks, recorder)
    assert [data for data, _ in got] == [e[0] for e in expected]
    assert [kind for _, kind in got if kind is not None] == [
        e[1] for e, (_, kind) in zip(expected, got, strict=True) if kind is not None
    ]


# --- when the lone-event lane may and may not be taken -----------------------------

OPEN = b": open\n\n"  # the first chunk checks the BOM, on the general path


def lane(*chunks: bytes) -> tuple[list[tuple[str, str | None]], int]:
    recorder = Recorder(fast=True)
    return fed_to([OPEN, *chunks], recorder), recorder.lone


def test_lone_data_events_take_the_lane_as_raw_bytes() -> None:
    assert lane(b"data: a\n\n", b"data:b\n\n", b"event: t\ndata: c\n\n", b"data: a\xffb\n\n") == (
        [("a", None), ("b", None), ("c", None), ("a\ufffdb", None)],
        4,
    )


def test_the_first_chunk_never_takes_the_lane() -> None:
    recorder = Recorder(fast=True)
    assert fed_to([b"\xef\xbb\xbfdata: x\n\n", b"data: y\n\n"], recorder) == [
        ("x", "message"),
        ("y", None),
    ]
    assert recorder.lone == 1


def test_nothing_carried_over_may_be_skipped() -> None:
    # pending data, a pending event type, a partial line and a partial UTF-8
    # character each keep the next lone-looking chunk on the general path
    assert lane(b"data: a\n", b"data: b\n\n") == ([("a\nb", "message")], 0)
    assert lane(b"event: t\n", b"data: x\n\n", b"data: y\n\n") == ([("x", "t"), ("y", None)], 1)
    assert lane(b"data: a", b"data: b\n\n") == ([("adata: b", "message")], 0)
    assert lane(b"data: a\n\xe2", b"data: b\n\n") == ([("a", "message")], 0)
    assert lane(b"data: a\r", b"\ndata: b\n\n") == ([("a\nb", "message")], 0)


def test_shapes_that_are_not_one_lone_event() -> None:
    assert lane(
        b"data: a\r\n\r\n",
        b"data: b\n\ndata: c\n\n",
        b"id: 7\ndata: d\n\n",
        b"data: e\ndata: f\n\n",
        b"event: t\n\n",
        b"data: g\n",
        b"\n",
    ) == (
        [
            ("a", "message"),
            ("b", "message"),
            ("c", "message"),
            ("d", "message"),
            ("e\nf", "message"),
            ("g", "message"),
        ],
        0,
    )


def test_after_the_lane_the_decoder_is_as_it_was() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 5\nretry: 300\ndata: first\n\n")
    recorder = Recorder(fast=True)
    assert decoder.feed_to(b"event: t\ndata: lane\n\n", recorder) == [("lane", None)]
    assert not decoder.has_partial_event
    (event,) = decoder.feed(b"data: after\n\n")
    assert event == SSEEvent("after", "message", "5", 300)
