"""Rate budgets shared by every replica: GCRA and sliding windows in Redis.

The same algorithms as ``core.reply.budget.LocalBudget`` (each acquire reserves the
next free slot, so waiters are served in arrival order and 20 replies sharing
a scope each get about a twentieth of it), but the slots live in Redis and one
Lua script reserves a slot atomically: one round trip per acquire, no
optimistic-locking retries however many replicas contend.

A ``Window`` scope keeps a sliding log: a sorted set of call times (µs, each
member unique) holding the calls of the last window and every reservation
still ahead. An acquire's slot is the earliest time at which the ``count``-th
latest entry has left the window, so at most ``count`` entries, and hence
calls, ever share a window, whichever replica made them. The reservation is
the waiter's ticket: slots are handed out in arrival order at Redis, so no
waiter in a busy window starves, and a waiter cancelled while it sleeps gives
its slot back. ``try_acquire`` reserves only a slot that is now, so it never
takes one a waiter holds.

Time is Redis's ``TIME``, not ours: replicas on different machines have
different monotonic clocks, and the bucket needs one. A reservation answers
"your slot is in *w* seconds"; the replica sleeps *w* on its own clock, which
can only make it late, never early. A waiter that slept asks once more before
calling, because a 429 seen by any replica while it slept (``block``) moves
every slot past the ``Retry-After``.

If Redis stops answering, replies must not stop with it: acquires and blocks
go to a per-process ``LocalBudget`` with the same limits, a warning is logged
once per outage, and a background probe switches back when Redis answers
again for the scopes that failed (on a cluster, their own masters: another
node answering proves nothing), replaying any 429 blocks learnt meanwhile.
While degraded each replica spends the whole limit on its own, so a few 429s
are possible; the engine handles those as it always does.

"Stops answering" includes a server that is paused or cut off, which never
refuses anything: each script call is bounded by ``timeout``
(``REPLY_PATH_TIMEOUT``), and the first call to run out of time switches the
budget to the fallback *and* cuts short every other call still waiting on
Redis, so a pause costs the replies sharing this budget one bound in all, not
one per call in flight. Once degraded, acquires never wait on Redis again
until the probe has seen it answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from core.clock import Clock, MonotonicClock
from core.reply.budget import LimitTable, LocalBudget, Turn, Window
from core.state.batch import WriteBatch
from core.state.connection import REDIS_FAILURES as REDIS_FAILURES  # re-exported
from core.state.connection import REPLY_PATH_TIMEOUT, bounded
from core.state.keys import Keys
from core.state.topology import RedisClient

log = logging.getLogger(__name__)

# State per scope, a hash in microseconds: t = theoretical arrival time of the
# next call (GCRA's TAT), b = blocked until (a 429's Retry-After).
# ARGV: mode (acquire, try, confirm, block), interval, tolerance, now ("" = Redis
# TIME), block seconds (µs).
# Numbers are formatted with %d: Lua's own number-to-string keeps 14 digits,
# too few for a timestamp in microseconds.
_GCRA = """
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[4])
end
local mode = ARGV[1]
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 't', 'b')
local tat = tonumber(state[1]) or 0
local blocked = tonumber(state[2]) or 0
local wait = 0
if mode == 'block' then
  blocked = math.max(blocked, now + tonumber(ARGV[5]))
  if interval > 0 then
    -- calls reserved before the 429 must not burst out right after it passes
    tat = math.max(tat, blocked + interval)
  end
else
  if mode == 'confirm' and blocked <= now then
    return 0
  end
  local start = math.max(now, blocked)
  if interval == 0 then
    return string.format('%d', start - now)
  end
  tat = math.max(tat, start)
  wait = math.max(tat - tolerance, start) - now
  if mode == 'try' and wait > 0 then
    return string.format('%d', wait)  -- no slot now: take nothing
  end
  tat = tat + interval
end
redis.call('HSET', KEYS[1], 't', string.format('%d', tat), 'b', string.format('%d', blocked))
local horizon = math.max(tat, blocked) - now
redis.call('PEXPIRE', KEYS[1], string.format('%d', math.floor(horizon / 1000) + 1000))
return string.format('%d', wait)
"""

# A window scope: KEYS[1] the scope's hash (b = blocked until, n = the last
# member's sequence number), KEYS[2] its log, a sorted set of call times in µs
# whose members ("<time>:<n>") are unique, so two calls in one µs are two calls.
# ARGV: mode (acquire, try, confirm, block), count, per (µs), now ("" = Redis
# TIME), block seconds (µs), the member a confirming waiter holds.
# Returns {wait in µs, the member reserved ("" when none)}.
_WINDOW = """
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[4])
end
local mode = ARGV[1]
local count = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local blocked = tonumber(redis.call('HGET', KEYS[1], 'b')) or 0
local function keep()
  -- both keys live while a block or a logged call can still hold a call back
  local horizon = blocked
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  if last[2] then
    horizon = math.max(horizon, tonumber(last[2]) + per)
  end
  local ms = string.format('%d', math.floor(math.max(horizon - now, 0) / 1000) + 1000)
  redis.call('PEXPIRE', KEYS[1], ms)
  redis.call('PEXPIRE', KEYS[2], ms)
