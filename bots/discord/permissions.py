"""Whether the bot may write a reply somewhere, checked before the model is asked.

A reply the bot can't post is a model call wasted and a string of 403s, and
Discord bans an IP for a while after 10,000 401/403/429 answers in 10 minutes.
So the permissions a reply needs are checked from discord.py's cache (the
channel's overwrites and the bot's roles, kept current by the gateway) before
anything is sent, and a missing one is logged once per channel.
"""

from __future__ import annotations

import logging

import discord

from bots.discord.format import RenderMode

log = logging.getLogger(__name__)


def missing_permissions(
    permissions: discord.Permissions,
    *,
    thread: bool,
    mode: RenderMode,
    reply: bool = False,
    create_thread: bool = False,
) -> list[str]:
    """The permission names a reply lacks: to see and send (in threads: send in
    threads), to reply to a message (read history), embeds, a new thread."""
    needed = ["view_channel", "send_messages_in_threads" if thread else "send_messages"]
    if reply:
        needed.append("read_message_history")
    if mode == "embeds":
        needed.append("embed_links")
    if create_thread:
        needed += ["create_public_threads", "send_messages_in_threads"]
    return [name for name in needed if not getattr(permissions, name)]


class PermissionLog:
    """Says once per channel what is missing there, not once per message."""

    def __init__(self) -> None:
        self._told: set[tuple[int, tuple[str, ...]]] = set()

    def missing(self, channel_id: int, missing: list[str]) -> None:
        key = (channel_id, tuple(missing))
        if key not in self._told:
            self._told.add(key)
            log.warning(
                "not replying in channel %s: the bot lacks %s there", channel_id, ", ".join(missing)
            )
