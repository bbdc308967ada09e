"""Web API: who is who: ``auth.test``, ``apps.connections.open`` (the Socket Mode
ticket), ``users.info`` and ``usergroups.users.list``."""

from __future__ import annotations

import uuid

from tests.fakes.slack_server.params import JSON, SlackError, need
from tests.fakes.slack_server.state import SlackState


class UserMethods(SlackState):
    """The bot's identity, its Socket Mode URL, users and groups."""

    def _auth_test(self, p: JSON) -> JSON:
        return {
            "url": "https://fake.slack.com/",
            "team": self.team_name,
            "user": "chatrelay",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, p: JSON) -> JSON:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"url": f"{self.socket_url}?ticket={ticket}&app_id={self.app_id}"}

    def _users_info(self, p: JSON) -> JSON:
        user_id = need(p, "user", "user_not_found")
        user = self.users.get(user_id)
        if user is None:
            is_bot = user_id == self.bot_user_id
            name = "chatrelay" if is_bot else f"user-{user_id.lower()}"
            user = {
                "id": user_id,
                "team_id": self.team_id,
                "name": name,
                "real_name": name.title(),
                "tz": "Europe/Paris",
                "tz_offset": 3600,
                "is_bot": is_bot,
                "deleted": False,
                "profile": {"display_name": name, "real_name": name.title()},
            }
        return {"user": user}

    def _usergroups_users_list(self, p: JSON) -> JSON:
        group = need(p, "usergroup", "no_such_subteam")
        if group not in self.usergroups:
            raise SlackError("no_such_subteam")
        return {"users": list(self.usergroups[group])}
