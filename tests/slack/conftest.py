"""A running Slack adapter against the fake Slack, a fake model and a real Redis,
served as ``chatrelay run`` serves it: one ``Responder`` in the ``Services`` every
platform gets, and ``SlackPlatform`` mounting its endpoint and serving with them
(Socket Mode when the test gives an app token, else HTTP mode)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from redis.asyncio import Redis
from slack_bolt.async_app import AsyncApp

from bots.slack.events import SlackEvents
from bots.slack.limits import DEFAULT_LIMITS
from bots.slack.service import Listeners, SlackPlatform, SlackService
from bots.slack.settings import load_slack_settings
from core.config import load_settings
from core.llm.client import LLMClient
from core.reply.engine import FinalRetry
from core.rules import load_rules
from core.service import Responder, Services
from core.service.lifecycle import ActiveReplies
from core.state.keys import Keys
from core.state.settings import load_state_settings
from core.state.store import State, open_state
from tests.fakes.slack_server import FakeSlack
from tests.state.conftest import keys, redis, redis_url

__all__ = ["keys", "redis", "redis_url"]

SECRET = "test-signing-secret"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(team_id="T1", bot_user_id="UBOT", bot_id="BBOT") as server:
        yield server


@pytest.fixture
async def state(redis_url: str, keys: Keys, redis: Redis) -> AsyncIterator[State]:
    settings = load_state_settings(
        redis_url=redis_url, redis_prefix=keys.prefix, inflight_heartbeat=0.2, inflight_timeout=1.0
    )
    async with open_state(settings, defaults=DEFAULT_LIMITS) as opened:
        yield opened


@dataclass
class RunningBot:
    service: SlackService
    web_app: web.Application
    """Where ``SlackPlatform.mount`` put ``POST /slack/events`` (HTTP mode): a
    test serves it with aiohttp's ``TestServer``."""
    state: State

    @property
    def app(self) -> AsyncApp:
        return self.service.app

    @property
    def listeners(self) -> Listeners:
        return self.service.listeners

    @property
    def events(self) -> SlackEvents:
        return self.listeners.events


@pytest.fixture
def make_bot(
    slack: FakeSlack, state: State, llm: LLMClient, tmp_path: Path
) -> Callable[..., AbstractAsyncContextManager[RunningBot]]:
    @asynccontextmanager
    async def start(
        channels: str = "",
        active: ActiveReplies | None = None,
        retry: FinalRetry | None = None,
        **overrides: object,
    ) -> AsyncIterator[RunningBot]:
        rules_file = tmp_path / "channels.toml"
        rules_file.write_text(channels)
        settings = load_slack_settings(
            slack_bot_token="xoxb-test",
            slack_signing_secret=SECRET,
            slack_api_url=slack.api_url,
            slack_edit_interval=0.2,
            **overrides,
        )
        core = load_settings(llm_base_url="http://unused.invalid/v1", llm_model="m")
        responder = Responder(state, llm, active=active, retry=retry)
        services = Services(core, state, responder, load_rules(rules_file), responder.active)
        platform = SlackPlatform(settings)
        web_app = web.Application()
        platform.mount(web_app.router, lambda: not services.active.accepting)
        async with platform.serve(services) as service:
            if settings.socket_mode:
                await slack.wait_connected(timeout=5)
            yield RunningBot(service, web_app, state)

    return start
