"""Who may talk to the bot, and where: the allow and block lists.

Decided from ids alone, before anything costs a call: blocks win over allows;
an allow list that is empty allows everyone. A thread counts as its parent
channel and a channel as its category, so one id covers a whole support area.
Roles are only known in guilds, so a DM is allowed by the user lists alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import discord

from bots.discord.settings import DiscordSettings


@dataclass(frozen=True, slots=True)
class Access:
    allowed_users: frozenset[int] = frozenset()
    allowed_roles: frozenset[int] = frozenset()
    blocked_users: frozenset[int] = frozenset()
    blocked_roles: frozenset[int] = frozenset()
    allowed_channels: frozenset[int] = frozenset()
    blocked_channels: frozenset[int] = frozenset()
    dms: bool = True

    @classmethod
    def from_settings(cls, settings: DiscordSettings) -> Access:
        return cls(
            allowed_users=frozenset(settings.discord_allowed_users),
            allowed_roles=frozenset(settings.discord_allowed_roles),
            blocked_users=frozenset(settings.discord_blocked_users),
            blocked_roles=frozenset(settings.discord_blocked_roles),
            allowed_channels=frozenset(settings.discord_allowed_channels),
            blocked_channels=frozenset(settings.discord_blocked_channels),
            dms=settings.discord_dms,
        )

    def allows(self, user: int, roles: Iterable[int], channels: Iterable[int], *, dm: bool) -> bool:
        """``roles``: the member's role ids (none in DMs); ``channels``: the channel,
        its parent and its category (none in DMs)."""
        roles = set(roles)
        if user in self.blocked_users or roles & self.blocked_roles:
            return False
        if dm:
            if not self.dms:
                return False
        else:
            lineage = set(channels)
            if lineage & self.blocked_channels:
                return False
            if self.allowed_channels and not lineage & self.allowed_channels:
                return False
        if self.allowed_users or self.allowed_roles:
            return user in self.allowed_users or bool(roles & self.allowed_roles)
        return True

    def allows_author(self, user: discord.abc.User, channel: object, *, dm: bool) -> bool:
        """``allows`` for a discord.py message author or interaction user."""
        return self.allows(user.id, role_ids(user), () if dm else lineage(channel), dm=dm)


def role_ids(user: discord.abc.User) -> frozenset[int]:
    """A member's roles; a plain user (DMs) has none."""
    if isinstance(user, discord.Member):
        return frozenset(role.id for role in user.roles)
    return frozenset()


def lineage(channel: object) -> tuple[int, ...]:
    """The channel, then its parent (threads) and category, as far as they are known."""
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        category = parent.category_id if parent is not None else None
        return _ids(channel.id, channel.parent_id, category)
    if isinstance(channel, discord.abc.GuildChannel):
        return _ids(channel.id, channel.category_id)
    channel_id = getattr(channel, "id", None)  # a partial channel: only its id is known
    return (channel_id,) if isinstance(channel_id, int) else ()


def _ids(*ids: int | None) -> tuple[int, ...]:
    return tuple(i for i in ids if i is not None)
