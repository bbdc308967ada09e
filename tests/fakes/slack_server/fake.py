"""``FakeSlack``: the Web API families, Socket Mode and Events API delivery put
together on one server, and what it does when it starts and stops."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from tests.fakes.slack_server.assistant import AssistantMethods
from tests.fakes.slack_server.chat import ChatMethods
from tests.fakes.slack_server.conversations import ConversationMethods
from tests.fakes.slack_server.events_api import EventsApi
from tests.fakes.slack_server.scripting import Scripting
from tests.fakes.slack_server.socket_mode import SocketMode
from tests.fakes.slack_server.state import Handler
from tests.fakes.slack_server.streaming import StreamMethods
from tests.fakes.slack_server.users import UserMethods
from tests.fakes.slack_server.web_api import WebApi


class FakeSlack(
    Scripting,
    UserMethods,
    ChatMethods,
    StreamMethods,
    AssistantMethods,
    ConversationMethods,
    WebApi,
    SocketMode,
    EventsApi,
):
    """Slack for one app in one workspace: the Web API, Socket Mode and Events API
    delivery on 127.0.0.1 (see the package doc for what it enforces)."""

    not_started_error = "fake Slack not started"

    def _method_handlers(self) -> dict[str, Handler]:
        return {
            "api.test": lambda p: {"args": p},
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setSuggestedPrompts": self._set_suggested_prompts,
            "assistant.threads.setTitle": self._set_title,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
        }

    # ------------------------------------------------------------------ lifecycle

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/socket", self._handle_socket)
        return app

    async def _on_start(self) -> None:
        self._session = aiohttp.ClientSession()

    async def _on_stop(self) -> None:
        """Fails pending deliveries and closes every WebSocket before the server stops."""
        for waiter in self._ack_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("fake Slack stopped"))
        await self.close_sockets()
        if self._session is not None:
            await self._session.close()
            self._session = None
