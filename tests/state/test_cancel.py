"""Stop from any replica: pub/sub plus a marker for the moments pub/sub misses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from core.clock import MonotonicClock
from core.llm.events import TextDelta
from core.reply.engine import Reply
from core.reply.pacing import Pacing
from core.state.cancel import CancelBus
from core.state.connection import EmbeddedRedis, connect
from core.state.keys import Keys
from core.state.topology import RedisClient, is_cluster
from tests.fakes.recording_sink import RecordingSink


class Stops:
    """A stoppable that remembers how it was stopped."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.stopped = asyncio.Event()

    def stop(self, state: str = "stopped", reason: str | None = None) -> None:
        self.calls.append((state, reason))
        self.stopped.set()


async def endless_model() -> AsyncIterator[object]:
    n = 0
    while True:
        n += 1
        yield TextDelta(f"token{n} ")
        await asyncio.sleep(0.01)


async def publish(client: RedisClient, channel: str, data: bytes) -> None:
    """Publish as ``CancelBus`` does: sharded (``SPUBLISH``) on a cluster."""
    if is_cluster(client):
        await client.spublish(channel, data)
    else:
        await client.publish(channel, data)


async def test_stop_on_one_replica_stops_a_reply_streaming_on_another(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    sink = RecordingSink(MonotonicClock())
    reply = Reply(sink, pacing=Pacing(min_interval=0.05, max_wait=0.05))
    async with (
        CancelBus(redis, keys) as replica_a,
        CancelBus(second_client, keys) as replica_b,
        replica_a.watching("slack:C1:1700.1", reply),
    ):
        running = asyncio.create_task(reply.run(endless_model()))
        for _ in range(500):  # until it is visibly streaming
            if sink.messages:
                break
            await asyncio.sleep(0.01)
        assert sink.messages
        pressed = time.monotonic()
        assert await replica_b.cancel("slack:C1:1700.1", "stopped by <@U7>") is True
        result = await asyncio.wait_for(running, 1.0)
        latency = time.monotonic() - pressed
    assert latency < 1.0
    assert result.outcome.state == "stopped"
    assert result.outcome.reason == "stopped by <@U7>"
    assert sink.outcome is not None and sink.outcome.state == "stopped"
    assert result.text.startswith("token1 ")  # the text so far is kept


async def test_other_replies_are_not_stopped(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    mine, other = Stops(), Stops()
    async with (
        CancelBus(redis, keys) as replica_a,
        CancelBus(second_client, keys) as replica_b,
        replica_a.watching("r1", mine),
        replica_a.watching("r2", other),
    ):
        await replica_b.cancel("r-unknown")
        await replica_b.cancel("r1")
        await asyncio.wait_for(mine.stopped.wait(), 1.0)
        await replica_b.cancel("r1")  # a second press: harmless
    assert other.calls == []
    assert mine.calls[0] == ("stopped", None)


async def test_a_stop_pressed_before_the_reply_registered_still_stops_it(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    early, sentinel = Stops(), Stops()
    async with CancelBus(redis, keys) as replica_a, CancelBus(second_client, keys) as replica_b:
        async with replica_a.watching("sentinel", sentinel):
            await replica_b.cancel("r1", "too slow")
            await replica_b.cancel("sentinel")
            # Messages arrive in order: once the sentinel stops, r1's Stop has come
            # and gone with nobody watching r1; only its marker is left to stop it.
            await asyncio.wait_for(sentinel.stopped.wait(), 1.0)
        async with replica_a.watching("r1", early):
            assert early.calls == [("stopped", "too slow")]


async def test_after_watching_ends_the_reply_is_forgotten(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    done, sentinel = Stops(), Stops()
    async with CancelBus(redis, keys) as bus, CancelBus(second_client, keys) as other:
        async with bus.watching("r1", done):
            pass
        async with bus.watching("sentinel", sentinel):
            await other.cancel("r1")
            await other.cancel("sentinel")
            # Messages arrive in order: once the sentinel stops, r1's Stop was handled.
            await asyncio.wait_for(sentinel.stopped.wait(), 1.0)
    assert done.calls == []


async def test_malformed_messages_are_ignored(
    redis: Redis, second_client: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    target = Stops()
    async with (
        CancelBus(redis, keys) as bus,
        CancelBus(second_client, keys) as other,
        bus.watching("r1", target),
    ):
        await publish(second_client, keys.cancel_channel(), b"\xff garbage")
        await publish(second_client, keys.cancel_channel(), b'{"no": "id"}')
        await other.cancel("r1")
        await asyncio.wait_for(target.stopped.wait(), 1.0)
    assert target.calls == [("stopped", None)]
    # Each of the two buses logs each of the two bad messages, and goes on.
    assert sum("malformed cancel" in r.getMessage() for r in caplog.records) == 4


@pytest.mark.single_server
async def test_stops_sent_while_redis_was_down_arrive_after_it_returns(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="core.state.cancel")
    server = EmbeddedRedis(tmp_path)
    url = server.start()
    listener, sender = connect(url), connect(url)
    target = Stops()
    try:
        async with (
            CancelBus(listener, keys, reconnect_delay=0.02) as bus,
            bus.watching("r1", target),
        ):
            server.stop()
            await until(lambda: _logged(caplog, "Stop works on this replica only"))
            server.start()
            # Sent at once, likely before the listener resubscribed: the marker
            # makes up for the missed message.
            assert await CancelBus(sender, keys).cancel("r1", "late") is True
            await asyncio.wait_for(target.stopped.wait(), 3.0)
            await until(lambda: _logged(caplog, "Stop works across replicas again"))
        assert target.calls[0] == ("stopped", "late")
    finally:
        await listener.aclose()
        await sender.aclose()
        server.stop()


@pytest.mark.single_server
async def test_a_stop_sent_while_the_subscription_reconnects_is_not_lost(
    tmp_path: Path, keys: Keys
) -> None:
    server = EmbeddedRedis(tmp_path)  # private: killing its clients harms nobody
    url = server.start()
    listener, sender = connect(url), connect(url)
    target = Stops()
    try:
        async with (
            CancelBus(listener, keys) as bus,
            bus.watching("r1", target),
        ):
            await sender.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            assert await CancelBus(sender, keys).cancel("r1", "during reconnect") is True
            await asyncio.wait_for(target.stopped.wait(), 3.0)
        assert target.calls[0] == ("stopped", "during reconnect")
    finally:
        await listener.aclose()
        await sender.aclose()
        server.stop()


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


@pytest.mark.single_server
async def test_without_redis_a_stop_still_stops_a_local_reply(tmp_path: Path, keys: Keys) -> None:
    server = EmbeddedRedis(tmp_path)
    client = connect(server.start())
    target = Stops()
    try:
        async with CancelBus(client, keys) as bus, bus.watching("r1", target):
            server.stop()
            assert await bus.cancel("r1") is False
            assert target.calls == [("stopped", None)]
    finally:
        await client.aclose()
        server.stop()
