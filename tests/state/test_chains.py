"""The reply-chain index: which conversation a message belongs to, against the real
Redis, a stopped one and a paused one (``core.state.chains``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.state.chains import ReplyChains
from core.state.connection import REPLY_PATH_TIMEOUT, EmbeddedRedis, connect
from core.state.keys import ConversationKey, Keys
from tests.state.pausable import MARGIN, PausableRedis, settled, timed

CHAIN = ConversationKey("discord", "111", "222", "333")
BOUND = 0.2
LOGGER = "core.state.chains"


async def test_every_message_of_a_chain_finds_its_conversation(redis: Redis, keys: Keys) -> None:
    chains = ReplyChains(redis, keys, ttl=600)
    await chains.remember(CHAIN, "333", "334")
    await chains.remember(CHAIN, "335")
    for message_id in ("333", "334", "335"):
        assert await chains.lookup("discord", message_id) == CHAIN
    assert await chains.lookup("discord", "999") is None  # never remembered
    assert await chains.lookup("slack", "333") is None  # ids are per platform
    assert 590 <= await redis.ttl(keys.chain("discord", "334")) <= 600


async def test_the_keys_are_the_ones_the_discord_adapter_always_used(
    redis: Redis, keys: Keys
) -> None:
    """An upgrade keeps the chains remembered before the index moved to core."""
    await redis.set(f"{keys.prefix}discord:chain:42", '["g","c","42"]')
    chains = ReplyChains(redis, keys, ttl=600)
    assert await chains.lookup("discord", "42") == ConversationKey("discord", "g", "c", "42")
    assert keys.chain("discord", "42") == f"{keys.prefix}discord:chain:42"
    assert keys.chain("a:b", "1:2") == f"{keys.prefix}a%3Ab:chain:1%3A2"  # no collisions


async def test_a_conversation_without_a_thread_round_trips(redis: Redis, keys: Keys) -> None:
    chains = ReplyChains(redis, keys, ttl=600)
    dm = ConversationKey("discord", "dm", "7")
    await chains.remember(dm, "8")
    assert await chains.lookup("discord", "8") == dm


async def test_an_unreadable_entry_is_not_known(
    redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.set(keys.chain("discord", "1"), "not json")
    await redis.set(keys.chain("discord", "2"), '["only", "two"]')
    chains = ReplyChains(redis, keys, ttl=600)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert await chains.lookup("discord", "1") is None
        assert await chains.lookup("discord", "2") is None
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        "dropping an unreadable chain entry of message 1",
        "dropping an unreadable chain entry of message 2",
    ]


@pytest.mark.single_server
async def test_without_redis_nothing_is_remembered_nor_found_and_nothing_raises(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedRedis(tmp_path)
    client = connect(server.start())
    chains = ReplyChains(client, keys, ttl=600)
    try:
        await chains.remember(CHAIN, "1")
        server.stop()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            await chains.remember(CHAIN, "2", "3")
            assert await chains.lookup("discord", "1") is None
        messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
        assert [m.split(":")[0] for m in messages] == [
            "could not remember messages 2, 3",
            "could not look up message 1",
        ]
    finally:
        await client.aclose()
        server.stop()


async def test_a_paused_redis_costs_each_call_its_bound_and_no_more(
    pausable: PausableRedis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(pausable.url)
    try:
        assert await client.ping() is True
        chains = ReplyChains(client, keys, ttl=600, timeout=BOUND)
        await chains.remember(CHAIN, "1")
        with caplog.at_level(logging.WARNING, logger=LOGGER), pausable.paused():
            remembered, seconds = await timed(chains.remember(CHAIN, "2"))
            assert remembered is None and BOUND - 0.01 <= seconds < BOUND + MARGIN
            found, seconds = await timed(chains.lookup("discord", "1"))
            assert found is None and BOUND - 0.01 <= seconds < BOUND + MARGIN
        assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
            f"could not remember messages 2: no answer from Redis within {BOUND:g} s",
            f"could not look up message 1: no answer from Redis within {BOUND:g} s",
        ]
        await settled(client)
        assert await chains.lookup("discord", "1") == CHAIN  # all is well again
        await chains.remember(CHAIN, "3")
        assert await chains.lookup("discord", "3") == CHAIN
    finally:
        await client.aclose()


def test_calls_are_bounded_by_default_and_the_ttl_must_be_positive(
    redis: Redis, keys: Keys
) -> None:
    assert ReplyChains(redis, keys, ttl=1).timeout == REPLY_PATH_TIMEOUT
    with pytest.raises(ValueError, match="positive"):
        ReplyChains(redis, keys, ttl=0)
