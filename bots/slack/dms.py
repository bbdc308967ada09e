"""Direct messages with the bot: Slack's agent messaging experience, and the
assistant threads of apps installed before it.

Two app configurations reach us, and both are served by one process:

- **Agent experience** (manifest ``features.agent_view``; what new apps get).
  Slack's guide "Migrating to the Agent messaging experience"
  (https://docs.slack.dev/ai/migrating-to-agent-messaging/) replaces
  ``assistant_thread_started`` with ``app_home_opened`` whose ``tab`` is
  ``"messages"``: the user opened the DM. There is no Slack-made thread root
  (no ``subtype: "assistant_app_thread"``); the user's own top-level message is
  the root. So every top-level DM message starts a conversation of its own, and
  the reply goes in that message's thread (``dm_thread``), where "is
  thinking…", native streaming and a thread title all work.
  ``assistant.threads.setSuggestedPrompts`` is called WITHOUT ``thread_ts``:
  its reference (https://docs.slack.dev/reference/methods/assistant.threads.setSuggestedPrompts/)
  says a ``thread_ts`` makes the call "silently fail" for an agent app, and
  that without it the prompts go with the channel's latest message. Bolt
  1.30 does the same (``set_suggested_prompts`` on ``app_home_opened``/messages
  carries no ``thread_ts``). Slack sends ``app_home_opened`` every time the user
  enters the DM (https://api.slack.com/events/app_home_opened says to check it
  is a first interaction before onboarding), so a user is greeted once per
  ``GREETING_EVERY``.
- **Assistant experience** (``features.assistant_view``, "will eventually be
  deprecated"): ``assistant_thread_started`` opens a thread Slack made; its
  prompts are set on that thread (``thread_ts`` given, as that experience
  requires), and the user's messages arrive inside it.

Every call spends its method's budget first, like every other Slack call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.service.intake import IntakeLog, Outcome
from core.state import REDIS_FAILURES, State

log = logging.getLogger(__name__)

AGENT_EVENTS = frozenset({"app_home_opened"})
"""Events only an ``agent_view`` app is sent."""
ASSISTANT_EVENTS = frozenset({"assistant_thread_started"})
"""Events only an ``assistant_view`` app is sent (its installs keep working)."""

SUGGESTED_PROMPTS = [
    {"title": "Summarise", "message": "Summarise this conversation for me."},
    {"title": "Explain", "message": "Explain this in simple terms."},
    {"title": "Draft a reply", "message": "Help me draft a reply."},
]
GREETING = "Hi! Ask me anything: each message you send here starts its own thread."
"""The title over the suggested prompts when a user opens the DM (agent experience)."""

GREETING_EVERY = 7 * 24 * 3600
"""Seconds before a user who opens the DM again is greeted again."""

Budgeted = Callable[[str, str, str], Awaitable[None]]
"""(team, Web API method, channel): waits for a slot of the method's budget."""
FirstDelivery = Callable[[dict[str, Any]], Awaitable[bool]]
"""(event body): False for a retry or another replica's copy."""


def dm_thread(event: dict[str, Any]) -> str:
    """The thread a direct message belongs to: the one it was written in, or
    for a top-level message its own (it starts a conversation of its own)."""
    return str(event.get("thread_ts") or event["ts"])


def event_id(body: dict[str, Any]) -> str:
    """The Events API envelope's id: what intake and dedupe know an event by."""
    return str(body.get("event_id") or id(body))


class DirectMessages:
    """The DM surface's own events: a DM opened (agent experience) and an
    assistant thread started (assistant experience)."""

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        state: State,
        budgeted: Budgeted,
        first_delivery: FirstDelivery,
    ) -> None:
        self.client = client
        self.state = state
        self._budgeted = budgeted
        self._first_delivery = first_delivery
        self.opened = IntakeLog()
        """What became of each DM-opening event (by event id): ``answered`` when
        prompts were shown, ``ignored`` when not due. Not counted as messages."""

    async def on_home_opened(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self._settle(body, self._home_opened(event, body))

    async def on_assistant_thread_started(
        self, event: dict[str, Any], body: dict[str, Any]
    ) -> None:
        await self._settle(body, self._assistant_thread_started(event, body))

    async def _settle(self, body: dict[str, Any], handling: Awaitable[Outcome]) -> None:
        await self.opened.handle(event_id(body), handling)

    async def _home_opened(self, event: dict[str, Any], body: dict[str, Any]) -> Outcome:
        channel, user = str(event.get("channel") or ""), str(event.get("user") or "")
        if event.get("tab") != "messages" or not channel or not user:
            return "ignored"  # the Home tab, which chatrelay doesn't publish
        if not await self._first_delivery(body):
            return "deduplicated"
        team = _team(body, event)
        if not await self._first_greeting(team, user):
            return "ignored"
        return await self._suggest(team, channel, None, title=GREETING)

    async def _assistant_thread_started(
        self, event: dict[str, Any], body: dict[str, Any]
    ) -> Outcome:
        thread = event.get("assistant_thread", {})
        channel, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
        if not channel or not thread_ts:
            return "ignored"
        if not await self._first_delivery(body):
            return "deduplicated"
        return await self._suggest(_team(body, event), channel, thread_ts)

    async def _suggest(
        self, team: str, channel: str, thread_ts: str | None, *, title: str | None = None
    ) -> Outcome:
        params: dict[str, Any] = {"channel_id": channel, "prompts": SUGGESTED_PROMPTS}
        if thread_ts is not None:  # assistant experience only: an agent app's call would be lost
            params["thread_ts"] = thread_ts
        if title is not None:
            params["title"] = title
        await self._budgeted(team, "assistant.threads.setSuggestedPrompts", channel)
        try:
            await self.client.assistant_threads_setSuggestedPrompts(**params)
        except SlackApiError as exc:
            log.warning("could not show suggested prompts in %s: %s", channel, exc)
            return "failed"
        return "answered"

    async def _first_greeting(self, team: str, user: str) -> bool:
        """Whether ``user`` is due a greeting, claiming it (one replica greets).
        Without Redis: no, as greeting on every visit would be worse than none."""
        try:
            return await self.state.greetings.claim("slack", team, user, every=GREETING_EVERY)
        except REDIS_FAILURES as exc:
            log.warning("could not tell whether %s was greeted: %s", user, exc)
            return False


def _team(body: dict[str, Any], event: dict[str, Any]) -> str:
    return str(body.get("team_id") or event.get("team") or "")
