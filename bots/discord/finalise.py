"""Ending a reply this process did not finish: an orphan whose process died, or
a final state Discord kept refusing (``core.state.inflight`` retries it from any
replica, with backoff, for an hour by default).

Every message still open (``record.pending``) gets its text and no Stop button;
the reply's last message also says how it ended (``record.outcome``, or
"interrupted" when the process died mid-reply), the others carry no note. A
message that moved from an ``/ask`` response to the channel and whose old
message was never pointed on gets that note too (the ids travel in its target,
see ``bots.discord.sink``).

Every call goes through the budget of the scope it calls (the channel's and
the bot's global one, or the interaction's) and carries ``allowed_mentions``
that ping nobody. A 429 blocks that scope for every replica and raises, so the
registry tries again later; so does any other failure. A message or
interaction that is gone (deleted, 404, a token Discord no longer accepts, or
one older than its 15 minutes) is skipped: nobody can fix it. When every
message was gone, ``MessageGone`` says so to the registry.

A reply that never showed any text and carries a hand-over payload is not
ended as "interrupted": right after this finaliser returns, the registry hands
its message over and the next process of its shard answers it anew
(``answered_anew``). So its messages are only cleared out of the way: an
``/ask`` response (message 0 from the start, "thinking…" or the model's
reasoning) says it is answering again, and the next process writes the answer
into it; a channel message (the reasoning, before any answer) is deleted, so
the answer that comes is the only reply to the user's message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping

import discord

from bots.discord.api import NO_MENTIONS, call
from bots.discord.format import Rendered, RenderMode, answering_again_note, moved_note, render
from bots.discord.limits import GLOBAL_SCOPE, channel_scope, interaction_scope
from bots.discord.settings import INTERACTION_TOKEN_LIFETIME
from core.reply import Budget, MessageGone, Outcome
from core.state.inflight import INTERRUPTED_REASON, InflightRecord

log = logging.getLogger(__name__)


async def finalise_record(
    client: discord.Client, budget: Budget, record: InflightRecord, *, now: float | None = None
) -> None:
    """Finish every open message of ``record``; raises to be retried later.

    ``now`` (epoch seconds) decides which interaction tokens are past their
    lifetime: their messages are skipped without a call."""
    now = time.time() if now is None else now
    token_alive = now - record.started < INTERACTION_TOKEN_LIFETIME
    if answered_anew(record):
        await _clear(client, budget, record, token_alive=token_alive)
        return
    outcome = (
        Outcome(record.outcome, record.reason or None)  # type: ignore[arg-type]
        if record.outcome
        else Outcome("interrupted", INTERRUPTED_REASON)
    )
    last = len(record.messages) - 1
    written = gone = 0
    for index, message in record.pending:
        target = message.target
        if "message" not in target:
            continue  # nothing was posted for it
        mode: RenderMode = "embeds" if target.get("render") == "embeds" else "content"
        shown = render(
            message.text, mode=mode, streaming=False, outcome=outcome if index == last else None
        )
        try:
            await _edit(client, budget, target, shown, token_alive=token_alive)
        except MessageGone as exc:
            log.info("reply %s: message %d can't be finished: %s", record.reply_id, index, exc)
            gone += 1
            continue
        written += 1
        if "from_message" in target and token_alive:
            await _point_on(client, budget, target)
    if gone and not written:
        raise MessageGone(f"none of the {gone} open messages of the reply can be written")


def answered_anew(record: InflightRecord) -> bool:
    """Whether the registry answers ``record``'s message anew once the finaliser
    returns (``InflightRegistry._finalise``, whose rule this is): the reply never
    showed any text nor ended, and it carries what answering again needs."""
    return (
        not record.outcome
        and not any(message.text for message in record.messages)
        and bool(record.handover)
    )


async def _clear(
    client: discord.Client, budget: Budget, record: InflightRecord, *, token_alive: bool
) -> None:
    """Make way for the answer the next process writes (see the module docstring)."""
    written = gone = 0
    for index, message in record.pending:
        target = message.target
        if "message" not in target:
            continue
        try:
            if target.get("kind") == "interaction":
                await _edit(client, budget, target, answering_again_note(), token_alive=token_alive)
            else:
                await _delete(client, budget, target)
        except MessageGone as exc:
            log.info("reply %s: message %d can't be cleared: %s", record.reply_id, index, exc)
            gone += 1
            continue
        written += 1
    if gone and not written:
        raise MessageGone(f"none of the {gone} open messages of the reply can be cleared")


async def _delete(client: discord.Client, budget: Budget, target: Mapping[str, str]) -> None:
    scope = channel_scope(int(target["channel"]))
    await budget.acquire(scope)
    await budget.acquire(GLOBAL_SCOPE)
    channel = client.get_partial_messageable(int(target["channel"]))
    await call(channel.get_partial_message(int(target["message"])).delete(), budget, scope)


async def _point_on(client: discord.Client, budget: Budget, target: Mapping[str, str]) -> None:
    """The ``/ask`` response a message moved from: "this reply continues here"."""
    guild = target.get("guild")
    channel = client.get_partial_messageable(
        int(target["channel"]), guild_id=int(guild) if guild else None
    )
    url = channel.get_partial_message(int(target["message"])).jump_url
    source = {
        "kind": "interaction",
        "app": target["from_app"],
        "token": target["from_token"],
        "message": target["from_message"],
    }
    try:
        await _edit(client, budget, source, moved_note(url), token_alive=True)
    except MessageGone as exc:
        log.info("the /ask response a reply moved from can't point on: %s", exc)


async def _edit(
    client: discord.Client,
    budget: Budget,
    target: Mapping[str, str],
    shown: Rendered,
    *,
    token_alive: bool,
) -> None:
    """One edit, budgeted, with Discord's answer as the engine's exceptions."""
    message_id = int(target["message"])
    if target.get("kind") == "interaction":
        if not token_alive:
            raise MessageGone("the interaction token is past its lifetime")
        scope = interaction_scope(target["token"])
        await budget.acquire(scope)
        webhook = discord.Webhook.partial(int(target["app"]), target["token"], client=client)
        edit: Awaitable[object] = webhook.edit_message(
            message_id,
            content=shown.content,
            embed=shown.embed,
            view=None,
            allowed_mentions=NO_MENTIONS,
        )
    else:
        scope = channel_scope(int(target["channel"]))
        await budget.acquire(scope)
        await budget.acquire(GLOBAL_SCOPE)
        channel = client.get_partial_messageable(int(target["channel"]))
        edit = channel.get_partial_message(message_id).edit(
            content=shown.content, embed=shown.embed, view=None, allowed_mentions=NO_MENTIONS
        )
    await call(edit, budget, scope)


__all__ = ["answered_anew", "finalise_record"]
