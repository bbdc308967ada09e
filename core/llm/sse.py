"""An incremental Server-Sent Events decoder that follows the WHATWG rules.

The SDKs each bend the spec a little (they dispatch data-less events, keep a
leading BOM, ``int()`` the retry field); providers rely on the exact rules, so
this decoder implements them as written:
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

It is fed arbitrary byte chunks: a UTF-8 character, a CRLF pair or the BOM may
be split across two chunks. It sits on the per-chunk hot path, so lines are
split with ``str.split`` on the common LF-only path rather than char by char,
and a chunk that is whole LF-terminated lines, with nothing carried over from
the previous one, skips the incremental UTF-8 decoder and the carry-over (see
``feed``).
"""

from __future__ import annotations

import codecs
import re
from typing import Protocol, TypeVar

import msgspec

T = TypeVar("T")

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


class SSEEvent(msgspec.Struct, gc=False):
    """One dispatched event. ``event`` defaults to ``"message"`` as the spec says.

    A ``msgspec.Struct`` (fields, ``==`` and ``repr`` as a dataclass's) because
    one is made per chunk and its C ``__init__`` costs a third of a dataclass's."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class SSEParser(Protocol[T]):
    """What ``SSEDecoder.feed_to`` hands events to (the LLM dialects' parsers)."""

    def feed(self, event: SSEEvent) -> list[T]:
        """What one event means."""
        ...

    def feed_data(self, data: bytes) -> list[T] | None:
        """The same for an event with this data, as raw UTF-8 bytes, whatever its
        type; or ``None`` to be given the ``SSEEvent`` instead. A fast path: it
        must answer exactly as ``feed`` would, or decline."""
        ...


class SSEDecoder:
    """Turns a byte stream into ``SSEEvent``s, one ``feed`` call per network chunk."""

    __slots__ = (
        "_bom_checked",
        "_clean",
        "_cr_pending",
        "_data",
        "_event",
        "_has_data",
        "_idle",
        "_pending",
        "_utf8",
        "last_event_id",
        "retry",
    )

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""  # text after the last complete line
        self._cr_pending = False  # the previous chunk ended in CR: a leading LF is its pair
        self._bom_checked = False
        self._clean = False  # see feed: the BOM is checked and nothing is carried over
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self._idle = False  # clean, and no data or event type pending: see feed_to
        self.last_event_id = ""
        """The last event id seen; it carries over to later events, as the spec says."""
        self.retry: int | None = None
        """The reconnection time (ms) from the last valid ``retry`` field."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode one chunk and return the events it completed (often none or one)."""
        if self._clean and chunk[-1:] == b"\n" and 13 not in chunk:  # 13: no CR
            # Fast path: nothing is carried over (no partial line, no partial UTF-8
            # character, no CR awaiting its LF, the BOM already checked) and the
            # chunk is whole LF-terminated lines, so it decodes on its own exactly
            # as the incremental decoder would, and needs no carry-over.
            lines = chunk.decode("utf-8", "replace").split("\n")
            lines.pop()  # the "" after the last LF
            return self._lines(lines)
        self._clean = self._idle = False
        text = self._utf8.decode(chunk)
        if not self._bom_checked:
            text = self._pending + text
            self._pending = ""
            if not text:
                return []
            if text[0] == _BOM:
                text = text[1:]
            self._bom_checked = True
        if not text:
            return []
        if self._cr_pending:
            self._cr_pending = False
            if text[0] == "\n":
                text = text[1:]
        if "\r" in text:
            if text[-1] == "\r":
                # The LF of a CRLF may be in the next chunk; the CR already ends the line.
                self._cr_pending = True
            lines = _LINE_BREAK.split(self._pending + text)
        else:
            lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        # A chunk ending in LF leaves nothing behind: no partial line, no CR, and
        # no partial UTF-8 character (an ASCII byte ends any sequence).
        self._clean = chunk[-1:] == b"\n"
        return self._lines(lines)

    def feed_to(self, chunk: bytes, parser: SSEParser[T]) -> list[T]:
        """Decode one chunk and hand its events to ``parser``; returns what the
        parser made of them (usually nothing or one item).

        A chunk that is one lone event, ``data: …`` (or ``data:…``) and the blank
        line, optionally after an ``event:`` line, goes to ``parser.feed_data``
        as raw bytes first: that is how nearly every token arrives, and it skips
        the UTF-8 decode, the ``SSEEvent`` and the lists. Only when nothing is
        carried over from earlier chunks (no partial line, UTF-8 character or
        CR, no data or event type pending, the BOM already checked), so feeding
        the chunk would dispatch exactly that event (its ``data`` these bytes
        decoded as UTF-8 with replacement) and leave the decoder as it was. If
        the parser declines (``None``), the chunk is fed the general way.
        """
        if self._idle and 13 not in chunk and chunk[-2:] == b"\n\n":  # 13: a CR
            data = chunk[6:-2] if chunk[:6] == b"data: " else _lone_data(chunk)
            if 10 not in data:  # 10: LF, a second line
                items = parser.feed_data(data)
                if items is not None:
                    return items
        events = self.feed(chunk)
        if len(events) == 1:
            return parser.feed(events[0])
        items = []
        for event in events:
            items += parser.feed(event)
        return items

    def _lines(self, lines: list[str]) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        for line in lines:
            if line:
                if line[:6] == "data: ":  # nearly every line: skip the general parse
                    self._data.append(line[6:])
                    self._has_data = True
                else:
                    self._field(line)
            elif self._has_data:
                events.append(self._dispatch())
            else:
                self._event = ""
        self._idle = self._clean and not self._has_data and not self._event
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream. An event not ended by a blank line is discarded (spec), so
        this only resets state; it returns a list for symmetry with ``feed``."""
        self._utf8.decode(b"", final=True)
        self._pending = ""
        self._clean = self._idle = False
        self._data = []
        self._has_data = False
        self._event = ""
        return []

    @property
    def has_partial_event(self) -> bool:
        """Whether bytes of an unfinished event are buffered (a stream cut mid-event)."""
        return bool(self._pending) or self._has_data

    def _field(self, line: str) -> None:
        if line[0] == ":":
            return  # a comment, e.g. ": keep-alive"
        colon = line.find(":")
        if colon == -1:
            name, value = line, ""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == " ":
                value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        # any other field name (including "data " with a space) is ignored

    def _dispatch(self) -> SSEEvent:
        data = self._data[0] if len(self._data) == 1 else "\n".join(self._data)
        event = SSEEvent(data, self._event or "message", self.last_event_id, self.retry)
        self._data = []
        self._has_data = False
        self._event = ""
        return event


def _lone_data(chunk: bytes) -> bytes:
    """The data of a lone event other than ``data: …``: ``data:…`` without the
    space, or after an ``event:`` line; ``b"\n"`` (not lone) for anything else."""
    start = chunk.find(b"\n") + 1 if chunk[:6] == b"event:" else 0
    if chunk[start : start + 6] == b"data: ":
        return chunk[start + 6 : -2]
    if chunk[start : start + 5] == b"data:":
        return chunk[start + 5 : -2]
    return b"\n"
