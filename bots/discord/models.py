"""Which model a channel's replies use, as chosen with ``/model``.

The choice belongs to the channel (a thread, or a DM) where it was made, so
everyone talking to the bot there gets the same model, and a thread without a
choice of its own follows its parent channel. It is kept in Redis without
expiry, like any setting (``core.state.choices``), and ignored once the model
is no longer offered (``DISCORD_MODELS`` changed). Without a choice, the
channel's rule (the rules file) or the default model applies.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.state.choices import ModelChoices

PLATFORM = "discord"


class ChannelModels:
    def __init__(self, choices: ModelChoices, offered: Sequence[str]) -> None:
        self._choices = choices
        self.offered = list(offered)

    async def choose(self, channel_id: int, model: str) -> None:
        if model not in self.offered:
            raise ValueError(f"{model!r} is not one of DISCORD_MODELS")
        await self._choices.choose(PLATFORM, str(channel_id), model)

    async def chosen(self, *channel_ids: int) -> str | None:
        """The first choice made among ``channel_ids`` (a thread, then its parent)."""
        return await self._choices.chosen(PLATFORM, [str(c) for c in channel_ids], self.offered)
