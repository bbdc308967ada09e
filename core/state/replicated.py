"""Writes that must outlive a failover: each is followed by ``WAIT`` for a replica.

Redis replicates asynchronously. A dedupe claim or a lock grab that the master
acknowledged a moment before it died may never reach the replica promoted in
its place; the promoted master then lets a retried event be claimed again, or
a second replica take a held lock, and the user gets two replies. ``WAIT n ms``
blocks until ``n`` replicas have everything this *connection* wrote, so it is
sent in the same pipeline, on the same connection (on a cluster: to the node
that owns the key's slot), right behind the write.

``WAIT`` does not make Redis strongly consistent: a write is still lost if the
master dies after taking it and before a replica copied it, and ``WAIT`` times
out (``REDIS_WAIT_TIMEOUT``) instead of refusing. What it closes is the window
between "the caller acted on the write" and "a replica has it": once ``WAIT``
reports a replica, a failover keeps the write. When none answers in time the
write stands on the master alone (as without ``WAIT``), with a warning once
until replicas acknowledge again; for ``RECHECK`` seconds after that, writes
don't wait at all, so a master whose replica is gone (just after a failover,
say) costs each claim nothing rather than the whole timeout.

With ``replicas=0`` (one server, nothing to wait for) writes go out as before,
costing nothing extra.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from core.state.topology import AnyPipeline, RedisClient

log = logging.getLogger(__name__)

RECHECK = 10.0
"""Seconds writes go without ``WAIT`` after one saw too few replicas."""


class ReplicatedWrites:
    def __init__(self, redis: RedisClient, *, replicas: int = 0, timeout: float = 0.1) -> None:
        self._redis = redis
        self.replicas = replicas
        self.timeout_ms = max(1, round(timeout * 1000))
        self._short = False  # the last WAIT saw fewer replicas than asked for
        self._unwaited_until = 0.0  # monotonic: no WAIT before then

    async def set(
        self, key: str, value: bytes | str, *, nx: bool = False, ex: int | None = None
    ) -> Any:
        """``SET key value [NX] [EX ex]``, kept by ``replicas`` replicas."""
        if not self._waiting():
            return await self._redis.set(key, value, nx=nx, ex=ex)
        return await self._run(key, lambda pipe: pipe.set(key, value, nx=nx, ex=ex))

    async def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` (all ``keys`` in one slot), kept by ``replicas`` replicas."""
        if not self._waiting():
            return await script(keys=keys, args=args)

        def add(pipe: AnyPipeline) -> None:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

        try:
            return await self._run(keys[0], add)
        except NoScriptError:
            # This node never saw the script (new, restarted, or a promoted replica):
            # load it there and go again.
            await self._redis.script_load(script.script)
            return await self._run(keys[0], add)

    async def _run(self, key: str, add: Callable[[AnyPipeline], Any]) -> Any:
        written, acked = await self._send(key, add)
        if isinstance(written, RedisConnectionError | TimeoutError) and isinstance(
            self._redis, RedisCluster
        ):
            # A pipeline that met a dead node hands back its error instead of
            # retrying (we ask for errors as results): re-read the slot map and
            # go once more, to the promoted replica, with WAIT pinned afresh.
            await self._redis.nodes_manager.initialize()
            written, acked = await self._send(key, add)
        if isinstance(written, BaseException):
            raise written
        self._note(acked)
        return written

    async def _send(self, key: str, add: Callable[[AnyPipeline], Any]) -> tuple[Any, Any]:
        wait: dict[str, Any] = {}
        if isinstance(self._redis, RedisCluster):
            # A client that has sent nothing yet has no slot map to find the node in.
            await self._redis.initialize()  # (returns at once once it has one)
            wait["target_nodes"] = self._redis.get_node_from_key(key)  # the write's node
        async with self._redis.pipeline(transaction=False) as pipe:
            add(pipe)
            pipe.execute_command("WAIT", self.replicas, self.timeout_ms, **wait)
            written, acked = await pipe.execute(raise_on_error=False)
        return written, acked

    def _waiting(self) -> bool:
        return self.replicas > 0 and time.monotonic() >= self._unwaited_until

    def _note(self, acked: Any) -> None:
        short = not isinstance(acked, int) or acked < self.replicas
        if short and not self._short:
            log.warning(
                "only %s of %d Redis replicas acknowledged a claim within %d ms: a failover "
                "now could forget it and answer an event twice",
                acked if isinstance(acked, int) else "none",
                self.replicas,
                self.timeout_ms,
            )
        elif not short and self._short:
            log.info("Redis replicas acknowledge claims again")
        self._short = short
        if short:
            self._unwaited_until = time.monotonic() + RECHECK
