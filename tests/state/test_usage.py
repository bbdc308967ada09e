"""Token accounting per user and channel per UTC day, and polite daily quotas."""

from __future__ import annotations

from datetime import datetime

from redis.asyncio import Redis

from core.llm.events import Usage
from core.state.keys import Keys
from core.state.topology import Topology, connect_to
from core.state.usage import UsageLedger, UsageTotals
from tests.state.conftest import unreachable


class Wall:
    """A settable wall clock."""

    def __init__(self, when: str) -> None:
        self.now = datetime.fromisoformat(when).timestamp()

    def __call__(self) -> float:
        return self.now


async def test_usage_adds_up_per_user_and_channel_per_day(redis: Redis, keys: Keys) -> None:
    wall = Wall("2025-03-01T23:00:00+00:00")
    ledger = UsageLedger(redis, keys, wall=wall)
    await ledger.record(user="slack:T1:U1", channel="slack:T1:C1", usage=Usage(100, 20, 5))
    await ledger.record(user="slack:T1:U2", channel="slack:T1:C1", usage=Usage(50, 10))
    assert await ledger.totals("user", "slack:T1:U1") == UsageTotals(100, 20, 5)
    assert await ledger.totals("channel", "slack:T1:C1") == UsageTotals(150, 30, 5)
    assert (await ledger.totals("channel", "slack:T1:C1")).total == 180
    wall.now += 3600  # past midnight UTC: a new day
    await ledger.record(user="slack:T1:U1", channel="slack:T1:C1", usage=Usage(1, 1))
    assert await ledger.totals("user", "slack:T1:U1") == UsageTotals(1, 1, 0)
    assert await ledger.totals("user", "slack:T1:U1", "2025-03-01") == UsageTotals(100, 20, 5)
    key = keys.usage("user", "slack:T1:U1", "2025-03-02")
    assert 35 * 86400 - 10 <= await redis.ttl(key) <= 35 * 86400


async def test_user_quota_refuses_politely_before_the_model_is_called(
    redis: Redis, keys: Keys
) -> None:
    wall = Wall("2025-03-01T21:30:00+00:00")
    ledger = UsageLedger(redis, keys, user_quota=1000, wall=wall)
    assert (await ledger.check(user="U1", channel="C1")).allowed
    await ledger.record(user="U1", channel="C1", usage=Usage(900, 99))
    assert (await ledger.check(user="U1", channel="C1")).allowed  # 999 < 1000
    await ledger.record(user="U1", channel="C1", usage=Usage(0, 1))
    decision = await ledger.check(user="U1", channel="C1")
    assert not decision.allowed
    assert decision.message == (
        "Sorry, you have used today's allowance of 1,000 tokens, so I won't ask the model "
        "again until it resets at midnight UTC (in 2 h 30 min)."
    )
    assert (await ledger.check(user="U2", channel="C1")).allowed  # others are unaffected
    wall.now += 3 * 3600
    assert (await ledger.check(user="U1", channel="C1")).allowed  # a new day


async def test_channel_quota_covers_everyone_in_it(redis: Redis, keys: Keys) -> None:
    ledger = UsageLedger(redis, keys, channel_quota=500, wall=Wall("2025-03-01T23:59:30+00:00"))
    await ledger.record(user="U1", channel="C1", usage=Usage(300, 0))
    await ledger.record(user="U2", channel="C1", usage=Usage(200, 0))
    decision = await ledger.check(user="U3", channel="C1")
    assert not decision.allowed
    assert decision.message is not None
    assert decision.message.startswith("Sorry, this channel has used today's allowance of 500")
    assert decision.message.endswith("(in 1 min).")
    assert (await ledger.check(user="U3", channel="C2")).allowed


async def test_accounting_never_stops_a_reply_when_redis_is_away(
    topology: Topology, keys: Keys
) -> None:
    nowhere = connect_to(unreachable(topology))
    try:
        without_quota = UsageLedger(nowhere, keys)
        assert (await without_quota.check(user="U1", channel="C1")).allowed  # no round trip
        with_quota = UsageLedger(nowhere, keys, user_quota=10)
        assert (await with_quota.check(user="U1", channel="C1")).allowed
        await with_quota.record(user="U1", channel="C1", usage=Usage(1, 1))  # logs, no raise
    finally:
        await nowhere.aclose()
