"""REST: who the bot is and where to connect: ``users/@me``, the application,
``gateway``/``gateway/bot``, and the global and guild application commands."""

from __future__ import annotations

from typing import Any

from tests.fakes.discord_server.routing import Request
from tests.fakes.discord_server.state import DiscordState
from tests.fakes.discord_server.validation import ApiError, invalid_form
from tests.fakes.discord_server.world import ALICE


class IdentityRoutes(DiscordState):
    """The bot's identity, gateway and commands."""

    async def _get_me(self, req: Request) -> tuple[int, Any]:
        me = self.bot.payload()
        me.update(verified=True, mfa_enabled=False, flags=0, email=None, locale="en-US")
        return 200, me

    async def _get_application(self, req: Request) -> tuple[int, Any]:
        return 200, {
            "id": str(self.app_id),
            "name": self.bot.name,
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": ALICE.payload(),
            "team": None,
            "verify_key": "0" * 64,
            "flags": 1 << 19
            | 1 << 23,  # GATEWAY_MESSAGE_CONTENT_LIMITED, APPLICATION_COMMAND_BADGE
            "bot": self.bot.payload(),
            "summary": "",
            "interactions_endpoint_url": None,
            "install_params": None,
            "tags": [],
        }

    async def _get_gateway(self, req: Request) -> tuple[int, Any]:
        if req.path == "gateway":
            return 200, {"url": self.gateway_url}
        return 200, {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            },
        }

    def _check_app(self, req: Request) -> None:
        if req.id("application_id") != self.app_id:
            raise ApiError(403, 50001, "Missing Access")

    async def _get_commands(self, req: Request) -> tuple[int, Any]:
        self._check_app(req)
        if "guild_id" in req.params:
            return 200, self.guild_commands.get(req.id("guild_id"), [])
        return 200, self.commands

    async def _put_commands(self, req: Request) -> tuple[int, Any]:
        self._check_app(req)
        if not isinstance(req.body, list):
            raise invalid_form(
                {
                    "_errors": [
                        {
                            "code": "LIST_TYPE_CONVERT",
                            "message": "Only iterables may be used in a ListType",
                        }
                    ]
                }
            )
        guild_id = req.id("guild_id") if "guild_id" in req.params else None
        old = self.guild_commands.get(guild_id, []) if guild_id else self.commands
        ids = {(c["name"], c.get("type", 1)): c["id"] for c in old}
        commands = []
        for command in req.body:
            saved = {
                "type": 1,
                "description": "",
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **command,
                "application_id": str(self.app_id),
                "version": str(self._next_id()),
            }
            saved["id"] = ids.get((saved["name"], saved["type"])) or str(self._next_id())
            if guild_id:
                saved["guild_id"] = str(guild_id)
            commands.append(saved)
        if guild_id:
            self.guild_commands[guild_id] = commands
        else:
            self.commands = commands
        return 200, commands
