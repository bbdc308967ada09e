"""The two per-write figures of ``bench.topologies``, measured in this process.

- **updates**: ``replies`` simulated replies each make a platform update every
  ``interval`` seconds the way a streaming reply does: a budget acquire
  (``RedisBudget``), then the platform's confirmation recorded in the reply's
  in-flight record (``Tracker.confirmed``), whose write rides along with the
  next acquire (``core.state.batch``), as ``open_state`` wires them. Counted
  over a steady window: round trips and commands the client sent
  (``bench.redis_count``) and commands the masters ran (``INFO
  commandstats``, the commands the Lua scripts call included), per update.
- **claims**: dedupe claims (``Dedupe.claim``, a ``SET NX EX``) and lock grabs
  (``ConversationLocks.acquire(wait=0)`` of a fresh conversation, the Lua
  grab; each lease is released after, untimed but inside the rate), with and
  without ``WAIT 1`` behind the write (``core.state.replicated``).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import resource
import time
import uuid
from collections import Counter
from typing import Any

import redis

from bench.bucket import quantiles_us, timed
from bench.redis_count import RedisCounter
from bench.topology_servers import Target
from core.reply.budget import Limit, LimitTable
from core.state.batch import WriteBatch
from core.state.buckets import RedisBudget
from core.state.dedupe import Dedupe
from core.state.inflight import InflightRecord, InflightRegistry
from core.state.keys import ConversationKey, Keys
from core.state.locks import ConversationLocks
from core.state.replicated import ReplicatedWrites
from core.state.topology import RedisClient, Topology, connect_to

LIMITS = LimitTable({"bench:*": Limit(1_000_000, 1)})
"""Far above any rate reached: nothing waits for a slot."""
WAIT_TIMEOUT = 0.1
"""``REDIS_WAIT_TIMEOUT``'s default."""


async def connected(topology: Topology) -> RedisClient:
    """A client for ``topology`` that has answered a PING (as ``open_redis``
    makes sure: a cluster client then knows the slot map)."""
    client = connect_to(topology)
    await client.ping()
    return client


