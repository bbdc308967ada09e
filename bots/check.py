"""``chatrelay check``: is everything this process needs there, before it runs?

Settings and the channels file are read as ``run`` reads them; then each
configured dependency is reached once, the way the service reaches it: Redis
(a PING, the embedded server started and stopped when ``REDIS_URL`` is
unset), the model (a one-token request through the real client, so the URL,
key, model name and dialect are all proven), Slack (``auth.test`` and the
scopes the token was granted against the manifest's) and Discord (the token,
and the MESSAGE_CONTENT intent when the rules need it). Each check is bounded
in time and says in one line what it found; the exit code says whether all
is well. Nothing here logs or prints a credential.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TextIO

if TYPE_CHECKING:
    from bots.discord.settings import DiscordSettings
    from bots.slack.settings import SlackSettings
    from core.config import Settings

CHECK_TIMEOUT = 15.0
"""Seconds one dependency may take to answer before its check fails."""

Status = Literal["ok", "FAIL", "skip"]


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    status: Status
    detail: str


Probe = Callable[[], Awaitable[Finding]]


async def run_checks(
    settings: Settings, slack: SlackSettings, discord: DiscordSettings
) -> list[Finding]:
    """Every check, in the order a start needs them; a failure doesn't stop the rest."""
    from bots.discord.preflight import check_discord
    from bots.slack.preflight import check_slack

    findings = [Finding("settings", "ok", "environment and .env read")]
    findings.append(_check_rules(settings))
    probes: list[tuple[str, Probe]] = [
        ("redis", _check_redis),
        ("model", lambda: _check_model(settings)),
        ("slack", lambda: check_slack(slack)),
        ("discord", lambda: check_discord(discord, settings)),
    ]
    for name, probe in probes:
        findings.append(await _bounded(name, probe))
    return findings


def print_table(findings: Sequence[Finding], out: TextIO) -> None:
    width = max(len(f.name) for f in findings)
    for finding in findings:
        out.write(f"{finding.name:<{width}}  {finding.status:<4}  {finding.detail}\n")


def all_well(findings: Sequence[Finding]) -> bool:
    return all(f.status != "FAIL" for f in findings)


async def _bounded(name: str, probe: Probe) -> Finding:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return await probe()
    except TimeoutError:
        return Finding(name, "FAIL", f"no answer within {CHECK_TIMEOUT:g} s")
    except Exception as exc:  # one line per dependency, never a traceback
        return Finding(name, "FAIL", _one_line(exc))


def _check_rules(settings: Settings) -> Finding:
    from core.config import ConfigError
    from core.rules import load_rules

    path = Path(settings.channels_file)
    try:
        rules = load_rules(path)
    except ConfigError as exc:
        return Finding("channels", "FAIL", str(exc))
    if not path.exists():
        return Finding("channels", "ok", f"no {path}: every channel answers mentions only")
    return Finding("channels", "ok", f"{path}: {len(rules.channels)} channel rules")


async def _check_redis() -> Finding:
    from core.state.connection import open_redis
    from core.state.settings import load_state_settings

    state = load_state_settings()
    topology = state.topology
    where = (
        topology.describe()
        if topology.url or topology.sentinels
        else f"embedded, under {state.state_dir}"
    )
    async with open_redis(topology, state.state_dir, 2) as redis:
        started = time.monotonic()
        await redis.ping()
        took = (time.monotonic() - started) * 1000
        info = await redis.info("server")
    if topology.cluster:  # one answer per node: report the oldest version
        versions = sorted({str(node.get("redis_version", "?")) for node in info.values()})
        version = f"{versions[0]} on {len(info)} nodes"
    else:
        version = info.get("redis_version", "?")
    return Finding("redis", "ok", f"{where}: redis {version}, PING {took:.1f} ms")


async def _check_model(settings: Settings) -> Finding:
    from core.llm import ChatMessage, Finish, StreamError, TextDelta
    from core.llm.model import open_model

    providers = settings.providers()
    label = f"{providers[0].model} at {providers[0].base_url}" if providers else "the demo model"
    started = time.monotonic()
    async with open_model(settings) as model:
        messages = [ChatMessage("user", "Reply with the single word: ok")]
        extra = _one_token(providers[0].api if providers else "chat")
        async for event in model.stream(messages, extra=extra):
            if type(event) is StreamError:
                return Finding("model", "FAIL", f"{label}: {event.message}")
            if type(event) in (TextDelta, Finish):
                took = time.monotonic() - started
                return Finding("model", "ok", f"{label}: answered in {took:.2f} s")
    return Finding("model", "FAIL", f"{label}: the stream ended without an answer")


def _one_token(api: str) -> dict[str, int]:
    """The smallest answer each dialect accepts (the Responses API wants 16)."""
    if api == "responses":
        return {"max_output_tokens": 16}
    return {"max_tokens": 1}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
