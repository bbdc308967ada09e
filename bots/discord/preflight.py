"""Discord's part of ``chatrelay check``: does Discord take the token, and has
the application the MESSAGE_CONTENT intent when the channel rules need it?

Plain REST with httpx rather than a discord.py login: a check must not open a
gateway session (it would count against the daily identify limit)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from bots.check import Finding

if TYPE_CHECKING:
    from bots.discord.settings import DiscordSettings
    from core.config import Settings

GATEWAY_MESSAGE_CONTENT = 1 << 18
GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19
"""Application flags: the intent granted (verified apps) or in its limited form
(apps under 100 servers); either lets the bot read messages it isn't mentioned in."""


async def check_discord(settings: DiscordSettings, core: Settings) -> Finding:
    from bots.discord.api import wants_message_content
    from core.rules import load_rules

    if not settings.configured or settings.discord_bot_token is None:
        return Finding("discord", "skip", "DISCORD_BOT_TOKEN not set")
    headers = {"Authorization": f"Bot {settings.discord_bot_token.get_secret_value()}"}
    async with httpx.AsyncClient(base_url=settings.discord_api_url + "/", headers=headers) as http:
        me = await http.get("users/@me")
        if me.status_code == 401:
            return Finding("discord", "FAIL", "Discord refused DISCORD_BOT_TOKEN (401)")
        me.raise_for_status()
        app = await http.get("applications/@me")
        app.raise_for_status()
    user = me.json()
    flags = int(app.json().get("flags") or 0)
    where = f"as {user.get('username')} ({user.get('id')})"
    wanted = wants_message_content(settings, load_rules(core.channels_file))
    granted = bool(flags & (GATEWAY_MESSAGE_CONTENT | GATEWAY_MESSAGE_CONTENT_LIMITED))
    if wanted and not granted:
        return Finding(
            "discord",
            "FAIL",
            f"{where}: the auto-reply channels need the MESSAGE_CONTENT intent, which the "
            "application lacks (Developer Portal → Bot → Privileged Gateway Intents)",
        )
    intent = "MESSAGE_CONTENT granted" if granted else "MESSAGE_CONTENT not needed"
    return Finding("discord", "ok", f"{where}, {intent}")
