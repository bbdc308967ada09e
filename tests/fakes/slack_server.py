"""A fake Slack on 127.0.0.1: Web API, Socket Mode and Events API delivery, limits included.

Slack can't be reached from the test machines, and a mocked client proves nothing
about the real one: how slack_sdk builds URLs from ``base_url``, sends JSON or form
bodies, reads ``Retry-After`` or opens the Socket Mode WebSocket. So the tests run
the REAL ``AsyncWebClient``/``SocketModeClient``/Bolt ``AsyncApp`` against this
server, which keeps Slack's state (messages, streams, statuses) and enforces the
rules that break streaming bots in production: text and block limits, the native
stream lifecycle, per-method rate limits, 3-second acks and retries.

Usage::

    async with FakeSlack(team_id="T1", bot_user_id="UBOT") as slack:
        client = AsyncWebClient(token="xoxb-test", base_url=slack.api_url)
        event = slack.user_message("C1", "hi <@UBOT>", user="U1", mention=True)
        await slack.deliver_socket(event)          # to a connected Socket Mode app
        await slack.wait_for(lambda: slack.calls_to("chat.stopStream"), timeout=2)
        assert slack.rendered("C1", ts) == "Hello"

What the fake enforces, and how (numbers Slack doesn't publish are marked *assumed*):

- Auth: ``Authorization: Bearer <token>`` or a ``token`` parameter. No token →
  ``not_authed``; a token not in ``bot_tokens``/``app_tokens`` → ``invalid_auth``;
  an app token on a bot method (or the reverse) → ``not_allowed_token_type``.
- Rate limits: a sliding window per (team, method): at most ``Limit.count`` accepted
  calls in any ``Limit.window`` seconds; the call over the limit gets HTTP 429,
  ``Retry-After: <whole seconds until the oldest call leaves the window, ≥ 1>`` and
  ``{"ok": false, "error": "ratelimited"}``; rejected calls don't use up the window.
  Tiers: 1 = 1/min, 2 = 20/min, 3 = 50/min, 4 = 100/min (see ``DEFAULT_LIMITS``).
  ``chat.postMessage`` is limited per (team, channel) — 3 per 3 s, i.e. 1/s with a
  burst of 3 (*assumed* burst) — and per team by ``"chat.postMessage/workspace"``
  (300/min, *assumed*). Slack's real limiter tolerates some burst over a tier; the
  fake doesn't, on purpose: code that passes here has headroom. Pass
  ``limits={"chat.update": Limit(3, 1.0)}`` to exercise a limit in a second, a
  value of ``None`` to lift one, or ``rate_limits=False`` to lift all.
- Text: ``text`` over ``max_text`` (4,000) → ``msg_too_long`` (text above 40,000 is
  truncated when ``max_text`` is raised past it); ``markdown_text`` over 12,000 →
  ``msg_too_long``; blocks: more than 50, a section text over 3,000, a header over
  150, markdown blocks over 12,000 in total, or a duplicate ``block_id`` →
  ``invalid_blocks``.
- Native streaming (``chat.startStream``/``appendStream``/``stopStream``): outside
  DMs (channel ids not starting with ``D``) ``recipient_user_id`` and
  ``recipient_team_id`` are required; ``chat.update`` on a streaming message →
  ``streaming_state_conflict``; a stream older than ``stream_ttl`` (300 s, *assumed*
  from observation) is closed server-side and appends then get
  ``message_not_in_streaming_state``; ``user_stops_stream(ts)`` makes appends (and
  the final stop) answer ``stopped_by_user``; ``native_streaming=False`` makes the
  three methods answer ``streaming_error`` (``feature_not_enabled``). A streamed
  message takes at most ``stream_byte_cap`` (11,000, *assumed*: other bots report
  appends failing around 10.6–11.3k UTF-8 bytes; Slack documents no number) bytes
  of markdown: an append or stop that would pass it gets ``msg_too_long`` (our
  choice of error: Slack's own is unknown) and is not applied.

Direct messages, in either of Slack's two experiences (``experience``): with
``"assistant"`` (manifest ``assistant_view``) ``user_opens_assistant_thread``
stores the thread root Slack makes (``subtype: "assistant_app_thread"``) and
returns ``assistant_thread_started``; with ``"agent"`` (``agent_view``, Slack's
"Migrating to the Agent messaging experience") ``user_opens_dm`` returns
``app_home_opened`` with ``tab: "messages"`` and no root is made: the user's
top-level message is the root. ``assistant.threads.setSuggestedPrompts`` takes
an optional ``thread_ts`` (without it the prompts go with the channel, recorded
under ``(channel, "")``); an agent app's call WITH one answers ok but is lost
(``lost_prompts``), as Slack's reference says it "will silently fail".

Faults: ``slack.faults`` (a ``tests.fakes.faults.FaultSchedule`` keyed by method
name) injects 429s, 500s, ``internal_error``, slow answers and dropped connections on
chosen calls, or at random from a seed; ``fail()`` adds a rule to it. Each ``Call``
records its ``ordinal`` and the fault it got (``injected``);
``natural_429s()`` counts only the 429s the fake's own limits answered.

Time: everything the fake measures uses ``clock`` (default ``time.monotonic``; pass
a settable clock to expire streams or empty rate windows without sleeping). Only
what the app checks against the wall clock — the signing timestamp, ``event_time``
— uses ``time.time()``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import math
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from tests.fakes.faults import (
    Fault,
    FaultKind,
    FaultSchedule,
    kind_for_status,
    retry_after_header,
)

JSON = dict[str, Any]
Clock = Callable[[], float]

# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limit:
    """At most ``count`` accepted calls in any ``window`` seconds (a sliding window)."""

    count: int
    window: float = 60.0


TIER_1 = Limit(1)
TIER_2 = Limit(20)
TIER_3 = Limit(50)
TIER_4 = Limit(100)

POST_MESSAGE_WORKSPACE = "chat.postMessage/workspace"
"""Key in ``limits`` for the team-wide chat.postMessage cap (the plain key is per channel)."""

DEFAULT_LIMITS: Mapping[str, Limit | None] = {
    "auth.test": TIER_4,
    # Tier 1 is "1+ per minute"; 10 in a minute lets multi-connection and reconnect
    # tests run, which Slack tolerates in practice (assumed).
    "apps.connections.open": Limit(10),
    # "1 per second per channel", with "generous bursts" (Slack's words): 3 in any 3 s
    # keeps the 1/s average and allows a burst of 3 (the burst size is assumed).
    "chat.postMessage": Limit(3, 3.0),
    POST_MESSAGE_WORKSPACE: Limit(300),
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.postEphemeral": TIER_4,
    "chat.startStream": TIER_2,
    "chat.appendStream": TIER_4,
    "chat.stopStream": TIER_2,
    # Slack documents "special" limits for assistant.threads.*; the numbers are
    # assumed: the status as generous as the load issue budgets it (600 a minute),
    # its siblings as Tier 3.
    "assistant.threads.setStatus": Limit(600),
    "assistant.threads.setSuggestedPrompts": TIER_3,
    "assistant.threads.setTitle": TIER_3,
    "conversations.replies": TIER_3,
    "conversations.history": TIER_3,
    "users.info": TIER_4,
    "usergroups.users.list": TIER_2,
    "reactions.add": TIER_3,
    "reactions.remove": TIER_2,
}

STREAM_METHODS = frozenset({"chat.startStream", "chat.appendStream", "chat.stopStream"})
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3_000
MAX_HEADER_TEXT = 150
MAX_MARKDOWN_BLOCKS_TEXT = 12_000
MAX_MARKDOWN_TEXT = 12_000
STREAM_BYTE_CAP = 11_000
"""Bytes of markdown one streamed message takes before appends fail (*assumed*)."""
MAX_LOADING_MESSAGES = 10
MAX_SUGGESTED_PROMPTS = 4
STATUS_AUTO_CLEAR = 120.0


class _SlidingWindows:
    """Per-key lists of accepted call times; old ones drop out of the window lazily."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, ...], deque[float]] = {}

    def wait(self, key: tuple[str, ...], limit: Limit, now: float) -> float:
        """Seconds until a slot frees (0 when one is free now)."""
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - limit.window:
            hits.popleft()
        if len(hits) < limit.count:
            return 0.0
        return max(hits[0] + limit.window - now, 0.0)

    def hit(self, key: tuple[str, ...], now: float) -> None:
        self._hits.setdefault(key, deque()).append(now)

    def clear(self) -> None:
        self._hits.clear()


