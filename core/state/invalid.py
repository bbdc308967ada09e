"""A platform's invalid requests, counted over a sliding window by every replica.

Discord bans an IP for a while once it has answered 10,000 invalid requests
(401, 403, 429) in 10 minutes. Every replica behind one address spends that
allowance, so the count lives in Redis: one hash per platform whose fields are
time slots (``slot`` seconds of Redis's clock each, the clock all replicas
share) holding the invalid answers received in them. The count is the sum of
the slots that overlap the last ``window`` seconds, so it errs by at most one
slot's answers on the high side (the oldest slot counts whole), never low.
Each write prunes the slots that left the window and keeps the hash alive for
one window.

``add`` and ``count`` are one bounded script call each. Callers decide what a
count means (``bots.discord.limits``).
"""

from __future__ import annotations

from core.clock import Clock
from core.state.connection import REPLY_PATH_TIMEOUT, bounded
from core.state.keys import Keys
from core.state.topology import RedisClient

WINDOW = 600.0
"""Seconds Discord counts invalid requests over."""
SLOT = 10.0
"""Seconds per counting slot: the window's resolution."""

# KEYS[1] the hash. ARGV: amount to add, slot (µs), slots per window, now ("" =
# Redis TIME). Returns the sum of the live slots.
_SCRIPT = """
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[4])
end
local slot_us = tonumber(ARGV[2])
local slots = tonumber(ARGV[3])
local current = math.floor(now / slot_us)
local oldest = current - slots + 1
local amount = tonumber(ARGV[1])
if amount > 0 then
  redis.call('HINCRBY', KEYS[1], string.format('%d', current), amount)
  redis.call('PEXPIRE', KEYS[1], string.format('%d', math.floor(slots * slot_us / 1000) + 1000))
end
local all = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #all, 2 do
  if tonumber(all[i]) < oldest then
    redis.call('HDEL', KEYS[1], all[i])
  else
    total = total + tonumber(all[i + 1])
  end
end
return total
"""


class InvalidRequests:
    """The shared sliding count of one platform's invalid requests.

    ``clock``: count time on it instead of Redis's (tests step through windows
    with it; never with replicas on different machines)."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        platform: str,
        *,
        window: float = WINDOW,
        slot: float = SLOT,
        timeout: float = REPLY_PATH_TIMEOUT,
        clock: Clock | None = None,
    ) -> None:
        if slot <= 0 or window < slot:
            raise ValueError("slot must be > 0 and window >= slot")
        self._key = keys.invalid_requests(platform)
        self._slot_us = round(slot * 1_000_000)
        self._slots = max(1, round(window / slot))
        self.window = window
        self.timeout = timeout
        self._clock = clock
        self._script = redis.register_script(_SCRIPT)

    async def add(self, amount: int = 1) -> int:
        """Count ``amount`` invalid answers now; returns the window's count with them.
        Raises ``REDIS_FAILURES`` (bounded by ``timeout``)."""
        return await self._run(amount)

    async def count(self) -> int:
        """The invalid answers of the last window, every replica's."""
        return await self._run(0)

    async def _run(self, amount: int) -> int:
        now = "" if self._clock is None else str(round(self._clock.now() * 1_000_000))
        args: list[int | str] = [amount, self._slot_us, self._slots, now]
        return int(await bounded(self._script(keys=[self._key], args=args), self.timeout))
