"""The buttons under a Slack reply: Stop while it streams, feedback once it is done.

A Stop press names the reply and who asked (``bots.slack.format.stop_button``),
so it is checked without a lookup: the asker may stop it, and so may the
channel's human agents and the workspace's admins; anyone else is told so,
privately. The reply may be streaming in another replica: the stop goes
through the shared state (``core.state.cancel``). Slack's own Stop on a
streamed message is not a button: the sink hears of it (``UserStopped``).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.api import spend
from bots.slack.events import Agents
from bots.slack.format import FEEDBACK_ACTIONS, STOP_ACTION
from core.rules import RulesSource
from core.state import State

log = logging.getLogger(__name__)

STOP_REFUSED = (
    "Only the person who asked, this channel's agents or a workspace admin can stop this reply."
)
THANKS = "Thanks for the feedback!"


class Controls:
    def __init__(
        self, *, client: AsyncWebClient, state: State, rules: RulesSource, agents: Agents
    ) -> None:
        self.client = client
        self.state = state
        self.rules = rules
        self.agents = agents

    def register(self, app: AsyncApp) -> None:
        app.action(STOP_ACTION)(self.on_stop)
        for action in FEEDBACK_ACTIONS:
            app.action(action)(self.on_feedback)

    async def on_stop(self, ack: Any, body: dict[str, Any]) -> None:
        await ack()
        reply_id, _, asker = str(body["actions"][0].get("value", "")).partition(":")
        user = body.get("user", {}).get("id", "")
        channel = body.get("channel", {}).get("id", "")
        team = str(body.get("team", {}).get("id") or body.get("user", {}).get("team_id") or "")
        if not reply_id or not user:
            return
        if user != asker and not await self._may_stop_others(team, channel, user):
            await spend(self.state.budget, team, "chat.postEphemeral", channel)
            await self.client.chat_postEphemeral(channel=channel, user=user, text=STOP_REFUSED)
            return
        await self.state.cancel.cancel(reply_id, f"stopped by <@{user}>")

    async def _may_stop_others(self, team: str, channel: str, user: str) -> bool:
        """The channel's human agents and workspace admins may stop any reply."""
        if await self.agents.is_agent(self.rules.policy("slack", channel), user, team):
            return True
        try:
            await spend(self.state.budget, team, "users.info", channel)
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
            await spend(self.state.budget, team, "chat.postEphemeral", channel)
            await self.client.chat_postEphemeral(channel=channel, user=user, text=THANKS)
