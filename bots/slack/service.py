"""Starts the Slack adapter: Socket Mode with an app token, else HTTP mode.

HTTP mode serves ``POST /slack/events`` on the shared HTTP server (``PORT``);
Bolt verifies every request's signature with ``SLACK_SIGNING_SECRET`` and acks
at once, and the reply runs after the ack, so Slack's 3-second deadline is
never at risk. Several HTTP-mode replicas behind a load balancer share state
through Redis. While the process drains, events get 503 so Slack retries them
on another replica; in Socket Mode the connection is closed for the same end.

While it runs, the adapter also finishes replies other processes left
(``bots.slack.finalise``, from the in-flight sweeper) and answers messages
they handed over while draining (``bots.slack.handover``, from the pickup).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.authorization.async_single_team_authorization import (
    AsyncSingleTeamAuthorization,
)
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bots.slack.api import SafeWebClient
from bots.slack.controls import Controls
from bots.slack.conversations import BotUser, Threads
from bots.slack.events import Agents, SlackEvents
from bots.slack.finalise import finalise_record
from bots.slack.handover import answer_handed_over
from bots.slack.replies import Replies
from bots.slack.settings import SlackSettings
from core.config import ConfigError, Unavailable
from core.reply import RateLimit
from core.rules import RulesSource
from core.service import IntakePolicy, Routes, Services
from core.state import DeferredRequest, InflightRecord

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


@dataclass
class Listeners:
    """A connected app's listeners, room by room."""

    events: SlackEvents
    controls: Controls
    replies: Replies
    rules: RulesSource

    @classmethod
    def build(
        cls, settings: SlackSettings, services: Services, client: SafeWebClient, me: BotUser
    ) -> Listeners:
        state, rules = services.state, services.rules
        policy = IntakePolicy(state, services.core.system_prompt)
        replies = Replies(
            settings=settings,
            client=client,
            state=state,
            policy=policy,
            responder=services.responder,
            threads=Threads(client=client, state=state, me=me),
        )
        agents = Agents(client=client, state=state)
        events = SlackEvents(
            settings=settings,
            client=client,
            state=state,
            rules=rules,
            policy=policy,
            agents=agents,
            replies=replies,
            me=me,
            metrics=services.metrics,
        )
        controls = Controls(client=client, state=state, rules=rules, agents=agents)
        return cls(events, controls, replies, rules)

    def register(self, app: AsyncApp) -> None:
        self.events.register(app)
        self.controls.register(app)

    async def answer_handed_over(self, deferred: DeferredRequest) -> None:
        await answer_handed_over(deferred, self.rules, self.replies)

    async def cancel_replies(self) -> None:
        await self.replies.cancel()


@dataclass
class SlackService:
    app: AsyncApp
    listeners: Listeners
    socket: AsyncSocketModeHandler | None = None
    pickup: asyncio.Task[None] | None = None
    """Answers messages other processes handed over while they drained."""

    async def connected(self) -> bool:
        """Readiness: the Socket Mode connection is up (HTTP mode needs none)."""
        if self.socket is None:
            return True
        return bool(await self.socket.client.is_connected())

    async def stop_intake(self) -> None:
        """Take no more events (Slack redelivers them to other connections), nor
        hand-overs (they are for a process that stays)."""
        if self.pickup is not None:
            self.pickup.cancel()  # awaited at close: it finishes the answers it began
        if self.socket is not None:
            await self.socket.close_async()  # type: ignore[no-untyped-call]
            self.socket = None

    async def close(self) -> None:
        """After the drain: intake is stopped, and the hand-overs taken are answered."""
        await self.stop_intake()
        if self.pickup is not None:
            await asyncio.gather(self.pickup, return_exceptions=True)


