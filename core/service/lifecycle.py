"""Graceful shutdown: let replies in flight finish, then finalise the rest.

On SIGTERM a replica stops taking events (the adapters close their intake),
gives streaming replies ``SHUTDOWN_GRACE_S`` to finish, then stops the ones
still running as "interrupted": each keeps its text and shows why it ended.
Messages still being decided on count too: one that was claimed must be
answered or handed over before the process lets go of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from core.reply.engine import Reply

log = logging.getLogger(__name__)

INTERRUPTED_BY_SHUTDOWN = "the service restarted before the reply finished"


class ShuttingDown(Exception):
    """No new replies: the process is going away."""


class ActiveReplies:
    """Every reply streaming in this process, shared by all adapters."""

    def __init__(self) -> None:
        self._replies: set[Reply] = set()
        self._handling = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.accepting = True

    @property
    def count(self) -> int:
        """Replies streaming now. (Deliberately not ``__len__``: an empty registry
        must stay truthy, or ``active or ActiveReplies()`` silently makes a new one.)"""
        return len(self._replies)

    def add(self, reply: Reply) -> None:
        if not self.accepting:
            raise ShuttingDown()
        self._replies.add(reply)
        self._idle.clear()

    def discard(self, reply: Reply) -> None:
        self._replies.discard(reply)
        self._settle()

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """A message is being decided on, its reply not begun: the drain waits
        for it as for a reply. Once draining it ends quickly (its reply is
        refused and the message handed over), so it is never interrupted."""
        self._handling += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._handling -= 1
            self._settle()

    def _settle(self) -> None:
        if not self._replies and not self._handling:
            self._idle.set()

    async def drain(self, grace: float, finalise_within: float = 15.0) -> int:
        """Refuse new replies, wait up to ``grace`` seconds for the running ones,
        then interrupt the rest and wait for them to show it. Returns how many
        were interrupted."""
        self.accepting = False
        log.info(
            "draining: %d replies in flight, %d messages being decided on",
            len(self._replies),
            self._handling,
        )
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
            return 0
        except TimeoutError:
            pass
        left = list(self._replies)
        log.warning("interrupting %d replies still streaming after %.0fs", len(left), grace)
        for reply in left:
            reply.stop("interrupted", INTERRUPTED_BY_SHUTDOWN)
        try:
            async with asyncio.timeout(finalise_within):
                await self._idle.wait()
        except TimeoutError:
            log.error("%d replies could not be finalised in time", len(self._replies))
        return len(left)
