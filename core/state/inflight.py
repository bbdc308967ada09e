"""Replies being streamed right now, so a dead replica's replies get an ending.

A replica that dies mid-reply (deploy, OOM, crash) leaves its platform message
looking half-written forever, with a "streaming…" indicator and a Stop button
that does nothing. So each streaming reply is recorded in Redis with what is
needed to finish it elsewhere (platform, the ids of its message, the text it
shows) and a heartbeat deadline. Any replica's sweeper (at start-up, and every
so often after) claims records whose deadline passed and hands each to the
platform's finaliser, which edits the message to its text plus an
"interrupted" note and removes the indicator.

Claiming is atomic and moves the deadline forward instead of deleting the
record, so exactly one replica finalises an orphan, and if that replica dies
too, the orphan is claimed again later. Deadlines use Redis's clock, the one
clock every replica shares. The record's text is written with every platform
update (``Tracker.update``), so the finaliser shows what the user saw, give or
take the one update in flight when the replica died; recording *before* the
platform call (possible once the message's ids are known) makes it "at least".
A replica cut off from Redis for longer than the timeout is indistinguishable
from a dead one and will find its replies finalised.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from redis.asyncio import Redis

from core.clock import Clock, MonotonicClock
from core.state.connection import REDIS_FAILURES
from core.state.keys import Keys

log = logging.getLogger(__name__)

INTERRUPTED_REASON = "the reply was interrupted: the process writing it stopped"
"""For finalisers to show, e.g. as ``Outcome("interrupted", INTERRUPTED_REASON)``."""

MAX_TRIES = 5
"""Finalising attempts per orphan before it is dropped with an error (the
message may be gone; the platform may keep refusing)."""


@dataclass(frozen=True, slots=True)
class InflightRecord:
    """What another replica needs to finish a reply it didn't stream.

    ``target`` holds the platform's ids for the message being written
    (e.g. ``{"channel": "C1", "ts": "1700.1", "team": "T1"}`` on Slack, or a
    Discord interaction's token), whatever that platform's finaliser needs;
    ``text`` is what message ``index`` of the reply shows now.
    """

    reply_id: str
    platform: str
    target: Mapping[str, str] = field(default_factory=dict)
    text: str = ""
    index: int = 0
    owner: str = ""
    started: float = 0.0
    """Wall-clock seconds (epoch) when the reply started."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "reply_id": self.reply_id,
                "platform": self.platform,
                "target": dict(self.target),
                "text": self.text,
                "index": self.index,
                "owner": self.owner,
                "started": self.started,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> InflightRecord:
        """Raises ``ValueError`` for anything that isn't a record we wrote."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        target = data.get("target", {})
        if not isinstance(target, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in target.items()
        ):
            raise ValueError("bad target")
        try:
            record = cls(
                reply_id=str(data["reply_id"]),
                platform=str(data["platform"]),
                target=target,
                text=str(data.get("text", "")),
                index=int(data.get("index", 0)),
                owner=str(data.get("owner", "")),
                started=float(data.get("started", 0.0)),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or bad field: {exc}") from None
        return record


Finalise = Callable[[InflightRecord], Awaitable[None]]
"""A platform's way to end an orphaned reply's message with an "interrupted"
note. Raising means "try again later"; a message that no longer exists should
count as done (return normally)."""

# KEYS: beats (reply -> deadline ms), records (reply -> JSON)
# ARGV: reply id, timeout ms, record JSON or '' to leave it as it is
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
return 1
"""

# KEYS: beats, records, tries (reply -> attempts)
# ARGV: how many to claim, ms before a claimed orphan may be claimed again
_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now),
                       'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
  out[#out + 1] = redis.call('HINCRBY', KEYS[3], id, 1)
end
return out
"""


def replica_id() -> str:
    """Names this process in records and logs: host, pid and a random part
    (pids repeat across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Tracker:
    """One streaming reply's entry in the registry; made by ``InflightRegistry.track``."""

    def __init__(self, registry: InflightRegistry, record: InflightRecord) -> None:
        self._registry = registry
        self._record = record
        self._dirty = True  # the stored record is behind ours
        self._closed = False  # the reply ended: writing now would resurrect its record

    @property
    def record(self) -> InflightRecord:
        return self._record

    async def update(
        self,
        *,
        text: str | None = None,
        index: int | None = None,
        target: Mapping[str, str] | None = None,
    ) -> None:
        """Record what the reply's message shows (best: what it is about to show,
        before the platform call), so a finaliser can end it with that text.

        Never raises: a reply must not fail because its safety net did.
        """
        if self._closed:
            return
        record = self._record
        self._record = dataclasses.replace(
            record,
            text=record.text if text is None else text,
            index=record.index if index is None else index,
            target=record.target if target is None else dict(target),
        )
        self._dirty = True
        await self._beat()

    async def _beat(self) -> None:
        registry = self._registry
        record = self._record
        payload = record.to_json() if self._dirty else ""
        self._dirty = False
        try:
            await registry._beat_script(
                keys=registry._keys_for(record.platform)[:2],
                args=[record.reply_id, _millis(registry.timeout), payload],
            )
        except REDIS_FAILURES as exc:
            self._dirty = self._dirty or bool(payload)
            log.warning("could not record reply %s as in flight: %s", record.reply_id, exc)

    async def _beat_forever(self) -> None:
        while True:
            await self._registry.clock.sleep(self._registry.heartbeat)
            await self._beat()


class InflightRegistry:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        owner: str | None = None,
        heartbeat: float = 5.0,
        timeout: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        if timeout < 2 * heartbeat:
            raise ValueError("timeout must be at least twice the heartbeat interval")
        self._redis = redis
        self._keys = keys
        self.owner = owner or replica_id()
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.clock = clock or MonotonicClock()
        self._beat_script = redis.register_script(_BEAT)
        self._claim_script = redis.register_script(_CLAIM)

    @contextlib.asynccontextmanager
    async def track(self, record: InflightRecord) -> AsyncIterator[Tracker]:
        """Record ``record`` as streaming until the block ends (however it ends:
        a reply that finished, failed or was stopped had its ending shown)."""
        if not record.owner or not record.started:
            record = dataclasses.replace(
                record, owner=record.owner or self.owner, started=record.started or time.time()
            )
        tracker = Tracker(self, record)
        await tracker._beat()
        beating = asyncio.create_task(tracker._beat_forever())
        try:
            yield tracker
        finally:
            tracker._closed = True
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
            try:
                await self._forget(record.platform, record.reply_id)
            except REDIS_FAILURES as exc:
                log.warning("could not clear in-flight reply %s: %s", record.reply_id, exc)

    async def sweep(self, finalisers: Mapping[str, Finalise], *, limit: int = 100) -> int:
        """Finalise orphans of the platforms in ``finalisers`` (a replica leaves
        other platforms' orphans to replicas that serve them); returns how many."""
        finalised = 0
        for platform, finalise in finalisers.items():
            keys = self._keys_for(platform)
            claimed = await self._claim_script(keys=keys, args=[limit, _millis(self.timeout)])
            for i in range(0, len(claimed), 3):
                reply_id = _text(claimed[i])
                raw, tries = claimed[i + 1], int(claimed[i + 2])
                try:
                    record = InflightRecord.from_json(raw)
                except ValueError as exc:
                    log.warning("dropping undecodable in-flight record %s: %s", reply_id, exc)
                    await self._forget(platform, reply_id)
                    continue
                try:
                    await finalise(record)
                except Exception:
                    if tries >= MAX_TRIES:
                        log.exception("giving up on orphaned reply %s", reply_id)
                        await self._forget(platform, reply_id)
                    else:
                        log.exception("could not finalise orphaned reply %s", reply_id)
                    continue
                log.info("finalised reply %s orphaned by %s", reply_id, record.owner)
                await self._forget(platform, reply_id)
                finalised += 1
        return finalised

    async def run_sweeper(
        self, finalisers: Mapping[str, Finalise], interval: float | None = None
    ) -> None:
        """Sweep now (start-up) and every ``interval`` seconds (default: half the
        timeout) until cancelled. Periodic, because a replica that restarts
        quickly sweeps before its predecessor's heartbeats have expired."""
        interval = self.timeout / 2 if interval is None else interval
        while True:
            try:
                await self.sweep(finalisers)
            except REDIS_FAILURES as exc:
                log.warning("could not sweep for orphaned replies: %s", exc)
            await self.clock.sleep(interval)

    async def _forget(self, platform: str, reply_id: str) -> None:
        beats, records, tries = self._keys_for(platform)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(beats, reply_id)
            pipe.hdel(records, reply_id)
            pipe.hdel(tries, reply_id)
            await pipe.execute()

    def _keys_for(self, platform: str) -> list[str]:
        keys = self._keys
        return [
            keys.inflight_beats(platform),
            keys.inflight_records(platform),
            keys.inflight_tries(platform),
        ]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))
