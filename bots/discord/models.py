"""Which model a channel's replies use, as chosen with ``/model``.

The choice belongs to the channel (a thread, or a DM) where it was made, so
everyone talking to the bot there gets the same model, and a thread without a
choice of its own follows its parent channel. It is kept in Redis without
expiry, like any setting, and ignored once the model is no longer offered
(``DISCORD_MODELS`` changed). Without a choice, the channel's rule (the rules
file) or the default model applies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio import Redis

from core.state.buckets import REDIS_FAILURES
from core.state.keys import Keys

log = logging.getLogger(__name__)


class ModelChoices:
    def __init__(self, redis: Redis, keys: Keys, offered: Sequence[str]) -> None:
        self._redis = redis
        self._prefix = f"{keys.prefix}discord:model:"
        self.offered = list(offered)

    async def choose(self, channel_id: int, model: str) -> None:
        if model not in self.offered:
            raise ValueError(f"{model!r} is not one of DISCORD_MODELS")
        await self._redis.set(f"{self._prefix}{channel_id}", model)

    async def chosen(self, *channel_ids: int) -> str | None:
        """The first choice made among ``channel_ids`` (a thread, then its parent)."""
        if not self.offered or not channel_ids:
            return None
        try:
            values = await self._redis.mget([f"{self._prefix}{c}" for c in channel_ids])
        except REDIS_FAILURES as exc:
            log.warning("could not read the model chosen for %s: %s", channel_ids, exc)
            return None
        for raw in values:
            if raw is None:
                continue
            model = raw.decode() if isinstance(raw, bytes) else str(raw)
            if model in self.offered:
                return model
        return None