class SlackPlatform:
    """Slack, as ``bots.cli`` runs it (``core.service.Platform``)."""

    def __init__(self, settings: SlackSettings) -> None:
        self.settings = settings
        self._app: AsyncApp | None = None
        """The Bolt app the mounted endpoint dispatches to, while ``serve`` runs."""

    @property
    def name(self) -> str:
        return "slack"

    @property
    def configured(self) -> bool:
        return self.settings.configured

    def default_limits(self) -> dict[str, RateLimit]:
        return self.settings.default_limits()

    def mount(self, routes: Routes, draining: Callable[[], bool]) -> None:
        """HTTP mode's ``POST /slack/events``; Socket Mode has no endpoint."""
        if not self.settings.socket_mode:
            routes.add_post(EVENTS_PATH, _events_endpoint(lambda: self._app, draining))

    def serve(self, services: Services) -> AbstractAsyncContextManager[SlackService]:
        return self._serve(services)

    @asynccontextmanager
    async def _serve(self, services: Services) -> AsyncIterator[SlackService]:
        settings = self.settings
        async with _connected(settings, services) as (app, listeners):
            service = SlackService(app, listeners)
            service.pickup = asyncio.create_task(
                services.state.deferred.run_pickup("slack", [""], listeners.answer_handed_over)
            )
            if settings.socket_mode:
                assert settings.slack_app_token is not None
                service.socket = AsyncSocketModeHandler(
                    app, settings.slack_app_token.get_secret_value()
                )
                await service.socket.connect_async()  # type: ignore[no-untyped-call]
                log.info("Slack: Socket Mode connected")
            else:
                self._app = app
                log.info("Slack: HTTP mode, events at %s", EVENTS_PATH)
            try:
                yield service
            finally:
                self._app = None
                await service.close()


@asynccontextmanager
async def _connected(
    settings: SlackSettings, services: Services
) -> AsyncIterator[tuple[AsyncApp, Listeners]]:
    """The Bolt app with chatrelay's listeners, and the orphan sweeper running."""
    assert settings.slack_bot_token is not None
    token = settings.slack_bot_token.get_secret_value()
    client = SafeWebClient(token=token, base_url=settings.slack_api_url)
    auth = await authenticate(client, settings.slack_api_url)
    if services.metrics is not None:
        client.on_error = services.metrics.slack_api_error
    secret = settings.slack_signing_secret
    app = AsyncApp(
        client=client,
        signing_secret=secret.get_secret_value() if secret else "unused-in-socket-mode",
        request_verification_enabled=not settings.socket_mode,
    )
    _seed_authorization(app, auth)
    me = BotUser(str(auth["user_id"]), str(auth.get("bot_id") or ""))
    listeners = Listeners.build(settings, services, client, me)
    listeners.register(app)
    state = services.state

    async def finalise(record: InflightRecord) -> None:
        await finalise_record(client, state.budget, record)

    sweeper = asyncio.create_task(state.inflight.run_sweeper({"slack": finalise}))
    try:
        yield app, listeners
    finally:
        sweeper.cancel()
        # Replies still running (the process drained already, or a test ends) are
        # cancelled as asyncio.run would; their in-flight records stay for a replica.
        await listeners.cancel_replies()
        await asyncio.gather(sweeper, return_exceptions=True)


def _events_endpoint(
    app: Callable[[], AsyncApp | None], draining: Callable[[], bool]
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Slack's Events API and interactivity, answered by the Bolt app ``app()``
    once there is one; 503 (Slack retries) before that and while draining."""

    async def events(request: web.Request) -> web.Response:
        if draining():
            return web.Response(status=503, text="shutting down")
        bolt = app()
        if bolt is None:
            return web.Response(status=503, text="starting")
        response = await bolt.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    return events


async def authenticate(client: SafeWebClient, api_url: str) -> AsyncSlackResponse:
    """``auth.test``, the first call of a start: a refused token is a bad setting
    (one line naming it), an unreachable Slack a dependency that is down; the
    token itself is never in either line."""
    try:
        return await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error", "error") if exc.response is not None else "error"
        raise ConfigError(f"invalid setting SLACK_BOT_TOKEN: Slack refused it ({error})") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unavailable(f"cannot reach Slack at {api_url}: {exc or type(exc).__name__}") from None


def _seed_authorization(app: AsyncApp, auth: AsyncSlackResponse) -> None:
    """Give Bolt the ``auth.test`` answer we got at start. Bolt asks for it on
    every event until its first answer arrives, so a burst of mentions at a
    fresh replica spent one Tier-4 call per event, drew 429s, and the events
    they failed were dropped. Bolt has no public way in: its single-team
    authorization keeps the answer in a public attribute of a middleware held
    in a private list (``tests/slack/test_load.py`` notices if that changes)."""
    for middleware in app._async_middleware_list:
        if isinstance(middleware, AsyncSingleTeamAuthorization):
            middleware.auth_test_result = auth