# --------------------------------------------------------------------------- records


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


class SlackError(Exception):
    """Raised by a method handler: becomes ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, status: int = 200, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra


class _Signal:
    """Wakes every waiter on each change, so waits can re-check a condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_until(self, ready: Callable[[], object]) -> None:
        while not ready():
            await self._event.wait()


# --------------------------------------------------------------------------- blocks


def blocks_text(blocks: Iterable[JSON]) -> str:
    """The readable text of blocks, one line per block with text (controls skipped)."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        parts: list[str] = []
        if kind in ("section", "header"):
            parts.append(_text_of(block.get("text")))
            parts.extend(_text_of(f) for f in block.get("fields") or ())
        elif kind == "markdown":
            parts.append(str(block.get("text", "")))
        elif kind == "context":
            parts.extend(_text_of(e) for e in block.get("elements") or ())
        elif kind == "rich_text":
            parts.append(_rich_text(block.get("elements") or []))
        text = "\n".join(p for p in parts if p)
        if text:
            lines.append(text)
    return "\n".join(lines)


def _text_of(obj: Any) -> str:
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return ""


def _rich_text(elements: list[Any]) -> str:
    out: list[str] = []
    for element in elements:
        if not isinstance(element, dict):
            continue
        if "text" in element and isinstance(element["text"], str):
            out.append(element["text"])
        if isinstance(element.get("elements"), list):
            out.append(_rich_text(element["elements"]))
        if element.get("type") == "user":
            out.append(f"<@{element.get('user_id')}>")
    return "".join(out)


def validate_blocks(raw: Any) -> list[JSON]:
    """Slack's checks that matter to a streaming bot; raises SlackError otherwise."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise SlackError("invalid_blocks_format") from None
    if not isinstance(raw, list):
        raise SlackError("invalid_blocks_format")
    errors: list[str] = []
    if len(raw) > MAX_BLOCKS:
        errors.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    markdown_total = 0
    block_ids: set[str] = set()
    for index, block in enumerate(raw):
        pointer = f"[json-pointer:/blocks/{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            errors.append(f"must be an object with a type {pointer}]")
            continue
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in block_ids:
                errors.append(f"duplicate block_id {block_id} {pointer}/block_id]")
            block_ids.add(block_id)
        kind = block["type"]
        if kind == "section":
            text = _text_of(block.get("text"))
            if not text and not block.get("fields"):
                errors.append(f"must provide text or fields {pointer}]")
            if len(text) > MAX_SECTION_TEXT:
                errors.append(
                    f"must be less than {MAX_SECTION_TEXT + 1} characters {pointer}/text/text]"
                )
        elif kind == "header":
            if len(_text_of(block.get("text"))) > MAX_HEADER_TEXT:
                errors.append(
                    f"must be less than {MAX_HEADER_TEXT + 1} characters {pointer}/text/text]"
                )
        elif kind == "markdown":
            markdown_total += len(str(block.get("text", "")))
    if markdown_total > MAX_MARKDOWN_BLOCKS_TEXT:
        errors.append(
            f"markdown blocks hold {markdown_total} characters, over the cumulative "
            f"{MAX_MARKDOWN_BLOCKS_TEXT} [json-pointer:/blocks]"
        )
    if errors:
        raise SlackError(
            "invalid_blocks",
            errors=errors,
            response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
        )
    return raw


# --------------------------------------------------------------------------- signing


def sign(signing_secret: str, timestamp: int | str, body: bytes | str) -> str:
    """``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}``, as Slack signs requests."""
    raw = body.encode() if isinstance(body, str) else body
    base = f"v0:{timestamp}:".encode() + raw
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def signature_headers(
    signing_secret: str, body: bytes | str, timestamp: int | None = None
) -> dict[str, str]:
    """The two headers a signed Slack request carries (wall-clock timestamp by default)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": sign(signing_secret, ts, body),
    }


# --------------------------------------------------------------------------- event builders


def app_mention(
    user: str,
    text: str,
    channel: str,
    ts: str,
    thread_ts: str | None = None,
    *,
    team: str = "T1",
) -> JSON:
    """An ``app_mention`` event (``text`` should contain ``<@BOT_USER_ID>``)."""
    event: JSON = {
        "type": "app_mention",
        "user": user,
        "text": text,
        "ts": ts,
        "team": team,
        "channel": channel,
        "event_ts": ts,
        "client_msg_id": str(uuid.uuid4()),
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def message(
    user: str | None,
    text: str,
    channel: str,
    ts: str,
    thread_ts: str | None = None,
    *,
    subtype: str | None = None,
    bot_id: str | None = None,
    channel_type: str = "channel",
    team: str = "T1",
) -> JSON:
    """A ``message`` event; ``bot_id`` marks it as a bot's (our own, say)."""
    event: JSON = {
        "type": "message",
        "text": text,
        "ts": ts,
        "team": team,
        "channel": channel,
        "event_ts": ts,
        "channel_type": channel_type,
    }
    if user is not None:
        event["user"] = user
    if subtype is not None:
        event["subtype"] = subtype
    if bot_id is not None:
        event["bot_id"] = bot_id
    else:
        event["client_msg_id"] = str(uuid.uuid4())
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def message_im(
    user: str,
    text: str,
    channel: str,
    ts: str,
    thread_ts: str | None = None,
    *,
    team: str = "T1",
) -> JSON:
    """A direct message to the bot (``channel_type: im``)."""
    return message(user, text, channel, ts, thread_ts, channel_type="im", team=team)


def message_changed(
    channel: str, new: JSON, previous: JSON, *, ts: str, channel_type: str = "channel"
) -> JSON:
    """The event Slack sends when a message is edited (each of our own edits, too)."""
    return {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "channel": channel,
        "channel_type": channel_type,
        "ts": ts,
        "event_ts": ts,
        "message": new,
        "previous_message": previous,
    }


def assistant_thread_started(
    user: str,
    channel: str,
    thread_ts: str,
    *,
    context_channel: str | None = None,
    team: str = "T1",
    event_ts: str | None = None,
) -> JSON:
    """A user opened the assistant container (``channel`` is the DM, ``D…``)."""
    context: JSON = {"team_id": team, "enterprise_id": None}
    if context_channel is not None:
        context["channel_id"] = context_channel
    return {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": user,
            "context": context,
            "channel_id": channel,
            "thread_ts": thread_ts,
        },
        "event_ts": event_ts or thread_ts,
    }


def app_home_opened(
    user: str,
    channel: str,
    *,
    tab: str = "messages",
    event_ts: str,
    view: JSON | None = None,
) -> JSON:
    """A user entered the app's DM (``tab: "messages"``) or Home tab (``"home"``,
    with the published ``view`` if there is one), as Slack sends it each time."""
    event: JSON = {
        "type": "app_home_opened",
        "user": user,
        "channel": channel,
        "tab": tab,
        "event_ts": event_ts,
    }
    if view is not None:
        event["view"] = view
    return event


# --------------------------------------------------------------------------- the fake


Handler = Callable[[JSON], JSON]


