"""A fake Discord (REST API + gateway WebSocket) on 127.0.0.1, for the real discord.py.

Discord can't be reached from the test machines, and a mocked ``discord.py`` would
prove nothing about what matters most to chatrelay: message size limits, the per-channel
send/edit limit shared by every reply streaming in a channel, 429s and discord.py's own
retry, interaction deadlines and token lifetimes, and mentions re-parsed on every edit.
So the real ``discord.Client`` talks HTTP and WebSocket to this server, which behaves
like Discord where chatrelay can notice the difference and records everything.

Usage::

    async with FakeDiscord() as fake, point_discord_py_at(fake):
        client = discord.Client(intents=intents, guild_ready_timeout=0.05)
        await client.login(fake.bot_token)
        task = asyncio.create_task(client.connect(reconnect=False))
        await client.wait_until_ready()
        await fake.inject_message(CHANNEL_ID, "hello", ALICE, mentions_bot=True)
        ...
        await client.close()
        await task

What it does like Discord:

* REST under ``/api/v{9,10}``: bot-token auth (``401`` otherwise; webhook-token and
  interaction-callback routes need none), ``Content-Type: application/json`` exactly,
  realistic message objects, Discord's error codes (``50035`` invalid form body with the
  same ``errors`` tree, ``10003`` unknown channel, ``10008`` unknown message, ``10015``
  unknown webhook, ``10062`` unknown interaction, ``40060`` already acknowledged,
  ``50006`` empty message, ``50005`` someone else's message, ``50013`` missing
  permissions).
* Rate limits (:class:`RateLimits`, editable at any time): per-route buckets with all
  ``X-RateLimit-*`` headers; one fixed window per channel shared by message sends AND
  edits (sends and edits report different bucket hashes, as on Discord, so discord.py
  cannot pace the mix and gets 429s); one window per interaction token for webhook
  calls; a global per-token limit per second (interaction routes exempt). A 429 has the
  JSON body, ``Retry-After``, ``X-RateLimit-Scope``, ``X-RateLimit-Global`` when global,
  and ``Via: 1.1 google`` (without it discord.py assumes a Cloudflare ban — which
  :attr:`FakeDiscord.cloudflare_banned` simulates).
* Gateway: HELLO, IDENTIFY (token, intents, shard, privileged intents checked), READY
  (with ``session_id`` and ``resume_gateway_url``), GUILD_CREATE per guild of the
  shard, heartbeat ACKs, REQUEST_GUILD_MEMBERS; ``compress=zlib-stream`` honoured. Bot
  REST actions are echoed as MESSAGE_CREATE / MESSAGE_UPDATE / MESSAGE_DELETE /
  THREAD_CREATE to sessions whose intents ask for them, and message content is blanked
  for sessions without MESSAGE_CONTENT unless the message is a DM, the bot's own, or
  mentions the bot.
* Sessions and RESUME (:class:`GatewaySession`): a session outlives a connection that
  dropped (no close frame, or a resumable close code) for ``resume_timeout`` seconds and
  buffers its dispatches; RESUME replays every dispatch after the client's ``seq``, then
  RESUMED. A session the client closed with 1000/1001, or that expired, gets op 9
  INVALID_SESSION (``d: false``). :meth:`FakeDiscord.kill_connections` cuts connections
  as a network failure would.
* Faults (:attr:`FakeDiscord.faults`, a ``tests.fakes.faults.FaultSchedule`` keyed by
  route, e.g. :data:`EDIT_MESSAGE`): injected 429s (Discord's body and headers), 500s,
  slow answers and dropped connections on chosen calls, or at random from a seed; every
  :class:`CallRecord` says which fault it got (``injected``), so injected 429s are told
  apart from the fake's own (:meth:`FakeDiscord.natural_429s`).
* Interactions: :meth:`FakeDiscord.inject_slash_command` and
  :meth:`FakeDiscord.inject_component`; the callback must come within
  ``callback_deadline`` seconds, the token works for ``interaction_ttl`` seconds, the
  first followup after a deferral edits the loading message (Discord's documented
  backwards-compatible behaviour).

State is plain data: :attr:`FakeDiscord.calls`, :attr:`FakeDiscord.messages`,
:attr:`FakeDiscord.channels`, :attr:`FakeDiscord.interactions`,
:attr:`FakeDiscord.rate_limited`, :meth:`FakeDiscord.rendered`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
import secrets
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import discord.gateway
import discord.http
import yarl
from aiohttp import WSMsgType, web

from tests.fakes.faults import (
    ALL_KINDS,
    Fault,
    FaultKind,
    FaultSchedule,
    kind_for_status,
    retry_after_header,
)

Json = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000

# Gateway intents (bits of IDENTIFY's ``intents``).
INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

# Message flags.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_IS_VOICE_MESSAGE = 1 << 13
FLAG_IS_COMPONENTS_V2 = 1 << 15
_SENDABLE_FLAGS = (
    FLAG_SUPPRESS_EMBEDS
    | FLAG_SUPPRESS_NOTIFICATIONS
    | FLAG_IS_VOICE_MESSAGE
    | FLAG_IS_COMPONENTS_V2
)
_EDITABLE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_IS_COMPONENTS_V2

# Permission bits.
PERM_ADD_REACTIONS = 1 << 6
PERM_VIEW_CHANNEL = 1 << 10
PERM_SEND_MESSAGES = 1 << 11
PERM_MANAGE_MESSAGES = 1 << 13
PERM_EMBED_LINKS = 1 << 14
PERM_ATTACH_FILES = 1 << 15
PERM_READ_MESSAGE_HISTORY = 1 << 16
PERM_MENTION_EVERYONE = 1 << 17
PERM_USE_APPLICATION_COMMANDS = 1 << 31
PERM_MANAGE_THREADS = 1 << 34
PERM_CREATE_PUBLIC_THREADS = 1 << 35
PERM_SEND_MESSAGES_IN_THREADS = 1 << 38
EVERYONE_PERMISSIONS = (
    PERM_VIEW_CHANNEL
    | PERM_SEND_MESSAGES
    | PERM_READ_MESSAGE_HISTORY
    | PERM_ADD_REACTIONS
    | PERM_EMBED_LINKS
    | PERM_ATTACH_FILES
    | PERM_USE_APPLICATION_COMMANDS
    | PERM_CREATE_PUBLIC_THREADS
    | PERM_SEND_MESSAGES_IN_THREADS
)
BOT_PERMISSIONS = EVERYONE_PERMISSIONS | PERM_MANAGE_MESSAGES | PERM_MANAGE_THREADS

# Channel types.
CHANNEL_GUILD_TEXT = 0
CHANNEL_DM = 1
CHANNEL_PUBLIC_THREAD = 11
CHANNEL_PRIVATE_THREAD = 12
_THREAD_TYPES = (CHANNEL_PUBLIC_THREAD, CHANNEL_PRIVATE_THREAD)

# Interaction types and callback types.
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_MESSAGE_COMPONENT = 3
CALLBACK_CHANNEL_MESSAGE = 4
CALLBACK_DEFERRED_CHANNEL_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE_MESSAGE = 6
CALLBACK_UPDATE_MESSAGE = 7
CALLBACK_MODAL = 9

# Sizes Discord enforces.
MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_EMBED_DESCRIPTION = 4096
MAX_EMBED_TITLE = 256
MAX_EMBED_FIELDS = 25
MAX_EMBED_FIELD_NAME = 256
MAX_EMBED_FIELD_VALUE = 1024
MAX_EMBED_FOOTER = 2048
MAX_EMBED_AUTHOR = 256
MAX_ACTION_ROWS = 5
MAX_ROW_COMPONENTS = 5

# Fixed ids for the default world; realistic 18–19 digit snowflakes.
APP_ID = 1_200_000_000_000_000_001
BOT_USER_ID = APP_ID  # new applications share the bot user's id
GUILD_ID = 1_200_000_000_000_000_100
CHANNEL_ID = 1_200_000_000_000_000_200
OTHER_CHANNEL_ID = 1_200_000_000_000_000_201


# Route keys for ``FakeDiscord.faults`` ("<HTTP method> <route template>").
SEND_MESSAGE = "POST channels/{channel_id}/messages"
EDIT_MESSAGE = "PATCH channels/{channel_id}/messages/{message_id}"
DELETE_MESSAGE = "DELETE channels/{channel_id}/messages/{message_id}"
INTERACTION_CALLBACK = "POST interactions/{interaction_id}/{interaction_token}/callback"
FOLLOWUP = "POST webhooks/{webhook_id}/{webhook_token}"
EDIT_INTERACTION_MESSAGE = "PATCH webhooks/{webhook_id}/{webhook_token}/messages/{message_id}"
"""Edits of ``@original`` and of followups alike; Discord's own spelling,
``"PATCH /webhooks/{application.id}/{interaction.token}/messages/@original"``, narrows
a fault to ``@original``."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _bucket_hash(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class FakeUser:
    """A Discord user as the fake knows it."""

    id: int
    username: str = ""
    bot: bool = False
    global_name: str | None = None

    @property
    def name(self) -> str:
        return self.username or f"user{self.id}"

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> Json:
        data: Json = {
            "id": str(self.id),
            "username": self.name,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
        }
        if self.bot:
            data["bot"] = True
        return data


ALICE = FakeUser(1_200_000_000_000_000_501, "alice", global_name="Alice")
BOB = FakeUser(1_200_000_000_000_000_502, "bob", global_name="Bob")


@dataclass
class FakeChannel:
    """A guild text channel, thread or DM. ``bot_can_send=False`` denies the bot
    SEND_MESSAGES there (in GUILD_CREATE's overwrites and with 403 50013 on sends)."""

    id: int
    name: str = "general"
    type: int = CHANNEL_GUILD_TEXT
    guild_id: int | None = None
    parent_id: int | None = None
    owner_id: int | None = None
    position: int = 0
    topic: str | None = None
    bot_can_send: bool = True
    recipients: list[FakeUser] = field(default_factory=list)
    last_message_id: int | None = None
    message_count: int = 0
    created_at: str = field(default_factory=_now_iso)

    @property
    def is_thread(self) -> bool:
        return self.type in _THREAD_TYPES


@dataclass
class FakeGuild:
    """A guild the bot is in. Channels get their ``guild_id`` set by :class:`FakeDiscord`."""

    id: int
    name: str = "chatrelay tests"
    channels: list[FakeChannel] = field(default_factory=list)
    members: list[FakeUser] = field(default_factory=list)
    """Members besides the bot (added automatically when they post or interact)."""
    owner_id: int | None = None
    everyone_permissions: int = EVERYONE_PERMISSIONS
    bot_permissions: int = BOT_PERMISSIONS
    """Of the bot's managed role."""
    bot_role_id: int = 0
    """0: assigned by :class:`FakeDiscord`."""


def default_guilds() -> list[FakeGuild]:
    """One guild with two text channels and two human members."""
    return [
        FakeGuild(
            id=GUILD_ID,
            channels=[
                FakeChannel(id=CHANNEL_ID, name="general", position=0),
                FakeChannel(id=OTHER_CHANNEL_ID, name="random", position=1),
            ],
            members=[ALICE, BOB],
            owner_id=ALICE.id,
        )
    ]


@dataclass(frozen=True)
class Limit:
    """``limit`` requests per fixed window of ``per`` seconds, which starts at first use."""

    limit: int
    per: float
    scope: str = "user"
    """``X-RateLimit-Scope`` of its 429s: ``user`` or ``shared``."""


