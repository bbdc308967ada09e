"""Slack listeners: which events get a reply, and where it goes.

- ``app_mention`` → a reply in the mention's thread (a thread is started on the
  mention when it was top-level).
- Direct messages (``message.im``) → a reply in the message's thread: a
  top-level DM starts a conversation of its own (Slack's agent messaging
  experience); one in a thread continues it (as assistant threads arrive).
  Opening the DM and assistant threads: ``bots.slack.dms``.
- Auto-reply channels (``channels.toml``) → every top-level customer message
  gets a threaded reply with the channel's prompt and model; once a human agent
  writes in the thread the bot stays quiet there until an agent mentions it
  with ``resume`` or the quiet time passes.
- Stop and feedback buttons.

Events are filtered before any work: our own messages, other bots (unless
allowed) and edit/delete subtypes. A retried delivery (same ``event_id``)
never produces a second reply: the first replica to claim it in Redis wins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.api import scopes
from bots.slack.dms import DirectMessages, dm_thread, event_id
from bots.slack.format import FEEDBACK_ACTIONS, STOP_ACTION, strip_mention
from bots.slack.settings import SlackSettings
from bots.slack.sink import SlackReplySink, SlackTarget
from core.config import Settings
from core.reply import Sink, acquire_all
from core.rules import RESUME_COMMAND, ChannelPolicy, RulesSource
from core.service import ReplyRequest, Responder, ShuttingDown
from core.service.intake import IntakeLog, Outcome, outcome_metric
from core.state import REDIS_FAILURES, ConversationKey, DeferredRequest, State, Turn
from core.telemetry.metrics import ChatrelayMetrics

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
"""Message subtypes that are never a question for the bot."""

GROUP_CACHE_SECONDS = 300.0
"""How long a user group's members are trusted before asking Slack again."""

NATIVE_STREAMING = "native"
"""The feature noted in ``State.missing_features`` when a workspace refuses
``chat.startStream``."""
NATIVE_UNSUPPORTED_TTL = 24 * 3600
"""How long a workspace without native streaming is remembered (it may gain it)."""

HANDOVER_VERSION = 1
"""Of the hand-over payload: a process that reads another one drops it."""

STOP_REFUSED = (
    "Only the person who asked, this channel's agents or a workspace admin can stop this reply."
)


