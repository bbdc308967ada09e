"""Which conversation a Slack message belongs to, and reading one back from Slack.

A conversation is a thread: the one a message was written in, or for a
top-level message the thread its reply starts under it (a mention's, an
auto-reply channel's customer message's, and a top-level DM's, which in
Slack's agent messaging experience starts a conversation of its own). Its key
is ``slack/<team>/<channel>/<thread ts>``.

Redis, not Slack, is the bot's memory (``core.service.history``):
``conversations.replies`` is heavily rate-limited for many apps. A thread the
bot is called into, or whose memory expired or was lost with Redis, is read
back once; this module says how to read a Slack thread as turns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.api import spend
from bots.slack.format import strip_mention
from core.service import recall
from core.state import ConversationKey, State, Turn

log = logging.getLogger(__name__)

IGNORED_SUBTYPES = frozenset(
    {
        "message_changed",
        "message_deleted",
        "message_replied",
        "channel_join",
        "channel_leave",
        "channel_topic",
        "channel_purpose",
        "channel_name",
        "bot_add",
        "bot_remove",
        "thread_broadcast",
        "assistant_app_thread",
    }
)
"""Message subtypes that are never a question for the bot, nor a turn of its
conversation."""

HISTORY_LIMIT = 100
"""Messages of a thread read back at most (one ``conversations.replies`` page)."""


@dataclass(frozen=True, slots=True)
class BotUser:
    """Who the bot is in its workspace (``auth.test``): what it wrote is its own
    turn of a conversation, never a question to it."""

    user_id: str
    bot_id: str

    def wrote(self, message: dict[str, Any]) -> bool:
        return message.get("user") == self.user_id or message.get("bot_id") == self.bot_id


def team_of(body: dict[str, Any], event: dict[str, Any]) -> str:
    """The workspace an event comes from: the envelope's, else the event's."""
    return str(body.get("team_id") or event.get("team") or "")


def thread_of(event: dict[str, Any]) -> str:
    """The thread a message belongs to: the one it was written in, or for a
    top-level message its own (its reply starts the thread)."""
    return str(event.get("thread_ts") or event["ts"])


def conversation_of(team: str, channel: str, thread: str) -> ConversationKey:
    return ConversationKey("slack", team, channel, thread)


class Threads:
    """A thread's history, read back from Slack (``core.service.recall``)."""

    def __init__(self, *, client: AsyncWebClient, state: State, me: BotUser) -> None:
        self.client = client
        self.state = state
        self.me = me

    async def recall(self, conversation: ConversationKey, current_ts: str) -> None:
        """Read ``conversation`` back from Slack unless the store has it; the
        message being answered (``current_ts``) is left out, as the reply adds it."""

        async def fetch() -> list[Turn]:
            return await self.fetch(conversation, current_ts)

        await recall(self.state, conversation, fetch, f"thread {conversation.thread}")

    async def fetch(self, conversation: ConversationKey, current_ts: str) -> list[Turn]:
        """The thread's messages as turns, oldest first; none when Slack won't say."""
        channel, thread = conversation.channel, conversation.thread
        try:
            await spend(self.state.budget, conversation.workspace, "conversations.replies", channel)
            response = await self.client.conversations_replies(
                channel=channel, ts=thread, limit=HISTORY_LIMIT
            )
        except SlackApiError as exc:
            log.warning("could not rebuild thread %s from Slack: %s", thread, exc)
            return []
        turns: list[Turn] = []
        messages: list[dict[str, Any]] = response.get("messages", [])
        for message in messages:
            if message.get("ts") == current_ts or message.get("subtype") in IGNORED_SUBTYPES:
                continue
            text = message.get("text", "")
            if self.me.wrote(message):
                turns.append(Turn("assistant", None, text))
            elif text:
                question = strip_mention(text, self.me.user_id)
                turns.append(Turn("user", message.get("user"), question))
        return turns
