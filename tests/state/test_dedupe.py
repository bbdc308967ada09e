"""Event dedupe: one reply per event id, across retries and replicas."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.state.connection import EmbeddedRedis, connect
from core.state.dedupe import Dedupe
from core.state.keys import Keys


async def test_a_retried_event_is_claimed_once(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    replica_a, replica_b = Dedupe(redis, keys, ttl=600), Dedupe(second_client, keys, ttl=600)
    assert await replica_a.claim("slack:Ev1") is True
    assert await replica_a.claim("slack:Ev1") is False  # Slack's retry, same replica
    assert await replica_b.claim("slack:Ev1") is False  # ... or another one
    assert await replica_b.claim("slack:Ev2") is True
    assert 590 <= await redis.ttl(keys.dedupe("slack:Ev1")) <= 600


async def test_simultaneous_deliveries_yield_exactly_one_claim(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    replicas = [Dedupe(redis, keys), Dedupe(second_client, keys)]
    claims = await asyncio.gather(*(replicas[n % 2].claim("slack:EvX") for n in range(30)))
    assert claims.count(True) == 1


async def test_an_event_may_be_handled_again_after_the_ttl(redis: Redis, keys: Keys) -> None:
    dedupe = Dedupe(redis, keys)
    assert await dedupe.claim("discord:42")
    await redis.pexpire(keys.dedupe("discord:42"), 1)
    for _ in range(500):
        if not await redis.exists(keys.dedupe("discord:42")):
            break
        await asyncio.sleep(0.002)
    assert await dedupe.claim("discord:42") is True


@pytest.mark.single_server
async def test_without_redis_claims_are_remembered_locally(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedRedis(tmp_path)
    client = connect(server.start())
    dedupe = Dedupe(client, keys)
    try:
        server.stop()
        with caplog.at_level(logging.INFO, logger="core.state.dedupe"):
            assert await dedupe.claim("slack:E1") is True
            assert await dedupe.claim("slack:E1") is False
            assert await dedupe.claim("slack:E2") is True
            server.start()
            assert await dedupe.claim("slack:E3") is True
            assert await dedupe.claim("slack:E3") is False
        assert await client.exists(keys.dedupe("slack:E3")) == 1  # shared again
        levels = [r.levelno for r in caplog.records if r.name == "core.state.dedupe"]
        assert levels == [logging.WARNING, logging.INFO]
    finally:
        await client.aclose()
        server.stop()
