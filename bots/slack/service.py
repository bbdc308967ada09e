"""Starts the Slack adapter: Socket Mode with an app token, else HTTP mode.

HTTP mode serves ``POST /slack/events`` on the shared HTTP server (``PORT``);
Bolt verifies every request's signature with ``SLACK_SIGNING_SECRET`` and acks
at once, and the reply runs after the ack, so Slack's 3-second deadline is
never at risk. Several HTTP-mode replicas behind a load balancer share state
through Redis. While the process drains, events get 503 so Slack retries them
on another replica; in Socket Mode the connection is closed for the same end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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
from bots.slack.bot import SlackBot
from bots.slack.finalise import finalise_record
from bots.slack.settings import SlackSettings
from core.config import ConfigError, Settings, Unavailable
from core.llm import LLMClient
from core.reply import FinalRetry, Pacing
from core.rules import RulesSource
from core.service import ActiveReplies, Responder
from core.state import InflightRecord, State
from core.telemetry.metrics import ChatrelayMetrics

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


@dataclass
class SlackService:
    app: AsyncApp
    bot: SlackBot
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


@asynccontextmanager
async def slack_app(
    settings: SlackSettings,
    core: Settings,
    state: State,
    llm: LLMClient,
    rules: RulesSource,
    *,
    metrics: ChatrelayMetrics | None = None,
    active: ActiveReplies | None = None,
    retry: FinalRetry | None = None,
) -> AsyncIterator[tuple[AsyncApp, SlackBot]]:
    """The Bolt app with chatrelay's listeners, and the orphan sweeper running."""
    assert settings.slack_bot_token is not None
    token = settings.slack_bot_token.get_secret_value()
    client = SafeWebClient(token=token, base_url=settings.slack_api_url)
    auth = await authenticate(client, settings.slack_api_url)
    secret = settings.slack_signing_secret
    app = AsyncApp(
        client=client,
        signing_secret=secret.get_secret_value() if secret else "unused-in-socket-mode",
        request_verification_enabled=not settings.socket_mode,
    )
    _seed_authorization(app, auth)
    responder = Responder(
        state,
        llm,
        pacing=Pacing(min_interval=settings.slack_edit_interval),
        metrics=metrics,
        active=active,
        retry=retry,
    )
    bot = SlackBot(
        settings=settings,
        core=core,
        state=state,
        responder=responder,
        rules=rules,
        client=client,
        bot_user_id=str(auth["user_id"]),
        bot_id=str(auth.get("bot_id") or ""),
        metrics=metrics,
    )
    bot.register(app)

    async def finalise(record: InflightRecord) -> None:
        await finalise_record(client, state.budget, record)

    sweeper = asyncio.create_task(state.inflight.run_sweeper({"slack": finalise}))
    try:
        yield app, bot
    finally:
        sweeper.cancel()
        # Replies still running (the process drained already, or a test ends) are
        # cancelled as asyncio.run would; their in-flight records stay for a replica.
        await bot.cancel_replies()
        await asyncio.gather(sweeper, return_exceptions=True)


def add_event_routes(
    web_app: web.Application, app: AsyncApp, draining: Callable[[], bool] = lambda: False
) -> None:
    """Serve Slack's Events API and interactivity on ``web_app``."""

    async def events(request: web.Request) -> web.Response:
        if draining():
            return web.Response(status=503, text="shutting down")
        response = await app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    web_app.router.add_post(EVENTS_PATH, events)


def http_routes(app: AsyncApp) -> web.Application:
    """An aiohttp application serving only Slack's events (tests, embedding)."""
    web_app = web.Application()
    add_event_routes(web_app, app)
    return web_app


@asynccontextmanager
async def running_slack(
    settings: SlackSettings,
    core: Settings,
    state: State,
    llm: LLMClient,
    rules: RulesSource,
    web_app: web.Application,
    *,
    metrics: ChatrelayMetrics | None = None,
    active: ActiveReplies | None = None,
    retry: FinalRetry | None = None,
) -> AsyncIterator[SlackService]:
    """Slack connected and taking events until the block ends."""
    async with slack_app(
        settings, core, state, llm, rules, metrics=metrics, active=active, retry=retry
    ) as (app, bot):
        service = SlackService(app, bot)
        service.pickup = asyncio.create_task(
            state.deferred.run_pickup("slack", [""], bot.answer_handed_over)
        )
        if settings.socket_mode:
            assert settings.slack_app_token is not None
            service.socket = AsyncSocketModeHandler(
                app, settings.slack_app_token.get_secret_value()
            )
            await service.socket.connect_async()  # type: ignore[no-untyped-call]
            log.info("Slack: Socket Mode connected")
        else:
            draining = (lambda: not active.accepting) if active else (lambda: False)
            add_event_routes(web_app, app, draining)
            log.info("Slack: HTTP mode, events at %s", EVENTS_PATH)
        try:
            yield service
        finally:
            await service.stop_intake()
            if service.pickup is not None:
                await asyncio.gather(service.pickup, return_exceptions=True)


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
