"""Requests a draining process accepted but could not answer, for the next one.

A platform event that reaches a process while it drains (SIGTERM, a deploy)
has already been acknowledged and claimed in dedupe, and the platform will not
deliver it again: Discord never redelivers, and Slack stops retrying once an
event was acknowledged. If the draining process just dropped it, the message
would be lost. So the adapter hands the request over here, with whatever it
needs to answer later (``payload``), and every process serving that platform
runs ``run_pickup`` for its partitions and answers what it finds.

A **partition** says which processes can answer: on Discord a message must be
answered by a process running the shard its guild belongs to (the shard id, as
a string); on Slack any process will do (``""``).

Each partition is a Redis list: ``push`` appends, ``take`` pops from the head
in one ``LPOP`` with a count, so entries come out oldest first and each one
goes to exactly one taker, whichever replica asks. Taking is owning: a process
that dies between ``take`` and its answer loses those entries (milliseconds
for an adapter that starts the reply at once), and an answer that fails is
logged and not retried, because a retry of an answer that got halfway could
reply twice, which users notice more than a rare lost hand-over.

Entries older than ``max_age`` are dropped when taken: a question asked an
hour ago, answered out of the blue, helps nobody (and on Discord the
interaction tokens a payload might carry are dead after 15 minutes anyway).
The list itself expires ``max_age`` after its newest entry, so a partition
nobody serves any more does not keep entries forever.

Payloads may carry credentials (an interaction token): they are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from core.state.connection import COMMAND_TIMEOUT, REDIS_FAILURES
from core.state.keys import Keys
from core.state.topology import RedisClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeferredRequest:
    """One acknowledged request waiting for a process to answer it."""

    platform: str
    partition: str
    """e.g. a Discord shard id as a string; ``""`` when any process will do."""
    payload: Mapping[str, Any]
    """JSON-able: what the adapter needs to answer it."""
    deferred_at: float
    """Wall-clock seconds (epoch) when it was handed over."""

    def to_json(self) -> str:
        """Raises ``TypeError`` or ``ValueError`` for a payload JSON can't hold."""
        return json.dumps(
            {
                "platform": self.platform,
                "partition": self.partition,
                "payload": dict(self.payload),
                "deferred_at": self.deferred_at,
            },
            ensure_ascii=False,
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeferredRequest:
        """Raises ``ValueError`` for anything that isn't an entry ``to_json`` wrote."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        payload = data.get("payload")
        if not isinstance(payload, dict):
            raise ValueError("the payload is not an object")
        deferred_at = data.get("deferred_at")
        if isinstance(deferred_at, bool) or not isinstance(deferred_at, int | float):
            raise ValueError("no time of deferral")
        platform, partition = data.get("platform"), data.get("partition")
        if not isinstance(platform, str) or not isinstance(partition, str):
            raise ValueError("no platform or partition")
        return cls(platform, partition, payload, float(deferred_at))


Answer = Callable[[DeferredRequest], Awaitable[None]]
"""A platform's way to answer a handed-over request. Raising logs the failure;
the request is not tried again."""


class DeferredRequests:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        timeout: float = COMMAND_TIMEOUT,
        max_age: float = 3600.0,
    ) -> None:
        if timeout <= 0 or max_age <= 0:
            raise ValueError("timeout and max_age must be positive")
        self._redis = redis
        self._keys = keys
        self.timeout = timeout
        """Seconds one Redis call may take: a draining process has a deadline, and a
        hung Redis must not hold it past it."""
        self.max_age = max_age

    async def push(self, platform: str, partition: str, payload: Mapping[str, Any]) -> None:
        """Hand ``payload`` over to the next process serving ``platform``/``partition``.

        Raises one of ``REDIS_FAILURES`` (``TimeoutError`` after ``timeout``) when Redis
        is unavailable, so the caller can still tell the user something; ``TypeError``
        or ``ValueError`` for a payload that isn't JSON-able, before touching Redis."""
        entry = DeferredRequest(platform, partition, payload, time.time()).to_json()
        key = self._keys.deferred(platform, partition)
        async with asyncio.timeout(self.timeout):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(key, entry)
                pipe.expire(key, math.ceil(self.max_age))
                await pipe.execute()
        log.info("handed a %s request over to the next process (partition %r)", platform, partition)

    async def take(self, platform: str, partition: str, limit: int = 50) -> list[DeferredRequest]:
        """Up to ``limit`` requests, oldest first, removed for good: no other caller gets
        them. Entries older than ``max_age`` and undecodable ones are dropped with a
        warning. Raises one of ``REDIS_FAILURES`` when Redis is unavailable."""
        if limit < 1:
            return []
        key = self._keys.deferred(platform, partition)
        async with asyncio.timeout(self.timeout):
            raw = await self._redis.lpop(key, limit)
        if not raw:
            return []
        entries = raw if isinstance(raw, list) else [raw]
        now = time.time()
        taken: list[DeferredRequest] = []
        for item in entries:
            try:
                request = DeferredRequest.from_json(item)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                log.warning(
                    "dropping an undecodable deferred %s request (partition %r): %s",
                    platform,
                    partition,
                    exc,
                )
                continue
            age = now - request.deferred_at
            if age > self.max_age:
                log.warning(
                    "dropping a deferred %s request (partition %r) left unanswered for %.0fs",
                    platform,
                    partition,
                    age,
                )
                continue
            taken.append(request)
        return taken

    async def run_pickup(
        self,
        platform: str,
        partitions: Sequence[str],
        answer: Answer,
        interval: float = 2.0,
    ) -> None:
        """Take and answer requests of ``partitions`` now (start-up: the predecessor's
        hand-overs are waiting) and every ``interval`` seconds, until cancelled.

        Each answer runs in its own task, so one long reply doesn't hold the others
        back. Once cancelled, no more are taken, and the answers already started are
        awaited before this returns: they were taken from Redis, and cancelling them
        would lose them (a process that drains refuses and hands them over again)."""
        running: set[asyncio.Task[None]] = set()

        def start(batch: list[DeferredRequest]) -> None:
            for request in batch:
                task = asyncio.create_task(self._answer(request, answer))
                running.add(task)
                task.add_done_callback(running.discard)

        outage = False
        try:
            while True:
                for partition in partitions:
                    # Shielded: cancelled while Redis pops, the entries would be gone from
                    # Redis but never seen here. Whatever the pop returns is answered.
                    taking = asyncio.ensure_future(self.take(platform, partition))
                    try:
                        batch = await asyncio.shield(taking)
                    except asyncio.CancelledError:
                        start(await _leftovers(taking))
                        raise
                    except REDIS_FAILURES as exc:
                        if not outage:
                            outage = True
                            log.warning(
                                "could not take deferred %s requests: %s",
                                platform,
                                str(exc) or type(exc).__name__,
                            )
                        break
                    if outage:
                        outage = False
                        log.info("Redis is back: taking deferred %s requests again", platform)
                    start(batch)
                await asyncio.sleep(interval)
        finally:
            if running:
                await asyncio.shield(asyncio.gather(*running, return_exceptions=True))

    async def _answer(self, request: DeferredRequest, answer: Answer) -> None:
        try:
            await answer(request)
        except Exception:
            # Neither the payload nor its repr: it may hold a credential.
            log.exception(
                "could not answer a deferred %s request (partition %r, deferred %.0fs ago)",
                request.platform,
                request.partition,
                time.time() - request.deferred_at,
            )


async def _leftovers(taking: asyncio.Future[list[DeferredRequest]]) -> list[DeferredRequest]:
    """What a take cut short by cancellation still got (nothing if it failed)."""
    try:
        return await taking
    except REDIS_FAILURES:
        return []


__all__ = ["Answer", "DeferredRequest", "DeferredRequests"]
