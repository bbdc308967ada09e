"""Writes that need no round trip of their own: they ride along with the next one.

Every platform update costs a budget acquire (a Lua call the reply must wait
for) and, once the platform confirmed it, a write of the reply's in-flight
record (which nobody waits for). Sent apart, that is two round trips per
update. ``WriteBatch`` holds such writes for at most ``window`` seconds: the
next budget acquire of *any* reply in the process carries them in its
pipeline, and if none comes in time one pipeline carries them all. At load
(hundreds of updates a second) the records ride for free; when idle they
cost one round trip for all that are waiting, ``window`` later than before,
so a record lags what its message shows by at most that.

Calls somebody waits for (the budget's acquires) go out at the end of the
turn of the event loop they were made in (``call``), in one pipeline with
every other call of that turn and every write waiting: replies that update
together (they do: a burst of replies reads its model in step) share one
round trip instead of one each, and nobody waits longer than a turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from core.state.topology import AnyPipeline, RedisClient

WINDOW = 0.02
"""Seconds a write waits for a round trip to ride along with."""


@dataclass(eq=False)
class _Write:
    script: AsyncScript
    keys: list[Any]
    args: list[Any]
    key: str | None = None
    done: asyncio.Future[Any] = field(default_factory=lambda: _answer())


def _answer() -> asyncio.Future[Any]:
    """A write's answer, its failure marked as seen: the caller who waited for
    it hears it, and one who gave up (its bound passed) needs not."""
    answer = asyncio.get_running_loop().create_future()
    answer.add_done_callback(lambda done: done.cancelled() or done.exception())
    return answer


def add_script(
    pipe: AnyPipeline, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
) -> None:
    """EVALSHA ``script`` in ``pipe``. Not ``script(..., client=pipe)``: that makes
    the pipeline ask ``SCRIPT EXISTS`` first, a round trip of its own every time;
    our scripts are loaded by their first direct call, and one the server forgot
    comes back as ``NoScriptError``, loaded and run again (``WriteBatch.answers``).
    ``execute_command``, because redis-py refuses ``pipe.evalsha`` on a cluster
    lest its keys span slots; ours never do (``core.state.keys``)."""
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


class WriteBatch:
    def __init__(self, redis: RedisClient, window: float = WINDOW, timeout: float = 2.0) -> None:
        self._redis = redis
        self.window = window
        self.timeout = timeout
        """Seconds a pipeline of its own may take (a paused server must not keep it)."""
        self._queue: list[_Write] = []
        self._timer: asyncio.TimerHandle | None = None
        self._turn: asyncio.Handle | None = None  # a call is waiting: flush this turn
        self._flushes: set[asyncio.Task[None]] = set()
        self._by_key: dict[str, set[asyncio.Future[Any]]] = {}  # writes not answered yet

    async def write(
        self,
        script: AsyncScript,
        keys: Sequence[Any],
        args: Sequence[Any],
        within: float,
        key: str | None = None,
    ) -> Any:
        """Run ``script`` in the next round trip; its answer, or what failed it.
        Bounded by ``within`` seconds; a write that times out before it was sent
        is never sent, one already on its way may still land: ``quiet(key)``
        waits for those before a write that must come after them."""
        pending = _Write(script, list(keys), list(args), key)
        self._queue.append(pending)
        if key is not None:
            self._by_key.setdefault(key, set()).add(pending.done)
            pending.done.add_done_callback(lambda done: self._answered(key, done))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self._send)
        async with asyncio.timeout(within):
            return await self._answer_of(pending)

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run ``script`` in a round trip leaving at the end of this turn of the
        loop, with the other calls of the turn and every write waiting; its
        answer, or what failed it. The caller bounds the wait."""
        pending = _Write(script, list(keys), list(args))
        self._queue.append(pending)
        if self._turn is None:
            self._turn = asyncio.get_running_loop().call_soon(self._send)
        return await self._answer_of(pending)

    async def _answer_of(self, pending: _Write) -> Any:
        """``pending``'s answer; one its caller stopped waiting for before it was
        sent is never sent."""
        try:
            return await asyncio.shield(pending.done)
        except BaseException:
            with contextlib.suppress(ValueError):
                self._queue.remove(pending)  # not sent yet: it never will be
                pending.done.cancel()
            raise

    async def quiet(self, key: str, within: float) -> None:
        """Until every write made with ``key`` was answered (at most ``within``
        seconds): a reply's last record must not be overtaken by an older one
        still in a pipeline."""
        waiting = self._by_key.get(key)
        if waiting:
            await asyncio.wait(set(waiting), timeout=within)

    def _answered(self, key: str, done: asyncio.Future[Any]) -> None:
        waiting = self._by_key.get(key)
        if waiting is not None:
            waiting.discard(done)
            if not waiting:
                del self._by_key[key]

    def take(self) -> list[_Write]:
        """The writes waiting, for a pipeline about to go out (``add_to``)."""
        queued, self._queue = self._queue, []
        for handle in (self._timer, self._turn):
            if handle is not None:
                handle.cancel()
        self._timer = self._turn = None
        return queued

    @staticmethod
    def add_to(pipe: AnyPipeline, queued: Sequence[_Write]) -> None:
        for pending in queued:
            add_script(pipe, pending.script, pending.keys, pending.args)

    async def answers(self, queued: Sequence[_Write], results: Sequence[Any]) -> list[Any]:
        """``results``, with the scripts the server had forgotten (a restart, a
        ``SCRIPT FLUSH``, a process's first round trip) loaded once each and
        their calls run again in one pipeline: a burst's first round trip may
        carry hundreds of calls of the same script."""
        forgotten = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if not forgotten:
            return list(results)
        scripts = {queued[i].script.sha: queued[i].script for i in forgotten}
        for script in scripts.values():
            await self._redis.script_load(script.script)
        pipe = self._redis.pipeline(transaction=False)
        self.add_to(pipe, [queued[i] for i in forgotten])
        answered = list(results)
        for i, result in zip(forgotten, await pipe.execute(raise_on_error=False), strict=True):
            answered[i] = result
        return answered

    @staticmethod
    def settle(queued: Sequence[_Write], outcome: Sequence[Any] | BaseException) -> None:
        """Give each write its answer (a list, in order) or the failure of all."""
        for i, pending in enumerate(queued):
            if pending.done.done():
                continue
            if isinstance(outcome, BaseException):
                failure = outcome
                if isinstance(failure, asyncio.CancelledError):
                    failure = ConnectionError("the round trip carrying this write was cancelled")
                pending.done.set_exception(failure)
            elif isinstance(outcome[i], Exception):
                pending.done.set_exception(outcome[i])
            else:
                pending.done.set_result(outcome[i])

    def _send(self) -> None:
        """The window passed, or a turn with a call in it ended: send what waits."""
        queued = self.take()
        if queued:
            task = asyncio.create_task(self._flush(queued))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, queued: list[_Write]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                if len(queued) == 1:  # alone: no pipeline to build
                    only = queued[0]
                    results = [await only.script(keys=only.keys, args=only.args)]
                else:
                    pipe = self._redis.pipeline(transaction=False)
                    self.add_to(pipe, queued)
                    results = await self.answers(queued, await pipe.execute(raise_on_error=False))
        except BaseException as exc:  # every write hears it; their callers retry
            self.settle(queued, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.settle(queued, results)

    async def aclose(self) -> None:
        """Send what waits now and let the flushes under way finish."""
        queued = self.take()
        if queued:
            await self._flush(queued)
        await asyncio.gather(*self._flushes, return_exceptions=True)
