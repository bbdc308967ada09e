"""A Redis that stops answering (SIGSTOP: what a hang or a partition looks like)
costs each call on a reply's path its bound and no more, every module then
degrades exactly as for a refused connection, and all is well once Redis resumes.

Each test pauses a private redis-server (``pausable``), never the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from core.llm.events import Usage
from core.state.buckets import RedisBudget
from core.state.cancel import CancelBus
from core.state.choices import ModelChoices
from core.state.connection import REDIS_FAILURES, REPLY_PATH_TIMEOUT, connect
from core.state.conversations import Conversations, Turn
from core.state.dedupe import Dedupe
from core.state.features import MissingFeatures
from core.state.greetings import Greetings
from core.state.handoff import Handoffs
from core.state.keys import ConversationKey, Keys
from core.state.locks import ConversationLocks
from core.state.resets import ResetMarks
from core.state.usage import QuotaDecision, UsageLedger, UsageTotals
from tests.state.pausable import MARGIN, PausableRedis, settled, timed

BOUND = 0.2
"""The bound every object under test is given instead of ``REPLY_PATH_TIMEOUT``."""

CONV = ConversationKey("slack", "T1", "C1", "1700.1")
DEDUPE, USAGE, CANCEL = "core.state.dedupe", "core.state.usage", "core.state.cancel"


@pytest.fixture
async def client(pausable: PausableRedis) -> AsyncIterator[Redis]:
    client = connect(pausable.url)
    try:
        assert await client.ping() is True  # a warm pooled connection, as in service
        yield client
    finally:
        await client.aclose()


async def test_every_reply_path_piece_is_bounded_by_default(redis: Redis, keys: Keys) -> None:
    """What ``open_state`` and the adapters build, with no timeout given."""
    pieces = (
        Dedupe(redis, keys),
        UsageLedger(redis, keys),
        Handoffs(redis, keys),
        Conversations(redis, keys),
        CancelBus(redis, keys),
        ConversationLocks(redis, keys),
        RedisBudget(redis, keys),
    )
    assert [piece.timeout for piece in pieces] == [REPLY_PATH_TIMEOUT] * len(pieces)
    assert 0 < REPLY_PATH_TIMEOUT <= 2.0  # about an edit interval, well under 5 s


async def test_the_adapters_marks_are_bounded_by_default(redis: Redis, keys: Keys) -> None:
    """The stores ``open_state`` builds for the adapters' own marks."""
    pieces = (
        ResetMarks(redis, keys, ttl=60),
        ModelChoices(redis, keys),
        Greetings(redis, keys),
        MissingFeatures(redis, keys),
    )
    assert [piece.timeout for piece in pieces] == [REPLY_PATH_TIMEOUT] * len(pieces)


def within_bound(seconds: float) -> bool:
    """Waited for the bound (Redis was asked), and not much longer."""
    return BOUND - 0.01 <= seconds < BOUND + MARGIN


async def test_dedupe_claims_in_memory_after_the_bound_and_shares_again_after(
    pausable: PausableRedis, client: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=DEDUPE)
    dedupe = Dedupe(client, keys, timeout=BOUND)
    assert await dedupe.claim("slack:E0") is True
    with pausable.paused():
        first, seconds = await timed(dedupe.claim("slack:E1"))
        assert first is True and within_bound(seconds)
        again, seconds = await timed(dedupe.claim("slack:E1"))  # Slack's retry
        assert again is False and within_bound(seconds)
        assert await dedupe.claim("slack:E0") is True  # only Redis remembered that one
    await settled(client)
    assert await dedupe.claim("slack:E2") is True
    assert await dedupe.claim("slack:E2") is False
    assert await client.exists(keys.dedupe("slack:E2")) == 1
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == DEDUPE]
    assert messages == [
        (
            logging.WARNING,
            f"Redis is unreachable (no answer from Redis within {BOUND:g} s): "
            "event dedupe is per-process",
        ),
        (logging.INFO, "Redis is back: event dedupe is shared again"),
    ]