@dataclass
class RateLimits:
    """Numbers the fake enforces; Discord documents few of them, so tests may change any."""

    channel_messages: Limit = Limit(5, 5.0)
    """Per channel, shared by message sends and edits (observed on Discord)."""
    interaction_webhook: Limit = Limit(5, 2.0)
    """Per interaction token, for followups and edits/deletes of its messages."""
    global_per_second: int = 50
    """Per bot token, all bot-authenticated routes; interaction routes are exempt."""
    route_default: Limit = Limit(50, 1.0)
    """Every other route, per route and major parameter."""
    shared_message_bucket_hash: bool = False
    """True: sends and edits report ONE ``X-RateLimit-Bucket``, so discord.py paces them
    together once it has seen both routes (a 429 or so while it learns). Discord reports
    two, so discord.py can't (the default)."""
    enabled: bool = True


@dataclass
class Revision:
    """One state of a message: its creation or one edit."""

    time: float
    """``time.monotonic()`` when it was accepted."""
    kind: str
    """``create`` or ``edit``."""
    content: str
    embeds: list[Json]
    components: list[Json]
    flags: int
    allowed_mentions: Json | None
    """As sent with this call (None: not sent, i.e. Discord parses every mention)."""
    mentions: list[int]
    """User ids this revision mentions after ``allowed_mentions`` was applied."""
    mention_everyone: bool
    path: str
    """The REST path of the call."""


@dataclass
class MessageRecord:
    """A message as the fake stores it, with its full history."""

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    embeds: list[Json] = field(default_factory=list)
    components: list[Json] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    message_reference: Json | None = None
    mentions: list[int] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    attachments: list[Json] = field(default_factory=list)
    reactions: dict[str, set[int]] = field(default_factory=dict)
    nonce: str | int | None = None
    timestamp: str = field(default_factory=_now_iso)
    edited_timestamp: str | None = None
    webhook_id: int | None = None
    interaction_id: int | None = None
    """The interaction whose response (or followup) this is."""
    thread_id: int | None = None
    """The thread started from this message."""
    deleted: bool = False
    history: list[Revision] = field(default_factory=list)

    @property
    def edits(self) -> list[Revision]:
        """Every accepted edit, oldest first."""
        return [r for r in self.history if r.kind == "edit"]

    @property
    def allowed_mentions(self) -> list[Json | None]:
        """``allowed_mentions`` of every send and edit, in order (None where omitted)."""
        return [r.allowed_mentions for r in self.history]

    @property
    def created_at(self) -> float:
        return self.history[0].time if self.history else 0.0


@dataclass
class InteractionRecord:
    """One injected interaction and what the bot did with it."""

    id: int
    token: str
    type: int
    channel_id: int
    guild_id: int | None
    user: FakeUser
    data: Json
    created_at: float
    """``time.monotonic()`` at dispatch; the deadlines count from here."""
    message_id: int | None = None
    """For a component interaction: the message carrying the component."""
    callback_type: int | None = None
    callback_data: Json | None = None
    responded_at: float | None = None
    original: MessageRecord | None = None
    followups: list[MessageRecord] = field(default_factory=list)
    expired: bool = False
    """Set by :meth:`FakeDiscord.expire_interaction`."""

    @property
    def acknowledged(self) -> bool:
        return self.callback_type is not None

    @property
    def deferred(self) -> bool:
        return self.callback_type in (
            CALLBACK_DEFERRED_CHANNEL_MESSAGE,
            CALLBACK_DEFERRED_UPDATE_MESSAGE,
        )


@dataclass
class CallRecord:
    """One REST request and the fake's answer."""

    method: str
    path: str
    """Without the API prefix, e.g. ``channels/42/messages``."""
    query: dict[str, str]
    json: Any
    """The JSON body (``payload_json`` of a multipart body), or None."""
    time: float
    """``time.monotonic()`` at arrival."""
    route: str = ""
    """The matched template, e.g. ``channels/{channel_id}/messages``; empty if none."""
    status: int = 0
    response: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    """Response headers."""
    bucket: str | None = None
    """The rate-limit key that counted this call (the keys of ``rate_limited``)."""
    ordinal: int = 0
    """1 for the first call to this route (``key``), 2 for the next… (what fault rules
    count); 0 for a path no route matched."""
    injected: FaultKind | None = None
    """The fault ``faults`` put on this call; None for a call the fake handled itself
    (its 429s then come from the fake's own rate limits). A ``drop`` leaves ``status``
    at 0: no answer was sent."""

    @property
    def key(self) -> str:
        """The route key faults use: ``"PATCH channels/{channel_id}/messages/{message_id}"``."""
        return f"{self.method} {self.route}" if self.route else ""


NON_RESUMABLE_CLOSE_CODES = frozenset({4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014})
"""Close codes (sent by the gateway) after which a session can't be resumed: bad token,
invalid seq, session timed out, shard/intent errors. Discord closes with the others
(4000 unknown error, 4001-4003, 4005, 4008) and lets the client RESUME."""

CLIENT_INVALIDATING_CLOSE_CODES = frozenset({1000, 1001})
"""A client closing with these ends its session (Discord: "your session will be
invalidated and your bot will appear offline"); discord.py closes with 4000 when it
means to resume."""

MAX_REPLAY = 10_000
"""Dispatches a session keeps for replay; a RESUME from before them is refused."""


@dataclass
class GatewayConnection:
    """One client WebSocket."""

    ws: web.WebSocketResponse
    query: dict[str, str]
    compress: str | None
    """``zlib-stream`` when the fake compresses what it sends; None for plain text."""
    intents: int | None = None
    shard: tuple[int, int] = (0, 1)
    session_id: str | None = None
    identified: bool = False
    identify: Json | None = None
    """The IDENTIFY (or RESUME) payload's ``d``."""
    seq: int = 0
    """The last sequence number sent on this connection."""
    heartbeats: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    path: str = "/gateway"
    """The URL path the client connected to (``/resume-gateway`` for READY's
    ``resume_gateway_url``)."""
    session: GatewaySession | None = None
    """The session this connection carries (after IDENTIFY or RESUME)."""
    transport: asyncio.Transport | None = None
    client_close_code: int | None = None
    """The code of the client's close frame; None when it sent none."""
    server_close_code: int | None = None
    """The code the fake closed with; None when it did not close it."""
    killed: bool = False
    """Cut by the fake without a close frame (:meth:`FakeDiscord.kill_connections`)."""
    _zlib: Any = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        if self.compress == "zlib-stream":
            self._zlib = zlib.compressobj()

    def owns(self, guild_id: int | None) -> bool:
        """Whether events of this guild (None: DMs, which shard 0 gets) go to this shard."""
        return _shard_owns(self.shard, guild_id)

    def wants(self, intent: int | None) -> bool:
        return intent is None or self.intents is None or bool(self.intents & intent)

    @property
    def ends_session(self) -> bool:
        """Whether the way this connection closed invalidates its session. The fake's
        own close code wins over the client's (aiohttp answers any close with 1000)."""
        if self.killed:
            return False
        if self.server_close_code is not None:
            return self.server_close_code in NON_RESUMABLE_CLOSE_CODES
        return self.client_close_code in CLIENT_INVALIDATING_CLOSE_CODES

    async def send(self, payload: Json) -> None:
        async with self._lock:
            await self._send_locked(payload)

    async def send_dispatch(self, event: str, data: Json) -> None:
        """A DISPATCH numbered by the session (by the connection before IDENTIFY)."""
        async with self._lock:
            if self.session is not None:
                payload = self.session.record(event, data)
            else:
                payload = {"op": 0, "t": event, "s": self.seq + 1, "d": data}
            self.seq = int(payload["s"])
            await self._send_locked(payload)

    async def _send_locked(self, payload: Json) -> None:
        if self.ws.closed or self.killed:
            return
        text = json.dumps(payload, separators=(",", ":"))
        with contextlib.suppress(ConnectionError):
            if self._zlib is not None:
                chunk = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(chunk)
            else:
                await self.ws.send_str(text)


@dataclass
class GatewaySession:
    """What IDENTIFY starts and RESUME continues: the sequence numbers and every
    dispatch, so a client that lost its connection gets what it missed.

    Discord keeps a session after its connection drops (unless the client closed it
    with 1000/1001 or the gateway closed it with a non-resumable code) and buffers its
    events; a RESUME with the last ``seq`` the client saw replays everything after it,
    then RESUMED. The fake keeps it ``resume_timeout`` seconds (Discord doesn't say how
    long; observed: a few minutes)."""

    id: str
    intents: int | None
    shard: tuple[int, int]
    identify: Json
    seq: int = 0
    """The last sequence number given out."""
    events: list[Json] = field(default_factory=list)
    """Every DISPATCH payload (with its ``s``), oldest first (the last ``MAX_REPLAY``)."""
    connection: GatewayConnection | None = None
    """The open connection carrying it; None while the client is away."""
    state: str = "connected"
    """``connected``, ``resumable`` (no connection, may RESUME until
    ``resumable_until``) or ``invalidated``."""
    resumable_until: float | None = None
    resumes: int = 0
    """Accepted RESUMEs."""

    def owns(self, guild_id: int | None) -> bool:
        return _shard_owns(self.shard, guild_id)

    def wants(self, intent: int | None) -> bool:
        return intent is None or self.intents is None or bool(self.intents & intent)

    def live(self, now: float) -> bool:
        """Connected, or resumable and not expired (expiry is applied here, lazily)."""
        if self.state == "resumable" and (
            self.resumable_until is None or now >= self.resumable_until
        ):
            self.state = "invalidated"
        return self.state != "invalidated"

    def record(self, event: str, data: Json) -> Json:
        """Numbers a dispatch and keeps it for replay; returns the payload to send."""
        self.seq += 1
        payload: Json = {"op": 0, "t": event, "s": self.seq, "d": data}
        self.events.append(payload)
        if len(self.events) > MAX_REPLAY:
            del self.events[: len(self.events) - MAX_REPLAY]
        return payload

    def after(self, seq: int) -> list[Json] | None:
        """The dispatches after ``seq``; None when ``seq`` can't be resumed from (ahead of
        the session, or older than what it kept)."""
        if seq > self.seq:
            return None
        oldest = int(self.events[0]["s"]) if self.events else self.seq + 1
        if seq < oldest - 1:
            return None
        return [e for e in self.events if int(e["s"]) > seq]


def _shard_owns(shard: tuple[int, int], guild_id: int | None) -> bool:
    shard_id, count = shard
    if guild_id is None:
        return shard_id == 0
    return (guild_id >> 22) % count == shard_id


