"""The newest message each channel showed a process, so the next process can
catch up on what reached nobody.

A gateway-style platform (Discord) delivers an event to the processes
connected when it happens, and never again: a message sent between one
process closing its connection and the next one opening it reaches no
process. So a process notes, per channel it answers in, the id of the newest
message it has dealt with, and a process that connects reads the channels of
its partition back and asks the platform for everything after those ids.

One Redis hash per (platform, partition), e.g. a Discord shard: channel id →
``"<message id> <ms>"``, the message id and when (Redis's clock) the channel
was last written. It stays small and forgets on its own:

- ``advance`` only ever moves a channel's id forward (ids are decimal strings
  that grow with time, as Discord's snowflakes do, compared by length and then
  digit by digit: they exceed a float's precision, so never as numbers);
- the hash expires ``window`` seconds after its last write, and entries older
  than that are skipped by ``recent``: after a long outage there is no gap to
  fill that anyone still waits for;
- past ``max_channels`` entries the oldest are dropped at the next write.

Every call is bounded by ``timeout`` and raises one of ``REDIS_FAILURES`` when
Redis does not answer; callers keep this off a reply's path (a cursor is a
safety net: a write that fails is redone with the next one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.state.connection import bounded
from core.state.keys import Keys
from core.state.topology import RedisClient

WINDOW = 3600.0
"""Seconds a channel is remembered after its last message, and how far back a
catch-up reaches."""
MAX_CHANNELS = 1000
"""Channels remembered per partition; beyond, the least recently active go."""
TIMEOUT = 2.0
"""Seconds one call may take."""

# KEYS: the hash. ARGV: window ms, max channels, then channel, message id pairs.
_ADVANCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
for i = 3, #ARGV, 2 do
  local channel, id = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', KEYS[1], channel)
  local old_id = old and string.match(old, '^(%d+) ')
  if old_id and not newer(id, old_id) then id = old_id end
  redis.call('HSET', KEYS[1], channel, id .. ' ' .. string.format('%d', now))
end
if redis.call('HLEN', KEYS[1]) > cap then
  local all = redis.call('HGETALL', KEYS[1])
  local live = {}
  for i = 1, #all, 2 do
    local at = tonumber(string.match(all[i + 1], ' (%d+)$') or '0')
    if now - at > window then
      redis.call('HDEL', KEYS[1], all[i])
    else
      live[#live + 1] = {all[i], at}
    end
  end
  if #live > cap then
    table.sort(live, function(a, b) return a[2] < b[2] end)
    for i = 1, #live - cap do
      redis.call('HDEL', KEYS[1], live[i][1])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""

# KEYS: the hash. Returns {now in ms, field, value, ...}: the clock of the server
# that wrote the entries' times.
_READ = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local answer = redis.call('HGETALL', KEYS[1])
table.insert(answer, 1, string.format('%d', now))
return answer
"""


@dataclass(frozen=True, slots=True)
class Seen:
    """A channel and the newest message a process dealt with there."""

    channel: str
    message: str
    age: float
    """Seconds since the channel's cursor was last written."""


class LastSeen:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        window: float = WINDOW,
        max_channels: int = MAX_CHANNELS,
        timeout: float = TIMEOUT,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.window = window
        self.max_channels = max_channels
        self.timeout = timeout
        self._advance = redis.register_script(_ADVANCE)
        self._read = redis.register_script(_READ)

    async def advance(self, platform: str, partition: str, seen: Mapping[str, str]) -> None:
        """Move each channel's cursor to its message id (unless it is further on)."""
        if not seen:
            return
        for message in seen.values():
            if not message.isdigit():
                raise ValueError(f"message ids are decimal strings, got {message!r}")
        args: list[str | int] = [round(self.window * 1000), self.max_channels]
        for channel, message in seen.items():
            args += [channel, message]
        await bounded(
            self._advance(keys=[self._keys.last_seen(platform, partition)], args=args),
            self.timeout,
        )

    async def recent(self, platform: str, partition: str, limit: int) -> list[Seen]:
        """Up to ``limit`` channels seen within the window, most recently active first.

        One script reads the entries and the time on the server that holds them,
        the clock ``advance`` wrote their times with. (Not TIME and HGETALL in a
        transaction: a cluster client refuses TIME in a pipeline, and would ask
        another node's clock for it.)"""
        key = self._keys.last_seen(platform, partition)
        now_ms, *flat = await bounded(self._read(keys=[key], args=[]), self.timeout)
        now = int(now_ms)
        found = []
        for channel, value in zip(flat[::2], flat[1::2], strict=True):
            message, _, at = _text(value).partition(" ")
            if not message.isdigit() or not at.isdigit():
                continue
            age = max(0, now - int(at)) / 1000
            if age <= self.window:
                found.append(Seen(_text(channel), message, age))
        found.sort(key=lambda seen: seen.age)
        return found[:limit]

    async def forget(self, platform: str, partition: str, channel: str) -> None:
        """A channel there is nothing to catch up on any more (deleted, no access)."""
        await bounded(
            self._redis.hdel(self._keys.last_seen(platform, partition), channel), self.timeout
        )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
