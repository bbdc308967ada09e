"""An incremental Server-Sent Events decoder that follows the WHATWG rules.

The SDKs each bend the spec a little (they dispatch data-less events, keep a
leading BOM, ``int()`` the retry field); providers rely on the exact rules, so
this decoder implements them as written:
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

It is fed arbitrary byte chunks: a UTF-8 character, a CRLF pair or the BOM may
be split across two chunks. It sits on the per-chunk hot path, so lines are
split with ``str.split`` on the common LF-only path rather than char by char.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event. ``event`` defaults to ``"message"`` as the spec says."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class SSEDecoder:
    """Turns a byte stream into ``SSEEvent``s, one ``feed`` call per network chunk."""

    __slots__ = (
        "_bom_checked",
        "_cr_pending",
        "_data",
        "_event",
        "_has_data",
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
        self._data: list[str] = []
        self._has_data = False
        self._event = ""
        self.last_event_id = ""
        """The last event id seen; it carries over to later events, as the spec says."""
        self.retry: int | None = None
        """The reconnection time (ms) from the last valid ``retry`` field."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode one chunk and return the events it completed (often none or one)."""
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
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream. An event not ended by a blank line is discarded (spec), so
        this only resets state; it returns a list for symmetry with ``feed``."""
        self._utf8.decode(b"", final=True)
        self._pending = ""
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
