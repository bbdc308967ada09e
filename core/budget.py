"""When a platform call may happen: rate budgets shared by every reply.

Platforms limit calls per scope (Slack: per method per workspace; Discord: per
channel and per bot token). Every reply streaming into one scope must share
its limit, so before each platform call the engine asks the budget for that
call's scopes and waits its turn. The in-process ``LocalBudget`` here serves a
single process; a Redis-backed budget with the same interface serves replicas.

The algorithm is GCRA (the "virtual scheduling" form of a token bucket): each
acquire reserves the next free slot, so waiters are served in arrival order and
20 replies sharing one scope each get about 1/20 of it, none starving.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.clock import Clock, MonotonicClock


@dataclass(frozen=True, slots=True)
class Limit:
    """``count`` calls per ``per`` seconds, allowing bursts of up to ``burst`` calls.

    GCRA lets at most ``burst - 1 + window / interval`` calls into any window, so
    a platform's fixed "N per T" bucket is honoured by ``Limit(N, T)`` with
    ``burst=1``; a larger burst trades that guarantee for a quicker first call."""

    count: float
    per: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.count <= 0 or self.per <= 0 or self.burst < 1:
            raise ValueError(f"invalid limit {self}: count and per must be > 0, burst >= 1")

    @property
    def interval(self) -> float:
        """Seconds between calls at the sustained rate."""
        return self.per / self.count


class Budget(Protocol):
    """Answers "may I call now?" per scope, and learns from 429s."""

    async def acquire(self, scope: str) -> float:
        """Wait until a call in ``scope`` may happen; returns the seconds waited."""
        ...

    async def block(self, scope: str, seconds: float) -> None:
        """The platform answered 429 with ``Retry-After: seconds``: nobody calls in
        ``scope`` until then."""
        ...


class LimitTable:
    """Maps scopes to limits with shell-style patterns, first match wins.

    ``{"slack:*:chat.update": Limit(50, 60), "discord:channel:*": Limit(5, 5, burst=5)}``.
    A scope with no matching pattern is unlimited (but can still be blocked).
    """

    def __init__(self, rules: Mapping[str, Limit] | None = None) -> None:
        self._rules = list((rules or {}).items())
        self._cache: dict[str, Limit | None] = {}

    def set(self, pattern: str, limit: Limit) -> None:
        """Add or replace a rule (e.g. one learned from a platform's headers)."""
        self._rules = [(p, lim) for p, lim in self._rules if p != pattern]
        self._rules.insert(0, (pattern, limit))
        self._cache.clear()

    def lookup(self, scope: str) -> Limit | None:
        try:
            return self._cache[scope]
        except KeyError:
            limit = next((lim for pat, lim in self._rules if fnmatch.fnmatchcase(scope, pat)), None)
            self._cache[scope] = limit
            return limit


class LocalBudget:
    """GCRA buckets in this process's memory."""

    def __init__(self, limits: LimitTable | None = None, clock: Clock | None = None) -> None:
        self.limits = limits or LimitTable()
        self._clock = clock or MonotonicClock()
        self._tat: dict[str, float] = {}  # theoretical arrival time per scope
        self._blocked_until: dict[str, float] = {}

    async def acquire(self, scope: str) -> float:
        start = self._clock.now()
        while True:
            now = self._clock.now()
            wait = self._reserve(scope, now)
            if wait <= 0:
                return now - start
            await self._clock.sleep(wait)
            # A 429 may have blocked the scope while we slept: then reserve again.
            if self._blocked_until.get(scope, 0.0) <= self._clock.now():
                return self._clock.now() - start

    def _reserve(self, scope: str, now: float) -> float:
        """Reserve the next slot; returns how long until it (<= 0: go now)."""
        blocked = self._blocked_until.get(scope, 0.0)
        start = max(now, blocked)
        limit = self.limits.lookup(scope)
        if limit is None:
            return start - now
        interval = limit.interval
        tolerance = interval * (limit.burst - 1)
        tat = max(self._tat.get(scope, start), start)
        allowed_at = max(tat - tolerance, start)
        self._tat[scope] = tat + interval
        return allowed_at - now

    async def block(self, scope: str, seconds: float) -> None:
        until = self._clock.now() + max(0.0, seconds)
        if until > self._blocked_until.get(scope, 0.0):
            self._blocked_until[scope] = until
        # Calls reserved before the 429 must not burst out right after it passes.
        limit = self.limits.lookup(scope)
        if limit is not None:
            self._tat[scope] = max(self._tat.get(scope, 0.0), until + limit.interval)


async def acquire_all(budget: Budget, scopes: Sequence[str]) -> float:
    """Acquire every scope a call needs (e.g. a channel and the bot's global limit)."""
    waited = 0.0
    for scope in scopes:
        waited += await budget.acquire(scope)
    return waited