async def test_quotas_allow_and_recording_warns_after_the_bound(
    pausable: PausableRedis, client: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = UsageLedger(client, keys, user_quota=100, timeout=BOUND, wall=lambda: 86400.0)
    await ledger.record(user="U1", channel="C1", usage=Usage(60, 50))
    refused = await ledger.check(user="U1", channel="C1")
    assert refused == QuotaDecision(
        False,
        "Sorry, you have used today's allowance of 100 tokens, so I won't ask the model "
        "again until it resets at midnight UTC (in 24 h 0 min).",
    )
    with caplog.at_level(logging.WARNING, logger=USAGE), pausable.paused():
        decision, seconds = await timed(ledger.check(user="U1", channel="C1"))
        assert decision == QuotaDecision(True) and within_bound(seconds)
        recorded, seconds = await timed(ledger.record(user="U2", channel="C1", usage=Usage(1, 1)))
        assert recorded is None and within_bound(seconds)
        totals, seconds = await timed(ledger.totals("user", "U1"))
        assert isinstance(totals, TimeoutError) and within_bound(seconds)
    assert [r.getMessage() for r in caplog.records if r.name == USAGE] == [
        f"could not check token quotas (allowing): no answer from Redis within {BOUND:g} s",
        f"could not record token usage of U2 in C1: no answer from Redis within {BOUND:g} s",
    ]
    await settled(client)
    assert await ledger.totals("user", "U1") == UsageTotals(60, 50)
    assert (await ledger.check(user="U3", channel="C1")).allowed is True


async def test_handoff_calls_raise_after_the_bound_and_work_after(
    pausable: PausableRedis, client: Redis, keys: Keys
) -> None:
    handoffs = Handoffs(client, keys, timeout=BOUND)
    await handoffs.hand_over(CONV, quiet_minutes=0)
    other = ConversationKey("slack", "T1", "C1", "1700.2")
    with pausable.paused():
        for call in (
            handoffs.is_handed_over(CONV),
            handoffs.hand_over(other, quiet_minutes=5),
            handoffs.resume(CONV),
        ):
            outcome, seconds = await timed(call)
            assert isinstance(outcome, TimeoutError) and within_bound(seconds)
            assert isinstance(outcome, REDIS_FAILURES)
    await settled(client)
    fresh = ConversationKey("slack", "T1", "C1", "1700.3")
    assert await handoffs.is_handed_over(fresh) is False
    await handoffs.hand_over(fresh, quiet_minutes=5)
    assert await handoffs.is_handed_over(fresh) is True
    assert await handoffs.resume(fresh) is True
    assert await handoffs.is_handed_over(fresh) is False


async def test_conversation_calls_raise_after_the_bound_and_work_after(
    pausable: PausableRedis, client: Redis, keys: Keys
) -> None:
    conversations = Conversations(client, keys, timeout=BOUND)
    question, answer = Turn("user", "U1", "hi"), Turn("assistant", None, "hello")
    await conversations.append(CONV, question, answer)
    late = Turn("user", "U1", "are you there?")
    with pausable.paused():
        for call in (
            conversations.context(CONV, "Be brief.", late),
            conversations.append(CONV, late),
            conversations.history(CONV),
            conversations.reset(CONV),
        ):
            outcome, seconds = await timed(call)
            assert isinstance(outcome, TimeoutError) and within_bound(seconds)
    await settled(client)
    # A call that timed out had been sent: the server may run it once it resumes.
    # None of them was lost halfway (each is one transaction), and none ran twice.
    history = await conversations.history(CONV)
    assert history in ([], [question, answer], [question, answer, late])
    await conversations.reset(CONV)
    await conversations.append(CONV, question)
    assert await conversations.history(CONV) == [question]
    messages = await conversations.context(CONV, "Be brief.", late)
    assert [m.content for m in messages] == ["Be brief.", "hi", "are you there?"]


async def test_the_adapters_marks_give_up_after_the_bound_and_work_after(
    pausable: PausableRedis, client: Redis, keys: Keys
) -> None:
    resets = ResetMarks(client, keys, ttl=60, timeout=BOUND)
    choices = ModelChoices(client, keys, timeout=BOUND)
    greetings = Greetings(client, keys, timeout=BOUND)
    features = MissingFeatures(client, keys, timeout=BOUND)
    with pausable.paused():
        # Readers on a reply's path answer as if nothing were stored.
        for call in (resets.since(CONV), choices.chosen("discord", ["1"], ["m"])):
            outcome, seconds = await timed(call)
            assert outcome is None and within_bound(seconds)
        # The rest raise, and the adapter decides.
        for raising in (
            resets.mark(CONV, "9"),
            choices.choose("discord", "1", "m"),
            greetings.claim("slack", "T1", "U1", every=60),
            features.lacks("slack", "T1", "native"),
            features.note("slack", "T1", "native", ttl=60),
        ):
            outcome, seconds = await timed(raising)
            assert isinstance(outcome, TimeoutError) and within_bound(seconds)
    await settled(client)
    fresh = ConversationKey("slack", "T1", "C1", "1700.9")
    await resets.mark(fresh, "7")
    assert await resets.since(fresh) == "7"
    await choices.choose("discord", "2", "m")
    assert await choices.chosen("discord", ["2"], ["m"]) == "m"
    assert await greetings.claim("slack", "T1", "U2", every=60) is True
    await features.note("slack", "T2", "native", ttl=60)
    assert await features.lacks("slack", "T2", "native") is True


class Stops:
    """A stoppable that remembers how it was stopped."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.stopped = asyncio.Event()

    def stop(self, state: str = "stopped", reason: str | None = None) -> None:
        self.calls.append((state, reason))
        self.stopped.set()


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records if r.name == CANCEL)


async def test_the_cancel_bus_watches_and_stops_locally_after_the_bound_and_shares_after(
    pausable: PausableRedis, client: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=CANCEL)
    sender = connect(pausable.url)
    streaming, local = Stops(), Stops()
    try:
        async with (
            CancelBus(client, keys, timeout=BOUND) as bus,
            contextlib.AsyncExitStack() as stack,
        ):
            with pausable.paused():
                # Registering a reply checks for an early Stop: skipped after the bound.
                entered, seconds = await timed(
                    stack.enter_async_context(bus.watching("r1", streaming))
                )
                assert entered is None and within_bound(seconds)
                await stack.enter_async_context(bus.watching("r2", local))
                # A Stop can't reach other replicas, but stops the reply streaming here.
                told, seconds = await timed(bus.cancel("r2", "by hand"))
                assert told is False and within_bound(seconds)
                assert local.calls == [("stopped", "by hand")]
            assert streaming.calls == []
            assert await CancelBus(sender, keys).cancel("r1", "after") is True
            await asyncio.wait_for(streaming.stopped.wait(), 3.0)
            assert streaming.calls == [("stopped", "after")]
        assert [r.getMessage() for r in caplog.records if r.name == CANCEL] == [
            f"could not check for an early Stop of r1: no answer from Redis within {BOUND:g} s",
            f"could not check for an early Stop of r2: no answer from Redis within {BOUND:g} s",
            f"could not publish the Stop of r2: no answer from Redis within {BOUND:g} s",
        ]
    finally:
        await sender.aclose()


async def test_a_listener_reconnecting_to_a_paused_redis_holds_no_reply_and_comes_back(
    pausable: PausableRedis, client: Redis, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=CANCEL)
    sender = connect(pausable.url)
    streaming = Stops()
    try:
        # The listener waits reconnect_delay after losing its connection, so it
        # tries to reconnect only once the server is paused.
        async with (
            CancelBus(client, keys, timeout=BOUND, reconnect_delay=BOUND) as bus,
            contextlib.AsyncExitStack() as stack,
        ):
            await sender.client_kill_filter(_type="pubsub")
            with pausable.paused():
                await until(lambda: logged(caplog, "Stop works on this replica only"))
                entered, seconds = await timed(
                    stack.enter_async_context(bus.watching("r1", streaming))
                )
                assert entered is None and within_bound(seconds)
                told, seconds = await timed(bus.cancel("r9"))
                assert told is False and within_bound(seconds)
                assert not logged(caplog, "Stop works across replicas again")
            await until(lambda: logged(caplog, "Stop works across replicas again"))
            assert await CancelBus(sender, keys).cancel("r1", "after") is True
            await asyncio.wait_for(streaming.stopped.wait(), 3.0)
            assert streaming.calls == [("stopped", "after")]
    finally:
        await sender.aclose()
