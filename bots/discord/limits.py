"""Discord's rate limits, as scopes of chatrelay's shared budget: their default
limits, what every call spends, what the budget learns from Discord's answers,
and the guard that keeps the bot far from Discord's invalid-request ban.

**Defaults.** ``DEFAULT_LIMITS`` are observed limits, kept one call under:
Discord says not to hard-code its limits, so ``RATE_LIMITS`` overrides them per
pattern and ``RateLimitLearner`` tightens them from Discord's headers.
``chatrelay run`` merges them with the other adapters' defaults
(``bots.cli.platform_limits``) and hands them to ``core.state.store.open_state``.
Composing them must not load discord.py or aiohttp: this module imports
neither at the top.

Who decides when a call may happen: **our budget, not discord.py.** discord.py
paces each route bucket from the ``X-RateLimit-*`` headers it has seen, and on
a 429 it sleeps ``Retry-After`` and retries (up to five times) inside the call.
That is right for one process and one route, and wrong for streaming:

- Discord's per-channel limit (about 5 per 5 s) is shared by message sends AND
  edits, which report different bucket hashes, so discord.py paces them apart
  and collects 429s when several replies stream into one channel;
- its buckets live in one process, while replicas share channels;
- a call it holds back or retries stalls one reply while the others keep
  spending the limit.

So every call a reply makes first waits for its scopes in the shared (Redis)
budget, whose defaults stay under Discord's limits (``discord:channel:<id>``,
``discord:interaction:<token digest>``, ``discord:global``). discord.py's own
pacing then never has to act; its retry remains the last resort for the one
call that still meets a 429 (another bot process on the same token, a limit
lower than the defaults).

And the budget learns from Discord as it goes: ``RateLimitLearner`` watches
every response discord.py receives (an ``aiohttp`` trace, so it sees even the
429s discord.py absorbs) and blocks the matching scope for every reply and
every replica: on a 429 until its ``Retry-After``, and when a bucket reports
``X-RateLimit-Remaining: 0`` until ``X-RateLimit-Reset-After``.

It also learns limits, **only ever tighter** than the configured ones. A
header describes one route's bucket (a channel's sends, or its edits), not the
send-and-edit limit that binds the channel, so it can never loosen a scope:
but when a bucket of a scope reports fewer calls than the scope's limit lets
through (``X-RateLimit-Limit: 3`` where ``discord:channel:*`` allows 4 per
5 s), the scope must pace by it. The learnt limit keeps one call under the
reported one, as the defaults do: ``Limit - 1`` calls per window (one call per
one and a half windows when the bucket allows only one), the window being
``X-RateLimit-Reset-After`` of a bucket's first call and never shorter than
the configured limit's. It goes to ``core.state.learned`` (a Redis hash with
an expiry per entry, one entry per scope and ``X-RateLimit-Bucket``) so every
replica and shard paces by it; a bucket that reports a limit no tighter than
the configured one drops its entry. Interaction scopes learn the same way; the
global scope does not (Discord sends no limit for it).

And it counts the answers Discord holds against the address (401, 403 and
429s other than ``X-RateLimit-Scope: shared``) for the invalid-request guard
(``InvalidRequestGuard``), which slows every replica down long before the ban.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING

from bots.discord.settings import PLATFORM
from core.clock import Clock, MonotonicClock
from core.reply import Budget, Limit, Pacing, RateLimit
from core.state import REDIS_FAILURES
from core.state.learned import AdaptiveLimits, LearnedLimits, is_tighter

if TYPE_CHECKING:
    import aiohttp

    from bots.discord.settings import DiscordSettings
    from core.state import State
    from core.state.invalid import InvalidRequests
    from core.telemetry.metrics import ChatrelayMetrics

log = logging.getLogger(__name__)

DEFAULT_LIMITS: dict[str, RateLimit] = {
    # Observed: 5 per 5 s per channel (sends and edits), 50/s per bot token,
    # about 5 edits per 2 s per interaction token. GCRA, because replies
    # stream edits: spacing them keeps every reply moving. (Discord counts sends
    # and edits in one channel together while discord.py paces them as separate
    # buckets, so its own header-based waiting doesn't cover that.)
    "discord:channel:*": Limit(4, 5),
    "discord:interaction:*": Limit(4, 2),
    "discord:global": Limit(40, 1, burst=10),
}
"""Scope pattern -> limit, first match wins."""

GLOBAL_SCOPE = "discord:global"
"""50 requests per second per bot token (interaction webhooks are exempt)."""

_CHANNEL_MESSAGE = re.compile(r"/channels/(\d+)/messages(?:/\d+)?/?$")
_WEBHOOK = re.compile(r"/webhooks/\d+/([^/]+)(?:/messages/[^/]+)?/?$")
_TOKEN_IN_PATH = re.compile(r"/(webhooks|interactions)/\d+/[^/]+")
_ID = re.compile(r"/\d+(?=/|$)")
_API_VERSION = re.compile(r"^/api/v\d+(?=/)")
_REACTION = re.compile(r"/reactions/[^/]+")


def channel_scope(channel_id: int) -> str:
    """Sends and edits in one channel (a thread is a channel of its own)."""
    return f"discord:channel:{channel_id}"


def interaction_scope(token: str) -> str:
    """Calls on one interaction's webhook. Keyed by a digest: the token is a
    credential (anyone holding it may post as the bot for 15 minutes) and scope
    names end up in Redis keys, logs and metrics."""
    return f"discord:interaction:{token_digest(token)}"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:20]


def route_template(path: str) -> str:
    """``path`` as the route it belongs to, for logs: ids become ``{id}`` and the
    token of a webhook or interaction ``{token}``
    (``/api/v10/webhooks/{id}/{token}/messages/@original``). The token is a
    credential; the route, with the bucket and the scope logged next to it, says
    what was limited without it."""
    return _ID.sub("/{id}", _TOKEN_IN_PATH.sub(r"/\1/{id}/{token}", path))


def route_name(method: str, path: str) -> str:
    """The call as a metric label: ``PATCH /channels/{id}/messages/{id}``, no API
    version, no id, no token, no emoji."""
    route = _API_VERSION.sub("", route_template(path))
    return f"{method} {_REACTION.sub('/reactions/{emoji}', route)}"


def scope_of(method: str, path: str) -> str | None:
    """The budget scope a REST call spends, for the calls replies make."""
    if method in ("POST", "PATCH"):
        found = _CHANNEL_MESSAGE.search(path)
        if found:
            return channel_scope(int(found.group(1)))
    if method in ("POST", "PATCH", "DELETE"):
        found = _WEBHOOK.search(path)
        if found:
            return interaction_scope(found.group(1))
    return None


class RateLimitLearner:
    """Feeds what Discord's answers say about rate limits into the shared budget."""

    def __init__(
        self,
        budget: Budget,
        *,
        learned: LearnedLimits | None = None,
        limits: AdaptiveLimits | None = None,
        guard: InvalidRequestGuard | None = None,
    ) -> None:
        """``learned``: where learnt limits go (none: nothing is learnt); ``limits``:
        the table whose configured limits they tighten; ``guard``: counts the
        invalid answers."""
        self._budget = budget
        self._learned = learned
        self._limits = limits
        self._guard = guard
        self.rate_limited = 0
        """429s seen (discord.py retried them, or raised them to the sink)."""
        self.exhausted = 0
        """Answers saying a paced bucket has no call left in its window."""
        self.invalid = 0
        """Answers Discord counts toward its invalid-request limit."""
        self.on_error: Callable[[str, str], None] | None = None
        """Told of every answer of 400 or more: ``route_name`` and the status (metrics)."""

    def trace_config(self) -> aiohttp.TraceConfig:
        """For ``discord.Client(http_trace=...)``: discord.py's REST and webhook calls
        share the client's session, so one trace sees them all."""
        import aiohttp  # here, not at the top: see the module docstring

        config = aiohttp.TraceConfig()
        config.on_request_end.append(self._on_request_end)
        return config

    async def _on_request_end(
        self,
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        response = params.response
        try:
            await self.learn(params.method, params.url.path, response.status, response.headers)
        except Exception:  # a safety net must not break the call it watches
            log.exception("could not learn from a Discord rate limit answer")

    async def learn(self, method: str, path: str, status: int, headers: Mapping[str, str]) -> None:
        """Block the call's scope as long as Discord's answer says to, tighten its
        limit when the answer reports a tighter bucket, count invalid answers."""
        if status >= 400 and self.on_error is not None:
            self.on_error(route_name(method, path), str(status))
        limit_scope = headers.get("X-RateLimit-Scope")
        if is_invalid(status, limit_scope):
            self.invalid += 1
            if self._guard is not None:
                await self._guard.record(status)
        scope = GLOBAL_SCOPE if headers.get("X-RateLimit-Global") else scope_of(method, path)
        if status == 429:
            self.rate_limited += 1
            wait = max(
                header_seconds(headers.get("Retry-After")),
                header_seconds(headers.get("X-RateLimit-Reset-After")),
            )
            log.warning(
                "Discord answered 429 to %s %s (bucket %s, %s scope): %s blocked for %.2fs",
                method,
                route_template(path),
                headers.get("X-RateLimit-Bucket", "unknown"),
                limit_scope or "unknown",
                scope or "no paced scope",
                wait,
            )
            if scope is not None:
                await self._budget.block(scope, wait)
                if limit_scope != "shared":  # a shared resource's limit is not our bucket's
                    await self._learn_limit(scope, headers)
            return
        if scope is not None and headers.get("X-RateLimit-Remaining") == "0":
            self.exhausted += 1
            await self._budget.block(scope, header_seconds(headers.get("X-RateLimit-Reset-After")))
        if scope is not None:
            await self._learn_limit(scope, headers)

    async def _learn_limit(self, scope: str, headers: Mapping[str, str]) -> None:
        learned = self._learned
        bucket = headers.get("X-RateLimit-Bucket")
        reported = _count(headers.get("X-RateLimit-Limit"))
        if learned is None or scope == GLOBAL_SCOPE or not bucket or reported is None:
            return
        configured = self._limits.configured(scope) if self._limits is not None else None
        remaining = _count(headers.get("X-RateLimit-Remaining"))
        fresh = remaining == reported - 1  # the bucket's first call: Reset-After is its window
        if configured is None and not fresh:
            return  # no window to go by
        limit: Limit | None = limit_from_headers(
            reported, header_seconds(headers.get("X-RateLimit-Reset-After")), configured
        )
        if limit is not None and not is_tighter(limit, configured):
            limit = None
        before = learned.get(scope)
        await learned.record(scope, bucket, limit)
        after = learned.get(scope)
        if after != before:
            if after is None:
                log.info("Discord: %s paces by its configured limit again", scope)
            else:
                log.info(
                    "Discord reports %d calls per window for bucket %s of %s (configured: "
                    "%s): every replica now paces it at %g calls per %gs",
                    reported,
                    bucket,
                    scope,
                    configured,
                    after.count,
                    after.per,
                )


def limit_from_headers(reported: int, reset_after: float, configured: RateLimit | None) -> Limit:
    """The limit a scope paces by when one of its buckets reports ``reported``
    calls per window: one call under it, over a window of ``reset_after`` seconds
    or the configured limit's, whichever is longer (a header seen mid-window
    says less than the whole window)."""
    per = max(reset_after, configured.per if configured is not None else 0.0)
    per = math.ceil(per * 1000) / 1000 or 1.0
    if reported >= 2:
        return Limit(reported - 1, per)
    return Limit(1, per * 1.5)


def _count(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def header_seconds(value: str | None, default: float = 0.0) -> float:
    """A header's seconds (``Retry-After``, ``X-RateLimit-Reset-After``); ``default``
    when it is missing or unreadable."""
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        return default


# -- the invalid-request guard ----------------------------------------------

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
    """Counts Discord's invalid answers and slows every replica down as they add up.

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


def adaptive_limits(state: State, settings: DiscordSettings) -> AdaptiveLimits:
    """The shared budget's limit table, made to learn from Discord's headers (once
    per process: a second adapter on the same state shares what the first learns)."""
    shared = state.shared_budget
    if isinstance(shared.limits, AdaptiveLimits):
        return shared.limits
    learned = state.learned_limits(PLATFORM, ttl=settings.discord_learned_limit_ttl)
    limits = AdaptiveLimits(shared.limits, learned)
    shared.use_limits(limits)
    return limits
