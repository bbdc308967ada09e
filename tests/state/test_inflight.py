"""The in-flight registry: a replica killed mid-reply has its reply finalised
by another, exactly once; live and finished replies are left alone."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from core.reply.sink import MessageGone
from core.state.connection import connect
from core.state.deferred import DeferredRequests
from core.state.inflight import InflightRecord, InflightRegistry, MessageRecord
from core.state.keys import Keys
from core.state.topology import RedisClient, Topology
from tests.state import replicas
from tests.state.pausable import PausableRedis


class Finaliser:
    def __init__(self, fail_first: int = 0) -> None:
        self.records: list[InflightRecord] = []
        self.fail_first = fail_first
        self.calls = 0

    async def __call__(self, record: InflightRecord) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError("platform said no")
        self.records.append(record)


def registry(redis: Redis, keys: Keys, timeout: float = 0.3, **kwargs: Any) -> InflightRegistry:
    kwargs.setdefault("backoff", (0.1, 0.4))
    return InflightRegistry(redis, keys, heartbeat=0.05, timeout=timeout, **kwargs)


def beats(keys: Keys, platform: str, reply_id: str) -> str:
    """The heartbeats ``reply_id`` is in: its partition's, on a cluster."""
    return keys.inflight_beats(platform, keys.inflight_partition(reply_id))


def records(keys: Keys, platform: str, reply_id: str) -> str:
    """The records ``reply_id``'s is in: its partition's, on a cluster."""
    return keys.inflight_records(platform, keys.inflight_partition(reply_id))


async def registry_left(redis: RedisClient, keys: Keys, platform: str) -> int:
    """How many of ``platform``'s heartbeat and record keys exist, over every partition."""
    left = 0
    for partition in range(keys.inflight_partitions):
        left += await redis.exists(
            keys.inflight_beats(platform, partition), keys.inflight_records(platform, partition)
        )
    return left


async def eventually(sweep: Callable[[], Awaitable[int]], seconds: float = 5.0) -> int:
    """Sweep until something is finalised (bounded); returns how many."""
    for _ in range(int(seconds / 0.05)):
        done = await sweep()
        if done:
            return done
        await asyncio.sleep(0.05)
    raise AssertionError("nothing was finalised in time")


async def orphan(redis: Redis, keys: Keys, record: InflightRecord) -> None:
    """A record whose owner's heartbeat expired long ago (with one message, at
    its target, showing its text, unless it names its messages itself)."""
    if not record.messages:
        message = MessageRecord(dict(record.target) or {"ts": "1"}, record.text)
        record = dataclasses.replace(record, messages=(message,))
    await redis.zadd(beats(keys, record.platform, record.reply_id), {record.reply_id: 0})
    await redis.hset(
        records(keys, record.platform, record.reply_id), record.reply_id, record.to_json()
    )


async def test_a_killed_replicas_reply_is_finalised_by_another(
    redis: Redis, topology: Topology, keys: Keys
) -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    doomed = context.Process(
        target=replicas.stream_until_killed, args=(topology, keys.prefix, "slack:C1:1700.1", ready)
    )
    doomed.start()
    try:
        assert await asyncio.to_thread(ready.wait, 30), "the replica never streamed"
        survivor = registry(redis, keys, timeout=0.5)
        finalise = Finaliser()
        assert await survivor.sweep({"slack": finalise}) == 0  # alive: hands off
        doomed.kill()  # SIGKILL, mid-reply: no cleanup of any kind
        await asyncio.to_thread(doomed.join, 10)
    finally:
        if doomed.is_alive():
            doomed.kill()
    shown = (await redis.get(keys.prefix + "shown") or b"").decode()
    assert await eventually(lambda: survivor.sweep({"slack": finalise})) == 1
    [record] = finalise.records
    assert record.reply_id == "slack:C1:1700.1"
    assert record.owner == "doomed"
    assert record.target == {"ts": "1700.1"}
    assert record.text.startswith("word1 word2 ")
    assert record.text.startswith(shown)  # at least what the user saw
    assert await survivor.sweep({"slack": finalise}) == 0  # exactly once
    assert await registry_left(redis, keys, "slack") == 0


