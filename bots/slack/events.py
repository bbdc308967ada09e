"""Which Slack events get a reply.

- ``app_mention`` → a reply in the mention's thread (a thread is started on the
  mention when it was top-level).
- Direct messages (``message.im``) → a reply in the message's thread: a
  top-level DM starts a conversation of its own (Slack's agent messaging
  experience); one in a thread continues it (as assistant threads arrive).
- Auto-reply channels (``channels.toml``) → every top-level customer message
  gets a threaded reply with the channel's prompt and model; once a human agent
  writes in the thread the bot stays quiet there until an agent mentions it
  with ``resume`` or the quiet time passes.

Events are filtered before any work: our own messages, other bots (unless
allowed) and edit/delete subtypes. What is left becomes a ``core.service.Incoming``
and ``IntakePolicy`` decides (dedupe: a retried delivery, same ``event_id``,
never produces a second reply; the human handoff); a human agent is a user of
the channel's agents or of one of its user groups. Every message event counts
in the intake log, with what became of it.

The DM surface has events of its own, which are not messages
(``DirectMessages``). Two app configurations reach us, and both are served:

- **Agent experience** (manifest ``features.agent_view``; what new apps get).
  Slack's guide "Migrating to the Agent messaging experience"
  (https://docs.slack.dev/ai/migrating-to-agent-messaging/) replaces
  ``assistant_thread_started`` with ``app_home_opened`` whose ``tab`` is
  ``"messages"``: the user opened the DM. There is no Slack-made thread root
  (no ``subtype: "assistant_app_thread"``); the user's own top-level message is
  the root. So every top-level DM message starts a conversation of its own, and
  the reply goes in that message's thread, where "is thinking…", native
  streaming and a thread title all work.
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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.api import spend
from bots.slack.conversations import (
    IGNORED_SUBTYPES,
    BotUser,
    conversation_of,
    team_of,
    thread_of,
)
from bots.slack.format import strip_mention
from bots.slack.replies import Replies
from bots.slack.settings import SlackSettings
from core.rules import ChannelPolicy, RulesSource
from core.service import (
    BACK_TEXT,
    Incoming,
    IntakeLog,
    IntakeOutcome,
    IntakePolicy,
    Verdict,
    outcome_metric,
)
from core.state import REDIS_FAILURES, State
from core.telemetry.metrics import ChatrelayMetrics

log = logging.getLogger(__name__)

GROUP_CACHE_SECONDS = 300.0
"""How long a user group's members are trusted before asking Slack again."""

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

_OUTCOMES: dict[Verdict, IntakeOutcome] = {
    Verdict.IGNORED: "ignored",
    Verdict.DEDUPLICATED: "deduplicated",
    Verdict.FAILED: "failed",
}


def event_id(body: dict[str, Any]) -> str:
    """The Events API envelope's id: what intake and dedupe know an event by."""
    return str(body.get("event_id") or id(body))


class Agents:
    """Whether a user is a human agent of a channel: by user id, or by
    membership of a configured user group (asked of Slack, kept a while)."""

    def __init__(self, *, client: AsyncWebClient, state: State) -> None:
        self.client = client
        self.state = state
        self._group_members: dict[str, tuple[float, frozenset[str]]] = {}

    async def is_agent(self, policy: ChannelPolicy, user: str, team: str = "") -> bool:
        if policy.is_agent(user):
            return True
        now = time.monotonic()
        for group in policy.agent_groups:
            cached = self._group_members.get(group)
            if cached is None or now - cached[0] > GROUP_CACHE_SECONDS:
                try:
                    await spend(self.state.budget, team, "usergroups.users.list")
                    response = await self.client.usergroups_users_list(usergroup=group)
                except SlackApiError as exc:
                    log.warning("could not list user group %s: %s", group, exc)
                    continue
                cached = (now, frozenset(response.get("users", [])))
                self._group_members[group] = cached
            if user in cached[1]:
                return True
        return False


