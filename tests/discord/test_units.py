"""The adapter's pure parts: rendering, mentions, access lists, settings, rate-limit
scopes and what the budget learns from Discord's headers."""

from __future__ import annotations

import asyncio

import pytest

from bots.discord.controls import parse_stop
from bots.discord.events import Access
from bots.discord.format import (
    FULLWIDTH_AT,
    MAX_CONTENT,
    ZWSP,
    message_limit,
    neutralise,
    render,
    stop_custom_id,
)
from bots.discord.limits import (
    GLOBAL_SCOPE,
    RateLimitLearner,
    channel_scope,
    interaction_scope,
    scope_of,
)
from bots.discord.settings import load_discord_settings
from core.config import ConfigError
from core.reply.sink import Outcome
from core.service.intake import IntakeLog, outcome_metric
from core.telemetry.metrics import ChatrelayMetrics


class RecordingBudget:
    def __init__(self) -> None:
        self.blocks: list[tuple[str, float]] = []

    async def acquire(self, scope: str) -> float:
        return 0.0

    async def block(self, scope: str, seconds: float) -> None:
        self.blocks.append((scope, seconds))


# ------------------------------------------------------------------ format


@pytest.mark.parametrize(
    "text",
    ["@everyone", "@here", "<@123>", "<@!123>", "<@&456>", "mail@everyone.example"],
)
def test_neutralise_breaks_every_mention_syntax(text: str) -> None:
    safe = neutralise(text)
    assert "@" + ZWSP in safe
    assert safe.replace(ZWSP, "") == text


def test_neutralise_keeps_the_length_when_the_page_is_already_full() -> None:
    text = "x" * (message_limit("content") - 9) + "@everyone"
    assert len(text) == message_limit("content")
    safe = neutralise(text, message_limit("content"))
    assert len(safe) == len(text)
    assert safe.endswith(FULLWIDTH_AT + "everyone")


def test_emails_and_channel_links_are_left_alone() -> None:
    assert neutralise("write to a@b.example in <#42>") == "write to a@b.example in <#42>"


def test_every_state_fits_discords_content_limit() -> None:
    page = "y" * message_limit("content")
    long_reason = "z" * 5000
    for outcome in (
        None,
        Outcome("done", "the model hit its length limit"),
        Outcome("stopped", "by Alice"),
        Outcome("failed", long_reason),
        Outcome("interrupted", long_reason),
    ):
        shown = render(page, mode="content", streaming=outcome is None, outcome=outcome)
        assert shown.content is not None and len(shown.content) <= MAX_CONTENT


def test_states_read_as_they_should() -> None:
    def last_line(outcome: Outcome | None, streaming: bool = False) -> str:
        shown = render("text", mode="content", streaming=streaming, outcome=outcome)
        assert shown.content is not None
        return shown.content.rsplit("\n", 1)[-1]

    assert last_line(None, streaming=True) == "-# ✍️ writing…"
    assert render("text", mode="content", streaming=False, outcome=Outcome("done")).content == (
        "text"
    )
    assert last_line(Outcome("stopped", "by Alice")) == "-# ⏹️ Stopped by Alice"
    assert last_line(Outcome("failed", "overloaded @here")) == (
        f"-# ⚠️ The reply failed: overloaded @{ZWSP}here"
    )
    interrupted = Outcome("interrupted", "the reply was interrupted: the process stopped")
    assert last_line(interrupted) == "-# ⚠️ The reply was interrupted: the process stopped"


def test_before_the_answer_the_reasoning_shows() -> None:
    shown = render("", mode="content", streaming=True, reasoning="Let me think\nabout it")
    assert shown.content == "-# 💭 Let me think about it\n-# ✍️ writing…"
    empty = render("", mode="embeds", streaming=False, outcome=Outcome("done"))
    assert empty.embed is not None and empty.embed.description


# ------------------------------------------------------------------ access, controls


def test_blocks_win_and_allow_lists_narrow() -> None:
    access = Access(
        allowed_roles=frozenset({7}), blocked_users=frozenset({2}), blocked_channels=frozenset({9})
    )
    assert access.allows(1, [7], [5], dm=False)
    assert not access.allows(1, [], [5], dm=False)  # not in the allowed role
    assert not access.allows(2, [7], [5], dm=False)  # blocked user
    assert not access.allows(1, [7], [5, 9], dm=False)  # a thread of a blocked channel
    assert not access.allows(1, [], [], dm=True)  # DMs carry no roles
    assert Access(dms=False).allows(1, [], [], dm=True) is False
    assert Access().allows(1, [], [], dm=True)


