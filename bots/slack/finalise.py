"""Ending a reply this process did not finish: an orphan whose replica died, or
a final state Slack kept refusing (``core.state.inflight`` retries it from any
replica, with backoff, for an hour by default).

Every message still open gets its text and no Stop button: a stream is
stopped first (one that Slack already ended is fine), then the message is
replaced with its text, and the reply's last message says how it ended. Every
call goes through the budget of the method it calls; a 429 blocks that budget
for everyone and leaves the record for a later try.
"""

from __future__ import annotations

import contextlib
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.api import STOPPED_BY_USER, STREAM_CLOSED, error_of, gone, rate_limited
from bots.slack.format import fallback_text, message_blocks
from bots.slack.limits import scope
from core.reply import Budget, MessageGone, Outcome
from core.state.inflight import INTERRUPTED_REASON, InflightRecord

_STREAM_ENDED = STREAM_CLOSED | {STOPPED_BY_USER, "message_not_owned_by_app"}


async def finalise_record(client: AsyncWebClient, budget: Budget, record: InflightRecord) -> None:
    """Finish every open message of ``record``; raises to be retried later."""
    outcome = (
        Outcome(record.outcome, record.reason or None)  # type: ignore[arg-type]
        if record.outcome
        else Outcome("interrupted", INTERRUPTED_REASON)
    )
    last = len(record.messages) - 1
    for index, message in record.pending:
        target = message.target
        team, channel, ts = target.get("team", ""), target["channel"], target["ts"]
        text = message.text[int(target.get("offset") or 0) :]
        with contextlib.suppress(MessageGone):  # nothing left to fix on this one
            if target.get("stream"):
                await _call(client, budget, team, "chat.stopStream", channel=channel, ts=ts)
            await _call(
                client,
                budget,
                team,
                "chat.update",
                channel=channel,
                ts=ts,
                text=fallback_text(text or (outcome.reason or "")),
                blocks=message_blocks(
                    text,
                    streaming=False,
                    reply_id=record.reply_id,
                    outcome=outcome if index == last else None,
                ),
            )


async def _call(
    client: AsyncWebClient, budget: Budget, team: str, method: str, **params: Any
) -> None:
    name = scope(team, method, str(params.get("channel", "")))
    await budget.acquire(name)
    try:
        await client.api_call(method, json=params)
    except SlackApiError as exc:
        limited = rate_limited(exc, name)
        if limited is not None:
            await budget.block(name, limited.retry_after)
            raise limited from exc
        if method == "chat.stopStream" and error_of(exc) in _STREAM_ENDED:
            return  # not streaming any more: the update below does the rest
        raise gone(method, exc) or exc from exc
