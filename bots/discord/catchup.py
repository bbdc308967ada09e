"""Messages sent while no process was connected, answered after a restart.

Discord delivers a message to the gateway sessions open when it is sent, and
never again. A deploy that closes the old process's gateway before the new
one connects (or a crash, or a shard whose session could not be resumed)
leaves a gap: a mention sent then reaches nobody. Resuming the old session in
the new process would replay the gap, but discord.py starts every process
with a fresh IDENTIFY and offers no supported way to hand a session over, so
chatrelay catches up from the channels instead:

- **Cursors.** For each channel the bot answers in (auto-reply channels, DMs,
  channels where it was mentioned or replied to; a channel is followed from
  the first such message on), the id of the newest message the intake has
  dealt with is kept in Redis, per shard (``core.state.lastseen``: bounded,
  forgotten an hour after a channel's last message). Noting a message costs
  the handler nothing: it goes into memory, and a background task writes the
  newest ids about once a second with a bounded wait (and once more when the
  adapter closes, after its gateway). A write that fails is retried with the
  next; a cursor that lags only means a few messages are looked at twice.
- **Catch-up.** When a shard becomes ready on a new session (start-up, or a
  reconnect that could not resume) the cursors of its channels are read back
  and each channel's messages after its cursor fetched (``GET
  /channels/{id}/messages?after=…&limit=100``, a few pages at most, each paid
  from the bot's global budget) and fed, oldest first, through the normal
  intake. The intake claims every message in dedupe before answering, so a
  message the previous process (or a live process of a rolling deploy)
  already answered is not answered again, and one that was not for the bot is
  ignored again.

A message is noted once its fate is decided (ignored, or claimed in dedupe),
never on arrival: a process that dies between the two leaves the message
after the cursor, where the next one finds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

import discord

from bots.discord.handover import PLATFORM, shard_of
from bots.discord.ratelimits import GLOBAL_SCOPE
from core.reply import Budget
from core.state import REDIS_FAILURES
from core.state.lastseen import LastSeen

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 1.0
"""Seconds between two cursor writes: a busy channel costs one write per interval."""
PAGES = 5
"""Pages of 100 messages fetched per channel at most: an hour's gap in a busy
auto-reply channel is worth catching up, an unbounded history is not."""
CHANNELS = 200
"""Channels caught up per shard, the most recently active first."""
FOLLOWED = 10_000
"""Channels this process remembers following; the least recently seen go first."""

Take = Callable[[discord.Message], Coroutine[Any, Any, object]]
"""The intake of one message (``DiscordBot.take`` under the bot's bookkeeping)."""


class CatchUp:
    def __init__(
        self,
        client: discord.Client,
        cursors: LastSeen,
        budget: Budget,
        *,
        take: Take,
        taken: Callable[[int], bool],
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        """``take`` feeds a caught-up message through the intake; ``taken`` says
        whether this process already took a message (live), so it is not
        taken twice here."""
        self._client = client
        self._cursors = cursors
        self._budget = budget
        self._take = take
        self._taken = taken
        self.flush_interval = flush_interval
        self._followed: OrderedDict[int, None] = OrderedDict()
        self._pending: dict[str, dict[int, int]] = {}  # shard -> channel -> newest message id
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        self._failing = False
        self.caught_up = 0
        """Messages fed to the intake by catch-ups (whatever became of them)."""
        self.runs = 0
        """Catch-ups finished (one per shard per new session)."""

    # -- cursors ---------------------------------------------------------------

    def seen(self, message: discord.Message, *, follow: bool) -> None:
        """The intake is done deciding about ``message``. ``follow``: the bot answers
        in its channel, so follow the channel from now on; otherwise the message
        only moves the cursor of a channel already followed."""
        channel = message.channel.id
        if follow:
            self._followed[channel] = None
            self._followed.move_to_end(channel)
            while len(self._followed) > FOLLOWED:
                self._followed.popitem(last=False)
        elif channel not in self._followed:
            return
        guild = message.guild.id if message.guild is not None else None
        shard = str(shard_of(guild, self._client.shard_count or 1))
        pending = self._pending.setdefault(shard, {})
        if message.id > pending.get(channel, 0):
            pending[channel] = message.id
        self._wake.set()
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            await asyncio.sleep(self.flush_interval)

    async def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for shard, seen in pending.items():
            try:
                await self._cursors.advance(
                    PLATFORM, shard, {str(c): str(m) for c, m in seen.items()}
                )
            except REDIS_FAILURES as exc:
                if not self._failing:
                    log.warning("could not note the newest messages seen (retrying): %s", exc)
                self._failing = True
                again = self._pending.setdefault(shard, {})
                for channel, message in seen.items():
                    again[channel] = max(message, again.get(channel, 0))
                self._wake.set()
            else:
                self._failing = False

    # -- catching up -------------------------------------------------------------

    def start(self, shard_id: int) -> None:
        """Shard ``shard_id`` is ready on a new session: catch up in the background."""
        task: asyncio.Task[object] = asyncio.create_task(self.catch_up(shard_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def catch_up(self, shard_id: int) -> int:
        """Feed the intake every message sent after the cursors of the shard's
        channels; returns how many. One catch-up per shard at a time."""
        lock = self._locks.setdefault(shard_id, asyncio.Lock())
        async with lock:
            try:
                return await self._shard(shard_id)
            finally:
                self.runs += 1

    async def _shard(self, shard_id: int) -> int:
        try:
            channels = await self._cursors.recent(PLATFORM, str(shard_id), CHANNELS)
        except REDIS_FAILURES as exc:
            log.warning("Discord: can't catch up shard %s, no cursors: %s", shard_id, exc)
            return 0
        fed = 0
        for seen in channels:
            channel_id = int(seen.channel)
            self._followed[channel_id] = None
            try:
                fed += await self._channel(channel_id, int(seen.message))
            except (discord.NotFound, discord.Forbidden) as exc:
                log.info("Discord: channel %s can't be read any more: %s", channel_id, exc)
                await self._forget(shard_id, seen.channel)
            except discord.HTTPException as exc:
                log.warning("Discord: could not catch up channel %s: %s", channel_id, exc)
        if fed:
            log.info("Discord: caught up %d messages sent while shard %s was away", fed, shard_id)
        return fed

    async def _channel(self, channel_id: int, after_id: int) -> int:
        channel = self._client.get_channel(channel_id)
        if channel is None:
            await self._budget.acquire(GLOBAL_SCOPE)
            channel = await self._client.fetch_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            return 0
        after: discord.abc.Snowflake = discord.Object(after_id)
        fed = 0
        for _ in range(PAGES):
            await self._budget.acquire(GLOBAL_SCOPE)
            page = [m async for m in channel.history(limit=100, after=after, oldest_first=True)]
            for message in page:
                if not self._taken(message.id):
                    fed += 1
                    self._spawn(message)
            if len(page) < 100:
                break
            after = page[-1]
        self.caught_up += fed
        return fed

    def _spawn(self, message: discord.Message) -> None:
        """Each message is handled on its own, as the gateway's events are: a
        reply streaming for a minute must not hold up the messages after it."""
        task: asyncio.Task[object] = asyncio.create_task(self._take(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forget(self, shard_id: int, channel: str) -> None:
        try:
            await self._cursors.forget(PLATFORM, str(shard_id), channel)
        except REDIS_FAILURES as exc:
            log.warning("could not forget channel %s: %s", channel, exc)

    async def aclose(self) -> None:
        """After the gateway closed: stop catching up, write the last cursors."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self._flush()
