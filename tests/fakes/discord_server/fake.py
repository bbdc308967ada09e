"""``FakeDiscord``: the REST families, the gateway and injection put together on one
server, the route table, and what it does when it stops."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from tests.fakes.discord_server.channels import ChannelRoutes
from tests.fakes.discord_server.identity import IdentityRoutes
from tests.fakes.discord_server.injection import Injection
from tests.fakes.discord_server.interactions import InteractionRoutes
from tests.fakes.discord_server.rest import RestApi
from tests.fakes.discord_server.routing import Route


class FakeDiscord(Injection, InteractionRoutes, ChannelRoutes, IdentityRoutes, RestApi):
    """Discord's REST API and gateway for one bot, on an ephemeral 127.0.0.1 port."""

    # ------------------------------------------------------------------ lifecycle

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway/", self._gateway)
        app.router.add_get("/resume-gateway", self._gateway)
        app.router.add_route("*", r"/api/v{version:\d+}/{tail:.*}", self._handle_api)
        return app

    async def _on_stop(self) -> None:
        """Closes gateway connections (1001) before the server stops."""
        for conn in list(self.connections):
            conn.server_close_code = 1001
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"shutting down"), 2)
        for conn in list(self.connections):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), 2)

    # ------------------------------------------------------------------ routes

    def _build_routes(self) -> list[Route]:
        msg = "channels/{channel_id}/messages/{message_id}"
        hook = "webhooks/{webhook_id}/{webhook_token}"
        return [
            Route("GET", "users/@me", self._get_me),
            Route("GET", "oauth2/applications/@me", self._get_application),
            Route("GET", "applications/@me", self._get_application),
            Route("GET", "gateway", self._get_gateway, auth=False),
            Route("GET", "gateway/bot", self._get_gateway),
            Route("GET", "applications/{application_id}/commands", self._get_commands),
            Route("PUT", "applications/{application_id}/commands", self._put_commands),
            Route(
                "GET",
                "applications/{application_id}/guilds/{guild_id}/commands",
                self._get_commands,
            ),
            Route(
                "PUT",
                "applications/{application_id}/guilds/{guild_id}/commands",
                self._put_commands,
            ),
            Route("GET", "channels/{channel_id}", self._get_channel),
            Route("GET", "channels/{channel_id}/messages", self._get_history),
            Route("POST", "channels/{channel_id}/messages", self._post_message, "message_create"),
            Route("GET", msg, self._get_message),
            Route("PATCH", msg, self._patch_message, "message_edit"),
            Route("DELETE", msg, self._delete_message),
            Route("POST", "channels/{channel_id}/typing", self._typing),
            Route("POST", msg + "/threads", self._thread_from_message),
            Route("POST", "channels/{channel_id}/threads", self._thread_without_message),
            Route("PUT", msg + "/reactions/{emoji}/@me", self._add_reaction),
            Route("DELETE", msg + "/reactions/{emoji}/@me", self._remove_reaction),
            Route(
                "POST",
                "interactions/{interaction_id}/{interaction_token}/callback",
                self._interaction_callback,
                "callback",
                auth=False,
            ),
            Route("POST", hook, self._webhook_execute, "webhook", auth=False),
            Route("GET", hook + "/messages/{message_id}", self._webhook_get, auth=False),
            Route(
                "PATCH", hook + "/messages/{message_id}", self._webhook_edit, "webhook", auth=False
            ),
            Route(
                "DELETE",
                hook + "/messages/{message_id}",
                self._webhook_delete,
                "webhook",
                auth=False,
            ),
        ]