async def test_a_live_reply_is_never_finalised(redis: Redis, keys: Keys) -> None:
    owner, sweeper = registry(redis, keys), registry(redis, keys)
    finalise = Finaliser()
    async with owner.track(InflightRecord("r1", "slack", {"ts": "1"})) as tracker:
        for n in range(12):  # 0.6 s: two timeouts
            await tracker.update(text=f"text {n}")
            assert await sweeper.sweep({"slack": finalise}) == 0
            await asyncio.sleep(0.05)
        stored = await redis.hget(records(keys, "slack", "r1"), "r1")
        assert stored is not None
        assert InflightRecord.from_json(stored).text == "text 11"
        tracker.settled = True  # its final state was shown
    assert finalise.calls == 0
    # Finished: its entry is gone, and a late update does not bring it back.
    await tracker.update(text="too late")
    assert await registry_left(redis, keys, "slack") == 0


async def test_two_sweepers_finalise_an_orphan_once(
    redis: Redis, second_client: Redis, keys: Keys
) -> None:
    await orphan(redis, keys, InflightRecord("r1", "slack", {"ts": "1"}, text="half"))
    finalise = Finaliser()
    done = await asyncio.gather(
        registry(redis, keys).sweep({"slack": finalise}),
        registry(second_client, keys).sweep({"slack": finalise}),
    )
    assert sorted(done) == [0, 1]
    assert [r.text for r in finalise.records] == ["half"]


async def test_a_failed_finalisation_is_retried_later(redis: Redis, keys: Keys) -> None:
    await orphan(redis, keys, InflightRecord("r1", "discord", {"token": "x"}))
    sweeper = registry(redis, keys, timeout=0.2)
    finalise = Finaliser(fail_first=1)
    assert await sweeper.sweep({"discord": finalise}) == 0
    assert await sweeper.sweep({"discord": finalise}) == 0  # claimed: not yet again
    assert await eventually(lambda: sweeper.sweep({"discord": finalise})) == 1
    assert finalise.calls == 2


