"""Which model a channel's replies use, as chosen there (Discord's ``/model``).

The choice belongs to a channel, so everyone talking to the bot there gets the
same model. It is kept without expiry, like any setting; the caller says which
models are offered, and a choice no longer offered is ignored.

``choose`` raises one of ``REDIS_FAILURES``; ``chosen`` is on a reply's path,
bounded by ``timeout`` (``REPLY_PATH_TIMEOUT``), and answers None (the
default model) when Redis can't say.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from core.state.connection import REDIS_FAILURES, REPLY_PATH_TIMEOUT, bounded
from core.state.keys import Keys
from core.state.topology import RedisClient

log = logging.getLogger(__name__)


class ModelChoices:
    def __init__(
        self, redis: RedisClient, keys: Keys, *, timeout: float = REPLY_PATH_TIMEOUT
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.timeout = timeout

    async def choose(self, platform: str, channel: str, model: str) -> None:
        await bounded(
            self._redis.set(self._keys.model_choice(platform, channel), model), self.timeout
        )

    async def chosen(
        self, platform: str, channels: Sequence[str], offered: Collection[str]
    ) -> str | None:
        """The first choice among ``channels`` (a thread, then its parent) that is
        still ``offered``; None without one, or when Redis can't say."""
        if not offered or not channels:
            return None
        names = [self._keys.model_choice(platform, channel) for channel in channels]
        try:
            values = await bounded(self._read(names), self.timeout)
        except REDIS_FAILURES as exc:
            log.warning("could not read the model chosen for %s: %s", ", ".join(channels), exc)
            return None
        for raw in values:
            if raw is None:
                continue
            model = raw.decode() if isinstance(raw, bytes) else str(raw)
            if model in offered:
                return model
        return None

    async def _read(self, names: list[str]) -> list[bytes | None]:
        """One GET per channel in one pipeline, not an MGET: on a cluster a thread's
        and its parent's choices live in different slots, which MGET refuses, and a
        pipeline goes to each key's node. Nothing is lost by reading them apart:
        each is a setting of its own, and a choice made between two reads counts
        as made just before or just after the whole read."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(name)
            values: list[bytes | None] = await pipe.execute()
        return values


__all__ = ["ModelChoices"]