class SlackEvents:
    def __init__(
        self,
        *,
        settings: SlackSettings,
        client: AsyncWebClient,
        state: State,
        rules: RulesSource,
        policy: IntakePolicy,
        agents: Agents,
        replies: Replies,
        me: BotUser,
        metrics: ChatrelayMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.state = state
        self.rules = rules
        self.policy = policy
        self.agents = agents
        self.replies = replies
        self.me = me
        self.intake = IntakeLog(outcome_metric(metrics, "slack") if metrics else None)
        """What became of each event (by event id): tests wait on it, metrics count it."""
        self.dms = DirectMessages(client=client, state=state)

    def register(self, app: AsyncApp) -> None:
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)
        app.event("app_home_opened")(self.dms.on_home_opened)
        app.event("assistant_thread_started")(self.dms.on_assistant_thread_started)

    async def on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self.replies.protected(self.intake.handle(event_id(body), self._mention(event, body)))

    async def on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self.replies.protected(self.intake.handle(event_id(body), self._message(event, body)))

    async def _mention(self, event: dict[str, Any], body: dict[str, Any]) -> IntakeOutcome:
        if self._ignored(event):
            return "ignored"
        text = strip_mention(event.get("text", ""), self.me.user_id)
        return await self._decide(self._incoming(event, body, text, named=True), event)

    async def _message(self, event: dict[str, Any], body: dict[str, Any]) -> IntakeOutcome:
        if self._ignored(event):
            return "ignored"
        text = event.get("text", "")
        if event.get("channel_type") != "im":
            policy = self.rules.policy("slack", event.get("channel", ""))
            if policy.mode != "auto" or f"<@{self.me.user_id}" in text:
                return "ignored"  # mentions are answered by on_mention
        return await self._decide(self._incoming(event, body, text, named=False), event)

    def _incoming(
        self, event: dict[str, Any], body: dict[str, Any], text: str, *, named: bool
    ) -> Incoming:
        channel = str(event.get("channel", ""))
        return Incoming(
            platform="slack",
            message_id=event_id(body),
            conversation=conversation_of(team_of(body, event), channel, thread_of(event)),
            channel=channel,
            author=str(event.get("user", "")),
            text=text,
            policy=self.rules.policy("slack", channel),
            named=named,
            continuing=bool(event.get("thread_ts")),
        )

    async def _decide(self, incoming: Incoming, event: dict[str, Any]) -> IntakeOutcome:
        team = incoming.conversation.workspace

        def is_agent() -> Awaitable[bool]:
            return self.agents.is_agent(incoming.policy, incoming.author, team)

        verdict = await self.policy.decide(incoming, is_agent)
        if verdict is Verdict.REPLY:
            return await self.replies.answer(incoming, event)
        if verdict is Verdict.RESUMED:
            await spend(self.state.budget, team, "chat.postMessage", incoming.channel)
            await self.client.chat_postMessage(
                channel=incoming.channel, thread_ts=incoming.conversation.thread, text=BACK_TEXT
            )
            return "answered"
        return _OUTCOMES[verdict]

    def _ignored(self, event: dict[str, Any]) -> bool:
        """Never for the bot: edits, joins and the like, its own messages, and
        other bots' unless allowed."""
        if event.get("subtype") in IGNORED_SUBTYPES or event.get("hidden"):
            return True
        if self.me.wrote(event):
            return True
        is_bot = event.get("bot_id") is not None or event.get("subtype") == "bot_message"
        return is_bot and not self.settings.slack_allow_bots


class DirectMessages:
    """The DM surface's own events: a DM opened (agent experience) and an
    assistant thread started (assistant experience). Every call spends its
    method's budget first, like every other Slack call."""

    def __init__(self, *, client: AsyncWebClient, state: State) -> None:
        self.client = client
        self.state = state
        self.opened = IntakeLog()
        """What became of each DM-opening event (by event id): ``answered`` when
        prompts were shown, ``ignored`` when not due. Not counted as messages."""

    async def on_home_opened(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self.opened.handle(event_id(body), self._home_opened(event, body))

    async def on_assistant_thread_started(
        self, event: dict[str, Any], body: dict[str, Any]
    ) -> None:
        await self.opened.handle(event_id(body), self._assistant_thread_started(event, body))

    async def _home_opened(self, event: dict[str, Any], body: dict[str, Any]) -> IntakeOutcome:
        channel, user = str(event.get("channel") or ""), str(event.get("user") or "")
        if event.get("tab") != "messages" or not channel or not user:
            return "ignored"  # the Home tab, which chatrelay doesn't publish
        if not await self._first_delivery(body):
            return "deduplicated"
        team = team_of(body, event)
        if not await self._first_greeting(team, user):
            return "ignored"
        return await self._suggest(team, channel, None, title=GREETING)

    async def _assistant_thread_started(
        self, event: dict[str, Any], body: dict[str, Any]
    ) -> IntakeOutcome:
        thread = event.get("assistant_thread", {})
        channel, thread_ts = thread.get("channel_id"), thread.get("thread_ts")
        if not channel or not thread_ts:
            return "ignored"
        if not await self._first_delivery(body):
            return "deduplicated"
        return await self._suggest(team_of(body, event), channel, thread_ts)

    async def _suggest(
        self, team: str, channel: str, thread_ts: str | None, *, title: str | None = None
    ) -> IntakeOutcome:
        params: dict[str, Any] = {"channel_id": channel, "prompts": SUGGESTED_PROMPTS}
        if thread_ts is not None:  # assistant experience only: an agent app's call would be lost
            params["thread_ts"] = thread_ts
        if title is not None:
            params["title"] = title
        await spend(self.state.budget, team, "assistant.threads.setSuggestedPrompts", channel)
        try:
            await self.client.assistant_threads_setSuggestedPrompts(**params)
        except SlackApiError as exc:
            log.warning("could not show suggested prompts in %s: %s", channel, exc)
            return "failed"
        return "answered"

    async def _first_delivery(self, body: dict[str, Any]) -> bool:
        """False for a retry or a second replica's copy of the event. Not a
        message: intake's policy has nothing to decide, only the claim."""
        event = body.get("event_id")
        return not event or await self.state.dedupe.claim(f"slack:{event}")

    async def _first_greeting(self, team: str, user: str) -> bool:
        """Whether ``user`` is due a greeting, claiming it (one replica greets).
        Without Redis: no, as greeting on every visit would be worse than none."""
        try:
            return await self.state.greetings.claim("slack", team, user, every=GREETING_EVERY)
        except REDIS_FAILURES as exc:
            log.warning("could not tell whether %s was greeted: %s", user, exc)
            return False
