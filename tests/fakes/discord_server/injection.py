"""What users do, as a test scripts it: post a message (a mention, a reply), run a
slash command, press a button; each is stored and dispatched to the bot's sessions."""

from __future__ import annotations

import secrets
import time
from typing import Any

from tests.fakes.discord_server.constants import (
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_MESSAGE_COMPONENT,
    Json,
)
from tests.fakes.discord_server.messages import Messages
from tests.fakes.discord_server.payloads import owners
from tests.fakes.discord_server.records import InteractionRecord, MessageRecord
from tests.fakes.discord_server.routing import Request
from tests.fakes.discord_server.world import ALICE, CHANNEL_ID, GUILD_ID, FakeUser


class Injection(Messages):
    """Users' messages and interactions, injected by tests."""

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
        req = Request(
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
        shard: int | None = None,
    ) -> InteractionRecord:
        """A user presses a button (or picks from a select, with ``values``) on a message;
        dispatched as INTERACTION_CREATE type 3 carrying that message.

        ``shard``: dispatched to the sessions of that shard instead of the guild's.
        Discord sends a guild's interactions to the guild's shard; this plays a press
        reaching a process that does not run the message's shard (as after a
        re-shard), for tests of what works from any process."""
        self._require_client()
        message = self._live_message(channel_id, message_id)
        data: Json = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        return await self._inject_interaction(
            INTERACTION_MESSAGE_COMPONENT,
            data,
            user,
            channel_id,
            message.guild_id,
            message,
            shard=shard,
        )

    async def _inject_interaction(
        self,
        type_: int,
        data: Json,
        user: FakeUser,
        channel_id: int,
        guild_id: int | None,
        message: MessageRecord | None = None,
        *,
        shard: int | None = None,
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
            "authorizing_integration_owners": owners(guild_id),
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
        await self.dispatch("INTERACTION_CREATE", payload, guild_id=guild_id, shard=shard)
        return rec


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