class SlackBot:
    def __init__(
        self,
        *,
        settings: SlackSettings,
        core: Settings,
        state: State,
        responder: Responder,
        rules: RulesSource,
        client: AsyncWebClient,
        bot_user_id: str,
        bot_id: str,
        metrics: ChatrelayMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.core = core
        self.state = state
        self.responder = responder
        self.rules = rules
        self.client = client
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self._group_members: dict[str, tuple[float, frozenset[str]]] = {}
        self._replies: set[asyncio.Task[Outcome]] = set()
        self.intake = IntakeLog(outcome_metric(metrics, "slack") if metrics else None)
        """What became of each event (by event id): tests wait on it, metrics count it."""
        self.dms = DirectMessages(
            client=client,
            state=state,
            budgeted=self._budgeted,
            first_delivery=self._first_delivery,
        )

    def register(self, app: AsyncApp) -> None:
        app.event("app_mention")(self.on_mention)
        app.event("message")(self.on_message)
        app.event("app_home_opened")(self.dms.on_home_opened)
        app.event("assistant_thread_started")(self.dms.on_assistant_thread_started)
        app.action(STOP_ACTION)(self.on_stop)
        for action in FEEDBACK_ACTIONS:
            app.action(action)(self.on_feedback)

    async def cancel_replies(self) -> None:
        """Cancel the replies still running, as ``asyncio.run`` would at exit."""
        for task in list(self._replies):
            task.cancel()
        await asyncio.gather(*self._replies, return_exceptions=True)

    # -- events ----------------------------------------------------------------

    async def on_mention(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self._intake(body, self._mention(event, body))

    async def on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        await self._intake(body, self._message(event, body))

    async def _intake(self, body: dict[str, Any], handling: Awaitable[Outcome]) -> None:
        """Count the event as received, then what became of it (``core.service.intake``)."""
        await self.intake.handle(event_id(body), handling)

    async def _mention(self, event: dict[str, Any], body: dict[str, Any]) -> Outcome:
        if self._ignored(event):
            return "ignored"
        if not await self._first_delivery(body):
            return "deduplicated"
        team = _team(body, event)
        channel = event["channel"]
        thread = event.get("thread_ts") or event["ts"]
        policy = self.rules.policy("slack", channel)
        conversation = ConversationKey("slack", team, channel, thread)
        text = strip_mention(event.get("text", ""), self.bot_user_id)
        if policy.mode == "auto" and event.get("thread_ts"):
            if (
                await self._is_agent(policy, event.get("user", ""), team)
                and text.lower() == RESUME_COMMAND
            ):
                try:
                    await self.state.handoffs.resume(conversation)
                except REDIS_FAILURES as exc:
                    log.warning("could not resume the bot in a thread: %s", exc)
                    return "failed"
                await self._budgeted(team, "chat.postMessage", channel)
                await self.client.chat_postMessage(
                    channel=channel, thread_ts=thread, text="I'm back in this thread."
                )
                return "answered"
            if await self._handed_over(conversation, default=False):  # asked by name
                return "ignored"
        return await self._reply(event, team, channel, thread, text, conversation)

    async def _message(self, event: dict[str, Any], body: dict[str, Any]) -> Outcome:
        if self._ignored(event):
            return "ignored"
        channel = event.get("channel", "")
        team = _team(body, event)
        thread_ts = event.get("thread_ts")
        if event.get("channel_type") == "im":
            if not await self._first_delivery(body):
                return "deduplicated"
            thread = dm_thread(event)
            conversation = ConversationKey("slack", team, channel, thread)
            text = event.get("text", "")
            return await self._reply(event, team, channel, thread, text, conversation)
        policy = self.rules.policy("slack", channel)
        if policy.mode != "auto" or f"<@{self.bot_user_id}" in event.get("text", ""):
            return "ignored"  # mentions are answered by on_mention
        thread = thread_ts or event["ts"]
        conversation = ConversationKey("slack", team, channel, thread)
        if await self._is_agent(policy, event.get("user", ""), team):
            if thread_ts:
                try:
                    await self.state.handoffs.hand_over(conversation, policy.handoff_quiet_minutes)
                except REDIS_FAILURES as exc:
                    log.warning("could not record an agent taking over a thread: %s", exc)
            return "ignored"
        # Without Redis: quiet in a thread an agent may have taken, answer a new one.
        if await self._handed_over(conversation, default=thread_ts is not None):
            return "ignored"
        if not await self._first_delivery(body):
            return "deduplicated"
        return await self._reply(event, team, channel, thread, event.get("text", ""), conversation)

    async def on_stop(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        reply_id, _, asker = str(body["actions"][0].get("value", "")).partition(":")
        user = body.get("user", {}).get("id", "")
        channel = body.get("channel", {}).get("id", "")
        team = str(body.get("team", {}).get("id") or body.get("user", {}).get("team_id") or "")
        if not reply_id or not user:
            return
        if user != asker and not await self._may_stop_others(team, channel, user):
            await self._budgeted(team, "chat.postEphemeral", channel)
            await self.client.chat_postEphemeral(channel=channel, user=user, text=STOP_REFUSED)
            return
        await self.state.cancel.cancel(reply_id, f"stopped by <@{user}>")

    async def _may_stop_others(self, team: str, channel: str, user: str) -> bool:
        """The channel's human agents and workspace admins may stop any reply."""
        if await self._is_agent(self.rules.policy("slack", channel), user, team):
            return True
        try:
            await self._budgeted(team, "users.info", channel)
            info: dict[str, Any] = (await self.client.users_info(user=user)).get("user", {})
        except SlackApiError as exc:
            log.warning("could not look up user %s: %s", user, exc)
            return False
        return any(info.get(flag) for flag in ("is_admin", "is_owner", "is_primary_owner"))

    async def on_feedback(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        action = body["actions"][0]
        log.info(
            "feedback %s on reply %s from %s",
            "good" if action["action_id"] == FEEDBACK_ACTIONS[0] else "bad",
            action.get("value"),
            body.get("user", {}).get("id"),
        )
        channel = body.get("channel", {}).get("id")
        user = body.get("user", {}).get("id")
        if channel and user:
            team = str(body.get("team", {}).get("id") or "")
            await self._budgeted(team, "chat.postEphemeral", channel)
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text="Thanks for the feedback!"
            )

    # -- the reply ---------------------------------------------------------------

    async def _reply(
        self,
        event: dict[str, Any],
        team: str,
        channel: str,
        thread_ts: str | None,
        text: str,
        conversation: ConversationKey,
    ) -> Outcome:
        user = event.get("user", "")
        policy = self.rules.policy("slack", channel)
        target = SlackTarget(
            team=team,
            channel=channel,
            thread_ts=thread_ts,
            recipient_user=user or None,
            assistant_thread=event.get("channel_type") == "im" and thread_ts is not None,
        )
        native = self.settings.slack_native_streaming == "auto" and await self._native_ok(team)
        if target.assistant_thread and thread_ts and not await self._remembers(conversation):
            await self._budgeted(team, "assistant.threads.setTitle", channel)
            await self.client.assistant_threads_setTitle(
                channel_id=channel, thread_ts=thread_ts, title=_title(text)
            )

        def make_sink(reply_id: str) -> Sink:
            async def unsupported() -> None:
                await self._remember_no_native(team)

            return SlackReplySink(
                client=self.client,
                target=target,
                reply_id=reply_id,
                native=native,
                on_native_unsupported=unsupported,
                rollover_after=self.settings.slack_stream_rollover,
            )

        prepare: Callable[[], Awaitable[None]] | None = None
        if thread_ts and thread_ts != event.get("ts"):

            async def prepare() -> None:
                await self._rebuild_if_lost(conversation, channel, thread_ts, event.get("ts", ""))

        handover = {
            "v": HANDOVER_VERSION,
            "team": team,
            "channel": channel,
            "thread_ts": thread_ts,
            "text": text,
            "conversation": [
                conversation.platform,
                conversation.workspace,
                conversation.channel,
                conversation.thread,
            ],
            "event": {k: event[k] for k in ("user", "ts", "channel_type") if k in event},
        }
        request = ReplyRequest(
            platform="slack",
            conversation=conversation,
            author=user,
            text=text or "(empty message)",
            channel=channel,
            system_prompt=policy.system_prompt or self.core.system_prompt,
            model=policy.model,
            target={"team": team, "channel": channel},
            handover=handover,
            prepare=prepare,
        )
        # The reply runs in a task of its own: Bolt's listener task may be cancelled
        # when intake stops (shutdown), and a reply must still finish or be finalised.
        task = asyncio.create_task(self._respond(request, make_sink, handover))
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)
        return await asyncio.shield(task)

    async def _respond(
        self,
        request: ReplyRequest,
        make_sink: Callable[[str], Sink],
        handover: dict[str, Any],
    ) -> Outcome:
        try:
            await self.responder.respond(request, make_sink)
        except ShuttingDown:
            # Acknowledged and claimed in dedupe: Slack won't send it again, so the
            # next process that is alive answers it (``answer_handed_over``).
            try:
                await self.state.deferred.push("slack", "", handover)
            except REDIS_FAILURES as exc:
                log.error("shutting down and could not hand a message over: %s", exc)
                return "failed"
            log.info("shutting down: message handed over to the next process")
            return "handed_over"
        except Exception:
            log.exception("reply failed")
            return "failed"
        return "answered"

    async def answer_handed_over(self, deferred: DeferredRequest) -> None:
        """Answer a message a draining process accepted and handed over."""
        payload = deferred.payload
        if payload.get("v") != HANDOVER_VERSION:
            log.warning("dropping a handed-over Slack message of unknown version")
            return
        platform, workspace, channel, thread = payload["conversation"]
        await self._reply(
            dict(payload["event"]),
            str(payload["team"]),
            str(payload["channel"]),
            payload.get("thread_ts"),
            str(payload["text"]),
            ConversationKey(platform, workspace, channel, thread),
        )

    async def _rebuild_if_lost(
        self, conversation: ConversationKey, channel: str, thread_ts: str, current_ts: str
    ) -> None:
        """A thread we have no memory of (expired, or Redis lost it): read it back
        from Slack once. ``conversations.replies`` is heavily rate-limited for
        many apps, which is why Redis, not Slack, is the memory. Without Redis
        there is nowhere to put it: skipped."""
        try:
            if await self.state.conversations.history(conversation):
                return
        except REDIS_FAILURES:
            return
        try:
            await self._budgeted(conversation.workspace, "conversations.replies", channel)
            response = await self.client.conversations_replies(
                channel=channel, ts=thread_ts, limit=100
            )
        except SlackApiError as exc:
            log.warning("could not rebuild thread %s from Slack: %s", thread_ts, exc)
            return
        turns: list[Turn] = []
        messages: list[dict[str, Any]] = response.get("messages", [])
        for message in messages:
            if message.get("ts") == current_ts or message.get("subtype") in IGNORED_SUBTYPES:
                continue
            text = message.get("text", "")
            if message.get("bot_id") == self.bot_id or message.get("user") == self.bot_user_id:
                turns.append(Turn("assistant", None, text))
            elif text:
                turns.append(
                    Turn("user", message.get("user"), strip_mention(text, self.bot_user_id))
                )
        if turns:
            try:
                await self.state.conversations.append(conversation, *turns)
            except REDIS_FAILURES as exc:
                log.warning("could not store the rebuilt thread %s: %s", thread_ts, exc)
                return
            log.info("rebuilt %d turns of thread %s from Slack", len(turns), thread_ts)

    async def _handed_over(self, conversation: ConversationKey, *, default: bool) -> bool:
        """Whether a human agent has the conversation; ``default`` when Redis can't say."""
        try:
            return await self.state.handoffs.is_handed_over(conversation)
        except REDIS_FAILURES as exc:
            log.warning("could not tell whether an agent has the thread: %s", exc)
            return default

    async def _remembers(self, conversation: ConversationKey) -> bool:
        """Whether the conversation has history (when Redis can't say: yes, so a
        thread's title is not set twice)."""
        try:
            return bool(await self.state.conversations.history(conversation))
        except REDIS_FAILURES:
            return True

    async def _is_agent(self, policy: ChannelPolicy, user: str, team: str = "") -> bool:
        """A configured agent, by user id or by membership of a configured user group."""
        if policy.is_agent(user):
            return True
        now = time.monotonic()
        for group in policy.agent_groups:
            cached = self._group_members.get(group)
            if cached is None or now - cached[0] > GROUP_CACHE_SECONDS:
                try:
                    await self._budgeted(team, "usergroups.users.list", "")
                    response = await self.client.usergroups_users_list(usergroup=group)
                except SlackApiError as exc:
                    log.warning("could not list user group %s: %s", group, exc)
                    continue
                cached = (now, frozenset(response.get("users", [])))
                self._group_members[group] = cached
            if user in cached[1]:
                return True
        return False

    # -- filters -----------------------------------------------------------------

    def _ignored(self, event: dict[str, Any]) -> bool:
        if event.get("subtype") in IGNORED_SUBTYPES or event.get("hidden"):
            return True
        if event.get("user") == self.bot_user_id or event.get("bot_id") == self.bot_id:
            return True
        is_bot = event.get("bot_id") is not None or event.get("subtype") == "bot_message"
        return is_bot and not self.settings.slack_allow_bots

    async def _first_delivery(self, body: dict[str, Any]) -> bool:
        """False for a retry or a second replica's copy of an event already handled."""
        event_id = body.get("event_id")
        if not event_id:
            return True
        return await self.state.dedupe.claim(f"slack:{event_id}")

    async def _budgeted(self, team: str, method: str, channel: str) -> None:
        """Every Slack call spends the budget of the method it calls."""
        await acquire_all(self.state.budget, scopes(team, method, channel))

    async def _native_ok(self, team: str) -> bool:
        """Whether to try native streaming (yes when Redis can't tell: the first
        refusal switches the reply over anyway)."""
        try:
            return not await self.state.missing_features.lacks("slack", team, NATIVE_STREAMING)
        except REDIS_FAILURES:
            return True

    async def _remember_no_native(self, team: str) -> None:
        try:
            await self.state.missing_features.note(
                "slack", team, NATIVE_STREAMING, ttl=NATIVE_UNSUPPORTED_TTL
            )
        except REDIS_FAILURES as exc:
            log.warning("could not remember that workspace %s has no streaming: %s", team, exc)


def _title(text: str) -> str:
    """An assistant thread's title: the start of its first question."""
    flat = " ".join(text.split())
    return flat if len(flat) <= 60 else flat[:59] + "…"


def _team(body: dict[str, Any], event: dict[str, Any]) -> str:
    return str(body.get("team_id") or event.get("team") or "")