def process_cpu() -> float:
    """CPU seconds (user + system) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu(target: Target) -> float:
    """CPU seconds (user + system) the masters have used, summed."""
    total = 0.0
    for host, port in target.masters:
        with redis.Redis(host=host, port=port, socket_timeout=5) as client:
            info: dict[str, Any] = client.info("cpu")
            total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


NOT_OURS = {"info", "ping", "publish", "replconf", "config", "subscribe", "client", "hello"}
"""Commands the masters run for sentinels, replicas and this benchmark, not chatrelay."""


def server_commands(target: Target, reset: bool = False) -> Counter[str]:
    """Commands the masters ran since their last reset (``CONFIG RESETSTAT``),
    by name, ``NOT_OURS`` left out."""
    ran: Counter[str] = Counter()
    for host, port in target.masters:
        with redis.Redis(host=host, port=port, socket_timeout=5) as client:
            if reset:
                client.config_resetstat()
                continue
            stats: dict[str, Any] = client.info("commandstats")
            for key, value in stats.items():
                name = key.removeprefix("cmdstat_").split("|")[0]
                if name not in NOT_OURS:
                    ran[name] += int(value["calls"])
    return ran


async def updates(
    target: Target, replies: int, interval: float, seconds: float, counter: RedisCounter
) -> dict[str, Any]:
    """Round trips and commands per platform update, steady path."""
    redis_client = await connected(target.topology)
    keys = Keys(f"crb-{uuid.uuid4().hex[:6]}:", cluster=target.topology.cluster)
    budget = RedisBudget(redis_client, keys, LIMITS)
    batch = WriteBatch(redis_client)
    budget.batch = batch
    registry = InflightRegistry(redis_client, keys, heartbeat=5.0, timeout=30.0)
    registry.batch = batch
    counting = False
    made = 0
    latencies: list[float] = []
    stop = asyncio.Event()

    async def reply(n: int) -> None:
        nonlocal made
        scope = f"bench:T1:C{n}:chat.update"
        record = InflightRecord(f"r{n}-{uuid.uuid4().hex[:6]}", "bench", {"channel": f"C{n}"})
        async with registry.track(record) as tracker:
            await asyncio.sleep(random.uniform(0, interval))
            text = ""
            while not stop.is_set():
                start = time.perf_counter()
                await budget.acquire(scope)
                if counting:
                    latencies.append(time.perf_counter() - start)
                    made += 1
                text += "word "
                tracker.confirmed(0, text, False)
                await asyncio.sleep(interval)
            tracker.settled = True

    tasks = [asyncio.create_task(reply(n)) for n in range(replies)]
    await asyncio.sleep(interval + 1.0)  # every reply started: first records written
    await asyncio.to_thread(server_commands, target, True)
    counter.reset()
    counting = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.perf_counter() - started
    trips = sum(counter.round_trips.values())
    by_label: Counter[str] = Counter()
    for (label, _), n in counter.round_trips.items():
        by_label[label] += n
    sent = sum(counter.commands.values())
    ran = await asyncio.to_thread(server_commands, target)
    stop.set()
    await asyncio.gather(*tasks)
    await batch.aclose()
    await budget.aclose()
    await redis_client.aclose()
    p50, p99 = quantiles_us(latencies)
    return {
        "topology": target.name,
        "replies": replies,
        "interval": interval,
        "updates": made,
        "seconds": elapsed,
        "round_trips_per_update": trips / made,
        "round_trips_by_label": {k: v / made for k, v in by_label.most_common()},
        "commands_sent_per_update": sent / made,
        "commands_run_per_update": ran.total() / made,
        "commands_run_by_name": {k: v / made for k, v in ran.most_common()},
        "acquire_p50_us": p50,
        "acquire_p99_us": p99,
    }


async def claims(target: Target, replicas: int, callers: int, seconds: float) -> dict[str, Any]:
    """Dedupe claims and lock grabs on ``target``, each with ``WAIT replicas``
    (none when 0)."""
    redis_client = await connected(target.topology)
    keys = Keys(f"crb-{uuid.uuid4().hex[:6]}:", cluster=target.topology.cluster)
    writes = ReplicatedWrites(redis_client, replicas=replicas, timeout=WAIT_TIMEOUT)
    dedupe = Dedupe(redis_client, keys, writes=writes)
    locks = ConversationLocks(redis_client, keys, writes=writes)
    run = uuid.uuid4().hex[:6]
    ids = itertools.count()

    async def claim() -> None:
        event = f"bench:{run}:{next(ids)}"
        assert await dedupe.claim(event), "a fresh event id was not claimed"

    await timed(claim, 1, 0.2)  # warm up: connections, slot map, scripts on every node
    await grab_rates(locks, run + "w", 1, 0.2)
    cpu = process_cpu()
    claim_rate, claim_p50, claim_p99 = await timed(claim, callers, seconds)
    claim_cores = (process_cpu() - cpu) / seconds
    cpu = process_cpu()
    grab_rate, grab_p50, grab_p99 = await grab_rates(locks, run, callers, seconds)
    grab_cores = (process_cpu() - cpu) / seconds
    timed_out = writes._unwaited_until > 0  # a WAIT saw no replica in time
    assert not dedupe._degraded, "Redis stopped answering claims in time"
    await redis_client.aclose()
    return {
        "topology": target.name,
        "wait_replicas": replicas,
        "callers": callers,
        "claims_per_s": claim_rate,
        "claim_p50_us": claim_p50,
        "claim_p99_us": claim_p99,
        "grabs_per_s": grab_rate,
        "grab_p50_us": grab_p50,
        "grab_p99_us": grab_p99,
        "claim_client_cores": claim_cores,
        "grab_client_cores": grab_cores,
        "wait_timed_out": timed_out,
    }


async def grab_rates(
    locks: ConversationLocks, run: str, callers: int, seconds: float
) -> tuple[float, float, float]:
    """Grabs per second (each released after, inside the rate) and the p50 /
    p99 µs of the grab alone."""
    latencies: list[float] = []
    numbers = iter(range(10**9))
    end = time.perf_counter() + seconds

    async def caller() -> None:
        clock = time.perf_counter
        while clock() < end:
            conversation = ConversationKey("bench", "T1", f"{run}-g{next(numbers)}")
            start = clock()
            lease = await locks.acquire(conversation, wait=0)
            latencies.append(clock() - start)
            assert lease is not None and lease.shared, "a fresh conversation's lock was not had"
            await lease.release()

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    rate = len(latencies) / (time.perf_counter() - started)
    return (rate, *quantiles_us(latencies))
