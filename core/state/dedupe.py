"""Exactly one reply per platform event, across retries and replicas.

Slack re-delivers an event it thinks was not acknowledged in time (three more
times, over about five minutes), possibly to another replica; Discord may
deliver to more than one process during a resume. ``claim`` is a ``SET NX``
with an expiry on the event id: the first caller anywhere gets True and
replies, everyone after gets False and drops the event.

When Redis is unreachable, or does not answer within ``timeout`` (a paused or
partitioned server: ``REPLY_PATH_TIMEOUT``), the claim is made in this
process's memory instead, with a warning once per outage: a retry that reaches
the same replica is still caught, and events keep being answered (refusing
them all would be worse than the rare duplicate from a retry landing on
another replica).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from core.state.connection import REDIS_FAILURES, REPLY_PATH_TIMEOUT, bounded
from core.state.keys import Keys
from core.state.replicated import ReplicatedWrites
from core.state.topology import RedisClient

log = logging.getLogger(__name__)

LOCAL_CAPACITY = 10_000
"""Event ids remembered in memory while Redis is away; the oldest go first."""


class Dedupe:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        ttl: int = 86_400,
        timeout: float = REPLY_PATH_TIMEOUT,
        writes: ReplicatedWrites | None = None,
    ) -> None:
        self._redis = redis
        self._writes = writes or ReplicatedWrites(redis)
        """Claims wait for a replica where there are any (``core.state.replicated``)."""
        self._keys = keys
        self.ttl = ttl
        self.timeout = timeout
        self._local: OrderedDict[str, float] = OrderedDict()  # event id -> expiry (monotonic)
        self._degraded = False

    async def claim(self, event_id: str) -> bool:
        """True the first time ``event_id`` is seen (within ``ttl``): handle it.

        Namespace ids by platform (``slack:Ev123``), since platforms' ids may collide.
        """
        try:
            claimed = await bounded(
                self._writes.set(self._keys.dedupe(event_id), b"1", nx=True, ex=self.ttl),
                self.timeout,
            )
        except REDIS_FAILURES as exc:
            if not self._degraded:
                self._degraded = True
                log.warning("Redis is unreachable (%s): event dedupe is per-process", exc)
            return self._claim_locally(event_id)
        if self._degraded:
            self._degraded = False
            log.info("Redis is back: event dedupe is shared again")
        return bool(claimed)

    def _claim_locally(self, event_id: str) -> bool:
        now = time.monotonic()
        local = self._local
        while local and (next(iter(local.values())) <= now or len(local) >= LOCAL_CAPACITY):
            local.popitem(last=False)
        expiry = local.get(event_id)
        if expiry is not None and expiry > now:
            return False
        local[event_id] = now + self.ttl
        return True
