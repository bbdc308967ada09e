"""Starts the Slack adapter: Socket Mode with an app token, else HTTP mode.

HTTP mode serves ``POST /slack/events`` on ``PORT``; Bolt verifies every
request's signature with ``SLACK_SIGNING_SECRET`` and acks at once, and the
reply runs after the ack, so Slack's 3-second deadline is never at risk.
Several HTTP-mode replicas behind a load balancer share state through Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.bot import SlackBot
from bots.slack.settings import SlackSettings
from bots.slack.sink import finalise_orphan
from core.config import Settings
from core.llm.client import LLMClient
from core.pacing import Pacing
from core.responder import Responder
from core.rules import ChannelRules
from core.state.inflight import INTERRUPTED_REASON, InflightRecord
from core.state.store import State

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


@asynccontextmanager
async def slack_app(
    settings: SlackSettings, core: Settings, state: State, llm: LLMClient, rules: ChannelRules
) -> AsyncIterator[tuple[AsyncApp, SlackBot]]:
    """The Bolt app with chatrelay's listeners, and the orphan sweeper running."""
    assert settings.slack_bot_token is not None
    token = settings.slack_bot_token.get_secret_value()
    client = AsyncWebClient(token=token, base_url=settings.slack_api_url)
    auth = await client.auth_test()
    secret = settings.slack_signing_secret
    app = AsyncApp(
        client=client,
        signing_secret=secret.get_secret_value() if secret else "unused-in-socket-mode",
        request_verification_enabled=not settings.socket_mode,
    )
    bot = SlackBot(
        settings=settings,
        core=core,
        state=state,
        responder=Responder(state, llm, pacing=Pacing(min_interval=settings.slack_edit_interval)),
        rules=rules,
        client=client,
        bot_user_id=str(auth["user_id"]),
        bot_id=str(auth.get("bot_id") or ""),
    )
    bot.register(app)

    async def finalise(record: InflightRecord) -> None:
        target = record.target
        if target.get("ts"):
            await finalise_orphan(
                client, target["channel"], target["ts"], record.text, INTERRUPTED_REASON
            )

    sweeper = asyncio.create_task(state.inflight.run_sweeper({"slack": finalise}))
    try:
        yield app, bot
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)


def http_routes(app: AsyncApp) -> web.Application:
    """An aiohttp application serving Slack's Events API and interactivity."""

    async def events(request: web.Request) -> web.Response:
        response = await app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(response)

    web_app = web.Application()
    web_app.router.add_post(EVENTS_PATH, events)
    return web_app


async def run_slack(
    settings: SlackSettings, core: Settings, state: State, llm: LLMClient, rules: ChannelRules
) -> None:
    """Serve Slack until cancelled."""
    async with slack_app(settings, core, state, llm, rules) as (app, _):
        if settings.socket_mode:
            assert settings.slack_app_token is not None
            handler = AsyncSocketModeHandler(app, settings.slack_app_token.get_secret_value())
            log.info("Slack: Socket Mode")
            await handler.connect_async()  # type: ignore[no-untyped-call]
            try:
                await asyncio.Event().wait()
            finally:
                await handler.close_async()  # type: ignore[no-untyped-call]
            return
        runner = web.AppRunner(http_routes(app))
        await runner.setup()
        site = web.TCPSite(runner, port=settings.port)
        await site.start()
        log.info("Slack: HTTP mode on port %d%s", settings.port, EVENTS_PATH)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
