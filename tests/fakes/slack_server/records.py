"""What the fake records: messages with every revision, Web API calls and their
answers, assistant statuses, event deliveries and Socket Mode connections; and
message timestamps (``ts``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from tests.fakes.faults import FaultKind
from tests.fakes.slack_server.blocks import blocks_text
from tests.fakes.slack_server.params import JSON


@dataclass
class Revision:
    """One state of a message: as created, then after each update, append or stop."""

    time: float
    method: str
    text: str
    blocks: list[JSON] | None
    markdown: str
    """All markdown streamed so far (streamed messages), or ``markdown_text`` sent."""


@dataclass
class Message:
    """A message as the fake stores it; ``to_slack()`` gives Slack's JSON shape."""

    channel: str
    ts: str
    team: str
    text: str = ""
    blocks: list[JSON] | None = None
    thread_ts: str | None = None
    """The parent's ts for replies; None for top-level messages (even with replies)."""
    user: str | None = None
    bot_id: str | None = None
    app_id: str | None = None
    subtype: str | None = None
    metadata: JSON | None = None
    markdown: str = ""
    source: Literal["text", "markdown", "stream"] = "text"
    """What a user sees: ``text``/``blocks``, ``markdown`` (markdown_text), or the
    streamed markdown (plus the blocks chat.stopStream attached)."""
    streaming: bool = False
    """True between chat.startStream and the stream's end. An expiry is applied when the
    fake next looks at the message (``message()``, ``thread()``, ``bot_messages()`` and
    every API call do), so read it through those rather than ``messages`` directly."""
    stream_started_at: float | None = None
    stream_end: Literal["app", "user", "expired"] | None = None
    recipient_user_id: str | None = None
    recipient_team_id: str | None = None
    chunks: list[JSON] = field(default_factory=list)
    """Non-markdown stream chunks (task/plan updates...), kept for inspection."""
    deleted: bool = False
    edited_ts: str | None = None
    """Set by chat.update (Slack's ``edited.ts``): None if never edited."""
    reactions: list[str] = field(default_factory=list)
    created_at: float = 0.0
    history: list[Revision] = field(default_factory=list)

    @property
    def is_bot(self) -> bool:
        return self.bot_id is not None

    @property
    def rendered(self) -> str:
        """What a user sees in Slack (see ``FakeSlack.rendered``)."""
        if self.deleted:
            return ""
        if self.source == "stream":
            tail = blocks_text(self.blocks) if self.blocks else ""
            return self.markdown + ("\n" + tail if tail else "")
        if self.source == "markdown":
            return self.markdown
        if self.blocks:
            return blocks_text(self.blocks)
        return self.text

    def to_slack(self) -> JSON:
        """The message as conversations.replies/history and API responses show it."""
        out: JSON = {"type": "message", "ts": self.ts, "text": self._visible_text()}
        if self.subtype:
            out["subtype"] = self.subtype
        if self.user:
            out["user"] = self.user
        if self.bot_id:
            out["bot_id"] = self.bot_id
            out["app_id"] = self.app_id
        out["team"] = self.team
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.blocks:
            out["blocks"] = self.blocks
        if self.metadata:
            out["metadata"] = self.metadata
        if self.edited_ts:
            out["edited"] = {"user": self.user, "ts": self.edited_ts}
        if self.reactions:
            counts = Counter(self.reactions)
            out["reactions"] = [{"name": n, "count": c, "users": []} for n, c in counts.items()]
        return out

    def _visible_text(self) -> str:
        if self.source in ("stream", "markdown"):
            return self.markdown
        return self.text

    def _revise(self, time: float, method: str) -> None:
        self.history.append(Revision(time, method, self.text, self.blocks, self.markdown))


@dataclass
class Call:
    """One Web API request and what the fake answered."""

    method: str
    params: JSON
    token: str | None
    time: float
    http_method: str
    content_type: str
    """``application/json``, ``application/x-www-form-urlencoded``, ``multipart/form-data``
    or ``""`` (query string only)."""
    status: int = 0
    response: JSON = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers the fake set (``Retry-After`` on 429s)."""
    answered_at: float | None = None
    """When the answer went out (or the connection was dropped)."""
    ordinal: int = 0
    """1 for the first call to this method, 2 for the next… (what fault rules count)."""
    injected: FaultKind | None = None
    """The fault ``faults`` put on this call; None for a call the fake handled itself
    (its 429s then come from the fake's own rate limits). A ``drop`` leaves ``status``
    at 0: no answer was sent."""

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        error = self.response.get("error")
        return str(error) if error is not None else None


@dataclass
class Status:
    """One assistant.threads.setStatus call (an empty ``status`` clears it)."""

    time: float
    status: str
    loading_messages: list[str] | None


@dataclass
class Delivery:
    """One attempt at delivering an event or interaction to the app under test."""

    transport: Literal["http", "socket"]
    kind: str
    """``events_api``, ``interactive``, ``slash_commands``, ``url_verification``."""
    payload: JSON
    event_id: str | None
    attempt: int
    """0 for the first try, then Slack's retry number (X-Slack-Retry-Num / retry_attempt)."""
    retry_reason: str | None
    sent_at: float
    envelope_id: str | None = None
    connection_id: int | None = None
    acked_at: float | None = None
    """HTTP: when the response arrived (any status). Socket: when the ack arrived, even
    after the deadline (a late ack is recorded but ``error`` stays ``"timeout"``)."""
    status: int | None = None
    response: Any = None
    """HTTP: the parsed JSON body, or its text. Socket: the ack's ``payload``, if any."""
    response_headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    """``timeout``, ``connection_failed``, ``http_error`` or None."""

    @property
    def latency(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.sent_at

    @property
    def acked(self) -> bool:
        """Acknowledged in time, the way Slack judges it (2xx for HTTP)."""
        if self.error is not None or self.acked_at is None:
            return False
        return self.transport == "socket" or (self.status is not None and self.status < 300)


@dataclass
class SocketConnection:
    id: int
    ticket: str
    ws: web.WebSocketResponse
    connected_at: float
    closed_at: float | None = None
    received: list[Any] = field(default_factory=list)
    """Every JSON message the client sent (acks included), in order."""


def is_dm(channel: str) -> bool:
    return channel.startswith("D")


def format_ts(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def parse_ts(ts: str) -> int:
    seconds, _, fraction = ts.partition(".")
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])
