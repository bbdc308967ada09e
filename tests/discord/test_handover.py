"""The hand-over payload: what a draining process leaves for the next one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bots.discord.handover import AskTarget, ChannelTarget, from_payload, shard_of, to_payload
from core.service.responder import ReplyRequest
from core.state.keys import ConversationKey

ASK = AskTarget(
    app=1200000000000000001,
    token="aW50ZXJhY3Rpb24-secret",
    response=1300000000000000002,
    channel=42,
    guild=1200000000000000100,
    asked_at=1796000000.25,
    writable=True,
)

REQUEST = ReplyRequest(
    platform="discord",
    conversation=ConversationKey("discord", "1200000000000000100", "42", "77"),
    author="1200000000000000501",
    text="what about: this?",
    channel="42",
    system_prompt="You are ACME support.",
    model="gpt-4o-mini",
    target={"channel": "42"},
)


@pytest.mark.parametrize(
    "target",
    [
        ChannelTarget(42, 1200000000000000100, reference=1300000000000000001, notify=True),
        ChannelTarget(43, 1200000000000000100),  # the thread opened for the message
        ChannelTarget(44, None, reference=5, notify=True),  # a DM
        ASK,
        AskTarget(7, "aW50ZXJhY3Rpb24-dm", 8, 9, None, 1.5, writable=False),  # in a DM
    ],
)
def test_a_request_and_its_target_survive_the_trip_through_json(
    target: ChannelTarget | AskTarget,
) -> None:
    payload = json.loads(json.dumps(to_payload(REQUEST, target)))
    handed = from_payload(payload)
    assert handed.request == REQUEST
    assert handed.target == target


def test_an_ask_target_never_shows_its_token() -> None:
    """The token is a credential: a log line with the target's repr must not leak it."""
    assert ASK.token not in repr(ASK) and ASK.token not in str(ASK)
    assert to_payload(REQUEST, ASK)["to"] == {
        "app": "1200000000000000001",
        "token": ASK.token,
        "response": "1300000000000000002",
        "channel": "42",
        "guild": "1200000000000000100",
        "asked_at": 1796000000.25,
        "writable": True,
    }
    assert to_payload(REQUEST, ASK)["kind"] == "ask"


def test_without_a_model_the_next_process_uses_the_default_one() -> None:
    request = ReplyRequest(**{**REQUEST.__dict__, "model": None})
    assert from_payload(to_payload(request, ChannelTarget(1, None))).request.model is None


def broken(target: ChannelTarget | AskTarget | None = None, **changes: Any) -> dict[str, Any]:
    payload = to_payload(REQUEST, target or ChannelTarget(42, 7, reference=9, notify=True))
    for key, value in changes.items():
        if value is None:
            payload.pop(key)
        else:
            payload[key] = value
    return payload


@pytest.mark.parametrize(
    "payload",
    [
        broken(v=2),  # a newer process's format: not misread
        broken(kind="interaction"),
        broken(author=None),
        broken(author=501),  # ids are strings
        broken(author="not an id"),
        broken(text=None),
        broken(conversation={"workspace": "1", "channel": "2"}),
        broken(to={"channel": "x"}),
        broken(to={"channel": "1", "guild": 7}),
        broken(record=["channel"]),
        broken(ASK, to={**to_payload(REQUEST, ASK)["to"], "token": None}),
        broken(ASK, to={**to_payload(REQUEST, ASK)["to"], "asked_at": "now"}),
        broken(ASK, to={**to_payload(REQUEST, ASK)["to"], "asked_at": True}),
        broken(ASK, to={**to_payload(REQUEST, ASK)["to"], "response": 5}),
        broken(ASK, to={"channel": "42", "guild": None, "reference": None, "notify": True}),
        broken(kind="ask"),  # a message's target under an /ask's kind
        {},
    ],
)
def test_anything_else_is_refused_as_a_value_error(payload: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        from_payload(payload)


def test_a_guild_belongs_to_the_shard_discord_sends_its_events_to() -> None:
    """Discord's rule: ``(guild_id >> 22) % shard_count``."""
    guild = 1_200_000_000_000_000_100
    assert [shard_of(guild, n) for n in (1, 2, 3, 16)] == [
        0,
        (guild >> 22) % 2,
        (guild >> 22) % 3,
        (guild >> 22) % 16,
    ]
    assert shard_of(None, 16) == 0  # DMs: shard 0