async def test_an_orphan_that_keeps_failing_is_retried_with_backoff_then_dropped(
    redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    await orphan(redis, keys, InflightRecord("r1", "slack", started=time.time()))
    finalise = Finaliser(fail_first=99)
    sweeper = registry(redis, keys, backoff=(30.0, 60.0))
    assert await sweeper.sweep({"slack": finalise}) == 0
    due = await redis.zscore(beats(keys, "slack", "r1"), "r1")
    seconds, micros = await redis.time()
    server_now = seconds * 1000 + micros // 1000
    assert due is not None and 29_000 < due - server_now <= 30_500  # the first backoff
    # An hour later (FINAL_RETRY_FOR), the next failure drops it with an error.
    await orphan(redis, keys, InflightRecord("r1", "slack", started=time.time() - 3601))
    assert await sweeper.sweep({"slack": finalise}) == 0
    assert finalise.calls == 2
    assert await registry_left(redis, keys, "slack") == 0
    assert any("giving up" in r.getMessage() for r in caplog.records)


async def test_a_message_gone_ends_the_record_at_once(redis: Redis, keys: Keys) -> None:
    await orphan(redis, keys, InflightRecord("r1", "slack", started=time.time()))

    async def finalise(record: InflightRecord) -> None:
        raise MessageGone("message_not_found")

    assert await registry(redis, keys).sweep({"slack": finalise}) == 1
    assert await registry_left(redis, keys, "slack") == 0


async def test_sweeps_touch_only_their_platforms_and_skip_garbage(
    redis: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    await orphan(redis, keys, InflightRecord("d1", "discord"))
    await redis.zadd(beats(keys, "slack", "bad"), {"bad": 0})
    await redis.hset(records(keys, "slack", "bad"), "bad", b"\xff{not json")
    finalise = Finaliser()
    with caplog.at_level(logging.WARNING, logger="core.state.inflight"):
        assert await registry(redis, keys).sweep({"slack": finalise}) == 0
    assert finalise.calls == 0
    assert any("undecodable in-flight record bad" in r.getMessage() for r in caplog.records)
    assert await redis.zscore(beats(keys, "discord", "d1"), "d1") == 0  # untouched


async def test_finals_that_failed_are_counted_as_waiting_until_shown(
    redis: Redis, keys: Keys
) -> None:
    await orphan(redis, keys, InflightRecord("r1", "discord", {"token": "x"}))
    await orphan(redis, keys, InflightRecord("r2", "discord", {"token": "y"}))
    sweeper = registry(redis, keys, timeout=0.2)
    told: list[tuple[str, int]] = []
    sweeper.finals_waiting = lambda platform, count: told.append((platform, count))
    finalise = Finaliser(fail_first=2)  # the platform is down for both
    task = asyncio.create_task(sweeper.run_sweeper({"discord": finalise}, 60))
    try:
        for _ in range(500):
            if told:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert told == [("discord", 2)]
    assert await eventually(lambda: sweeper.sweep({"discord": finalise})) == 2
    assert await sweeper.waiting("discord") == 0


async def test_the_sweeper_runs_at_start_up(redis: Redis, keys: Keys) -> None:
    await orphan(redis, keys, InflightRecord("r1", "slack", text="left behind"))
    finalise = Finaliser()
    sweeper = asyncio.create_task(registry(redis, keys).run_sweeper({"slack": finalise}, 60))
    try:
        for _ in range(500):
            if finalise.records:
                break
            await asyncio.sleep(0.01)
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
    assert [r.text for r in finalise.records] == ["left behind"]


def test_records_round_trip_and_reject_garbage() -> None:
    messages = (MessageRecord({"ts": "0"}, "a", True), MessageRecord({"ts": "1"}, "text é"))
    record = InflightRecord(
        "r", "slack", {"ts": "1"}, "text é", 1, "me", 1700.5, messages, "failed", "why", 1701.0
    )
    assert InflightRecord.from_json(record.to_json()) == record
    assert record.pending == ((1, messages[1]),)
    for bad in ("[]", '{"platform": "x"}', '{"reply_id": "r", "platform": "p", "target": [1]}'):
        with pytest.raises(ValueError):
            InflightRecord.from_json(bad)


async def test_timeout_must_allow_for_a_late_heartbeat(redis: Redis, keys: Keys) -> None:
    with pytest.raises(ValueError, match="twice"):
        InflightRegistry(redis, keys, heartbeat=1.0, timeout=1.5)


async def test_a_cancelled_reply_keeps_its_record_due_at_once(redis: Redis, keys: Keys) -> None:
    """A shutdown cancels replies still finalising: their records must survive,
    due now, so another replica finishes them instead of nobody."""
    live = registry(redis, keys, timeout=30.0)
    entered = asyncio.Event()

    async def reply() -> None:
        async with live.track(InflightRecord("r1", "slack", {"team": "T1"})) as tracker:
            await tracker.update(text="half", index=0, target={"channel": "C1", "ts": "1.2"})
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(reply())
    await entered.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    finalise = Finaliser()
    assert await registry(redis, keys).sweep({"slack": finalise}) == 1
    [record] = finalise.records
    assert record.outcome == "" and record.pending == (
        (0, MessageRecord({"channel": "C1", "ts": "1.2"}, "half")),
    )


async def test_an_undelivered_final_state_is_left_with_its_outcome(
    redis: Redis, keys: Keys
) -> None:
    live = registry(redis, keys, timeout=30.0)
    async with live.track(InflightRecord("r1", "slack")) as tracker:
        await tracker.update(index=0, target={"ts": "1"}, text="page one")
        tracker.confirmed(0, "page one", True)
        await tracker.update(index=1, target={"ts": "2"}, text="page t")
        await tracker.defer_final("failed", "the provider broke", {1: "page two"})
    finalise = Finaliser()
    assert await registry(redis, keys).sweep({"slack": finalise}) == 1
    [record] = finalise.records
    assert (record.outcome, record.reason) == ("failed", "the provider broke")
    assert record.pending == ((1, MessageRecord({"ts": "2"}, "page two")),)


async def test_a_settled_reply_leaves_nothing_behind(redis: Redis, keys: Keys) -> None:
    async with registry(redis, keys).track(InflightRecord("r1", "slack")) as tracker:
        tracker.confirmed(0, "all", True)
        tracker.settled = True
    assert await registry_left(redis, keys, "slack") == 0


@pytest.mark.single_server
async def test_recording_never_waits_for_a_redis_that_does_not_answer(keys: Keys) -> None:
    """A server that accepts and never replies (a paused Redis, a partition)."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 20)
        await asyncio.Event().wait()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    stuck = InflightRegistry(silent, keys, heartbeat=0.05, timeout=1.0, write_timeout=0.2)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        async with stuck.track(InflightRecord("r1", "slack")) as tracker:
            entered = loop.time()
            for i in range(20):
                await tracker.update(text="x" * i, index=0, target={"ts": "1"})
                tracker.confirmed(0, "x" * i, False)
            updated = loop.time()
            tracker.settled = True
        ended = loop.time()
    finally:
        server.close()
        await silent.aclose()
    assert entered - started < 0.5  # one bounded write
    assert updated - entered < 0.05  # updates never wait for Redis
    assert ended - updated < 0.5


async def test_a_reply_that_never_showed_text_is_answered_anew(redis: Redis, keys: Keys) -> None:
    """Cut off before its first words: its empty message is ended and the user's
    message goes to whichever process takes hand-overs, instead of being lost."""
    deferred = DeferredRequests(redis, keys)
    handover = {"v": 1, "text": "hello?"}
    await orphan(
        redis,
        keys,
        InflightRecord("r1", "slack", {"ts": "1"}, "", handover=handover, partition="p"),
    )
    finalise = Finaliser()
    events: list[tuple[str, str]] = []
    sweeper = registry(redis, keys, events=lambda event, platform: events.append((event, platform)))
    sweeper.deferred = deferred
    assert await sweeper.sweep({"slack": finalise}) == 1
    assert events == [("handed_over", "slack")]
    assert [r.reply_id for r in finalise.records] == ["r1"]  # the empty message ended
    [request] = await deferred.take("slack", "p")
    assert request.payload == handover
    # One that showed text is finalised, not answered again.
    await orphan(
        redis,
        keys,
        InflightRecord("r2", "slack", {"ts": "2"}, "half", handover=handover, partition="p"),
    )
    assert await sweeper.sweep({"slack": finalise}) == 1
    assert await deferred.take("slack", "p") == []
    assert events[-1] == ("finalised", "slack")


async def test_after_a_redis_outage_live_replies_get_a_timeout_to_beat_again(
    pausable: PausableRedis, keys: Keys
) -> None:
    """Every heartbeat missed the outage: claiming at once would finalise replies
    that are alive and about to beat."""
    client = connect(pausable.url)
    try:
        await orphan(client, keys, InflightRecord("r1", "slack", started=time.time()))
        sweeper = registry(client, keys, timeout=0.5)
        sweeper.write_timeout = 0.2
        finalise = Finaliser()
        with pausable.paused(), pytest.raises(TimeoutError):
            await sweeper.sweep({"slack": finalise})
        assert await sweeper.sweep({"slack": finalise}) == 0  # quiet for a timeout
        assert finalise.calls == 0
        assert await eventually(lambda: sweeper.sweep({"slack": finalise})) == 1
    finally:
        await client.aclose()


async def test_a_reply_that_finished_during_an_outage_is_forgotten_once_redis_is_back(
    pausable: PausableRedis, keys: Keys
) -> None:
    """Its record is stale (the outage ate its writes): left in Redis, another
    replica would finalise a finished reply into less than it shows."""
    client = connect(pausable.url)
    try:
        owner = registry(client, keys, timeout=0.5)
        owner.write_timeout = 0.2
        async with contextlib.AsyncExitStack() as stack:
            tracker = await stack.enter_async_context(owner.track(InflightRecord("r1", "slack")))
            await tracker.update(index=0, target={"ts": "1"}, text="the whole answer")
            tracker.confirmed(0, "the whole answer", True)
            tracker.settled = True
            pausable.pause()
            try:
                await stack.aclose()  # the reply ends while Redis doesn't answer
                assert owner.unsettled == 1  # the forget failed: kept for a retry
            finally:
                pausable.resume()
        assert await owner.flush(within=2.0)
        assert owner.unsettled == 0
        assert await client.zcard(beats(keys, "slack", "r1")) == 0
        finalise = Finaliser()
        assert await registry(client, keys).sweep({"slack": finalise}) == 0
        assert finalise.calls == 0
    finally:
        await client.aclose()


async def test_a_write_that_lands_after_the_forget_does_not_bring_the_record_back(
    redis: Redis, keys: Keys
) -> None:
    """A beat stuck in a paused Redis runs when it resumes, maybe after the
    forget that a later connection sent: the record must stay gone."""
    live = registry(redis, keys)
    async with live.track(InflightRecord("r1", "slack")) as tracker:
        stale = tracker.record.to_json()
        tracker.settled = True
    await live._beat_script(keys=live._beat_keys("slack", "r1"), args=["r1", 30_000, stale])
    assert await registry_left(redis, keys, "slack") == 0
