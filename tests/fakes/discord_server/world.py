"""The world the fake bot lives in: users, guilds and channels, and the default one
(one guild, two text channels, Alice and Bob) with its fixed snowflake ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from tests.fakes.discord_server.constants import (
    BOT_PERMISSIONS,
    CHANNEL_GUILD_TEXT,
    EVERYONE_PERMISSIONS,
    THREAD_TYPES,
    Json,
)

# Fixed ids for the default world; realistic 18–19 digit snowflakes.
APP_ID = 1_200_000_000_000_000_001
BOT_USER_ID = APP_ID  # new applications share the bot user's id
GUILD_ID = 1_200_000_000_000_000_100
CHANNEL_ID = 1_200_000_000_000_000_200
OTHER_CHANNEL_ID = 1_200_000_000_000_000_201


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


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
    created_at: str = field(default_factory=now_iso)

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES


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
