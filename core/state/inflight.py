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
from typing import Any

from core.clock import Clock, MonotonicClock, SlimEvent
from core.reply.sink import MessageGone
from core.state.batch import WriteBatch
from core.state.connection import REDIS_FAILURES
from core.state.deferred import DeferredRequests
from core.state.keys import Keys
from core.state.topology import RedisClient

log = logging.getLogger(__name__)

INTERRUPTED_REASON = "the reply was interrupted: the process writing it stopped"
"""For finalisers to show, e.g. as ``Outcome("interrupted", INTERRUPTED_REASON)``."""

FINAL_RETRY_FOR = 3600.0
"""Seconds a final state the platform keeps refusing is retried (by any replica)
before it is dropped with an error; ``INFLIGHT_FINAL_RETRY_FOR`` sets it."""

RETRY_BACKOFF = (2.0, 300.0)
"""First and longest pause between two finalising attempts of one record."""

WRITE_TIMEOUT = 2.0
"""Seconds one registry write may take before it is given up (and redone by the
next beat): a paused Redis must not hold a reply, and the record is a safety
net, not the reply."""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One platform message of a reply: where it is, what it shows, and whether
    it already got its final state (then a finaliser leaves it alone)."""

    target: Mapping[str, str] = field(default_factory=dict)
    text: str = ""
    final: bool = False

    def to_json(self) -> dict[str, object]:
        return {"target": dict(self.target), "text": self.text, "final": self.final}

    @classmethod
    def from_json(cls, data: object) -> MessageRecord:
        if not isinstance(data, dict):
            raise ValueError("message is not an object")
        return cls(
            _targets(data.get("target", {})), str(data.get("text", "")), bool(data.get("final"))
        )


@dataclass(frozen=True, slots=True)
class InflightRecord:
    """What another replica needs to finish a reply it didn't stream.

    ``messages`` holds every platform message of the reply, by index: the
    platform's ids (``target``: e.g. ``{"channel": "C1", "ts": "1700.1"}`` on
    Slack, or a Discord interaction's token), the text it shows and whether it
    is final. ``target``/``text``/``index`` name the last one, for finalisers
    that only ever write one message. ``outcome`` is set when the reply ended
    but its final state could not be delivered: the finaliser shows that
    outcome (and ``messages``' texts are then their final texts), instead of
    "interrupted".
    """

    reply_id: str
    platform: str
    target: Mapping[str, str] = field(default_factory=dict)
    text: str = ""
    index: int = 0
    owner: str = ""
    started: float = 0.0
    """Wall-clock seconds (epoch) when the reply started."""
    messages: tuple[MessageRecord, ...] = ()
    outcome: str = ""
    """``done``, ``stopped``, ``failed`` or ``interrupted`` once the reply ended
    with its final state undelivered; empty while it streams."""
    reason: str = ""
    ended: float = 0.0
    """Wall-clock seconds when the reply ended undelivered (retries count from it)."""
    handover: Mapping[str, Any] = field(default_factory=dict)
    """What the adapter needs to answer the message again (see
    ``core.state.deferred``): a reply that never showed anything is answered
    anew by whichever process takes it, instead of "finalised" into nothing."""
    partition: str = ""

    @property
    def pending(self) -> tuple[tuple[int, MessageRecord], ...]:
        """The messages still to finalise, with their indexes."""
        return tuple((i, m) for i, m in enumerate(self.messages) if not m.final and m.target)

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
                "messages": [m.to_json() for m in self.messages],
                "outcome": self.outcome,
                "reason": self.reason,
                "ended": self.ended,
                "handover": dict(self.handover),
                "partition": self.partition,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> InflightRecord:
        """Raises ``ValueError`` for anything that isn't a record we wrote."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        target = _targets(data.get("target", {}))
        messages = data.get("messages", [])
        if not isinstance(messages, list):
            raise ValueError("bad messages")
        try:
            record = cls(
                reply_id=str(data["reply_id"]),
                platform=str(data["platform"]),
                target=target,
                text=str(data.get("text", "")),
                index=int(data.get("index", 0)),
                owner=str(data.get("owner", "")),
                started=float(data.get("started", 0.0)),
                messages=tuple(MessageRecord.from_json(m) for m in messages),
                outcome=str(data.get("outcome", "")),
                reason=str(data.get("reason", "")),
                ended=float(data.get("ended", 0.0)),
                handover=_mapping(data.get("handover", {})),
                partition=str(data.get("partition", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or bad field: {exc}") from None
        if "messages" not in data and record.target:  # written by an older version
            record = dataclasses.replace(
                record,
                messages=(
                    *(MessageRecord(final=True),) * record.index,
                    MessageRecord(record.target, record.text),
                ),
            )
        return record


def _mapping(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("bad handover")
    return value


def _targets(target: object) -> dict[str, str]:
    if not isinstance(target, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in target.items()
    ):
        raise ValueError("bad target")
    return dict(target)


Finalise = Callable[[InflightRecord], Awaitable[None]]
"""A platform's way to end a reply this replica didn't finish: every message in
``record.pending`` gets its text, the last one ``record.outcome`` (or, when
empty, an "interrupted" note), and no Stop button. Raising ``MessageGone``
means there is nothing left to fix; raising anything else means "try again
later" (with backoff, for ``FINAL_RETRY_FOR``). Platform calls go through the
budget like any other."""

InflightEvents = Callable[[str, str], None]
"""(event, platform) for metrics: ``deferred`` (a final state left for later),
``finalised``, ``retry``, ``dropped``."""

# KEYS: beats (reply -> deadline ms), records (reply -> JSON), done (reply -> until ms)
# A reply in ``done`` was forgotten: a write that was stuck in a paused Redis and
# lands after the forget must not bring its (stale) record back.
# ARGV: reply id, timeout ms, record JSON or '' to leave it as it is
_BEAT = """
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  return 0
end
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
# KEYS: beats, records, tries, done; ARGV: reply id, ms a tombstone lasts
_FORGET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('%d', now))
redis.call('ZADD', KEYS[4], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
redis.call('PEXPIRE', KEYS[4], ARGV[2])
return 1
"""

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


# Moves one record's deadline to ``delay`` ms from now (Redis's clock), if it is
# still there: a record finalised meanwhile by another replica stays gone.
_RESCHEDULE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), ARGV[1])
end
return 1
"""


def replica_id() -> str:
    """Names this process in records and logs: host, pid and a random part
    (pids repeat across containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Tracker:
    """One streaming reply's entry in the registry; made by ``InflightRegistry.track``.

    Recording never holds the reply up: ``update`` and ``confirmed`` change the
    record in memory and wake a writer task, which writes the newest record
    (with a bounded wait) and beats the heartbeat. A Redis that stops answering
    costs the reply nothing; the record catches up when it answers again."""

    def __init__(self, registry: InflightRegistry, record: InflightRecord) -> None:
        self._registry = registry
        self._record = record
        self._dirty = True  # the stored record is behind ours
        self._closed = False  # the reply ended: writing now would resurrect its record
        self._wake = SlimEvent()
        self.settled = False
        """The reply's final state was shown (or its message is gone): forget it."""

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
        """Record where message ``index`` is and what it shows, so a finaliser
        can end it with that text. Returns at once; never raises."""
        record = self._record
        index = record.index if index is None else index
        old = record.messages[index] if index < len(record.messages) else MessageRecord()
        message = MessageRecord(
            old.target if target is None else dict(target),
            old.text if text is None else text,
            old.final,
        )
        self._set(index, message)

    def confirmed(
        self, index: int, text: str | None, final: bool, target: Mapping[str, str] | None = None
    ) -> None:
        """The platform confirmed message ``index`` shows ``text`` (final or not;
        None: a call failed, the text is unchanged) and is at ``target`` (None:
        where it was). The engine's ``Progress``."""
        record = self._record
        old = record.messages[index] if index < len(record.messages) else MessageRecord()
        if text is None:
            text, final = old.text, old.final
        self._set(index, MessageRecord(old.target if target is None else dict(target), text, final))

    def _set(self, index: int, message: MessageRecord) -> None:
        if self._closed:
            return
        messages = list(self._record.messages)
        while len(messages) <= index:
            messages.append(MessageRecord())
        messages[index] = message
        last = len(messages) - 1
        self._record = dataclasses.replace(
            self._record,
            messages=tuple(messages),
            index=last,
            target=messages[last].target,
            text=messages[last].text,
        )
        self._dirty = True
        self._wake.set()

    async def defer_final(self, outcome: str, reason: str, finals: Mapping[int, str]) -> None:
        """The reply ended but the platform refused its final state: leave the
        record with the outcome and each unfinished message's final text, due
        at once, for whichever replica sweeps next (this one included)."""
        record = self._record
        messages = list(record.messages)
        for index, text in finals.items():
            while len(messages) <= index:
                messages.append(MessageRecord())
            messages[index] = MessageRecord(messages[index].target, text, False)
        self._record = dataclasses.replace(
            record,
            messages=tuple(messages),
            outcome=outcome,
            reason=reason,
            ended=time.time(),
            text=messages[-1].text if messages else record.text,
        )
        self._closed = True
        await self._registry._write(self._record, due_in=0.0)

    async def _beat(self, batched: bool = False) -> None:
        registry = self._registry
        record = self._record
        payload = record.to_json() if self._dirty else ""
        self._dirty = False
        try:
            await registry._store(record, payload, due_in=registry.timeout, batched=batched)
        except REDIS_FAILURES as exc:
            self._dirty = self._dirty or bool(payload)
            registry._outage_seen = True  # our own beats missed: others' may have too
            log.warning("could not record reply %s as in flight: %s", record.reply_id, exc)

    async def _write_forever(self) -> None:
        """Write the record whenever it changed, and beat at least every heartbeat."""
        clock = self._registry.clock
        while not self._closed:
            await clock.wait(self._wake, self._registry.heartbeat)
            self._wake.clear()
            if self._closed:
                return
            await self._beat(batched=True)


class InflightRegistry:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        owner: str | None = None,
        heartbeat: float = 5.0,
        timeout: float = 30.0,
        clock: Clock | None = None,
        final_retry_for: float = FINAL_RETRY_FOR,
        backoff: tuple[float, float] = RETRY_BACKOFF,
        write_timeout: float = WRITE_TIMEOUT,
        events: InflightEvents | None = None,
        deferred: DeferredRequests | None = None,
    ) -> None:
        if timeout < 2 * heartbeat:
            raise ValueError("timeout must be at least twice the heartbeat interval")
        self._redis = redis
        self._keys = keys
        self.owner = owner or replica_id()
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.clock = clock or MonotonicClock()
        self.final_retry_for = final_retry_for
        self.backoff = backoff
        self.write_timeout = write_timeout
        self.events = events
        self.deferred = deferred
        self.batch: WriteBatch | None = None
        """Where streaming writes wait for a round trip to ride along with."""
        self.finals_waiting: Callable[[str, int], None] | None = None
        """Told after every sweep, per platform: how many replies' final states
        some replica tried to show and could not yet (fleet-wide; ``waiting``)."""
        self._quiet_until = 0.0
        self._outage_seen = False
        self._unsettled: dict[str, str] = {}  # finished replies not yet forgotten: id -> platform
        self._clearing: asyncio.Task[None] | None = None  # the one pass retrying them
        self._beat_script = redis.register_script(_BEAT)
        self._claim_script = redis.register_script(_CLAIM)
        self._reschedule_script = redis.register_script(_RESCHEDULE)
        self._forget_script = redis.register_script(_FORGET)

    @contextlib.asynccontextmanager
    async def track(self, record: InflightRecord) -> AsyncIterator[Tracker]:
        """Record ``record`` as streaming until the block ends.

        The record is forgotten only when the reply's final state was shown
        (``tracker.settled``) or left for later (``defer_final``). A reply that
        ends any other way (cancelled by a shutdown, an exception) keeps its
        record, made due at once, so a replica finalises it: cancellation never
        deletes a record that has no final state."""
        if not record.owner or not record.started:
            record = dataclasses.replace(
                record, owner=record.owner or self.owner, started=record.started or time.time()
            )
        tracker = Tracker(self, record)
        await tracker._beat()
        writing = asyncio.create_task(tracker._write_forever())
        try:
            yield tracker
        finally:
            deferred = tracker._closed
            tracker._closed = True
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
            if tracker.settled:
                await self._forget_own(record)
            elif not deferred:
                log.warning(
                    "reply %s ended without its final state: left for a replica to finalise",
                    record.reply_id,
                )
                await self._write(tracker.record, due_in=0.0)

    async def _write(self, record: InflightRecord, *, due_in: float) -> None:
        """Store ``record`` due in ``due_in`` seconds; bounded, never raises. After
        any streaming write of the reply still on its way: an older record landing
        later would push the due time back."""
        if self.batch is not None:
            await self.batch.quiet(record.reply_id, self.write_timeout)
        try:
            await self._store(record, record.to_json(), due_in=due_in)
        except REDIS_FAILURES as exc:
            log.error("could not leave reply %s for a later finalise: %s", record.reply_id, exc)
        else:
            if record.outcome:
                self._event("deferred", record.platform)

    async def _store(
        self, record: InflightRecord, payload: str, *, due_in: float, batched: bool = False
    ) -> None:
        """One bounded write of the beat script: the deadline, and ``payload`` when
        not empty (skipped for a reply already forgotten). Raises ``REDIS_FAILURES``.
        ``batched``: ride along with the next round trip (``core.state.batch``) —
        the streaming writes; a reply's first record and its last are sent alone."""
        keys = self._beat_keys(record.platform, record.reply_id)
        args: list[str | int] = [record.reply_id, _millis(due_in) if due_in > 0 else 0, payload]
        if batched and self.batch is not None:
            await self.batch.write(
                self._beat_script, keys, args, self.write_timeout, key=record.reply_id
            )
            return
        async with asyncio.timeout(self.write_timeout):
            await self._beat_script(keys=keys, args=args)

    async def sweep(self, finalisers: Mapping[str, Finalise], *, limit: int = 100) -> int:
        """Finalise due records of the platforms in ``finalisers`` (a replica leaves
        other platforms' to replicas that serve them); returns how many."""
        finalised = 0
        await self._forget_settled()
        await self._check_reachable(finalisers)
        if self.clock.now() < self._quiet_until:
            return 0  # Redis just came back: owners first get to beat again
        for platform, finalise in finalisers.items():
            # On a cluster the registry is split into partitions (core.state.keys),
            # each claimed on its own; on one server there is one.
            for partition in range(self._keys.inflight_partitions):
                finalised += await self._sweep_partition(platform, partition, finalise, limit)
        return finalised

    async def _check_reachable(self, finalisers: Mapping[str, Finalise]) -> None:
        """Raise ``REDIS_FAILURES`` unless every partition to sweep answers; after
        an outage, start a quiet period once they all do.

        Every heartbeat missed the outage too, so the records of live replies
        look expired. Once Redis answers *us*, owners get a whole timeout to
        beat again: counted from then, not from our last failure, because the
        outage may outlast a timeout (a failover takes seconds). On a cluster a
        dead master is an outage for every partition, not only its own: the
        streaming writes of all replies ride in shared round trips
        (``core.state.batch``), which fail as one. So the partitions are probed
        together before any is claimed; one server has one, probed only after
        an outage (the claim itself tells us otherwise)."""
        partitions = self._keys.inflight_partitions
        if not self._outage_seen and partitions == 1:
            return
        try:
            async with asyncio.timeout(self.write_timeout):
                pipe = self._redis.pipeline(transaction=False)
                for platform in finalisers:
                    for partition in range(partitions):
                        pipe.exists(self._keys.inflight_beats(platform, partition))
                await pipe.execute()
        except REDIS_FAILURES:
            self._outage_seen = True
            raise
        if self._outage_seen:
            self._outage_seen = False
            self._quiet_until = self.clock.now() + self.timeout

    async def _sweep_partition(
        self, platform: str, partition: int, finalise: Finalise, limit: int
    ) -> int:
        finalised = 0
        keys = self._keys_for(platform, partition)
        try:
            async with asyncio.timeout(self.write_timeout):
                claimed = await self._claim_script(keys=keys, args=[limit, _millis(self.timeout)])
        except REDIS_FAILURES:
            self._outage_seen = True  # (see ``_check_reachable``)
            raise
        for i in range(0, len(claimed), 3):
            reply_id = _text(claimed[i])
            raw, tries = claimed[i + 1], int(claimed[i + 2])
            try:
                record = InflightRecord.from_json(raw)
            except ValueError as exc:
                log.warning("dropping undecodable in-flight record %s: %s", reply_id, exc)
                await self._forget(platform, reply_id)
                continue
            if await self._finalise(platform, finalise, record, tries):
                finalised += 1
        return finalised

    async def _finalise(
        self, platform: str, finalise: Finalise, record: InflightRecord, tries: int
    ) -> bool:
        reply_id = record.reply_id
        # A reply that never showed any text: its message is answered anew (after
        # its empty message, if any, is ended), which beats "finalising" nothing.
        answer_anew = (
            not record.outcome
            and not any(m.text for m in record.messages)
            and bool(record.handover)
            and self.deferred is not None
        )
        try:
            if record.pending:
                await finalise(record)
        except MessageGone as exc:
            log.info("reply %s can't be finalised, its message is gone: %s", reply_id, exc)
        except Exception as exc:
            since = record.ended or record.started
            if since and time.time() - since > self.final_retry_for:
                log.error(
                    "giving up on reply %s after %.0fs of finalising attempts: %s",
                    reply_id,
                    time.time() - since,
                    exc,
                )
                self._event("dropped", platform)
                await self._forget(platform, reply_id)
                return False
            first, longest = self.backoff
            delay = min(first * 2.0 ** max(0, tries - 1), longest)
            log.warning(
                "could not finalise reply %s (attempt %d, next in %.0fs): %s",
                reply_id,
                tries,
                delay,
                exc,
            )
            self._event("retry", platform)
            await self._reschedule(platform, reply_id, delay)
            return False
        if answer_anew and self.deferred is not None:
            try:
                await self.deferred.push(platform, record.partition, record.handover)
            except REDIS_FAILURES as exc:
                log.error("reply %s showed nothing and could not be handed over: %s", reply_id, exc)
            else:
                log.info("reply %s showed nothing: its message is answered anew", reply_id)
                self._event("handed_over", platform)
        else:
            log.info(
                "finalised reply %s of %s (%s)",
                reply_id,
                record.owner,
                record.outcome or "interrupted",
            )
            self._event("finalised", platform)
        await self._forget(platform, reply_id)
        return True

    @property
    def unsettled(self) -> int:
        """Finished replies whose records could not be forgotten yet."""
        return len(self._unsettled)

    async def flush(self, within: float) -> bool:
        """Forget the finished replies whose records an outage kept, trying for up
        to ``within`` seconds (a process that exits must not leave them stale for
        another replica to misread); True when none is left."""
        deadline = self.clock.now() + within
        if self._clearing is not None:  # let the pass under way finish, within the deadline
            await asyncio.wait({self._clearing}, timeout=within)
            self._clearing.cancel()
            await asyncio.gather(self._clearing, return_exceptions=True)
            self._clearing = None
        while self._unsettled and self.clock.now() < deadline:
            await self._forget_settled()
            if self._unsettled:
                await self.clock.sleep(min(0.2, max(0.0, deadline - self.clock.now())))
        if self._unsettled:
            log.error(
                "%d finished replies are still recorded as in flight: a replica may "
                "finalise them again",
                len(self._unsettled),
            )
        return not self._unsettled

    async def _forget_own(self, record: InflightRecord) -> None:
        """Forget a finished reply's record. Until it is forgotten the record is
        stale (writes during an outage were lost): a sweeper would finalise a
        finished reply into less than it shows, or answer it again. So a failed
        forget is kept for a retry, which one background pass at a time makes
        for every reply kept so (the sweeper and ``flush`` too). Each reply
        forgets only its own record here: 2,000 replies ending together each
        retrying everybody's made the clean-up quadratic (bench/production.py)."""
        try:
            async with asyncio.timeout(self.write_timeout):
                await self._forget(record.platform, record.reply_id)
        except REDIS_FAILURES as exc:
            log.warning("could not clear finished reply %s yet: %s", record.reply_id, exc)
            self._unsettled[record.reply_id] = record.platform
            return
        if self._unsettled and (self._clearing is None or self._clearing.done()):
            self._clearing = asyncio.create_task(self._forget_settled())

    async def _forget_settled(self) -> None:
        for reply_id, platform in list(self._unsettled.items()):
            try:
                async with asyncio.timeout(self.write_timeout):
                    await self._forget(platform, reply_id)
            except REDIS_FAILURES as exc:
                log.warning("could not clear finished reply %s yet: %s", reply_id, exc)
                return
            self._unsettled.pop(reply_id, None)  # a concurrent flush may have done it

    async def run_sweeper(
        self, finalisers: Mapping[str, Finalise], interval: float | None = None
    ) -> None:
        """Sweep now (start-up) and every ``interval`` seconds (default: a quarter
        of the timeout) until cancelled. Periodic, because a replica that restarts
        quickly sweeps before its predecessor's heartbeats have expired."""
        interval = self.timeout / 4 if interval is None else interval
        while True:
            try:
                await self.sweep(finalisers)
                if self.finals_waiting is not None:
                    for platform in finalisers:
                        self.finals_waiting(platform, await self.waiting(platform))
            except REDIS_FAILURES as exc:
                log.warning("could not sweep for orphaned replies: %s", exc)
            await self.clock.sleep(interval)

    async def waiting(self, platform: str) -> int:
        """Replies of every replica whose final state a finaliser tried to show and
        could not yet (a platform outage, a 429 storm): the records that carry a
        try count. One bounded HLEN."""
        keys = self._keys
        async with asyncio.timeout(self.write_timeout):
            async with self._redis.pipeline(transaction=False) as pipe:
                for partition in range(keys.inflight_partitions):
                    pipe.hlen(keys.inflight_tries(platform, partition))
                return sum(int(count) for count in await pipe.execute())

    async def _reschedule(self, platform: str, reply_id: str, delay: float) -> None:
        partition = self._keys.inflight_partition(reply_id)
        await self._reschedule_script(
            keys=self._keys_for(platform, partition)[:1], args=[reply_id, _millis(delay)]
        )

    async def _forget(self, platform: str, reply_id: str) -> None:
        partition = self._keys.inflight_partition(reply_id)
        await self._forget_script(
            keys=[
                *self._keys_for(platform, partition),
                self._keys.inflight_done(platform, partition),
            ],
            args=[reply_id, _millis(self.final_retry_for)],
        )

    def _beat_keys(self, platform: str, reply_id: str) -> list[str]:
        partition = self._keys.inflight_partition(reply_id)
        return [
            *self._keys_for(platform, partition)[:2],
            self._keys.inflight_done(platform, partition),
        ]

    def _event(self, event: str, platform: str) -> None:
        if self.events is not None:
            self.events(event, platform)

    def _keys_for(self, platform: str, partition: int) -> list[str]:
        keys = self._keys
        return [
            keys.inflight_beats(platform, partition),
            keys.inflight_records(platform, partition),
            keys.inflight_tries(platform, partition),
        ]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))
