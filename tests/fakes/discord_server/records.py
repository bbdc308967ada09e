"""What the fake records: messages with every revision, injected interactions and
what the bot did with them, and REST calls with the fake's answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.fakes.discord_server.constants import (
    CALLBACK_DEFERRED_CHANNEL_MESSAGE,
    CALLBACK_DEFERRED_UPDATE_MESSAGE,
    Json,
)
from tests.fakes.discord_server.world import FakeUser, now_iso
from tests.fakes.faults import FaultKind


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
    timestamp: str = field(default_factory=now_iso)
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
