"""When a platform call may happen: rate budgets shared by every reply.

Platforms limit calls per scope (Slack: per method per workspace; Discord: per
channel and per bot token). Every reply streaming into one scope must share
its limit, so before each platform call the engine asks the budget for that
call's scopes and waits its turn. The in-process ``LocalBudget`` here serves a
single process; a Redis-backed budget with the same interface serves replicas.

Two limiters, chosen per scope by the ``LimitTable``:

- ``Limit``: GCRA (the "virtual scheduling" form of a token bucket). Calls are
  spaced evenly at the sustained rate after a small burst, which is what a
  stream of *edits* wants: 20 replies editing into one scope each get an
  update every 20 intervals, none stands still for long.
- ``Window``: at most ``count`` calls in any trailing ``per`` seconds, exact (a
  sliding log of call times). This is how Slack's tiers ("50+ per minute") and
  the fakes count, so a scope whose calls are one-offs (a stream's start and
  stop) can spend its whole allowance at once instead of trickling it out.

Both reserve a slot per acquire in arrival order (GCRA the next point of its
schedule, the window the earliest time its log allows), so waiters are served
first come, first served and none starves. ``try_acquire`` takes a slot only
if one is free now, without waiting and without jumping that queue.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
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


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``count`` calls in any trailing ``per`` seconds (a sliding window).

    Exact where GCRA is approximate: ``count`` calls may go at once, and the
    next one waits until the oldest of them is ``per`` seconds old, just as a
    platform that counts calls in a sliding window lets it through. A window is
    half-open: a call exactly ``per`` seconds after another no longer shares a
    window with it (Slack's and the fakes' counting)."""

    count: int
    per: float

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int):
            raise ValueError(f"invalid window {self}: count must be a whole number")
        if self.count < 1 or self.per <= 0:
            raise ValueError(f"invalid window {self}: count must be >= 1 and per > 0")

    def spread(self) -> Limit:
        """The GCRA limit with the same guarantee (at most ``count`` calls in any
        ``per`` seconds) that spaces the calls evenly instead of letting them
        go at once: ``Limit(count, per)``, burst 1."""
        return Limit(self.count, self.per)

    @property
    def burst(self) -> int:
        """``spread().burst`` (1): code that rebuilds a GCRA ``Limit`` from a
        limit's ``count``, ``per`` and ``burst`` (the Slack tests squeeze a
        minute's limits into seconds that way) still gets one that is safe."""
        return 1


RateLimit = Limit | Window
"""What a ``LimitTable`` maps a scope to: a GCRA limit or a window."""


class Urgency(enum.IntEnum):
    """What a call is worth to the people waiting, most urgent first."""

    FIRST_TEXT = 0
    """A reply's first text: until it comes, the reply shows nothing of the answer."""
    FINAL = 1
    """A message's final text: the message is done once it lands."""
    UPDATE = 2
    """An ordinary update of a message that already shows text."""


@dataclass(frozen=True, slots=True, order=True)
class Turn:
    """Where a call stands when several wait for one scope: by ``urgency``, then
    the one whose reply has waited longest (``since``: when it last showed
    something, or started). Budgets that serve in arrival order ignore it;
    ``core.reply.fairness.FairBudget`` orders its waiters by it."""

    urgency: Urgency
    since: float


ONE_OFF = Turn(Urgency.UPDATE, float("-inf"))
"""A call outside a reply's stream (a notice, a finaliser's edit): ahead of
ordinary updates, which come round again, behind first texts and finals."""


class Budget(Protocol):
    """Answers "may I call now?" per scope, and learns from 429s."""

    async def acquire(self, scope: str, turn: Turn | None = None) -> float:
        """Wait until a call in ``scope`` may happen; returns the seconds waited.
        ``turn`` says how urgent the call is, for budgets that order waiters."""
        ...

    async def try_acquire(self, scope: str) -> bool:
        """Take a slot in ``scope`` only if one is free now; never waits for one.

        False (a waiter holds the next slot, the limit is spent, or a 429 blocks
        the scope) takes nothing, so the caller can choose a cheaper route (post
        and edit when no stream can start now) instead of queueing."""
        ...

    async def block(self, scope: str, seconds: float) -> None:
        """The platform answered 429 with ``Retry-After: seconds``: nobody calls in
        ``scope`` until then."""
        ...


