"""The small stores adapters keep their marks in (reset marks, model choices,
greetings, missing features), on a real Redis: what they keep, under which
key (the layout the adapters wrote before the keys moved to ``core.state``),
and how long."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio import Redis

from core.state.choices import ModelChoices
from core.state.features import MissingFeatures
from core.state.greetings import Greetings
from core.state.keys import ConversationKey, Keys
from core.state.resets import ResetMarks
from core.state.topology import Topology, connect_to
from tests.state.conftest import unreachable

THREAD = ConversationKey("discord", "1", "2")


def test_keys_keep_the_layout_the_adapters_wrote(keys: Keys) -> None:
    prefix = keys.prefix
    # On a cluster a reset mark lives in its conversation's slot: a new layout there.
    conversation = "{" + THREAD.id + "}" if keys.cluster else THREAD.id
    assert keys.reset_mark(THREAD) == f"{prefix}discord:reset:{conversation}"
    assert keys.model_choice("discord", "42") == f"{prefix}discord:model:42"
    assert keys.greeted("slack", "T1", "U1") == f"{prefix}slack:greeted:T1:U1"
    assert keys.missing_feature("slack", "T1", "native") == f"{prefix}slack:no-native:T1"
    assert keys.model_choice("discord", "4:2") != keys.model_choice("discord:4", "2")


async def test_a_reset_mark_lasts_as_long_as_its_conversation(redis: Redis, keys: Keys) -> None:
    resets = ResetMarks(redis, keys, ttl=600)
    assert await resets.since(THREAD) is None
    await resets.mark(THREAD, "1234567890123456789")
    assert await resets.since(THREAD) == "1234567890123456789"
    assert await resets.since(ConversationKey("discord", "1", "3")) is None
    assert 590 < await redis.ttl(keys.reset_mark(THREAD)) <= 600


async def test_a_model_choice_follows_the_first_channel_that_has_an_offered_one(
    redis: Redis, keys: Keys
) -> None:
    choices = ModelChoices(redis, keys)
    offered = ["small", "large"]
    assert await choices.chosen("discord", ["10", "20"], offered) is None
    await choices.choose("discord", "20", "large")
    assert await choices.chosen("discord", ["10", "20"], offered) == "large"  # the parent's
    await choices.choose("discord", "10", "small")
    assert await choices.chosen("discord", ["10", "20"], offered) == "small"  # its own first
    assert await choices.chosen("discord", ["10", "20"], ["large"]) == "large"  # no longer offered
    assert await choices.chosen("discord", ["10"], []) is None
    assert await choices.chosen("slack", ["10"], offered) is None  # per platform
    assert await redis.ttl(keys.model_choice("discord", "10")) == -1  # a setting: no expiry


async def test_a_user_is_greeted_once_per_period(redis: Redis, keys: Keys) -> None:
    greetings = Greetings(redis, keys)
    assert await greetings.claim("slack", "T1", "U1", every=1) is True
    assert await greetings.claim("slack", "T1", "U1", every=1) is False  # another replica
    assert await greetings.claim("slack", "T1", "U2", every=1) is True
    await asyncio.sleep(1.1)
    assert await greetings.claim("slack", "T1", "U1", every=1) is True


async def test_a_missing_feature_is_noted_for_a_while(redis: Redis, keys: Keys) -> None:
    features = MissingFeatures(redis, keys)
    assert await features.lacks("slack", "T1", "native") is False
    await features.note("slack", "T1", "native", ttl=100)
    assert await features.lacks("slack", "T1", "native") is True
    assert await features.lacks("slack", "T2", "native") is False
    assert 90 < await redis.ttl(keys.missing_feature("slack", "T1", "native")) <= 100


async def test_unreadable_redis_reads_as_nothing_chosen_and_no_reset(
    keys: Keys, topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    """The readers on a reply's path degrade; the writers raise (see test_paused)."""
    broken = connect_to(unreachable(topology))
    try:
        with caplog.at_level(logging.WARNING, logger="core.state.choices"):
            assert await ModelChoices(broken, keys).chosen("discord", ["1"], ["m"]) is None
        assert "could not read the model chosen for 1: " in caplog.text
        assert await ResetMarks(broken, keys, ttl=60).since(THREAD) is None
    finally:
        await broken.aclose()
