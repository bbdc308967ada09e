"""Counts chatrelay's Redis traffic from the client side, for ``bench.production``.

A benchmark-only shim, installed by patching two redis-py methods for the
whole process (nothing in ``core`` changes):

- **round trips**: every ``send_packed_command`` of an asyncio connection is
  one request written to Redis whose answer is then awaited: one command, or
  a whole pipeline (MULTI … EXEC included) in one write. Connection set-up
  (``CLIENT SETINFO``, ``SELECT``) and health checks are counted too.
- **commands**: one per ``Redis.execute_command``; a pipeline counts the
  commands it queued (plus MULTI and EXEC for a transaction). On a Redis
  Cluster the same, through ``RedisCluster.execute_command`` and
  ``ClusterPipeline.execute`` (whose commands go to several nodes: one round
  trip per node, sent at once).

Each round trip is labelled with its first command, and an ``EVALSHA`` with
the name of the Lua script whose SHA1 it carries (every Lua source string of
the ``core.state`` modules is hashed once at install), so the figures say
which part of chatrelay spends them. Counts go into bins of ``BIN`` seconds of
``time.monotonic()`` (the clock the fakes in other processes stamp with, one
clock per machine on Linux), so a window of the run can be read afterwards.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from redis.asyncio.client import Pipeline, Redis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection

BIN = 0.1
"""Seconds per bin."""


class RedisCounter:
    def __init__(self) -> None:
        self.round_trips: Counter[tuple[str, int]] = Counter()
        """(label, bin) -> round trips."""
        self.commands: Counter[int] = Counter()
        """bin -> commands sent."""
        self.scripts: dict[bytes, str] = {}
        """SHA1 (hex, as sent) -> ``module.NAME`` of the Lua source."""
        self._undo: list[tuple[type, str, Any]] = []

    # ------------------------------------------------------------------ install

    def install(self) -> None:
        self.scripts = lua_scripts()
        counter = self

        send = AbstractConnection.send_packed_command
        execute = Redis.execute_command
        pipeline = Pipeline.execute

        async def send_packed_command(
            conn: AbstractConnection, command: Any, check_health: bool = True
        ) -> None:
            counter.round_trips[(counter.label(command), int(time.monotonic() / BIN))] += 1
            await send(conn, command, check_health)

        async def execute_command(client: Redis, *args: Any, **options: Any) -> Any:
            counter.commands[int(time.monotonic() / BIN)] += 1
            return await execute(client, *args, **options)

        async def pipeline_execute(pipe: Pipeline, raise_on_error: bool = True) -> Any:
            queued = len(pipe.command_stack) + (2 if pipe.is_transaction else 0)
            counter.commands[int(time.monotonic() / BIN)] += queued
            return await pipeline(pipe, raise_on_error)

        cluster_execute = RedisCluster.execute_command
        cluster_pipeline = ClusterPipeline.execute

        async def cluster_execute_command(client: RedisCluster, *args: Any, **options: Any) -> Any:
            counter.commands[int(time.monotonic() / BIN)] += 1
            return await cluster_execute(client, *args, **options)

        async def cluster_pipeline_execute(
            pipe: ClusterPipeline, raise_on_error: bool = True, allow_redirections: bool = True
        ) -> Any:
            counter.commands[int(time.monotonic() / BIN)] += len(pipe)
            return await cluster_pipeline(pipe, raise_on_error, allow_redirections)

        for owner, name, new in (
            (AbstractConnection, "send_packed_command", send_packed_command),
            (Redis, "execute_command", execute_command),
            (Pipeline, "execute", pipeline_execute),
            (RedisCluster, "execute_command", cluster_execute_command),
            (ClusterPipeline, "execute", cluster_pipeline_execute),
        ):
            self._undo.append((owner, name, owner.__dict__[name]))
            setattr(owner, name, new)

    def uninstall(self) -> None:
        for owner, name, old in reversed(self._undo):
            setattr(owner, name, old)
        self._undo.clear()

    def reset(self) -> None:
        self.round_trips.clear()
        self.commands.clear()

    # ------------------------------------------------------------------ reading

    def label(self, command: bytes | str | Iterable[bytes]) -> str:
        """The first command of a packed request (``EVALSHA <script>`` for scripts)."""
        if isinstance(command, str):
            head = command.encode()[:160]
        elif isinstance(command, bytes):
            head = command[:160]
        else:
            head = b""
            for piece in command:
                head += piece
                if len(head) >= 160:
                    break
        parts = head.split(b"\r\n")
        # *N, $len, NAME, $len, ARG1 ...
        name = parts[2].upper() if len(parts) > 2 else b"?"
        if name == b"EVALSHA" and len(parts) > 4:
            return "EVALSHA " + self.scripts.get(parts[4], parts[4][:8].decode(errors="replace"))
        return name.decode(errors="replace")

    def window(self, start: float, end: float) -> tuple[Counter[str], int]:
        """Round trips per label and commands sent with ``start <= t < end``."""
        lo, hi = int(start / BIN), int(end / BIN)
        trips: Counter[str] = Counter()
        for (label, b), n in self.round_trips.items():
            if lo <= b < hi:
                trips[label] += n
        commands = sum(n for b, n in self.commands.items() if lo <= b < hi)
        return trips, commands


def lua_scripts() -> dict[bytes, str]:
    """SHA1 of every Lua source string in ``core.state``'s modules -> its name."""
    import core.state

    out: dict[bytes, str] = {}
    for info in pkgutil.iter_modules(core.state.__path__):
        module = importlib.import_module(f"core.state.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, str) and "redis.call" in value:
                sha = hashlib.sha1(value.encode()).hexdigest().encode()
                out[sha] = f"{info.name}.{name}"
    return out
