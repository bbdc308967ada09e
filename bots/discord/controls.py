"""The Stop button a streaming reply carries.

Its ``custom_id`` holds everything a press needs (the reply's id and who asked),
so whichever process receives the press can act on it: it publishes the Stop
through ``core.state.cancel`` and the process streaming the reply stops it. No
discord.py ``View`` has to stay registered for it, in this process or any other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import discord

STOP_PREFIX = "chatrelay:stop:"
_STOP = re.compile(rf"^{re.escape(STOP_PREFIX)}([0-9a-f]{{1,40}}):(\d{{1,20}})$")


@dataclass(frozen=True, slots=True)
class StopRequest:
    reply_id: str
    asker: int
    """Who asked: they may stop it (as may members who can manage messages)."""


def stop_custom_id(reply_id: str, asker: int) -> str:
    return f"{STOP_PREFIX}{reply_id}:{asker}"


def parse_stop(custom_id: str) -> StopRequest | None:
    match = _STOP.match(custom_id)
    return StopRequest(match.group(1), int(match.group(2))) if match else None


def stop_view(reply_id: str, asker: int) -> discord.ui.View:
    """A view that only carries the button to Discord.

    It is stopped before it is sent: discord.py keeps live views in memory to
    route presses to them, and one per streamed message would pile up forever.
    Presses are handled from the ``custom_id`` instead (``DiscordBot.on_interaction``).
    """
    view = discord.ui.View(timeout=None)
    view.add_item(
        discord.ui.Button(
            label="Stop",
            emoji="⏹️",
            style=discord.ButtonStyle.secondary,
            custom_id=stop_custom_id(reply_id, asker),
        )
    )
    view.stop()
    return view
