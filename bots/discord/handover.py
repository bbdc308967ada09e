"""Messages a draining process accepted, answered by the next process of their shard.

Discord never redelivers a gateway event. A message that reaches a process
while it drains (a deploy) has been claimed in dedupe and is seen by no other
process, so dropping it would lose it. Instead the draining process does
everything up to the reply itself (which conversation, which channel, the
thread of an auto-reply channel, the prompt and model) and hands the rest over
through ``core.state.deferred``: the reply request and where the reply goes.
Any process running the message's shard takes it and streams the answer as if
the message had reached it, replying to the user's message.

The partition is the shard of the message's guild (DMs: shard 0), because only
a process running that shard has the guild's channels and may write where the
shard's rules (permissions checked, allow lists applied) said it could.

The same payload rides in every reply's in-flight record, so a reply whose
process died before it showed any text is answered anew the same way
(``core.state.inflight``). For an ``/ask`` (``kind: "ask"``) the payload names
the interaction's deferred response, and the next process answers in it, with
the interaction's token: a credential, which lives in Redis as the record's
own targets do and is never logged (``AskTarget`` leaves it out of its repr).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.service import ReplyRequest
from core.state import ConversationKey

PLATFORM = "discord"
VERSION = 1
"""Of the payload: a process that reads a newer one drops it instead of misreading it."""


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    """Where a reply to a message goes: a channel, thread or DM, replying to the
    user's message (``reference``) and notifying them (``notify``), or, in a thread
    opened for the message, without a reference."""

    channel: int
    guild: int | None
    reference: int | None = None
    notify: bool = False


@dataclass(frozen=True, slots=True)
class AskTarget:
    """Where an ``/ask`` reply goes: the interaction's deferred response, written
    with its application id and token, in a channel it may continue in once the
    token is about to die (``writable``: the bot may write there)."""

    app: int
    token: str = field(repr=False)
    response: int
    """The id of the deferred ("thinking…") response."""
    channel: int
    guild: int | None
    asked_at: float
    """Wall-clock seconds (epoch) of the command: the token lives 15 minutes from it."""
    writable: bool


@dataclass(frozen=True, slots=True)
class HandedOver:
    request: ReplyRequest
    target: ChannelTarget | AskTarget


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard Discord sends a guild's events to (DMs go to shard 0)."""
    if guild_id is None:
        return 0
    return (guild_id >> 22) % max(1, shard_count)


def to_payload(request: ReplyRequest, target: ChannelTarget | AskTarget) -> dict[str, Any]:
    """JSON for ``DeferredRequests.push``. Snowflakes are strings, as Discord writes them."""
    conversation = request.conversation
    to: dict[str, Any]
    if isinstance(target, AskTarget):
        to = {
            "app": str(target.app),
            "token": target.token,
            "response": str(target.response),
            "channel": str(target.channel),
            "guild": _id_or_none(target.guild),
            "asked_at": target.asked_at,
            "writable": target.writable,
        }
    else:
        to = {
            "channel": str(target.channel),
            "guild": _id_or_none(target.guild),
            "reference": _id_or_none(target.reference),
            "notify": target.notify,
        }
    return {
        "v": VERSION,
        "kind": "ask" if isinstance(target, AskTarget) else "message",
        "conversation": {
            "workspace": conversation.workspace,
            "channel": conversation.channel,
            "thread": conversation.thread,
        },
        "author": request.author,
        "text": request.text,
        "channel": request.channel,
        "system_prompt": request.system_prompt,
        "model": request.model,
        "record": dict(request.target),
        "to": to,
    }


def from_payload(payload: Mapping[str, Any]) -> HandedOver:
    """Raises ``ValueError`` for a payload ``to_payload`` did not write."""
    kind = payload.get("kind")
    if payload.get("v") != VERSION or kind not in ("message", "ask"):
        raise ValueError(f"not a version {VERSION} message or /ask hand-over")
    try:
        conversation = payload["conversation"]
        to = payload["to"]
        record = payload.get("record") or {}
        model = payload.get("model")
        request = ReplyRequest(
            platform=PLATFORM,
            conversation=ConversationKey(
                PLATFORM,
                _text(conversation["workspace"]),
                _text(conversation["channel"]),
                _text(conversation["thread"]),
            ),
            author=_text(payload["author"]),
            text=_text(payload["text"]),
            channel=_text(payload["channel"]),
            system_prompt=_text(payload["system_prompt"]),
            model=None if model is None else _text(model),
            target={_text(k): _text(v) for k, v in dict(record).items()},
        )
        target: ChannelTarget | AskTarget
        if kind == "ask":
            asked_at = to["asked_at"]
            if isinstance(asked_at, bool) or not isinstance(asked_at, int | float):
                raise TypeError("asked_at is not a number")
            target = AskTarget(
                app=int(_text(to["app"])),
                token=_text(to["token"]),
                response=int(_text(to["response"])),
                channel=int(_text(to["channel"])),
                guild=_int_or_none(to.get("guild")),
                asked_at=float(asked_at),
                writable=to.get("writable") is True,
            )
        else:
            target = ChannelTarget(
                channel=int(to["channel"]),
                guild=_int_or_none(to.get("guild")),
                reference=_int_or_none(to.get("reference")),
                notify=to.get("notify") is True,
            )
        int(request.author)  # the asker, who may press Stop
    except (KeyError, TypeError) as exc:
        raise ValueError(f"missing or bad field: {exc}") from None
    return HandedOver(request, target)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _id_or_none(value: int | None) -> str | None:
    return None if value is None else str(value)


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected an id string, got {type(value).__name__}")
    return int(value)
