"""One replica of chatrelay for ``bench.load``: the real Slack or Discord service
in its own OS process, against the fake platform and the model of the benchmark.

Run by ``bench.load`` as ``python -m bench.load_replica '<json config>'``; it
prints ``READY`` once the service takes events, and runs until its stdin
closes (or SIGTERM), then stops the way a test ends a replica: replies still
running are cancelled and the service closes.

Time compression: the service itself runs in real time, so every duration
that paces it is divided by ``scale`` instead: each budget of the default
limit table (``RATE_LIMITS``, windows and intervals divided by ``scale``), the
edit interval (``SLACK_EDIT_INTERVAL``/``DISCORD_EDIT_INTERVAL``, set on the
settings object because their validators refuse less than 0.2 s), the stream
roll-over and the interaction window. Figures taken in real seconds are then
multiplied by ``scale`` (in ``bench.load``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bots.cli import platform_limits
from core.config import Settings, load_settings
from core.llm import LLMClient
from core.llm.model import open_model
from core.reply.budget import Limit, RateLimit, Window
from core.rules import load_rules
from core.service import ActiveReplies, Responder, Services
from core.state.settings import load_state_settings
from core.state.store import State, open_state

DEFAULT_LIMITS = platform_limits()
"""Every adapter's default rate limits, as ``chatrelay run`` has them."""
SLACK_EDIT_INTERVAL = 1.0
SLACK_STREAM_ROLLOVER = 270.0
DISCORD_EDIT_INTERVAL = 1.0
DISCORD_INTERACTION_WINDOW = 840.0


def scaled_spec(limit: RateLimit, scale: float) -> str:
    """``limit`` with its time divided by ``scale``, in ``RATE_LIMITS`` form."""
    per = f"{limit.per / scale:.6f}"
    if isinstance(limit, Window):
        return f"{limit.count}/{per}/window"
    assert isinstance(limit, Limit)
    return f"{limit.count:.6f}/{per}/{limit.burst}"


def scaled_rate_limits(scale: float) -> dict[str, str]:
    """Every default budget, ``scale`` times faster (``RATE_LIMITS``)."""
    return {pattern: scaled_spec(limit, scale) for pattern, limit in DEFAULT_LIMITS.items()}


@contextlib.asynccontextmanager
async def _state(config: dict[str, Any]) -> AsyncIterator[State]:
    settings = load_state_settings(
        redis_url=config["redis_url"],
        redis_prefix=config["prefix"],
        rate_limits=scaled_rate_limits(config["scale"]),
    )
    async with open_state(settings, DEFAULT_LIMITS) as state:
        yield state


def _core(config: dict[str, Any]) -> Settings:
    return load_settings(llm_base_url=config["model_url"], llm_model="bench-model")


async def _until_stopped() -> None:
    """Until stdin closes (the benchmark is done with this replica) or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def eof() -> None:
        await reader.read()
        stop.set()

    watcher = asyncio.create_task(eof())
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def _services(core: Settings, state: State, llm: LLMClient, rules_file: Path) -> Services:
    """What ``chatrelay run`` gives every platform."""
    active = ActiveReplies()
    return Services(
        core, state, Responder(state, llm, active=active), load_rules(rules_file), active
    )


def _ready() -> None:
    print("READY", flush=True)


async def run_slack(config: dict[str, Any], rules_file: Path) -> None:
    from bots.slack.service import SlackPlatform
    from bots.slack.settings import load_slack_settings

    scale = float(config["scale"])
    settings = load_slack_settings(
        slack_bot_token="xoxb-test",
        slack_app_token="xapp-test",
        slack_api_url=config["api_url"],
        slack_native_streaming=config["native"],
        slack_stream_rollover=SLACK_STREAM_ROLLOVER / scale,
    )
    settings.slack_edit_interval = SLACK_EDIT_INTERVAL / scale
    core = _core(config)
    async with (
        _state(config) as state,
        open_model(core) as llm,
        SlackPlatform(settings).serve(_services(core, state, llm, rules_file)) as service,
    ):
        _ready()
        try:
            await _until_stopped()
        finally:
            await service.stop_intake()


async def run_discord(config: dict[str, Any], rules_file: Path) -> None:
    from bots.discord.service import DiscordPlatform
    from bots.discord.settings import load_discord_settings

    scale = float(config["scale"])
    settings = load_discord_settings(
        discord_bot_token=config["token"],
        discord_api_url=config["api_url"],
        discord_gateway_url=config["gateway_url"],
        discord_guild_ids=config["guild_ids"],
        discord_interaction_window=DISCORD_INTERACTION_WINDOW / scale,
    )
    settings.discord_edit_interval = DISCORD_EDIT_INTERVAL / scale
    core = _core(config)
    async with (
        _state(config) as state,
        open_model(core) as llm,
        DiscordPlatform(settings).serve(_services(core, state, llm, rules_file)),
    ):
        _ready()
        await _until_stopped()


def main() -> None:
    config = json.loads(sys.argv[1])
    logging.basicConfig(level=config.get("log_level", "WARNING"), stream=sys.stderr)
    rules_file = Path(config["rules_file"])
    if config["platform"] == "slack":
        asyncio.run(run_slack(config, rules_file))
    else:
        asyncio.run(run_discord(config, rules_file))


if __name__ == "__main__":
    main()