class ApiError(Exception):
    """A Discord error response; raised by handlers, turned into JSON by the fake."""

    def __init__(self, status: int, code: int, message: str, errors: Json | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: Json = {"message": message, "code": code}
        if errors:
            self.body["errors"] = errors


def _field_error(code: str, message: str) -> Json:
    return {"_errors": [{"code": code, "message": message}]}


def _invalid_form(errors: Json) -> ApiError:
    return ApiError(400, 50035, "Invalid Form Body", errors)


@dataclass
class _Window:
    limit: int
    per: float
    start: float | None = None
    count: int = 0

    def hit(self, now: float) -> tuple[bool, int, float]:
        """(allowed, remaining, reset_after); a denied hit is not counted."""
        if self.start is None or now >= self.start + self.per:
            self.start, self.count = now, 0
        reset_after = self.start + self.per - now
        if self.count >= self.limit:
            return False, 0, reset_after
        self.count += 1
        return True, self.limit - self.count, reset_after


@dataclass
class _Route:
    method: str
    template: str
    handler: Callable[[_Request], Awaitable[tuple[int, Any]]]
    kind: str = "default"
    """``default``, ``message_create``, ``message_edit``, ``webhook``, ``callback``."""
    auth: bool = True
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        self.pattern = re.compile(regex + "$")


@dataclass
class _Request:
    params: dict[str, str]
    body: Any
    query: dict[str, str]
    files: list[Json]
    now: float
    path: str

    def id(self, name: str) -> int:
        try:
            return int(self.params[name])
        except ValueError:
            raise ApiError(404, 0, "404: Not Found") from None


class _Dropped(Exception):
    """A ``drop`` fault: the call gets no answer, its connection closes."""


class FakeDiscord:
    """Discord's REST API and gateway for one bot, on an ephemeral 127.0.0.1 port."""

    def __init__(
        self,
        *,
        bot_token: str = "test-token",
        app_id: int = APP_ID,
        bot_user_id: int = BOT_USER_ID,
        bot_name: str = "chatrelay",
        guilds: list[FakeGuild] | None = None,
        limits: RateLimits | None = None,
        heartbeat_interval_ms: int = 41_250,
        interaction_ttl: float = 900.0,
        callback_deadline: float = 3.0,
        allow_privileged_intents: bool = True,
        resume_timeout: float = 60.0,
    ) -> None:
        self.bot_token = bot_token
        self.app_id = app_id
        self.bot = FakeUser(bot_user_id, bot_name, bot=True)
        self.limits = limits or RateLimits()
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.interaction_ttl = interaction_ttl
        """Seconds an interaction token works for webhook calls (Discord: 15 min)."""
        self.callback_deadline = callback_deadline
        """Seconds to answer an interaction's callback (Discord: 3 s)."""
        self.allow_privileged_intents = allow_privileged_intents
        """False: an IDENTIFY asking for a privileged intent is closed with 4014."""
        self.ack_heartbeats = True
        """False: heartbeats go unanswered (a zombie connection)."""
        self.cloudflare_banned = False
        """True: every REST call gets Cloudflare's 429 (HTML, no ``Via``)."""
        self.resume_timeout = resume_timeout
        """Seconds a session whose connection dropped stays resumable."""

        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.users: dict[int, FakeUser] = {self.bot.id: self.bot}
        self.messages: dict[int, dict[int, MessageRecord]] = {}
        """channel id → message id → record (deleted ones stay, flagged)."""
        self.interactions: dict[str, InteractionRecord] = {}
        """token → record."""
        self.commands: list[Json] = []
        """Global application commands, as last PUT (with ids)."""
        self.guild_commands: dict[int, list[Json]] = {}
        self.calls: list[CallRecord] = []
        self.rate_limited: Counter[str] = Counter()
        """429s per bucket: ``channel_messages:<channel>``, ``interaction:<id>``,
        ``global``, or ``<METHOD> <route>:<major>``."""
        self.connections: list[GatewayConnection] = []
        """Open gateway connections."""
        self.identifies: list[Json] = []
        """Every accepted IDENTIFY's ``d`` (token included)."""
        self.gateway_queries: list[dict[str, str]] = []
        """The query string of every gateway connection (``v``, ``encoding``, ``compress``)."""
        self.gateway_sends: list[Json] = []
        """Every payload a client sent on the gateway, in order."""
        self.sessions: dict[str, GatewaySession] = {}
        """Gateway sessions by id, ended ones included (``state`` says which)."""
        self.resumes: list[Json] = []
        """Every accepted RESUME: ``session_id``, ``seq`` (the client's), ``replayed``
        (how many dispatches were sent again) and ``path`` (the URL it came to)."""
        self.invalid_sessions: list[Json] = []
        """Every RESUME answered with op 9 INVALID_SESSION (its ``d``, token masked)."""

        for guild in guilds if guilds is not None else default_guilds():
            self.add_guild(guild)

        self._last_id = 0
        self._windows: dict[str, _Window] = {}
        self._global_window: _Window | None = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._routes = self._build_routes()
        self.faults = FaultSchedule(
            kinds=ALL_KINDS - {"internal_error"},
            resolve=self.fault_key,
            known=lambda key: any(f"{r.method} {r.template}" == key for r in self._routes),
        )
        """Scripted and seeded faults per route (see ``tests.fakes.faults``), keyed like
        :data:`EDIT_MESSAGE`: ``fake.faults.add(EDIT_MESSAGE, "429", retry_after=0.2)``.
        A faulted call (other than ``slow``) is answered after the token check and
        before the rate limits and the handler: it changes nothing, uses up no window."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("already started")
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway/", self._gateway)
        app.router.add_get("/resume-gateway", self._gateway)
        app.router.add_route("*", r"/api/v{version:\d+}/{tail:.*}", self._handle_api)
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

    async def stop(self) -> None:
        """Closes gateway connections (1001), then the server."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for conn in list(self.connections):
            conn.server_close_code = 1001
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"shutting down"), 2)
        for conn in list(self.connections):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), 2)
        await runner.cleanup()
        self._port = None

    async def __aenter__(self) -> FakeDiscord:
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
            raise RuntimeError("not started")
        return self._port

    @property
    def api_url(self) -> str:
        """In ``discord.http.Route.BASE`` form: ``http://127.0.0.1:PORT/api/v10``."""
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def resume_gateway_url(self) -> str:
        """READY's ``resume_gateway_url``: a path of its own, so a test can see that a
        client resumed there (``GatewayConnection.path``) as Discord asks."""
        return f"ws://127.0.0.1:{self.port}/resume-gateway"

    # ------------------------------------------------------------------ world setup

    def add_guild(self, guild: FakeGuild) -> FakeGuild:
        if not guild.bot_role_id:
            guild.bot_role_id = guild.id + 7
        self.guilds[guild.id] = guild
        for channel in guild.channels:
            channel.guild_id = guild.id
            self.channels[channel.id] = channel
            self.messages.setdefault(channel.id, {})
        for member in guild.members:
            self.users[member.id] = member
        return guild

    def add_dm_channel(self, user: FakeUser, channel_id: int | None = None) -> FakeChannel:
        """A DM between ``user`` and the bot (shard 0 gets its events)."""
        self.users[user.id] = user
        channel = FakeChannel(
            id=channel_id or self._next_id(), name="", type=CHANNEL_DM, recipients=[user]
        )
        self.channels[channel.id] = channel
        self.messages.setdefault(channel.id, {})
        return channel

    def _next_id(self) -> int:
        candidate = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_id = max(candidate, self._last_id + 1)
        return self._last_id

    # ------------------------------------------------------------------ inspection

    def message(self, channel_id: int, message_id: int) -> MessageRecord:
        return self.messages[channel_id][message_id]

    def channel_messages(self, channel_id: int) -> list[MessageRecord]:
        """Live (not deleted) messages of a channel, oldest first."""
        return [m for m in self.messages.get(channel_id, {}).values() if not m.deleted]

    def rendered(self, channel_id: int, message_id: int) -> str:
        """The text a user sees: content, then each embed's title, description, fields
        (``name: value``) and footer, one per line, empty parts skipped."""
        rec = self.messages[channel_id][message_id]
        parts = [rec.content]
        if not rec.flags & FLAG_SUPPRESS_EMBEDS:
            for embed in rec.embeds:
                parts += [embed.get("title") or "", embed.get("description") or ""]
                parts += [
                    f"{f.get('name', '')}: {f.get('value', '')}" for f in embed.get("fields", [])
                ]
                parts.append((embed.get("footer") or {}).get("text") or "")
        return "\n".join(p for p in parts if p)

    def calls_to(self, method: str, route: str) -> list[CallRecord]:
        """Calls matching a method and a route template, e.g.
        ``calls_to("PATCH", "channels/{channel_id}/messages/{message_id}")``."""
        return [c for c in self.calls if c.method == method and c.route == route]

    @property
    def invalid_requests(self) -> int:
        """401/403/429 answers that count toward Cloudflare's ban (shared-scope 429s don't)."""
        return sum(
            1
            for c in self.calls
            if c.status in (401, 403)
            or (c.status == 429 and c.headers.get("X-RateLimit-Scope") != "shared")
        )

    async def wait_for_call(
        self,
        method: str,
        path_regex: str,
        *,
        count: int = 1,
        status: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a bounded wait is the point of the helper
    ) -> CallRecord:
        """Waits until ``count`` answered calls match (``re.search`` on the path) and
        returns the last of them."""
        pattern = re.compile(path_regex)

        def matches() -> list[CallRecord]:
            return [
                c
                for c in self.calls
                if c.method == method
                and c.status
                and pattern.search(c.path)
                and (status is None or c.status == status)
            ]

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(matches()) >= count)
        return matches()[count - 1]

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int = 500,
        body: Json | None = None,
        *,
        times: int = 1,
    ) -> None:
        """Answers the next ``times`` matching calls with this error (after auth, before
        rate limits and the handler). A rule of ``faults``, recorded like the others."""
        default = {"message": "500: Internal Server Error", "code": 0}
        fault = Fault(
            kind_for_status(status), retry_after=None, status=status, body=body or default
        )
        self.faults.add_rule(
            fault, http_method=method.upper(), path=re.compile(path_regex), count=times
        )

    def fault_key(self, key: str) -> tuple[str, re.Pattern[str] | None]:
        """The canonical route key for a key as a test writes it, and a path filter when
        it names a literal where the route has a parameter.

        Accepted: the fake's templates (``"PATCH channels/{channel_id}/messages/{message_id}"``)
        and Discord's documentation style, with a leading slash, any parameter names and
        literals: ``"PATCH /webhooks/{application.id}/{interaction.token}/messages/@original"``
        is the interaction-message edit route, limited to ``@original``."""
        method, _, path = key.strip().partition(" ")
        method = method.upper()
        given = path.strip().strip("/").split("/")
        best: tuple[int, _Route] | None = None
        for route in self._routes:
            template = route.template.split("/")
            if route.method != method or len(template) != len(given):
                continue
            exact = 0
            for want, have in zip(template, given, strict=True):
                if want.startswith("{") or have.startswith("{"):
                    if not want.startswith("{"):
                        break  # a parameter where the route has a literal
                elif want != have:
                    break
                else:
                    exact += 1
            else:
                if best is None or exact > best[0]:
                    best = (exact, route)
        if best is None:
            raise ValueError(f"no route of the fake matches {key!r}")
        route = best[1]
        literals = [
            not have.startswith("{") and want.startswith("{")
            for want, have in zip(route.template.split("/"), given, strict=True)
        ]
        path_filter = None
        if any(literals):
            regex = "/".join("[^/]+" if have.startswith("{") else re.escape(have) for have in given)
            path_filter = re.compile(f"^{regex}$")
        return f"{route.method} {route.template}", path_filter

    def natural_429s(self, key: str | None = None) -> int:
        """429s the fake's own rate limits (or Cloudflare ban) answered, injected ones
        left out: what a bot pacing itself within Discord's limits never causes."""
        canonical = self.fault_key(key)[0] if key is not None else None
        return sum(
            1
            for c in self.calls
            if c.status == 429 and c.injected is None and (canonical is None or c.key == canonical)
        )

    def injected_calls(self, kind: str | None = None) -> list[CallRecord]:
        """Calls ``faults`` put a fault on, optionally of one kind."""
        return [c for c in self.calls if c.injected is not None and kind in (None, c.injected)]

    def expire_interaction(self, token: str) -> None:
        """Makes the token as dead as after ``interaction_ttl``."""
        self.interactions[token].expired = True

    def reset_rate_limits(self) -> None:
        self._windows.clear()
        self._global_window = None

    # ------------------------------------------------------------------ REST plumbing

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        tail = request.match_info["tail"].strip("/")
        body, files = await self._read_body(request)
        call = CallRecord(request.method, tail, dict(request.query), body, now)
        self.calls.append(call)
        try:
            status, payload, headers = await self._process(request, call, files)
        except _Dropped:
            # No answer at all: aiohttp's attempt to send the returned response fails
            # quietly on the closed transport.
            if request.transport is not None:
                request.transport.close()
            async with self._changed:
                self._changed.notify_all()
            return web.Response(status=500)
        except Exception as exc:  # a bug in the fake: answer 500 and keep the evidence
            status, payload, headers = 500, {"message": f"fake bug: {exc!r}", "code": 0}, {}
        call.status, call.response, call.headers = status, payload, headers
        async with self._changed:
            self._changed.notify_all()
        if isinstance(payload, str):
            return web.Response(status=status, text=payload, headers=headers)
        if payload is None:
            return web.Response(status=status, headers=headers)
        raw = json.dumps(payload).encode()
        return web.Response(
            status=status, body=raw, headers={**headers, "Content-Type": "application/json"}
        )

    async def _read_body(self, request: web.Request) -> tuple[Any, list[Json]]:
        if not request.can_read_body:
            return None, []
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            payload: Any = None
            files: list[Json] = []
            for name, value in form.items():
                if name == "payload_json":
                    payload = json.loads(str(value))
                elif isinstance(value, web.FileField):
                    size = len(value.file.read())
                    files.append(
                        {
                            "field": name,
                            "filename": value.filename,
                            "size": size,
                            "content_type": value.content_type,
                        }
                    )
            return payload, files
        raw = await request.read()
        if not raw:
            return None, []
        try:
            return json.loads(raw), []
        except ValueError:
            return raw.decode(errors="replace"), []

    async def _process(
        self, request: web.Request, call: CallRecord, files: list[Json]
    ) -> tuple[int, Any, dict[str, str]]:
        via = {"Via": "1.1 google"}
        if self.cloudflare_banned:
            return 429, "error code: 1015", {"Retry-After": "600"}
        route, params = self._match(request.method, call.path)
        if route is None:
            return 404, {"message": "404: Not Found", "code": 0}, via
        call.route = route.template
        call.ordinal = self.faults.arrive(call.key)
        if route.auth and request.headers.get("Authorization") != f"Bot {self.bot_token}":
            return 401, {"message": "401: Unauthorized", "code": 0}, via
        fault = self.faults.take(call.key, call.ordinal, call.path)
        if fault is not None:
            call.injected = fault.kind
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.kind == "drop":
                raise _Dropped
            if fault.kind != "slow":
                return self._fault_answer(fault, route, params)
        limited, headers = self._rate_limit(route, params, call)
        headers = {**via, **headers}
        if limited is not None:
            return 429, limited, headers
        req = _Request(params, call.json, call.query, files, call.time, call.path)
        try:
            status, payload = await route.handler(req)
        except ApiError as err:
            status, payload = err.status, err.body
        return status, payload, headers

    def _fault_answer(
        self, fault: Fault, route: _Route, params: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        """Discord's answer for an injected fault. A 429 looks like one of the route's
        bucket (all the ``X-RateLimit-*`` headers, ``Via``, the JSON body), without
        touching the fake's own windows."""
        via = {"Via": "1.1 google"}
        if fault.kind == "429":
            _, limit, hash_name = self._bucket_for(route, params)
            retry = fault.retry_after
            if retry is None:
                retry = float((fault.body or {}).get("retry_after", 1.0))
            headers = {
                **via,
                "X-RateLimit-Limit": str(limit.limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + retry:.3f}",
                "X-RateLimit-Reset-After": f"{retry:.3f}",
                "X-RateLimit-Bucket": _bucket_hash(hash_name),
                "X-RateLimit-Scope": limit.scope,
                "Retry-After": retry_after_header(retry),
            }
            body = fault.body or {
                "message": "You are being rate limited.",
                "retry_after": retry,
                "global": False,
            }
            return fault.status or 429, body, headers
        if fault.kind in ("500", "error"):
            body = fault.body or {"message": "500: Internal Server Error", "code": 0}
            return fault.status or 500, body, via
        raise ValueError(f"no answer for a {fault.kind!r} fault")

    def _match(self, method: str, path: str) -> tuple[_Route | None, dict[str, str]]:
        for route in self._routes:
            if route.method != method:
                continue
            found = route.pattern.match(path)
            if found:
                return route, found.groupdict()
        return None, {}

    def _rate_limit(
        self, route: _Route, params: dict[str, str], call: CallRecord
    ) -> tuple[Json | None, dict[str, str]]:
        """Counts the call; returns (429 body or None, headers)."""
        if not self.limits.enabled:
            return None, {}
        now = call.time
        if route.auth and route.kind != "callback":
            if (
                self._global_window is None
                or self._global_window.limit != self.limits.global_per_second
            ):
                self._global_window = _Window(self.limits.global_per_second, 1.0)
            allowed, _, reset_after = self._global_window.hit(now)
            if not allowed:
                self.rate_limited["global"] += 1
                call.bucket = "global"
                retry = math.ceil(reset_after * 1000) / 1000
                body = {
                    "message": "You are being rate limited.",
                    "retry_after": retry,
                    "global": True,
                }
                return body, {
                    "Retry-After": str(max(1, math.ceil(retry))),
                    "X-RateLimit-Global": "true",
                    "X-RateLimit-Scope": "global",
                }
        key, limit, hash_name = self._bucket_for(route, params)
        call.bucket = key
        window = self._windows.get(key)
        if window is None or (window.limit, window.per) != (limit.limit, limit.per):
            window = self._windows[key] = _Window(limit.limit, limit.per)
        allowed, remaining, reset_after = window.hit(now)
        reset_after = max(reset_after, 0.001)
        headers = {
            "X-RateLimit-Limit": str(limit.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": _bucket_hash(hash_name),
        }
        if allowed:
            return None, headers
        self.rate_limited[key] += 1
        retry = math.ceil(reset_after * 1000) / 1000
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
        headers["X-RateLimit-Scope"] = limit.scope
        body = {"message": "You are being rate limited.", "retry_after": retry, "global": False}
        return body, headers

    def _bucket_for(self, route: _Route, params: dict[str, str]) -> tuple[str, Limit, str]:
        """(counting key, limit, name hashed into X-RateLimit-Bucket)."""
        if route.kind in ("message_create", "message_edit"):
            name = "channel_messages" if self.limits.shared_message_bucket_hash else route.kind
            return f"channel_messages:{params['channel_id']}", self.limits.channel_messages, name
        if route.kind == "webhook":
            rec = self.interactions.get(params["webhook_token"])
            key = f"interaction:{rec.id}" if rec else f"webhook:{params['webhook_token']}"
            return key, self.limits.interaction_webhook, "interaction_webhook"
        major = next(
            (params[p] for p in ("channel_id", "guild_id", "interaction_id") if p in params), ""
        )
        name = f"{route.method} {route.template}"
        return f"{name}:{major}", self.limits.route_default, name

    def _build_routes(self) -> list[_Route]:
        msg = "channels/{channel_id}/messages/{message_id}"
        hook = "webhooks/{webhook_id}/{webhook_token}"
        return [
            _Route("GET", "users/@me", self._get_me),
            _Route("GET", "oauth2/applications/@me", self._get_application),
            _Route("GET", "applications/@me", self._get_application),
            _Route("GET", "gateway", self._get_gateway, auth=False),
            _Route("GET", "gateway/bot", self._get_gateway),
            _Route("GET", "applications/{application_id}/commands", self._get_commands),
            _Route("PUT", "applications/{application_id}/commands", self._put_commands),
            _Route(
                "GET",
                "applications/{application_id}/guilds/{guild_id}/commands",
                self._get_commands,
            ),
            _Route(
                "PUT",
                "applications/{application_id}/guilds/{guild_id}/commands",
                self._put_commands,
            ),
            _Route("GET", "channels/{channel_id}", self._get_channel),
            _Route("GET", "channels/{channel_id}/messages", self._get_history),
            _Route("POST", "channels/{channel_id}/messages", self._post_message, "message_create"),
            _Route("GET", msg, self._get_message),
            _Route("PATCH", msg, self._patch_message, "message_edit"),
            _Route("DELETE", msg, self._delete_message),
            _Route("POST", "channels/{channel_id}/typing", self._typing),
            _Route("POST", msg + "/threads", self._thread_from_message),
            _Route("POST", "channels/{channel_id}/threads", self._thread_without_message),
            _Route("PUT", msg + "/reactions/{emoji}/@me", self._add_reaction),
            _Route("DELETE", msg + "/reactions/{emoji}/@me", self._remove_reaction),
            _Route(
                "POST",
                "interactions/{interaction_id}/{interaction_token}/callback",
                self._interaction_callback,
                "callback",
                auth=False,
            ),
            _Route("POST", hook, self._webhook_execute, "webhook", auth=False),
            _Route("GET", hook + "/messages/{message_id}", self._webhook_get, auth=False),
            _Route(
                "PATCH", hook + "/messages/{message_id}", self._webhook_edit, "webhook", auth=False
            ),
            _Route(
                "DELETE",
                hook + "/messages/{message_id}",
                self._webhook_delete,
                "webhook",
                auth=False,
            ),
        ]

    # ------------------------------------------------------------------ REST: identity

    async def _get_me(self, req: _Request) -> tuple[int, Any]:
        me = self.bot.payload()
        me.update(verified=True, mfa_enabled=False, flags=0, email=None, locale="en-US")
        return 200, me

    async def _get_application(self, req: _Request) -> tuple[int, Any]:
        return 200, {
            "id": str(self.app_id),
            "name": self.bot.name,
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": ALICE.payload(),
            "team": None,
            "verify_key": "0" * 64,
            "flags": 1 << 19
            | 1 << 23,  # GATEWAY_MESSAGE_CONTENT_LIMITED, APPLICATION_COMMAND_BADGE
            "bot": self.bot.payload(),
            "summary": "",
            "interactions_endpoint_url": None,
            "install_params": None,
            "tags": [],
        }

    async def _get_gateway(self, req: _Request) -> tuple[int, Any]:
        if req.path == "gateway":
            return 200, {"url": self.gateway_url}
        return 200, {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            },
        }

    def _check_app(self, req: _Request) -> None:
        if req.id("application_id") != self.app_id:
            raise ApiError(403, 50001, "Missing Access")

    async def _get_commands(self, req: _Request) -> tuple[int, Any]:
        self._check_app(req)
        if "guild_id" in req.params:
            return 200, self.guild_commands.get(req.id("guild_id"), [])
        return 200, self.commands

    async def _put_commands(self, req: _Request) -> tuple[int, Any]:
        self._check_app(req)
        if not isinstance(req.body, list):
            raise _invalid_form(
                {
                    "_errors": [
                        {
                            "code": "LIST_TYPE_CONVERT",
                            "message": "Only iterables may be used in a ListType",
                        }
                    ]
                }
            )
        guild_id = req.id("guild_id") if "guild_id" in req.params else None
        old = self.guild_commands.get(guild_id, []) if guild_id else self.commands
        ids = {(c["name"], c.get("type", 1)): c["id"] for c in old}
        commands = []
        for command in req.body:
            saved = {
                "type": 1,
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **command,
                "application_id": str(self.app_id),
                "version": str(self._next_id()),
            }
            saved["id"] = ids.get((saved["name"], saved["type"])) or str(self._next_id())
            if guild_id:
                saved["guild_id"] = str(guild_id)
            commands.append(saved)
        if guild_id:
            self.guild_commands[guild_id] = commands
        else:
            self.commands = commands
        return 200, commands

    # ------------------------------------------------------------------ REST: channels

    def _channel(self, req: _Request) -> FakeChannel:
        channel = self.channels.get(req.id("channel_id"))
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def _live_message(self, channel_id: int, message_id: int) -> MessageRecord:
        rec = self.messages.get(channel_id, {}).get(message_id)
        if rec is None or rec.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return rec

    async def _get_channel(self, req: _Request) -> tuple[int, Any]:
        return 200, self._channel_payload(self._channel(req))

    async def _get_history(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(req)
        limit = max(1, min(100, int(req.query.get("limit", 50))))
        before = int(req.query.get("before", 0)) or None
        after = int(req.query.get("after", 0)) or None
        found = [
            m
            for m in self.channel_messages(channel.id)
            if (before is None or m.id < before) and (after is None or m.id > after)
        ]
        found = found[:limit] if after else found[-limit:]
        return 200, [self._message_payload(m) for m in reversed(found)]

    async def _post_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(req)
        if not channel.bot_can_send:
            raise ApiError(403, 50013, "Missing Permissions")
        payload = req.body if isinstance(req.body, dict) else {}
        bad_flags = int(payload.get("flags") or 0) & ~_SENDABLE_FLAGS
        if bad_flags:
            raise _invalid_form({"flags": _field_error("MESSAGE_FLAGS_INVALID", "Invalid flags")})
        reference = payload.get("message_reference")
        replied: MessageRecord | None = None
        if reference:
            ref_channel = int(reference.get("channel_id") or channel.id)
            replied = self.messages.get(ref_channel, {}).get(int(reference["message_id"]))
            if replied is None or replied.deleted:
                if reference.get("fail_if_not_exists", True):
                    raise _invalid_form(
                        {
                            "message_reference": _field_error(
                                "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                            )
                        }
                    )
                reference, replied = None, None
            else:
                reference = {
                    "type": 0,
                    "message_id": str(replied.id),
                    "channel_id": str(replied.channel_id),
                    **({"guild_id": str(replied.guild_id)} if replied.guild_id else {}),
                }
        rec = self._create_message(
            channel,
            self.bot,
            payload,
            req,
            type_=19 if reference else 0,
            reference=reference,
            replied_author=replied.author.id if replied else None,
        )
        await self._dispatch_message("MESSAGE_CREATE", rec)
        return 200, self._message_payload(rec)

    async def _get_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(req)
        return 200, self._message_payload(self._live_message(channel.id, req.id("message_id")))

    async def _patch_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(req)
        rec = self._live_message(channel.id, req.id("message_id"))
        if rec.author.id != self.bot.id or rec.webhook_id is not None:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        self._edit_message(rec, req.body if isinstance(req.body, dict) else {}, req)
        await self._dispatch_message("MESSAGE_UPDATE", rec)
        return 200, self._message_payload(rec)

    async def _delete_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(req)
        rec = self._live_message(channel.id, req.id("message_id"))
        if rec.author.id != self.bot.id and not self._bot_perms(channel) & PERM_MANAGE_MESSAGES:
            raise ApiError(403, 50013, "Missing Permissions")
        await self._delete(rec)
        return 204, None

    async def _typing(self, req: _Request) -> tuple[int, Any]:
        self._channel(req)
        return 204, None

    async def _thread_from_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(req)
        rec = self._live_message(channel.id, req.id("message_id"))
        if channel.is_thread or channel.guild_id is None:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        if rec.thread_id is not None:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        body = req.body if isinstance(req.body, dict) else {}
        thread = await self._create_thread(
            channel, body, thread_id=rec.id, type_=CHANNEL_PUBLIC_THREAD
        )
        rec.thread_id = thread.id
        return 201, self._channel_payload(thread)

    async def _thread_without_message(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(req)
        if channel.is_thread or channel.guild_id is None:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        body = req.body if isinstance(req.body, dict) else {}
        type_ = int(body.get("type") or CHANNEL_PRIVATE_THREAD)
        thread = await self._create_thread(channel, body, thread_id=self._next_id(), type_=type_)
        return 201, self._channel_payload(thread)

    async def _create_thread(
        self, parent: FakeChannel, body: Json, *, thread_id: int, type_: int
    ) -> FakeChannel:
        name = str(body.get("name") or "")
        if not 1 <= len(name) <= 100:
            raise _invalid_form(
                {
                    "name": _field_error(
                        "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                    )
                }
            )
        thread = FakeChannel(
            id=thread_id,
            name=name,
            type=type_,
            guild_id=parent.guild_id,
            parent_id=parent.id,
            owner_id=self.bot.id,
            bot_can_send=parent.bot_can_send,
        )
        self.channels[thread.id] = thread
        self.messages.setdefault(thread.id, {})
        guild = self.guilds.get(parent.guild_id or 0)
        if guild is not None:
            guild.channels.append(thread)
        data = {**self._channel_payload(thread), "newly_created": True}
        data["member"] = {
            "id": str(thread.id),
            "user_id": str(self.bot.id),
            "join_timestamp": _now_iso(),
            "flags": 0,
        }
        await self.dispatch("THREAD_CREATE", data, guild_id=parent.guild_id, intent=INTENT_GUILDS)
        return thread

    async def _add_reaction(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(req)
        rec = self._live_message(channel.id, req.id("message_id"))
        rec.reactions.setdefault(req.params["emoji"], set()).add(self.bot.id)
        return 204, None

    async def _remove_reaction(self, req: _Request) -> tuple[int, Any]:
        channel = self._channel(req)
        rec = self._live_message(channel.id, req.id("message_id"))
        rec.reactions.get(req.params["emoji"], set()).discard(self.bot.id)
        return 204, None

    # ------------------------------------------------------------------ REST: interactions

    async def _interaction_callback(self, req: _Request) -> tuple[int, Any]:
        rec = self.interactions.get(req.params["interaction_token"])
        if rec is None or str(rec.id) != req.params["interaction_id"]:
            raise ApiError(404, 10062, "Unknown interaction")
        if rec.expired or req.now - rec.created_at > self.callback_deadline:
            raise ApiError(404, 10062, "Unknown interaction")
        if rec.acknowledged:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = req.body if isinstance(req.body, dict) else {}
        kind = body.get("type")
        data: Json = body.get("data") or {}
        channel = self.channels[rec.channel_id]
        component = rec.type == INTERACTION_MESSAGE_COMPONENT
        message: MessageRecord | None = None
        if kind in (CALLBACK_CHANNEL_MESSAGE, CALLBACK_DEFERRED_CHANNEL_MESSAGE):
            flags = int(data.get("flags") or 0)
            if flags & ~(_SENDABLE_FLAGS | FLAG_EPHEMERAL):
                raise _invalid_form(
                    {"data": {"flags": _field_error("MESSAGE_FLAGS_INVALID", "Invalid flags")}}
                )
            if kind == CALLBACK_DEFERRED_CHANNEL_MESSAGE:
                data = {"flags": (flags & FLAG_EPHEMERAL) | FLAG_LOADING}
            message = self._create_message(
                channel,
                self.bot,
                data,
                req,
                type_=0 if component else 20,
                webhook=rec,
                allow_flags=FLAG_EPHEMERAL | FLAG_LOADING,
            )
            rec.original = message
        elif kind in (CALLBACK_DEFERRED_UPDATE_MESSAGE, CALLBACK_UPDATE_MESSAGE) and component:
            message = self._live_message(rec.channel_id, rec.message_id or 0)
            if kind == CALLBACK_UPDATE_MESSAGE:
                self._edit_message(message, data, req)
            rec.original = message
        elif kind == CALLBACK_MODAL:
            if not data.get("custom_id") or not data.get("components"):
                raise _invalid_form(
                    {"data": _field_error("BASE_TYPE_REQUIRED", "This field is required")}
                )
        else:
            raise _invalid_form(
                {"type": _field_error("BASE_TYPE_CHOICES", "Value must be one of {4, 5, 6, 7, 9}.")}
            )
        rec.callback_type, rec.callback_data, rec.responded_at = kind, body.get("data"), req.now
        if message is not None and not message.flags & FLAG_EPHEMERAL:
            event = "MESSAGE_UPDATE" if kind == CALLBACK_UPDATE_MESSAGE else "MESSAGE_CREATE"
            if kind != CALLBACK_DEFERRED_UPDATE_MESSAGE:
                await self._dispatch_message(event, message)
        if req.query.get("with_response", "").lower() not in ("1", "true"):
            return 204, None
        answer: Json = {
            "interaction": {
                "id": str(rec.id),
                "type": rec.type,
                **(
                    {
                        "response_message_id": str(message.id),
                        "response_message_loading": bool(message.flags & FLAG_LOADING),
                        "response_message_ephemeral": bool(message.flags & FLAG_EPHEMERAL),
                    }
                    if message is not None
                    else {}
                ),
            },
            "resource": {"type": kind},
        }
        if message is not None and kind != CALLBACK_DEFERRED_UPDATE_MESSAGE:
            answer["resource"]["message"] = self._message_payload(message)
        return 200, answer

    def _webhook_interaction(self, req: _Request) -> InteractionRecord:
        rec = self.interactions.get(req.params["webhook_token"])
        if (
            rec is None
            or req.params["webhook_id"] != str(self.app_id)
            or rec.expired
            or req.now - rec.created_at > self.interaction_ttl
        ):
            raise ApiError(404, 10015, "Unknown Webhook")
        return rec

    def _webhook_message(self, rec: InteractionRecord, req: _Request) -> MessageRecord:
        wanted = req.params["message_id"]
        if wanted == "@original":
            if rec.original is None or rec.original.deleted:
                raise ApiError(404, 10008, "Unknown Message")
            return rec.original
        for message in [rec.original, *rec.followups]:
            if message is not None and str(message.id) == wanted and not message.deleted:
                return message
        raise ApiError(404, 10008, "Unknown Message")

    async def _webhook_execute(self, req: _Request) -> tuple[int, Any]:
        rec = self._webhook_interaction(req)
        if not rec.acknowledged:
            raise ApiError(404, 10015, "Unknown Webhook")
        body = req.body if isinstance(req.body, dict) else {}
        original = rec.original
        if (
            rec.callback_type == CALLBACK_DEFERRED_CHANNEL_MESSAGE
            and original is not None
            and original.flags & FLAG_LOADING
            and not original.deleted
        ):
            # Discord: right after a deferral, a followup edits the loading message.
            body = {k: v for k, v in body.items() if k != "flags"}
            self._edit_message(original, body, req)
            message = original
            event = "MESSAGE_UPDATE"
        else:
            channel = self.channels[rec.channel_id]
            message = self._create_message(
                channel, self.bot, body, req, webhook=rec, allow_flags=FLAG_EPHEMERAL
            )
            rec.followups.append(message)
            event = "MESSAGE_CREATE"
        if not message.flags & FLAG_EPHEMERAL:
            await self._dispatch_message(event, message)
        if req.query.get("wait", "").lower() in ("1", "true"):
            return 200, self._message_payload(message)
        return 204, None

    async def _webhook_get(self, req: _Request) -> tuple[int, Any]:
        rec = self._webhook_interaction(req)
        return 200, self._message_payload(self._webhook_message(rec, req))

    async def _webhook_edit(self, req: _Request) -> tuple[int, Any]:
        rec = self._webhook_interaction(req)
        message = self._webhook_message(rec, req)
        self._edit_message(message, req.body if isinstance(req.body, dict) else {}, req)
        if not message.flags & FLAG_EPHEMERAL:
            await self._dispatch_message("MESSAGE_UPDATE", message)
        return 200, self._message_payload(message)

    async def _webhook_delete(self, req: _Request) -> tuple[int, Any]:
        rec = self._webhook_interaction(req)
        await self._delete(self._webhook_message(rec, req))
        return 204, None

    # ------------------------------------------------------------------ messages

    def _create_message(
        self,
        channel: FakeChannel,
        author: FakeUser,
        payload: Json,
        req: _Request,
        *,
        type_: int = 0,
        reference: Json | None = None,
        replied_author: int | None = None,
        webhook: InteractionRecord | None = None,
        allow_flags: int = 0,
    ) -> MessageRecord:
        content = payload.get("content") or ""
        embeds = payload.get("embeds") or []
        components = payload.get("components") or []
        flags = int(payload.get("flags") or 0) & (_SENDABLE_FLAGS | allow_flags)
        _validate(content, embeds, components, flags)
        attachments = [
            {
                "id": str(self._next_id()),
                "filename": f["filename"],
                "size": f["size"],
                "url": f"https://cdn.example.invalid/{f['filename']}",
                "proxy_url": f"https://media.example.invalid/{f['filename']}",
                "content_type": f["content_type"],
            }
            for f in req.files
        ]
        empty = not (content or embeds or components or attachments or payload.get("sticker_ids"))
        if empty and not flags & FLAG_LOADING:  # a deferral's loading message starts empty
            raise ApiError(400, 50006, "Cannot send an empty message")
        rec = MessageRecord(
            id=self._next_id(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=author,
            content=content,
            embeds=[_normalise_embed(e) for e in embeds],
            components=components,
            flags=flags,
            type=type_,
            message_reference=reference,
            attachments=attachments,
            nonce=payload.get("nonce"),
            webhook_id=self.app_id if webhook else None,
            interaction_id=webhook.id if webhook else None,
        )
        allowed = payload.get("allowed_mentions")
        self._apply_mentions(rec, allowed, replied_author)
        rec.history.append(self._revision(rec, "create", allowed, req))
        self.messages.setdefault(channel.id, {})[rec.id] = rec
        channel.last_message_id = rec.id
        channel.message_count += 1
        return rec

    def _edit_message(self, rec: MessageRecord, payload: Json, req: _Request) -> None:
        content = rec.content
        if "content" in payload:
            content = payload["content"] or ""
        embeds = rec.embeds
        if "embeds" in payload:
            embeds = [_normalise_embed(e) for e in payload["embeds"] or []]
        components = rec.components
        if "components" in payload:
            components = payload["components"] or []
        flags = rec.flags & ~FLAG_LOADING
        if payload.get("flags") is not None:
            flags = (flags & ~_EDITABLE_FLAGS) | (int(payload["flags"]) & _EDITABLE_FLAGS)
        _validate(content, embeds, components, flags)
        attachments = rec.attachments
        if "attachments" in payload and payload["attachments"] is not None:
            keep = {str(a.get("id")) for a in payload["attachments"]}
            attachments = [a for a in rec.attachments if a["id"] in keep]
        if not (content or embeds or components or attachments):
            raise ApiError(400, 50006, "Cannot send an empty message")
        rec.content, rec.embeds, rec.components = content, embeds, components
        rec.flags, rec.attachments = flags, attachments
        rec.edited_timestamp = _now_iso()
        allowed = payload.get("allowed_mentions")
        replied = None
        if rec.message_reference:
            ref = self.messages.get(int(rec.message_reference["channel_id"]), {}).get(
                int(rec.message_reference["message_id"])
            )
            replied = ref.author.id if ref else None
        self._apply_mentions(rec, allowed, replied)
        rec.history.append(self._revision(rec, "edit", allowed, req))

    async def _delete(self, rec: MessageRecord) -> None:
        rec.deleted = True
        data: Json = {"id": str(rec.id), "channel_id": str(rec.channel_id)}
        if rec.guild_id:
            data["guild_id"] = str(rec.guild_id)
        intent = INTENT_GUILD_MESSAGES if rec.guild_id else INTENT_DIRECT_MESSAGES
        await self.dispatch("MESSAGE_DELETE", data, guild_id=rec.guild_id, intent=intent)

    def _revision(
        self, rec: MessageRecord, kind: str, allowed: Json | None, req: _Request
    ) -> Revision:
        return Revision(
            time=req.now,
            kind=kind,
            content=rec.content,
            embeds=list(rec.embeds),
            components=list(rec.components),
            flags=rec.flags,
            allowed_mentions=allowed,
            mentions=list(rec.mentions),
            mention_everyone=rec.mention_everyone,
            path=req.path,
        )

    def _apply_mentions(
        self, rec: MessageRecord, allowed: Json | None, replied_author: int | None
    ) -> None:
        """What Discord does on every send AND edit: parse mentions out of the content,
        keeping only what ``allowed_mentions`` permits (all of it when omitted)."""
        parse = (
            {"users", "roles", "everyone"} if allowed is None else set(allowed.get("parse") or [])
        )
        users_ok = {int(u) for u in (allowed or {}).get("users") or []}
        roles_ok = {int(r) for r in (allowed or {}).get("roles") or []}
        mentioned: list[int] = []
        for raw in re.findall(r"<@!?(\d+)>", rec.content):
            uid = int(raw)
            if ("users" in parse or uid in users_ok) and uid not in mentioned:
                mentioned.append(uid)
        pings_reply = allowed is None or bool(allowed.get("replied_user"))
        if replied_author is not None and replied_author not in mentioned and pings_reply:
            mentioned.append(replied_author)
        rec.mentions = mentioned
        rec.mention_roles = [
            int(r)
            for r in dict.fromkeys(re.findall(r"<@&(\d+)>", rec.content))
            if "roles" in parse or int(r) in roles_ok
        ]
        rec.mention_everyone = "everyone" in parse and bool(
            re.search(r"@(everyone|here)\b", rec.content)
        )

    def _message_payload(self, rec: MessageRecord, *, nested: bool = False) -> Json:
        data: Json = {
            "id": str(rec.id),
            "type": rec.type,
            "channel_id": str(rec.channel_id),
            "author": rec.author.payload(),
            "content": rec.content,
            "timestamp": rec.timestamp,
            "edited_timestamp": rec.edited_timestamp,
            "tts": False,
            "mention_everyone": rec.mention_everyone,
            "mentions": [self._user(uid).payload() for uid in rec.mentions],
            "mention_roles": [str(r) for r in rec.mention_roles],
            "attachments": list(rec.attachments),
            "embeds": list(rec.embeds),
            "components": list(rec.components),
            "pinned": False,
            "flags": rec.flags,
        }
        if rec.reactions:
            data["reactions"] = [
                {
                    "emoji": {"id": None, "name": emoji},
                    "count": len(users),
                    "me": self.bot.id in users,
                    "count_details": {"burst": 0, "normal": len(users)},
                    "burst_colors": [],
                    "me_burst": False,
                    "burst_me": False,
                    "burst_count": 0,
                }
                for emoji, users in rec.reactions.items()
                if users
            ]
        if rec.nonce is not None:
            data["nonce"] = rec.nonce
        if rec.webhook_id is not None:
            data["webhook_id"] = str(rec.webhook_id)
            data["application_id"] = str(self.app_id)
        if rec.interaction_id is not None:
            interaction = next(
                (i for i in self.interactions.values() if i.id == rec.interaction_id), None
            )
            if interaction is not None:
                data["interaction_metadata"] = {
                    "id": str(interaction.id),
                    "type": interaction.type,
                    "user": interaction.user.payload(),
                    "authorizing_integration_owners": _owners(interaction.guild_id),
                }
        if rec.message_reference is not None:
            data["message_reference"] = rec.message_reference
            if not nested:
                ref = self.messages.get(int(rec.message_reference["channel_id"]), {}).get(
                    int(rec.message_reference["message_id"])
                )
                data["referenced_message"] = (
                    None if ref is None or ref.deleted else self._message_payload(ref, nested=True)
                )
        return data

    def _gateway_message(self, rec: MessageRecord) -> Json:
        data = self._message_payload(rec)
        if rec.guild_id is not None:
            guild = self.guilds[rec.guild_id]
            data["guild_id"] = str(rec.guild_id)
            if rec.webhook_id is None:
                data["member"] = self._member_payload(guild, rec.author, with_user=False)
            for mention in data["mentions"]:
                user = self._user(int(mention["id"]))
                if self._is_member(guild, user):
                    mention["member"] = self._member_payload(guild, user, with_user=False)
        return data

    def _visible_to(self, session: GatewaySession, rec: MessageRecord, data: Json) -> Json:
        """Without MESSAGE_CONTENT the bot sees text only in DMs, its own messages and
        messages that mention it."""
        if (
            session.wants(INTENT_MESSAGE_CONTENT)
            or rec.guild_id is None
            or rec.author.id == self.bot.id
            or self.bot.id in rec.mentions
        ):
            return data
        return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

    async def _dispatch_message(self, event: str, rec: MessageRecord) -> int:
        data = self._gateway_message(rec)
        intent = INTENT_GUILD_MESSAGES if rec.guild_id else INTENT_DIRECT_MESSAGES
        return await self.dispatch(
            event,
            data,
            guild_id=rec.guild_id,
            intent=intent,
            transform=lambda session, d: self._visible_to(session, rec, d),
        )

    # ------------------------------------------------------------------ payload builders

    def _user(self, user_id: int) -> FakeUser:
        return self.users.get(user_id) or FakeUser(user_id)

    def _is_member(self, guild: FakeGuild, user: FakeUser) -> bool:
        return user.id == self.bot.id or any(m.id == user.id for m in guild.members)

    def _join(self, guild: FakeGuild | None, user: FakeUser) -> None:
        self.users.setdefault(user.id, user)
        if guild is not None and not self._is_member(guild, user):
            guild.members.append(user)

    def _bot_perms(self, channel: FakeChannel) -> int:
        guild = self.guilds.get(channel.guild_id or 0)
        if guild is None:
            return EVERYONE_PERMISSIONS
        perms = guild.everyone_permissions | guild.bot_permissions
        return perms & ~PERM_SEND_MESSAGES if not channel.bot_can_send else perms

    def _member_payload(self, guild: FakeGuild, user: FakeUser, *, with_user: bool = True) -> Json:
        data: Json = {
            "roles": [str(guild.bot_role_id)] if user.id == self.bot.id else [],
            "nick": None,
            "avatar": None,
            "banner": None,
            "joined_at": "2024-01-01T00:00:00+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            data["user"] = user.payload()
        return data

    def _channel_payload(self, channel: FakeChannel) -> Json:
        data: Json = {
            "id": str(channel.id),
            "type": channel.type,
            "last_message_id": str(channel.last_message_id) if channel.last_message_id else None,
            "flags": 0,
        }
        if channel.type == CHANNEL_DM:
            data["recipients"] = [u.payload() for u in channel.recipients]
            return data
        data.update(
            guild_id=str(channel.guild_id),
            name=channel.name,
            rate_limit_per_user=0,
            nsfw=False,
        )
        if channel.is_thread:
            data.update(
                parent_id=str(channel.parent_id),
                owner_id=str(channel.owner_id or self.bot.id),
                message_count=channel.message_count,
                total_message_sent=channel.message_count,
                member_count=1,
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": channel.created_at,
                    "locked": False,
                    "create_timestamp": channel.created_at,
                },
            )
            return data
        overwrites = []
        if not channel.bot_can_send:
            overwrites.append(
                {"id": str(self.bot.id), "type": 1, "allow": "0", "deny": str(PERM_SEND_MESSAGES)}
            )
        data.update(
            position=channel.position,
            permission_overwrites=overwrites,
            topic=channel.topic,
            parent_id=str(channel.parent_id) if channel.parent_id else None,
            default_auto_archive_duration=1440,
        )
        return data

    def _guild_create(self, guild: FakeGuild, conn: GatewayConnection) -> Json:
        members = [self.bot]
        if conn.wants(INTENT_GUILD_PRESENCES) and conn.intents is not None:
            members += guild.members
        plain = [c for c in guild.channels if not c.is_thread]
        threads = [c for c in guild.channels if c.is_thread]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(guild.owner_id or ALICE.id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "system_channel_id": str(plain[0].id) if plain else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "application_id": None,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [
                {
                    "id": str(guild.id),
                    "name": "@everyone",
                    "permissions": str(guild.everyone_permissions),
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "icon": None,
                    "unicode_emoji": None,
                    "flags": 0,
                },
                {
                    "id": str(guild.bot_role_id),
                    "name": self.bot.name,
                    "permissions": str(guild.bot_permissions),
                    "position": 1,
                    "color": 0,
                    "hoist": False,
                    "managed": True,
                    "mentionable": False,
                    "icon": None,
                    "unicode_emoji": None,
                    "flags": 0,
                    "tags": {"bot_id": str(self.bot.id)},
                },
            ],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members) + 1,
            "voice_states": [],
            "members": [self._member_payload(guild, m) for m in members],
            "channels": [
                {k: v for k, v in self._channel_payload(c).items() if k != "guild_id"}
                for c in plain
            ],
            "threads": [self._channel_payload(c) for c in threads],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
        }

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        query = dict(request.query)
        self.gateway_queries.append(query)
        compress = query.get("compress") if query.get("compress") == "zlib-stream" else None
        conn = GatewayConnection(
            ws=ws, query=query, compress=compress, path=request.path, transport=request.transport
        )
        self.connections.append(conn)
        try:
            await conn.send(
                {
                    "op": 10,
                    "d": {"heartbeat_interval": self.heartbeat_interval_ms},
                    "s": None,
                    "t": None,
                }
            )
            while True:
                # receive() rather than ``async for``: the loop must see the client's
                # CLOSE frame (and its code) to know whether the session ends.
                msg = await ws.receive()
                if msg.type == WSMsgType.TEXT:
                    payload = json.loads(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    payload = json.loads(zlib.decompress(msg.data))
                else:
                    if msg.type == WSMsgType.CLOSE:
                        conn.client_close_code = int(msg.data)
                    break
                self.gateway_sends.append(payload)
                await self._on_gateway_op(conn, payload)
        finally:
            self.connections.remove(conn)
            self._detach(conn)
            conn.closed.set()
            await self._notify()
        return ws

    def _detach(self, conn: GatewayConnection) -> None:
        """The connection is gone: its session ends, or waits for a RESUME."""
        session = conn.session
        if session is None or session.connection is not conn:
            return
        session.connection = None
        if conn.ends_session:
            session.state = "invalidated"
        else:
            session.state = "resumable"
            session.resumable_until = time.monotonic() + self.resume_timeout

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _close(self, conn: GatewayConnection, code: int, reason: bytes) -> None:
        conn.server_close_code = code
        await conn.ws.close(code=code, message=reason)

    async def _on_gateway_op(self, conn: GatewayConnection, payload: Json) -> None:
        op, data = payload.get("op"), payload.get("d")
        if op == 1:
            conn.heartbeats += 1
            if self.ack_heartbeats:
                await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, data or {})
        elif op == 6:
            await self._resume(conn, data or {})
        elif op == 8:
            await self._request_members(conn, data or {})
        elif op == 3:
            pass  # presence update: accepted, nothing to do
        else:
            await self._close(conn, 4001, b"Unknown opcode.")

    def _token_ok(self, token: Any) -> bool:
        return isinstance(token, str) and token.removeprefix("Bot ") == self.bot_token

    async def _identify(self, conn: GatewayConnection, data: Json) -> None:
        if conn.identified:
            await self._close(conn, 4005, b"Already authenticated.")
            return
        if not self._token_ok(data.get("token")):
            await self._close(conn, 4004, b"Authentication failed.")
            return
        intents = data.get("intents")
        if not isinstance(intents, int):
            await self._close(conn, 4013, b"Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS and not self.allow_privileged_intents:
            await self._close(conn, 4014, b"Disallowed intent(s).")
            return
        shard = tuple(data.get("shard") or (0, 1))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            await self._close(conn, 4010, b"Invalid shard.")
            return
        conn.intents, conn.shard, conn.identify = intents, (int(shard[0]), int(shard[1])), data
        conn.session_id = uuid.uuid4().hex
        conn.identified = True
        session = GatewaySession(conn.session_id, conn.intents, conn.shard, data, connection=conn)
        conn.session = session
        self.sessions[session.id] = session
        self.identifies.append(data)
        guilds = [g for g in self.guilds.values() if conn.owns(g.id)]
        await conn.send_dispatch(
            "READY",
            {
                "v": 10,
                "user": {**self.bot.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
                "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
                "session_id": conn.session_id,
                "session_type": "normal",
                "resume_gateway_url": self.resume_gateway_url,
                "shard": list(conn.shard),
                "application": {"id": str(self.app_id), "flags": 1 << 19 | 1 << 23},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "user_settings": {},
                "auth": {},
                "_trace": ['["fake-discord",{"micros":0}]'],
            },
        )
        if conn.wants(INTENT_GUILDS):
            for guild in guilds:
                await conn.send_dispatch("GUILD_CREATE", self._guild_create(guild, conn))
        self._ready.set()
        await self._notify()

    async def _resume(self, conn: GatewayConnection, data: Json) -> None:
        """Discord's RESUME: replay every dispatch after the client's ``seq``, then
        RESUMED. An unknown, ended or expired session gets op 9 INVALID_SESSION with
        ``d: false`` (the client must IDENTIFY anew); a ``seq`` the session can't replay
        from closes the connection with 4007 (Invalid seq)."""
        if conn.identified:
            await self._close(conn, 4005, b"Already authenticated.")
            return
        session = self.sessions.get(str(data.get("session_id")))
        if (
            not self._token_ok(data.get("token"))
            or session is None
            or not session.live(time.monotonic())
        ):
            self.invalid_sessions.append({**data, "token": "***"})
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            await self._notify()
            return
        seq = data.get("seq")
        missed = session.after(seq if isinstance(seq, int) else 0)
        if missed is None:
            await self._close(conn, 4007, b"Invalid seq.")
            return
        previous = session.connection
        if previous is not None and previous is not conn:
            # The client gave that connection up (a zombie): it no longer carries the
            # session, and Discord cuts it.
            previous.session = None
            self._kill(previous)
        async with conn._lock:
            conn.intents, conn.shard = session.intents, session.shard
            conn.session_id, conn.identify, conn.identified = session.id, data, True
            conn.session = session
            session.connection, session.state, session.resumable_until = conn, "connected", None
            session.resumes += 1
            for payload in missed:
                await conn._send_locked(payload)
            resumed = session.record("RESUMED", {"_trace": ['["fake-discord",{"micros":0}]']})
            conn.seq = int(resumed["s"])
            await conn._send_locked(resumed)
        self.resumes.append(
            {"session_id": session.id, "seq": seq, "replayed": len(missed), "path": conn.path}
        )
        await self._notify()

    async def _request_members(self, conn: GatewayConnection, data: Json) -> None:
        guild = self.guilds.get(int(data.get("guild_id") or 0))
        if guild is None or not conn.wants(INTENT_GUILD_MEMBERS):
            return
        members = [self.bot, *guild.members]
        wanted = data.get("user_ids")
        if wanted:
            ids = {int(u) for u in (wanted if isinstance(wanted, list) else [wanted])}
            members = [m for m in members if m.id in ids]
        await conn.send_dispatch(
            "GUILD_MEMBERS_CHUNK",
            {
                "guild_id": str(guild.id),
                "members": [self._member_payload(guild, m) for m in members],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
                **({"nonce": data["nonce"]} if data.get("nonce") else {}),
            },
        )

    async def wait_ready(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - bounded by design
        """Until a client has IDENTIFIED and got READY (and its GUILD_CREATEs)."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def dispatch(
        self,
        event: str,
        data: Json,
        *,
        guild_id: int | None = None,
        intent: int | None = None,
        transform: Callable[[GatewaySession, Json], Json] | None = None,
    ) -> int:
        """Sends a DISPATCH to every live session of the guild's shard (shard 0 for DMs)
        whose intents include ``intent``; returns how many sessions got it. A session
        whose connection dropped keeps it for its RESUME."""
        sent = 0
        now = time.monotonic()
        for session in list(self.sessions.values()):
            if not session.live(now) or not session.owns(guild_id) or not session.wants(intent):
                continue
            payload = transform(session, data) if transform else data
            conn = session.connection
            if conn is not None:
                await conn.send_dispatch(event, payload)
            else:
                session.record(event, payload)
            sent += 1
        return sent

    async def send_op(self, op: int, data: Any = None) -> None:
        """A raw opcode to every connection (7 RECONNECT, 9 INVALID_SESSION, ...)."""
        for conn in list(self.connections):
            await conn.send({"op": op, "d": data, "s": None, "t": None})

    async def disconnect_all(self, code: int = 4000) -> None:
        """Closes every gateway connection with this close code (4000, the default,
        lets clients RESUME; a code of ``NON_RESUMABLE_CLOSE_CODES`` ends sessions)."""
        for conn in list(self.connections):
            await self._close(conn, code, b"closed by the fake")

    async def kill_connections(self, session_id: str | None = None) -> int:
        """Cuts gateway connections (all, or the one carrying ``session_id``) without a
        close frame, as a network failure does: their sessions stay resumable. Returns
        how many were cut; waits until the fake has seen them close."""
        cut = [
            c
            for c in list(self.connections)
            if session_id is None or (c.session is not None and c.session.id == session_id)
        ]
        for conn in cut:
            self._kill(conn)
        for conn in cut:
            await asyncio.wait_for(conn.closed.wait(), 5)
        return len(cut)

    def _kill(self, conn: GatewayConnection) -> None:
        conn.killed = True
        if conn.transport is not None:
            conn.transport.abort()

    def expire_sessions(self) -> None:
        """Every session without a connection expires now (as after ``resume_timeout``)."""
        for session in self.sessions.values():
            if session.state == "resumable":
                session.state = "invalidated"

    @property
    def live_sessions(self) -> list[GatewaySession]:
        """Sessions connected or still resumable."""
        now = time.monotonic()
        return [s for s in self.sessions.values() if s.live(now)]

    async def wait_until(self, condition: Callable[[], object], timeout: float = 5.0) -> None:  # noqa: ASYNC109 - bounded by design
        """Until ``condition()`` is truthy, re-checked after each REST call answered and
        each gateway IDENTIFY, RESUME, INVALID_SESSION or closed connection."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: bool(condition()))

    def _require_client(self) -> None:
        if not any(c.identified for c in self.connections) and not self.live_sessions:
            raise RuntimeError("no identified gateway client: call wait_ready() first")

    # ------------------------------------------------------------------ injection

    async def inject_message(
        self,
        channel_id: int,
        content: str,
        author: FakeUser,
        *,
        mentions_bot: bool = False,
        reply_to: int | None = None,
        guild_id: int | None = None,
        embeds: list[Json] | None = None,
    ) -> MessageRecord:
        """A user posts a message: it is stored and dispatched as MESSAGE_CREATE.
        ``mentions_bot`` prefixes ``<@bot>``; ``reply_to`` is a message id in the same
        channel (a reply to the bot's message also mentions the bot, as on Discord)."""
        self._require_client()
        channel = self.channels.get(channel_id)
        if channel is None:
            raise KeyError(f"unknown channel {channel_id}")
        if guild_id is not None and guild_id != channel.guild_id:
            raise ValueError(f"channel {channel_id} is not in guild {guild_id}")
        self._join(self.guilds.get(channel.guild_id or 0), author)
        if mentions_bot and self.bot.mention not in content:
            content = f"{self.bot.mention} {content}"
        reference = None
        replied = None
        if reply_to is not None:
            replied = self._live_message(channel_id, reply_to)
            reference = {"type": 0, "message_id": str(replied.id), "channel_id": str(channel_id)}
            if channel.guild_id:
                reference["guild_id"] = str(channel.guild_id)
        req = _Request(
            {}, None, {}, [], time.monotonic(), f"(inject) channels/{channel_id}/messages"
        )
        rec = self._create_message(
            channel,
            author,
            {"content": content, "embeds": embeds or []},
            req,
            type_=19 if reference else 0,
            reference=reference,
            replied_author=replied.author.id if replied else None,
        )
        await self._dispatch_message("MESSAGE_CREATE", rec)
        return rec

    async def inject_slash_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        user: FakeUser = ALICE,
        channel_id: int = CHANNEL_ID,
        guild_id: int | None = GUILD_ID,
    ) -> InteractionRecord:
        """A user runs ``/name`` with options (str → STRING, bool → BOOLEAN, int →
        INTEGER, float → NUMBER, FakeUser → USER); dispatched as INTERACTION_CREATE type 2.
        ``data.guild_id`` is set when the command was synced to that guild."""
        self._require_client()
        command = next(
            (c for c in self.guild_commands.get(guild_id or 0, []) if c["name"] == name), None
        )
        data: Json = {"name": name, "type": 1}
        if command is not None:
            data["guild_id"] = str(guild_id)
        else:
            command = next((c for c in self.commands if c["name"] == name), None)
        data["id"] = command["id"] if command else str(self._next_id())
        registered = {o["name"]: o.get("type") for o in (command or {}).get("options", [])}
        data["options"] = []
        resolved: Json = {}
        guild = self.guilds.get(guild_id or 0)
        for key, value in (options or {}).items():
            option_type = registered.get(key) or _option_type(value)
            if isinstance(value, FakeUser):
                self._join(guild, value)
                resolved.setdefault("users", {})[str(value.id)] = value.payload()
                if guild is not None:
                    resolved.setdefault("members", {})[str(value.id)] = {
                        **self._member_payload(guild, value, with_user=False),
                        "permissions": str(guild.everyone_permissions),
                    }
                value = str(value.id)
            data["options"].append({"name": key, "type": option_type, "value": value})
        if resolved:
            data["resolved"] = resolved
        return await self._inject_interaction(
            INTERACTION_APPLICATION_COMMAND, data, user, channel_id, guild_id
        )

    async def inject_component(
        self,
        custom_id: str,
        message_id: int,
        user: FakeUser = ALICE,
        channel_id: int = CHANNEL_ID,
        *,
        component_type: int = 2,
        values: list[str] | None = None,
    ) -> InteractionRecord:
        """A user presses a button (or picks from a select, with ``values``) on a message;
        dispatched as INTERACTION_CREATE type 3 carrying that message."""
        self._require_client()
        message = self._live_message(channel_id, message_id)
        data: Json = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        return await self._inject_interaction(
            INTERACTION_MESSAGE_COMPONENT, data, user, channel_id, message.guild_id, message
        )

    async def _inject_interaction(
        self,
        type_: int,
        data: Json,
        user: FakeUser,
        channel_id: int,
        guild_id: int | None,
        message: MessageRecord | None = None,
    ) -> InteractionRecord:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise KeyError(f"unknown channel {channel_id}")
        guild_id = channel.guild_id if guild_id is None else guild_id
        guild = self.guilds.get(guild_id or 0)
        self._join(guild, user)
        rec = InteractionRecord(
            id=self._next_id(),
            token="aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48),
            type=type_,
            channel_id=channel_id,
            guild_id=guild_id,
            user=user,
            data=data,
            created_at=time.monotonic(),
            message_id=message.id if message else None,
        )
        self.interactions[rec.token] = rec
        payload: Json = {
            "id": str(rec.id),
            "application_id": str(self.app_id),
            "type": type_,
            "data": data,
            "token": rec.token,
            "version": 1,
            "channel_id": str(channel_id),
            "channel": self._channel_payload(channel),
            "locale": "en-US",
            "app_permissions": str(self._bot_perms(channel)),
            "entitlements": [],
            "authorizing_integration_owners": _owners(guild_id),
            "context": 0 if guild_id else 1,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild is not None:
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            payload["member"] = {
                **self._member_payload(guild, user),
                "permissions": str(guild.everyone_permissions),
            }
        else:
            payload["user"] = user.payload()
        if message is not None:
            payload["message"] = self._message_payload(message)
        rec.created_at = time.monotonic()
        await self.dispatch("INTERACTION_CREATE", payload, guild_id=guild_id)
        return rec


# ---------------------------------------------------------------------- helpers


def _owners(guild_id: int | None) -> Json:
    return {"0": str(guild_id)} if guild_id else {"1": str(ALICE.id)}


def _option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    if isinstance(value, FakeUser):
        return 6
    return 3


def _normalise_embed(embed: Json) -> Json:
    return {"type": "rich", **{k: v for k, v in embed.items() if v is not None}}


def _embed_text_length(embed: Json) -> int:
    total = len(embed.get("title") or "") + len(embed.get("description") or "")
    total += len((embed.get("footer") or {}).get("text") or "")
    total += len((embed.get("author") or {}).get("name") or "")
    for item in embed.get("fields") or []:
        total += len(item.get("name") or "") + len(item.get("value") or "")
    return total


def _validate(content: str, embeds: list[Json], components: list[Json], flags: int) -> None:
    """Discord's size rules; the error tree mirrors Discord's ``errors`` object."""
    errors: Json = {}
    if len(content) > MAX_CONTENT:
        errors["content"] = _field_error(
            "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
        )
    if len(embeds) > MAX_EMBEDS:
        errors["embeds"] = _field_error(
            "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer in length."
        )
    else:
        per_embed: Json = {}
        for index, embed in enumerate(embeds):
            found: Json = {}
            checks = [
                ("title", embed.get("title"), MAX_EMBED_TITLE),
                ("description", embed.get("description"), MAX_EMBED_DESCRIPTION),
            ]
            for key, value, limit in checks:
                if value is not None and len(str(value)) > limit:
                    found[key] = _field_error(
                        "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length."
                    )
            footer = (embed.get("footer") or {}).get("text")
            if footer and len(footer) > MAX_EMBED_FOOTER:
                found["footer"] = {
                    "text": _field_error(
                        "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBED_FOOTER} or fewer in length."
                    )
                }
            author = (embed.get("author") or {}).get("name")
            if author and len(author) > MAX_EMBED_AUTHOR:
                found["author"] = {
                    "name": _field_error(
                        "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBED_AUTHOR} or fewer in length."
                    )
                }
            fields = embed.get("fields") or []
            if len(fields) > MAX_EMBED_FIELDS:
                found["fields"] = _field_error(
                    "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBED_FIELDS} or fewer in length."
                )
            else:
                for i, item in enumerate(fields):
                    bad: Json = {}
                    if len(item.get("name") or "") > MAX_EMBED_FIELD_NAME:
                        bad["name"] = _field_error(
                            "BASE_TYPE_MAX_LENGTH",
                            f"Must be {MAX_EMBED_FIELD_NAME} or fewer in length.",
                        )
                    if len(item.get("value") or "") > MAX_EMBED_FIELD_VALUE:
                        bad["value"] = _field_error(
                            "BASE_TYPE_MAX_LENGTH",
                            f"Must be {MAX_EMBED_FIELD_VALUE} or fewer in length.",
                        )
                    if bad:
                        found.setdefault("fields", {})[str(i)] = bad
            if found:
                per_embed[str(index)] = found
        if per_embed:
            errors["embeds"] = per_embed
        elif sum(_embed_text_length(e) for e in embeds) > MAX_EMBED_TOTAL:
            errors["embeds"] = _field_error(
                "MAX_EMBED_SIZE_EXCEEDED", f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}"
            )
    if not flags & FLAG_IS_COMPONENTS_V2:
        if len(components) > MAX_ACTION_ROWS:
            errors["components"] = _field_error(
                "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_ACTION_ROWS} or fewer in length."
            )
        else:
            rows: Json = {}
            for index, row in enumerate(components):
                children = row.get("components") or []
                if row.get("type") == 1 and len(children) > MAX_ROW_COMPONENTS:
                    rows[str(index)] = {
                        "components": _field_error(
                            "BASE_TYPE_MAX_LENGTH",
                            f"Must be {MAX_ROW_COMPONENTS} or fewer in length.",
                        )
                    }
                for j, child in enumerate(children):
                    if len(str(child.get("custom_id") or "")) > 100:
                        rows.setdefault(str(index), {}).setdefault("components", {})[str(j)] = {
                            "custom_id": _field_error(
                                "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length."
                            )
                        }
            if rows:
                errors["components"] = rows
    if errors:
        raise _invalid_form(errors)


@contextlib.contextmanager
def point_discord_py_at(fake: FakeDiscord) -> Iterator[None]:
    """Points discord.py's REST base and default gateway at ``fake``; restores them after.

    Both are class attributes read at call time (``Route.BASE`` when a Route is built,
    ``DiscordWebSocket.DEFAULT_GATEWAY`` when connecting), so every client created
    inside the block (and any that keeps running in it) talks to the fake.
    """
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_url
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


__all__ = [
    "ALICE",
    "APP_ID",
    "BOB",
    "BOT_USER_ID",
    "CHANNEL_ID",
    "DELETE_MESSAGE",
    "EDIT_INTERACTION_MESSAGE",
    "EDIT_MESSAGE",
    "FOLLOWUP",
    "GUILD_ID",
    "INTERACTION_CALLBACK",
    "OTHER_CHANNEL_ID",
    "SEND_MESSAGE",
    "ApiError",
    "CallRecord",
    "FakeChannel",
    "FakeDiscord",
    "FakeGuild",
    "FakeUser",
    "GatewayConnection",
    "GatewaySession",
    "InteractionRecord",
    "Limit",
    "MessageRecord",
    "RateLimits",
    "Revision",
    "default_guilds",
    "point_discord_py_at",
]
