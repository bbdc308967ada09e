"""Staying far from Discord's invalid-request ban.

Discord bans an IP address from its API for a while (Cloudflare, about an
hour) once it has answered **10,000 invalid requests in 10 minutes**: 401, 403
and 429 answers, except 429s with ``X-RateLimit-Scope: shared`` (a shared
resource's limit, which no client can pace for). A bot that is pacing well
makes next to none, so a rising count means something is wrong (a lost
permission answered with 403 on every edit, a limit lower than we know, another
process on the same token) and the right answer is to call less, early.

The policy (``DISCORD_INVALID_SLOW``, ``DISCORD_INVALID_PAUSE``):

- every invalid answer counts, in ``chatrelay_discord_invalid_requests_total
  {status}`` and in a sliding 10-minute count in Redis shared by every replica
  and shard (``core.state.invalid``): they all spend one address's allowance
  (replicas behind several addresses share it too, which only errs on the
  safe side);
- from ``DISCORD_INVALID_SLOW`` (default 1,000, a tenth of the ban) **slow**:
  every Discord scope (channels, interactions, the global limit) gets half its
  limit (``AdaptiveLimits.slow_down``), learnt limits included;
- from ``DISCORD_INVALID_PAUSE`` (default 5,000, half the ban) **pause
  updates**: on top of that, replies stop sending their ordinary updates
  (``GuardedPacing``); a message's first frame, the final frame of each
  message and the reply's outcome still go out, so no text is lost and no
  reply stays "writing…";
- a level is left once the count falls below 80 % of its threshold, so a count
  hovering at a threshold doesn't flap; each change of level is logged once (a
  warning going up, info going down) and shown in
  ``chatrelay_discord_slowdown_level``.

Every replica reads the shared count every few seconds (``run``), so all of
them slow down together, including those that got no invalid answer
themselves. If Redis doesn't answer, this process keeps counting its own
answers on top of the last shared count it read, and sends them once Redis is
back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.clock import Clock, MonotonicClock
from core.reply import Pacing
from core.state import REDIS_FAILURES
from core.state.invalid import InvalidRequests
from core.state.learned import AdaptiveLimits
from core.telemetry.metrics import ChatrelayMetrics

log = logging.getLogger(__name__)

BAN_AT = 10_000
"""Invalid answers in 10 minutes at which Discord bans the address."""
NORMAL, SLOW, PAUSED = 0, 1, 2
LEVEL_NAMES = ("normal", "slow", "updates paused")
HYSTERESIS = 0.8
"""A level is left when the count falls below this share of its threshold."""
SLOW_FACTOR = 2.0
"""How many times fewer calls every Discord scope gets once slowed."""
SCOPE_PREFIX = "discord:"
PAUSE_RECHECK = 2.0
"""Seconds a paused reply waits before it looks at the level again (or sooner,
when it ends: its final frame never waits for this)."""


def is_invalid(status: int, scope_header: str | None) -> bool:
    """Whether Discord counts this answer toward its invalid-request limit."""
    return status in (401, 403) or (status == 429 and scope_header != "shared")


class InvalidRequestGuard:
    """Counts Discord's invalid answers and slows every replica down as they add up."""

    def __init__(
        self,
        counter: InvalidRequests,
        limits: AdaptiveLimits | None = None,
        *,
        slow_at: int = 1_000,
        pause_at: int = 5_000,
        metrics: ChatrelayMetrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not 0 < slow_at < pause_at:
            raise ValueError("the thresholds must satisfy 0 < slow_at < pause_at")
        self._counter = counter
        self._limits = limits
        self.slow_at = slow_at
        self.pause_at = pause_at
        self._metrics = metrics
        self._clock = clock or MonotonicClock()
        self.level = NORMAL
        self.count = 0
        """The shared count last read, plus this process's answers Redis hasn't taken."""
        self._pending = 0  # invalid answers not yet added to the shared count
        self._warned = False

    @property
    def paused(self) -> bool:
        """Ordinary updates are held back (first and final frames still go)."""
        return self.level >= PAUSED

    async def record(self, status: int) -> None:
        """One invalid answer (see ``is_invalid``): count it, here and for everyone."""
        if self._metrics is not None:
            self._metrics.discord_invalid.inc(str(status))
        self._pending += 1
        self.count += 1
        await self._sync()

    async def refresh(self) -> None:
        """Read the shared count (and hand over what this process counted meanwhile)."""
        await self._sync()

    async def run(self, interval: float) -> None:
        """Refresh every ``interval`` seconds until cancelled."""
        while True:
            await self.refresh()
            await self._clock.sleep(interval)

    async def _sync(self) -> None:
        pending, self._pending = self._pending, 0  # concurrent calls must not add it twice
        try:
            shared = await self._counter.add(pending) if pending else await self._counter.count()
        except REDIS_FAILURES as exc:
            self._pending += pending
            if not self._warned:
                self._warned = True
                log.warning(
                    "Discord's invalid requests are counted per process while Redis does "
                    "not answer (%s)",
                    str(exc) or type(exc).__name__,
                )
            self._update(self.count)
            return
        self._warned = False
        self._update(shared + self._pending)

    def _update(self, count: int) -> None:
        self.count = count
        if self._metrics is not None:
            self._metrics.discord_invalid_window.set(count)
        level = self._level_for(count)
        if level == self.level:
            return
        before, self.level = self.level, level
        if self._limits is not None:
            self._limits.slow_down(SCOPE_PREFIX, SLOW_FACTOR if level >= SLOW else 1.0)
        if self._metrics is not None:
            self._metrics.discord_slowdown.set(level)
        if level > before:
            log.warning(
                "Discord answered %d invalid requests (401/403/429) in 10 minutes across "
                "replicas (it bans the address at %d): %s%s",
                count,
                BAN_AT,
                LEVEL_NAMES[level],
                ", every Discord limit halved"
                if level == SLOW
                else ", limits halved and ordinary updates held until the final frame",
            )
        else:
            log.info(
                "Discord invalid requests down to %d in 10 minutes: %s",
                count,
                LEVEL_NAMES[level],
            )

    def _level_for(self, count: int) -> int:
        level = self.level
        while level < PAUSED and count >= self._threshold(level + 1):
            level += 1
        while level > NORMAL and count < self._threshold(level) * HYSTERESIS:
            level -= 1
        return level

    def _threshold(self, level: int) -> int:
        return self.slow_at if level == SLOW else self.pause_at


@dataclass(frozen=True, slots=True)
class GuardedPacing(Pacing):
    """``Pacing`` that holds a reply's ordinary updates while the guard pauses them.

    The engine asks ``due`` only before an *update*: a message's first frame,
    the final frames and the outcome never wait for pacing, and a reply that
    ends stops waiting at once, so they still go out (through the halved
    budget)."""

    guard: InvalidRequestGuard | None = None

    def due(self, now: float, last_update_end: float, new_chars: int) -> float:
        wait = Pacing.due(self, now, last_update_end, new_chars)
        if self.guard is not None and self.guard.paused:
            return max(wait, PAUSE_RECHECK)
        return wait