def test_stop_ids_round_trip_and_reject_anything_else() -> None:
    custom_id = stop_custom_id("ab12", 42)
    stop = parse_stop(custom_id)
    assert stop is not None and (stop.reply_id, stop.asker) == ("ab12", 42)
    assert len(stop_custom_id("f" * 32, 2**63)) <= 100  # Discord's custom_id limit
    assert parse_stop("chatrelay:stop:ab12") is None
    assert parse_stop("other:stop:ab12:42") is None


# ------------------------------------------------------------------ settings


def test_id_lists_take_commas_or_json_and_shards_are_checked() -> None:
    settings = load_discord_settings(discord_allowed_users="1, 2", discord_guild_ids="[3,1]")
    assert settings.discord_allowed_users == [1, 2]
    assert settings.discord_guild_ids == [1, 3]
    assert settings.owns_shard_zero
    sharded = load_discord_settings(discord_shard_ids="1,2", discord_shard_count=4)
    assert not sharded.owns_shard_zero
    with pytest.raises(ConfigError, match="DISCORD_SHARD_COUNT"):
        load_discord_settings(discord_shard_ids="1")
    with pytest.raises(ConfigError, match="between 0 and 1"):
        load_discord_settings(discord_shard_ids="2", discord_shard_count=2)
    with pytest.raises(ConfigError, match="DISCORD_ALLOWED_ROLES"):
        load_discord_settings(discord_allowed_roles="admins")
    with pytest.raises(ConfigError, match="DISCORD_GATEWAY_URL"):
        load_discord_settings(discord_gateway_url="https://gateway.discord.gg")


def test_the_interaction_window_stays_inside_the_token_lifetime() -> None:
    with pytest.raises(ConfigError, match="DISCORD_INTERACTION_WINDOW"):
        load_discord_settings(discord_interaction_window=901)


# ------------------------------------------------------------------ rate limits


def test_scopes_of_the_calls_replies_make() -> None:
    assert scope_of("POST", "/api/v10/channels/42/messages") == channel_scope(42)
    assert scope_of("PATCH", "/api/v10/channels/42/messages/7") == channel_scope(42)
    assert scope_of("PATCH", "/api/v10/webhooks/1/tok/messages/@original") == (
        interaction_scope("tok")
    )
    assert scope_of("POST", "/api/v10/webhooks/1/tok") == interaction_scope("tok")
    assert scope_of("GET", "/api/v10/channels/42/messages/7") is None
    assert scope_of("POST", "/api/v10/channels/42/typing") is None
    assert "tok" not in interaction_scope("tok")  # a credential never names a key


async def test_the_learner_blocks_scopes_as_discords_answers_say() -> None:
    budget = RecordingBudget()
    learner = RateLimitLearner(budget)
    path = "/api/v10/channels/42/messages"
    await learner.learn("POST", path, 200, {"X-RateLimit-Remaining": "3"})
    assert budget.blocks == []
    await learner.learn(
        "POST", path, 200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "1.5"}
    )
    await learner.learn(
        "PATCH", path + "/7", 429, {"Retry-After": "2", "X-RateLimit-Scope": "user"}
    )
    await learner.learn(
        "GET", "/api/v10/users/@me", 429, {"Retry-After": "3", "X-RateLimit-Global": "true"}
    )
    assert budget.blocks == [
        (channel_scope(42), 1.5),
        (channel_scope(42), 2.0),
        (GLOBAL_SCOPE, 3.0),
    ]
    assert (learner.exhausted, learner.rate_limited) == (1, 2)


# ------------------------------------------------------------------ intake


async def test_the_intake_log_counts_outcomes_for_metrics_and_wakes_who_waits() -> None:
    metrics = ChatrelayMetrics()
    intake = IntakeLog(outcome_metric(metrics, "discord"), keep=2)
    waiting = asyncio.ensure_future(intake.wait(7))
    await asyncio.sleep(0)
    assert not waiting.done()
    intake.received(7)
    intake.settle(7, "ignored")
    assert await waiting == "ignored"
    intake.settle(8, "answered")
    intake.settle(9, "deduplicated")
    assert intake.outcome(7) is None  # only the most recent are kept
    assert intake.outcome(9) == "deduplicated"
    assert intake.taken(7) and not intake.taken(8)  # 8 was settled without being received
    assert intake.counts == {"received": 1, "ignored": 1, "answered": 1, "deduplicated": 1}
    outcome_metric(metrics, "slack")  # a second adapter in the process shares the counter
    assert metrics.messages.value("discord", "ignored") == 1