class FakeSlack:
    def __init__(
        self,
        *,
        team_id: str = "T1",
        team_name: str = "Fake Workspace",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        app_id: str = "A1",
        bot_tokens: Iterable[str] = ("xoxb-test",),
        app_tokens: Iterable[str] = ("xapp-test",),
        native_streaming: bool = True,
        streaming_error: str = "feature_not_enabled",
        stream_ttl: float = 300.0,
        max_text: int = 4_000,
        truncate_text: int = 40_000,
        limits: Mapping[str, Limit | None] | None = None,
        rate_limits: bool = True,
        replies_page_limit: int | None = None,
        max_socket_connections: int = 10,
        retry_delays: tuple[float, ...] = (0.0, 0.0, 0.0),
        clock: Clock = time.monotonic,
        verification_token: str = "verification-token",
        experience: Literal["assistant", "agent"] = "assistant",
    ) -> None:
        self.team_id = team_id
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.bot_tokens: set[str] = set(bot_tokens)
        """Valid bot tokens; remove one to make it ``invalid_auth``."""
        self.app_tokens: set[str] = set(app_tokens)
        self.native_streaming = native_streaming
        """False: the stream methods answer ``streaming_error`` (change it any time)."""
        self.streaming_error = streaming_error
        self.stream_ttl = stream_ttl
        self.stream_byte_cap: int | None = STREAM_BYTE_CAP
        """UTF-8 bytes one streamed message takes (None: no cap); see the module doc."""
        self.max_text = max_text
        self.truncate_text = truncate_text
        self.limits: dict[str, Limit | None] = {**DEFAULT_LIMITS, **(limits or {})}
        """Per method; edit freely (``None`` lifts a limit)."""
        self.rate_limits = rate_limits
        self.replies_page_limit = replies_page_limit
        """Cap on conversations.replies/history page size (Slack gives 15 to
        non-Marketplace commercial apps); None means the caller's ``limit``."""
        self.usergroups: dict[str, list[str]] = {}
        """User group id -> member ids, for ``usergroups.users.list``."""
        self.max_socket_connections = max_socket_connections
        self.retry_delays = retry_delays
        """Seconds before each Slack retry (real Slack: about 0, 60, 300)."""
        self.clock = clock
        self.verification_token = verification_token
        self.experience = experience
        """The app's DM experience: ``assistant_view`` or ``agent_view`` (module doc)."""

        # Inspectable state.
        self.messages: dict[str, dict[str, Message]] = {}
        """channel → ts → message (deleted ones stay, flagged)."""
        self.ephemerals: list[JSON] = []
        self.calls: list[Call] = []
        self.rate_limited: Counter[str] = Counter()
        """429s answered per method: the fake's own AND injected ones (see
        ``natural_429s()`` and ``faults.count(kind="429")`` to tell them apart)."""
        self.statuses: dict[tuple[str, str], list[Status]] = {}
        """(channel, thread_ts) → every assistant.threads.setStatus call."""
        self.suggested_prompts: dict[tuple[str, str], list[JSON]] = {}
        """(channel, thread_ts) → every setSuggestedPrompts call's params (thread_ts
        ``""`` when the call named none)."""
        self.lost_prompts: list[JSON] = []
        """setSuggestedPrompts calls Slack answered ok but dropped (an agent app's
        call with a ``thread_ts``)."""
        self.titles: dict[tuple[str, str], list[str]] = {}
        self.reactions: list[tuple[str, str, str]] = []
        """(channel, timestamp, name) for each successful reactions.add."""
        self.users: dict[str, JSON] = {}
        """users.info answers by id; unknown ids get a made-up human user."""
        self.deliveries: list[Delivery] = []
        self.connections: list[SocketConnection] = []
        """Every Socket Mode connection ever accepted (closed ones have ``closed_at``)."""
        self.stray_acks: list[Any] = []
        """Messages from Socket Mode clients that matched no pending envelope."""

        self._delays: dict[str, float] = {}
        self._windows = _SlidingWindows()
        self._ts_micros = 1_700_000_000 * 1_000_000
        self._tickets: set[str] = set()
        self._unacked: dict[str, Delivery] = {}
        """envelope_id → delivery not acked yet (kept after a timeout, for late acks)."""
        self._ack_waiters: dict[str, asyncio.Future[None]] = {}
        self._round_robin = itertools.count()
        self._connection_ids = itertools.count(1)
        self._signal = _Signal()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port: int | None = None
        self._handlers: dict[str, Handler] = {
            "api.test": lambda p: {"args": p},
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setSuggestedPrompts": self._set_suggested_prompts,
            "assistant.threads.setTitle": self._set_title,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
        }
        self.faults = FaultSchedule(known=lambda method: method in self._handlers)
        """Scripted and seeded faults per Web API method (see ``tests.fakes.faults``):
        ``slack.faults.add("chat.appendStream", "429", retry_after=2)``,
        ``slack.faults.schedule(seed, ["chat.update"], p_500=0.1)``. A faulted call
        (other than ``slow``) is answered after the token check and before the rate
        limits and the method itself: it changes nothing and uses up no window."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("already started")
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/socket", self._handle_socket)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        """Fails pending deliveries, closes every WebSocket, then the server."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for waiter in self._ack_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("fake Slack stopped"))
        await self.close_sockets()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await runner.cleanup()
        self._port = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("fake Slack not started")
        return self._port

    @property
    def api_url(self) -> str:
        """slack_sdk's ``base_url`` form: ``http://127.0.0.1:PORT/api/`` (trailing slash)."""
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def socket_url(self) -> str:
        """The Socket Mode endpoint; apps.connections.open adds ``?ticket=…``."""
        return f"ws://127.0.0.1:{self.port}/socket"

    # ------------------------------------------------------------------ scripting

    def next_ts(self) -> str:
        """A fresh message ts, strictly increasing (``1700000000.000100`` onwards)."""
        self._ts_micros += 100
        return _format_ts(self._ts_micros)

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str | None = "U1",
        ts: str | None = None,
        thread_ts: str | None = None,
        bot_id: str | None = None,
        blocks: list[JSON] | None = None,
        subtype: str | None = None,
    ) -> Message:
        """Put a message in Slack's history (a user's, by default) without an API call."""
        if ts is None:
            ts = self.next_ts()
        else:
            self._ts_micros = max(self._ts_micros, _parse_ts(ts))
        record = Message(
            channel=channel,
            ts=ts,
            team=self.team_id,
            text=text,
            blocks=blocks,
            thread_ts=thread_ts if thread_ts != ts else None,
            user=user,
            bot_id=bot_id,
            subtype=subtype,
            created_at=self.clock(),
        )
        record._revise(record.created_at, "add_message")
        self.messages.setdefault(channel, {})[ts] = record
        self._signal.fire()
        return record

    def user_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U1",
        thread_ts: str | None = None,
        mention: bool = False,
    ) -> JSON:
        """A user writes ``text``: stored in history, and returned as the event Slack would
        send (``app_mention`` when ``mention``, else ``message`` — ``im`` in ``D…`` channels)."""
        if mention and f"<@{self.bot_user_id}>" not in text:
            text = f"<@{self.bot_user_id}> {text}"
        record = self.add_message(channel, text, user=user, thread_ts=thread_ts)
        if mention:
            return app_mention(user, text, channel, record.ts, thread_ts, team=self.team_id)
        channel_type = "im" if _is_dm(channel) else "channel"
        event = message(
            user, text, channel, record.ts, thread_ts, channel_type=channel_type, team=self.team_id
        )
        parent = self.messages.get(channel, {}).get(thread_ts or "")
        if parent is not None and parent.user:
            event["parent_user_id"] = parent.user
        return event

    def user_opens_dm(self, channel: str, *, user: str = "U1") -> JSON:
        """Agent experience: the user opens the app's DM; Slack sends ``app_home_opened``
        (every time) and makes no thread root."""
        return app_home_opened(user, channel, tab="messages", event_ts=self.next_ts())

    def user_opens_assistant_thread(self, channel: str, *, user: str = "U1") -> JSON:
        """Assistant experience: the user opens the assistant container; Slack makes the
        thread's root message (``subtype: "assistant_app_thread"``, from the user) and
        sends ``assistant_thread_started``."""
        root = self.add_message(channel, "New chat", user=user, subtype="assistant_app_thread")
        return assistant_thread_started(user, channel, root.ts, team=self.team_id)

    def user_stops_stream(self, ts: str, channel: str | None = None) -> None:
        """The user pressed stop in Slack's UI: the stream ends; appends get ``stopped_by_user``."""
        record = self._find(ts, channel)
        if record is None:
            raise KeyError(f"no message with ts {ts}")
        record.streaming = False
        record.stream_end = "user"
        record._revise(self.clock(), "user_stops_stream")
        self._signal.fire()

    def fail(
        self,
        method: str,
        error: str = "internal_error",
        *,
        status: int = 200,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """The next ``times`` calls to ``method`` answer ``error`` (after auth checks).
        ``status=429`` with ``retry_after`` fakes a rate limit; 500/503 a Slack outage.
        A rule of ``faults`` (recorded like any injected fault)."""
        kind = kind_for_status(status, error)
        fault = Fault(kind, retry_after=retry_after, status=status, error=error)
        self.faults.add_rule(fault, key=method, count=times)

    def set_delay(self, method: str, seconds: float) -> None:
        """Slack takes ``seconds`` before answering every call to ``method`` (0 to undo).
        Not recorded as a fault; ``faults.add(method, "slow", delay=…)`` is, per call."""
        self._delays[method] = seconds

    def reset_rate_limits(self) -> None:
        """Empty every window (as if a minute had passed everywhere)."""
        self._windows.clear()

    # ------------------------------------------------------------------ inspecting

    def message(self, channel: str, ts: str) -> Message:
        """The stored message, with an expired stream marked as ended."""
        record = self.messages[channel][ts]
        self._refresh_stream(record)
        return record

    def rendered(self, channel: str, ts: str) -> str:
        """What a user sees: the streamed markdown (then any text of the blocks
        chat.stopStream attached), else ``markdown_text``, else the blocks' text (they
        win over ``text``), else ``text``. Empty for deleted messages."""
        return self.message(channel, ts).rendered

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The parent (if known) and its replies, oldest first; deleted ones left out."""
        found = [
            m
            for m in self.messages.get(channel, {}).values()
            if not m.deleted and (m.ts == thread_ts or m.thread_ts == thread_ts)
        ]
        for m in found:
            self._refresh_stream(m)
        return sorted(found, key=lambda m: _parse_ts(m.ts))

    def bot_messages(self, channel: str | None = None) -> list[Message]:
        """Every non-deleted message the bot posted or streamed, oldest first."""
        channels = [channel] if channel is not None else list(self.messages)
        found = [
            m
            for c in channels
            for m in self.messages.get(c, {}).values()
            if m.bot_id == self.bot_id and not m.deleted
        ]
        for m in found:
            self._refresh_stream(m)
        return sorted(found, key=lambda m: _parse_ts(m.ts))

    def calls_to(self, method: str, *, ok: bool | None = None) -> list[Call]:
        """Calls to one method, optionally only the successful (or failed) ones."""
        return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    def natural_429s(self, method: str | None = None) -> int:
        """429s the fake's own rate limits answered (injected ones left out): what a
        bot that paces itself within Slack's limits never causes."""
        return sum(
            1
            for c in self.calls
            if c.status == 429 and c.injected is None and (method is None or c.method == method)
        )

    def injected_calls(self, kind: str | None = None) -> list[Call]:
        """Calls ``faults`` put a fault on, optionally of one kind."""
        return [c for c in self.calls if c.injected is not None and kind in (None, c.injected)]

    def status(self, channel: str, thread_ts: str) -> str:
        """The assistant status a user sees now ("" when none or auto-cleared)."""
        history = self.statuses.get((channel, thread_ts))
        if not history:
            return ""
        last = history[-1]
        if self.clock() - last.time >= STATUS_AUTO_CLEAR:
            return ""
        return last.status

    @property
    def open_connections(self) -> list[SocketConnection]:
        return [c for c in self.connections if c.closed_at is None]

    # The waits take a defaulted ``timeout`` (hence ASYNC109) so that every wait in a
    # test is bounded without each call wrapping itself in asyncio.timeout.
    async def wait_for(self, condition: Callable[[], object], timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Until ``condition()`` is truthy, re-checked after every change the fake sees
        (a call answered, a message stored, a socket connected or acked)."""
        async with asyncio.timeout(timeout):
            await self._signal.wait_until(condition)

    async def wait_connected(self, timeout: float = 5.0, count: int = 1) -> None:  # noqa: ASYNC109
        """Until ``count`` Socket Mode connections are open (and greeted with hello)."""
        await self.wait_for(lambda: len(self.open_connections) >= count, timeout)

    async def wait_calls(self, method: str, count: int = 1, timeout: float = 2.0) -> Call:  # noqa: ASYNC109
        """The ``count``-th answered call to ``method`` (1-based)."""

        def answered() -> list[Call]:
            return [c for c in self.calls_to(method) if c.answered_at is not None]

        await self.wait_for(lambda: len(answered()) >= count, timeout)
        return answered()[count - 1]

    # ------------------------------------------------------------------ Web API plumbing

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, content_type = await _read_params(request)
        token = _bearer(request.headers.get("Authorization"))
        body_token = params.pop("token", None)
        if token is None and isinstance(body_token, str):
            token = body_token
        call = Call(
            method=method,
            params=params,
            token=token,
            time=self.clock(),
            http_method=request.method,
            content_type=content_type,
            ordinal=self.faults.arrive(method),
        )
        self.calls.append(call)
        delay = self._delays.get(method, 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        answer = self._refuse(call)
        if answer is None:
            fault = self.faults.take(method, call.ordinal, method)
            if fault is not None:
                call.injected = fault.kind
                if fault.delay > 0:
                    await asyncio.sleep(fault.delay)
                if fault.kind == "drop":
                    return self._drop(request, call)
                if fault.kind != "slow":
                    answer = _fault_answer(fault)
                    if answer[0] == 429:
                        self.rate_limited[method] += 1
        if answer is None:
            answer = self._dispatch(call)
        status, body, headers = answer
        call.status, call.response, call.headers = status, body, headers
        call.answered_at = self.clock()
        self._signal.fire()
        return web.json_response(body, status=status, headers=headers)

    def _drop(self, request: web.Request, call: Call) -> web.Response:
        """Closes the connection with no answer; aiohttp's attempt to send the returned
        response then fails quietly on the closed transport."""
        if request.transport is not None:
            request.transport.close()
        call.answered_at = self.clock()
        self._signal.fire()
        return web.Response(status=500)

    def _refuse(self, call: Call) -> tuple[int, JSON, dict[str, str]] | None:
        """What Slack answers before it looks at a call's arguments: unknown method, bad
        token, streaming not enabled. None when the call may go on."""
        method = call.method
        if method not in self._handlers:
            return 200, {"ok": False, "error": "unknown_method", "req_method": method}, {}
        if method != "api.test":
            auth_error = self._check_token(method, call.token)
            if auth_error is not None:
                return 200, {"ok": False, "error": auth_error}, {}
        if method in STREAM_METHODS and not self.native_streaming:
            return 200, {"ok": False, "error": self.streaming_error}, {}
        return None

    def _dispatch(self, call: Call) -> tuple[int, JSON, dict[str, str]]:
        """Rate limits, then the method itself."""
        method = call.method
        wait = self._rate_limit_wait(method, call.params)
        if wait is not None:
            self.rate_limited[method] += 1
            retry_after = str(max(1, math.ceil(wait)))
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": retry_after}
        try:
            result = self._handlers[method](call.params)
        except SlackError as exc:
            return exc.status, {"ok": False, "error": exc.error, **exc.extra}, {}
        return 200, {"ok": True, **result}, {}

    def _check_token(self, method: str, token: str | None) -> str | None:
        if not token:
            return "not_authed"
        if token not in self.bot_tokens and token not in self.app_tokens:
            return "invalid_auth"
        wants_app = method in APP_TOKEN_METHODS
        if wants_app != (token in self.app_tokens):
            return "not_allowed_token_type"
        return None

    def _rate_limit_wait(self, method: str, params: JSON) -> float | None:
        """None when the call may go ahead (and counts it); else seconds to wait."""
        if not self.rate_limits:
            return None
        checks: list[tuple[tuple[str, ...], Limit]] = []
        limit = self.limits.get(method)
        if method == "chat.postMessage":
            channel = str(params.get("channel", ""))
            if limit is not None:
                checks.append(((self.team_id, method, channel), limit))
            workspace = self.limits.get(POST_MESSAGE_WORKSPACE)
            if workspace is not None:
                checks.append(((self.team_id, POST_MESSAGE_WORKSPACE), workspace))
        elif limit is not None:
            checks.append(((self.team_id, method), limit))
        now = self.clock()
        wait = max((self._windows.wait(key, lim, now) for key, lim in checks), default=0.0)
        if wait > 0:
            return wait
        for key, _ in checks:
            self._windows.hit(key, now)
        return None

    # ------------------------------------------------------------------ Web API methods

    def _auth_test(self, p: JSON) -> JSON:
        return {
            "url": "https://fake.slack.com/",
            "team": self.team_name,
            "user": "chatrelay",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, p: JSON) -> JSON:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"url": f"{self.socket_url}?ticket={ticket}&app_id={self.app_id}"}

    def _chat_post_message(self, p: JSON) -> JSON:
        channel = _need(p, "channel", "channel_not_found")
        text, blocks, markdown = self._content(p, required=True)
        thread_ts = _opt_str(p, "thread_ts")
        metadata = _json_param(p, "metadata")
        record = self._new_bot_message(channel, thread_ts)
        record.text, record.blocks = text, blocks
        if markdown is not None:
            record.markdown, record.source, record.text = markdown, "markdown", markdown
        record.metadata = metadata if isinstance(metadata, dict) else None
        record._revise(record.created_at, "chat.postMessage")
        self._store(record)
        return {"channel": channel, "ts": record.ts, "message": record.to_slack()}

    def _chat_update(self, p: JSON) -> JSON:
        channel = _need(p, "channel", "channel_not_found")
        ts = _need(p, "ts", "message_not_found")
        record = self._existing(channel, ts)
        if record.bot_id != self.bot_id:
            raise SlackError("cant_update_message")
        if record.streaming:
            raise SlackError("streaming_state_conflict")
        text, blocks, markdown = self._content(p, required=True)
        if markdown is not None:
            record.markdown, record.source, record.text = markdown, "markdown", markdown
            record.blocks = None
        else:
            record.source = "text"
            if text or blocks is None:
                record.text = text
            if blocks is not None:
                record.blocks = blocks
        metadata = _json_param(p, "metadata")
        if isinstance(metadata, dict):
            record.metadata = metadata
        record.edited_ts = self.next_ts()
        record._revise(self.clock(), "chat.update")
        return {
            "channel": channel,
            "ts": ts,
            "text": record._visible_text(),
            "message": record.to_slack(),
        }

    def _chat_delete(self, p: JSON) -> JSON:
        channel = _need(p, "channel", "channel_not_found")
        ts = _need(p, "ts", "message_not_found")
        record = self._existing(channel, ts)
        if record.bot_id != self.bot_id:
            raise SlackError("cant_delete_message")
        record.deleted = True
        record.streaming = False
        record._revise(self.clock(), "chat.delete")
        return {"channel": channel, "ts": ts}

    def _chat_post_ephemeral(self, p: JSON) -> JSON:
        channel = _need(p, "channel", "channel_not_found")
        user = _need(p, "user", "user_not_found")
        text, blocks, _ = self._content(p, required=True)
        ts = self.next_ts()
        self.ephemerals.append(
            {
                "channel": channel,
                "user": user,
                "text": text,
                "blocks": blocks,
                "thread_ts": _opt_str(p, "thread_ts"),
                "message_ts": ts,
                "time": self.clock(),
            }
        )
        return {"message_ts": ts}

    def _chat_start_stream(self, p: JSON) -> JSON:
        channel = _need(p, "channel", "channel_not_found")
        thread_ts = _need(p, "thread_ts", "invalid_arguments")
        recipient_user = _opt_str(p, "recipient_user_id")
        recipient_team = _opt_str(p, "recipient_team_id")
        if not _is_dm(channel):
            if not recipient_user:
                raise SlackError("missing_recipient_user_id")
            if not recipient_team:
                raise SlackError("missing_recipient_team_id")
        markdown, chunks = self._stream_markdown(p, required=False)
        if self.stream_byte_cap is not None and len(markdown.encode()) > self.stream_byte_cap:
            raise SlackError("msg_too_long")
        record = self._new_bot_message(channel, thread_ts)
        record.chunks.extend(chunks)
        record.source = "stream"
        record.streaming = True
        record.stream_started_at = record.created_at
        record.recipient_user_id, record.recipient_team_id = recipient_user, recipient_team
        record.markdown = markdown
        record.text = markdown
        record._revise(record.created_at, "chat.startStream")
        self._store(record)
        return {"channel": channel, "ts": record.ts}

    def _check_stream_size(self, record: Message, markdown: str) -> None:
        size = len((record.markdown + markdown).encode("utf-8"))
        if self.stream_byte_cap is not None and size > self.stream_byte_cap:
            raise SlackError("msg_too_long")

    def _chat_append_stream(self, p: JSON) -> JSON:
        channel = _need(p, "channel", "channel_not_found")
        ts = _need(p, "ts", "message_not_found")
        record = self._streaming(channel, ts)
        markdown, chunks = self._stream_markdown(p, required=True)
        self._check_stream_size(record, markdown)
        record.chunks.extend(chunks)
        record.markdown += markdown
        record.text = record.markdown
        record._revise(self.clock(), "chat.appendStream")
        return {"channel": channel, "ts": ts}

    def _chat_stop_stream(self, p: JSON) -> JSON:
        channel = _need(p, "channel", "channel_not_found")
        ts = _need(p, "ts", "message_not_found")
        record = self._streaming(channel, ts)
        markdown, chunks = self._stream_markdown(p, required=False)
        self._check_stream_size(record, markdown)
        record.chunks.extend(chunks)
        blocks = validate_blocks(p["blocks"]) if p.get("blocks") is not None else None
        metadata = _json_param(p, "metadata")
        record.markdown += markdown
        record.text = record.markdown
        if blocks is not None:
            record.blocks = blocks
        if isinstance(metadata, dict):
            record.metadata = metadata
        record.streaming = False
        record.stream_end = "app"
        record._revise(self.clock(), "chat.stopStream")
        return {"channel": channel, "ts": ts, "message": record.to_slack()}

    def _set_status(self, p: JSON) -> JSON:
        channel = _need(p, "channel_id", "channel_not_found")
        thread_ts = _need(p, "thread_ts", "invalid_thread_ts")
        if "status" not in p:
            raise SlackError("invalid_arguments")
        loading = _json_param(p, "loading_messages")
        if loading is not None and (
            not isinstance(loading, list) or len(loading) > MAX_LOADING_MESSAGES
        ):
            raise SlackError("invalid_arguments")
        entry = Status(self.clock(), str(p["status"]), loading)
        self.statuses.setdefault((channel, thread_ts), []).append(entry)
        return {}

    def _set_suggested_prompts(self, p: JSON) -> JSON:
        channel = _need(p, "channel_id", "channel_not_found")
        thread_ts = _opt_str(p, "thread_ts") or ""
        prompts = _json_param(p, "prompts")
        if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_SUGGESTED_PROMPTS:
            raise SlackError("invalid_arguments")
        entry = {"prompts": prompts, "title": _opt_str(p, "title"), "time": self.clock()}
        if thread_ts and self.experience == "agent":
            self.lost_prompts.append({**entry, "channel": channel, "thread_ts": thread_ts})
            return {}  # Slack: "will cause the call to silently fail"
        self.suggested_prompts.setdefault((channel, thread_ts), []).append(entry)
        return {}

    def _set_title(self, p: JSON) -> JSON:
        channel = _need(p, "channel_id", "channel_not_found")
        thread_ts = _need(p, "thread_ts", "invalid_thread_ts")
        title = _need(p, "title", "invalid_arguments")
        self.titles.setdefault((channel, thread_ts), []).append(title)
        return {}

    def _conversations_replies(self, p: JSON) -> JSON:
        channel = _need(p, "channel", "channel_not_found")
        ts = _need(p, "ts", "thread_not_found")
        anchor = self.messages.get(channel, {}).get(ts)
        if anchor is None or anchor.deleted:
            raise SlackError("thread_not_found")
        parent_ts = anchor.thread_ts or anchor.ts
        thread = self.thread(channel, parent_ts)
        shaped: list[JSON] = []
        replies = [m for m in thread if m.ts != parent_ts]
        for m in thread:
            out = m.to_slack()
            if m.ts == parent_ts and replies:
                out["thread_ts"] = parent_ts
                out["reply_count"] = len(replies)
                users = list(dict.fromkeys(r.user for r in replies if r.user))
                out["reply_users"] = users
                out["reply_users_count"] = len(users)
                out["latest_reply"] = replies[-1].ts
            shaped.append(out)
        return self._page(shaped, p)

    def _conversations_history(self, p: JSON) -> JSON:
        channel = _need(p, "channel", "channel_not_found")
        top = [
            m.to_slack()
            for m in self.messages.get(channel, {}).values()
            if not m.deleted and m.thread_ts is None
        ]
        top.sort(key=lambda m: _parse_ts(m["ts"]), reverse=True)
        return self._page(top, p)

    def _page(self, items: list[JSON], p: JSON) -> JSON:
        limit = _int_param(p, "limit", 1000)
        if self.replies_page_limit is not None:
            limit = min(limit, self.replies_page_limit)
        limit = max(limit, 1)
        start = 0
        cursor = _opt_str(p, "cursor")
        if cursor:
            try:
                start = int(base64.b64decode(cursor).decode().removeprefix("offset:"))
            except ValueError:
                raise SlackError("invalid_cursor") from None
        page = items[start : start + limit]
        more = start + limit < len(items)
        next_cursor = base64.b64encode(f"offset:{start + limit}".encode()).decode() if more else ""
        return {
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _usergroups_users_list(self, p: JSON) -> JSON:
        group = _need(p, "usergroup", "no_such_subteam")
        if group not in self.usergroups:
            raise SlackError("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def _users_info(self, p: JSON) -> JSON:
        user_id = _need(p, "user", "user_not_found")
        user = self.users.get(user_id)
        if user is None:
            is_bot = user_id == self.bot_user_id
            name = "chatrelay" if is_bot else f"user-{user_id.lower()}"
            user = {
                "id": user_id,
                "team_id": self.team_id,
                "name": name,
                "real_name": name.title(),
                "tz": "Europe/Paris",
                "tz_offset": 3600,
                "is_bot": is_bot,
                "deleted": False,
                "profile": {"display_name": name, "real_name": name.title()},
            }
        return {"user": user}

    def _reactions_add(self, p: JSON) -> JSON:
        channel = _need(p, "channel", "channel_not_found")
        ts = _need(p, "timestamp", "message_not_found")
        name = _need(p, "name", "invalid_name")
        if (channel, ts, name) in self.reactions:
            raise SlackError("already_reacted")
        self.reactions.append((channel, ts, name))
        record = self.messages.get(channel, {}).get(ts)
        if record is not None:
            record.reactions.append(name)
        return {}

    def _reactions_remove(self, p: JSON) -> JSON:
        channel = _need(p, "channel", "channel_not_found")
        ts = _need(p, "timestamp", "message_not_found")
        name = _need(p, "name", "invalid_name")
        if (channel, ts, name) not in self.reactions:
            raise SlackError("no_reaction")
        self.reactions.remove((channel, ts, name))
        record = self.messages.get(channel, {}).get(ts)
        if record is not None and name in record.reactions:
            record.reactions.remove(name)
        return {}

    # ------------------------------------------------------------------ method helpers

    def _content(self, p: JSON, *, required: bool) -> tuple[str, list[JSON] | None, str | None]:
        """(text, blocks, markdown_text) of a post/update, checked against Slack's limits."""
        text = p.get("text")
        text = "" if text is None else str(text)
        markdown = p.get("markdown_text")
        blocks = validate_blocks(p["blocks"]) if p.get("blocks") not in (None, "") else None
        if markdown is not None:
            markdown = str(markdown)
            if text or blocks is not None:
                raise SlackError("invalid_arguments")
            if len(markdown) > MAX_MARKDOWN_TEXT:
                raise SlackError("msg_too_long")
            return "", None, markdown
        if required and not text and blocks is None:
            raise SlackError("no_text")
        if len(text) > self.max_text:
            raise SlackError("msg_too_long")
        return text[: self.truncate_text], blocks, None

    def _stream_markdown(self, p: JSON, *, required: bool) -> tuple[str, list[JSON]]:
        """markdown_text plus the text of markdown_text chunks, and the other chunks."""
        pieces: list[str] = []
        markdown = p.get("markdown_text")
        if markdown is not None:
            pieces.append(str(markdown))
        chunks = _json_param(p, "chunks")
        extra: list[JSON] = []
        if chunks is not None:
            if not isinstance(chunks, list):
                raise SlackError("invalid_arguments")
            for chunk in chunks:
                if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
                    pieces.append(str(chunk.get("text", "")))
                elif isinstance(chunk, dict):
                    extra.append(chunk)
        text = "".join(pieces)
        if any(len(piece) > MAX_MARKDOWN_TEXT for piece in pieces):
            raise SlackError("msg_too_long")
        if required and not text and not extra:
            raise SlackError("no_text")
        return text, extra

    def _new_bot_message(self, channel: str, thread_ts: str | None) -> Message:
        now = self.clock()
        ts = self.next_ts()
        if thread_ts is not None:
            self._clear_status(channel, thread_ts)
        return Message(
            channel=channel,
            ts=ts,
            team=self.team_id,
            thread_ts=thread_ts,
            user=self.bot_user_id,
            bot_id=self.bot_id,
            app_id=self.app_id,
            created_at=now,
        )

    def _store(self, record: Message) -> None:
        self.messages.setdefault(record.channel, {})[record.ts] = record

    def _clear_status(self, channel: str, thread_ts: str) -> None:
        """Slack clears the assistant status when the app replies in the thread."""
        history = self.statuses.get((channel, thread_ts))
        if history and history[-1].status:
            history.append(Status(self.clock(), "", None))

    def _existing(self, channel: str, ts: str) -> Message:
        record = self.messages.get(channel, {}).get(ts)
        if record is None or record.deleted:
            raise SlackError("message_not_found")
        self._refresh_stream(record)
        return record

    def _streaming(self, channel: str, ts: str) -> Message:
        record = self._existing(channel, ts)
        if record.stream_end == "user":
            raise SlackError("stopped_by_user")
        if not record.streaming:
            raise SlackError("message_not_in_streaming_state")
        return record

    def _refresh_stream(self, record: Message) -> None:
        started = record.stream_started_at
        if record.streaming and started is not None and self.clock() - started > self.stream_ttl:
            record.streaming = False
            record.stream_end = "expired"
            record._revise(started + self.stream_ttl, "expired")

    def _find(self, ts: str, channel: str | None) -> Message | None:
        channels = [channel] if channel is not None else list(self.messages)
        for c in channels:
            record = self.messages.get(c, {}).get(ts)
            if record is not None:
                return record
        return None

    # ------------------------------------------------------------------ events: envelopes

    def event_envelope(self, event: JSON, *, event_id: str | None = None) -> JSON:
        """The Events API ``event_callback`` body around ``event`` (also the Socket Mode
        ``events_api`` payload)."""
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or new_event_id(),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": "4-" + base64.b64encode(uuid.uuid4().bytes).decode().rstrip("="),
        }

    def block_actions(
        self,
        channel: str,
        message_ts: str,
        action_id: str,
        *,
        user: str = "U1",
        value: str | None = None,
        block_id: str = "actions",
    ) -> JSON:
        """A ``block_actions`` payload: ``user`` pressed button ``action_id`` on a message
        (the stored one, if the fake has it)."""
        record = self.messages.get(channel, {}).get(message_ts)
        shaped = record.to_slack() if record is not None else {"type": "message", "ts": message_ts}
        thread_ts = record.thread_ts if record is not None else None
        container: JSON = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        }
        if thread_ts:
            container["thread_ts"] = thread_ts
        action: JSON = {
            "action_id": action_id,
            "block_id": block_id,
            "text": {"type": "plain_text", "text": action_id, "emoji": True},
            "type": "button",
            "action_ts": f"{time.time():.6f}",
        }
        if value is not None:
            action["value"] = value
        return {
            "type": "block_actions",
            "user": {"id": user, "username": f"user-{user.lower()}", "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": f"{uuid.uuid4().int % 10**13}.{uuid.uuid4().hex[:20]}",
            "team": {"id": self.team_id, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": channel.lower()},
            "message": shaped,
            "state": {"values": {}},
            "response_url": f"https://hooks.slack.com/actions/{self.team_id}/0/fake",
            "actions": [action],
        }

    # ------------------------------------------------------------------ events: HTTP

    async def deliver_http(
        self,
        url: str,
        event: JSON,
        *,
        signing_secret: str,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        event_id: str | None = None,
        timeout: float = 3.0,  # noqa: ASYNC109
        timestamp: int | None = None,
    ) -> int:
        """POST ``event`` in an ``event_callback`` envelope, signed, to the app.

        Returns the HTTP status; the attempt (with its latency) lands in
        ``deliveries``. Raises TimeoutError when no answer comes within ``timeout``
        (Slack's 3 s) and aiohttp's error when the app can't be reached."""
        envelope = self.event_envelope(event, event_id=event_id)
        delivery = await self._post_signed(
            url,
            json.dumps(envelope).encode(),
            "application/json",
            signing_secret=signing_secret,
            kind="events_api",
            payload=envelope,
            attempt=retry_num or 0,
            retry_reason=retry_reason,
            timeout=timeout,
            timestamp=timestamp,
        )
        return _raise_or_status(delivery)

    async def deliver_http_with_retries(
        self,
        url: str,
        event: JSON,
        *,
        signing_secret: str,
        ack_timeout: float = 3.0,
        retry_delays: tuple[float, ...] | None = None,
        event_id: str | None = None,
    ) -> list[Delivery]:
        """Deliver like Slack: when the app doesn't answer 2xx within ``ack_timeout``,
        retry (same ``event_id``) after each of ``retry_delays`` with
        ``X-Slack-Retry-Num``/``X-Slack-Retry-Reason`` — unless the app answered with
        ``X-Slack-No-Retry: 1``. Returns every attempt."""
        envelope = self.event_envelope(event, event_id=event_id)
        body = json.dumps(envelope).encode()
        delays = self.retry_delays if retry_delays is None else retry_delays
        attempts: list[Delivery] = []
        reason: str | None = None
        for attempt in range(len(delays) + 1):
            if attempt:
                await asyncio.sleep(delays[attempt - 1])
            delivery = await self._post_signed(
                url,
                body,
                "application/json",
                signing_secret=signing_secret,
                kind="events_api",
                payload=envelope,
                attempt=attempt,
                retry_reason=reason,
                timeout=ack_timeout,
            )
            attempts.append(delivery)
            if delivery.acked or delivery.response_headers.get("x-slack-no-retry") == "1":
                break
            reason = {"timeout": "http_timeout", "connection_failed": "connection_failed"}.get(
                delivery.error or "", "http_error"
            )
        return attempts

    async def deliver_http_interaction(
        self,
        url: str,
        payload: JSON,
        *,
        signing_secret: str,
        timeout: float = 3.0,  # noqa: ASYNC109
    ) -> int:
        """POST an interaction (``block_actions``…) as Slack does: form field ``payload``."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        delivery = await self._post_signed(
            url,
            body,
            "application/x-www-form-urlencoded",
            signing_secret=signing_secret,
            kind="interactive",
            payload=payload,
            attempt=0,
            retry_reason=None,
            timeout=timeout,
        )
        return _raise_or_status(delivery)

    async def url_verification(
        self,
        url: str,
        signing_secret: str,
        timeout: float = 3.0,  # noqa: ASYNC109
    ) -> bool:
        """Slack's endpoint check: True when the app echoes the challenge."""
        challenge = uuid.uuid4().hex
        payload = {
            "token": self.verification_token,
            "challenge": challenge,
            "type": "url_verification",
        }
        delivery = await self._post_signed(
            url,
            json.dumps(payload).encode(),
            "application/json",
            signing_secret=signing_secret,
            kind="url_verification",
            payload=payload,
            attempt=0,
            retry_reason=None,
            timeout=timeout,
        )
        if delivery.status != 200:
            return False
        answer = delivery.response
        if isinstance(answer, dict):
            return answer.get("challenge") == challenge
        return str(answer).strip() == challenge

    async def _post_signed(
        self,
        url: str,
        body: bytes,
        content_type: str,
        *,
        signing_secret: str,
        kind: str,
        payload: JSON,
        attempt: int,
        retry_reason: str | None,
        timeout: float,  # noqa: ASYNC109
        timestamp: int | None = None,
    ) -> Delivery:
        if self._session is None:
            raise RuntimeError("fake Slack not started")
        headers = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            **signature_headers(signing_secret, body, timestamp),
        }
        if attempt:
            headers["X-Slack-Retry-Num"] = str(attempt)
            headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
        event_id = payload.get("event_id") if kind == "events_api" else None
        delivery = Delivery(
            transport="http",
            kind=kind,
            payload=payload,
            event_id=event_id,
            attempt=attempt,
            retry_reason=retry_reason if attempt else None,
            sent_at=self.clock(),
        )
        self.deliveries.append(delivery)
        try:
            async with (
                asyncio.timeout(timeout),
                self._session.post(url, data=body, headers=headers) as response,
            ):
                text = await response.text()
                delivery.acked_at = self.clock()
                delivery.status = response.status
                delivery.response_headers = {k.lower(): v for k, v in response.headers.items()}
                try:
                    delivery.response = json.loads(text) if text else None
                except ValueError:
                    delivery.response = text
                if response.status >= 300:
                    delivery.error = "http_error"
        except TimeoutError:
            delivery.error = "timeout"
        except aiohttp.ClientError as exc:
            delivery.error = "connection_failed"
            delivery.response = exc
        self._signal.fire()
        return delivery

    # ------------------------------------------------------------------ events: Socket Mode

    async def deliver_socket(
        self,
        event: JSON,
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        event_id: str | None = None,
        timeout: float = 3.0,  # noqa: ASYNC109
    ) -> Delivery:
        """Send ``event`` as an ``events_api`` envelope to a connected client (round
        robin) and return once it is acked; TimeoutError if no ack within ``timeout``
        (waiting for a connection counts against it)."""
        envelope = self.event_envelope(event, event_id=event_id)
        return await self.send_envelope(
            "events_api",
            envelope,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
            timeout=timeout,
        )

    async def deliver_socket_with_retries(
        self,
        event: JSON,
        *,
        ack_timeout: float = 3.0,
        retry_delays: tuple[float, ...] | None = None,
        event_id: str | None = None,
    ) -> list[Delivery]:
        """Socket Mode delivery with Slack's retries (``retry_attempt``/``retry_reason:
        "timeout"``, same ``event_id``, new envelope) until an ack arrives in time."""
        envelope = self.event_envelope(event, event_id=event_id)
        delays = self.retry_delays if retry_delays is None else retry_delays
        attempts: list[Delivery] = []
        for attempt in range(len(delays) + 1):
            if attempt:
                await asyncio.sleep(delays[attempt - 1])
            delivery = await self._send_envelope(
                "events_api",
                envelope,
                accepts_response_payload=False,
                retry_attempt=attempt,
                retry_reason="timeout" if attempt else "",
                timeout=ack_timeout,
            )
            attempts.append(delivery)
            if delivery.acked:
                break
        return attempts

    async def deliver_interaction(
        self,
        payload: JSON,
        timeout: float = 3.0,  # noqa: ASYNC109
    ) -> Delivery:
        """Send an ``interactive`` envelope (``block_actions``…) and wait for its ack."""
        return await self.send_envelope(
            "interactive", payload, accepts_response_payload=False, timeout=timeout
        )

    async def send_envelope(
        self,
        kind: str,
        payload: JSON,
        *,
        accepts_response_payload: bool = False,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        timeout: float = 3.0,  # noqa: ASYNC109
    ) -> Delivery:
        """Any Socket Mode envelope (``events_api``, ``interactive``, ``slash_commands``);
        returns the acked delivery, raises TimeoutError without an ack in time."""
        delivery = await self._send_envelope(
            kind,
            payload,
            accepts_response_payload=accepts_response_payload,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
            timeout=timeout,
        )
        if delivery.error == "timeout":
            raise TimeoutError(f"no ack for {kind} envelope {delivery.envelope_id}")
        return delivery

    async def _send_envelope(
        self,
        kind: str,
        payload: JSON,
        *,
        accepts_response_payload: bool,
        retry_attempt: int | None,
        retry_reason: str | None,
        timeout: float,  # noqa: ASYNC109
    ) -> Delivery:
        envelope_id = str(uuid.uuid4())
        envelope: JSON = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api":
            envelope["retry_attempt"] = retry_attempt or 0
            envelope["retry_reason"] = retry_reason or ""
        delivery = Delivery(
            transport="socket",
            kind=kind,
            payload=payload,
            event_id=payload.get("event_id") if kind == "events_api" else None,
            attempt=retry_attempt or 0,
            retry_reason=retry_reason or None,
            sent_at=self.clock(),
            envelope_id=envelope_id,
        )
        self.deliveries.append(delivery)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                connection = await self._next_connection()
                delivery.connection_id = connection.id
                delivery.sent_at = self.clock()
                self._unacked[envelope_id] = delivery
                self._ack_waiters[envelope_id] = waiter
                await connection.ws.send_str(json.dumps(envelope))
                await waiter
        except TimeoutError:
            delivery.error = "timeout"
        finally:
            self._ack_waiters.pop(envelope_id, None)
        self._signal.fire()
        return delivery

    async def send_disconnect(self, reason: str = "warning") -> None:
        """Slack's ``disconnect`` message to every client (they reconnect on their own)."""
        message_ = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": "fake-applink"},
        }
        for connection in self.open_connections:
            with contextlib.suppress(ConnectionError):
                await connection.ws.send_str(json.dumps(message_))

    async def close_sockets(self) -> None:
        """Close every Socket Mode connection from the server side."""
        for connection in self.open_connections:
            with contextlib.suppress(Exception):
                await connection.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)

    async def _next_connection(self) -> SocketConnection:
        await self._signal.wait_until(lambda: self.open_connections)
        open_ = self.open_connections
        return open_[next(self._round_robin) % len(open_)]

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        ws = web.WebSocketResponse(timeout=1.0, autoping=True)
        await ws.prepare(request)
        if len(self.open_connections) >= self.max_socket_connections:
            await ws.send_str(json.dumps({"type": "disconnect", "reason": "too_many_websockets"}))
            await ws.close()
            return ws
        connection = SocketConnection(
            id=next(self._connection_ids), ticket=ticket, ws=ws, connected_at=self.clock()
        )
        hello = {
            "type": "hello",
            "num_connections": len(self.open_connections) + 1,
            "debug_info": {
                "host": "fake-applink",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }
        await ws.send_str(json.dumps(hello))
        self.connections.append(connection)
        self._signal.fire()
        try:
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    self._on_socket_text(connection, frame.data)
        finally:
            connection.closed_at = self.clock()
            self._signal.fire()
        return ws

    def _on_socket_text(self, connection: SocketConnection, data: str) -> None:
        try:
            parsed: Any = json.loads(data)
        except ValueError:
            parsed = data
        connection.received.append(parsed)
        envelope_id = parsed.get("envelope_id") if isinstance(parsed, dict) else None
        delivery = self._unacked.pop(envelope_id, None) if isinstance(envelope_id, str) else None
        if delivery is None:
            self.stray_acks.append(parsed)
        else:
            delivery.acked_at = self.clock()
            delivery.response = parsed.get("payload")
            waiter = self._ack_waiters.get(str(envelope_id))
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._signal.fire()


# --------------------------------------------------------------------------- helpers


def _fault_answer(fault: Fault) -> tuple[int, JSON, dict[str, str]]:
    """Slack's answer for an injected fault (HTTP status, body, headers)."""
    if fault.kind == "429":
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = retry_after_header(fault.retry_after)
        return fault.status or 429, {"ok": False, "error": fault.error or "ratelimited"}, headers
    if fault.kind == "500":
        return fault.status or 500, {"ok": False, "error": fault.error or "fatal_error"}, {}
    if fault.kind == "internal_error":
        return fault.status or 200, {"ok": False, "error": fault.error or "internal_error"}, {}
    if fault.kind == "error":
        return fault.status or 200, {"ok": False, "error": fault.error or "fatal_error"}, {}
    raise ValueError(f"no answer for a {fault.kind!r} fault")


def new_event_id() -> str:
    """An id in Slack's style (``Ev`` + 10 upper-case alphanumerics)."""
    return "Ev" + uuid.uuid4().hex[:10].upper()


def _raise_or_status(delivery: Delivery) -> int:
    if delivery.error == "timeout":
        raise TimeoutError(f"no answer to {delivery.kind} within the deadline")
    if delivery.error == "connection_failed" and isinstance(delivery.response, BaseException):
        raise delivery.response
    assert delivery.status is not None
    return delivery.status


def _is_dm(channel: str) -> bool:
    return channel.startswith("D")


def _format_ts(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _parse_ts(ts: str) -> int:
    seconds, _, fraction = ts.partition(".")
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[len("bearer ") :].strip() or None
    return None


async def _read_params(request: web.Request) -> tuple[JSON, str]:
    """Query string, then the body (JSON or form) on top, as Slack accepts either."""
    params: JSON = dict(request.query)
    content_type = request.content_type if request.can_read_body else ""
    if content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            params.update(body)
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            params[key] = value if isinstance(value, str) else "(file)"
    elif request.can_read_body:
        await request.read()
    return params, content_type


def _opt_str(p: JSON, key: str) -> str | None:
    value = p.get(key)
    if value is None or value == "":
        return None
    return str(value)


def _need(p: JSON, key: str, error: str) -> str:
    value = _opt_str(p, key)
    if value is None:
        raise SlackError(error)
    return value


def _int_param(p: JSON, key: str, default: int) -> int:
    value = p.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SlackError("invalid_arguments") from None


def _json_param(p: JSON, key: str) -> Any:
    """A structured argument: JSON bodies carry it as is, form bodies as a JSON string."""
    value = p.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackError("invalid_arguments") from None
    return value
