"""One reply at a time per conversation, across replicas.

Policy: **a newer message waits** for the reply ahead of it, in arrival
order, then gets its own reply; it does not supersede (stop) the running one.
Why: threads are shared. In a Slack thread or Discord channel several people
talk to the bot, and with superseding Bob's "+1" would cut off the answer
Alice is reading. Waiting also keeps the model's view coherent: append the
user's message to the conversation *after* acquiring the lock, so the history
reads question, answer, question, answer, and the second answer sees the
first. Someone who wants a reply stopped presses Stop (``core.state.cancel``).
A message that waits longer than ``LOCK_WAIT`` gets ``None`` from ``acquire``
and the handler tells the user the bot is still busy.

Mechanics: the lock is a key holding the holder's random token with an expiry
(``LOCK_TTL``), extended while the reply runs, so a replica that dies frees the
conversation within the TTL. Release and extend are Lua scripts that act only
if the key still holds *our* token, so a holder whose lock expired can't delete
the next holder's. Waiters queue in a list and the lock goes only to the head
of the line; each waiter's poll refreshes a liveness deadline, and the head is
skipped once its deadline passes (its replica died while waiting).

**Without Redis** (refused, or no answer within ``timeout``, i.e.
``REPLY_PATH_TIMEOUT``: a paused or partitioned server) a message is still
answered: ``acquire`` grants a *per-process* lease (``lease.shared`` is False)
as long as no other lease of this process holds the conversation, since a
reply nobody gets is worse than the rare overlap with another replica. A
message that had been waiting in line first waits out the TTL of the lock it
saw held (its holder can't extend it either). While the reply runs, its lease
takes the lock in Redis as soon as Redis answers again (``shared`` turns
True), or learns that another reply took it meanwhile (``lost``). A lease
released while Redis was away leaves its key behind until the TTL; the next
look at Redis from this process for that conversation deletes it, so the next
reply doesn't wait for a reply that has ended.

**Losing the lock.** ``lease.lost`` turns True when an extension finds another
token or no key (the holder stalled past the TTL, or Redis lost the key), when
Redis has been unreachable for longer than the TTL (the key may have expired
and another replica taken it), or when nobody kept the lease (``async with``)
for its TTL; it stays True until ``reacquire()`` takes the lock back, which it
does only if no other reply holds it. From then on another reply may be
running in the conversation: check ``lost`` before starting the stream and
before storing the answer, and ``reacquire()`` or give up. ``wait_lost()``
returns when that happens, for a lease kept by ``async with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from types import TracebackType

from core.clock import Clock, MonotonicClock, SlimEvent
from core.state.batch import WriteBatch
from core.state.connection import REDIS_FAILURES, REPLY_PATH_TIMEOUT, bounded
from core.state.keys import ConversationKey, Keys
from core.state.replicated import ReplicatedWrites
from core.state.topology import RedisClient

log = logging.getLogger(__name__)

# A lock whose holder ended while Redis was away is still in Redis, under a
# token this process released: ``_DROP_RELEASED`` deletes it (ARGV from ``first``
# on are such tokens), so the next reply needn't wait out its TTL.
_DROP_RELEASED = """
local function drop_released(holder, first)
  if holder then
    for i = first, #ARGV do
      if holder == ARGV[i] then
        redis.call('DEL', KEYS[1])
        return false
      end
    end
  end
  return holder
end
"""

# KEYS: lock, queue (tokens waiting, oldest first), waiters (token -> liveness deadline, ms)
# ARGV: token, lock ttl ms, waiter ttl ms, "1" to wait in line if not granted now,
# then tokens released here whose key may remain
_ACQUIRE = (
    _DROP_RELEASED
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token = ARGV[1]
local holder = redis.call('GET', KEYS[1])
if holder == token then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
holder = drop_released(holder, 5)
while true do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head then break end
  local alive = tonumber(redis.call('HGET', KEYS[3], head) or '0')
  if alive >= now then break end
  redis.call('LPOP', KEYS[2])
  redis.call('HDEL', KEYS[3], head)
end
local head = redis.call('LINDEX', KEYS[2], 0)
if not holder and (not head or head == token) then
  redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
  if head == token then
    redis.call('LPOP', KEYS[2])
  end
  redis.call('HDEL', KEYS[3], token)
  return 1
end
if ARGV[4] == '1' then
  if redis.call('HEXISTS', KEYS[3], token) == 0 then
    redis.call('RPUSH', KEYS[2], token)
  end
  redis.call('HSET', KEYS[3], token, string.format('%d', now + tonumber(ARGV[3])))
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return 0
"""
)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# 1: extended; 0: another holder's token; -1: no key (it expired, or Redis lost it)
_EXTEND = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  return -1
end
return 0
"""

# Take the lock for a reply already running (a per-process lease after an
# outage, or ``reacquire``): ours or free, ignoring the line, since every waiter
# in it arrived after this reply did. Leaves the line too, in case the
# acquire that timed out had queued us after all.
# KEYS: lock, queue, waiters; ARGV: token, lock ttl ms, then tokens released here
_CLAIM = (
    _DROP_RELEASED
    + """
