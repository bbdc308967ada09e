"""What Slack sends an app: events (``app_mention``, ``message``…), the Events API
envelope around them (also the Socket Mode ``events_api`` payload) and interaction
payloads (``block_actions``)."""

from __future__ import annotations

import base64
import time
import uuid

from tests.fakes.slack_server.params import JSON
from tests.fakes.slack_server.state import SlackState


def app_mention(
    user: str,
    text: str,
    channel: str,
    ts: str,
    thread_ts: str | None = None,
    *,
    team: str = "T1",
) -> JSON:
    """An ``app_mention`` event (``text`` should contain ``<@BOT_USER_ID>``)."""
    event: JSON = {
        "type": "app_mention",
        "user": user,
        "text": text,
        "ts": ts,
        "team": team,
        "channel": channel,
        "event_ts": ts,
        "client_msg_id": str(uuid.uuid4()),
    }
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def message(
    user: str | None,
    text: str,
    channel: str,
    ts: str,
    thread_ts: str | None = None,
    *,
    subtype: str | None = None,
    bot_id: str | None = None,
    channel_type: str = "channel",
    team: str = "T1",
) -> JSON:
    """A ``message`` event; ``bot_id`` marks it as a bot's (our own, say)."""
    event: JSON = {
        "type": "message",
        "text": text,
        "ts": ts,
        "team": team,
        "channel": channel,
        "event_ts": ts,
        "channel_type": channel_type,
    }
    if user is not None:
        event["user"] = user
    if subtype is not None:
        event["subtype"] = subtype
    if bot_id is not None:
        event["bot_id"] = bot_id
    else:
        event["client_msg_id"] = str(uuid.uuid4())
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    return event


def message_im(
    user: str,
    text: str,
    channel: str,
    ts: str,
    thread_ts: str | None = None,
    *,
    team: str = "T1",
) -> JSON:
    """A direct message to the bot (``channel_type: im``)."""
    return message(user, text, channel, ts, thread_ts, channel_type="im", team=team)


def message_changed(
    channel: str, new: JSON, previous: JSON, *, ts: str, channel_type: str = "channel"
) -> JSON:
    """The event Slack sends when a message is edited (each of our own edits, too)."""
    return {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "channel": channel,
        "channel_type": channel_type,
        "ts": ts,
        "event_ts": ts,
        "message": new,
        "previous_message": previous,
    }


def assistant_thread_started(
    user: str,
    channel: str,
    thread_ts: str,
    *,
    context_channel: str | None = None,
    team: str = "T1",
    event_ts: str | None = None,
) -> JSON:
    """A user opened the assistant container (``channel`` is the DM, ``D…``)."""
    context: JSON = {"team_id": team, "enterprise_id": None}
    if context_channel is not None:
        context["channel_id"] = context_channel
    return {
        "type": "assistant_thread_started",
        "assistant_thread": {
            "user_id": user,
            "context": context,
            "channel_id": channel,
            "thread_ts": thread_ts,
        },
        "event_ts": event_ts or thread_ts,
    }


def app_home_opened(
    user: str,
    channel: str,
    *,
    tab: str = "messages",
    event_ts: str,
    view: JSON | None = None,
) -> JSON:
    """A user entered the app's DM (``tab: "messages"``) or Home tab (``"home"``,
    with the published ``view`` if there is one), as Slack sends it each time."""
    event: JSON = {
        "type": "app_home_opened",
        "user": user,
        "channel": channel,
        "tab": tab,
        "event_ts": event_ts,
    }
    if view is not None:
        event["view"] = view
    return event


def new_event_id() -> str:
    """An id in Slack's style (``Ev`` + 10 upper-case alphanumerics)."""
    return "Ev" + uuid.uuid4().hex[:10].upper()


class Envelopes(SlackState):
    """Builds the envelopes and payloads Slack delivers, from the fake's state."""

    def event_envelope(self, event: JSON, *, event_id: str | None = None) -> JSON:
        """The Events API ``event_callback`` body around ``event`` (also the Socket Mode
        ``events_api`` payload)."""
        return {
            "token": self.verification_token,
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or new_event_id(),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": "4-" + base64.b64encode(uuid.uuid4().bytes).decode().rstrip("="),
        }

    def block_actions(
        self,
        channel: str,
        message_ts: str,
        action_id: str,
        *,
        user: str = "U1",
        value: str | None = None,
        block_id: str = "actions",
    ) -> JSON:
        """A ``block_actions`` payload: ``user`` pressed button ``action_id`` on a message
        (the stored one, if the fake has it)."""
        record = self.messages.get(channel, {}).get(message_ts)
        shaped = record.to_slack() if record is not None else {"type": "message", "ts": message_ts}
        thread_ts = record.thread_ts if record is not None else None
        container: JSON = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel,
            "is_ephemeral": False,
        }
        if thread_ts:
            container["thread_ts"] = thread_ts
        action: JSON = {
            "action_id": action_id,
            "block_id": block_id,
            "text": {"type": "plain_text", "text": action_id, "emoji": True},
            "type": "button",
            "action_ts": f"{time.time():.6f}",
        }
        if value is not None:
            action["value"] = value
        return {
            "type": "block_actions",
            "user": {"id": user, "username": f"user-{user.lower()}", "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": self.verification_token,
            "container": container,
            "trigger_id": f"{uuid.uuid4().int % 10**13}.{uuid.uuid4().hex[:20]}",
            "team": {"id": self.team_id, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": channel.lower()},
            "message": shaped,
            "state": {"values": {}},
            "response_url": f"https://hooks.slack.com/actions/{self.team_id}/0/fake",
            "actions": [action],
        }
