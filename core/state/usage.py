"""Tokens spent per user and per channel per day, and optional daily quotas.

Counts come from the stream's final ``Usage`` (the provider's own numbers, not
an estimate) and go into one hash per user-day and per channel-day, kept
``retention_days`` for reporting. Days are UTC days, the same for every
replica and every user.

A quota is checked *before* the model is called, so a refused message costs
nothing, and the refusal is a sentence the adapter can post as it is. Checks
and recording are separate, so replies running at the same moment may overshoot
a quota by at most their own size; exactness would need a reservation per reply
for tokens nobody knows in advance.

Accounting never stops a reply: with Redis unreachable, or not answering
within ``timeout`` (``REPLY_PATH_TIMEOUT``; a paused server), checks allow and
recording logs a warning. ``totals`` is for reports, not replies: it raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from core.llm.events import Usage
from core.state.connection import REDIS_FAILURES, REPLY_PATH_TIMEOUT, bounded
from core.state.keys import Keys
from core.state.topology import RedisClient

log = logging.getLogger(__name__)

Who = Literal["user", "channel"]


@dataclass(frozen=True, slots=True)
class UsageTotals:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    """Already part of ``output_tokens`` for providers that report it; shown apart."""

    @property
    def total(self) -> int:
        """What quotas count: tokens in plus tokens out."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    allowed: bool
    message: str | None = None
    """Why not, politely, for the user; None when allowed."""


class UsageLedger:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        user_quota: int = 0,
        channel_quota: int = 0,
        retention_days: int = 35,
        wall: Callable[[], float] = time.time,
        timeout: float = REPLY_PATH_TIMEOUT,
    ) -> None:
        """Quotas of 0 mean none; ``user`` and ``channel`` ids should carry their
        platform and workspace (``slack:T1:U1``), since bare ids repeat across them."""
        self._redis = redis
        self._keys = keys
        self.user_quota = user_quota
        self.channel_quota = channel_quota
        self.retention = retention_days * 86400
        self._wall = wall
        self.timeout = timeout

    def today(self) -> str:
        return datetime.fromtimestamp(self._wall(), UTC).date().isoformat()

    async def record(self, *, user: str, channel: str, usage: Usage) -> None:
        """Add one reply's usage to today's counts of ``user`` and ``channel``."""
        day = self.today()
        fields = {
            "input": usage.input_tokens,
            "output": usage.output_tokens,
            "reasoning": usage.reasoning_tokens,
            "total": usage.input_tokens + usage.output_tokens,
        }
        keys = (self._keys.usage("user", user, day), self._keys.usage("channel", channel, day))
        try:
            await bounded(self._add(keys, fields), self.timeout)
        except REDIS_FAILURES as exc:
            log.warning("could not record token usage of %s in %s: %s", user, channel, exc)

    async def _add(self, keys: tuple[str, ...], fields: dict[str, int]) -> None:
        # No transaction: the user's and the channel's counts are independent sums
        # (HINCRBY commutes with every other replica's), nobody reads both at once,
        # and each key's expiry follows its increments in order on its own server.
        # On a cluster the two keys live in different slots, where a MULTI fails;
        # the pipeline goes to each key's node.
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                for name, value in fields.items():
                    if value:
                        pipe.hincrby(key, name, value)
                pipe.expire(key, self.retention)
            await pipe.execute()

    async def totals(self, who: Who, name: str, day: str | None = None) -> UsageTotals:
        """Counts of one user or channel for ``day`` (``YYYY-MM-DD``, default today)."""
        key = self._keys.usage(who, name, day or self.today())
        raw = await bounded(self._redis.hgetall(key), self.timeout)
        counts = {_text(k): int(v) for k, v in raw.items()}
        return UsageTotals(
            counts.get("input", 0), counts.get("output", 0), counts.get("reasoning", 0)
        )

    async def check(self, *, user: str, channel: str) -> QuotaDecision:
        """May ``user`` ask the model in ``channel`` now? One round trip, none without quotas."""
        if not self.user_quota and not self.channel_quota:
            return QuotaDecision(True)
        day = self.today()
        try:
            user_used, channel_used = await bounded(self._used(user, channel, day), self.timeout)
        except REDIS_FAILURES as exc:
            log.warning("could not check token quotas (allowing): %s", exc)
            return QuotaDecision(True)
        if self.user_quota and int(user_used or 0) >= self.user_quota:
            return QuotaDecision(False, self._refusal("You have", self.user_quota))
        if self.channel_quota and int(channel_used or 0) >= self.channel_quota:
            return QuotaDecision(False, self._refusal("This channel has", self.channel_quota))
        return QuotaDecision(True)

    async def _used(self, user: str, channel: str, day: str) -> list[bytes | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._keys.usage("user", user, day), "total")
            pipe.hget(self._keys.usage("channel", channel, day), "total")
            used: list[bytes | None] = await pipe.execute()
        return used

    def _refusal(self, subject: str, quota: int) -> str:
        now = datetime.fromtimestamp(self._wall(), UTC)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        minutes = max(1, int((midnight - now).total_seconds() // 60))
        hours, minutes = divmod(minutes, 60)
        left = f"{hours} h {minutes} min" if hours else f"{minutes} min"
        return (
            f"Sorry, {subject.lower()} used today's allowance of {quota:,} tokens, so I won't "
            f"ask the model again until it resets at midnight UTC (in {left})."
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