end
if mode == 'block' then
  blocked = math.max(blocked, now + tonumber(ARGV[5]))
  redis.call('HSET', KEYS[1], 'b', string.format('%d', blocked))
  keep()
  return {'0', ''}
end
if mode == 'confirm' then
  if blocked <= now then
    return {'0', ARGV[6]}
  end
  -- a 429 moved the scope past this waiter's slot while it slept: no call was
  -- made in that slot, so give it back, then reserve again
  redis.call('ZREM', KEYS[2], ARGV[6])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', now - per))
local slot = math.max(now, blocked)
local kth = redis.call('ZRANGE', KEYS[2], -count, -count, 'WITHSCORES')
if kth[2] then
  slot = math.max(slot, tonumber(kth[2]) + per)
end
if mode == 'try' and slot > now then
  return {string.format('%d', slot - now), ''}
end
local member = string.format('%d:%d', slot, redis.call('HINCRBY', KEYS[1], 'n', 1))
redis.call('ZADD', KEYS[2], string.format('%d', slot), member)
keep()
return {string.format('%d', slot - now), member}
"""

MICROS = 1_000_000


class RedisBudget:
    """``core.reply.budget.Budget`` shared through Redis, degrading to a local one.

    ``server_time=False`` takes time from ``clock`` instead of Redis, so pacing
    can be tested on a ``FakeClock``; never use it with replicas on different
    machines.
    """

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        limits: LimitTable | None = None,
        *,
        clock: Clock | None = None,
        server_time: bool = True,
        retry_interval: float = 1.0,
        timeout: float = REPLY_PATH_TIMEOUT,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.limits = limits or LimitTable()
        self._clock = clock or MonotonicClock()
        self._server_time = server_time
        self._retry_interval = retry_interval
        self.timeout = timeout
        self._script = redis.register_script(_GCRA)
        self._window_script = redis.register_script(_WINDOW)
        self._fallback = LocalBudget(self.limits, self._clock)
        self._degraded = False
        self._pending_blocks: dict[str, float] = {}  # learnt while degraded: scope -> until
        self._failed_scopes: set[str] = set()  # whose calls failed in this outage
        self._probe: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Timeout] = set()  # deadlines of script calls in flight
        self._releases: set[asyncio.Task[None]] = set()  # window slots being given back
        self.batch: WriteBatch | None = None
        """Writes that ride along with this budget's round trips (``core.state.batch``)."""
        self.on_redis_error: Callable[[str], None] | None = None
        """Told of each Redis failure: the operation (``acquire``, ``try_acquire``,
        ``block``, ``probe``: the wait for Redis to return). For metrics."""
        self.on_degraded: Callable[[bool], None] | None = None
        """Told when budgets turn per-process (True) and shared again (False)."""

    def use_limits(self, limits: LimitTable) -> None:
        """Pace by ``limits`` from now on, here and in the fallback (e.g. a
        ``core.state.learned.AdaptiveLimits`` over the configured table)."""
        self.limits = limits
        self._fallback.limits = limits

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and budgets are per-process."""
        return self._degraded

    async def acquire(self, scope: str, turn: Turn | None = None) -> float:
        """In arrival order (``turn`` is ``core.reply.fairness.FairBudget``'s to use)."""
        clock = self._clock
        start = clock.now()
        if not self._degraded:
            try:
                wait, held = await self._call("acquire", scope)
                while wait > 0 and not self._degraded:
                    try:
                        await clock.sleep(wait)
                    except asyncio.CancelledError:
                        self._give_back(scope, held)  # no call will be made in it
                        raise
                    if not self._degraded:  # else Redis left while we slept: don't ask it
                        wait, held = await self._call("confirm", scope, held=held)
                if not self._degraded:
                    return clock.now() - start
            except REDIS_FAILURES as exc:
                self._lost(exc, "acquire", scope)
        await self._fallback.acquire(scope)
        return clock.now() - start

    async def try_acquire(self, scope: str) -> bool:
        """One bounded round trip, never a wait for a slot; degraded: the local answer."""
        if not self._degraded:
            try:
                wait, _ = await self._call("try", scope)
                return wait <= 0
            except REDIS_FAILURES as exc:
                self._lost(exc, "try_acquire", scope)
        return await self._fallback.try_acquire(scope)

    async def block(self, scope: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        # Also locally: if Redis goes away later, the fallback already knows.
        await self._fallback.block(scope, seconds)
        if not self._degraded:
            try:
                await self._call("block", scope, seconds)
                return
            except REDIS_FAILURES as exc:
                self._lost(exc, "block", scope)
        until = self._clock.now() + seconds
        self._pending_blocks[scope] = max(until, self._pending_blocks.get(scope, 0.0))

    async def aclose(self) -> None:
        """Stop the probe that waits for Redis to return, if one runs, and let the
        window slots being given back reach Redis (each bounded)."""
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
            self._probe = None
        await asyncio.gather(*self._releases, return_exceptions=True)

    async def _call(
        self, mode: str, scope: str, block: float = 0.0, held: str = ""
    ) -> tuple[float, str]:
        """Run the scope's script; returns the wait in seconds and, for a window,
        the member of the slot reserved ("" when none)."""
        limit = self.limits.lookup(scope)
        now = "" if self._server_time else str(_micros(self._clock.now()))
        args: list[str | int]
        if isinstance(limit, Window):
            script = self._window_script
            keys = [self._keys.bucket(scope), self._keys.bucket_log(scope)]
            args = [mode, limit.count, _micros(limit.per), now, _micros(block), held]
        else:
            interval = _micros(limit.interval) if limit else 0
            tolerance = interval * (limit.burst - 1) if limit else 0
            script = self._script
            keys = [self._keys.bucket(scope)]
            args = [mode, interval, tolerance, now, _micros(block)]
        # A hung Redis must not hold replies: bounded, and cut short by ``_lost``
        # as soon as any other call finds Redis gone.
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                self._calls.add(deadline)
                if self.batch is not None:  # one round trip with this turn's others
                    answer = await self.batch.call(script, keys, args)
                else:
                    answer = await script(keys=keys, args=args)
        except TimeoutError:
            if deadline.expired():
                raise TimeoutError(f"no answer from Redis within {self.timeout:g} s") from None
            raise
        finally:
            self._calls.discard(deadline)
        if isinstance(answer, list):
            wait, member = answer
            return int(wait) / MICROS, _text(member)
        return int(answer) / MICROS, ""

    def _give_back(self, scope: str, member: str) -> None:
        """Free a window slot a cancelled waiter held, in the background: the
        cancellation must not wait on Redis."""
        if member and not self._degraded:
            task = asyncio.create_task(self._release(scope, member))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def _release(self, scope: str, member: str) -> None:
        # If Redis can't take it back, the slot stays taken: one call fewer in
        # that window, never one more.
        with contextlib.suppress(*REDIS_FAILURES):
            await bounded(self._redis.zrem(self._keys.bucket_log(scope), member), self.timeout)

    def _lost(self, exc: BaseException, operation: str, scope: str) -> None:
        self._failed_scopes.add(scope)
        if self.on_redis_error is not None:
            self.on_redis_error(operation)
        if not self._degraded:
            self._degraded = True
            log.warning(
                "Redis is unreachable (%s): rate budgets are per-process until it returns",
                str(exc) or type(exc).__name__,
            )
            if self.on_degraded is not None:
                self.on_degraded(True)
        now = asyncio.get_running_loop().time()
        for deadline in list(self._calls):  # their answer would come too late to matter
            if not deadline.expired():
                # A bound may be expiring in this very turn of the loop (many calls
                # started together, a saturated process): it needs no cutting short,
                # and moving it would raise out of someone else's reply.
                with contextlib.suppress(RuntimeError):
                    deadline.reschedule(now)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        while True:
            await self._clock.sleep(self._retry_interval)
            try:
                await bounded(self._answers(), self.timeout)
                await self._replay_blocks()
            except REDIS_FAILURES:
                if self.on_redis_error is not None:
                    self.on_redis_error("probe")
                continue
            self._failed_scopes.clear()
            self._degraded = False
            log.info("Redis is back: rate budgets are shared again")
            if self.on_degraded is not None:
                self.on_degraded(False)
            return

    async def _answers(self) -> None:
        """Redis answers for every scope whose call failed in this outage.

        A PING would say as much of one server, but a cluster client sends it to
        some node, which may answer while the one holding a failed scope does not
        (its master dead, the replica not promoted yet): the budget would turn
        shared, fail at the next acquire and degrade again, once per probe for as
        long as the failover takes. So one PTTL per failed scope's key, in a
        pipeline a cluster splits by node (one round trip on one server)."""
        scopes = sorted(self._failed_scopes)
        if not scopes:
            await self._redis.ping()
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.pttl(self._keys.bucket(scope))
            await pipe.execute()

    async def _replay_blocks(self) -> None:
        now = self._clock.now()
        for scope, until in list(self._pending_blocks.items()):
            if until > now:
                await self._call("block", scope, until - now)
            del self._pending_blocks[scope]


def _micros(seconds: float) -> int:
    return round(seconds * MICROS)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
