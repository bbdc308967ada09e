"""What a platform adapter is, to the process that runs it.

``bots/cli.py`` composes a list of ``Platform``s: it opens the shared state
with every platform's default limits, builds one ``Responder``, hands each
platform the same ``Services``, and serves until a signal; then it stops
every service's intake, drains the replies in flight and closes them. It
never names an adapter's type, so a new platform is one folder under
``bots/`` plus one line in the list of known platforms.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from core.config import Settings
    from core.reply.budget import RateLimit
    from core.rules import RulesSource
    from core.service.lifecycle import ActiveReplies
    from core.service.responder import Responder
    from core.state.store import State
    from core.telemetry.metrics import ChatrelayMetrics


class Routes(Protocol):
    """Where a platform that receives events over HTTP adds its endpoint (an
    aiohttp router: the process serves one port for health and events)."""

    def add_post(
        self, path: str, handler: Callable[[Any], Awaitable[Any]], **kwargs: Any
    ) -> Any: ...


@dataclass(frozen=True)
class Services:
    """What every adapter is given: the same for all, built once per process."""

    core: Settings
    state: State
    responder: Responder
    rules: RulesSource
    active: ActiveReplies
    metrics: ChatrelayMetrics | None = None


class Service(Protocol):
    """A platform connected and taking events."""

    async def connected(self) -> bool:
        """Readiness: the platform's connection is up (``/readyz``)."""
        ...

    async def stop_intake(self) -> None:
        """Draining (SIGTERM): take no new work that can go elsewhere; replies in
        flight go on. Called once before the drain."""
        ...

    async def close(self) -> None:
        """After the drain: let go of the platform (close connections)."""
        ...


class Platform(Protocol):
    """One platform's adapter, before it connects."""

    @property
    def name(self) -> str:
        """``slack``, ``discord``: the ``platform`` of its replies, metrics and logs."""
        ...

    @property
    def configured(self) -> bool:
        """Whether its credentials are set (an unconfigured platform is not run)."""
        ...

    def default_limits(self) -> Mapping[str, RateLimit]:
        """Its budget scopes' default limits (scope pattern -> limit), merged with
        every other platform's into one table, the same in every process."""
        ...

    def mount(self, routes: Routes, draining: Callable[[], bool]) -> None:
        """Add its HTTP endpoints, if it has any, before the server starts; they
        answer 503 until ``serve`` is ready and while ``draining()``."""
        ...

    def serve(self, services: Services) -> AbstractAsyncContextManager[Service]:
        """Connect and take events until the block ends (after the drain)."""
        ...
