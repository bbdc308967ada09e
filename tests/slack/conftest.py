"""A running Slack adapter against the fake Slack, a fake model and a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from bots.slack.events import SlackEvents
from bots.slack.limits import DEFAULT_LIMITS
from bots.slack.service import Listeners, slack_app
from bots.slack.settings import load_slack_settings
from core.config import load_settings
from core.llm.client import LLMClient
from core.reply.engine import FinalRetry
from core.rules import load_rules
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
    app: object
    listeners: Listeners
    state: State

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
        async with slack_app(
            settings, core, state, llm, load_rules(rules_file), active=active, retry=retry
        ) as (app, listeners):
            yield RunningBot(app, listeners, state)

    return start
