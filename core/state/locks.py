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
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from types import TracebackType

from redis.asyncio import Redis

from core.clock import Clock, MonotonicClock
from core.state.connection import REDIS_FAILURES
from core.state.keys import ConversationKey, Keys

log = logging.getLogger(__name__)

# KEYS: lock, queue (tokens waiting, oldest first), waiters (token -> liveness deadline, ms)
# ARGV: token, lock ttl ms, waiter ttl ms, "1" to wait in line if not granted now
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token = ARGV[1]
local holder = redis.call('GET', KEYS[1])
if holder == token then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
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

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class Lease:
    """A held conversation lock.

    ``async with lease:`` extends it every third of its TTL while the reply runs
    and releases it at the end. If an extension finds the lock gone (Redis lost
    it, or this process stalled past the TTL), ``lost`` is set: another reply
    may now be running in the conversation, and the holder may want to stop.
    """

    def __init__(self, locks: ConversationLocks, conversation: ConversationKey, token: str) -> None:
        self._locks = locks
        self.conversation = conversation
        self.token = token
        self.lost = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    async def extend(self) -> bool:
        """Push the expiry back by the TTL; False if we no longer hold the lock."""
        return await self._locks._extend(self.conversation, self.token)

    async def release(self) -> bool:
        """Free the conversation; False if we no longer held it (nothing is touched)."""
        return await self._locks._release(self.conversation, self.token)

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
        clock = self._locks.clock
        while True:
            await clock.sleep(self._locks.ttl / 3)
            try:
                held = await self.extend()
            except REDIS_FAILURES as error:
                log.warning("could not extend the lock of %s: %s", self.conversation.id, error)
                continue
            if not held:
                log.warning("lost the lock of %s while replying", self.conversation.id)
                self.lost.set()
                return


class ConversationLocks:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        ttl: float = 30.0,
        wait: float = 300.0,
        poll: float = 0.1,
        clock: Clock | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl = ttl
        self.wait = wait
        self.poll = poll
        self.clock = clock or MonotonicClock()
        self._waiter_ttl = max(2.0, poll * 10)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release_script = redis.register_script(_RELEASE)
        self._extend_script = redis.register_script(_EXTEND)

    async def acquire(
        self, conversation: ConversationKey, *, wait: float | None = None
    ) -> Lease | None:
        """The conversation's lock, waiting in line up to ``wait`` seconds (default:
        ``LOCK_WAIT``; 0: try once, without queueing); None if it could not be had."""
        wait = self.wait if wait is None else wait
        token = secrets.token_hex(16)
        keys = self._lock_keys(conversation)
        clock = self.clock
        deadline = clock.now() + wait
        queue = "1" if wait > 0 else "0"
        args: list[str | int] = [token, _millis(self.ttl), _millis(self._waiter_ttl), queue]
        granted = False
        try:
            while True:
                granted = bool(await self._acquire(keys=keys, args=args))
                if granted:
                    return Lease(self, conversation, token)
                remaining = deadline - clock.now()
                if remaining <= 0:
                    return None
                await clock.sleep(min(self.poll, remaining))
        finally:
            if not granted and wait > 0:
                await self._leave_line(keys, token)

    async def _leave_line(self, keys: list[str], token: str) -> None:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lrem(keys[1], 0, token)
                pipe.hdel(keys[2], token)
                await pipe.execute()
        except REDIS_FAILURES:
            pass  # our liveness deadline runs out and the line skips us

    async def _extend(self, conversation: ConversationKey, token: str) -> bool:
        key = self._keys.lock(conversation)
        return bool(await self._extend_script(keys=[key], args=[token, _millis(self.ttl)]))

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