local holder = drop_released(redis.call('GET', KEYS[1]), 3)
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('LREM', KEYS[2], 0, ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
"""
)

RELEASED_MEMORY = 10_000
"""Tokens remembered whose release could not reach Redis; the oldest go first."""


class Lease:
    """A conversation lock held by one reply.

    ``async with lease:`` keeps it (extends it every third of its TTL, or takes
    it in Redis once Redis answers, for a per-process lease) while the reply
    runs and releases it at the end. See the module docstring for ``shared``,
    ``lost`` and ``reacquire``.
    """

    def __init__(
        self,
        locks: ConversationLocks,
        conversation: ConversationKey,
        token: str,
        *,
        shared: bool = True,
        since: float | None = None,
    ) -> None:
        """``since``: when the command that granted the lock was sent (default:
        now), the earliest its expiry in Redis can have been set from."""
        self._locks = locks
        self.conversation = conversation
        self.token = token
        self._shared = shared
        self._expires = (locks.clock.now() if since is None else since) + locks.ttl
        """When the lock expires in Redis unless extended; on our clock, early
        rather than late, because it counts from when the command was sent."""
        self._unreachable = False
        self._lost = SlimEvent()
        self._released = False
        self._keeper: asyncio.Task[None] | None = None

    @property
    def shared(self) -> bool:
        """True while the lock is held in Redis, False for a per-process lease
        granted while Redis was unreachable (other replicas don't see it)."""
        return self._shared

    @property
    def lost(self) -> bool:
        """True once the lock was found taken or gone, or Redis was unreachable
        for longer than the TTL; until ``reacquire`` succeeds."""
        if self._lost.is_set() or self._released:
            return self._lost.is_set()
        if self._shared and self._locks.clock.now() >= self._expires:
            if self._unreachable:
                self._lose("Redis has been unreachable for longer than the lock's TTL")
                return True
            if not self._kept():
                self._lose("nobody extended it for its TTL")
                return True
        return False

    async def wait_lost(self) -> None:
        """Return once ``lost`` is True (while the lease is kept by ``async with``)."""
        await self._lost.wait()

    async def extend(self) -> bool:
        """Push the expiry back by the TTL (a per-process lease: take the lock in
        Redis if it is free); False if another reply holds it or it is gone, and
        then ``lost`` is True. Raises one of ``REDIS_FAILURES`` if Redis can't be
        asked within the bound (``lost`` turns True once that lasts a TTL).
        A lost lease is not extended (False): ``reacquire`` it."""
        if self.lost:
            return False
        locks = self._locks
        sent = locks.clock.now()
        try:
            if self._shared:
                answer = int(
                    await bounded(locks._extend(self.conversation, self.token), locks.timeout)
                )
            else:
                answer = int(
                    await bounded(locks._claim(self.conversation, self.token), locks.timeout)
                )
        except REDIS_FAILURES:
            self._unreachable = True
            if self._shared and locks.clock.now() >= self._expires:
                self._lose("Redis has been unreachable for longer than the lock's TTL")
            raise
        self._unreachable = False
        if answer == 1:
            self._expires = sent + locks.ttl
            if not self._shared:
                self._shared = True
                log.info("took the lock of %s in Redis again", self.conversation.id)
            return True
        self._lose("another reply holds it" if answer == 0 else "it expired")
        return False

    async def reacquire(self) -> bool:
        """Take the lock back if no other reply holds it; True if this lease holds
        it now (``lost`` is False again), False if another reply holds it or Redis
        could not be asked (then ``lost`` stays as it was)."""
        locks = self._locks
        sent = locks.clock.now()
        try:
            claimed = await bounded(locks._claim(self.conversation, self.token), locks.timeout)
        except REDIS_FAILURES as error:
            log.warning("could not take back the lock of %s: %s", self.conversation.id, error)
            return False
        if not claimed:
            return False
        self._shared, self._unreachable, self._released = True, False, False
        self._expires = sent + locks.ttl
        self._lost.clear()
        locks._hold(self)
        log.info("took the lock of %s back", self.conversation.id)
        return True

    async def release(self) -> bool:
        """Free the conversation; False if we no longer held it (nothing is touched).
        Raises one of ``REDIS_FAILURES`` if Redis can't be told (the key expires)."""
        self._released = True
        locks = self._locks
        locks._forget(self)
        try:
            return await bounded(locks._release(self.conversation, self.token), locks.timeout)
        except REDIS_FAILURES:
            locks._released_here(self)
            raise

    def _lose(self, why: str) -> None:
        if not self._lost.is_set():
            log.warning("lost the lock of %s: %s", self.conversation.id, why)
            self._lost.set()

    def _active(self) -> bool:
        """Still holds the conversation in this process: not released, and kept
        alive (or not yet past its TTL, for a lease nobody keeps)."""
        if self._released:
            return False
        return self._kept() or self._locks.clock.now() < self._expires

    def _kept(self) -> bool:
        return self._keeper is not None and not self._keeper.done()

    async def __aenter__(self) -> Lease:
        self._keeper = asyncio.create_task(self._keep_alive())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        try:
            await self.release()
        except REDIS_FAILURES as error:  # it expires by itself
            log.warning("could not release the lock of %s: %s", self.conversation.id, error)

    async def _keep_alive(self) -> None:
        locks = self._locks
        clock = locks.clock
        while True:
            delay = locks.ttl / 3
            if self._shared and self._unreachable and not self._lost.is_set():
                # Look again right when the key may expire, to say so on time.
                delay = min(delay, max(0.0, self._expires - clock.now()))
            await clock.sleep(delay)
            if self.lost:  # nothing to keep until ``reacquire``
                continue
            if not self._shared:
                self._expires = clock.now() + locks.ttl  # alive in this process
            try:
                await self.extend()
            except REDIS_FAILURES as error:
                if self._shared:
                    log.warning("could not extend the lock of %s: %s", self.conversation.id, error)


class ConversationLocks:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        ttl: float = 30.0,
        wait: float = 300.0,
        poll: float = 0.1,
        clock: Clock | None = None,
        timeout: float = REPLY_PATH_TIMEOUT,
        writes: ReplicatedWrites | None = None,
    ) -> None:
        self._redis = redis
        self._writes = writes or ReplicatedWrites(redis)
        """Grabs wait for a replica where there are any (``core.state.replicated``)."""
        self._keys = keys
        self.ttl = ttl
        self.wait = wait
        self.poll = poll
        self.clock = clock or MonotonicClock()
        self.timeout = timeout
        self._waiter_ttl = max(2.0, poll * 10)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release_script = redis.register_script(_RELEASE)
        self._extend_script = redis.register_script(_EXTEND)
        self._claim_script = redis.register_script(_CLAIM)
        self.batch: WriteBatch | None = None
        """Where extensions wait for a round trip to ride along with."""
        self._held: dict[str, Lease] = {}  # conversation id -> the lease this process holds
        # conversation id -> tokens released here whose key Redis may still hold
        self._unreleased: dict[str, set[str]] = {}

    async def acquire(
        self, conversation: ConversationKey, *, wait: float | None = None
    ) -> Lease | None:
        """The conversation's lock, waiting in line up to ``wait`` seconds (default:
        ``LOCK_WAIT``; 0: try once, without queueing); None if it could not be had.

        Each look at Redis is bounded by ``timeout``, so this returns within about
        ``wait + timeout`` (once more ``timeout`` if it must leave the line).
        Without Redis the lease is per-process (see the module docstring); it is
        None only if this process already runs a reply in the conversation (or
        Redis last showed it held, less than a TTL ago) for all of ``wait``.
        """
        wait = self.wait if wait is None else wait
        token = secrets.token_hex(16)
        keys = self._lock_keys(conversation)
        clock = self.clock
        deadline = clock.now() + wait
        queue = "1" if wait > 0 else "0"
        args: list[str | int] = [token, _millis(self.ttl), _millis(self._waiter_ttl), queue]
        # (then the tokens released here whose key may remain, fresh at every look)
        held_seen: float | None = None  # when Redis last said another reply had it
        answered = False  # Redis answered the last look (else leaving the line can't work)
        lease: Lease | None = None
        try:
            while True:
                holder = self._holder(conversation)
                sent = clock.now()
                try:
                    if holder is not None and not holder.shared and not holder.lost:
                        # A reply granted while Redis was away runs here: it goes
                        # first, so it takes the lock in Redis before we ask.
                        await holder.extend()
                    stale = self._stale(conversation)
                    call = self._writes.script(self._acquire, keys, [*args, *stale])
                    granted = bool(await bounded(call, self.timeout))
                    self._dropped(conversation, stale)
                    answered = True
                except REDIS_FAILURES as error:
                    answered = False
                    lately_held = held_seen is not None and clock.now() - held_seen < self.ttl
                    if holder is None and not lately_held:
                        log.warning(
                            "Redis is unreachable (%s): the lock of %s is held in this "
                            "process only",
                            error,
                            conversation.id,
                        )
                        lease = self._hold(Lease(self, conversation, token, shared=False))
                        return lease
                else:
                    if granted:
                        lease = self._hold(Lease(self, conversation, token, since=sent))
                        return lease
                    held_seen = clock.now()
                remaining = deadline - clock.now()
                if remaining <= 0:
                    return None
                await clock.sleep(min(self.poll, remaining))
        finally:
            if lease is None and wait > 0 and answered:
                await self._leave_line(keys, token)

    def _holder(self, conversation: ConversationKey) -> Lease | None:
        lease = self._held.get(conversation.id)
        if lease is not None and not lease._active():
            del self._held[conversation.id]
            return None
        return lease

    def _hold(self, lease: Lease) -> Lease:
        self._held[lease.conversation.id] = lease
        return lease

    def _forget(self, lease: Lease) -> None:
        if self._held.get(lease.conversation.id) is lease:
            del self._held[lease.conversation.id]

    def _released_here(self, lease: Lease) -> None:
        """``lease`` ended but Redis could not be told: whoever asks Redis for the
        conversation next from this process drops its key instead of waiting."""
        tokens = self._unreleased.pop(lease.conversation.id, set())  # re-inserted: newest
        tokens.add(lease.token)
        self._unreleased[lease.conversation.id] = tokens
        while sum(len(t) for t in self._unreleased.values()) > RELEASED_MEMORY:
            del self._unreleased[next(iter(self._unreleased))]

    def _stale(self, conversation: ConversationKey) -> list[str]:
        return sorted(self._unreleased.get(conversation.id, ()))

    def _dropped(self, conversation: ConversationKey, tokens: list[str]) -> None:
        """Redis answered a script given ``tokens``: their key is gone now."""
        remaining = self._unreleased.get(conversation.id)
        if remaining is not None:
            remaining.difference_update(tokens)
            if not remaining:
                del self._unreleased[conversation.id]

    async def _leave_line(self, keys: list[str], token: str) -> None:
        # If Redis can't be told, our liveness deadline runs out and the line skips us.
        with contextlib.suppress(*REDIS_FAILURES):
            await bounded(self._unqueue(keys, token), self.timeout)

    async def _unqueue(self, keys: list[str], token: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrem(keys[1], 0, token)
            pipe.hdel(keys[2], token)
            await pipe.execute()

    async def _extend(self, conversation: ConversationKey, token: str) -> int:
        key = self._keys.lock(conversation)
        args: list[str | int] = [token, _millis(self.ttl)]
        if self.batch is not None:  # nobody waits on it: ride along (core.state.batch)
            return int(await self.batch.write(self._extend_script, [key], args, self.timeout))
        return int(await self._extend_script(keys=[key], args=args))

    async def _claim(self, conversation: ConversationKey, token: str) -> int:
        keys = self._lock_keys(conversation)
        stale = self._stale(conversation)
        args = [token, _millis(self.ttl), *stale]
        claimed = int(await self._writes.script(self._claim_script, keys, args))
        self._dropped(conversation, stale)
        return claimed

    async def _release(self, conversation: ConversationKey, token: str) -> bool:
        key = self._keys.lock(conversation)
        return bool(await self._release_script(keys=[key], args=[token]))

    def _lock_keys(self, conversation: ConversationKey) -> list[str]:
        keys = self._keys
        return [
            keys.lock(conversation),
            keys.lock_queue(conversation),
            keys.lock_waiters(conversation),
        ]


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))
