"""The lifecycle every fake server shares: an aiohttp app on 127.0.0.1, on a port the
system picks, started and stopped by ``async with`` (or ``start()``/``stop()``).

The fakes (Slack, Discord, an LLM provider) are real HTTP and WebSocket servers
because the clients under test must be proven over real sockets; each only adds its
routes (``_build_app``) and what it does around starting and stopping (``_on_start``,
``_on_stop``). :class:`Signal` is the change notification the fakes' waits use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Self

from aiohttp import web

HOST = "127.0.0.1"


class FakeServer:
    """An aiohttp app listening on ``127.0.0.1:<ephemeral port>`` while started.

    Subclasses build the app in ``_build_app``; ``start()`` refuses to start twice,
    ``stop()`` is a no-op when not started, and the port is given back by ``stop()``.
    """

    handler_cancellation: bool = False
    """aiohttp cancels a handler when its client disconnects (see ``web.AppRunner``)."""
    not_started_error: str = "not started"
    """The message of the RuntimeError ``port`` raises before ``start()``."""

    def __init__(self, *, shutdown_timeout: float = 1.0) -> None:
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    def _build_app(self) -> web.Application:
        """The app with the fake's routes (called by each ``start()``)."""
        raise NotImplementedError

    async def _on_start(self) -> None:
        """Runs once the server listens."""

    async def _on_stop(self) -> None:
        """Runs when ``stop()`` begins, before aiohttp closes the server."""

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("already started")
        app = self._build_app()
        runner = web.AppRunner(
            app,
            handler_cancellation=self.handler_cancellation,
            shutdown_timeout=self._shutdown_timeout,
            access_log=None,
        )
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        await self._on_start()

    async def stop(self) -> None:
        """``_on_stop``, then the server; nothing when it is not started."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self._on_stop()
        await runner.cleanup()
        self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(self.not_started_error)
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, without a trailing slash."""
        return f"http://{HOST}:{self.port}"


class Signal:
    """Wakes every waiter on each change, so waits can re-check a condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_until(self, ready: Callable[[], object]) -> None:
        while not ready():
            await self._event.wait()
