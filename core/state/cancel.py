"""Stop a reply from any replica.

The Stop button's click may reach a different replica than the one streaming
the reply. Every replica subscribes to one pub/sub channel; ``cancel``
publishes the reply's id and whichever replica is streaming it calls its
``stop``. Delivery takes milliseconds, well inside the second a user waits.

Pub/sub forgets a message nobody was subscribed to, so ``cancel`` also leaves
a short-lived marker key. It covers the two gaps pub/sub has: a Stop pressed
before the reply registered here (checked when it registers) and a Stop sent
while this replica's subscription was reconnecting (checked after every
resubscribe).

Every Redis call here is bounded by ``timeout`` (``REPLY_PATH_TIMEOUT``), so a
paused or partitioned Redis degrades the bus exactly as a refused connection
does, after at most that long: ``watching`` skips the early-Stop check (with a
warning) and the reply runs; ``cancel`` still stops a reply streaming in this
process and returns False; the listener counts the failure as an outage and
keeps reconnecting in its own task, which no reply ever waits on. A Stop
whose ``cancel`` timed out may still take effect when Redis resumes: it had
been sent, and the resumed server stores its marker and publishes it.

On a Redis Cluster the bus uses sharded pub/sub (``SPUBLISH``/``SSUBSCRIBE``,
Redis 7): a plain ``PUBLISH`` there is broadcast over the cluster bus to every
node, while a sharded channel lives on the one master that owns its slot, and
its subscribers follow that slot when a replica is promoted (the listener's
reconnect subscribes anew, at the slot's new owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Protocol

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.state.connection import REDIS_FAILURES, REPLY_PATH_TIMEOUT, bounded
from core.state.keys import Keys
from core.state.topology import RedisClient, is_cluster

log = logging.getLogger(__name__)

POLL = 1.0
"""Seconds the listener waits for a message before looking again."""


class Stoppable(Protocol):
    """What can be cancelled: ``core.reply.engine.Reply`` is one."""

    def stop(self, state: str = "stopped", reason: str | None = None) -> None: ...


class CancelBus:
    """One per replica: ``async with CancelBus(redis, keys) as bus: ...``."""

    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        marker_ttl: int = 3600,
        reconnect_delay: float = 0.5,
        timeout: float = REPLY_PATH_TIMEOUT,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.marker_ttl = marker_ttl
        self.timeout = timeout
        self._reconnect_delay = reconnect_delay
        self._channel = keys.cancel_channel()
        self._watched: dict[str, Stoppable] = {}
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe (confirmed: no Stop published after this returns is missed)."""
        if self._listener is None:
            pubsub = await self._subscribe()
            self._listener = asyncio.create_task(self._listen(pubsub))

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None

    async def __aenter__(self) -> CancelBus:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @contextlib.asynccontextmanager
    async def watching(self, reply_id: str, reply: Stoppable) -> AsyncIterator[None]:
        """While inside, a ``cancel(reply_id)`` from any replica stops ``reply``."""
        self._watched[reply_id] = reply
        try:
            try:
                marker = await bounded(
                    self._redis.get(self._keys.cancel_marker(reply_id)), self.timeout
                )
            except REDIS_FAILURES as exc:
                log.warning("could not check for an early Stop of %s: %s", reply_id, exc)
                marker = None
            if marker is not None:
                reply.stop("stopped", _reason(marker))
            yield
        finally:
            if self._watched.get(reply_id) is reply:
                del self._watched[reply_id]

    async def cancel(self, reply_id: str, reason: str | None = None) -> bool:
        """Stop ``reply_id`` wherever it streams. False if Redis could not be told
        (then only a reply streaming in this process was stopped)."""
        local = self._watched.get(reply_id)
        if local is not None:
            local.stop("stopped", reason)
        payload = json.dumps({"reply": reply_id, "reason": reason})
        try:
            await bounded(self._publish(reply_id, payload), self.timeout)
        except REDIS_FAILURES as exc:
            log.warning("could not publish the Stop of %s: %s", reply_id, exc)
            return False
        return True

    async def _publish(self, reply_id: str, payload: str) -> None:
        marker = self._keys.cancel_marker(reply_id)
        if is_cluster(self._redis):
            # The marker's slot and the channel's differ, so no transaction; the
            # marker goes first, so a reply that registers after missing the
            # message still finds it.
            await self._redis.set(marker, payload, ex=self.marker_ttl)
            await self._redis.spublish(self._channel, payload)
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(marker, payload, ex=self.marker_ttl)
            pipe.publish(self._channel, payload)
            await pipe.execute()

    async def _subscribe(self) -> _Subscription:
        subscription = _Subscription(self._redis)
        try:
            # Connecting to a paused server succeeds (the kernel accepts) and then
            # the handshake is never answered: bounded, so the loop keeps trying.
            await bounded(subscription.subscribe(self._channel), self.timeout)
            for _ in range(5):
                message = await subscription.get_message(POLL)
                if message is not None and message["type"] == "subscribe":
                    return subscription
            raise RedisTimeoutError("no confirmation of the cancel subscription")
        except BaseException:
            await subscription.aclose()
            raise

    async def _listen(self, pubsub: _Subscription | None) -> None:
        outage = False
        try:
            while True:
                try:
                    if pubsub is None:
                        pubsub = await self._subscribe()
                        await self._resubscribed(outage)
                        outage = False
                    # redis-py reconnects a dropped subscription inside get_message,
                    # and that handshake has no timeout of its own: bounded, so a
                    # paused server turns into an outage this loop handles.
                    message = await bounded(pubsub.get_message(POLL), POLL + self.timeout)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        self._deliver(message["data"])
                    elif message["type"] == "subscribe":
                        # redis-py reconnected and resubscribed by itself.
                        await self._resubscribed(outage)
                        outage = False
                except REDIS_FAILURES as exc:
                    if not outage:
                        outage = True
                        log.warning(
                            "Redis is unreachable (%s): Stop works on this replica only", exc
                        )
                    if pubsub is not None:
                        with contextlib.suppress(*REDIS_FAILURES):
                            await pubsub.aclose()
                        pubsub = None
                    await asyncio.sleep(self._reconnect_delay)
        finally:
            if pubsub is not None:
                with contextlib.suppress(*REDIS_FAILURES):
                    await pubsub.aclose()

    async def _resubscribed(self, after_outage: bool) -> None:
        """The subscription is active (again): every Stop from now on arrives as a
        message, and every Stop sent while it was down left a marker."""
        await self._check_markers()
        if after_outage:
            log.info("Redis is back: Stop works across replicas again")

    def _deliver(self, data: Any) -> None:
        try:
            message = json.loads(data)
            reply_id = message["reply"]
            reason = message.get("reason")
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring a malformed cancel message: %.80r", data)
            return
        target = self._watched.get(reply_id) if isinstance(reply_id, str) else None
        if target is not None:
            target.stop("stopped", reason if isinstance(reason, str) else None)

    async def _markers(self, ids: list[str]) -> list[Any]:
        """The markers of ``ids``: one round trip on one server; on a cluster, the
        pipeline is split by node (the markers' slots differ, so no MGET)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for reply_id in ids:
                pipe.get(self._keys.cancel_marker(reply_id))
            return list(await pipe.execute())

    async def _check_markers(self) -> None:
        ids = list(self._watched)
        if not ids:
            return
        markers = await bounded(self._markers(ids), self.timeout)
        for reply_id, marker in zip(ids, markers, strict=True):
            target = self._watched.get(reply_id)
            if marker is not None and target is not None:
                target.stop("stopped", _reason(marker))


def _reason(marker: bytes | str) -> str | None:
    try:
        reason = json.loads(marker).get("reason")
    except (ValueError, AttributeError):
        return None
    return reason if isinstance(reason, str) else None


_PLAIN_KINDS = {"ssubscribe": "subscribe", "smessage": "message", "sunsubscribe": "unsubscribe"}


class _Subscription:
    """One channel's subscription, plain (one server) or sharded (a cluster),
    with the sharded kinds of message named as the plain ones."""

    def __init__(self, redis: RedisClient) -> None:
        self._pubsub: PubSub = redis.pubsub()

    async def subscribe(self, channel: str) -> None:
        if isinstance(self._pubsub, ClusterPubSub):
            await self._pubsub.ssubscribe(channel)
        else:
            await self._pubsub.subscribe(channel)

    async def get_message(self, poll: float) -> dict[str, Any] | None:
        if not isinstance(self._pubsub, ClusterPubSub):
            message: dict[str, Any] | None = await self._pubsub.get_message(timeout=poll)
            return message
        sharded = await self._pubsub.get_sharded_message(timeout=poll)
        if sharded is None:
            return None
        kind = sharded["type"]
        kind = kind.decode() if isinstance(kind, bytes) else kind
        return {**sharded, "type": _PLAIN_KINDS.get(kind, kind)}

    async def aclose(self) -> None:
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
