"""Connecting: a URL, or an embedded redis-server that starts, keeps its data,
refuses to be shared by two owners, and cleans up after a crashed owner."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.exceptions import MaxConnectionsError

from core.state.connection import (
    REDIS_FAILURES,
    EmbeddedRedis,
    EmbeddedRedisError,
    RedisUnavailable,
    Topology,
    bounded,
    connect,
    open_redis,
    redact,
)
from core.state.keys import Keys
from core.state.topology import SENTINEL_TIMEOUT, connect_to
from tests.redis_servers import LocalSentinel
from tests.state.conftest import unreachable
from tests.state.pausable import MARGIN, PausableRedis, timed


async def test_open_redis_without_url_embeds_a_server_and_stops_it(tmp_path: Path) -> None:
    async with open_redis(Topology(), tmp_path) as client:
        assert await client.ping() is True
        info = await client.info("server")
        pid = int(info["process_id"])
        assert info["tcp_port"] == 0  # only the unix socket
        await client.set("k", "v")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (tmp_path / "redis.sock").exists()


async def test_embedded_data_survives_a_restart(tmp_path: Path) -> None:
    async with open_redis(Topology(), tmp_path) as client:
        await client.rpush("conv", "turn 1", "turn 2")
    async with open_redis(Topology(), tmp_path) as client:
        assert await client.lrange("conv", 0, -1) == [b"turn 1", b"turn 2"]


async def test_open_redis_with_url_uses_it(topology: Topology, tmp_path: Path) -> None:
    unused = tmp_path / "unused"
    async with open_redis(topology, unused) as client:
        assert await client.ping() is True
    assert not await asyncio.to_thread(unused.exists)  # nothing embedded


async def test_unreachable_url_fails_at_start_with_one_line_and_no_password(
    tmp_path: Path,
) -> None:
    url = f"unix://:hunter2@{tmp_path / 'nobody.sock'}"
    with pytest.raises(RedisUnavailable) as caught:
        async with open_redis(Topology(url), tmp_path):
            pass
    message = str(caught.value)
    assert message.startswith("cannot reach Redis at unix://:***@")
    assert "hunter2" not in message
    assert "\n" not in message


async def test_an_unreachable_topology_fails_at_start_at_once(
    topology: Topology, tmp_path: Path
) -> None:
    """Refused connections are not retried with backoff (redis-py's default asked
    unreachable sentinels for ~8.5 s)."""
    nowhere = unreachable(topology)
    started = time.monotonic()
    with pytest.raises(RedisUnavailable) as caught:
        async with open_redis(nowhere, tmp_path):
            pass
    assert time.monotonic() - started < 0.5
    message = str(caught.value)
    assert message.startswith(f"cannot reach Redis at {nowhere.describe()}: ")
    assert "\n" not in message
    assert len(message) < 300  # no client's options spelt out


async def test_a_sentinel_that_never_answers_is_passed_over(
    redis_sentinel: LocalSentinel,
) -> None:
    """A paused or partitioned sentinel accepts and stays silent: the master is
    asked of the next one after ``SENTINEL_TIMEOUT``, not never."""

    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read(1 << 20)

    silent = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    first_silent = (("127.0.0.1", port), *redis_sentinel.sentinels)
    client = connect_to(Topology(sentinels=first_silent, service=redis_sentinel.service))
    try:
        outcome, seconds = await timed(bounded(client.ping(), 3.0))
        assert outcome is True
        assert SENTINEL_TIMEOUT <= seconds < SENTINEL_TIMEOUT + MARGIN
    finally:
        await client.aclose()
        silent.close()
        for writer in accepted:
            writer.close()
        await silent.wait_closed()


async def test_closing_a_sentinel_masters_client_closes_its_sentinel_connections(
    redis_sentinel: LocalSentinel,
) -> None:
    client = connect_to(
        Topology(sentinels=tuple(redis_sentinel.sentinels), service=redis_sentinel.service)
    )
    await client.ping()  # a sentinel was asked where the master is
    sentinels = client.connection_pool.sentinel_manager.sentinels  # type: ignore[attr-defined]
    connections = [c for s in sentinels for c in s.connection_pool._available_connections]
    assert any(c.is_connected for c in connections)
    await client.aclose()
    assert not any(c.is_connected for c in connections)


def test_redact() -> None:
    assert redact("redis://u:secret@h:6379/0") == "redis://u:***@h:6379/0"
    assert redact("rediss://h:6380") == "rediss://h:6380"


def test_second_owner_of_a_state_dir_is_refused(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as first:
        assert first.running()
        with pytest.raises(EmbeddedRedisError, match="another chatrelay is using"):
            EmbeddedRedis(tmp_path).start()
        assert first.running()
    # Once the owner has stopped, the directory is free again.
    with EmbeddedRedis(tmp_path) as again:
        assert again.running()


def test_server_orphaned_by_a_killed_owner_is_replaced(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    assert owner.stdout is not None
    orphan = int(owner.stdout.readline())
    owner.kill()  # SIGKILL: no chance to stop its redis-server
    owner.wait()
    owner.stdout.close()
    assert _alive(orphan)
    with EmbeddedRedis(tmp_path) as successor:
        assert successor.running()
        assert successor.pid != orphan
        assert _gone_within(orphan, 5.0)


OWNER = """
import sys, time
from pathlib import Path
from core.state.connection import EmbeddedRedis
server = EmbeddedRedis(Path(sys.argv[1]))
server.start()
print(server.pid, flush=True)
time.sleep(60)
"""


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that may never reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_redis_server_dying_at_start_is_reported(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'Fatal: bad config' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(EmbeddedRedisError, match=r"exited with 3: Fatal: bad config"):
        EmbeddedRedis(tmp_path / "state", executable=str(fake)).start()


def test_too_deep_state_dir_is_refused_with_advice(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    with pytest.raises(EmbeddedRedisError, match="STATE_DIR is too deep"):
        EmbeddedRedis(deep).start()


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped process can't act on SIGTERM
    server.stop(timeout=0.2)
    assert not server.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_cancelling_a_task_waiting_on_redis_always_cancels_it(topology: Topology) -> None:
    """With a ``socket_timeout``, redis-py wraps writes in ``asyncio.wait_for``,
    which on Python 3.11 swallowed about one cancellation in five here."""
    client = connect_to(topology)

    async def busy() -> None:
        while True:
            await client.get("chatrelay-test:nothing")

    try:
        for n in range(100):
            task = asyncio.create_task(busy())
            for _ in range(n % 7):  # land the cancel at varying points of a command
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2.0)
            assert done, f"cancellation {n} was swallowed"
    finally:
        await client.aclose()


async def test_a_paused_redis_costs_a_bounded_call_its_timeout_and_no_more(
    pausable: PausableRedis,
) -> None:
    """Warm pooled connections and a fresh one (whose handshake is never answered)
    both give up after the bound; afterwards every connection reads its own answers."""
    client, fresh = connect(pausable.url), connect(pausable.url)
    try:
        await client.set("k", "v")
        with pausable.paused():
            for call in (client.get("k"), client.set("k", "lost?"), fresh.ping()):
                outcome, seconds = await timed(bounded(call, 0.2))
                assert isinstance(outcome, TimeoutError)
                assert isinstance(outcome, REDIS_FAILURES)
                assert str(outcome) == "no answer from Redis within 0.2 s"
                assert 0.19 <= seconds < 0.2 + MARGIN
        # The cancelled calls closed their connections: no stale reply is read here.
        assert await bounded(fresh.ping()) is True
        assert await bounded(client.get("k")) in (b"v", b"lost?")  # the SET may have landed
        assert await bounded(client.set("k", "v2")) is True
        assert await bounded(client.get("k")) == b"v2"
        assert await bounded(client.incr("n")) == 1
    finally:
        await client.aclose()
        await fresh.aclose()


async def test_bounded_passes_results_and_the_calls_own_errors_through() -> None:
    async def answers() -> str:
        return "ok"

    async def times_out_itself() -> None:
        raise TimeoutError("the call's own")

    assert await bounded(answers(), 0.1) == "ok"
    with pytest.raises(TimeoutError, match="the call's own"):
        await bounded(times_out_itself(), 5.0)


async def test_more_commands_than_pooled_connections_wait_for_one(
    topology: Topology, keys: Keys
) -> None:
    """30 commands that each hold a connection for 0.2 s, through a pool of 10
    (to each node, on a cluster: the keys share a slot so all go to one).

    One server's pool and a Sentinel master's wait for a connection to come back,
    where redis-py's default pools would fail the 11th ("Too many connections").
    A cluster's per-node pools cannot wait (``connect_cluster``): there the 11th
    to 30th fail at once, as an outage does, and the pool serves again as soon
    as connections come back."""
    client = connect_to(topology, max_connections=10)
    try:
        await client.ping()  # a cluster client learns its nodes first
        started = time.monotonic()
        results = await asyncio.gather(
            *(client.blpop([keys.prefix + f"{{pool}}-{i}"], timeout=0.2) for i in range(30)),
            return_exceptions=True,
        )
        if topology.cluster:
            assert results[:10] == [None] * 10
            assert all(isinstance(r, MaxConnectionsError) for r in results[10:]), results
            assert all(isinstance(r, REDIS_FAILURES) for r in results[10:])  # degrade, not crash
            assert await client.blpop([keys.prefix + "{pool}-0"], timeout=0.01) is None
        else:
            assert results == [None] * 30
            assert time.monotonic() - started >= 0.55  # three rounds of ten, not one
    finally:
        await client.aclose()
