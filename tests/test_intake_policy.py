"""The intake rules every adapter follows (``core.service.policy``) and history
recall (``core.service.history``), against a real Redis; the Redis-down
defaults against a paused private server."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

import pytest
from redis.asyncio import Redis

from core.rules import ChannelPolicy
from core.service.history import recall
from core.service.policy import EMPTY_MESSAGE, Incoming, IntakePolicy, Verdict
from core.state.conversations import Turn
from core.state.keys import ConversationKey, Keys
from core.state.settings import load_state_settings
from core.state.store import State, open_state
from tests.state.conftest import keys, pausable, redis, redis_url
from tests.state.pausable import PausableRedis

__all__ = ["keys", "pausable", "redis", "redis_url"]

AGENT = "U-agent"
CUSTOMER = "U-customer"
THREAD = ConversationKey("slack", "T1", "C1", "100.1")


def policy(mode: str = "auto", **overrides: object) -> ChannelPolicy:
    fields: dict[str, object] = {
        "mode": mode,
        "system_prompt": None,
        "model": None,
        "agents": frozenset({AGENT}),
        "agent_groups": frozenset(),
        "handoff_quiet_minutes": 30.0,
        "thread_per_message": False,
    }
    return ChannelPolicy.model_validate({**fields, **overrides})


_ids = iter(range(1, 1_000_000))


def message(
    author: str = CUSTOMER,
    text: str = "my order is late",
    *,
    named: bool = False,
    continuing: bool = True,
    conversation: ConversationKey = THREAD,
    rule: ChannelPolicy | None = None,
) -> Incoming:
    return Incoming(
        platform="slack",
        message_id=f"Ev{next(_ids)}",
        conversation=conversation,
        channel="C1",
        author=author,
        text=text,
        policy=rule or policy(),
        named=named,
        continuing=continuing,
    )


class Agents:
    """``is_agent`` for one message, counting how often it was asked (it may cost
    a platform call)."""

    def __init__(self) -> None:
        self.asked = 0

    def of(self, incoming: Incoming):  # type: ignore[no-untyped-def]
        async def is_agent() -> bool:
            self.asked += 1
            return incoming.policy.is_agent(incoming.author)

        return is_agent


async def decide(intake: IntakePolicy, incoming: Incoming, agents: Agents | None = None) -> Verdict:
    return await intake.decide(incoming, (agents or Agents()).of(incoming))


@pytest.fixture
async def state(redis_url: str, keys: Keys, redis: Redis) -> AsyncIterator[State]:
    settings = load_state_settings(redis_url=redis_url, redis_prefix=keys.prefix)
    async with open_state(settings) as opened:
        yield opened


async def test_a_message_is_answered_once_however_often_it_is_delivered(state: State) -> None:
    intake = IntakePolicy(state, "be brief")
    incoming = message(rule=policy("mention"), named=True)
    assert await decide(intake, incoming) is Verdict.REPLY
    again = dataclasses.replace(incoming)  # a retry, or another replica's copy
    assert await decide(intake, again) is Verdict.DEDUPLICATED


async def test_mention_channels_never_ask_who_is_an_agent(state: State) -> None:
    agents = Agents()
    verdict = await decide(IntakePolicy(state, ""), message(AGENT, rule=policy("mention")), agents)
    assert verdict is Verdict.REPLY and agents.asked == 0


async def test_an_agent_takes_a_conversation_over_until_they_say_resume(state: State) -> None:
    intake = IntakePolicy(state, "")
    assert await decide(intake, message()) is Verdict.REPLY
    assert await decide(intake, message(AGENT, "I'll take this one")) is Verdict.IGNORED
    assert await state.handoffs.is_handed_over(THREAD)
    assert await decide(intake, message()) is Verdict.IGNORED
    # A customer naming the bot where an agent has it is the agent's too.
    assert await decide(intake, message(named=True)) is Verdict.IGNORED
    # An agent naming the bot without "resume" doesn't hand it back.
    assert await decide(intake, message(AGENT, "see above", named=True)) is Verdict.IGNORED
    assert await decide(intake, message(AGENT, " Resume ", named=True)) is Verdict.RESUMED
    assert not await state.handoffs.is_handed_over(THREAD)
    assert await decide(intake, message()) is Verdict.REPLY


async def test_a_customer_saying_resume_changes_nothing(state: State) -> None:
    intake = IntakePolicy(state, "")
    await decide(intake, message(AGENT, "mine"))
    assert await decide(intake, message(text="resume", named=True)) is Verdict.IGNORED
    assert await state.handoffs.is_handed_over(THREAD)


async def test_an_agent_starting_a_conversation_is_not_answered_nor_takes_it_over(
    state: State,
) -> None:
    intake = IntakePolicy(state, "")
    assert await decide(intake, message(AGENT, continuing=False)) is Verdict.IGNORED
    assert not await state.handoffs.is_handed_over(THREAD)
    # Naming the bot in a new conversation is a question like any other, even "resume".
    started = message(AGENT, "resume", named=True, continuing=False)
    assert await decide(intake, started) is Verdict.REPLY


async def test_without_redis_the_bot_stays_quiet_where_an_agent_may_be_and_answers_the_rest(
    pausable: PausableRedis, keys: Keys
) -> None:
    settings = load_state_settings(redis_url=pausable.url, redis_prefix=keys.prefix)
    async with open_state(settings) as state:
        intake = IntakePolicy(state, "")
        with pausable.paused():
            assert await decide(intake, message()) is Verdict.IGNORED  # a thread: maybe an agent's
            assert await decide(intake, message(continuing=False)) is Verdict.REPLY
            assert await decide(intake, message(named=True)) is Verdict.REPLY  # asked by name
            resume = message(AGENT, "resume", named=True)
            assert await decide(intake, resume) is Verdict.FAILED  # can't be recorded
            assert await decide(intake, message(AGENT, "mine")) is Verdict.IGNORED


async def test_a_request_takes_the_channels_prompt_and_model_unless_overridden(
    state: State,
) -> None:
    intake = IntakePolicy(state, "the service's prompt")
    plain = intake.request(message(text=""))
    assert plain.system_prompt == "the service's prompt" and plain.model is None
    assert plain.text == EMPTY_MESSAGE
    assert (plain.platform, plain.channel, plain.author) == ("slack", "C1", CUSTOMER)
    ruled = message(rule=policy(system_prompt="support voice", model="small"))
    request = intake.request(ruled, target={"channel": "C1"}, partition="0")
    assert (request.system_prompt, request.model) == ("support voice", "small")
    assert dict(request.target) == {"channel": "C1"} and request.partition == "0"
    assert intake.request(ruled, model="chosen").model == "chosen"


class Platform:
    """A platform's history, counting the reads (they are rate limited)."""

    def __init__(self, turns: Sequence[Turn]) -> None:
        self.turns = list(turns)
        self.reads = 0

    async def fetch(self) -> Sequence[Turn]:
        self.reads += 1
        return self.turns


async def test_history_is_read_back_once_and_only_when_the_store_has_none(state: State) -> None:
    platform = Platform([Turn("user", CUSTOMER, "hi"), Turn("assistant", None, "hello")])
    assert await recall(state, THREAD, platform.fetch, "thread 100.1") == 2
    assert [t.text for t in await state.conversations.history(THREAD)] == ["hi", "hello"]
    assert await recall(state, THREAD, platform.fetch, "thread 100.1") == 0
    assert platform.reads == 1


async def test_without_redis_history_is_not_read_back(pausable: PausableRedis, keys: Keys) -> None:
    """There is nowhere to keep it: the rate-limited read would be wasted."""
    settings = load_state_settings(redis_url=pausable.url, redis_prefix=keys.prefix)
    async with open_state(settings) as state:
        platform = Platform([Turn("user", CUSTOMER, "hi")])
        with pausable.paused():
            assert await recall(state, THREAD, platform.fetch, "thread 100.1") == 0
        assert platform.reads == 0
