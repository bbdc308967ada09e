"""Discord's JSON for what the fake stores: users, members, channels, messages (as
REST and the gateway show them, content hidden without MESSAGE_CONTENT) and
GUILD_CREATE."""

from __future__ import annotations

from tests.fakes.discord_server.constants import (
    CHANNEL_DM,
    EVERYONE_PERMISSIONS,
    INTENT_GUILD_PRESENCES,
    INTENT_MESSAGE_CONTENT,
    PERM_SEND_MESSAGES,
    Json,
)
from tests.fakes.discord_server.records import MessageRecord
from tests.fakes.discord_server.sessions import GatewayConnection, GatewaySession
from tests.fakes.discord_server.state import DiscordState
from tests.fakes.discord_server.world import ALICE, FakeChannel, FakeGuild, FakeUser


class Payloads(DiscordState):
    """Builds Discord's payloads from the fake's records."""

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
                    "authorizing_integration_owners": owners(interaction.guild_id),
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


def owners(guild_id: int | None) -> Json:
    return {"0": str(guild_id)} if guild_id else {"1": str(ALICE.id)}
