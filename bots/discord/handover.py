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

A reply that can't start here (``refuse``) is handed over the core's way
(``Responder.hand_over``); when Redis can't take it, the user is asked to try
again rather than answered with nothing. A hand-over this process picks up is
answered like any reply (``answer_handed_over``): in the channel, replying to
the user's message, or, for an ``/ask``, in its own response while the token
allows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import discord

from bots.discord.api import NO_MENTIONS, InteractionOutlet, TokenExpired
from bots.discord.format import RESTARTING_TEXT, Rendered
from bots.discord.limits import GLOBAL_SCOPE, channel_scope
from bots.discord.settings import INTERACTION_TOKEN_LIFETIME, PLATFORM
from core.reply import MessageGone, RateLimited, acquire_all
from core.service import IntakeOutcome, ReplyRequest
from core.state import ConversationKey, DeferredRequest

if TYPE_CHECKING:
    from bots.discord.replies import Replies

log = logging.getLogger(__name__)

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


# -- refusing and answering --------------------------------------------------------


async def refuse(
    replies: Replies, request: ReplyRequest, target: ChannelTarget | AskTarget
) -> IntakeOutcome:
    """Leave the reply to the next process of the message's shard (``request``
    carries the payload and the partition); without Redis, ask the user to try
    again rather than answer nothing."""
    outcome = await replies.responder.hand_over(request)
    if outcome == "handed_over":
        return outcome
    log.info("asking the author in %s to try again", request.conversation.id)
    if isinstance(target, AskTarget):
        await _ask_restarting(replies, target)
    else:
        await _say_restarting(replies, target)
    return outcome


async def answer_handed_over(replies: Replies, deferred: DeferredRequest) -> None:
    """Answer a message that a draining process accepted (``run_pickup`` calls
    this); raises ``ValueError`` for a payload this version can't read."""
    handed = from_payload(deferred.payload)
    with replies.working():
        target = handed.target
        log.info(
            "answering in %s %s handed over %.1fs ago",
            handed.request.conversation.id,
            "an /ask" if isinstance(target, AskTarget) else "a message",
            time.time() - deferred.deferred_at,
        )
        if isinstance(target, AskTarget):
            await _ask_again(replies, handed.request, target)
        else:
            await replies.in_channel(handed.request, target)


async def _ask_again(replies: Replies, request: ReplyRequest, target: AskTarget) -> IntakeOutcome:
    """An ``/ask`` whose process died before the answer began: answer it in its
    own response, as its process would have, for as long as the token allows;
    past ``DISCORD_INTERACTION_WINDOW`` the reply moves to the channel (the
    response pointing there), as any ``/ask`` reply does."""
    age = time.time() - target.asked_at
    if age >= INTERACTION_TOKEN_LIFETIME and not target.writable:
        log.warning(
            "an /ask handed over %.0fs after it was asked can't be answered: its "
            "token is dead and the bot can't write in its channel",
            age,
        )
        return "failed"
    request = replies.handing_over(request, target)
    return await replies.deliver(
        request,
        outlet=lambda: _resumed(replies, target),
        fallback=lambda: (
            replies.channel_outlet(target.channel, target.guild) if target.writable else None
        ),
        deadline=replies.clock.now() + replies.settings.discord_interaction_window - age,
        refused=lambda: refuse(replies, request, target),
    )


async def _say_restarting(replies: Replies, target: ChannelTarget) -> None:
    channel = replies.messageable(target.channel, target.guild)
    reply: dict[str, Any] = {}
    if target.reference is not None:
        message = channel.get_partial_message(target.reference)
        reply["reference"] = message.to_reference(fail_if_not_exists=False)
    try:
        await acquire_all(replies.state.budget, (channel_scope(target.channel), GLOBAL_SCOPE))
        await channel.send(RESTARTING_TEXT, allowed_mentions=NO_MENTIONS, **reply)
    except discord.HTTPException as exc:
        log.warning("could not tell channel %s that the bot restarts: %s", target.channel, exc)


async def _ask_restarting(replies: Replies, target: AskTarget) -> None:
    """An ``/ask`` another process deferred says the bot restarts, rather than
    think until its token dies."""
    outlet = _resumed(replies, target)
    try:
        await acquire_all(replies.state.budget, outlet.scopes)
        await outlet.edit(target.response, Rendered(RESTARTING_TEXT, None), None)
    except (discord.HTTPException, TokenExpired, MessageGone, RateLimited) as exc:
        log.warning("could not tell an /ask in %s that the bot restarts: %s", target.channel, exc)


def _resumed(replies: Replies, target: AskTarget) -> InteractionOutlet:
    return InteractionOutlet.resumed(
        replies.client,
        app_id=target.app,
        token=target.token,
        channel_id=target.channel,
        original_id=target.response,
    )
