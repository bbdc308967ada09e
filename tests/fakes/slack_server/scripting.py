"""Scripting the fake Slack: messages and user actions a test makes happen without
an API call, and faults, delays and rate-limit resets it puts on the Web API."""

from __future__ import annotations

from tests.fakes.faults import Fault, kind_for_status
from tests.fakes.slack_server.events import (
    app_home_opened,
    app_mention,
    assistant_thread_started,
    message,
)
from tests.fakes.slack_server.params import JSON
from tests.fakes.slack_server.records import Message, is_dm, parse_ts
from tests.fakes.slack_server.state import SlackState


class Scripting(SlackState):
    """What a test makes happen in Slack: users writing, opening DMs, stopping streams; faults."""

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str | None = "U1",
        ts: str | None = None,
        thread_ts: str | None = None,
        bot_id: str | None = None,
        blocks: list[JSON] | None = None,
        subtype: str | None = None,
    ) -> Message:
        """Put a message in Slack's history (a user's, by default) without an API call."""
        if ts is None:
            ts = self.next_ts()
        else:
            self._ts_micros = max(self._ts_micros, parse_ts(ts))
        record = Message(
            channel=channel,
            ts=ts,
            team=self.team_id,
            text=text,
            blocks=blocks,
            thread_ts=thread_ts if thread_ts != ts else None,
            user=user,
            bot_id=bot_id,
            subtype=subtype,
            created_at=self.clock(),
        )
        record._revise(record.created_at, "add_message")
        self.messages.setdefault(channel, {})[ts] = record
        self._signal.fire()
        return record

    def user_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U1",
        thread_ts: str | None = None,
        mention: bool = False,
    ) -> JSON:
        """A user writes ``text``: stored in history, and returned as the event Slack would
        send (``app_mention`` when ``mention``, else ``message`` — ``im`` in ``D…`` channels)."""
        if mention and f"<@{self.bot_user_id}>" not in text:
            text = f"<@{self.bot_user_id}> {text}"
        record = self.add_message(channel, text, user=user, thread_ts=thread_ts)
        if mention:
            return app_mention(user, text, channel, record.ts, thread_ts, team=self.team_id)
        channel_type = "im" if is_dm(channel) else "channel"
        event = message(
            user, text, channel, record.ts, thread_ts, channel_type=channel_type, team=self.team_id
        )
        parent = self.messages.get(channel, {}).get(thread_ts or "")
        if parent is not None and parent.user:
            event["parent_user_id"] = parent.user
        return event

    def user_opens_dm(self, channel: str, *, user: str = "U1") -> JSON:
        """Agent experience: the user opens the app's DM; Slack sends ``app_home_opened``
        (every time) and makes no thread root."""
        return app_home_opened(user, channel, tab="messages", event_ts=self.next_ts())

    def user_opens_assistant_thread(self, channel: str, *, user: str = "U1") -> JSON:
        """Assistant experience: the user opens the assistant container; Slack makes the
        thread's root message (``subtype: "assistant_app_thread"``, from the user) and
        sends ``assistant_thread_started``."""
        root = self.add_message(channel, "New chat", user=user, subtype="assistant_app_thread")
        return assistant_thread_started(user, channel, root.ts, team=self.team_id)

    def user_stops_stream(self, ts: str, channel: str | None = None) -> None:
        """The user pressed stop in Slack's UI: the stream ends; appends get ``stopped_by_user``."""
        record = self._find(ts, channel)
        if record is None:
            raise KeyError(f"no message with ts {ts}")
        record.streaming = False
        record.stream_end = "user"
        record._revise(self.clock(), "user_stops_stream")
        self._signal.fire()

    def fail(
        self,
        method: str,
        error: str = "internal_error",
        *,
        status: int = 200,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """The next ``times`` calls to ``method`` answer ``error`` (after auth checks).
        ``status=429`` with ``retry_after`` fakes a rate limit; 500/503 a Slack outage.
        A rule of ``faults`` (recorded like any injected fault)."""
        kind = kind_for_status(status, error)
        fault = Fault(kind, retry_after=retry_after, status=status, error=error)
        self.faults.add_rule(fault, key=method, count=times)

    def set_delay(self, method: str, seconds: float) -> None:
        """Slack takes ``seconds`` before answering every call to ``method`` (0 to undo).
        Not recorded as a fault; ``faults.add(method, "slow", delay=…)`` is, per call."""
        self._delays[method] = seconds

    def reset_rate_limits(self) -> None:
        """Empty every window (as if a minute had passed everywhere)."""
        self._windows.clear()