class LimitTable:
    """Maps scopes to limits with shell-style patterns, first match wins.

    ``{"slack:*:chat.startStream": Window(19, 61), "discord:channel:*": Limit(4, 5)}``.
    A scope with no matching pattern is unlimited (but can still be blocked).
    """

    def __init__(self, rules: Mapping[str, RateLimit] | None = None) -> None:
        self._rules = list((rules or {}).items())
        self._cache: dict[str, RateLimit | None] = {}

    def set(self, pattern: str, limit: RateLimit) -> None:
        """Add or replace a rule (e.g. one learned from a platform's headers)."""
        self._rules = [(p, lim) for p, lim in self._rules if p != pattern]
        self._rules.insert(0, (pattern, limit))
        self._cache.clear()

    def lookup(self, scope: str) -> RateLimit | None:
        try:
            return self._cache[scope]
        except KeyError:
            limit = next((lim for pat, lim in self._rules if fnmatch.fnmatchcase(scope, pat)), None)
            self._cache[scope] = limit
            return limit


class LocalBudget:
    """GCRA buckets and sliding-window logs in this process's memory."""

    def __init__(self, limits: LimitTable | None = None, clock: Clock | None = None) -> None:
        self.limits = limits or LimitTable()
        self._clock = clock or MonotonicClock()
        self._tat: dict[str, float] = {}  # GCRA: theoretical arrival time per scope
        self._log: dict[str, list[int]] = {}  # windows: call times, granted and reserved
        self._blocked_until: dict[str, float] = {}

    async def acquire(self, scope: str, turn: Turn | None = None) -> float:
        clock = self._clock
        start = clock.now()
        while True:
            now = clock.now()
            wait, slot = self._reserve(scope, now)
            if wait <= 0:
                return now - start
            try:
                await clock.sleep(wait)
            except asyncio.CancelledError:
                self._give_back(scope, slot)  # no call will be made in it
                raise
            # A 429 may have blocked the scope while we slept: then reserve again.
            if self._blocked_until.get(scope, 0.0) <= clock.now():
                return clock.now() - start
            self._give_back(scope, slot)

    async def try_acquire(self, scope: str) -> bool:
        wait, _ = self._reserve(scope, self._clock.now(), only_now=True)
        return wait <= 0

    def _reserve(
        self, scope: str, now: float, only_now: bool = False
    ) -> tuple[float, float | None]:
        """Reserve the next slot; returns how long until it (<= 0: go now) and, for
        a window, the slot's entry in the log. ``only_now``: reserve nothing unless
        the slot is now."""
        start = max(now, self._blocked_until.get(scope, 0.0))
        limit = self.limits.lookup(scope)
        if limit is None:
            return start - now, None
        if isinstance(limit, Window):
            # In whole microseconds, as the Redis log counts: with float seconds a
            # call exactly one window ago could count as still inside it.
            now_us, per_us = _micros(now), _micros(limit.per)
            start_us = _micros(start)
            log = self._log.setdefault(scope, [])
            del log[: bisect.bisect_right(log, now_us - per_us)]  # out of every window to come
            if len(log) >= limit.count:
                # The count-th latest call (or reservation) must have left the window.
                start_us = max(start_us, log[-limit.count] + per_us)
            if only_now and start_us > now_us:
                return (start_us - now_us) / 1_000_000, None
            # Kept until it is out of every window: a reservation given back later
            # must not let an older call be forgotten while it still counts.
            bisect.insort(log, start_us)
            return (start_us - now_us) / 1_000_000, start_us
        interval = limit.interval
        tolerance = interval * (limit.burst - 1)
        tat = max(self._tat.get(scope, start), start)
        allowed_at = max(tat - tolerance, start)
        if only_now and allowed_at > now:
            return allowed_at - now, None
        self._tat[scope] = tat + interval
        return allowed_at - now, None

    def _give_back(self, scope: str, slot: float | None) -> None:
        """Drop a window reservation no call was made in, so a later waiter can use it."""
        log = self._log.get(scope)
        if slot is None or not log:
            return
        at = bisect.bisect_left(log, slot)
        if at < len(log) and log[at] == slot:
            del log[at]

    async def block(self, scope: str, seconds: float) -> None:
        until = self._clock.now() + max(0.0, seconds)
        if until > self._blocked_until.get(scope, 0.0):
            self._blocked_until[scope] = until
        # Calls reserved before the 429 must not burst out right after it passes.
        # (A window needs nothing more: its log already holds the calls the
        # platform is counting, so when the block lifts it lets through only
        # what the platform's own window has room for.)
        limit = self.limits.lookup(scope)
        if isinstance(limit, Limit):
            self._tat[scope] = max(self._tat.get(scope, 0.0), until + limit.interval)


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


async def acquire_all(budget: Budget, scopes: Sequence[str]) -> float:
    """Acquire every scope a call needs (e.g. a channel and the bot's global limit)."""
    waited = 0.0
    for scope in scopes:
        waited += await budget.acquire(scope)
    return waited
