"""Rate limits learnt from a platform's answers, shared by every replica.

A platform may say, in its answers, that a scope is tighter than chatrelay's
configured limit (Discord: ``X-RateLimit-Limit: 3`` on a channel's sends where
the defaults assume 5 per 5 s). ``LearnedLimits`` keeps what was learnt in one
Redis hash per platform, so every replica and shard paces by it, not only the
one that read the header:

- a field per scope *and* bucket (``discord:channel:42|<bucket hash>``), because
  several of the platform's buckets can bind one of our scopes (Discord's sends
  and edits report different buckets and share the channel): the scope paces by
  the tightest of them, and each bucket's entry is replaced or dropped by the
  next answer of that bucket alone;
- each entry expires on its own (``ttl``, counted on Redis's clock, the one
  every replica shares; Redis 7.0 has no per-field expiry, so the value carries
  it and every write prunes what expired); an answer of the same bucket keeps
  it alive; an entry that is no longer tighter than the configured limit is
  removed at once, so a limit loosens back to the configured one when the
  platform does, and never further.

Reading it costs no round trip per acquire: each process keeps a copy,
refreshed by ``run_refresh`` (one bounded ``HGETALL``-like script every few
seconds, off every reply's path) and updated at once by its own ``record``.
Writes go to Redis only when an entry changes or half its life has passed, so
a steady stream of answers reporting the same limit costs nothing.

``AdaptiveLimits`` is the ``LimitTable`` budgets consult: the configured limit
of a scope, or a learnt one where that is tighter, slowed down by a factor
while a platform asks for it (``slow_down``, e.g. Discord's invalid-request
guard halving every Discord limit). Budgets look it up on every acquire, so it
answers from memory only.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

from core.clock import Clock, MonotonicClock
from core.reply.budget import Limit, LimitTable, RateLimit, Window
from core.state.connection import REDIS_FAILURES, REPLY_PATH_TIMEOUT, bounded
from core.state.keys import Keys
from core.state.topology import RedisClient

log = logging.getLogger(__name__)

LEARNED_TTL = 600.0
"""Seconds an entry lives without an answer of its bucket confirming it."""

# KEYS[1] the platform's hash. ARGV: field ("" to only read), value ("" to delete
# the field), ttl in µs. Values are "<count> <per> <expires µs>"; expired fields
# are pruned. Returns {field, value, ms left, ...} of every live entry.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[3])
if ARGV[1] ~= '' then
  if ARGV[2] == '' then
    redis.call('HDEL', KEYS[1], ARGV[1])
  else
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. string.format('%d', now + ttl))
  end
end
local all = redis.call('HGETALL', KEYS[1])
local live = {}
local last = 0
for i = 1, #all, 2 do
  local expires = tonumber(string.match(all[i + 1], '(%d+)$')) or 0
  if expires <= now then
    redis.call('HDEL', KEYS[1], all[i])
  else
    local left = math.floor((expires - now) / 1000)
    table.insert(live, all[i])
    table.insert(live, all[i + 1])
    table.insert(live, string.format('%d', left))
    if expires > last then last = expires end
  end
end
if last > 0 then
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.floor((last - now) / 1000) + 1000))
end
return live
"""


@dataclass(frozen=True, slots=True)
class _Entry:
    limit: Limit
    expires: float
    """On the local clock."""


