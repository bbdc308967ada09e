"""Slack replicas as production runs them, for tests that need several: each one
``SlackPlatform`` mounted and served over Socket Mode with ``Services`` of its own
(its state connection, one ``Responder``), as ``chatrelay run`` serves it, all
sharing one Redis key prefix (and so budgets, dedupe, locks and the in-flight
registry), answered by one fake model that knows which question gets which text.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from bots.slack.limits import DEFAULT_LIMITS
from bots.slack.service import SlackPlatform, SlackService
from bots.slack.settings import load_slack_settings
from core.config import load_settings
from core.llm.client import LLMClient
from core.reply.budget import Limit, LimitTable, Window
from core.reply.engine import FinalRetry
from core.rules import load_rules
from core.service import Responder, Services
from core.service.lifecycle import ActiveReplies
from core.state.settings import load_state_settings
from core.state.store import State, open_state
from tests.fakes.llm_server import FakeLLMServer, FakeResponse, RecordedRequest
from tests.fakes.slack_server import FakeSlack
from tests.fakes.slack_server import Limit as FakeLimit
from tests.fakes.streams import chat_stream, chunk_text, split_events
from tests.invariants import Expected, check_slack


@dataclass
class Replica:
    name: str
    state: State
    service: SlackService
    active: ActiveReplies
    stack: contextlib.AsyncExitStack
    gone: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop_replies(self) -> None:
        """What ``asyncio.run`` does to a process's leftover tasks at exit."""
        await self.service.listeners.cancel_replies()


def answer(
    request: RecordedRequest, questions: dict[str, str], chunk_delay: float = 0.03
) -> FakeResponse:
    """The text ``questions`` maps the request's last user message to, streamed in
    small pieces ``chunk_delay`` seconds apart."""
    asked = request.json["messages"][-1]["content"]
    text = questions[asked.strip()]
    pieces = chunk_text(text, seed=len(text), max_size=6)
    return FakeResponse(chunks=split_events(chat_stream(pieces)), chunk_delay=chunk_delay)


async def start_replica(
    name: str,
    slack: FakeSlack,
    llm: LLMClient,
    redis: str | Mapping[str, Any],
    prefix: str,
    tmp_path: Path,
) -> Replica:
    """``redis``: a ``REDIS_URL``, or the state settings naming a cluster or sentinels."""
    stack = contextlib.AsyncExitStack()
    where = {"redis_url": redis} if isinstance(redis, str) else dict(redis)
    state_settings = load_state_settings(
        **where,
        redis_prefix=prefix,
        inflight_heartbeat=0.2,
        inflight_timeout=1.0,
    )
    state = await stack.enter_async_context(open_state(state_settings, DEFAULT_LIMITS))
    state.inflight.backoff = (0.2, 0.5)
    rules_file = tmp_path / "channels.toml"
    rules_file.write_text("")
    settings = load_slack_settings(
        slack_bot_token="xoxb-test",
        slack_app_token="xapp-test",
        slack_api_url=slack.api_url,
        slack_edit_interval=0.2,
    )
    core = load_settings(llm_base_url="http://unused.invalid/v1", llm_model="m")
    active = ActiveReplies()
    retry = FinalRetry(attempts=3, backoff=0.1, give_up_after=1.5)
    responder = Responder(state, llm, active=active, retry=retry)
    services = Services(core, state, responder, load_rules(rules_file), active)
    platform = SlackPlatform(settings)
    platform.mount(web.Application().router, lambda: not active.accepting)  # none in Socket Mode
    service = await stack.enter_async_context(platform.serve(services))
    return Replica(name, state, service, active, stack)


def squeeze_minutes(slack: FakeSlack, tables: list[LimitTable], seconds: float) -> None:
    """Slack's per-minute tiers (the fake's) and our budgets for them (each
    replica's ``tables``), both counted in ``seconds`` instead of a minute, so a
    test sees a minute's limits in seconds: windows stay windows, GCRA stays
    GCRA, and a window keeps its extra second for calls in flight."""
    tiers = {"chat.startStream": 20, "chat.appendStream": 100, "chat.stopStream": 20}
    tiers["chat.update"] = 50
    for method, count in tiers.items():
        slack.limits[method] = FakeLimit(count, seconds)
        default = DEFAULT_LIMITS[f"slack:*:{method}"]
        squeezed: Limit | Window
        if isinstance(default, Window):
            squeezed = Window(default.count, seconds + 1)
        else:
            squeezed = Limit(default.count, seconds, burst=default.burst)
        for table in tables:
            table.set(f"slack:*:{method}", squeezed)


def assert_answered_once_by_all(
    slack: FakeSlack,
    llm_server: FakeLLMServer,
    replicas: list[Replica],
    expected: dict[str, Expected],
    mentions: int,
) -> None:
    """Every mention in C1 answered once, exactly, without a 429, by replicas that
    all took events, sharing one window of stream starts: 19 streamed, the rest
    posted at once (``squeeze_minutes``' window)."""
    assert not check_slack(slack, "C1", expected)
    assert len(llm_server.requests) == mentions  # no event answered twice
    assert sum(slack.rate_limited.values()) == 0
    served = [sum(r.service.listeners.events.intake.counts.values()) for r in replicas]
    assert all(served), f"every replica took events: {served}"
    starts = [c for c in slack.calls if c.method == "chat.startStream"]
    assert len(starts) == 19
    assert len([c for c in slack.calls if c.method == "chat.postMessage"]) == mentions - 19
