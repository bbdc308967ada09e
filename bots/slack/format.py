"""What a reply looks like in Slack: blocks, buttons and safe text.

Replies are standard Markdown from the model; Slack renders it in a
``markdown`` block (and in native streams' ``markdown_text``), so the text is
passed through rather than converted to mrkdwn. What must change is anything
that would notify people: ``<!channel>``, ``<!here>``, ``<!everyone>``, user
group and user mentions written by the model are broken with a zero-width
space, so they show as text and ping nobody. The words of a reply's ending and
of the model's thinking are every platform's (``core.reply.notes``); Slack
dresses them: a full stop, italics.
"""

from __future__ import annotations

import re
from typing import Any

from core.reply import STATE_NOTES, THINKING, Outcome, done_note, reasoning_tail

ZWSP = "\u200b"
_SPECIAL = re.compile(r"<(?=[!@#])")
_BARE = re.compile(r"(?<![\w@])@(?=(?:channel|here|everyone)\b)", re.IGNORECASE)

STOP_ACTION = "chatrelay_stop"
FEEDBACK_ACTIONS = ("chatrelay_feedback_good", "chatrelay_feedback_bad")
MARKDOWN_BLOCK_LIMIT = 12_000
"""Slack's limit on a ``markdown`` block's text (cumulative per message)."""
FALLBACK_TEXT_LIMIT = 300
"""The notification text of a message with blocks; its full text is in the blocks."""


def neutralise(text: str) -> str:
    """Make model output unable to mention anyone (special mentions, users, groups)."""
    if "<" in text:
        text = _SPECIAL.sub("<" + ZWSP, text)
    if "@" in text:
        text = _BARE.sub("@" + ZWSP, text)
    return text


def strip_mention(text: str, bot_user_id: str) -> str:
    """The user's message without the mention that summoned the bot."""
    return re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", "", text).strip()


def fallback_text(text: str) -> str:
    """Short plain text for notifications and clients that can't show blocks."""
    flat = " ".join(text.split())
    if len(flat) > FALLBACK_TEXT_LIMIT:
        flat = flat[: FALLBACK_TEXT_LIMIT - 1] + "…"
    return flat or "…"


def stop_button(reply_id: str, asker: str = "") -> dict[str, Any]:
    """The Stop button; its value names the reply and who asked, so a press can
    be checked without a lookup."""
    return {
        "type": "actions",
        "block_id": "chatrelay_controls",
        "elements": [
            {
                "type": "button",
                "action_id": STOP_ACTION,
                "text": {"type": "plain_text", "text": "Stop"},
                "value": f"{reply_id}:{asker}" if asker else reply_id,
                "style": "danger",
            }
        ],
    }


def feedback_buttons(reply_id: str) -> dict[str, Any]:
    good, bad = FEEDBACK_ACTIONS
    return {
        "type": "actions",
        "block_id": "chatrelay_feedback",
        "elements": [
            {
                "type": "button",
                "action_id": good,
                "text": {"type": "plain_text", "text": "👍"},
                "value": reply_id,
            },
            {
                "type": "button",
                "action_id": bad,
                "text": {"type": "plain_text", "text": "👎"},
                "value": reply_id,
            },
        ],
    }


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def outcome_note(outcome: Outcome) -> str | None:
    """One line saying how a reply ended, or None for a plain success."""
    if outcome.state == "done":
        note = done_note(outcome)
        return f"{note}." if note else None
    note = STATE_NOTES[outcome.state]
    if outcome.state == "stopped" or not outcome.reason:
        return f"{note}."
    return f"{note}: {neutralise(outcome.reason)}"


def reasoning_preview(reasoning: str, limit: int = 280) -> str:
    """The tail of the model's reasoning, for the thinking indicator."""
    tail = reasoning_tail(reasoning, limit)
    return f"{THINKING} _{neutralise(tail) if tail else 'thinking…'}_"


def message_blocks(
    text: str,
    *,
    reasoning: str = "",
    streaming: bool,
    reply_id: str,
    outcome: Outcome | None = None,
    asker: str = "",
) -> list[dict[str, Any]]:
    """The blocks of one message of a reply, streaming or final."""
    blocks: list[dict[str, Any]] = []
    if text.strip():
        blocks.append({"type": "markdown", "text": neutralise(text)})
    elif streaming:
        blocks.append(context(reasoning_preview(reasoning)))
    if streaming:
        blocks.append(stop_button(reply_id, asker))
        return blocks
    if outcome is not None:
        note = outcome_note(outcome)
        if note:
            blocks.append(context(note))
        if outcome.state == "done":
            blocks.append(feedback_buttons(reply_id))
    return blocks