class LearnedLimits:
    """One platform's learnt limits: a local copy of a shared Redis hash."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        platform: str,
        *,
        ttl: float = LEARNED_TTL,
        timeout: float = REPLY_PATH_TIMEOUT,
        clock: Clock | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self._redis = redis
        self._key = keys.learned_limits(platform)
        self.ttl = ttl
        self.timeout = timeout
        self._clock = clock or MonotonicClock()
        self._script = redis.register_script(_SCRIPT)
        self._entries: dict[str, dict[str, _Entry]] = {}  # scope -> bucket -> entry
        self._warned = False

    def get(self, scope: str) -> Limit | None:
        """The tightest live learnt limit of ``scope`` (from memory), or None."""
        buckets = self._entries.get(scope)
        if not buckets:
            return None
        now = self._clock.now()
        best: Limit | None = None
        for entry in buckets.values():
            if entry.expires > now and (best is None or entry.limit.interval > best.interval):
                best = entry.limit
        return best

    def entries(self) -> dict[str, Limit]:
        """Every live learnt limit, by scope (the tightest of its buckets)."""
        found = {scope: self.get(scope) for scope in self._entries}
        return {scope: limit for scope, limit in found.items() if limit is not None}

    async def record(self, scope: str, bucket: str, limit: Limit | None) -> None:
        """What the latest answer of ``bucket`` says ``scope`` must pace by: ``limit``,
        or None when it is no tighter than the configured limit (forget it).

        Takes effect here at once; reaches Redis (one bounded call) only when the
        entry changes or has lived half its ``ttl``. A Redis that doesn't answer
        costs a warning, once per outage, never an error: the local copy holds."""
        now = self._clock.now()
        buckets = self._entries.get(scope, {})
        held = buckets.get(bucket)
        if limit is None:
            if held is None:
                return
            del buckets[bucket]
            if not buckets:
                self._entries.pop(scope, None)
            value = ""
        else:
            if held is not None and held.limit == limit and held.expires - now > self.ttl / 2:
                return
            self._entries.setdefault(scope, {})[bucket] = _Entry(limit, now + self.ttl)
            value = _spec(limit)
        try:
            await bounded(self._run(_field(scope, bucket), value), self.timeout)
        except REDIS_FAILURES as exc:
            self._failed(exc)

    async def refresh(self) -> None:
        """Replace the local copy with what Redis holds (one bounded call). Raises
        ``REDIS_FAILURES`` when Redis doesn't answer, leaving the copy as it was."""
        answer = await bounded(self._run("", ""), self.timeout)
        now = self._clock.now()
        entries: dict[str, dict[str, _Entry]] = {}
        for at in range(0, len(answer) - 2, 3):
            field, value, left = (_text(part) for part in answer[at : at + 3])
            scope, _, bucket = field.rpartition("|")
            limit = _parse(value)
            if scope and limit is not None:
                entries.setdefault(scope, {})[bucket] = _Entry(limit, now + int(left) / 1000)
        self._entries = entries
        if self._warned:
            self._warned = False
            log.info("learnt rate limits are shared through Redis again")

    async def run_refresh(self, interval: float) -> None:
        """Refresh every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.refresh()
            except REDIS_FAILURES as exc:
                self._failed(exc)
            await self._clock.sleep(interval)

    async def _run(self, field: str, value: str) -> list[bytes | str]:
        answer = await self._script(keys=[self._key], args=[field, value, _micros(self.ttl)])
        return list(answer)

    def _failed(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "learnt rate limits are not shared while Redis does not answer (%s): "
                "this process paces by what it learnt itself",
                str(exc) or type(exc).__name__,
            )


class AdaptiveLimits(LimitTable):
    """A ``LimitTable`` over the configured one: each scope's configured limit, or
    the learnt one where that is tighter, slowed by ``slow_down``'s factor."""

    def __init__(self, base: LimitTable, learned: LearnedLimits | None = None) -> None:
        super().__init__()
        self.base = base
        self.learned = learned
        self._factors: dict[str, float] = {}  # scope prefix -> factor (> 1: slower)

    def set(self, pattern: str, limit: RateLimit) -> None:
        self.base.set(pattern, limit)

    def configured(self, scope: str) -> RateLimit | None:
        """The limit the settings give ``scope``, nothing learnt or slowed."""
        return self.base.lookup(scope)

    def slow_down(self, prefix: str, factor: float) -> None:
        """Every scope starting with ``prefix`` gets ``factor`` times fewer calls
        (its count divided, its burst too); a factor of 1 restores it."""
        if factor < 1:
            raise ValueError("a slow-down factor is >= 1")
        if factor == 1:
            self._factors.pop(prefix, None)
        else:
            self._factors[prefix] = factor

    def factor(self, scope: str) -> float:
        factor = 1.0
        for prefix, value in self._factors.items():
            if scope.startswith(prefix):
                factor = max(factor, value)
        return factor

    def lookup(self, scope: str) -> RateLimit | None:
        limit = self.base.lookup(scope)
        if self.learned is not None:
            learned = self.learned.get(scope)
            if learned is not None and is_tighter(learned, limit):
                limit = learned
        if self._factors and limit is not None:
            factor = self.factor(scope)
            if factor > 1:
                return slowed(limit, factor)
        return limit


def admits(limit: RateLimit, seconds: float) -> float:
    """The most calls ``limit`` lets into any ``seconds``."""
    if isinstance(limit, Window):
        return limit.count * math.ceil(seconds / limit.per - 1e-9)
    return limit.burst - 1 + limit.count * seconds / limit.per


def is_tighter(learned: Limit, configured: RateLimit | None) -> bool:
    """Whether pacing by ``learned`` (burst 1) lets fewer calls into one of its
    windows than ``configured`` does (no configured limit: unlimited)."""
    if configured is None:
        return True
    return admits(configured, learned.per) > admits(learned, learned.per) + 1e-9


@functools.lru_cache(maxsize=256)
def slowed(limit: RateLimit, factor: float) -> RateLimit:
    """``limit`` with ``factor`` times fewer calls (never below one per window)."""
    if isinstance(limit, Window):
        return Window(max(1, int(limit.count // factor)), limit.per)
    return Limit(limit.count / factor, limit.per, max(1, int(limit.burst // factor)))


def _field(scope: str, bucket: str) -> str:
    return f"{scope}|{bucket}"


def _spec(limit: Limit) -> str:
    return f"{limit.count!r} {limit.per!r}"


def _parse(value: str) -> Limit | None:
    try:
        count, per, _ = value.split(" ")
        return Limit(float(count), float(per))
    except ValueError:
        return None


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
